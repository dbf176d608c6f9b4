//! Request handling: routing checks, validation, per-path serialisation and
//! the semantics of every request (errno as Linux's local file systems give).
//!
//! Store work runs in `spawn_blocking` (redb and file I/O block), except
//! short read-only lookups (`GetAttr`, `GetEntry`, chunk reads of at most
//! [`INLINE_READ_MAX`] bytes), which run inline: an index probe and a read
//! from the page cache cost microseconds, less than the two thread hand-offs
//! of `spawn_blocking` that would otherwise dominate a `stat` over
//! shared-memory rings. The two
//! operations that span two servers keep this order (see
//! [`RecordState`]):
//!
//! * create/adopt: record `Pending` → `AddEntry` on the parent's owner →
//!   record `Normal` (or deleted if the parent refused);
//! * remove: record `Unlinking` → `RemoveEntry` on the parent's owner →
//!   record deleted.
//!
//! A peer that cannot be reached leaves the record as it is and the client
//! gets `EIO`; [`crate::recovery`] finishes the operation later. Locks are
//! taken child before ancestor only (see [`crate::locks`]).

use crate::locks::LockTable;
use crate::membership::Membership;
use crate::store::{DataStore, InodeRecord, MetaOp, MetaStore, RecordState, StoreError};
use crate::sys;
use crate::SyncPolicy;
use parking_lot::Mutex;
use sealfs_proto::path;
use sealfs_proto::{
    Attr, DirEntry, Envelope, Errno, FileKind, Inode, NewInode, Reply, Request, SetAttr, StatFs,
    TimeSet, Timespec,
};
use sealfs_transport::tcp::Handler;
use std::path::PathBuf;
use std::sync::Arc;

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;
/// Inode numbers are `(server id << COUNTER_BITS) | counter`.
pub const COUNTER_BITS: u32 = 40;
/// Counter values reserved (persisted) ahead of use.
pub const INO_BLOCK: u64 = 4096;
/// The first counter value of a new store (low values stay clear of the root).
const FIRST_COUNTER: u64 = 16;
/// `st_size` of a directory.
pub const DIR_SIZE: u64 = 4096;
/// Most entries one `ReadDir` returns.
pub const MAX_READDIR: u32 = 1024;
/// Times a request to a peer is retried after it answered `StaleEpoch`.
const STALE_RETRIES: usize = 3;

type Res<T> = Result<T, Errno>;

fn se(e: StoreError) -> Errno {
    tracing::warn!("store: {e}");
    e.errno()
}

/// Largest chunk read served inline rather than in `spawn_blocking`.
pub(crate) const INLINE_READ_MAX: u32 = 64 * 1024;

/// Runs store work off the runtime's threads.
async fn blocking<T, F>(f: F) -> Res<T>
where
    F: FnOnce() -> Res<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("store task failed: {e}");
            Err(Errno::EIO)
        }
    }
}

struct InoAlloc {
    next: u64,
    limit: u64,
}

/// A request on a directory's entry list, to the directory's owner.
#[derive(Clone, Debug)]
pub(crate) enum EntryReq {
    Add(DirEntry),
    Remove { name: String, ino: u64 },
    Get { name: String },
}

impl EntryReq {
    fn to_request(&self, dir: &str) -> Request {
        let dir = dir.to_string();
        match self {
            EntryReq::Add(entry) => Request::AddEntry {
                dir,
                entry: entry.clone(),
            },
            EntryReq::Remove { name, ino } => Request::RemoveEntry {
                dir,
                name: name.clone(),
                ino: *ino,
            },
            EntryReq::Get { name } => Request::GetEntry {
                dir,
                name: name.clone(),
            },
        }
    }
}

/// What a request is routed by.
enum Key<'a> {
    Path(&'a str),
    Chunk(u64, u64),
}

/// One storage server: its stores, lock table and membership.
pub struct Node {
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) data: Arc<dyn DataStore>,
    pub(crate) members: Arc<Membership>,
    pub(crate) locks: LockTable,
    sync: SyncPolicy,
    /// Store work runs inline (not in `spawn_blocking`): set unless the
    /// sync policy is `always`, so no commit waits for the disk.
    inline_store: bool,
    meta_dir: PathBuf,
    data_dir: PathBuf,
    ino: Mutex<InoAlloc>,
    root_init: Mutex<()>,
}

