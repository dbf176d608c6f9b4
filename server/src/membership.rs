//! Membership: this server's persistent identity, its registration with the
//! manager, the heartbeat thread and the newest cluster map it knows.
//!
//! * Identity: `meta_dir/server.uuid`, 32 hex digits, written once
//!   (tmp + fsync + rename + fsync of the directory).
//! * The map and its ring are replaced as a whole (`Arc` swap), so a request
//!   routes by one consistent view. A heartbeat or `GetMap` answer is taken
//!   only if its epoch is newer; a `Registered` answer is always taken (a
//!   restarted manager may count epochs from the start again).
//! * Connections to peers are pooled per server id and replaced when the map
//!   gives that id another address.

use crate::error::ServerError;
use parking_lot::{Mutex, RwLock};
use sealfs_proto::{ClusterMap, Errno, Reply, Request, Ring, ServerId};
use sealfs_transport::tcp::TcpPool;
use sealfs_transport::{ClientConfig, Transport};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Name of the identity file in the meta dir.
pub const UUID_FILE: &str = "server.uuid";

/// A cluster map with its ring.
pub struct View {
    /// The map.
    pub map: ClusterMap,
    /// Its ring.
    pub ring: Ring,
}

impl View {
    fn of(map: ClusterMap) -> Self {
        let ring = Ring::of_map(&map);
        View { map, ring }
    }
}

/// This server's place in the cluster.
pub struct Membership {
    manager: TcpPool,
    uuid: String,
    addr: String,
    id: AtomicU32,
    view: RwLock<Arc<View>>,
    peers: Mutex<HashMap<ServerId, Arc<dyn Transport>>>,
}

/// Loads `meta_dir/server.uuid`, creating it on first start.
pub fn load_or_create_uuid(meta_dir: &Path) -> Result<String, ServerError> {
    let path = meta_dir.join(UUID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim().to_string();
            if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(s)
            } else {
                Err(ServerError::Config(format!(
                    "{} does not hold a 32-digit hex uuid",
                    path.display()
                )))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let uuid = format!("{:032x}", rand::random::<u128>());
            let tmp = meta_dir.join(format!("{UUID_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(format!("{uuid}\n").as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(meta_dir)?.sync_all()
            };
            write().map_err(|e| ServerError::io(format!("write {}", path.display()), e))?;
            tracing::info!("new server identity {uuid}");
            Ok(uuid)
        }
        Err(e) => Err(ServerError::io(format!("read {}", path.display()), e)),
    }
}

