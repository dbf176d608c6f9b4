//! SealFS transports.
//!
//! A [`Transport`] carries requests to one server and brings back replies. It
//! is blocking on purpose: the client library runs inside applications (the
//! LD_PRELOAD shim), where no async runtime may run. Servers and the manager
//! serve with tokio ([`tcp::serve`]).
//!
//! Implementations: TCP ([`tcp::TcpPool`]), shared-memory rings to a
//! server on the same host ([`shm::ShmPool`], served by [`shm::RingServer`]),
//! and RDMA ([`rdma::RdmaPool`]: the protocol is always built and tested on
//! an in-process loopback fabric; the ibverbs fabric is behind the `rdma`
//! cargo feature, compiled but never run here: this machine has no RDMA
//! device). [`shm::connect`] picks one per peer from `SEALFS_TRANSPORT`.

pub mod rdma;
pub mod shm;
pub mod tcp;

use sealfs_proto::{Errno, FrameError, Reply, Request};
use std::time::Duration;
use thiserror::Error;

/// Why a call did not get a reply.
#[derive(Debug, Error)]
pub enum TransportError {
    /// Connecting, reading or writing failed (peer dead, reset, refused).
    #[error("{addr}: {source}")]
    Io {
        /// The peer.
        addr: String,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// The peer sent a frame we cannot accept.
    #[error("{addr}: bad frame: {source}")]
    Frame {
        /// The peer.
        addr: String,
        /// What was wrong.
        #[source]
        source: FrameError,
    },
    /// The peer did not answer within the timeout.
    #[error("{addr}: no reply within {timeout:?}")]
    Timeout {
        /// The peer.
        addr: String,
        /// The timeout.
        timeout: Duration,
    },
}

impl TransportError {
    /// The errno an application sees: a server that cannot be reached is
    /// `EIO`, as a failed disk would be.
    pub fn errno(&self) -> Errno {
        Errno::EIO
    }
}

/// Timeouts and limits of a client connection.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How long to wait for each reply before giving up with `EIO`.
    pub io_timeout: Duration,
    /// Idle connections kept per server.
    pub max_idle: usize,
    /// Requests in flight per connection in [`Transport::call_many`].
    pub window: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(30),
            max_idle: 8,
            window: 16,
        }
    }
}

/// A way to reach one server.
pub trait Transport: Send + Sync {
    /// Sends one request and waits for its reply.
    fn call(&self, epoch: u64, req: Request) -> Result<Reply, TransportError> {
        self.call_many(epoch, vec![req])
            .pop()
            .expect("one reply per request")
    }

    /// Sends many requests pipelined on one connection; replies come back
    /// in request order. A transport failure fails every request not yet
    /// answered.
    fn call_many(&self, epoch: u64, reqs: Vec<Request>) -> Vec<Result<Reply, TransportError>>;

    /// The peer's address, for messages.
    fn addr(&self) -> &str;

    /// Sends one request without waiting for its reply, where the
    /// transport can (rings); `None` when it cannot, and the caller uses
    /// [`Transport::call`].
    fn send(
        &self,
        _epoch: u64,
        _req: &Request,
    ) -> Option<Result<Box<dyn InFlight>, TransportError>> {
        None
    }
}

/// A request sent by [`Transport::send`] whose reply is still to come.
/// Dropping it before the reply arrived closes its connection.
pub trait InFlight: Send {
    /// The reply, if it has arrived (never blocks).
    fn try_reply(&mut self) -> Option<Result<Reply, TransportError>>;
    /// Waits for the reply (up to the transport's I/O timeout).
    fn wait(self: Box<Self>) -> Result<Reply, TransportError>;
}

/// Completes a `call_many` after a transport failure: the replies already
/// received stay, the failing request gets `e`, every later one a copy of it.
pub(crate) fn fail_rest(
    mut out: Vec<Result<Reply, TransportError>>,
    n: usize,
    e: TransportError,
) -> Vec<Result<Reply, TransportError>> {
    let msg = e.to_string();
    out.push(Err(e));
    while out.len() < n {
        out.push(Err(TransportError::Io {
            addr: String::new(),
            source: std::io::Error::other(msg.clone()),
        }));
    }
    out
}