impl Node {
    /// A node over opened stores.
    pub fn new(
        meta: Arc<dyn MetaStore>,
        data: Arc<dyn DataStore>,
        members: Arc<Membership>,
        sync: SyncPolicy,
        meta_dir: PathBuf,
        data_dir: PathBuf,
    ) -> Result<Self, StoreError> {
        // Everything up to the persisted reservation may have been handed
        // out before a crash: start past it.
        let reserved = meta.ino_reserved()?;
        let next = reserved.max(FIRST_COUNTER);
        Ok(Node {
            meta,
            data,
            members,
            locks: LockTable::new(),
            sync,
            inline_store: sync != SyncPolicy::Always,
            meta_dir,
            data_dir,
            ino: Mutex::new(InoAlloc {
                next,
                limit: reserved,
            }),
            root_init: Mutex::new(()),
        })
    }

    // ---------- blocking helpers (call inside `blocking`) ----------

    fn alloc_ino(&self) -> Res<u64> {
        let mut a = self.ino.lock();
        if a.next >= a.limit {
            // Reservation persisted before any number of the block is used.
            let limit = a.next + INO_BLOCK;
            self.meta.set_ino_reserved(limit).map_err(se)?;
            a.limit = limit;
        }
        let c = a.next;
        if c >> COUNTER_BITS != 0 {
            return Err(Errno::ENOSPC);
        }
        a.next += 1;
        Ok((u64::from(self.members.id().0) << COUNTER_BITS) | c)
    }

    fn ensure_root(&self) -> Res<InodeRecord> {
        let _g = self.root_init.lock();
        if let Some(r) = self.meta.get_inode("/").map_err(se)? {
            return Ok(r);
        }
        let now = Timespec::now();
        let (uid, gid) = sys::euid_egid();
        let rec = InodeRecord::normal(Inode {
            attr: Attr {
                ino: ROOT_INO,
                kind: FileKind::Dir,
                mode: 0o755,
                uid,
                gid,
                size: DIR_SIZE,
                nlink: 2,
                atime: now,
                mtime: now,
                ctime: now,
            },
            target: None,
        });
        self.meta
            .commit(&[MetaOp::PutInode("/".into(), rec.clone())])
            .map_err(se)?;
        tracing::info!("created the root directory");
        Ok(rec)
    }

    /// The record of a path we own (the root is made on first sight).
    fn load(&self, path: &str) -> Res<Option<InodeRecord>> {
        if path == "/" {
            return self.ensure_root().map(Some);
        }
        self.meta.get_inode(path).map_err(se)
    }

    fn load_normal(&self, path: &str) -> Res<Inode> {
        match self.load(path)? {
            Some(r) if r.is_normal() => Ok(r.inode),
            _ => Err(Errno::ENOENT),
        }
    }

    fn commit(&self, ops: &[MetaOp]) -> Res<()> {
        self.meta.commit(ops).map_err(se)
    }

    fn chunk_size(&self) -> u32 {
        self.members.view().map.chunk_size
    }

    // ---------- routing and peers ----------

    /// `None` when this server owns `key`, else the reply to send.
    async fn route(&self, epoch: u64, key: Key<'_>) -> Option<Reply> {
        let mut view = self.members.view();
        if epoch > view.map.epoch {
            self.members.refresh().await;
            view = self.members.view();
        }
        let owner = match key {
            Key::Path(p) => view.ring.owner_path(p),
            Key::Chunk(ino, c) => view.ring.owner_chunk(ino, c),
        };
        if owner == Some(self.members.id()) {
            None
        } else {
            Some(Reply::StaleEpoch {
                epoch: view.map.epoch,
            })
        }
    }

