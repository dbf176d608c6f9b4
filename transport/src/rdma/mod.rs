//! RDMA transport: reliable-connected queue pairs, SEND/RECV for requests
//! and replies, RDMA READ/WRITE for bulk frames.
//!
//! The protocol is written once, over the [`Qp`] trait (the verbs a
//! connected queue pair offers), and runs on two fabrics:
//!
//! * `verbs` (cargo feature `rdma`, on `rdma-sys` / ibverbs): the real one.
//!   **Compiled, never run**: this machine has no RDMA device and its
//!   kernel has no soft-RoCE (`rdma_rxe`) or `siw`.
//! * [`loopback`]: an in-process fabric with the same semantics (posted
//!   receives, one completion per work request, remote keys and bounds
//!   checked on READ/WRITE, a SEND without a posted receive is an error),
//!   so the tests exercise every message path of the protocol here.
//!
//! Set-up: the client makes an endpoint and sends its parameters in a
//! `Request::RdmaConnect` over TCP to the server's normal port; the
//! server's [`FrontDoor`] makes its own endpoint, connects it, starts a
//! thread serving it and answers `Reply::RdmaAccept` with its parameters.
//! A server without RDMA answers `ENOTSUP` and the client uses TCP.
//!
//! Each endpoint registers one region ([`REGION_LEN`] bytes):
//!
//! | offset | size | use |
//! |---|---|---|
//! | [`RECV_OFF`] | ([`SLOTS`]+1) × [`INLINE`] | posted receives |
//! | [`SEND_OFF`] | ([`SLOTS`]+1) × [`INLINE`] | outgoing messages |
//! | [`AREA_A`] | [`BULK`] | client: big request frames, and the target of the server's RDMA WRITE of a big reply; server: RDMA READ target of a big request, source of the WRITE |
//! | [`AREA_B`] | [`BULK`] | client: RDMA READ target of a staged reply; server: staged big replies |
//!
//! Messages (`wire.rs`) are a 48-byte header, followed by the frame when
//! it fits in [`INLINE`] bytes. A bigger request frame is placed in the
//! client's area A and announced (`Pull`); the server READs it. A request
//! that holds the client's area A (at most one at a time) also offers it
//! as the reply target: a big reply is written there (WRITE, then a
//! `Written` message, which RC ordering delivers after the data).
//! Otherwise the server stages the big reply in its area B and announces
//! it (`Pull`); the client READs it and answers `Release`.
//!
//! Flow control: a client keeps at most [`SLOTS`] requests and one
//! `Release` unanswered, and each side keeps [`SLOTS`]+1 receives posted,
//! so a SEND never finds the peer without a receive.

mod client;
pub mod loopback;
mod server;
#[cfg(feature = "rdma")]
pub mod verbs;
mod wire;

pub use client::{RdmaConn, RdmaPool, RdmaStats};
pub use server::{Acceptor, ConnSlot, FrontDoor, MAX_CONNS};

use std::io;
use std::sync::Arc;

/// Requests in flight per connection.
pub const SLOTS: usize = 8;
/// Bytes of one message slot (header + inline frame).
pub const INLINE: usize = 16 << 10;
/// Bytes of a bulk area: the largest frame, rounded up to a page.
pub const BULK: usize = (sealfs_proto::MAX_FRAME_LEN as usize + 4 + 4095) & !4095;
/// Offset of the receive slots in a region.
pub const RECV_OFF: usize = 0;
/// Offset of the send slots.
pub const SEND_OFF: usize = RECV_OFF + (SLOTS + 1) * INLINE;
/// Offset of bulk area A.
pub const AREA_A: usize = SEND_OFF + (SLOTS + 1) * INLINE;
/// Offset of bulk area B.
pub const AREA_B: usize = AREA_A + BULK;
/// Bytes registered per endpoint.
pub const REGION_LEN: usize = AREA_B + BULK;

/// The outcome of one work request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The id given when the work request was posted.
    pub wr_id: u64,
    /// Bytes received (a receive) or moved; the error otherwise.
    pub result: Result<u32, String>,
}

