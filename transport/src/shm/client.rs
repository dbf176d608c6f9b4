//! The client side: [`ShmPool`], a [`Transport`] over ring pairs.
//!
//! Like `TcpPool`, a ring pair is taken from an idle list for one
//! `call_many` (so threads never share a ring: each ring has exactly one
//! client-side thread at a time), created lazily, and put back only if the
//! call ended cleanly. A ring belongs to the process that created it: after
//! `fork` the child sees the parent's rings as absent and makes its own.

use super::layout::{
    check_cons, check_prod, write_frame_header, DataAlloc, Dir, Region, Violation, ENTRIES, MAGIC,
    REGION_LEN,
};
use super::sys::{self, Mapping};
use super::{ring_socket_name, RingConfig};
use crate::{ClientConfig, InFlight, Transport, TransportError};
use parking_lot::Mutex;
use std::sync::Arc;

use sealfs_proto::{FrameKind, Reply, Request, FRAME_HEADER_LEN};
use serde::Serialize;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Ring pairs this process has set up (for tests and the transport report).
pub static RINGS_OPENED: AtomicU64 = AtomicU64::new(0);

/// The request as it goes on the wire: the same bytes as
/// `Envelope { epoch, req }` (postcard writes fields in order, without
/// names) but borrowing the request, so a 1 MiB write is encoded straight
/// into the shared area without a clone.
#[derive(Serialize)]
struct EnvelopeRef<'a> {
    epoch: u64,
    req: &'a Request,
}

/// One ring pair, owned by one thread at a time.
struct RingConn {
    sock: UnixStream,
    region: Region,
    pid: u32,
    next_id: u64,
    /// Submission entries published (private copy of `sq_prod`).
    sq_prod: u64,
    /// Submission entries known consumed.
    sq_cons: u64,
    sq_alloc: DataAlloc,
    /// Completion entries consumed.
    cq_cons: u64,
    scratch: Vec<u8>,
}

/// Why a ring call failed.
enum Fail {
    Io(io::Error),
    Proto(String),
    Timeout,
}

impl From<Violation> for Fail {
    fn from(v: Violation) -> Self {
        Fail::Proto(v.0)
    }
}

