//! The client's view of the cluster: the map, its ring and one transport per
//! server.
//!
//! Invariants:
//! * [`State`] is immutable once built; a refresh builds a new one and swaps
//!   the `Arc` under the write lock, so a request routes by one consistent
//!   (map, ring, transports) triple from start to end.
//! * A server keeps its transport (and so its idle connections) across
//!   refreshes as long as its address is unchanged; a new address gets a new
//!   transport.
//! * A server back up after being marked down gets a new transport.
//! * Refreshes are serialised by one mutex: threads that all saw the same
//!   stale epoch fetch the map once, not once each.

use parking_lot::{Mutex, RwLock};
use sealfs_proto::frame::MAX_CHUNK_SIZE;
use sealfs_proto::{ClusterMap, Errno, Reply, Request, Ring, ServerId, ServerState};
use sealfs_transport::{ClientConfig, Transport, TransportError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Makes the transport to one server (or the manager) from its address.
pub type Connector = dyn Fn(&str, &ClientConfig) -> Arc<dyn Transport> + Send + Sync;

/// The default connector: the transport
/// `SEALFS_TRANSPORT=auto|shm|rdma|tcp` asks for, read once here. `auto`
/// (the default) uses shared-memory rings to a server whose ring socket
/// answers on this host and TCP otherwise; the choice is made on a peer's
/// first call and logged once (see `sealfs_transport::shm::connect`).
pub(crate) fn default_connector() -> Arc<Connector> {
    let mode = sealfs_transport::shm::Mode::from_env();
    Arc::new(
        move |addr: &str, cfg: &ClientConfig| -> Arc<dyn Transport> {
            sealfs_transport::shm::connect(addr, cfg, mode)
        },
    )
}

/// Shortest time between two refreshes caused by a server marked down.
/// Short, so that a server back up is used as soon as the manager says so
/// (a caller that polls the manager and then calls us must not see a stale
/// "down"); long enough that a client hammering a down server's keys sends
/// the manager at most 40 map requests a second.
pub(crate) const DOWN_REFRESH_INTERVAL: Duration = Duration::from_millis(25);

/// One consistent view of the cluster.
pub(crate) struct State {
    pub map: ClusterMap,
    pub ring: Ring,
    pub conns: HashMap<ServerId, Arc<dyn Transport>>,
}

impl State {
    fn build(
        map: ClusterMap,
        prev: Option<&State>,
        connector: &Connector,
        cfg: &ClientConfig,
    ) -> State {
        let ring = Ring::of_map(&map);
        let mut conns = HashMap::with_capacity(map.servers.len());
        for s in &map.servers {
            // A server back from down gets fresh connections: the idle ones
            // went to the process that died.
            let came_back = prev.is_some_and(|p| p.is_down(s.id)) && s.state == ServerState::Up;
            let reuse = prev
                .and_then(|p| p.conns.get(&s.id))
                .filter(|t| t.addr() == s.addr && !came_back);
            let t = match reuse {
                Some(t) => t.clone(),
                None => connector(&s.addr, cfg),
            };
            conns.insert(s.id, t);
        }
        State { map, ring, conns }
    }

    /// Whether the map marks `id` down (an id missing from the map counts as down).
    pub fn is_down(&self, id: ServerId) -> bool {
        !matches!(self.map.server(id), Some(s) if s.state == ServerState::Up)
    }

    /// The address of `id` under this map.
    pub fn addr(&self, id: ServerId) -> Option<&str> {
        self.map.server(id).map(|s| s.addr.as_str())
    }

    /// Ids of the servers marked up.
    pub fn up_servers(&self) -> Vec<ServerId> {
        self.map
            .servers
            .iter()
            .filter(|s| s.state == ServerState::Up)
            .map(|s| s.id)
            .collect()
    }

    /// Ids of every server in the map.
    pub fn all_servers(&self) -> Vec<ServerId> {
        self.map.servers.iter().map(|s| s.id).collect()
    }
}

/// Why the map could not be fetched.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The manager did not answer.
    Transport(TransportError),
    /// The manager answered something that is not a usable map.
    Bad(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Transport(e) => write!(f, "{e}"),
            FetchError::Bad(s) => f.write_str(s),
        }
    }
}

/// Checks that a map can be routed by.
pub(crate) fn check_map(map: &ClusterMap) -> Result<(), String> {
    if map.chunk_size == 0 || map.chunk_size > MAX_CHUNK_SIZE {
        return Err(format!(
            "chunk size {} out of range (1..={MAX_CHUNK_SIZE})",
            map.chunk_size
        ));
    }
    Ok(())
}

