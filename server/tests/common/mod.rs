//! Shared helpers of the server's tests: a real manager (the manager crate,
//! served in-process on a loopback port) and deterministic test data.
#![allow(dead_code)]

use sealfs_proto::{ClusterMap, Reply, Request};
use sealfs_transport::tcp::TcpPool;
use sealfs_transport::{ClientConfig, Transport};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A real manager on a loopback port, with its state in a temp dir.
pub struct Manager {
    /// Its address.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Manager {
    /// Starts a manager for a new cluster with chunks of `chunk` bytes.
    pub fn start(chunk: u32) -> Manager {
        let dir = tempfile::tempdir().expect("tempdir");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("local addr").to_string();
        std_listener.set_nonblocking(true).expect("nonblocking");
        let cfg = sealfs_manager::ManagerConfig {
            listen: addr.clone(),
            dir: dir.path().to_path_buf(),
            chunk_size: chunk,
            vnodes: sealfs_proto::placement::DEFAULT_VNODES,
            heartbeat_timeout: Duration::from_secs(3),
        };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                if let Err(e) = sealfs_manager::serve(l, cfg).await {
                    panic!("manager failed: {e}");
                }
            });
        });
        Manager { addr, _dir: dir }
    }

    /// The current map, asked over the wire as servers and clients do.
    pub fn map(&self) -> ClusterMap {
        let pool = TcpPool::new(self.addr.clone(), ClientConfig::default());
        for _ in 0..100 {
            if let Ok(Reply::Map(m)) = pool.call(0, Request::GetMap) {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the manager at {} does not answer", self.addr);
    }
}

/// Hex SHA-256.
pub fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `len` deterministic pseudo-random bytes for `seed` (xorshift).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The inode of a regular file `ino` of `size` bytes (mode 0644, root's,
/// times at 1 s), for tests that write records to a store.
pub fn file_inode(ino: u64, size: u64) -> sealfs_proto::Inode {
    let t = sealfs_proto::Timespec { sec: 1, nsec: 0 };
    sealfs_proto::Inode {
        attr: sealfs_proto::Attr {
            ino,
            kind: sealfs_proto::FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            nlink: 1,
            atime: t,
            mtime: t,
            ctime: t,
        },
        target: None,
    }
}
