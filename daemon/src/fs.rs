//! The FUSE file system: every kernel request mapped onto the client library.
//!
//! Requests are served by several fuser event-loop threads at once; each
//! handler makes blocking client calls and replies from its own thread. Two
//! locks, never held across each other nor (the table and handle mutexes)
//! across a network call:
//! * `ns`, a read/write lock: `rename` and unlink-while-open (which renames)
//!   hold it for writing, every other namespace change for reading, so the
//!   table's paths are rewritten while no other namespace change runs;
//! * the [`Table`] and the handle maps, in short critical sections.
//!
//! What the kernel sees:
//! * node id = `st_ino` = the server's inode number (the root is 1);
//! * attributes, entries and absent names cached for `attr_ttl`,
//!   `entry_ttl` and `negative_ttl` ([`FsOptions`]): correct for a single
//!   writer (every change made through this mount updates the kernel's
//!   cache); other clients' changes show after the timeouts;
//! * `default_permissions`: the kernel checks permission bits, so handlers
//!   do not (except `access`, for mounts without it);
//! * hard links: `link` gives `EPERM` (SealFS has none);
//! * `rename` with `RENAME_EXCHANGE` or `RENAME_WHITEOUT` gives `EINVAL`.

use crate::table::{child, Table, HIDDEN_DIR, HIDDEN_NAME, ROOT};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use sealfs_client::{Attr, Client, FileKind, Inode, SetAttr, TimeSet, Timespec};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest write the kernel sends in one request (and read it asks for).
pub const MAX_WRITE: u32 = 1 << 20;
/// Entries looked up ahead for one readdirplus reply (about what fits in
/// the kernel's 4 KiB readdirplus buffer).
const PLUS_PAGE: usize = 32;
/// Threads that fetch the attributes of one readdirplus page.
const PLUS_THREADS: usize = 8;
/// `st_blksize` reported for every file: the preferred I/O size.
const BLKSIZE: u32 = 128 * 1024;

/// Caching of the kernel.
#[derive(Clone, Copy, Debug)]
pub struct FsOptions {
    /// How long the kernel may use attributes without asking again.
    pub attr_ttl: Duration,
    /// How long the kernel may use a name → inode entry without asking again.
    pub entry_ttl: Duration,
    /// How long the kernel may remember that a name does not exist.
    pub negative_ttl: Duration,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(1),
        }
    }
}

/// The attributes sent with a negative entry (ignored by the kernel).
const NEGATIVE: Attr = Attr {
    ino: 0,
    kind: FileKind::File,
    mode: 0,
    uid: 0,
    gid: 0,
    size: 0,
    nlink: 0,
    atime: Timespec { sec: 0, nsec: 0 },
    mtime: Timespec { sec: 0, nsec: 0 },
    ctime: Timespec { sec: 0, nsec: 0 },
};

/// An open file.
#[derive(Clone, Copy, Debug)]
struct Handle {
    node: u64,
    append: bool,
}

/// One listed entry of an open directory.
#[derive(Clone, Debug)]
struct Listed {
    ino: u64,
    kind: FileType,
    name: String,
}

/// The SealFS FUSE file system.
pub struct SealFs {
    client: Arc<Client>,
    opts: FsOptions,
    ns: RwLock<()>,
    table: Mutex<Table>,
    files: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Listed>>>>,
    next_fh: AtomicU64,
}

fn errno(e: sealfs_client::Errno) -> Errno {
    Errno::from_i32(e.0)
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
    }
}

fn time(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
            + Duration::from_nanos(u64::from(t.nsec))
    }
}

fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                Timespec {
                    sec: -(d.as_secs() as i64),
                    nsec: 0,
                }
            } else {
                Timespec {
                    sec: -(d.as_secs() as i64) - 1,
                    nsec: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(timespec(t)),
    }
}