impl Membership {
    /// A membership not yet registered (id 0, empty map).
    pub fn new(manager: &str, uuid: String, addr: String) -> Self {
        let cfg = ClientConfig {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(5),
            max_idle: 2,
            ..ClientConfig::default()
        };
        let empty = ClusterMap {
            epoch: 0,
            chunk_size: 0,
            vnodes: 0,
            servers: Vec::new(),
        };
        Membership {
            manager: TcpPool::new(manager, cfg),
            uuid,
            addr,
            id: AtomicU32::new(0),
            view: RwLock::new(Arc::new(View::of(empty))),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// This server's id (valid once registered).
    pub fn id(&self) -> ServerId {
        ServerId(self.id.load(Ordering::Acquire))
    }

    /// The newest view.
    pub fn view(&self) -> Arc<View> {
        self.view.read().clone()
    }

    /// Takes `map` if it is newer than ours (or unconditionally with
    /// `force`). Returns whether it was taken.
    pub fn install(&self, map: ClusterMap, force: bool) -> bool {
        let mut v = self.view.write();
        if !force && map.epoch <= v.map.epoch {
            return false;
        }
        if map.epoch != v.map.epoch {
            tracing::info!(
                "cluster map epoch {} → {} ({} servers)",
                v.map.epoch,
                map.epoch,
                map.servers.len()
            );
        }
        {
            // Drop pools whose server moved or left.
            let mut peers = self.peers.lock();
            peers.retain(|id, pool| map.server(*id).is_some_and(|s| s.addr == pool.addr()));
        }
        *v = Arc::new(View::of(map));
        true
    }

    /// Takes the answer of a `Register`: our id and the current map.
    pub fn set_registered(&self, id: ServerId, map: ClusterMap) {
        let old = self.id.swap(id.0, Ordering::AcqRel);
        if old != 0 && old != id.0 {
            tracing::warn!("the manager gave this server a new id: s{old} → {id}");
        }
        self.install(map, true);
    }

    /// One `Register` round trip (blocking).
    pub fn register_once(&self) -> Result<(), String> {
        let req = Request::Register {
            uuid: self.uuid.clone(),
            addr: self.addr.clone(),
        };
        match self.manager.call(0, req) {
            Ok(Reply::Registered { id, map }) => {
                self.set_registered(id, map);
                Ok(())
            }
            Ok(r) => Err(format!(
                "manager {} answered Register with {r:?}",
                self.manager.addr()
            )),
            Err(e) => Err(format!("manager unreachable: {e}")),
        }
    }

    /// Registers, retrying until the manager answers (blocking).
    pub fn register(&self, retry: Duration) {
        let mut tries = 0u64;
        loop {
            match self.register_once() {
                Ok(()) => return,
                Err(e) => {
                    // Warn on the first failure and then every 10th.
                    if tries.is_multiple_of(10) {
                        tracing::warn!(
                            "cannot register with {}: {e}; retrying",
                            self.manager.addr()
                        );
                    }
                    tries += 1;
                    std::thread::sleep(retry);
                }
            }
        }
    }

    /// Fetches the current map from the manager (blocking).
    pub fn fetch_map(&self) -> Result<(), String> {
        match self.manager.call(0, Request::GetMap) {
            Ok(Reply::Map(map)) => {
                self.install(map, false);
                Ok(())
            }
            Ok(r) => Err(format!("manager answered GetMap with {r:?}")),
            Err(e) => Err(format!("manager unreachable: {e}")),
        }
    }

    /// Fetches the current map without blocking the runtime.
    pub async fn refresh(self: &Arc<Self>) {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.fetch_map()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("map refresh failed: {e}"),
            Err(e) => tracing::warn!("map refresh task failed: {e}"),
        }
    }

    /// The transport to server `id` in `map`: shared-memory rings when the
    /// peer is on this host, TCP otherwise (`SEALFS_TRANSPORT` as for
    /// clients).
    pub fn peer(&self, id: ServerId, map: &ClusterMap) -> Option<Arc<dyn Transport>> {
        let info = map.server(id)?;
        let mut peers = self.peers.lock();
        if let Some(p) = peers.get(&id) {
            if p.addr() == info.addr {
                return Some(p.clone());
            }
        }
        let mode = sealfs_transport::shm::Mode::from_env();
        let p = sealfs_transport::shm::connect(&info.addr, &ClientConfig::default(), mode);
        peers.insert(id, p.clone());
        Some(p)
    }

    /// Starts the heartbeat thread: every `every`, `Heartbeat{id}` → newest
    /// map; registers again when the manager has forgotten us.
    pub fn start_heartbeat(
        self: &Arc<Self>,
        every: Duration,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("sealfs-heartbeat".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(every);
                    let res = match me.manager.call(0, Request::Heartbeat { id: me.id() }) {
                        Ok(Reply::Map(map)) => {
                            me.install(map, false);
                            Ok(())
                        }
                        Ok(Reply::Err(Errno::ENOENT)) => {
                            tracing::warn!(
                                "the manager does not know {}; registering again",
                                me.id()
                            );
                            me.register_once()
                        }
                        Ok(r) => Err(format!("manager answered Heartbeat with {r:?}")),
                        Err(e) => Err(format!("manager unreachable: {e}")),
                    };
                    match res {
                        Ok(()) if failing => {
                            tracing::info!("heartbeats reach the manager again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            tracing::warn!("heartbeat failed: {e}");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            })
    }
}