    /// Sends an entry request to the owner of `dir` (this server: a direct
    /// call). `None` when the owner cannot be reached.
    pub(crate) async fn call_dir_owner(
        self: &Arc<Self>,
        dir: &str,
        req: EntryReq,
    ) -> Option<Reply> {
        for _ in 0..STALE_RETRIES {
            let view = self.members.view();
            let owner = view.ring.owner_path(dir)?;
            if owner == self.members.id() {
                return Some(self.local_entry(dir, req).await);
            }
            let pool = self.members.peer(owner, &view.map)?;
            let wire = req.to_request(dir);
            let epoch = view.map.epoch;
            let res = match try_on_poller(&*pool, epoch, &wire) {
                Some(Sent::Done(Ok(r))) => Ok(Ok(r)),
                // The peer is slow: the poller goes on (`call_peer` yields
                // first there), and a task waits for the reply.
                Some(Sent::Waiting(t)) => match call_peer(move || t.wait()).await {
                    Ok(Err(e))
                        if !matches!(e, sealfs_transport::TransportError::Timeout { .. }) =>
                    {
                        call_peer(move || pool.call(epoch, wire)).await
                    }
                    r => r,
                },
                // A ring that failed (its server restarted?): once more on
                // the blocking path, which sets up a fresh ring.
                Some(Sent::Done(Err(_))) | None => call_peer(move || pool.call(epoch, wire)).await,
            };
            match res {
                Ok(Ok(Reply::StaleEpoch { .. })) => self.members.refresh().await,
                Ok(Ok(r)) => return Some(r),
                Ok(Err(e)) => {
                    tracing::warn!("{owner} (owner of {dir}) unreachable: {e}");
                    return None;
                }
                Err(e) => {
                    tracing::warn!("call to {owner} failed: {e}");
                    return None;
                }
            }
        }
        tracing::warn!("owner of {dir} keeps answering StaleEpoch");
        None
    }

    async fn local_entry(self: &Arc<Self>, dir: &str, req: EntryReq) -> Reply {
        let dir = dir.to_string();
        let r = match req {
            EntryReq::Add(entry) => self.add_entry(dir, entry).await.map(|()| Reply::Ok),
            EntryReq::Remove { name, ino } => {
                self.remove_entry(dir, name, ino).await.map(|()| Reply::Ok)
            }
            EntryReq::Get { name } => self.get_entry(dir, name).await.map(Reply::Entry),
        };
        r.unwrap_or_else(Reply::Err)
    }

    // ---------- the two-server protocol ----------

    /// Commits `inode` at `path` as Pending (with a fresh ino if `fresh`),
    /// links it into the parent, then commits it Normal. The caller holds
    /// lock(path) and has checked that no record exists.
    async fn link_new(self: &Arc<Self>, path: &str, mut inode: Inode, fresh: bool) -> Res<Inode> {
        let (parent, name) = path::split(path).ok_or(Errno::EEXIST)?;
        let (parent, name) = (parent.to_string(), name.to_string());
        let me = self.clone();
        let (p, pa, na) = (path.to_string(), parent.clone(), name.clone());
        let inode = self
            .store(move || {
                if fresh {
                    inode.attr.ino = me.alloc_ino()?;
                }
                let rec = InodeRecord {
                    inode: inode.clone(),
                    state: RecordState::Pending {
                        parent: pa,
                        name: na,
                    },
                };
                me.commit(&[MetaOp::PutInode(p, rec)])?;
                Ok(inode)
            })
            .await?;
        let entry = DirEntry {
            name,
            kind: inode.attr.kind,
            ino: inode.attr.ino,
        };
        let reply = self.call_dir_owner(&parent, EntryReq::Add(entry)).await;
        let me = self.clone();
        let p = path.to_string();
        match reply {
            Some(Reply::Ok) => {
                let done = inode.clone();
                self.store(move || me.commit(&[MetaOp::PutInode(p, InodeRecord::normal(done))]))
                    .await?;
                Ok(inode)
            }
            Some(Reply::Err(e)) => {
                self.store(move || me.commit(&[MetaOp::DelInode(p)]))
                    .await?;
                Err(e)
            }
            Some(r) => {
                tracing::warn!("AddEntry for {path} answered {r:?}; left pending");
                Err(Errno::EIO)
            }
            None => Err(Errno::EIO),
        }
    }

