//! TCP transport: a blocking, pipelined client pool and a tokio server loop.
//!
//! Client: a connection is taken from the pool for one `call_many`, used for
//! a sliding window of requests (written ahead, replies matched by id) and
//! put back only if every reply arrived; on any error it is dropped.
//!
//! Server: one reader task per connection decodes frames and spawns a task
//! per request (at most [`MAX_IN_FLIGHT`] per connection, so a client cannot
//! make a server queue unbounded work); replies go through one writer task,
//! in completion order. A frame with a bad header closes the connection; a
//! well-framed payload that does not decode gets `EPROTO` and the connection
//! stays open.

use crate::{ClientConfig, Transport, TransportError};
use parking_lot::Mutex;
use sealfs_proto::frame::{decode_payload, encode_frame};
use sealfs_proto::{Envelope, Errno, FrameHeader, FrameKind, Reply, Request, FRAME_HEADER_LEN};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

/// Requests a server runs at once for one connection.
pub const MAX_IN_FLIGHT: usize = 64;

struct Conn {
    stream: TcpStream,
    next_id: u64,
    buf: Vec<u8>,
}

/// A pool of blocking connections to one server.
pub struct TcpPool {
    addr: String,
    cfg: ClientConfig,
    idle: Mutex<Vec<Conn>>,
}

