//! The server side: [`FrontDoor`] answers `RdmaConnect` on the TCP port and
//! starts one thread per RDMA connection, which serves its requests in
//! order through the server's [`Handler`].

use super::wire::{decode_frame, Kind, Msg, Target, HDR};
use super::{wr, Completion, Fabric, Qp, AREA_A, AREA_B, INLINE, RECV_OFF, SEND_OFF, SLOTS};
use crate::tcp::Handler;
use sealfs_proto::frame::encode_frame;
use sealfs_proto::{Envelope, Errno, FrameKind, Reply, Request};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connection's thread spins after its last completion before
/// it naps between polls.
const SPIN: Duration = Duration::from_micros(250);
/// The longest nap of an idle connection's thread.
const MAX_NAP: Duration = Duration::from_millis(1);

/// Connections a server serves at once by default: each has a thread and
/// pins [`super::REGION_LEN`] bytes.
pub const MAX_CONNS: usize = 256;

/// Held by a connection's thread while it serves; counts live connections.
pub struct ConnSlot(Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts RDMA connections for a server whose requests `H` handles.
pub trait Acceptor<H>: Send + Sync {
    /// Makes an endpoint connected to the client's `params`, starts serving
    /// it (the serving thread keeps `slot` until it ends), and returns the
    /// endpoint's own parameters.
    fn accept(
        &self,
        params: &[u8],
        handler: Arc<H>,
        rt: tokio::runtime::Handle,
        slot: ConnSlot,
    ) -> io::Result<Vec<u8>>;
    /// The fabric's name, for messages.
    fn fabric_name(&self) -> String;
}

impl<F: Fabric, H: Handler> Acceptor<H> for F {
    fn accept(
        &self,
        params: &[u8],
        handler: Arc<H>,
        rt: tokio::runtime::Handle,
        slot: ConnSlot,
    ) -> io::Result<Vec<u8>> {
        let (mut qp, mine) = self.endpoint()?;
        self.connect(&mut qp, params)?;
        // Receives are posted before the client learns the connection exists.
        let conn = ServerConn::new(qp)?;
        std::thread::Builder::new()
            .name("sealfs-rdma".into())
            .spawn(move || {
                let _slot = slot;
                conn.run(handler, rt)
            })?;
        Ok(mine)
    }

    fn fabric_name(&self) -> String {
        self.name()
    }
}

/// The server's handler behind its TCP port: answers `RdmaConnect` itself
/// (or `ENOTSUP` without RDMA) and passes every other request on.
pub struct FrontDoor<H> {
    inner: Arc<H>,
    rdma: Option<Arc<dyn Acceptor<H>>>,
    rt: tokio::runtime::Handle,
    live: Arc<AtomicUsize>,
    max_conns: usize,
}

impl<H: Handler> FrontDoor<H> {
    /// Wraps `inner`; must be called inside the runtime the RDMA
    /// connections' handlers run on.
    pub fn new(inner: Arc<H>, rdma: Option<Arc<dyn Acceptor<H>>>) -> Arc<FrontDoor<H>> {
        Self::with_limit(inner, rdma, MAX_CONNS)
    }

    /// As [`FrontDoor::new`], answering `EAGAIN` to RDMA connects beyond
    /// `max_conns` connections at once.
    pub fn with_limit(
        inner: Arc<H>,
        rdma: Option<Arc<dyn Acceptor<H>>>,
        max_conns: usize,
    ) -> Arc<FrontDoor<H>> {
        Arc::new(FrontDoor {
            inner,
            rdma,
            rt: tokio::runtime::Handle::current(),
            live: Arc::new(AtomicUsize::new(0)),
            max_conns,
        })
    }

    fn accept(&self, params: &[u8]) -> Reply {
        let Some(a) = &self.rdma else {
            return Reply::Err(Errno::ENOTSUP);
        };
        if self.live.fetch_add(1, Ordering::AcqRel) >= self.max_conns {
            self.live.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                "refusing an RDMA connection: {} already served",
                self.max_conns
            );
            return Reply::Err(Errno::EAGAIN);
        }
        let slot = ConnSlot(self.live.clone());
        match a.accept(params, self.inner.clone(), self.rt.clone(), slot) {
            Ok(p) => {
                tracing::debug!("RDMA connection accepted on {}", a.fabric_name());
                Reply::RdmaAccept(p)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot accept an RDMA connection on {}: {e}",
                    a.fabric_name()
                );
                Reply::Err(Errno::EIO)
            }
        }
    }
}