impl RingConn {
    fn connect(addr: &str, cfg: &ClientConfig) -> io::Result<RingConn> {
        let sa = SocketAddr::from_abstract_name(ring_socket_name(addr).as_bytes())?;
        let sock = UnixStream::connect_addr(&sa)?;
        sock.set_read_timeout(Some(cfg.connect_timeout))?;
        let mut hello = [0u8; 16];
        let (n, fd) = sys::recv_with_fd(sock.as_raw_fd(), &mut hello)?;
        let bad = |m: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ring hello from {addr}: {m}"),
            )
        };
        if n != hello.len() || u64::from_le_bytes(hello[..8].try_into().unwrap()) != MAGIC {
            return Err(bad("not a SealFS ring server"));
        }
        if u64::from_le_bytes(hello[8..].try_into().unwrap()) != REGION_LEN as u64 {
            return Err(bad("region size differs from this build's layout"));
        }
        let fd = fd.ok_or_else(|| bad("no region descriptor"))?;
        let region = Region::new(Mapping::map(&fd, REGION_LEN)?);
        // The mapping keeps the memory; the descriptor is not needed any more
        // (and would be one more fd an application could trip over).
        drop(fd);
        region.check().map_err(|v| bad(&v.0))?;
        sock.set_nonblocking(true)?;
        let c = region.control();
        let (sq, cq) = (
            c.sq_prod.load(Ordering::Acquire),
            c.cq_cons.load(Ordering::Acquire),
        );
        if sq != 0
            || cq != 0
            || c.sq_cons.load(Ordering::Acquire) != 0
            || c.cq_prod.load(Ordering::Acquire) != 0
        {
            return Err(bad("region is not fresh"));
        }
        RINGS_OPENED.fetch_add(1, Ordering::Relaxed);
        Ok(RingConn {
            sock,
            region,
            pid: sys::pid(),
            next_id: 1,
            sq_prod: 0,
            sq_cons: 0,
            sq_alloc: DataAlloc::default(),
            cq_cons: 0,
            scratch: Vec::new(),
        })
    }

    /// Frees the data of submissions the server has copied out.
    fn reclaim(&mut self) -> Result<(), Fail> {
        let cons = self.region.control().sq_cons.load(Ordering::Acquire);
        let cons = check_cons(cons, self.sq_cons, self.sq_prod)?;
        while self.sq_cons < cons {
            self.sq_alloc.release_one();
            self.sq_cons += 1;
        }
        Ok(())
    }

    /// Writes one request into the submission ring. `Ok(false)`: no room now.
    fn try_send(&mut self, id: u64, epoch: u64, req: &Request) -> Result<bool, Fail> {
        self.reclaim()?;
        if self.sq_prod - self.sq_cons >= ENTRIES {
            return Ok(false);
        }
        let msg = EnvelopeRef { epoch, req };
        // Encode straight into the shared area when the message fits the
        // largest free piece; otherwise learn its size and wait for room.
        let space = self.sq_alloc.best();
        let direct = self.region.encode_frame_at(
            Dir::Sq,
            space.off,
            space.avail,
            FrameKind::Request,
            id,
            &msg,
        );
        let (space, len) = match direct {
            Some(len) => (space, len),
            None => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
                let buf = std::mem::take(&mut self.scratch);
                let mut buf =
                    postcard::to_extend(&msg, buf).map_err(|e| Fail::Proto(e.to_string()))?;
                let n = buf.len() - FRAME_HEADER_LEN;
                if write_frame_header(&mut buf, FrameKind::Request, id, n).is_none() {
                    return Err(Fail::Proto(format!(
                        "request of {n} bytes exceeds the frame limit"
                    )));
                }
                let Some(space) = self.sq_alloc.reserve(buf.len()) else {
                    self.scratch = buf;
                    return Ok(false);
                };
                self.region
                    .with_data_mut(Dir::Sq, space.off, buf.len(), |d| d.copy_from_slice(&buf));
                let len = buf.len();
                self.scratch = buf;
                (space, len)
            }
        };
        self.sq_alloc.commit(space, len);
        self.region
            .publish(Dir::Sq, self.sq_prod, id, space.off, len);
        self.sq_prod += 1;
        Ok(true)
    }

    /// Tells a sleeping server poller that work arrived.
    fn doorbell(&mut self) {
        fence(Ordering::SeqCst);
        let c = self.region.control();
        if c.server_sleeping.load(Ordering::Relaxed) != 0
            && c.server_sleeping.swap(0, Ordering::SeqCst) != 0
        {
            // Non-blocking: a full socket buffer already holds doorbells.
            let _ = (&self.sock).write(&[1u8]);
        }
    }

    /// Takes the next completion if one is published.
    fn poll_reply(&mut self) -> Result<Option<(u64, Reply)>, Fail> {
        let prod = self.region.control().cq_prod.load(Ordering::Acquire);
        let prod = check_prod(prod, self.cq_cons)?;
        if prod == self.cq_cons {
            return Ok(None);
        }
        let (h, reply) =
            self.region
                .decode_frame::<Reply>(Dir::Cq, self.cq_cons, FrameKind::Reply)?;
        self.cq_cons += 1;
        self.region
            .control()
            .cq_cons
            .store(self.cq_cons, Ordering::Release);
        let reply = reply.map_err(Fail::Proto)?;
        Ok(Some((h.id, reply)))
    }

    /// Waits for the next completion: spin for `spin`, then sleep on the
    /// futex in slices, checking that the server is alive between slices.
    fn wait_reply(&mut self, rc: &RingConfig, timeout: Duration) -> Result<(u64, Reply), Fail> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.poll_reply()? {
                return Ok(r);
            }
            let waited = start.elapsed();
            if waited < rc.spin {
                // On few cores the server may need this core: give it a
                // turn on every empty poll (see `super::RingConfig`).
                std::thread::yield_now();
                continue;
            }
            if waited >= timeout {
                return Err(Fail::Timeout);
            }
            let c = self.region.control();
            let seen = c.client_futex.load(Ordering::Acquire);
            c.client_sleeping.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if c.cq_prod.load(Ordering::Acquire) == self.cq_cons {
                sys::futex_wait(&c.client_futex, seen, rc.sleep_slice.min(timeout - waited));
            }
            c.client_sleeping.store(0, Ordering::Relaxed);
            if c.cq_prod.load(Ordering::Acquire) == self.cq_cons
                && sys::peer_gone(self.sock.as_raw_fd())
            {
                return Err(Fail::Io(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "ring server closed the connection",
                )));
            }
        }
    }

    fn run(
        &mut self,
        rc: &RingConfig,
        cfg: &ClientConfig,
        epoch: u64,
        reqs: &[Request],
        out: &mut Vec<Result<Reply, TransportError>>,
    ) -> Result<(), Fail> {
        let base = self.next_id;
        self.next_id += reqs.len() as u64;
        let mut replies: Vec<Option<Reply>> = vec![None; reqs.len()];
        let (mut sent, mut received) = (0usize, 0usize);
        let window = cfg.window.clamp(1, ENTRIES as usize);
        while received < reqs.len() {
            let before = sent;
            while sent < reqs.len() && sent - received < window {
                if !self.try_send(base + sent as u64, epoch, &reqs[sent])? {
                    break;
                }
                sent += 1;
            }
            if sent > before {
                self.doorbell();
            }
            if sent == received {
                // Nothing of ours in flight and no room: the server has not
                // yet consumed earlier frames. Wait for it.
                self.wait_room(rc, cfg.io_timeout)?;
                continue;
            }
            let (id, reply) = self.wait_reply(rc, cfg.io_timeout)?;
            let idx = id.wrapping_sub(base) as usize;
            if idx >= reqs.len() || replies[idx].is_some() {
                return Err(Fail::Proto(format!("unexpected reply id {id}")));
            }
            replies[idx] = Some(reply);
            received += 1;
        }
        out.extend(
            replies
                .into_iter()
                .map(|r| Ok(r.expect("every reply arrived"))),
        );
        Ok(())
    }

    fn wait_room(&mut self, rc: &RingConfig, timeout: Duration) -> Result<(), Fail> {
        let start = Instant::now();
        let c = self.region.control();
        while c.sq_cons.load(Ordering::Acquire) == self.sq_cons {
            if start.elapsed() >= timeout {
                return Err(Fail::Timeout);
            }
            if sys::peer_gone(self.sock.as_raw_fd()) {
                return Err(Fail::Io(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "ring server closed the connection",
                )));
            }
            std::thread::sleep(rc.sleep_slice.min(Duration::from_micros(200)));
        }
        self.reclaim()
    }
}