impl TcpPool {
    /// A pool for `addr` (`host:port`); connects lazily.
    pub fn new(addr: impl Into<String>, cfg: ClientConfig) -> Self {
        TcpPool {
            addr: addr.into(),
            cfg,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn io_err(&self, source: std::io::Error) -> TransportError {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            TransportError::Timeout {
                addr: self.addr.clone(),
                timeout: self.cfg.io_timeout,
            }
        } else {
            TransportError::Io {
                addr: self.addr.clone(),
                source,
            }
        }
    }

    fn connect(&self) -> Result<Conn, TransportError> {
        let addrs = self.addr.to_socket_addrs().map_err(|e| self.io_err(e))?;
        let mut last =
            std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing");
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.cfg.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(|e| self.io_err(e))?;
                    stream
                        .set_read_timeout(Some(self.cfg.io_timeout))
                        .map_err(|e| self.io_err(e))?;
                    stream
                        .set_write_timeout(Some(self.cfg.io_timeout))
                        .map_err(|e| self.io_err(e))?;
                    return Ok(Conn {
                        stream,
                        next_id: 1,
                        buf: Vec::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(self.io_err(last))
    }

    /// Drops every idle connection (after `fork`, or when the peer restarted).
    pub fn clear(&self) {
        self.idle.lock().clear();
    }

    fn run(
        &self,
        conn: &mut Conn,
        epoch: u64,
        reqs: &[Request],
        out: &mut Vec<Result<Reply, TransportError>>,
    ) -> Result<(), TransportError> {
        let base = conn.next_id;
        conn.next_id += reqs.len() as u64;
        let mut replies: Vec<Option<Reply>> = vec![None; reqs.len()];
        let mut sent = 0usize;
        let mut received = 0usize;
        let window = self.cfg.window.max(1);
        let mut hdr = [0u8; FRAME_HEADER_LEN];
        while received < reqs.len() {
            // Keep the window full, writing every frame of this round in one go.
            let mut batch: Vec<u8> = Vec::new();
            while sent < reqs.len() && sent - received < window {
                let env = Envelope {
                    epoch,
                    req: reqs[sent].clone(),
                };
                encode_frame(FrameKind::Request, base + sent as u64, &env, &mut conn.buf).map_err(
                    |source| TransportError::Frame {
                        addr: self.addr.clone(),
                        source,
                    },
                )?;
                batch.extend_from_slice(&conn.buf);
                sent += 1;
            }
            if !batch.is_empty() {
                conn.stream.write_all(&batch).map_err(|e| self.io_err(e))?;
            }
            conn.stream
                .read_exact(&mut hdr)
                .map_err(|e| self.io_err(e))?;
            let h = FrameHeader::parse(&hdr).map_err(|source| TransportError::Frame {
                addr: self.addr.clone(),
                source,
            })?;
            let mut payload = vec![0u8; h.payload_len()];
            conn.stream
                .read_exact(&mut payload)
                .map_err(|e| self.io_err(e))?;
            let idx = h.id.wrapping_sub(base) as usize;
            if h.kind != FrameKind::Reply || idx >= reqs.len() || replies[idx].is_some() {
                return Err(TransportError::Frame {
                    addr: self.addr.clone(),
                    source: sealfs_proto::FrameError::Decode(format!(
                        "unexpected reply id {}",
                        h.id
                    )),
                });
            }
            let reply: Reply =
                decode_payload(&payload).map_err(|source| TransportError::Frame {
                    addr: self.addr.clone(),
                    source,
                })?;
            replies[idx] = Some(reply);
            received += 1;
        }
        out.extend(
            replies
                .into_iter()
                .map(|r| Ok(r.unwrap_or(Reply::Err(Errno::EPROTO)))),
        );
        Ok(())
    }
}

impl Transport for TcpPool {
    fn call_many(&self, epoch: u64, reqs: Vec<Request>) -> Vec<Result<Reply, TransportError>> {
        let n = reqs.len();
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let pooled = self.idle.lock().pop();
        let attempt = |conn: &mut Conn, out: &mut Vec<_>| self.run(conn, epoch, &reqs, out);
        let mut conn = match pooled {
            Some(mut c) => match attempt(&mut c, &mut out) {
                Ok(()) => Some(c),
                // A pooled connection may have been closed by a server restart
                // while idle: retry once on a fresh one, but only if nothing
                // of this call was answered (requests are not all idempotent).
                Err(_) if out.is_empty() => None,
                Err(e) => return crate::fail_rest(out, n, e),
            },
            None => None,
        };
        if conn.is_none() {
            let mut c = match self.connect() {
                Ok(c) => c,
                Err(e) => return crate::fail_rest(out, n, e),
            };
            if let Err(e) = attempt(&mut c, &mut out) {
                return crate::fail_rest(out, n, e);
            }
            conn = Some(c);
        }
        if let Some(c) = conn {
            let mut idle = self.idle.lock();
            if idle.len() < self.cfg.max_idle {
                idle.push(c);
            }
        }
        out
    }

    fn addr(&self) -> &str {
        &self.addr
    }
}

/// What a server does with one request.
pub trait Handler: Send + Sync + 'static {
    /// Runs a request and produces its reply.
    fn handle(self: Arc<Self>, env: Envelope) -> impl Future<Output = Reply> + Send;
}

/// Serves connections on `listener` until the process ends.
pub async fn serve<H: Handler>(listener: tokio::net::TcpListener, handler: Arc<H>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let h = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_conn(stream, h).await {
                        tracing::debug!(%peer, "connection closed: {e}");
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn<H: Handler>(
    stream: tokio::net::TcpStream,
    handler: Arc<H>,
) -> std::io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut hdr = [0u8; FRAME_HEADER_LEN];
    let res = loop {
        let permit = match permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break Ok(()),
        };
        match rd.read_exact(&mut hdr).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let h = match FrameHeader::parse(&hdr) {
            Ok(h) if h.kind == FrameKind::Request => h,
            Ok(_) => {
                break Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "reply frame sent to a server",
                ))
            }
            Err(e) => break Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let mut payload = vec![0u8; h.payload_len()];
        if let Err(e) = rd.read_exact(&mut payload).await {
            break Err(e);
        }
        let tx = tx.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let reply = match decode_payload::<Envelope>(&payload) {
                Ok(env) => handler.handle(env).await,
                Err(e) => {
                    tracing::debug!("undecodable request {}: {e}", h.id);
                    Reply::Err(Errno::EPROTO)
                }
            };
            let mut buf = Vec::new();
            let reply = match encode_frame(FrameKind::Reply, h.id, &reply, &mut buf) {
                Ok(()) => buf,
                Err(e) => {
                    tracing::warn!("reply to {} does not fit a frame: {e}", h.id);
                    let mut b = Vec::new();
                    if encode_frame(
                        FrameKind::Reply,
                        h.id,
                        &Reply::Err(Errno::EOVERFLOW),
                        &mut b,
                    )
                    .is_err()
                    {
                        return;
                    }
                    b
                }
            };
            let _ = tx.send(reply).await;
            drop(permit);
        });
    };
    drop(tx);
    let _ = writer.await;
    res
}
