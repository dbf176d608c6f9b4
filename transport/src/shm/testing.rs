//! A raw ring client for tests: sets up a region like [`super::ShmPool`]
//! does, then lets the test write anything into it (to prove the server
//! survives garbage). Not for production use.

use super::layout::{Dir, Region, MAGIC, REGION_LEN};
use super::ring_socket_name;
use super::sys::{self, Mapping};
use std::io;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::Ordering;

/// A connected ring whose region the test writes directly.
pub struct RawRing {
    sock: UnixStream,
    region: Region,
}

impl RawRing {
    /// Connects to the ring server of `addr`.
    pub fn connect(addr: &str) -> io::Result<RawRing> {
        let sa = SocketAddr::from_abstract_name(ring_socket_name(addr).as_bytes())?;
        let sock = UnixStream::connect_addr(&sa)?;
        let mut hello = [0u8; 16];
        let (n, fd) = sys::recv_with_fd(sock.as_raw_fd(), &mut hello)?;
        assert_eq!(n, 16);
        assert_eq!(u64::from_le_bytes(hello[..8].try_into().unwrap()), MAGIC);
        let fd = fd.ok_or_else(|| io::Error::other("no fd"))?;
        let region = Region::new(Mapping::map(&fd, REGION_LEN)?);
        Ok(RawRing { sock, region })
    }

    /// Writes `bytes` at `off` of the submission data area.
    pub fn write_data(&self, off: usize, bytes: &[u8]) {
        self.region
            .with_data_mut(Dir::Sq, off, bytes.len(), |d| d.copy_from_slice(bytes))
            .expect("in bounds");
    }

    /// Writes submission entry `idx` and publishes `sq_prod = idx + 1`.
    pub fn submit(&self, idx: u64, id: u64, off: u32, len: u32) {
        let e = self.region.entry(Dir::Sq, idx);
        e.id.store(id, Ordering::Relaxed);
        e.off.store(off, Ordering::Relaxed);
        e.len.store(len, Ordering::Relaxed);
        self.set_sq_prod(idx + 1);
    }

    /// Stores any value into `sq_prod` and rings the doorbell.
    pub fn set_sq_prod(&self, v: u64) {
        self.region.control().sq_prod.store(v, Ordering::Release);
        let _ = (&self.sock).write_all_nb(&[1]);
    }

    /// Stores any value into `cq_cons`.
    pub fn set_cq_cons(&self, v: u64) {
        self.region.control().cq_cons.store(v, Ordering::Release);
    }

    /// Completion entries the server published.
    pub fn cq_prod(&self) -> u64 {
        self.region.control().cq_prod.load(Ordering::Acquire)
    }

    /// Submission entries the server consumed.
    pub fn sq_cons(&self) -> u64 {
        self.region.control().sq_cons.load(Ordering::Acquire)
    }

    /// The reply of completion entry `idx`: its id and its decoded reply,
    /// or why the entry or its frame is wrong.
    pub fn completion(&self, idx: u64) -> Result<(u64, sealfs_proto::Reply), String> {
        let (h, reply) = self
            .region
            .decode_frame::<sealfs_proto::Reply>(Dir::Cq, idx, sealfs_proto::FrameKind::Reply)
            .map_err(|v| v.to_string())?;
        Ok((h.id, reply?))
    }

    /// Whether the server closed this ring's socket.
    pub fn closed_by_server(&self) -> bool {
        sys::peer_gone(self.sock.as_raw_fd())
    }
}

trait WriteNb {
    fn write_all_nb(self, b: &[u8]) -> io::Result<()>;
}

impl WriteNb for &UnixStream {
    fn write_all_nb(self, b: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut s = self;
        s.write_all(b)
    }
}