/// A pool of ring pairs to one server on this host.
pub struct ShmPool {
    addr: String,
    cfg: ClientConfig,
    rc: RingConfig,
    /// The process the idle rings belong to, and the rings.
    idle: Arc<Mutex<(u32, Vec<RingConn>)>>,
}

/// Puts a ring back into an idle list (if it is this process's and the
/// list has room).
fn put_back_into(idle: &Mutex<(u32, Vec<RingConn>)>, max_idle: usize, c: RingConn) {
    let mut idle = idle.lock();
    if c.pid == idle.0 && idle.1.len() < max_idle.max(1) {
        idle.1.push(c);
    }
}

/// A request on a ring of its own, its reply still to come.
struct ShmInFlight {
    conn: Option<RingConn>,
    id: u64,
    idle: Arc<Mutex<(u32, Vec<RingConn>)>>,
    addr: String,
    cfg: ClientConfig,
    rc: RingConfig,
}

impl ShmInFlight {
    /// The reply `r` arrived (or failed): the ring goes back only when the
    /// exchange ended cleanly with the expected id.
    fn finish(&mut self, r: Result<(u64, Reply), Fail>) -> Result<Reply, TransportError> {
        let Some(conn) = self.conn.take() else {
            return Err(fail_to_error(
                &self.addr,
                &self.cfg,
                Fail::Proto("reply already taken".into()),
            ));
        };
        match r {
            Ok((id, reply)) if id == self.id => {
                put_back_into(&self.idle, self.cfg.max_idle, conn);
                Ok(reply)
            }
            Ok((id, _)) => Err(fail_to_error(
                &self.addr,
                &self.cfg,
                Fail::Proto(format!("unexpected reply id {id}")),
            )),
            Err(f) => Err(fail_to_error(&self.addr, &self.cfg, f)),
        }
    }
}

impl InFlight for ShmInFlight {
    fn try_reply(&mut self) -> Option<Result<Reply, TransportError>> {
        let polled = self.conn.as_mut()?.poll_reply();
        match polled {
            Ok(None) => None,
            Ok(Some(r)) => Some(self.finish(Ok(r))),
            Err(f) => Some(self.finish(Err(f))),
        }
    }

    fn wait(mut self: Box<Self>) -> Result<Reply, TransportError> {
        let (rc, timeout) = (self.rc.clone(), self.cfg.io_timeout);
        let r = match self.conn.as_mut() {
            Some(c) => c.wait_reply(&rc, timeout),
            None => Err(Fail::Proto("reply already taken".into())),
        };
        self.finish(r)
    }
}

