//! The server side: one polling thread per server process serves every ring
//! pair.
//!
//! The poller accepts ring clients on the abstract Unix socket, hands each a
//! fresh region, and then loops over all rings: it copies each submitted
//! frame out (after checking every index, offset and length), decodes it and
//! runs it through the same [`Handler`] as the TCP server. The handler's
//! future is polled once on the poller thread (in the runtime's context): a
//! request that completes without waiting is answered right there, with no
//! thread hand-off; one that waits (store work in `spawn_blocking`) moves to
//! a tokio task, which writes its reply into the completion ring itself.
//!
//! Waiting: the poller spins (yielding on every empty poll) for
//! [`RingConfig::server_spin`] after the last message, then sets
//! `server_sleeping` in every region, re-checks, and sleeps in `poll(2)`
//! on the listener and every client socket; a client that publishes work
//! while the flag is set writes one doorbell byte. The same `poll` reports
//! a client that died (EOF / hang-up on its socket): its ring is dropped,
//! tasks still running for it see it closed and discard their replies, and
//! the region is unmapped when the last of them ends.
//!
//! A client that breaks the protocol (garbage in its region) is disconnected
//! with a logged reason; the others are not affected.

use super::layout::{
    check_cons, check_prod, DataAlloc, Dir, Region, Violation, ENTRIES, MAGIC, REGION_LEN,
};
use super::sys::{self, Mapping};
use super::{ring_socket_name, RingConfig};
use crate::tcp::{Handler, MAX_IN_FLIGHT};
use parking_lot::Mutex;
use sealfs_proto::frame::encode_frame;
use sealfs_proto::{Envelope, Errno, FrameKind, Reply};
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Requests taken from one ring before moving to the next (fairness).
const BATCH: usize = 16;

/// Counters of a ring server, for tests and logs.
#[derive(Debug, Default)]
pub struct RingStats {
    /// Ring clients accepted.
    pub accepted: AtomicU64,
    /// Clients gone (closed their socket or died).
    pub closed: AtomicU64,
    /// Clients disconnected for breaking the protocol.
    pub violations: AtomicU64,
    /// Requests served.
    pub requests: AtomicU64,
}

