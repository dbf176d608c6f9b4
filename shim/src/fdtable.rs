//! The fd table: which kernel fds are SealFS files, and their open-file
//! descriptions.
//!
//! A fixed lock-free bitmap answers "is this fd ours" with one atomic load
//! (the only cost a non-SealFS fd call pays); a lock-protected map holds
//! the entries. Dups share one [`OpenFile`] through an `Arc`, as dups share
//! one open-file description in the kernel. The close-on-exec flag lives in
//! the kernel, on the reserved fd itself.

use crate::shm;
use parking_lot::{Mutex, RwLock};
use sealfs_client::FileKind;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;

/// fds at or above this are never ours (a reserved fd this high is refused
/// with `EMFILE`).
pub const MAX_FD: usize = 1 << 16;

static BITS: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];
static TABLE: RwLock<BTreeMap<i32, Entry>> = parking_lot::const_rwlock(BTreeMap::new());

#[derive(Clone)]
enum Entry {
    File(Arc<OpenFile>),
    /// An fd the shim itself uses (log, offsets memfd): the application's
    /// `close` of it is ignored, as GekkoFS protects its internal fds.
    Internal,
}

/// The file offset of an open-file description: in the shared offsets
/// region when there is room (so forked children and exec'd images share
/// it, as on Linux), else private to this process.
pub enum Pos {
    Shared(u32, &'static AtomicU64),
    Own(AtomicU64),
}

impl Pos {
    pub fn new(at: u64) -> Pos {
        match shm::alloc() {
            Some((i, slot)) => {
                slot.store(at, Ordering::Relaxed);
                Pos::Shared(i, slot)
            }
            None => Pos::Own(AtomicU64::new(at)),
        }
    }
    pub fn get(&self) -> u64 {
        match self {
            Pos::Shared(_, s) => s.load(Ordering::Acquire),
            Pos::Own(a) => a.load(Ordering::Acquire),
        }
    }
    pub fn set(&self, v: u64) {
        match self {
            Pos::Shared(_, s) => s.store(v, Ordering::Release),
            Pos::Own(a) => a.store(v, Ordering::Release),
        }
    }
    pub fn slot(&self) -> Option<u32> {
        match self {
            Pos::Shared(i, _) => Some(*i),
            Pos::Own(_) => None,
        }
    }
}

/// One SealFS open-file description.
pub struct OpenFile {
    /// The SealFS path opened (after following final symlinks); moved by
    /// this process's own renames ([`rename_paths`]).
    path: RwLock<String>,
    pub kind: FileKind,
    pub ino: u64,
    /// Access mode and status flags (`O_APPEND`, `O_NONBLOCK`, …).
    pub flags: AtomicI32,
    pub pos: Pos,
    /// Serialises read/write/seek on this description in this process.
    pub io: Mutex<()>,
    /// `getdents64` cursor of a directory: its entries once listed, and
    /// the index of the next one.
    pub dir: Mutex<Option<(Vec<crate::dir::Ent>, usize)>>,
}

/// The name prefix of a file unlinked while open (hidden from listings).
pub const UNLINKED_PREFIX: &str = ".sealfs-unlinked-";

/// Hidden names of files this process unlinked while they were open
/// (`ops::unlink_at`): each is removed when no open description here
/// addresses it any more, or at exit.
static PENDING: Mutex<Vec<String>> = parking_lot::const_mutex(Vec::new());
static ANY_PENDING: AtomicBool = AtomicBool::new(false);

/// Defers the unlink of `hidden` to its last close in this process.
pub fn defer_unlink(hidden: String) {
    let mut p = PENDING.lock();
    if !p.contains(&hidden) {
        p.push(hidden);
    }
    ANY_PENDING.store(true, Ordering::Release);
}

/// Forgets a deferred unlink (the hidden file got its name back).
pub fn cancel_unlink(hidden: &str) {
    PENDING.lock().retain(|h| h != hidden);
}

/// Whether `p` is the hidden name of a file unlinked while open.
pub fn is_unlinked_name(p: &str) -> bool {
    p.strip_prefix('/')
        .is_some_and(|n| n.starts_with(UNLINKED_PREFIX))
}

fn unlink_hidden(p: &str) {
    let _g = crate::guard::Guard::enter();
    if let Ok(c) = crate::config::client() {
        let _ = c.unlink(p);
    }
}

impl Drop for OpenFile {
    /// A description is gone (never called with the table locked): if it
    /// was the last one of a deferred unlink, finish it.
    fn drop(&mut self) {
        if !ANY_PENDING.load(Ordering::Acquire) {
            return;
        }
        let p = self.path.get_mut().clone();
        if !PENDING.lock().contains(&p) || !open_at_path(&p).is_empty() {
            return;
        }
        {
            let mut pend = PENDING.lock();
            pend.retain(|x| *x != p);
            ANY_PENDING.store(!pend.is_empty(), Ordering::Release);
        }
        unlink_hidden(&p);
    }
}

/// `from` was renamed to `to` by this process: every open description
/// at `from` or below it follows (the kernel's descriptions follow the
/// inode; ours address a path).
pub fn rename_paths(from: &str, to: &str) {
    for (_, f) in snapshot() {
        let p = f.path();
        if p == from {
            f.set_path(to.to_string());
        } else if let Some(rest) = p
            .strip_prefix(from)
            .filter(|r| r.starts_with('/') && from != "/")
        {
            f.set_path(format!("{to}{rest}"));
        }
    }
}

/// The open descriptions of files at exactly `p`.
pub fn open_at_path(p: &str) -> Vec<Arc<OpenFile>> {
    let mut v: Vec<Arc<OpenFile>> = Vec::new();
    for (_, f) in snapshot() {
        if f.path() == p && !v.iter().any(|g| Arc::ptr_eq(g, &f)) {
            v.push(f);
        }
    }
    v
}

impl OpenFile {
    pub fn new(path: String, kind: FileKind, ino: u64, flags: i32, pos: Pos) -> OpenFile {
        OpenFile {
            path: RwLock::new(path),
            kind,
            ino,
            flags: AtomicI32::new(flags),
            pos,
            io: Mutex::new(()),
            dir: Mutex::new(None),
        }
    }
    /// The SealFS path this description addresses now.
    pub fn path(&self) -> String {
        self.path.read().clone()
    }
    pub fn set_path(&self, p: String) {
        *self.path.write() = p;
    }
    pub fn readable(&self) -> bool {
        let f = self.flags.load(Ordering::Relaxed);
        f & libc::O_PATH == 0 && matches!(f & libc::O_ACCMODE, libc::O_RDONLY | libc::O_RDWR)
    }
    pub fn writable(&self) -> bool {
        let f = self.flags.load(Ordering::Relaxed);
        f & libc::O_PATH == 0 && matches!(f & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR)
    }
}

#[inline]
fn bit(fd: i32) -> Option<(usize, u64)> {
    let u = usize::try_from(fd).ok().filter(|u| *u < MAX_FD)?;
    Some((u / 64, 1u64 << (u % 64)))
}

/// Whether `fd` is a SealFS fd or a shim-internal one: one atomic load.
#[inline(always)]
pub fn is_ours(fd: i32) -> bool {
    match bit(fd) {
        Some((w, m)) => BITS[w].load(Ordering::Acquire) & m != 0,
        None => false,
    }
}

/// The open file behind `fd`, if it is a SealFS file.
pub fn get(fd: i32) -> Option<Arc<OpenFile>> {
    if !is_ours(fd) {
        return None;
    }
    match TABLE.read().get(&fd) {
        Some(Entry::File(f)) => Some(f.clone()),
        _ => None,
    }
}

/// Whether any SealFS file is open in this process.
pub fn has_files() -> bool {
    TABLE.read().values().any(|e| matches!(e, Entry::File(_)))
}

/// Whether `fd` is one of the shim's own fds.
pub fn is_internal(fd: i32) -> bool {
    is_ours(fd) && matches!(TABLE.read().get(&fd), Some(Entry::Internal))
}

fn put(fd: i32, e: Entry) -> bool {
    let Some((w, m)) = bit(fd) else { return false };
    // A replaced entry is dropped after the lock is released (its Drop
    // may look at the table).
    let old = TABLE.write().insert(fd, e);
    drop(old);
    BITS[w].fetch_or(m, Ordering::AcqRel);
    true
}

/// Registers `fd` as a SealFS file. False if `fd` is too high to track.
pub fn insert(fd: i32, f: Arc<OpenFile>) -> bool {
    put(fd, Entry::File(f))
}

/// Registers one of the shim's own fds.
pub fn mark_internal(fd: i32) {
    put(fd, Entry::Internal);
}

/// A number high above what applications use (bash keeps to <= 255 and
/// saves fds from 10 up): the soft `RLIMIT_NOFILE` minus 100.
pub fn high_floor() -> libc::c_long {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local struct.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    (cur.min(MAX_FD as u64) as i64 - 100).max(100) as libc::c_long
}

/// Moves a socket the client just made to a high number, so an
/// application's `dup2(x, 4)` never lands on the shim's connection.
pub fn relocate_socket(fd: i32) -> i32 {
    // SAFETY: duplicating and closing a socket made by this thread's call.
    unsafe {
        let cloexec = crate::real::fcntl(fd, libc::F_GETFD, 0) & libc::FD_CLOEXEC != 0;
        let cmd = if cloexec {
            libc::F_DUPFD_CLOEXEC
        } else {
            libc::F_DUPFD
        };
        let moved = crate::real::fcntl(fd, cmd, high_floor());
        if moved < 0 {
            return fd;
        }
        crate::real::close(fd);
        moved
    }
}

/// Moves a fresh internal fd out of the application's way (to a high
/// number, close-on-exec, as GekkoFS relocates its own fds), registers it
/// and returns the new number (or `fd` itself if it cannot be moved).
pub fn relocate_internal(fd: i32) -> i32 {
    // SAFETY: duplicating and closing our own fd.
    let moved = unsafe { crate::real::fcntl(fd, libc::F_DUPFD_CLOEXEC, high_floor()) };
    let fd = if moved >= 0 {
        // SAFETY: closing the original of our own fd.
        unsafe { crate::real::close(fd) };
        moved
    } else {
        fd
    };
    mark_internal(fd);
    fd
}

/// Forgets `fd` (before the real close, so a concurrent open that gets the
/// same number is never mistaken for ours). Returns the file it was.
pub fn remove(fd: i32) -> Option<Arc<OpenFile>> {
    let (w, m) = bit(fd)?;
    let mut t = TABLE.write();
    BITS[w].fetch_and(!m, Ordering::AcqRel);
    match t.remove(&fd) {
        Some(Entry::File(f)) => Some(f),
        Some(Entry::Internal) => {
            // Internal fds are never removed this way.
            t.insert(fd, Entry::Internal);
            BITS[w].fetch_or(m, Ordering::AcqRel);
            None
        }
        None => None,
    }
}

/// Every SealFS fd in `[first, last]`.
pub fn files_in(first: u32, last: u32) -> Vec<i32> {
    let lo = i32::try_from(first).unwrap_or(i32::MAX);
    let hi = i32::try_from(last).unwrap_or(i32::MAX);
    if lo > hi {
        return Vec::new();
    }
    TABLE
        .read()
        .range(lo..=hi)
        .filter(|(_, e)| matches!(e, Entry::File(_)))
        .map(|(fd, _)| *fd)
        .collect()
}

/// The shim's own fds in `[first, last]`.
pub fn internal_in(first: u32, last: u32) -> Vec<i32> {
    let lo = i32::try_from(first).unwrap_or(i32::MAX);
    let hi = i32::try_from(last).unwrap_or(i32::MAX);
    if lo > hi {
        return Vec::new();
    }
    TABLE
        .read()
        .range(lo..=hi)
        .filter(|(_, e)| matches!(e, Entry::Internal))
        .map(|(fd, _)| *fd)
        .collect()
}

/// At process exit: finish the deferred unlinks of files still open.
pub fn exit_unlinks() {
    let pend = std::mem::take(&mut *PENDING.lock());
    ANY_PENDING.store(false, Ordering::Release);
    for p in pend {
        unlink_hidden(&p);
    }
}

/// Every SealFS fd and its file.
pub fn snapshot() -> Vec<(i32, Arc<OpenFile>)> {
    TABLE
        .read()
        .iter()
        .filter_map(|(fd, e)| match e {
            Entry::File(f) => Some((*fd, f.clone())),
            Entry::Internal => None,
        })
        .collect()
}

/// `pthread_atfork` prepare: hold the table so no other thread is inside it
/// when the address space is copied.
pub fn fork_prepare() {
    std::mem::forget(TABLE.write());
}

/// `pthread_atfork` parent: release what prepare took.
pub fn fork_parent() {
    // SAFETY: fork_prepare left the write lock held by this thread.
    unsafe { TABLE.force_unlock_write() };
}

/// `pthread_atfork` child: release the table, and the per-file locks that
/// threads which do not exist in the child may have held.
pub fn fork_child() {
    // SAFETY: fork_prepare left the write lock held; the child has only this
    // thread, so nobody else can hold it.
    unsafe { TABLE.force_unlock_write() };
    // Only the process that unlinked a file removes its hidden name.
    // SAFETY: only this thread exists in the child.
    unsafe {
        if PENDING.is_locked() {
            PENDING.force_unlock();
        }
    }
    PENDING.lock().clear();
    ANY_PENDING.store(false, Ordering::Release);
    for (_, f) in snapshot() {
        // SAFETY: in the child only this thread exists; a held lock belonged
        // to a thread that is gone, and no guard of it will ever be dropped.
        unsafe {
            if f.io.is_locked() {
                f.io.force_unlock();
            }
            if f.dir.is_locked() {
                f.dir.force_unlock();
            }
            if f.path.is_locked_exclusive() {
                f.path.force_unlock_write();
            }
            while f.path.is_locked() {
                f.path.force_unlock_read();
            }
        }
    }
}
