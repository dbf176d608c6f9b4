//! The cluster map and the consistent-hash ring.
//!
//! Every server owns `vnodes` points on a 64-bit ring, at
//! `xxh3(b"vnode" ‖ id ‖ i)`. A key is owned by the first point at or after
//! its hash (wrapping). Keys: a path hashes as `xxh3(b"p" ‖ path)`, a chunk as
//! `xxh3(b"c" ‖ ino ‖ chunk)` (integers little-endian). Adding or removing a
//! server moves only the keys of the arcs its points take or give back.
//!
//! The ring is built from every server in the map, up or down: a down
//! server's keys fail with `EIO` rather than silently moving to a server that
//! does not hold them. Moving data when membership changes (rebalancing) is
//! not built yet.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// A server's numeric id, handed out by the manager, stable for its uuid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServerId(pub u32);

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Whether a server answers heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerState {
    /// Heartbeats arrive.
    Up,
    /// Missed heartbeats for longer than the manager's timeout.
    Down,
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Numeric id.
    pub id: ServerId,
    /// Persistent identity (kept in the server's meta dir).
    pub uuid: String,
    /// Address clients connect to (`host:port`).
    pub addr: String,
    /// Up or down.
    pub state: ServerState,
}

/// What the manager publishes. The epoch grows by one with every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Version of this map.
    pub epoch: u64,
    /// Bytes per chunk of file data (fixed for the cluster's life).
    pub chunk_size: u32,
    /// Virtual nodes per server.
    pub vnodes: u32,
    /// Members, in id order.
    pub servers: Vec<ServerInfo>,
}

impl ClusterMap {
    /// The member with this id.
    pub fn server(&self, id: ServerId) -> Option<&ServerInfo> {
        self.servers.iter().find(|s| s.id == id)
    }

    /// Whether every member is up (and there is at least one).
    pub fn all_up(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|s| s.state == ServerState::Up)
    }
}

/// The consistent-hash ring of a map.
#[derive(Clone, Debug)]
pub struct Ring {
    points: Vec<(u64, ServerId)>,
}

impl Ring {
    /// Builds the ring of `vnodes` points per server id.
    pub fn new(ids: impl IntoIterator<Item = ServerId>, vnodes: u32) -> Self {
        let mut points = Vec::new();
        for id in ids {
            for i in 0..vnodes.max(1) {
                let mut k = [0u8; 13];
                k[..5].copy_from_slice(b"vnode");
                k[5..9].copy_from_slice(&id.0.to_le_bytes());
                k[9..13].copy_from_slice(&i.to_le_bytes());
                points.push((xxh3_64(&k), id));
            }
        }
        points.sort_unstable();
        points.dedup_by_key(|p| p.0);
        Ring { points }
    }

    /// Builds the ring of a cluster map.
    pub fn of_map(map: &ClusterMap) -> Self {
        Self::new(map.servers.iter().map(|s| s.id), map.vnodes)
    }

    /// Whether the ring has no servers.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The owner of a hash; `None` on an empty ring.
    pub fn owner_of_hash(&self, h: u64) -> Option<ServerId> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|p| p.0 < h);
        Some(self.points[if i == self.points.len() { 0 } else { i }].1)
    }

    /// The owner of a path's inode record (and, for a directory, its entries).
    pub fn owner_path(&self, path: &str) -> Option<ServerId> {
        self.owner_of_hash(path_hash(path))
    }

    /// The owner of chunk `chunk` of inode `ino`.
    pub fn owner_chunk(&self, ino: u64, chunk: u64) -> Option<ServerId> {
        self.owner_of_hash(chunk_hash(ino, chunk))
    }
}

/// The ring position of a path.
pub fn path_hash(path: &str) -> u64 {
    let mut k = Vec::with_capacity(path.len() + 1);
    k.push(b'p');
    k.extend_from_slice(path.as_bytes());
    xxh3_64(&k)
}

/// The ring position of a chunk.
pub fn chunk_hash(ino: u64, chunk: u64) -> u64 {
    let mut k = [0u8; 17];
    k[0] = b'c';
    k[1..9].copy_from_slice(&ino.to_le_bytes());
    k[9..17].copy_from_slice(&chunk.to_le_bytes());
    xxh3_64(&k)
}

/// Default virtual nodes per server: enough that three servers each get
/// within a few percent of a third of the keys.
pub const DEFAULT_VNODES: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ids(n: u32) -> Vec<ServerId> {
        (1..=n).map(ServerId).collect()
    }

    fn shares(ring: &Ring, n: usize) -> HashMap<ServerId, usize> {
        let mut m = HashMap::new();
        for i in 0..n {
            *m.entry(ring.owner_path(&format!("/dir{}/file{i}", i % 97)).unwrap())
                .or_default() += 1;
        }
        m
    }

    #[test]
    fn balance_within_a_few_percent() {
        for servers in [3u32, 5, 8] {
            let ring = Ring::new(ids(servers), DEFAULT_VNODES);
            let n = 100_000;
            let ideal = n as f64 / servers as f64;
            let s = shares(&ring, n);
            assert_eq!(s.len(), servers as usize);
            for (id, c) in &s {
                let dev = (*c as f64 - ideal).abs() / ideal;
                assert!(
                    dev < 0.06,
                    "{servers} servers: {id} holds {c}, ideal {ideal:.0} ({:.1}% off)",
                    dev * 100.0
                );
            }
            // chunks too
            let mut m: HashMap<ServerId, usize> = HashMap::new();
            for ino in 0..1000u64 {
                for c in 0..100u64 {
                    *m.entry(ring.owner_chunk(ino, c).unwrap()).or_default() += 1;
                }
            }
            for c in m.values() {
                let dev = (*c as f64 - ideal).abs() / ideal;
                assert!(dev < 0.06, "chunks: {c} vs {ideal:.0}");
            }
        }
    }

    #[test]
    fn join_and_leave_move_only_what_they_must() {
        let n = 100_000;
        let before = Ring::new(ids(4), DEFAULT_VNODES);
        let after = Ring::new(ids(5), DEFAULT_VNODES);
        let mut moved = 0;
        for i in 0..n {
            let p = format!("/k{i}");
            let (a, b) = (
                before.owner_path(&p).unwrap(),
                after.owner_path(&p).unwrap(),
            );
            if a != b {
                // a key only ever moves to the newcomer
                assert_eq!(b, ServerId(5), "{p} moved between old servers");
                moved += 1;
            }
        }
        let frac = moved as f64 / n as f64;
        assert!(
            (frac - 0.2).abs() < 0.03,
            "join moved {:.1}% (ideal 20%)",
            frac * 100.0
        );
        // leaving: only the leaver's keys move, everyone else's stay
        let without3 = Ring::new([1, 2, 4, 5].map(ServerId), DEFAULT_VNODES);
        for i in 0..n {
            let p = format!("/k{i}");
            let a = after.owner_path(&p).unwrap();
            if a != ServerId(3) {
                assert_eq!(without3.owner_path(&p).unwrap(), a);
            }
        }
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(Ring::new([], 8).owner_path("/x"), None);
    }
}
