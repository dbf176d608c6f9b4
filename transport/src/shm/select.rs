//! Choosing the transport to a peer: `SEALFS_TRANSPORT=auto|shm|rdma|tcp`.
//!
//! * `auto` (default): rings when the peer's ring socket answers here (the
//!   server runs on this host, in this network namespace, with rings on),
//!   else RDMA when this build has it, this host has a device and the
//!   server accepts (tried once per peer), else TCP.
//! * `shm`: the same choice, but a peer without rings is logged as a
//!   warning (the manager has none and is always reached over TCP).
//! * `rdma`: the RDMA transport where it is built and a device exists, else
//!   TCP with a warning (this machine has no RDMA device).
//! * `tcp`: TCP only.
//!
//! The choice is made lazily, on a peer's first call (start-up stays free),
//! logged once per peer, and recorded for [`choices`]. A peer found without
//! rings is tried again after a second (a server binds its ring socket just
//! after it registers); once on rings, a peer stays on rings (a restarted
//! server is reached through fresh rings, or fails with `EIO` like TCP).

use super::ShmPool;
use crate::tcp::TcpPool;
use crate::{ClientConfig, InFlight, Reply, Request, Transport, TransportError};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A value of `SEALFS_TRANSPORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rings for a peer on this host, else TCP.
    Auto,
    /// Rings, warning about peers without them.
    Shm,
    /// RDMA (see the module docs).
    Rdma,
    /// TCP only.
    Tcp,
}

impl Mode {
    /// `SEALFS_TRANSPORT`, defaulting to `auto`; an unknown value is `auto`
    /// with a warning.
    pub fn from_env() -> Mode {
        match std::env::var("SEALFS_TRANSPORT").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Mode::Auto,
            Ok("shm") => Mode::Shm,
            Ok("rdma") => Mode::Rdma,
            Ok("tcp") => Mode::Tcp,
            Ok(other) => {
                tracing::warn!(
                    "SEALFS_TRANSPORT={other:?} is not auto, shm, rdma or tcp; using auto"
                );
                Mode::Auto
            }
        }
    }
}

/// Which transport a peer got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Shared-memory rings.
    Shm,
    /// TCP.
    Tcp,
    /// RDMA.
    Rdma,
}

static CHOICES: Mutex<Vec<(String, Choice)>> = Mutex::new(Vec::new());

/// Every choice this process made so far: (peer address, transport).
pub fn choices() -> Vec<(String, Choice)> {
    CHOICES.lock().clone()
}

/// How long a peer found without rings is reached over TCP before its ring
/// socket is tried again (a server binds it just after registering).
const REPROBE: Duration = Duration::from_secs(1);

/// The transport to `addr` under `mode`, chosen on first use.
pub fn connect(addr: &str, cfg: &ClientConfig, mode: Mode) -> Arc<dyn Transport> {
    match mode {
        Mode::Tcp => {
            record(addr, Choice::Tcp);
            Arc::new(TcpPool::new(addr, cfg.clone()))
        }
        Mode::Rdma => rdma_or_tcp(addr, cfg),
        Mode::Auto | Mode::Shm => Arc::new(Lazy {
            addr: addr.to_string(),
            mode,
            shm: ShmPool::new(addr, cfg.clone()),
            has_rings: AtomicBool::new(false),
            tcp: TcpPool::new(addr, cfg.clone()),
            cfg: cfg.clone(),
            rdma: std::sync::OnceLock::new(),
            probe: Mutex::new(None),
        }),
    }
}

fn record(addr: &str, c: Choice) {
    let mut all = CHOICES.lock();
    if !all.iter().any(|(a, k)| a == addr && *k == c) {
        tracing::info!(peer = %addr, "transport: {c:?}");
    }
    all.push((addr.to_string(), c));
}

fn rdma_or_tcp(addr: &str, cfg: &ClientConfig) -> Arc<dyn Transport> {
    match crate::rdma::connect(addr, cfg) {
        Ok(t) => {
            record(addr, Choice::Rdma);
            return t;
        }
        Err(e) => {
            tracing::warn!(peer = %addr, "SEALFS_TRANSPORT=rdma, but RDMA is unavailable ({e}); using TCP")
        }
    }
    record(addr, Choice::Tcp);
    Arc::new(TcpPool::new(addr, cfg.clone()))
}

/// Rings if the peer's ring socket answers, else TCP (tried again after
/// [`REPROBE`]). Probing is lazy: nothing happens before the first call.
struct Lazy {
    addr: String,
    mode: Mode,
    shm: ShmPool,
    has_rings: AtomicBool,
    tcp: TcpPool,
    cfg: ClientConfig,
    /// The RDMA transport, tried once when the peer has no rings here.
    rdma: std::sync::OnceLock<Option<Arc<dyn Transport>>>,
    /// When the last failed probe was made.
    probe: Mutex<Option<Instant>>,
}

impl Lazy {
    fn rings(&self) -> bool {
        if self.has_rings.load(Ordering::Acquire) {
            return true;
        }
        let mut last = self.probe.lock();
        if self.has_rings.load(Ordering::Acquire) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < REPROBE) {
            return false;
        }
        let first = last.is_none();
        *last = Some(Instant::now());
        match self.shm.probe() {
            Ok(()) => {
                self.has_rings.store(true, Ordering::Release);
                record(&self.addr, Choice::Shm);
                true
            }
            Err(e) => {
                if first {
                    if self.mode == Mode::Shm {
                        tracing::warn!(peer = %self.addr, "SEALFS_TRANSPORT=shm but the peer has no ring socket here ({e}); using TCP");
                    }
                    record(&self.addr, Choice::Tcp);
                }
                false
            }
        }
    }
}

impl Lazy {
    /// The RDMA transport to a peer without rings here, if there is one.
    fn rdma(&self) -> Option<&Arc<dyn Transport>> {
        if !cfg!(feature = "rdma") {
            return None;
        }
        self.rdma
            .get_or_init(|| match crate::rdma::connect(&self.addr, &self.cfg) {
                Ok(t) => {
                    record(&self.addr, Choice::Rdma);
                    Some(t)
                }
                Err(e) => {
                    tracing::debug!(peer = %self.addr, "no RDMA: {e}");
                    None
                }
            })
            .as_ref()
    }
}

impl Transport for Lazy {
    fn call_many(&self, epoch: u64, reqs: Vec<Request>) -> Vec<Result<Reply, TransportError>> {
        if self.rings() {
            self.shm.call_many(epoch, reqs)
        } else if let Some(r) = self.rdma() {
            r.call_many(epoch, reqs)
        } else {
            self.tcp.call_many(epoch, reqs)
        }
    }

    fn addr(&self) -> &str {
        &self.addr
    }

    fn send(&self, epoch: u64, req: &Request) -> Option<Result<Box<dyn InFlight>, TransportError>> {
        if self.rings() {
            self.shm.send(epoch, req)
        } else {
            None
        }
    }
}
