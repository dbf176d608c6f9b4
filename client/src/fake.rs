//! An in-memory cluster behind the [`Transport`] trait, for testing this
//! crate's layer in isolation (routing, retries, striping, rename). It is no
//! substitute for the end-to-end tests in the workspace's `tests/`, which
//! start real servers.
//!
//! One model holds the whole namespace; every fake server checks that each
//! request reached the owner the ring names (a misrouted request is recorded
//! and answered `StaleEpoch`) and keeps its own chunks, so tests can see where
//! data lives.

use crate::{Client, ClientOptions, Connector};
use parking_lot::Mutex;
use sealfs_proto::{
    Attr, ClusterMap, DirEntry, Errno, FileKind, Inode, Reply, Request, Ring, ServerId, ServerInfo,
    ServerState, StatFs, Timespec,
};
use sealfs_transport::{Transport, TransportError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub(crate) const MANAGER: &str = "manager:1";

pub(crate) struct Model {
    pub map: ClusterMap,
    ring: Ring,
    pub inodes: HashMap<String, Inode>,
    entries: HashMap<String, BTreeMap<String, DirEntry>>,
    /// (server, ino, chunk) → bytes stored.
    pub chunks: HashMap<(ServerId, u64, u64), Vec<u8>>,
    next_ino: u64,
    /// Requests that reached a server that does not own their key.
    pub misrouted: Vec<String>,
    /// Addresses that refuse connections.
    pub dead: HashSet<String>,
    /// Requests served, by name.
    pub served: Vec<&'static str>,
}

/// The shared in-memory cluster.
pub(crate) struct Cluster {
    pub m: Mutex<Model>,
}

fn now() -> Timespec {
    Timespec::now()
}

fn parent(p: &str) -> (&str, &str) {
    sealfs_proto::path::split(p).unwrap_or(("/", ""))
}

impl Cluster {
    pub fn new(servers: u32, chunk_size: u32) -> Arc<Cluster> {
        let map = ClusterMap {
            epoch: 1,
            chunk_size,
            vnodes: 64,
            servers: (1..=servers)
                .map(|i| ServerInfo {
                    id: ServerId(i),
                    uuid: format!("u{i}"),
                    addr: format!("s{i}:1"),
                    state: ServerState::Up,
                })
                .collect(),
        };
        let t = now();
        let root = Inode {
            attr: Attr {
                ino: 1,
                kind: FileKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 4096,
                nlink: 2,
                atime: t,
                mtime: t,
                ctime: t,
            },
            target: None,
        };
        let mut inodes = HashMap::new();
        inodes.insert("/".to_string(), root);
        let mut entries = HashMap::new();
        entries.insert("/".to_string(), BTreeMap::new());
        Arc::new(Cluster {
            m: Mutex::new(Model {
                ring: Ring::of_map(&map),
                map,
                inodes,
                entries,
                chunks: HashMap::new(),
                next_ino: 2,
                misrouted: Vec::new(),
                dead: HashSet::new(),
                served: Vec::new(),
            }),
        })
    }

    pub fn connector(self: &Arc<Self>) -> Arc<Connector> {
        let c = self.clone();
        Arc::new(
            move |addr: &str, _cfg: &sealfs_transport::ClientConfig| -> Arc<dyn Transport> {
                Arc::new(FakeConn {
                    cluster: c.clone(),
                    addr: addr.to_string(),
                })
            },
        )
    }

    pub fn client(self: &Arc<Self>) -> Client {
        Client::connect_with(MANAGER, ClientOptions::default(), self.connector())
            .expect("fake manager answers")
    }

    /// Changes the map (the closure edits it) and bumps the epoch.
    pub fn change_map(&self, f: impl FnOnce(&mut ClusterMap)) {
        let mut m = self.m.lock();
        f(&mut m.map);
        m.map.epoch += 1;
        m.ring = Ring::of_map(&m.map);
    }
}

struct FakeConn {
    cluster: Arc<Cluster>,
    addr: String,
}

impl Transport for FakeConn {
    fn call_many(&self, epoch: u64, reqs: Vec<Request>) -> Vec<Result<Reply, TransportError>> {
        let mut m = self.cluster.m.lock();
        let refuse = || TransportError::Io {
            addr: self.addr.clone(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        if m.dead.contains(&self.addr) {
            return reqs.iter().map(|_| Err(refuse())).collect();
        }
        if self.addr == MANAGER {
            return reqs
                .iter()
                .map(|r| {
                    Ok(if *r == Request::GetMap {
                        Reply::Map(m.map.clone())
                    } else {
                        Reply::Err(Errno::EPROTO)
                    })
                })
                .collect();
        }
        let Some(id) = m
            .map
            .servers
            .iter()
            .find(|s| s.addr == self.addr)
            .map(|s| s.id)
        else {
            return reqs.iter().map(|_| Err(refuse())).collect();
        };
        reqs.into_iter()
            .map(|r| {
                if epoch != m.map.epoch {
                    return Ok(Reply::StaleEpoch { epoch: m.map.epoch });
                }
                m.served.push(r.name());
                Ok(m.handle(id, r))
            })
            .collect()
    }

    fn addr(&self) -> &str {
        &self.addr
    }
}

impl Model {
    fn owns(&mut self, id: ServerId, req: &Request) -> bool {
        let owner = match req {
            Request::GetAttr { path }
            | Request::Create { path, .. }
            | Request::SetAttr { path, .. }
            | Request::Extend { path, .. }
            | Request::Remove { path, .. }
            | Request::Adopt { path, .. }
            | Request::ReadDir { path, .. } => self.ring.owner_path(path),
            Request::Read { ino, chunk, .. } | Request::Write { ino, chunk, .. } => {
                self.ring.owner_chunk(*ino, *chunk)
            }
            _ => Some(id),
        };
        if owner != Some(id) {
            self.misrouted.push(format!("{req:?} at {id}"));
            return false;
        }
        true
    }

    fn link(&mut self, path: &str, inode: Inode) -> Result<(), Errno> {
        let (dir, name) = parent(path);
        match self.inodes.get(dir) {
            None => return Err(Errno::ENOENT),
            Some(d) if d.attr.kind != FileKind::Dir => return Err(Errno::ENOTDIR),
            _ => {}
        }
        if self.inodes.contains_key(path) {
            return Err(Errno::EEXIST);
        }
        let e = DirEntry {
            name: name.to_string(),
            kind: inode.attr.kind,
            ino: inode.attr.ino,
        };
        self.entries
            .entry(dir.to_string())
            .or_default()
            .insert(name.to_string(), e);
        if inode.attr.kind == FileKind::Dir {
            self.entries.insert(path.to_string(), BTreeMap::new());
            if let Some(d) = self.inodes.get_mut(dir) {
                d.attr.nlink += 1;
            }
        }
        self.inodes.insert(path.to_string(), inode);
        Ok(())
    }

    fn handle(&mut self, id: ServerId, req: Request) -> Reply {
        if !self.owns(id, &req) {
            return Reply::StaleEpoch {
                epoch: self.map.epoch,
            };
        }
        let r: Result<Reply, Errno> = (|| match req {
            Request::GetAttr { path } => self
                .inodes
                .get(&path)
                .cloned()
                .map(Reply::Inode)
                .ok_or(Errno::ENOENT),
            Request::Create { path, new, excl } => {
                if let Some(i) = self.inodes.get(&path) {
                    return if excl {
                        Err(Errno::EEXIST)
                    } else {
                        Ok(Reply::Created {
                            inode: i.clone(),
                            created: false,
                        })
                    };
                }
                let t = now();
                let size = match new.kind {
                    FileKind::Dir => 4096,
                    FileKind::Symlink => new.target.as_ref().map_or(0, |s| s.len() as u64),
                    FileKind::File => 0,
                };
                let nlink = if new.kind == FileKind::Dir { 2 } else { 1 };
                let inode = Inode {
                    attr: Attr {
                        ino: self.next_ino,
                        kind: new.kind,
                        mode: new.mode,
                        uid: new.uid,
                        gid: new.gid,
                        size,
                        nlink,
                        atime: t,
                        mtime: t,
                        ctime: t,
                    },
                    target: new.target,
                };
                self.link(&path, inode.clone())?;
                self.next_ino += 1;
                Ok(Reply::Created {
                    inode,
                    created: true,
                })
            }
            Request::SetAttr { path, set } => {
                let i = self.inodes.get_mut(&path).ok_or(Errno::ENOENT)?;
                if let Some(v) = set.mode {
                    i.attr.mode = v;
                }
                if let Some(v) = set.uid {
                    i.attr.uid = v;
                }
                if let Some(v) = set.gid {
                    i.attr.gid = v;
                }
                if let Some(v) = set.size {
                    i.attr.size = v;
                }
                Ok(Reply::Inode(i.clone()))
            }
            Request::Extend { path, size, mtime } => {
                let i = self.inodes.get_mut(&path).ok_or(Errno::ENOENT)?;
                i.attr.size = i.attr.size.max(size);
                i.attr.mtime = mtime;
                Ok(Reply::Inode(i.clone()))
            }
            Request::Remove { path, dir } => {
                let i = self.inodes.get(&path).ok_or(Errno::ENOENT)?.clone();
                match (dir, i.attr.kind) {
                    (true, k) if k != FileKind::Dir => return Err(Errno::ENOTDIR),
                    (false, FileKind::Dir) => return Err(Errno::EISDIR),
                    _ => {}
                }
                if dir && self.entries.get(&path).is_some_and(|e| !e.is_empty()) {
                    return Err(Errno::ENOTEMPTY);
                }
                let (pd, name) = parent(&path);
                let (pd, name) = (pd.to_string(), name.to_string());
                if let Some(e) = self.entries.get_mut(&pd) {
                    e.remove(&name);
                }
                if dir {
                    self.entries.remove(&path);
                    if let Some(d) = self.inodes.get_mut(&pd) {
                        d.attr.nlink -= 1;
                    }
                }
                self.inodes.remove(&path);
                Ok(Reply::Inode(i))
            }
            Request::Adopt { path, inode } => {
                self.link(&path, inode.clone())?;
                Ok(Reply::Inode(inode))
            }
            Request::ReadDir { path, after, limit } => {
                let e = self.entries.get(&path).ok_or(Errno::ENOTDIR)?;
                let mut page: Vec<DirEntry> = e
                    .values()
                    .filter(|d| after.as_ref().is_none_or(|a| d.name > *a))
                    .take(limit as usize + 1)
                    .cloned()
                    .collect();
                let next = if page.len() > limit as usize {
                    page.pop();
                    page.last().map(|d| d.name.clone())
                } else {
                    None
                };
                Ok(Reply::Entries {
                    entries: page,
                    next,
                })
            }
            Request::Read {
                ino,
                chunk,
                offset,
                len,
            } => {
                let d = self
                    .chunks
                    .get(&(id, ino, chunk))
                    .cloned()
                    .unwrap_or_default();
                let s = (offset as usize).min(d.len());
                let e = (offset as usize + len as usize).min(d.len());
                Ok(Reply::Data(bytes::Bytes::copy_from_slice(&d[s..e])))
            }
            Request::Write {
                ino,
                chunk,
                offset,
                data,
            } => {
                assert!(
                    offset as usize + data.len() <= self.map.chunk_size as usize,
                    "write past the chunk"
                );
                let c = self.chunks.entry((id, ino, chunk)).or_default();
                let end = offset as usize + data.len();
                if c.len() < end {
                    c.resize(end, 0);
                }
                c[offset as usize..end].copy_from_slice(&data);
                Ok(Reply::Written(data.len() as u32))
            }
            Request::TruncateData { ino, size } => {
                let cs = u64::from(self.map.chunk_size);
                self.chunks.retain(|(s, i, c), d| {
                    if *s != id || *i != ino {
                        return true;
                    }
                    let start = c * cs;
                    if start >= size {
                        return false;
                    }
                    d.truncate((size - start).min(cs) as usize);
                    true
                });
                Ok(Reply::Ok)
            }
            Request::RemoveData { ino } => {
                self.chunks.retain(|(s, i, _), _| !(*s == id && *i == ino));
                Ok(Reply::Ok)
            }
            Request::Fsync { .. } => Ok(Reply::Ok),
            Request::StatFs => Ok(Reply::StatFs(StatFs {
                bsize: 4096,
                blocks: 100,
                bfree: 60,
                bavail: 50,
                files: 1000,
                ffree: 900,
                namemax: 255,
                writes_slowed: false,
            })),
            _ => Err(Errno::EPROTO),
        })();
        r.unwrap_or_else(Reply::Err)
    }

    /// Bytes stored for `ino`, over every server.
    pub fn stored(&self, ino: u64) -> usize {
        self.chunks
            .iter()
            .filter(|((_, i, _), _)| *i == ino)
            .map(|(_, d)| d.len())
            .sum()
    }
}
