//! The client side: one [`RdmaConn`] per queue pair, pipelining up to
//! [`SLOTS`] requests; [`RdmaPool`] keeps idle connections to one server
//! and opens new ones through the server's TCP port.

use super::wire::{decode_frame, Kind, Msg, Target, HDR};
use super::{wr, Completion, Fabric, Qp, AREA_A, AREA_B, BULK, INLINE, RECV_OFF, SEND_OFF, SLOTS};
use crate::tcp::TcpPool;
use crate::{ClientConfig, Transport, TransportError};
use parking_lot::Mutex;
use sealfs_proto::frame::encode_frame;
use sealfs_proto::{Envelope, FrameKind, Reply, Request};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a waiting client spins on its completion queue before it
/// sleeps between polls.
const SPIN: Duration = Duration::from_micros(50);
/// The pause between polls after the spin.
const NAP: Duration = Duration::from_micros(20);

/// How the messages of a client's connections travelled.
#[derive(Debug, Default)]
pub struct RdmaStats {
    /// Requests sent inline.
    pub inline_requests: AtomicU64,
    /// Requests placed in area A for the server to READ.
    pub pulled_requests: AtomicU64,
    /// Replies received inline.
    pub inline_replies: AtomicU64,
    /// Replies the server wrote into area A.
    pub written_replies: AtomicU64,
    /// Replies staged by the server and READ by the client.
    pub staged_replies: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One connected queue pair to a server.
pub struct RdmaConn<Q: Qp> {
    qp: Q,
    stats: Arc<RdmaStats>,
    addr: String,
    io_timeout: Duration,
    send_free: Vec<usize>,
    /// The request whose frame or reply owns area A.
    bulk_owner: Option<u64>,
    next_id: u64,
    broken: Option<String>,
}

/// Progress of one `call_many`.
struct Batch {
    base: u64,
    out: Vec<Option<Result<Reply, TransportError>>>,
    sent: usize,
    outstanding: usize,
    /// A staged reply being read into area B: (id, frame length).
    pulling: Option<(u64, usize)>,
    release_due: bool,
}

impl<Q: Qp> RdmaConn<Q> {
    /// Wraps a connected queue pair and posts its receives. Must run before
    /// the server is told the connection exists.
    pub fn new(
        mut qp: Q,
        addr: &str,
        io_timeout: Duration,
        stats: Arc<RdmaStats>,
    ) -> io::Result<RdmaConn<Q>> {
        for i in 0..=SLOTS {
            qp.post_recv(wr::id(wr::RECV, i), RECV_OFF + i * INLINE, INLINE)?;
        }
        Ok(RdmaConn {
            qp,
            stats,
            addr: addr.to_string(),
            io_timeout,
            send_free: (0..=SLOTS).collect(),
            bulk_owner: None,
            next_id: 1,
            broken: None,
        })
    }

    /// Whether a transport failure made this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    fn err(&self, msg: impl Into<String>) -> TransportError {
        TransportError::Io {
            addr: self.addr.clone(),
            source: io::Error::new(io::ErrorKind::ConnectionAborted, msg.into()),
        }
    }