/// A running ring server; stops (and joins its thread) on drop.
pub struct RingServer {
    name: String,
    stop: Arc<AtomicBool>,
    stats: Arc<RingStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RingServer {
    /// Binds the ring socket for the server advertised as `addr` and starts
    /// the polling thread, which runs handlers in the context of `rt`.
    pub fn start<H: Handler>(
        addr: &str,
        handler: Arc<H>,
        rt: tokio::runtime::Handle,
    ) -> io::Result<RingServer> {
        let name = ring_socket_name(addr);
        let sa = SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = UnixListener::bind_addr(&sa)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(RingStats::default());
        let mut poller = Poller {
            listener,
            slots: Vec::new(),
            handler,
            rt,
            cfg: RingConfig::from_env(),
            stop: stop.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("sealfs-rings".into())
            .spawn(move || poller.run())?;
        Ok(RingServer {
            name,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// The abstract socket name (without the leading NUL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's counters.
    pub fn stats(&self) -> &RingStats {
        &self.stats
    }

    /// Lets the server run until the process ends.
    pub fn detach(mut self) {
        self.thread.take();
    }
}

impl Drop for RingServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// What the reply writers share about one client.
struct Conn {
    sock: UnixStream,
    region: Region,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    reply: Mutex<ReplySide>,
    stats: Arc<RingStats>,
}

#[derive(Default)]
struct ReplySide {
    cq_prod: u64,
    cq_cons: u64,
    alloc: DataAlloc,
}

enum Push {
    Done,
    Full,
    Gone,
}

impl Conn {
    fn disconnect(&self, why: &Violation) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            tracing::warn!("ring client disconnected: {why}");
            self.stats.violations.fetch_add(1, Ordering::Relaxed);
            let _ = self.sock.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Writes the reply to `id` into the completion ring if there is room.
    /// `cache` keeps an encoding made when the reply did not fit in place
    /// (or while the ring was full); with one there, `reply` may be gone.
    fn try_push(&self, id: u64, reply: Option<&Reply>, cache: &mut Option<Vec<u8>>) -> Push {
        if self.closed.load(Ordering::Relaxed) {
            return Push::Gone;
        }
        let mut r = self.reply.lock();
        let c = self.region.control();
        let cons = match check_cons(c.cq_cons.load(Ordering::Acquire), r.cq_cons, r.cq_prod) {
            Ok(v) => v,
            Err(v) => {
                self.disconnect(&v);
                return Push::Gone;
            }
        };
        while r.cq_cons < cons {
            r.alloc.release_one();
            r.cq_cons += 1;
        }
        if r.cq_prod - r.cq_cons >= ENTRIES {
            return Push::Full;
        }
        if cache.is_none() {
            // Without either, the caller erred: say so rather than hang.
            let reply = reply.unwrap_or(&Reply::Err(Errno::EIO));
            let space = r.alloc.best();
            let direct = self.region.encode_frame_at(
                Dir::Cq,
                space.off,
                space.avail,
                FrameKind::Reply,
                id,
                reply,
            );
            if let Some(len) = direct {
                r.alloc.commit(space, len);
                self.publish(&mut r, id, space.off, len);
                return Push::Done;
            }
            *cache = Some(encode_reply(id, reply));
        }
        self.push_cached(&mut r, id, cache)
    }

    fn push_cached(&self, r: &mut ReplySide, id: u64, cache: &mut Option<Vec<u8>>) -> Push {
        let v = cache.as_ref().expect("cached frame");
        let Some(space) = r.alloc.reserve(v.len()) else {
            return Push::Full;
        };
        self.region
            .with_data_mut(Dir::Cq, space.off, v.len(), |d| d.copy_from_slice(v));
        r.alloc.commit(space, v.len());
        self.publish(r, id, space.off, v.len());
        Push::Done
    }

    fn publish(&self, r: &mut ReplySide, id: u64, off: usize, len: usize) {
        self.region.publish(Dir::Cq, r.cq_prod, id, off, len);
        r.cq_prod += 1;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let c = self.region.control();
        if c.client_sleeping.load(Ordering::Relaxed) != 0 {
            c.client_futex.fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(&c.client_futex);
        }
    }

    /// Pushes a reply, waiting (asynchronously) while the client's
    /// completion ring is full; gives up when the client is gone. While
    /// it waits it keeps the reply's encoding, not the reply: a client
    /// that stops reading must not pin what a reply holds (a read's view
    /// of a log segment keeps that segment mapped, and its disk space in
    /// use after compaction deleted it).
    async fn push(self: Arc<Self>, id: u64, reply: Reply) {
        let mut cache = None;
        let mut reply = Some(reply);
        let mut pause = Duration::from_micros(20);
        loop {
            match self.try_push(id, reply.as_ref(), &mut cache) {
                Push::Done | Push::Gone => return,
                Push::Full => {
                    if let Some(r) = reply.take() {
                        if cache.is_none() {
                            cache = Some(encode_reply(id, &r));
                        }
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
            }
        }
    }
}

/// The frame of the reply to `id`; `EOVERFLOW` in its place when it does
/// not fit a frame.
fn encode_reply(id: u64, reply: &Reply) -> Vec<u8> {
    let mut v = Vec::new();
    if let Err(e) = encode_frame(FrameKind::Reply, id, reply, &mut v) {
        tracing::warn!("reply to {id} does not fit a frame: {e}");
        encode_frame(FrameKind::Reply, id, &Reply::Err(Errno::EOVERFLOW), &mut v)
            .expect("an errno fits a frame");
    }
    v
}

struct Slot {
    conn: Arc<Conn>,
    /// Submission entries consumed (the poller's own copy).
    sq_cons: u64,
}

thread_local! {
    /// Set on a ring poller thread (see [`on_ring_poller`]).
    static ON_POLLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller runs on a ring poller thread: a handler polled there
/// must not block (every ring of the server waits behind it, and two
/// servers blocking on each other's pollers would deadlock); it should
/// return `Pending` first, so the poller moves it to a tokio task.
pub fn on_ring_poller() -> bool {
    ON_POLLER.with(|f| f.get())
}

struct Poller<H: Handler> {
    listener: UnixListener,
    slots: Vec<Slot>,
    handler: Arc<H>,
    rt: tokio::runtime::Handle,
    cfg: RingConfig,
    stop: Arc<AtomicBool>,
    stats: Arc<RingStats>,
}

impl<H: Handler> Poller<H> {
    fn run(&mut self) {
        ON_POLLER.with(|f| f.set(true));
        let _ctx = self.rt.clone();
        let _guard = _ctx.enter();
        let mut last_work = Instant::now();
        let mut last_check = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let mut did = 0;
            for i in 0..self.slots.len() {
                match self.serve_slot(i) {
                    Ok(n) => did += n,
                    Err(v) => self.slots[i].conn.disconnect(&v),
                }
            }
            self.slots.retain(|s| {
                let keep = !s.conn.closed.load(Ordering::Relaxed);
                if !keep {
                    s.conn.stats.closed.fetch_add(1, Ordering::Relaxed);
                }
                keep
            });
            if did > 0 {
                last_work = Instant::now();
            }
            if last_check.elapsed() >= Duration::from_millis(2) {
                // While busy, still accept clients and notice dead ones.
                last_check = Instant::now();
                self.wait_events(Some(Duration::ZERO));
            }
            if did > 0 {
                continue;
            }
            if last_work.elapsed() < self.cfg.server_spin {
                // Yield on every empty poll: on a host with fewer cores than
                // spinners, the thread with work gets one.
                std::thread::yield_now();
                continue;
            }
            // Idle: announce the sleep, re-check, then sleep.
            for s in &self.slots {
                s.conn
                    .region
                    .control()
                    .server_sleeping
                    .store(1, Ordering::SeqCst);
            }
            fence(Ordering::SeqCst);
            let pending = self.slots.iter().any(|s| {
                s.conn.region.control().sq_prod.load(Ordering::Acquire) != s.sq_cons
                    && s.conn.in_flight.load(Ordering::Relaxed) < MAX_IN_FLIGHT
            });
            let throttled = self
                .slots
                .iter()
                .any(|s| s.conn.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT);
            if !pending {
                let t = if throttled {
                    Duration::from_millis(1)
                } else {
                    Duration::from_millis(100)
                };
                self.wait_events(Some(t));
            }
            for s in &self.slots {
                s.conn
                    .region
                    .control()
                    .server_sleeping
                    .store(0, Ordering::Relaxed);
            }
            last_work = Instant::now();
            last_check = Instant::now();
        }
    }

    /// Polls the listener and every client socket: accepts new clients,
    /// drains doorbell bytes, and marks clients whose socket closed.
    fn wait_events(&mut self, timeout: Option<Duration>) {
        let mut fds = Vec::with_capacity(self.slots.len() + 1);
        fds.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for s in &self.slots {
            fds.push(libc::pollfd {
                fd: s.conn.sock.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            });
        }
        if sys::poll(&mut fds, timeout).unwrap_or(0) == 0 {
            return;
        }
        for (s, p) in self.slots.iter().zip(&fds[1..]) {
            if p.revents == 0 {
                continue;
            }
            let mut gone =
                p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
            if p.revents & libc::POLLIN != 0 {
                let mut b = [0u8; 256];
                loop {
                    match (&s.conn.sock).read(&mut b) {
                        Ok(0) => {
                            gone = true;
                            break;
                        }
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            gone = true;
                            break;
                        }
                    }
                }
            }
            if gone && !s.conn.closed.swap(true, Ordering::SeqCst) {
                tracing::debug!("ring client went away");
            }
        }
        if fds[0].revents != 0 {
            self.accept_all();
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => match self.setup(sock) {
                    Ok(conn) => {
                        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                        self.slots.push(Slot { conn, sq_cons: 0 });
                    }
                    Err(e) => tracing::warn!("ring client setup failed: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("ring accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Makes a fresh region for a new client and sends it over the socket.
    fn setup(&self, sock: UnixStream) -> io::Result<Arc<Conn>> {
        let (map, fd) = Mapping::create("sealfs-ring", REGION_LEN)?;
        let region = Region::new(map);
        region.init();
        let mut hello = [0u8; 16];
        hello[..8].copy_from_slice(&MAGIC.to_le_bytes());
        hello[8..].copy_from_slice(&(REGION_LEN as u64).to_le_bytes());
        sock.set_write_timeout(Some(Duration::from_secs(1)))?;
        sys::send_with_fd(sock.as_raw_fd(), &hello, fd.as_raw_fd())?;
        sock.set_nonblocking(true)?;
        Ok(Arc::new(Conn {
            sock,
            region,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            reply: Mutex::new(ReplySide::default()),
            stats: self.stats.clone(),
        }))
    }

    /// Takes up to [`BATCH`] requests from one ring.
    fn serve_slot(&mut self, i: usize) -> Result<usize, Violation> {
        let conn = self.slots[i].conn.clone();
        if conn.closed.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let c = conn.region.control();
        let mut n = 0;
        while n < BATCH && conn.in_flight.load(Ordering::Relaxed) < MAX_IN_FLIGHT {
            let cons = self.slots[i].sq_cons;
            let prod = check_prod(c.sq_prod.load(Ordering::Acquire), cons)?;
            if prod == cons {
                break;
            }
            let (h, env) =
                conn.region
                    .decode_frame::<Envelope>(Dir::Sq, cons, FrameKind::Request)?;
            self.slots[i].sq_cons = cons + 1;
            c.sq_cons.store(cons + 1, Ordering::Release);
            self.dispatch(&conn, h.id, env);
            n += 1;
        }
        Ok(n)
    }

    fn dispatch(&mut self, conn: &Arc<Conn>, id: u64, env: Result<Envelope, String>) {
        let env = match env {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!("undecodable ring request {id}: {e}");
                self.finish(conn, id, Reply::Err(Errno::EPROTO));
                return;
            }
        };
        let mut fut = Box::pin(self.handler.clone().handle(env));
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(reply) => self.finish(conn, id, reply),
            Poll::Pending => {
                // The task polls the future again first thing, so the no-op
                // waker of the first poll loses no wake-up.
                conn.in_flight.fetch_add(1, Ordering::Relaxed);
                let conn = conn.clone();
                self.rt.spawn(async move {
                    let reply = fut.await;
                    conn.clone().push(id, reply).await;
                    conn.in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }

    fn finish(&self, conn: &Arc<Conn>, id: u64, reply: Reply) {
        let mut cache = None;
        if let Push::Full = conn.try_push(id, Some(&reply), &mut cache) {
            conn.in_flight.fetch_add(1, Ordering::Relaxed);
            let conn = conn.clone();
            self.rt.spawn(async move {
                conn.clone().push(id, reply).await;
                conn.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}