/// The verbs of one connected queue pair over one registered region of
/// [`REGION_LEN`] bytes. Offsets are into that region; `remote` addresses
/// and keys come from the peer's messages.
pub trait Qp: Send + 'static {
    /// Runs `f` on `len` bytes of the local region at `off` (no work
    /// request may be posted on them meanwhile). Panics if out of the
    /// region: callers pass offsets of the layout above, and lengths
    /// checked against it.
    fn with_local<R>(&mut self, off: usize, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R;
    /// The address and remote key under which the peer reaches offset 0
    /// of this region.
    fn region(&self) -> (u64, u32);
    /// Posts a receive into `len` bytes at `off`.
    fn post_recv(&mut self, wr_id: u64, off: usize, len: usize) -> io::Result<()>;
    /// Posts a SEND of `len` bytes at `off`.
    fn post_send(&mut self, wr_id: u64, off: usize, len: usize) -> io::Result<()>;
    /// Posts an RDMA READ of `len` bytes from the peer's `remote` into `off`.
    fn post_read(
        &mut self,
        wr_id: u64,
        off: usize,
        len: usize,
        remote: u64,
        rkey: u32,
    ) -> io::Result<()>;
    /// Posts an RDMA WRITE of `len` bytes at `off` to the peer's `remote`.
    fn post_write(
        &mut self,
        wr_id: u64,
        off: usize,
        len: usize,
        remote: u64,
        rkey: u32,
    ) -> io::Result<()>;
    /// Appends the completions that are ready (never blocks). An error
    /// means the queue pair is unusable.
    fn poll(&mut self, out: &mut Vec<Completion>) -> io::Result<()>;
}

/// A place to make endpoints (a device, or the loopback fabric).
pub trait Fabric: Send + Sync + 'static {
    /// Its queue pairs.
    type Qp: Qp;
    /// A name for messages ("mlx5_0", "loopback").
    fn name(&self) -> String;
    /// A new endpoint, not yet connected, and the parameters the peer
    /// needs to connect to it.
    fn endpoint(&self) -> io::Result<(Self::Qp, Vec<u8>)>;
    /// Connects `qp` to the endpoint whose parameters are `peer`.
    fn connect(&self, qp: &mut Self::Qp, peer: &[u8]) -> io::Result<()>;
}

/// Work request ids: the kind in the high half, a slot in the low half.
pub(crate) mod wr {
    pub const RECV: u64 = 1;
    pub const SEND: u64 = 2;
    pub const READ: u64 = 3;
    pub const WRITE: u64 = 4;

    pub fn id(kind: u64, slot: usize) -> u64 {
        (kind << 32) | slot as u64
    }

    pub fn kind(id: u64) -> u64 {
        id >> 32
    }

    pub fn slot(id: u64) -> usize {
        (id & 0xffff_ffff) as usize
    }
}

/// The process's RDMA device, opened on first use; `None` without one
/// (logged once).
#[cfg(feature = "rdma")]
pub fn device() -> Option<Arc<verbs::VerbsFabric>> {
    static DEV: std::sync::OnceLock<Option<Arc<verbs::VerbsFabric>>> = std::sync::OnceLock::new();
    DEV.get_or_init(|| match verbs::VerbsFabric::open() {
        Ok(f) => {
            tracing::info!("RDMA device {}", f.name());
            Some(Arc::new(f))
        }
        Err(e) => {
            tracing::info!("no RDMA: {e}");
            None
        }
    })
    .clone()
}

/// The RDMA transport to `addr` on this process's device, if there is a
/// device and the server accepts RDMA connections.
pub fn connect(addr: &str, cfg: &crate::ClientConfig) -> Result<Arc<dyn crate::Transport>, String> {
    #[cfg(feature = "rdma")]
    {
        let dev = device().ok_or("no RDMA device")?;
        RdmaPool::connect(addr, cfg, dev)
            .map(|p| Arc::new(p) as Arc<dyn crate::Transport>)
            .map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "rdma"))]
    {
        let _ = (addr, cfg);
        Err("this build has no RDMA support (cargo feature `rdma`)".into())
    }
}

/// The server's acceptor for RDMA connections: the device's, when the build
/// has RDMA, the host a device and `SEALFS_TRANSPORT` is not `tcp`; `None`
/// otherwise.
pub fn acceptor<H: crate::tcp::Handler>() -> Option<Arc<dyn Acceptor<H>>> {
    #[cfg(feature = "rdma")]
    {
        if crate::shm::Mode::from_env() == crate::shm::Mode::Tcp {
            return None;
        }
        device().map(|d| d as Arc<dyn Acceptor<H>>)
    }
    #[cfg(not(feature = "rdma"))]
    {
        None
    }
}