/// What only the thread refreshing the map touches.
struct RefreshLog {
    /// When the map was last fetched.
    last: Option<Instant>,
    /// The connection to the manager.
    manager: Arc<dyn Transport>,
}

/// The map holder shared by every thread of a client.
pub(crate) struct Shared {
    manager_addr: String,
    connector: Arc<Connector>,
    cfg: ClientConfig,
    state: RwLock<Arc<State>>,
    refresh: Mutex<RefreshLog>,
}

impl Shared {
    /// Connects to the manager and fetches the first map.
    pub fn connect(
        manager_addr: &str,
        cfg: ClientConfig,
        connector: Arc<Connector>,
    ) -> Result<Shared, FetchError> {
        let manager = connector(manager_addr, &cfg);
        let map = fetch(manager.as_ref())?;
        let state = State::build(map, None, connector.as_ref(), &cfg);
        Ok(Shared {
            manager_addr: manager_addr.to_string(),
            connector,
            cfg,
            state: RwLock::new(Arc::new(state)),
            refresh: Mutex::new(RefreshLog {
                last: Some(Instant::now()),
                manager,
            }),
        })
    }

    /// The current view.
    pub fn state(&self) -> Arc<State> {
        self.state.read().clone()
    }

    /// Fetches the map now, whatever the current epoch.
    pub fn refresh(&self) -> Result<Arc<State>, Errno> {
        let mut log = self.refresh.lock();
        self.refresh_locked(&mut log)
    }

    /// Fetches the map unless another thread already replaced the view whose
    /// epoch was `seen` (then that newer view is returned).
    pub fn refresh_after(&self, seen: u64) -> Result<Arc<State>, Errno> {
        let mut log = self.refresh.lock();
        let cur = self.state();
        if cur.map.epoch != seen {
            return Ok(cur);
        }
        self.refresh_locked(&mut log)
    }

    /// Fetches the map unless the last fetch is younger than
    /// [`DOWN_REFRESH_INTERVAL`]; for servers marked down.
    pub fn refresh_if_due(&self) -> Arc<State> {
        let mut log = self.refresh.lock();
        if log
            .last
            .is_some_and(|t| t.elapsed() < DOWN_REFRESH_INTERVAL)
        {
            return self.state();
        }
        match self.refresh_locked(&mut log) {
            Ok(s) => s,
            Err(_) => self.state(),
        }
    }

    /// Drops every connection (to the manager and to each server) and
    /// starts over with new, lazily connected ones under the same map. For a
    /// child after `fork`, whose inherited sockets are shared with its
    /// parent.
    pub fn reset_connections(&self) {
        let mut log = self.refresh.lock();
        log.manager = (self.connector)(&self.manager_addr, &self.cfg);
        let map = self.state().map.clone();
        let next = Arc::new(State::build(map, None, self.connector.as_ref(), &self.cfg));
        *self.state.write() = next;
    }

    fn refresh_locked(&self, log: &mut RefreshLog) -> Result<Arc<State>, Errno> {
        log.last = Some(Instant::now());
        let map = match fetch(log.manager.as_ref()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(manager = %self.manager_addr, "cannot refresh the cluster map: {e}");
                return Err(match e {
                    FetchError::Transport(_) => Errno::EIO,
                    FetchError::Bad(_) => Errno::EPROTO,
                });
            }
        };
        let prev = self.state();
        if map.epoch < prev.map.epoch {
            // A restarted manager may count again from 1; its map is the truth.
            tracing::info!(
                old = prev.map.epoch,
                new = map.epoch,
                "cluster map epoch went backwards"
            );
        }
        let next = Arc::new(State::build(
            map,
            Some(&prev),
            self.connector.as_ref(),
            &self.cfg,
        ));
        *self.state.write() = next.clone();
        Ok(next)
    }
}

fn fetch(manager: &dyn Transport) -> Result<ClusterMap, FetchError> {
    let reply = manager
        .call_many(0, vec![Request::GetMap])
        .pop()
        .unwrap_or(Ok(Reply::Err(Errno::EPROTO)))
        .map_err(FetchError::Transport)?;
    match reply {
        Reply::Map(m) => {
            check_map(&m).map_err(FetchError::Bad)?;
            Ok(m)
        }
        Reply::Err(e) => Err(FetchError::Bad(format!("GetMap failed: {e}"))),
        other => Err(FetchError::Bad(format!(
            "unexpected reply to GetMap: {other:?}"
        ))),
    }
}