    /// Sends `reqs` pipelined and returns their replies in order.
    pub fn call_many(
        &mut self,
        epoch: u64,
        reqs: Vec<Request>,
    ) -> Vec<Result<Reply, TransportError>> {
        let n = reqs.len();
        let mut b = Batch {
            base: self.next_id,
            out: (0..n).map(|_| None).collect(),
            sent: 0,
            outstanding: 0,
            pulling: None,
            release_due: false,
        };
        self.next_id += n as u64;
        if let Some(why) = &self.broken {
            let e = self.err(why.clone());
            return crate::fail_rest(Vec::new(), n, e);
        }
        let mut reqs = reqs.into_iter().map(Some).collect::<Vec<_>>();
        let mut frame = Vec::new();
        let mut comps = Vec::new();
        let mut last_progress = Instant::now();
        loop {
            if let Err(why) = self.send_some(epoch, &mut reqs, &mut b, &mut frame) {
                return self.fail(b, why);
            }
            if b.sent == n && b.outstanding == 0 && !b.release_due {
                break;
            }
            comps.clear();
            if let Err(e) = self.qp.poll(&mut comps) {
                return self.fail(b, format!("completion queue: {e}"));
            }
            if comps.is_empty() {
                if last_progress.elapsed() >= self.io_timeout {
                    let (addr, timeout) = (self.addr.clone(), self.io_timeout);
                    let why = format!("no completion within {timeout:?}");
                    tracing::warn!(peer = %addr, "RDMA connection failed: {why}");
                    self.broken = Some(why);
                    return b
                        .out
                        .into_iter()
                        .map(|r| {
                            r.unwrap_or_else(|| {
                                Err(TransportError::Timeout {
                                    addr: addr.clone(),
                                    timeout,
                                })
                            })
                        })
                        .collect();
                }
                if last_progress.elapsed() < SPIN {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(NAP);
                }
                continue;
            }
            last_progress = Instant::now();
            for c in comps.drain(..) {
                if let Err(why) = self.on_completion(c, &mut b) {
                    return self.fail(b, why);
                }
            }
        }
        b.out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(self.err("no reply"))))
            .collect()
    }

    /// Marks the connection broken and fails every request not answered.
    fn fail(&mut self, b: Batch, why: String) -> Vec<Result<Reply, TransportError>> {
        tracing::warn!(peer = %self.addr, "RDMA connection failed: {why}");
        self.broken = Some(why.clone());
        b.out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(self.err(why.clone()))))
            .collect()
    }

    /// Sends what the window and the free slots allow, and a due `Release`.
    fn send_some(
        &mut self,
        epoch: u64,
        reqs: &mut [Option<Request>],
        b: &mut Batch,
        frame: &mut Vec<u8>,
    ) -> Result<(), String> {
        if b.release_due {
            let Some(slot) = self.send_free.pop() else {
                return Ok(());
            };
            let off = SEND_OFF + slot * INLINE;
            self.qp
                .with_local(off, HDR, |m| Msg::new(Kind::Release, 0, 0).encode(m));
            self.qp
                .post_send(wr::id(wr::SEND, slot), off, HDR)
                .map_err(|e| format!("post send: {e}"))?;
            b.release_due = false;
        }
        let (base_addr, rkey) = self.qp.region();
        while b.sent < reqs.len() && b.outstanding < SLOTS && !self.send_free.is_empty() {
            let i = b.sent;
            let id = b.base + i as u64;
            let Some(req) = reqs[i].take() else {
                return Err("request sent twice".into());
            };
            let env = Envelope { epoch, req };
            if let Err(e) = encode_frame(FrameKind::Request, id, &env, frame) {
                b.out[i] = Some(Err(TransportError::Frame {
                    addr: self.addr.clone(),
                    source: e,
                }));
                b.sent += 1;
                continue;
            }
            let big = HDR + frame.len() > INLINE;
            if big && (self.bulk_owner.is_some() || frame.len() > BULK) {
                if frame.len() > BULK {
                    return Err(format!(
                        "frame of {} bytes exceeds the bulk area",
                        frame.len()
                    ));
                }
                // Wait for area A; put the request back.
                reqs[i] = Some(env.req);
                break;
            }
            let slot = self.send_free.pop().expect("checked above");
            let mut msg = Msg::new(if big { Kind::Pull } else { Kind::Inline }, id, frame.len());
            if self.bulk_owner.is_none() {
                self.bulk_owner = Some(id);
                msg.reply = Some(Target {
                    addr: base_addr + AREA_A as u64,
                    rkey,
                    cap: BULK as u32,
                });
            }
            let off = SEND_OFF + slot * INLINE;
            bump(if big {
                &self.stats.pulled_requests
            } else {
                &self.stats.inline_requests
            });
            let len = if big {
                msg.addr = base_addr + AREA_A as u64;
                msg.rkey = rkey;
                self.qp
                    .with_local(AREA_A, frame.len(), |d| d.copy_from_slice(frame));
                self.qp.with_local(off, HDR, |m| msg.encode(m));
                HDR
            } else {
                self.qp.with_local(off, HDR + frame.len(), |m| {
                    msg.encode(m);
                    m[HDR..].copy_from_slice(frame);
                });
                HDR + frame.len()
            };
            self.qp
                .post_send(wr::id(wr::SEND, slot), off, len)
                .map_err(|e| format!("post send: {e}"))?;
            b.sent += 1;
            b.outstanding += 1;
        }
        Ok(())
    }

    fn on_completion(&mut self, c: Completion, b: &mut Batch) -> Result<(), String> {
        let got = c
            .result
            .map_err(|e| format!("work request {:#x}: {e}", c.wr_id))? as usize;
        let slot = wr::slot(c.wr_id);
        match wr::kind(c.wr_id) {
            wr::SEND => {
                self.send_free.push(slot);
                Ok(())
            }
            wr::RECV => {
                if slot > SLOTS {
                    return Err(format!("completion for receive slot {slot}"));
                }
                let off = RECV_OFF + slot * INLINE;
                let res = self.qp.with_local(off, INLINE, |m| {
                    let msg = Msg::decode(m, got)?;
                    let reply = match msg.kind {
                        Kind::Inline => Some(decode_frame::<Reply>(
                            &m[HDR..HDR + msg.len as usize],
                            FrameKind::Reply,
                        )?),
                        _ => None,
                    };
                    Ok::<_, String>((msg, reply))
                });
                let (msg, reply) = res?;
                self.qp
                    .post_recv(wr::id(wr::RECV, slot), off, INLINE)
                    .map_err(|e| format!("post receive: {e}"))?;
                match msg.kind {
                    Kind::Inline => {
                        let (id, reply) = reply.expect("decoded above");
                        bump(&self.stats.inline_replies);
                        self.answer(b, id, reply, msg.id)
                    }
                    Kind::Written => {
                        if self.bulk_owner != Some(msg.id) {
                            return Err(format!(
                                "reply {} written into an area it does not hold",
                                msg.id
                            ));
                        }
                        let (id, reply) = self.qp.with_local(AREA_A, msg.len as usize, |d| {
                            decode_frame::<Reply>(d, FrameKind::Reply)
                        })?;
                        bump(&self.stats.written_replies);
                        self.answer(b, id, reply, msg.id)
                    }
                    Kind::Pull => {
                        if b.pulling.is_some() || b.release_due {
                            return Err(
                                "a second staged reply before the first was released".into()
                            );
                        }
                        self.known(b, msg.id)?;
                        self.qp
                            .post_read(
                                wr::id(wr::READ, 0),
                                AREA_B,
                                msg.len as usize,
                                msg.addr,
                                msg.rkey,
                            )
                            .map_err(|e| format!("post read: {e}"))?;
                        b.pulling = Some((msg.id, msg.len as usize));
                        Ok(())
                    }
                    Kind::Release => Err("a Release from the server".into()),
                }
            }
            wr::READ => {
                let Some((want, len)) = b.pulling.take() else {
                    return Err("an unexpected READ completion".into());
                };
                let (id, reply) = self
                    .qp
                    .with_local(AREA_B, len, |d| decode_frame::<Reply>(d, FrameKind::Reply))?;
                b.release_due = true;
                bump(&self.stats.staged_replies);
                self.answer(b, id, reply, want)
            }
            k => Err(format!("completion of unknown kind {k}")),
        }
    }

    /// Index of an unanswered request of this batch.
    fn known(&self, b: &Batch, id: u64) -> Result<usize, String> {
        let i = id.wrapping_sub(b.base) as usize;
        if i >= b.sent || b.out.get(i).is_none_or(|r| r.is_some()) {
            return Err(format!("a reply to request {id}, which is not waiting"));
        }
        Ok(i)
    }

    fn answer(
        &mut self,
        b: &mut Batch,
        frame_id: u64,
        reply: Reply,
        msg_id: u64,
    ) -> Result<(), String> {
        if frame_id != msg_id {
            return Err(format!("message {msg_id} carries the reply to {frame_id}"));
        }
        let i = self.known(b, frame_id)?;
        b.out[i] = Some(Ok(reply));
        b.outstanding -= 1;
        if self.bulk_owner == Some(frame_id) {
            self.bulk_owner = None;
        }
        Ok(())
    }
}