    /// Finishes a record left Pending or Unlinking. The caller holds
    /// lock(path). Returns the inode if the record is (now) Normal.
    pub(crate) async fn resolve(
        self: &Arc<Self>,
        path: &str,
        rec: InodeRecord,
    ) -> Res<Option<Inode>> {
        let me = self.clone();
        let p = path.to_string();
        match rec.state.clone() {
            RecordState::Normal => Ok(Some(rec.inode)),
            RecordState::Pending { parent, name } => {
                match self.call_dir_owner(&parent, EntryReq::Get { name }).await {
                    Some(Reply::Entry(Some(e))) if e.ino == rec.inode.attr.ino => {
                        let inode = rec.inode.clone();
                        self.store(move || {
                            me.commit(&[MetaOp::PutInode(p, InodeRecord::normal(inode))])
                        })
                        .await?;
                        tracing::info!("recovery: create of {path} completed");
                        Ok(Some(rec.inode))
                    }
                    Some(Reply::Entry(_)) => {
                        self.store(move || me.commit(&[MetaOp::DelInode(p)]))
                            .await?;
                        tracing::info!("recovery: create of {path} rolled back");
                        Ok(None)
                    }
                    _ => Err(Errno::EIO),
                }
            }
            RecordState::Unlinking { parent, name } => {
                let ino = rec.inode.attr.ino;
                match self
                    .call_dir_owner(&parent, EntryReq::Remove { name, ino })
                    .await
                {
                    Some(Reply::Ok) => {
                        self.store(move || me.commit(&[MetaOp::DelInode(p)]))
                            .await?;
                        tracing::info!("recovery: remove of {path} completed");
                        Ok(None)
                    }
                    _ => Err(Errno::EIO),
                }
            }
        }
    }

    /// The Normal inode at `path`, after finishing any half-done operation
    /// on it. The caller holds lock(path).
    async fn settle(self: &Arc<Self>, path: &str) -> Res<Option<Inode>> {
        let me = self.clone();
        let p = path.to_string();
        match self.store(move || me.load(&p)).await? {
            None => Ok(None),
            Some(r) => self.resolve(path, r).await,
        }
    }

    // ---------- path requests ----------

    async fn getattr(self: &Arc<Self>, path: String) -> Res<Inode> {
        self.load_normal(&path)
    }

    async fn create(self: &Arc<Self>, path: String, new: NewInode, excl: bool) -> Res<Reply> {
        let target = match new.kind {
            FileKind::Symlink => {
                let t = new.target.ok_or(Errno::EINVAL)?;
                if t.is_empty() {
                    return Err(Errno::ENOENT);
                }
                if t.len() > path::PATH_MAX || t.contains('\0') {
                    return Err(if t.contains('\0') {
                        Errno::EINVAL
                    } else {
                        Errno::ENAMETOOLONG
                    });
                }
                Some(t)
            }
            _ => None,
        };
        let _g = self.locks.lock(&path).await;
        if let Some(inode) = self.settle(&path).await? {
            return if excl {
                Err(Errno::EEXIST)
            } else {
                Ok(Reply::Created {
                    inode,
                    created: false,
                })
            };
        }
        let now = Timespec::now();
        let (size, nlink) = match new.kind {
            FileKind::File => (0, 1),
            FileKind::Dir => (DIR_SIZE, 2),
            FileKind::Symlink => (target.as_ref().map_or(0, |t| t.len() as u64), 1),
        };
        let inode = Inode {
            attr: Attr {
                ino: 0,
                kind: new.kind,
                mode: new.mode & 0o7777,
                uid: new.uid,
                gid: new.gid,
                size,
                nlink,
                atime: now,
                mtime: now,
                ctime: now,
            },
            target,
        };
        let inode = self.link_new(&path, inode, true).await?;
        Ok(Reply::Created {
            inode,
            created: true,
        })
    }

    async fn adopt(self: &Arc<Self>, path: String, mut inode: Inode) -> Res<Inode> {
        if inode.attr.kind == FileKind::Symlink && inode.target.is_none() {
            return Err(Errno::EINVAL);
        }
        if inode.attr.kind != FileKind::Symlink {
            inode.target = None;
        }
        let _g = self.locks.lock(&path).await;
        if self.settle(&path).await?.is_some() {
            return Err(Errno::EEXIST);
        }
        inode.attr.ctime = Timespec::now();
        inode.attr.mode &= 0o7777;
        if inode.attr.kind == FileKind::Dir {
            // Its entries are re-added one by one, each adding its own link.
            inode.attr.nlink = 2;
        }
        self.link_new(&path, inode, false).await
    }