impl<H: Handler> Handler for FrontDoor<H> {
    async fn handle(self: Arc<Self>, env: Envelope) -> Reply {
        if let Request::RdmaConnect { params } = &env.req {
            return self.accept(params);
        }
        self.inner.clone().handle(env).await
    }
}

/// One RDMA connection, served by its own thread.
struct ServerConn<Q: Qp> {
    qp: Q,
    send_free: Vec<usize>,
    /// Received requests: (slot, bytes).
    ready: VecDeque<(usize, usize)>,
    /// Area B holds a staged reply the client has not released.
    stage_busy: bool,
    read_done: bool,
    write_done: bool,
    comps: Vec<Completion>,
    frame: Vec<u8>,
    last_work: Instant,
}

impl<Q: Qp> ServerConn<Q> {
    fn new(mut qp: Q) -> io::Result<ServerConn<Q>> {
        for i in 0..=SLOTS {
            qp.post_recv(wr::id(wr::RECV, i), RECV_OFF + i * INLINE, INLINE)?;
        }
        Ok(ServerConn {
            qp,
            send_free: (0..=SLOTS).collect(),
            ready: VecDeque::new(),
            stage_busy: false,
            read_done: true,
            write_done: true,
            comps: Vec::new(),
            frame: Vec::new(),
            last_work: Instant::now(),
        })
    }

    fn run<H: Handler>(mut self, handler: Arc<H>, rt: tokio::runtime::Handle) {
        loop {
            if let Err(why) = self.serve_one(&handler, &rt) {
                tracing::warn!("RDMA client disconnected: {why}");
                return;
            }
        }
    }

    /// Waits for the next request, runs it and sends its reply.
    fn serve_one<H: Handler>(
        &mut self,
        handler: &Arc<H>,
        rt: &tokio::runtime::Handle,
    ) -> Result<(), String> {
        let (slot, got) = self.wait(|s| s.ready.pop_front())?;
        let off = RECV_OFF + slot * INLINE;
        let (msg, env) = self.qp.with_local(off, INLINE, |m| {
            let msg = Msg::decode(m, got)?;
            let env = match msg.kind {
                Kind::Inline => Some(decode_frame::<Envelope>(
                    &m[HDR..HDR + msg.len as usize],
                    FrameKind::Request,
                )?),
                _ => None,
            };
            Ok::<_, String>((msg, env))
        })?;
        self.qp
            .post_recv(wr::id(wr::RECV, slot), off, INLINE)
            .map_err(|e| format!("post receive: {e}"))?;
        let (id, env) = match msg.kind {
            Kind::Inline => env.expect("decoded above"),
            Kind::Pull => {
                let len = msg.len as usize;
                self.read_done = false;
                self.qp
                    .post_read(wr::id(wr::READ, 0), AREA_A, len, msg.addr, msg.rkey)
                    .map_err(|e| format!("post read: {e}"))?;
                self.wait(|s| s.read_done.then_some(()))?;
                self.qp.with_local(AREA_A, len, |d| {
                    decode_frame::<Envelope>(d, FrameKind::Request)
                })?
            }
            k => return Err(format!("a {k:?} message where a request was expected")),
        };
        if id != msg.id {
            return Err(format!("message {} carries request {id}", msg.id));
        }
        let reply = rt.block_on(handler.clone().handle(env));
        self.reply(id, msg.reply, &reply)
    }