/// The kernel's view of `a`; `unlinked` reports a link count of 0.
pub fn file_attr(a: &Attr, unlinked: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.ctime),
        kind: kind(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: if unlinked { 0 } else { a.nlink },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// A name from the kernel as a SealFS path component.
fn name_str(name: &OsStr) -> Result<&str, Errno> {
    let s = name.to_str().ok_or(Errno::EINVAL)?;
    if s.len() > sealfs_proto::path::NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(s)
}

impl SealFs {
    /// A file system over `client`.
    pub fn new(client: Arc<Client>, opts: FsOptions) -> SealFs {
        SealFs {
            client,
            opts,
            ns: RwLock::new(()),
            table: Mutex::new(Table::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    fn path(&self, node: INodeNo) -> Result<String, Errno> {
        self.table.lock().path(node.0).ok_or(Errno::ESTALE)
    }

    /// Makes a new name under `parent` with `make` (given its path, under
    /// the namespace lock held for reading) and replies with its entry.
    fn new_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        make: impl FnOnce(&str) -> Result<Inode, Errno>,
    ) {
        let res = (|| {
            let _ns = self.ns.read();
            let path = self.child_path(parent, name)?;
            let inode = make(&path)?;
            Ok((path, inode))
        })();
        match res {
            Ok((path, inode)) => self.entry(&path, &inode, reply),
            Err(e) => reply.error(e),
        }
    }

    fn child_path(&self, parent: INodeNo, name: &OsStr) -> Result<String, Errno> {
        let name = name_str(name)?;
        if parent.0 == ROOT && name == HIDDEN_NAME {
            // Reserved: holds files unlinked while open.
            return Err(Errno::EPERM);
        }
        Ok(child(&self.path(parent)?, name))
    }

    fn unlinked(&self, node: u64) -> bool {
        self.table.lock().get(node).is_some_and(|n| n.hidden)
    }

    /// Hands the kernel an entry for `inode` found at `path`.
    fn entry(&self, path: &str, inode: &Inode, reply: ReplyEntry) {
        self.table
            .lock()
            .looked_up(inode.attr.ino, path, inode.attr.kind == FileKind::Dir);
        reply.entry(
            &self.opts.entry_ttl,
            &file_attr(&inode.attr, false),
            Generation(0),
        );
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn handle(&self, fh: FileHandle) -> Result<Handle, Errno> {
        self.files.lock().get(&fh.0).copied().ok_or(Errno::EBADF)
    }

    /// Moves the file at `path` (node `node`, open) out of the namespace to
    /// its hidden name, to be removed on its last release. Caller holds `ns`
    /// for writing.
    fn hide(&self, node: u64, path: &str) -> Result<(), Errno> {
        match self.client.mkdir(HIDDEN_DIR, 0o700, 0, 0) {
            Ok(_) | Err(sealfs_client::Errno::EEXIST) => {}
            Err(e) => return Err(errno(e)),
        }
        // The daemon's pid keeps two mounts hiding the same inode apart.
        let hidden = format!("{HIDDEN_DIR}/{node}.{}", std::process::id());
        self.client.rename(path, &hidden, 0).map_err(errno)?;
        self.table.lock().hide(node, hidden);
        Ok(())
    }

    /// The open node the table has at `path`, if any.
    fn open_node_at(&self, path: &str) -> Option<u64> {
        self.table.lock().find_open(path)
    }

    fn listing(&self, node: INodeNo) -> Result<Vec<Listed>, Errno> {
        let path = self.path(node)?;
        let entries = self.client.readdir(&path).map_err(errno)?;
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push(Listed {
            ino: node.0,
            kind: FileType::Directory,
            name: ".".into(),
        });
        out.push(Listed {
            ino: ROOT,
            kind: FileType::Directory,
            name: "..".into(),
        });
        for e in entries {
            if node.0 == ROOT && e.name == HIDDEN_NAME {
                continue;
            }
            out.push(Listed {
                ino: e.ino,
                kind: kind(e.kind),
                name: e.name,
            });
        }
        Ok(out)
    }

    /// The listing of the open directory `fh`: taken afresh when the kernel
    /// reads from offset 0 (opendir, rewinddir), the snapshot otherwise, so
    /// every entry present at that moment is returned exactly once.
    fn dir_snapshot(
        &self,
        node: INodeNo,
        fh: FileHandle,
        offset: u64,
    ) -> Result<Arc<Vec<Listed>>, Errno> {
        if offset != 0 {
            if let Some(l) = self.dirs.lock().get(&fh.0).cloned() {
                return Ok(l);
            }
        }
        let l = Arc::new(self.listing(node)?);
        self.dirs.lock().insert(fh.0, l.clone());
        Ok(l)
    }

    /// The inodes of `entries` of directory `dir`, fetched by a few scoped
    /// threads at once (`.` and `..` are not fetched: `ENOENT`).
    fn stat_many(&self, dir: &str, entries: &[Listed]) -> Vec<Result<Inode, sealfs_client::Errno>> {
        let lstat = |e: &Listed| -> Result<Inode, sealfs_client::Errno> {
            if e.name == "." || e.name == ".." {
                return Err(sealfs_client::Errno::ENOENT);
            }
            self.client.lstat(&child(dir, &e.name))
        };
        let per = entries.len().div_ceil(PLUS_THREADS).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = entries
                .chunks(per)
                .map(|part| {
                    (
                        part.len(),
                        s.spawn(move || part.iter().map(lstat).collect::<Vec<_>>()),
                    )
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|(n, h)| {
                    h.join()
                        .unwrap_or_else(|_| vec![Err(sealfs_client::Errno::EIO); n])
                })
                .collect()
        })
    }

    fn do_setattr(&self, node: INodeNo, set: SetAttr) -> Result<FileAttr, Errno> {
        let _ns = self.ns.read();
        let path = self.path(node)?;
        let inode = self.client.setattr(&path, set).map_err(errno)?;
        Ok(file_attr(&inode.attr, self.unlinked(node.0)))
    }

    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(String, Inode), Errno> {
        let _ns = self.ns.read();
        let path = self.child_path(parent, name)?;
        let excl = flags & libc::O_EXCL != 0;
        let perm = mode & !umask & 0o7777;
        let (mut inode, created) = self
            .client
            .create(&path, perm, req.uid(), req.gid(), excl)
            .map_err(errno)?;
        if !created {
            match inode.attr.kind {
                FileKind::Dir => return Err(Errno::EISDIR),
                FileKind::Symlink => return Err(Errno::EEXIST),
                FileKind::File => {}
            }
            let acc = flags & libc::O_ACCMODE;
            if flags & libc::O_TRUNC != 0
                && (acc == libc::O_WRONLY || acc == libc::O_RDWR)
                && inode.attr.size != 0
            {
                inode = self
                    .client
                    .setattr(
                        &path,
                        SetAttr {
                            size: Some(0),
                            ..SetAttr::default()
                        },
                    )
                    .map_err(errno)?;
            }
        }
        Ok((path, inode))
    }

    fn do_unlink(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let path = self.child_path(parent, name)?;
        // Fast path: nothing open at this name.
        {
            let _ns = self.ns.read();
            if self.open_node_at(&path).is_none() {
                return self.client.unlink(&path).map_err(errno);
            }
        }
        let _ns = self.ns.write();
        match self.open_node_at(&path) {
            Some(node) => self.hide(node, &path),
            None => self.client.unlink(&path).map_err(errno),
        }
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let _ns = self.ns.write();
        let src = self.child_path(parent, name)?;
        let dst = self.child_path(newparent, newname)?;
        if !noreplace && src != dst {
            if let Some(node) = self.open_node_at(&dst) {
                // The file about to be replaced is open: keep it readable.
                let s = self.client.lstat(&src).map_err(errno)?;
                let d = self.client.lstat(&dst).map_err(errno)?;
                if s.attr.ino != d.attr.ino
                    && s.attr.kind != FileKind::Dir
                    && d.attr.kind != FileKind::Dir
                {
                    self.hide(node, &dst)?;
                }
            }
        }
        let f = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
        self.client.rename(&src, &dst, f).map_err(errno)?;
        self.table.lock().renamed(&src, &dst);
        Ok(())
    }

    fn do_release(&self, fh: FileHandle) {
        let Some(h) = self.files.lock().remove(&fh.0) else {
            return;
        };
        let hidden = self.table.lock().released(h.node);
        if let Some(p) = hidden {
            if let Err(e) = self.client.unlink(&p) {
                tracing::warn!(path = %p, "could not remove a file unlinked while open: {e}");
            }
        }
    }

    fn do_access(&self, req: &Request, node: INodeNo, mask: AccessFlags) -> Result<(), Errno> {
        let path = self.path(node)?;
        let a = self.client.lstat(&path).map_err(errno)?.attr;
        let want = mask.bits() & 0o7;
        if want == 0 {
            return Ok(());
        }
        if req.uid() == 0 {
            // root: everything but execute of a file with no x bit at all.
            if want & libc::X_OK != 0 && a.kind == FileKind::File && a.mode & 0o111 == 0 {
                return Err(Errno::EACCES);
            }
            return Ok(());
        }
        let bits = if req.uid() == a.uid {
            (a.mode >> 6) & 7
        } else if req.gid() == a.gid {
            (a.mode >> 3) & 7
        } else {
            a.mode & 7
        };
        if bits as i32 & want == want {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }
}

macro_rules! reply_result {
    ($reply:expr, $res:expr, |$v:ident| $ok:expr) => {
        match $res {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

impl Filesystem for SealFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        // Optional speed-ups: lookups and readdirs in one directory at once.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // readdirplus when the kernel sees it pays (`ls -l`, `find`, rsync):
        // the attributes of a page of entries are fetched in parallel.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = (|| {
            let path = self.child_path(parent, name).map_err(|e| {
                if e == Errno::EPERM {
                    Errno::ENOENT
                } else {
                    e
                }
            })?;
            let inode = self.client.lookup(&path).map_err(errno)?;
            Ok((path, inode))
        })();
        match res {
            Ok((path, inode)) => self.entry(&path, &inode, reply),
            Err(e) if e == Errno::ENOENT && !self.opts.negative_ttl.is_zero() => {
                // A negative entry (node id 0): the kernel remembers the
                // absence; creates through this mount replace it at once.
                let mut attr = file_attr(&NEGATIVE, false);
                attr.ino = INodeNo(0);
                reply.entry(&self.opts.negative_ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.table.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let res = (|| {
            let path = self.path(ino)?;
            let inode = self.client.lookup(&path).map_err(errno)?;
            if ino.0 != ROOT && inode.attr.ino != ino.0 {
                return Err(Errno::ESTALE);
            }
            Ok(file_attr(&inode.attr, self.unlinked(ino.0)))
        })();
        reply_result!(reply, res, |a| reply.attr(&self.opts.attr_ttl, &a))
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        let res = self.do_setattr(ino, set);
        reply_result!(reply, res, |a| reply.attr(&self.opts.attr_ttl, &a))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self
            .path(ino)
            .and_then(|p| self.client.readlink(&p).map_err(errno));
        reply_result!(reply, res, |t| reply.data(t.as_bytes()))
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let fmt = mode & libc::S_IFMT;
        if fmt != 0 && fmt != libc::S_IFREG {
            // Devices, FIFOs and sockets cannot be stored.
            return reply.error(Errno::EPERM);
        }
        self.new_entry(parent, name, reply, |path| {
            let (inode, _) = self
                .client
                .create(path, mode & !umask & 0o7777, req.uid(), req.gid(), true)
                .map_err(errno)?;
            Ok(inode)
        })
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.new_entry(parent, name, reply, |path| {
            self.client
                .mkdir(path, mode & !umask & 0o7777, req.uid(), req.gid())
                .map_err(errno)
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_result!(reply, self.do_unlink(parent, name), |_v| reply.ok())
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = (|| {
            let _ns = self.ns.read();
            let path = self.child_path(parent, name)?;
            self.client.rmdir(&path).map_err(errno)
        })();
        reply_result!(reply, res, |_v| reply.ok())
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.new_entry(parent, link_name, reply, |path| {
            let target = target.to_str().ok_or(Errno::EINVAL)?;
            self.client
                .symlink(target, path, req.uid(), req.gid())
                .map_err(errno)
        })
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_result!(
            reply,
            self.do_rename(parent, name, newparent, newname, flags),
            |_v| reply.ok()
        )
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // SealFS has no hard links.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut t = self.table.lock();
        if t.get(ino.0).is_none() {
            drop(t);
            return reply.error(Errno::ESTALE);
        }
        t.opened(ino.0);
        drop(t);
        let fh = self.fh();
        self.files.lock().insert(
            fh,
            Handle {
                node: ino.0,
                append: flags.0 & libc::O_APPEND != 0,
            },
        );
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let res = self.path(ino).and_then(|p| {
            self.client
                .read_at(&p, ino.0, offset, size as usize)
                .map_err(errno)
        });
        reply_result!(reply, res, |d| reply.data(&d))
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = (|| {
            let h = self.handle(fh)?;
            let p = self.path(ino)?;
            if h.append {
                self.client.append(&p, ino.0, data).map_err(errno)?;
                Ok(data.len())
            } else {
                self.client.write_at(&p, ino.0, offset, data).map_err(errno)
            }
        })();
        reply_result!(reply, res, |n| reply.written(n as u32))
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered here: every write reached the servers.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.do_release(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res = self
            .path(ino)
            .and_then(|p| self.client.fsync(&p, ino.0).map_err(errno));
        reply_result!(reply, res, |_v| reply.ok())
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.table.lock().get(ino.0).is_none() {
            return reply.error(Errno::ESTALE);
        }
        reply.opened(FileHandle(self.fh()), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // The listing is taken when the kernel asks from the start (opendir,
        // rewinddir) and served from that snapshot for the later offsets, so
        // every entry present at that moment is returned exactly once.
        let list = match self.dir_snapshot(ino, fh, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (i, e) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let list = match self.dir_snapshot(ino, fh, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let Ok(dir) = self.path(ino) else {
            return reply.error(Errno::ESTALE);
        };
        let start = (offset as usize).min(list.len());
        let page = &list[start..(start + PLUS_PAGE).min(list.len())];
        let attrs = self.stat_many(&dir, page);
        let mut added = 0;
        for (k, (e, a)) in page.iter().zip(attrs).enumerate() {
            let next = (start + k) as u64 + 1;
            let attr = if e.name == "." || e.name == ".." {
                // The kernel takes no reference on these.
                let mut attr = file_attr(&NEGATIVE, false);
                attr.ino = INodeNo(e.ino);
                attr.kind = FileType::Directory;
                attr
            } else {
                match a {
                    Ok(inode) if inode.attr.ino == e.ino => file_attr(&inode.attr, false),
                    // Removed or replaced since the listing: not there any more.
                    Ok(_) | Err(sealfs_client::Errno::ENOENT) => continue,
                    // Unreadable (a server down): fail now, or end this page
                    // here and let the kernel ask again from this entry.
                    Err(err) if added == 0 => return reply.error(errno(err)),
                    Err(_) => break,
                }
            };
            if reply.add(
                attr.ino,
                next,
                &e.name,
                &self.opts.entry_ttl,
                &attr,
                Generation(0),
            ) {
                break;
            }
            added += 1;
            if e.name != "." && e.name != ".." {
                // The kernel takes a reference on every other entry it is sent.
                self.table.lock().looked_up(
                    e.ino,
                    &child(&dir, &e.name),
                    e.kind == FileType::Directory,
                );
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Namespace changes are durable when acknowledged (server sync policy).
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.client.statfs() {
            Ok(s) => {
                let bsize = if s.bsize == 0 { 4096 } else { s.bsize };
                reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, bsize, s.namemax, bsize,
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        reply_result!(reply, self.do_access(req, ino, mask), |_v| reply.ok())
    }

    // Extended attributes are not built. `ENOSYS` (what fuser's defaults
    // answer, with a warning in the log each time) tells the kernel once per
    // mount, which then answers `EOPNOTSUPP` itself without asking again
    // (the kernel's own `security.capability` lookup on the first write
    // would otherwise log a warning on every mount).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.do_create(req, parent, name, mode, umask, flags) {
            Ok((path, inode)) => {
                let fh = self.fh();
                {
                    let mut t = self.table.lock();
                    t.looked_up(inode.attr.ino, &path, inode.attr.kind == FileKind::Dir);
                    t.opened(inode.attr.ino);
                }
                self.files.lock().insert(
                    fh,
                    Handle {
                        node: inode.attr.ino,
                        append: flags & libc::O_APPEND != 0,
                    },
                );
                reply.created(
                    &self.opts.entry_ttl,
                    &file_attr(&inode.attr, false),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctls (`isatty` asks TCGETS of every file): as a plain file.
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let res = (|| {
            let _ns = self.ns.read();
            let p = self.path(ino)?;
            let cur = self.client.lstat(&p).map_err(errno)?;
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            if end > cur.attr.size {
                self.client
                    .setattr(
                        &p,
                        SetAttr {
                            size: Some(end),
                            ..SetAttr::default()
                        },
                    )
                    .map_err(errno)?;
            }
            Ok(())
        })();
        reply_result!(reply, res, |_v| reply.ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for t in [
            Timespec { sec: 0, nsec: 0 },
            Timespec {
                sec: 1_700_000_000,
                nsec: 123,
            },
            Timespec { sec: -5, nsec: 250 },
        ] {
            assert_eq!(timespec(time(t)), t);
        }
    }

    #[test]
    fn long_names_are_refused() {
        let ok = "a".repeat(255);
        let long = "a".repeat(256);
        assert!(name_str(OsStr::new(&ok)).is_ok());
        assert_eq!(name_str(OsStr::new(&long)), Err(Errno::ENAMETOOLONG));
    }
}
