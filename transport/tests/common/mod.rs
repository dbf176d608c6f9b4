//! The echo handler the transport tests serve, and its data pattern.

use rand::{Rng, SeedableRng};
use sealfs_proto::{Errno, Reply, Request};
use sealfs_transport::tcp::Handler;
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
        let mut r = rand::rngs::StdRng::seed_from_u64(7);
        (0..5 << 20).map(|_| r.gen()).collect()
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
            Request::Write { data, .. } => Reply::Data(data.to_vec()),
            Request::Read { offset, len, .. } => {
                Reply::Data(pattern()[offset as usize..][..len as usize].to_vec())
            }
            Request::GetAttr { path } => Reply::Data(path.into_bytes()),
            _ => Reply::Err(Errno::ENOSYS),
        }
    }
}