    fn reply(&mut self, id: u64, target: Option<Target>, reply: &Reply) -> Result<(), String> {
        let mut frame = std::mem::take(&mut self.frame);
        if let Err(e) = encode_frame(FrameKind::Reply, id, reply, &mut frame) {
            tracing::warn!("reply to {id} does not fit a frame: {e}");
            encode_frame(
                FrameKind::Reply,
                id,
                &Reply::Err(Errno::EOVERFLOW),
                &mut frame,
            )
            .map_err(|e| e.to_string())?;
        }
        let len = frame.len();
        let res = if HDR + len <= INLINE {
            let slot = self.wait(|s| s.send_free.pop())?;
            let off = SEND_OFF + slot * INLINE;
            self.qp.with_local(off, HDR + len, |m| {
                Msg::new(Kind::Inline, id, len).encode(m);
                m[HDR..].copy_from_slice(&frame);
            });
            self.qp.post_send(wr::id(wr::SEND, slot), off, HDR + len)
        } else if let Some(t) = target.filter(|t| t.cap as usize >= len) {
            // Into the area the request offered, then say so; RC delivers
            // the SEND after the WRITE's data.
            self.qp
                .with_local(AREA_A, len, |d| d.copy_from_slice(&frame));
            self.write_done = false;
            self.qp
                .post_write(wr::id(wr::WRITE, 0), AREA_A, len, t.addr, t.rkey)
                .map_err(|e| format!("post write: {e}"))?;
            let slot = self.wait(|s| s.send_free.pop())?;
            let off = SEND_OFF + slot * INLINE;
            self.qp
                .with_local(off, HDR, |m| Msg::new(Kind::Written, id, len).encode(m));
            self.qp
                .post_send(wr::id(wr::SEND, slot), off, HDR)
                .map_err(|e| format!("post send: {e}"))?;
            self.wait(|s| s.write_done.then_some(()))?;
            Ok(())
        } else {
            // Staged in area B for the client to READ.
            self.wait(|s| (!s.stage_busy).then_some(()))?;
            self.qp
                .with_local(AREA_B, len, |d| d.copy_from_slice(&frame));
            let (base, rkey) = self.qp.region();
            let mut msg = Msg::new(Kind::Pull, id, len);
            msg.addr = base + AREA_B as u64;
            msg.rkey = rkey;
            let slot = self.wait(|s| s.send_free.pop())?;
            let off = SEND_OFF + slot * INLINE;
            self.qp.with_local(off, HDR, |m| msg.encode(m));
            self.stage_busy = true;
            self.qp.post_send(wr::id(wr::SEND, slot), off, HDR)
        };
        self.frame = frame;
        res.map_err(|e| format!("post send: {e}"))
    }

    /// Polls until `ready` gives a value; errors when the queue pair fails.
    fn wait<T>(&mut self, mut ready: impl FnMut(&mut Self) -> Option<T>) -> Result<T, String> {
        let mut nap = Duration::from_micros(10);
        loop {
            if let Some(v) = ready(self) {
                return Ok(v);
            }
            let mut comps = std::mem::take(&mut self.comps);
            comps.clear();
            let polled = self.qp.poll(&mut comps);
            let any = !comps.is_empty();
            let mut res = polled.map_err(|e| format!("completion queue: {e}"));
            for c in comps.drain(..) {
                if res.is_ok() {
                    res = self.on_completion(c);
                }
            }
            self.comps = comps;
            res?;
            if any {
                self.last_work = Instant::now();
                nap = Duration::from_micros(10);
            } else if self.last_work.elapsed() < SPIN {
                std::thread::yield_now();
            } else {
                std::thread::sleep(nap);
                nap = (nap * 2).min(MAX_NAP);
            }
        }
    }

    fn on_completion(&mut self, c: Completion) -> Result<(), String> {
        let got = c
            .result
            .map_err(|e| format!("work request {:#x}: {e}", c.wr_id))? as usize;
        let slot = wr::slot(c.wr_id);
        match wr::kind(c.wr_id) {
            wr::SEND => self.send_free.push(slot),
            wr::READ => self.read_done = true,
            wr::WRITE => self.write_done = true,
            wr::RECV if slot <= SLOTS => {
                let off = RECV_OFF + slot * INLINE;
                let msg = self.qp.with_local(off, INLINE, |m| Msg::decode(m, got))?;
                if msg.kind == Kind::Release {
                    if !self.stage_busy {
                        return Err("a Release with no staged reply".into());
                    }
                    self.stage_busy = false;
                    self.qp
                        .post_recv(wr::id(wr::RECV, slot), off, INLINE)
                        .map_err(|e| format!("post receive: {e}"))?;
                } else {
                    self.ready.push_back((slot, got));
                }
            }
            k => return Err(format!("completion {k}/{slot} of no request")),
        }
        Ok(())
    }
}