    async fn remove(self: &Arc<Self>, path: String, dir: bool) -> Res<Inode> {
        let _g = self.locks.lock(&path).await;
        let Some((parent, name)) = path::split(&path) else {
            // The root exists (we own it) and cannot be removed.
            return Err(Errno::EBUSY);
        };
        let (parent, name) = (parent.to_string(), name.to_string());
        let me = self.clone();
        let (p, pa, na) = (path.clone(), parent.clone(), name.clone());
        let inode = self
            .store(move || {
                let inode = me.load_normal(&p)?;
                match (dir, inode.attr.kind) {
                    (true, FileKind::Dir) => {
                        if me.meta.has_entries(&p).map_err(se)? {
                            return Err(Errno::ENOTEMPTY);
                        }
                    }
                    (true, _) => return Err(Errno::ENOTDIR),
                    (false, FileKind::Dir) => return Err(Errno::EISDIR),
                    (false, _) => {}
                }
                let rec = InodeRecord {
                    inode: inode.clone(),
                    state: RecordState::Unlinking {
                        parent: pa,
                        name: na,
                    },
                };
                me.commit(&[MetaOp::PutInode(p, rec)])?;
                Ok(inode)
            })
            .await?;
        let ino = inode.attr.ino;
        let me = self.clone();
        match self
            .call_dir_owner(&parent, EntryReq::Remove { name, ino })
            .await
        {
            Some(Reply::Ok) => {
                self.store(move || me.commit(&[MetaOp::DelInode(path)]))
                    .await?;
                Ok(inode)
            }
            Some(Reply::Err(e)) => {
                // The parent refused (its disk failed): the name is still
                // there, so the record stays.
                let back = inode.clone();
                self.store(move || me.commit(&[MetaOp::PutInode(path, InodeRecord::normal(back))]))
                    .await?;
                Err(e)
            }
            Some(r) => {
                tracing::warn!("RemoveEntry for {path} answered {r:?}; left unlinking");
                Err(Errno::EIO)
            }
            None => Err(Errno::EIO),
        }
    }

    async fn setattr(self: &Arc<Self>, path: String, set: SetAttr) -> Res<Inode> {
        let _g = self.locks.lock(&path).await;
        let me = self.clone();
        self.store(move || {
            let mut inode = me.load_normal(&path)?;
            let now = Timespec::now();
            let resolve = |t: TimeSet| match t {
                TimeSet::Now => now,
                TimeSet::At(t) => t,
            };
            let a = &mut inode.attr;
            let mut changed = false;
            if let Some(size) = set.size {
                match a.kind {
                    FileKind::Dir => return Err(Errno::EISDIR),
                    FileKind::Symlink => return Err(Errno::EINVAL),
                    FileKind::File => {}
                }
                a.size = size;
                a.mtime = now;
                changed = true;
            }
            if let Some(m) = set.mode {
                a.mode = m & 0o7777;
                changed = true;
            }
            if let Some(u) = set.uid {
                a.uid = u;
                changed = true;
            }
            if let Some(g) = set.gid {
                a.gid = g;
                changed = true;
            }
            if let Some(t) = set.atime {
                a.atime = resolve(t);
                changed = true;
            }
            if let Some(t) = set.mtime {
                a.mtime = resolve(t);
                changed = true;
            }
            if changed {
                a.ctime = now;
                me.commit(&[MetaOp::PutInode(path, InodeRecord::normal(inode.clone()))])?;
            }
            Ok(inode)
        })
        .await
    }

    async fn extend(self: &Arc<Self>, path: String, size: u64, mtime: Timespec) -> Res<Inode> {
        let _g = self.locks.lock(&path).await;
        let me = self.clone();
        self.store(move || {
            let mut inode = me.load_normal(&path)?;
            if inode.attr.kind == FileKind::Dir {
                return Err(Errno::EISDIR);
            }
            inode.attr.size = inode.attr.size.max(size);
            inode.attr.mtime = mtime;
            inode.attr.ctime = mtime;
            me.commit(&[MetaOp::PutInode(path, InodeRecord::normal(inode.clone()))])?;
            Ok(inode)
        })
        .await
    }

    async fn readdir(
        self: &Arc<Self>,
        path: String,
        after: Option<String>,
        limit: u32,
    ) -> Res<Reply> {
        let me = self.clone();
        self.store(move || {
            let inode = me.load_normal(&path)?;
            if inode.attr.kind != FileKind::Dir {
                return Err(Errno::ENOTDIR);
            }
            let limit = limit.clamp(1, MAX_READDIR) as usize;
            let mut entries = me
                .meta
                .list_entries(&path, after.as_deref(), limit + 1)
                .map_err(se)?;
            let next = if entries.len() > limit {
                entries.truncate(limit);
                entries.last().map(|e| e.name.clone())
            } else {
                None
            };
            Ok(Reply::Entries { entries, next })
        })
        .await
    }

    // ---------- entry requests ----------