/// The RDMA transport to one server: connections made on `F`, set up
/// through the server's TCP port.
pub struct RdmaPool<F: Fabric> {
    addr: String,
    cfg: ClientConfig,
    fabric: Arc<F>,
    tcp: TcpPool,
    /// Idle connections, and the process that made them: a child after
    /// `fork` never uses its parent's queue pairs (their memory is now
    /// copy-on-write); it forgets them, without destroying what the parent
    /// still uses, and makes its own.
    idle: Mutex<(u32, Vec<RdmaConn<F::Qp>>)>,
    stats: Arc<RdmaStats>,
}

impl<F: Fabric> RdmaPool<F> {
    /// Opens a first connection to `addr` (which proves the server speaks
    /// RDMA) and keeps it.
    pub fn connect(
        addr: &str,
        cfg: &ClientConfig,
        fabric: Arc<F>,
    ) -> Result<RdmaPool<F>, TransportError> {
        let pool = RdmaPool {
            addr: addr.to_string(),
            cfg: cfg.clone(),
            fabric,
            tcp: TcpPool::new(addr.to_string(), cfg.clone()),
            idle: Mutex::new((std::process::id(), Vec::new())),
            stats: Arc::default(),
        };
        let c = pool.open()?;
        pool.idle.lock().1.push(c);
        Ok(pool)
    }

