//! Membership state and its persistence (`cluster.map`, postcard, written
//! atomically). Only the manager writes it.

use parking_lot::Mutex;
use sealfs_proto::placement::DEFAULT_VNODES;
use sealfs_proto::{ClusterMap, Errno, ServerId, ServerInfo, ServerState};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Errors of the manager layer.
#[derive(Debug, Error)]
pub enum ManagerError {
    /// A request was refused with this errno.
    #[error("{0}")]
    Errno(Errno),
    /// The state file could not be read or written.
    #[error("manager state {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The state file exists but does not decode.
    #[error("manager state {0} is corrupt: {1}")]
    Corrupt(PathBuf, String),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(String, #[source] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

const STATE_FILE: &str = "cluster.map";
const STATE_MAGIC: &[u8; 8] = b"SEALMAP1";

#[derive(Serialize, Deserialize)]
struct Persisted {
    map: ClusterMap,
}

struct Inner {
    map: ClusterMap,
    last_seen: Vec<Option<Instant>>,
}

/// The member list, the map and the heartbeat clock.
pub struct Membership {
    path: PathBuf,
    timeout: Duration,
    inner: Mutex<Inner>,
}

impl Membership {
    /// Opens (or starts) the state in `dir`. Members loaded from disk start
    /// down until they heartbeat.
    pub fn open(
        dir: &Path,
        chunk_size: u32,
        vnodes: u32,
        timeout: Duration,
    ) -> Result<Self, ManagerError> {
        let state_err = |source| ManagerError::State {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(state_err)?;
        let path = dir.join(STATE_FILE);
        let map = match std::fs::read(&path) {
            Ok(bytes) => {
                let body = bytes
                    .strip_prefix(STATE_MAGIC.as_slice())
                    .ok_or_else(|| ManagerError::Corrupt(path.clone(), "bad magic".into()))?;
                let p: Persisted = postcard::from_bytes(body)
                    .map_err(|e| ManagerError::Corrupt(path.clone(), e.to_string()))?;
                let mut map = p.map;
                if map.chunk_size != chunk_size {
                    tracing::warn!(
                        "cluster already uses chunk size {}; ignoring the requested {}",
                        map.chunk_size,
                        chunk_size
                    );
                }
                let mut changed = false;
                for s in &mut map.servers {
                    changed |= s.state != ServerState::Down;
                    s.state = ServerState::Down;
                }
                if changed {
                    map.epoch += 1;
                }
                map
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClusterMap {
                epoch: 1,
                chunk_size,
                vnodes: if vnodes == 0 { DEFAULT_VNODES } else { vnodes },
                servers: Vec::new(),
            },
            Err(e) => return Err(ManagerError::State { path, source: e }),
        };
        if map.chunk_size == 0 || map.chunk_size > sealfs_proto::frame::MAX_CHUNK_SIZE {
            return Err(ManagerError::Corrupt(
                path,
                format!("chunk size {} out of range", map.chunk_size),
            ));
        }
        let n = map.servers.len();
        let m = Membership {
            path,
            timeout,
            inner: Mutex::new(Inner {
                map,
                last_seen: vec![None; n],
            }),
        };
        m.persist(&m.inner.lock().map)?;
        Ok(m)
    }

    /// The current map.
    pub fn map(&self) -> ClusterMap {
        self.inner.lock().map.clone()
    }

    /// A server joins (new uuid → next id) or rejoins (same id, maybe a new
    /// address). It is up from now on.
    pub fn register(&self, uuid: &str, addr: &str) -> Result<(ServerId, ClusterMap), ManagerError> {
        if uuid.is_empty() || uuid.len() > 128 || addr.is_empty() || addr.len() > 256 {
            return Err(ManagerError::Errno(Errno::EINVAL));
        }
        let mut g = self.inner.lock();
        let now = Instant::now();
        let idx = match g.map.servers.iter().position(|s| s.uuid == uuid) {
            Some(i) => {
                let s = &mut g.map.servers[i];
                let changed = s.addr != addr || s.state != ServerState::Up;
                s.addr = addr.to_string();
                s.state = ServerState::Up;
                if changed {
                    g.map.epoch += 1;
                }
                i
            }
            None => {
                let id = ServerId(g.map.servers.iter().map(|s| s.id.0).max().unwrap_or(0) + 1);
                g.map.servers.push(ServerInfo {
                    id,
                    uuid: uuid.to_string(),
                    addr: addr.to_string(),
                    state: ServerState::Up,
                });
                g.last_seen.push(None);
                g.map.epoch += 1;
                tracing::info!("server {id} joined at {addr}");
                g.map.servers.len() - 1
            }
        };
        g.last_seen[idx] = Some(now);
        let id = g.map.servers[idx].id;
        tracing::info!("server {id} registered at {addr} (epoch {})", g.map.epoch);
        self.persist(&g.map)?;
        Ok((id, g.map.clone()))
    }

    /// A server is alive. `ENOENT` for an id this manager does not know,
    /// which tells the server to register again.
    pub fn heartbeat(&self, id: ServerId) -> Result<ClusterMap, ManagerError> {
        let mut g = self.inner.lock();
        let i = g
            .map
            .servers
            .iter()
            .position(|s| s.id == id)
            .ok_or(ManagerError::Errno(Errno::ENOENT))?;
        g.last_seen[i] = Some(Instant::now());
        if g.map.servers[i].state != ServerState::Up {
            g.map.servers[i].state = ServerState::Up;
            g.map.epoch += 1;
            tracing::info!("server {id} is up again (epoch {})", g.map.epoch);
            self.persist(&g.map)?;
        }
        Ok(g.map.clone())
    }

    /// Marks down every up member silent for longer than the timeout.
    pub fn sweep(&self) -> Result<(), ManagerError> {
        let mut g = self.inner.lock();
        let now = Instant::now();
        let mut changed = false;
        let Inner { map, last_seen } = &mut *g;
        for (s, seen) in map.servers.iter_mut().zip(last_seen.iter()) {
            let silent = seen
                .map(|t| now.duration_since(t) > self.timeout)
                .unwrap_or(true);
            if s.state == ServerState::Up && silent {
                s.state = ServerState::Down;
                changed = true;
                tracing::warn!(
                    "server {} at {} missed heartbeats for {:?}: down",
                    s.id,
                    s.addr,
                    self.timeout
                );
            }
        }
        if changed {
            g.map.epoch += 1;
            self.persist(&g.map)?;
        }
        Ok(())
    }

    fn persist(&self, map: &ClusterMap) -> Result<(), ManagerError> {
        let err = |source| ManagerError::State {
            path: self.path.clone(),
            source,
        };
        let mut bytes = STATE_MAGIC.to_vec();
        let body = postcard::to_stdvec(&Persisted { map: map.clone() })
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        bytes.extend_from_slice(&body);
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_state_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(3600);
        let m = Membership::open(dir.path(), 1 << 20, 64, t).unwrap();
        let (a, _) = m.register("uuid-a", "127.0.0.1:1").unwrap();
        let (b, map) = m.register("uuid-b", "127.0.0.1:2").unwrap();
        assert_ne!(a, b);
        assert_eq!(map.servers.len(), 2);
        let e = map.epoch;
        // same uuid, new address: same id, epoch moves
        let (a2, map) = m.register("uuid-a", "127.0.0.1:3").unwrap();
        assert_eq!(a, a2);
        assert!(map.epoch > e);
        drop(m);
        let m = Membership::open(dir.path(), 4096, 64, t).unwrap();
        let map = m.map();
        assert_eq!(map.chunk_size, 1 << 20, "chunk size is fixed at creation");
        assert_eq!(map.servers.len(), 2);
        assert!(map.servers.iter().all(|s| s.state == ServerState::Down));
        assert_eq!(map.server(a).unwrap().addr, "127.0.0.1:3");
        let up = m.heartbeat(b).unwrap();
        assert_eq!(up.server(b).unwrap().state, ServerState::Up);
        assert!(matches!(
            m.heartbeat(ServerId(99)),
            Err(ManagerError::Errno(Errno::ENOENT))
        ));
    }

    #[test]
    fn silent_servers_go_down() {
        let dir = tempfile::tempdir().unwrap();
        let m = Membership::open(dir.path(), 1 << 20, 64, Duration::ZERO).unwrap();
        let (a, map) = m.register("u", "127.0.0.1:1").unwrap();
        std::thread::sleep(Duration::from_millis(2));
        m.sweep().unwrap();
        let after = m.map();
        assert_eq!(after.server(a).unwrap().state, ServerState::Down);
        assert!(after.epoch > map.epoch);
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"garbage").unwrap();
        assert!(matches!(
            Membership::open(dir.path(), 1 << 20, 64, Duration::from_secs(1)),
            Err(ManagerError::Corrupt(..))
        ));
    }
}