    async fn add_entry(self: &Arc<Self>, dir: String, entry: DirEntry) -> Res<()> {
        let _g = self.locks.lock(&dir).await;
        let me = self.clone();
        self.store(move || {
            let mut inode = me.load_normal(&dir)?;
            if inode.attr.kind != FileKind::Dir {
                return Err(Errno::ENOTDIR);
            }
            if let Some(e) = me.meta.get_entry(&dir, &entry.name).map_err(se)? {
                return if e.ino == entry.ino {
                    Ok(())
                } else {
                    Err(Errno::EEXIST)
                };
            }
            let now = Timespec::now();
            inode.attr.mtime = now;
            inode.attr.ctime = now;
            if entry.kind == FileKind::Dir {
                inode.attr.nlink = inode.attr.nlink.saturating_add(1);
            }
            me.commit(&[
                MetaOp::PutEntry(dir.clone(), entry),
                MetaOp::PutInode(dir, InodeRecord::normal(inode)),
            ])
        })
        .await
    }

    async fn remove_entry(self: &Arc<Self>, dir: String, name: String, ino: u64) -> Res<()> {
        let _g = self.locks.lock(&dir).await;
        let me = self.clone();
        self.store(move || {
            let Some(e) = me.meta.get_entry(&dir, &name).map_err(se)? else {
                return Ok(());
            };
            if e.ino != ino {
                return Ok(());
            }
            let mut ops = vec![MetaOp::DelEntry(dir.clone(), name)];
            if let Some(mut rec) = me.load(&dir)? {
                let now = Timespec::now();
                rec.inode.attr.mtime = now;
                rec.inode.attr.ctime = now;
                if e.kind == FileKind::Dir {
                    rec.inode.attr.nlink = rec.inode.attr.nlink.saturating_sub(1).max(2);
                }
                ops.push(MetaOp::PutInode(dir, rec));
            }
            me.commit(&ops)
        })
        .await
    }

    async fn get_entry(self: &Arc<Self>, dir: String, name: String) -> Res<Option<DirEntry>> {
        self.meta.get_entry(&dir, &name).map_err(se)
    }

    // ---------- data requests ----------