    fn open(&self) -> Result<RdmaConn<F::Qp>, TransportError> {
        let io = |e: io::Error| TransportError::Io {
            addr: self.addr.clone(),
            source: e,
        };
        let (mut qp, mine) = self.fabric.endpoint().map_err(io)?;
        let theirs = match self.tcp.call(0, Request::RdmaConnect { params: mine })? {
            Reply::RdmaAccept(p) => p,
            Reply::Err(e) => {
                return Err(io(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the server refused an RDMA connection: {e:?}"),
                )))
            }
            other => {
                return Err(io(io::Error::other(format!(
                    "unexpected answer to an RDMA connect: {other:?}"
                ))))
            }
        };
        self.fabric.connect(&mut qp, &theirs).map_err(io)?;
        RdmaConn::new(qp, &self.addr, self.cfg.io_timeout, self.stats.clone()).map_err(io)
    }

    /// How this pool's messages travelled.
    pub fn stats(&self) -> &RdmaStats {
        &self.stats
    }
}

impl<F: Fabric> Transport for RdmaPool<F> {
    fn call_many(&self, epoch: u64, reqs: Vec<Request>) -> Vec<Result<Reply, TransportError>> {
        let popped = {
            let mut idle = self.idle.lock();
            let me = std::process::id();
            if idle.0 != me {
                std::mem::forget(std::mem::take(&mut idle.1));
                idle.0 = me;
            }
            idle.1.pop()
        };
        let mut conn = match popped {
            Some(c) => c,
            None => match self.open() {
                Ok(c) => c,
                Err(e) => {
                    let n = reqs.len();
                    return crate::fail_rest(Vec::new(), n, e);
                }
            },
        };
        let out = conn.call_many(epoch, reqs);
        if !conn.is_broken() {
            let mut idle = self.idle.lock();
            if idle.0 == std::process::id() && idle.1.len() < self.cfg.max_idle.max(1) {
                idle.1.push(conn);
            }
        }
        out
    }

    fn addr(&self) -> &str {
        &self.addr
    }
}