fn fail_to_error(addr: &str, cfg: &ClientConfig, f: Fail) -> TransportError {
    match f {
        Fail::Io(source) => TransportError::Io {
            addr: addr.to_string(),
            source,
        },
        Fail::Proto(m) => TransportError::Frame {
            addr: addr.to_string(),
            source: sealfs_proto::FrameError::Decode(format!("ring: {m}")),
        },
        Fail::Timeout => TransportError::Timeout {
            addr: addr.to_string(),
            timeout: cfg.io_timeout,
        },
    }
}

impl ShmPool {
    /// A pool for the server that advertises `addr`; connects lazily to its
    /// ring socket (named after `addr`, see [`ring_socket_name`]).
    pub fn new(addr: impl Into<String>, cfg: ClientConfig) -> Self {
        ShmPool {
            addr: addr.into(),
            cfg,
            rc: RingConfig::from_env(),
            idle: Arc::new(Mutex::new((sys::pid(), Vec::new()))),
        }
    }

    /// Whether a ring server answers for `addr` here: sets up one ring pair
    /// (kept for later calls).
    pub fn probe(&self) -> io::Result<()> {
        let c = RingConn::connect(&self.addr, &self.cfg)?;
        self.put_back(c);
        Ok(())
    }

    /// Drops every idle ring pair.
    pub fn clear(&self) {
        self.idle.lock().1.clear();
    }

    fn put_back(&self, c: RingConn) {
        put_back_into(&self.idle, self.cfg.max_idle, c);
    }

    fn take(&self) -> Option<RingConn> {
        let me = sys::pid();
        let mut idle = self.idle.lock();
        if me != idle.0 {
            // A forked child: these rings are its parent's. Dropping only
            // unmaps the child's view and closes its copy of the socket; the
            // shared memory is not written, so the parent is unaffected.
            idle.1.clear();
            idle.0 = me;
            return None;
        }
        idle.1.pop()
    }

    fn err(&self, f: Fail) -> TransportError {
        fail_to_error(&self.addr, &self.cfg, f)
    }
}

impl Transport for ShmPool {
    fn call_many(&self, epoch: u64, reqs: Vec<Request>) -> Vec<Result<Reply, TransportError>> {
        let n = reqs.len();
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let mut conn = match self.take() {
            Some(mut c) => match c.run(&self.rc, &self.cfg, epoch, &reqs, &mut out) {
                Ok(()) => Some(c),
                // An idle ring may belong to a server that restarted: retry
                // once on a fresh one if nothing of this call was answered.
                Err(_) if out.is_empty() => None,
                Err(e) => return crate::fail_rest(out, n, self.err(e)),
            },
            None => None,
        };
        if conn.is_none() {
            let mut c = match RingConn::connect(&self.addr, &self.cfg) {
                Ok(c) => c,
                Err(e) => return crate::fail_rest(out, n, self.err(Fail::Io(e))),
            };
            if let Err(e) = c.run(&self.rc, &self.cfg, epoch, &reqs, &mut out) {
                return crate::fail_rest(out, n, self.err(e));
            }
            conn = Some(c);
        }
        if let Some(c) = conn {
            self.put_back(c);
        }
        out
    }

    fn addr(&self) -> &str {
        &self.addr
    }

    /// Takes a ring of its own for the request (an idle one, or a new
    /// one), so its reply is the next completion on that ring.
    fn send(&self, epoch: u64, req: &Request) -> Option<Result<Box<dyn InFlight>, TransportError>> {
        let mut conn = match self.take() {
            Some(c) => c,
            None => match RingConn::connect(&self.addr, &self.cfg) {
                Ok(c) => c,
                Err(e) => return Some(Err(self.err(Fail::Io(e)))),
            },
        };
        let id = conn.next_id;
        conn.next_id += 1;
        match conn.try_send(id, epoch, req) {
            Ok(true) => {}
            // No room on an idle ring: the caller takes the blocking path.
            Ok(false) => {
                self.put_back(conn);
                return None;
            }
            Err(f) => return Some(Err(self.err(f))),
        }
        conn.doorbell();
        Some(Ok(Box::new(ShmInFlight {
            conn: Some(conn),
            id,
            idle: self.idle.clone(),
            addr: self.addr.clone(),
            cfg: self.cfg.clone(),
            rc: self.rc.clone(),
        })))
    }
}