    fn check_range(&self, offset: u32, len: usize) -> Res<()> {
        let cs = u64::from(self.chunk_size());
        if cs == 0 || u64::from(offset) + len as u64 > cs {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    async fn read(
        self: &Arc<Self>,
        ino: u64,
        chunk: u64,
        offset: u32,
        len: u32,
    ) -> Res<bytes::Bytes> {
        self.check_range(offset, len as usize)?;
        if len <= INLINE_READ_MAX {
            return self.data.read(ino, chunk, offset, len).map_err(se);
        }
        let me = self.clone();
        blocking(move || me.data.read(ino, chunk, offset, len).map_err(se)).await
    }

    async fn write(
        self: &Arc<Self>,
        ino: u64,
        chunk: u64,
        offset: u32,
        data: bytes::Bytes,
    ) -> Res<u32> {
        self.check_range(offset, data.len())?;
        if data.is_empty() {
            return Ok(0);
        }
        let data_len_small = data.len() <= INLINE_READ_MAX as usize;
        let me = self.clone();
        let work = move || {
            me.data.write(ino, chunk, offset, &data).map_err(se)?;
            Ok(data.len() as u32)
        };
        if self.inline() && data_len_small {
            return work();
        }
        blocking(work).await
    }

    async fn truncate_data(self: &Arc<Self>, ino: u64, size: u64) -> Res<()> {
        let cs = self.chunk_size();
        if cs == 0 {
            return Err(Errno::EINVAL);
        }
        let me = self.clone();
        self.store(move || me.data.truncate(ino, size, cs).map_err(se))
            .await
    }

    async fn remove_data(self: &Arc<Self>, ino: u64) -> Res<()> {
        let me = self.clone();
        self.store(move || me.data.remove(ino).map_err(se)).await
    }

    async fn fsync(self: &Arc<Self>, ino: Option<u64>) -> Res<()> {
        if self.sync == SyncPolicy::None {
            // Scratch use: nothing is promised to survive a crash.
            return Ok(());
        }
        let me = self.clone();
        // The meta log too: under the `fsync` policy metadata commits are
        // lazy, and the file's records and names must survive with it.
        blocking(move || {
            me.meta.flush().map_err(se)?;
            me.data.sync(ino).map_err(se)
        })
        .await
    }

    async fn statfs(self: &Arc<Self>) -> Res<StatFs> {
        let (data_dir, meta_dir) = (self.data_dir.clone(), self.meta_dir.clone());
        let writes_slowed = self.writes_slowed();
        blocking(move || {
            let d = sys::statvfs(&data_dir).map_err(Errno::from)?;
            let m = sys::statvfs(&meta_dir).map_err(Errno::from)?;
            Ok(StatFs {
                bsize: u32::try_from(d.frsize).unwrap_or(4096),
                blocks: d.blocks,
                bfree: d.bfree,
                bavail: d.bavail,
                files: m.files,
                ffree: m.ffree,
                namemax: path::NAME_MAX as u32,
                writes_slowed,
            })
        })
        .await
    }

    // ---------- dispatch ----------

    /// Answers one request.
    pub async fn dispatch(self: &Arc<Self>, env: Envelope) -> Reply {
        let epoch = env.epoch;
        macro_rules! route {
            ($key:expr) => {
                if let Some(r) = self.route(epoch, $key).await {
                    return r;
                }
            };
        }
        macro_rules! check_path {
            ($p:expr) => {
                if let Err(e) = path::check($p) {
                    return Reply::Err(e);
                }
            };
        }
        macro_rules! check_name {
            ($n:expr) => {
                if let Err(e) = path::check_name($n) {
                    return Reply::Err(e);
                }
            };
        }
        let res: Res<Reply> = match env.req {
            Request::Register { .. } | Request::Heartbeat { .. } | Request::GetMap => {
                Err(Errno::EINVAL)
            }
            Request::GetAttr { path } => {
                check_path!(&path);
                route!(Key::Path(&path));
                self.getattr(path).await.map(Reply::Inode)
            }
            Request::Create { path, new, excl } => {
                check_path!(&path);
                route!(Key::Path(&path));
                self.create(path, new, excl).await
            }
            Request::SetAttr { path, set } => {
                check_path!(&path);
                route!(Key::Path(&path));
                self.setattr(path, set).await.map(Reply::Inode)
            }
            Request::Extend { path, size, mtime } => {
                check_path!(&path);
                route!(Key::Path(&path));
                self.extend(path, size, mtime).await.map(Reply::Inode)
            }
            Request::Remove { path, dir } => {
                check_path!(&path);
                route!(Key::Path(&path));
                self.remove(path, dir).await.map(Reply::Inode)
            }
            Request::Adopt { path, inode } => {
                check_path!(&path);
                route!(Key::Path(&path));
                if path == "/" {
                    Err(Errno::EEXIST)
                } else {
                    self.adopt(path, inode).await.map(Reply::Inode)
                }
            }
            Request::ReadDir { path, after, limit } => {
                check_path!(&path);
                if let Some(a) = &after {
                    check_name!(a);
                }
                route!(Key::Path(&path));
                self.readdir(path, after, limit).await
            }
            Request::AddEntry { dir, entry } => {
                check_path!(&dir);
                check_name!(&entry.name);
                route!(Key::Path(&dir));
                self.add_entry(dir, entry).await.map(|()| Reply::Ok)
            }
            Request::RemoveEntry { dir, name, ino } => {
                check_path!(&dir);
                check_name!(&name);
                route!(Key::Path(&dir));
                self.remove_entry(dir, name, ino).await.map(|()| Reply::Ok)
            }
            Request::GetEntry { dir, name } => {
                check_path!(&dir);
                check_name!(&name);
                route!(Key::Path(&dir));
                self.get_entry(dir, name).await.map(Reply::Entry)
            }
            Request::Read {
                ino,
                chunk,
                offset,
                len,
            } => {
                route!(Key::Chunk(ino, chunk));
                self.read(ino, chunk, offset, len).await.map(Reply::Data)
            }
            Request::Write {
                ino,
                chunk,
                offset,
                data,
            } => {
                route!(Key::Chunk(ino, chunk));
                self.write(ino, chunk, offset, data)
                    .await
                    .map(Reply::Written)
            }
            Request::TruncateData { ino, size } => {
                self.truncate_data(ino, size).await.map(|()| Reply::Ok)
            }
            Request::RemoveData { ino } => self.remove_data(ino).await.map(|()| Reply::Ok),
            Request::Fsync { ino } => self.fsync(ino).await.map(|()| Reply::Ok),
            Request::StatFs => self.statfs().await.map(Reply::StatFs),
            // Answered by the transport's RDMA front door when this server
            // has RDMA (transport/src/rdma); reaching here means it has not.
            Request::RdmaConnect { .. } => Err(Errno::ENOTSUP),
        };
        res.unwrap_or_else(Reply::Err)
    }

    /// Creates the root record now if this server owns "/".
    pub async fn ensure_root_if_owner(self: &Arc<Self>) {
        let view = self.members.view();
        if view.ring.owner_path("/") == Some(self.members.id()) {
            let me = self.clone();
            if let Err(e) = blocking(move || me.ensure_root()).await {
                tracing::warn!("cannot create the root directory: {e}");
            }
        }
    }

    /// The sync policy.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    /// Whether store work may run on the calling thread (a runtime worker
    /// or a ring poller): when no commit can wait for the disk (sync
    /// policy `fsync` or `none`) and the stores are not slowing writes
    /// (their compaction behind: a slowed commit sleeps, which would hold
    /// up every request on this thread).
    fn inline(&self) -> bool {
        self.inline_store && !self.writes_slowed()
    }

    /// Whether either store slows commits that write now.
    fn writes_slowed(&self) -> bool {
        self.meta.writes_slowed() || self.data.writes_slowed()
    }

    /// Runs store work: inline when [`Self::inline`] allows (appends and
    /// index updates cost microseconds, less than the thread hand-off),
    /// otherwise in the blocking pool.
    async fn store<T, F>(&self, f: F) -> Res<T>
    where
        F: FnOnce() -> Res<T> + Send + 'static,
        T: Send + 'static,
    {
        if self.inline() {
            f()
        } else {
            blocking(f).await
        }
    }
}

/// How long a ring poller spins for a peer's reply before it hands the
/// wait to a task: a busy peer poller answers an entry request in a few
/// µs; the bound keeps two pollers from waiting on each other.
const PEER_SPIN: std::time::Duration = std::time::Duration::from_micros(40);

/// A peer request sent from a ring poller.
enum Sent {
    /// Answered (or failed) within [`PEER_SPIN`].
    Done(Result<Reply, sealfs_transport::TransportError>),
    /// Still in flight.
    Waiting(Box<dyn sealfs_transport::InFlight>),
}

/// On a ring poller, sends `req` to the peer on a ring of its own and
/// spins up to [`PEER_SPIN`] for the reply, so a create or remove finishes
/// on the poller thread with no thread hand-off. `None` elsewhere, or when
/// the transport cannot send without waiting (TCP).
fn try_on_poller(
    pool: &dyn sealfs_transport::Transport,
    epoch: u64,
    req: &Request,
) -> Option<Sent> {
    if !sealfs_transport::shm::on_ring_poller() {
        return None;
    }
    let mut t = match pool.send(epoch, req)? {
        Ok(t) => t,
        Err(e) => return Some(Sent::Done(Err(e))),
    };
    let start = std::time::Instant::now();
    let mut n = 0u32;
    loop {
        if let Some(r) = t.try_reply() {
            return Some(Sent::Done(r));
        }
        if start.elapsed() >= PEER_SPIN {
            return Some(Sent::Waiting(t));
        }
        n += 1;
        if n.is_multiple_of(4) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Runs a blocking call to a peer server from a handler.
///
/// On a worker of a multi-threaded runtime the call runs right there
/// (`block_in_place`): a peer on rings answers in microseconds, and a hop to
/// the blocking pool and back costs two thread wake-ups (~50 µs each on
/// this machine). The peer's answer (an entry add/remove/get) is a leaf
/// request its poller serves without calling anyone, so this cannot wait in
/// a cycle. On a ring poller thread the handler first yields, so the poller
/// moves it to a task and keeps serving its rings. Elsewhere (a
/// current-thread runtime) the call goes to the blocking pool.
async fn call_peer<T, F>(f: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if sealfs_transport::shm::on_ring_poller() {
        tokio::task::yield_now().await;
    }
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi && !sealfs_transport::shm::on_ring_poller() {
        Ok(tokio::task::block_in_place(f))
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

/// The transport's entry point.
pub struct Service(pub Arc<Node>);

impl Handler for Service {
    async fn handle(self: Arc<Self>, env: Envelope) -> Reply {
        self.0.dispatch(env).await
    }
}
