//! What the transport tests share: the echo handler they serve, its data
//! pattern, a runtime and a client configuration.

use rand::{Rng, SeedableRng};
use sealfs_proto::{Errno, Reply, Request};
use sealfs_transport::tcp::Handler;
use sealfs_transport::ClientConfig;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The echo handler: `Write` echoes its data, `Read` returns `len` bytes of
/// the shared pattern starting at `offset`, `GetAttr` echoes the path, and
/// `chunk` on a `Read`/`Write` asks for a delay (in ms, through a tokio
/// timer, so the reply comes from a task instead of a poller).
pub struct Echo;

/// 5 MiB of seeded random bytes.
pub fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| {
        // One fill, not a call per byte: in a debug build that took over
        // 300 ms, inside the first `Read` a server answered, and a test
        // with a 300 ms timeout took the wait for a lost reply.
        let mut p = vec![0u8; 5 << 20];
        rand::rngs::StdRng::seed_from_u64(7).fill(&mut p[..]);
        p
    })
}

impl Handler for Echo {
    async fn handle(self: Arc<Self>, env: sealfs_proto::Envelope) -> Reply {
        let delay = match &env.req {
            Request::Read { chunk, .. } | Request::Write { chunk, .. } => *chunk,
            _ => 0,
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match env.req {
            Request::Write { data, .. } => Reply::Data(data),
            Request::Read { offset, len, .. } => {
                Reply::Data(pattern()[offset as usize..][..len as usize].to_vec().into())
            }
            Request::GetAttr { path } => Reply::Data(path.into_bytes().into()),
            _ => Reply::Err(Errno::ENOSYS),
        }
    }
}

/// A two-worker runtime for the servers under test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The default client configuration with `io_timeout`.
pub fn cfg(io_timeout: Duration) -> ClientConfig {
    ClientConfig {
        io_timeout,
        ..ClientConfig::default()
    }
}
