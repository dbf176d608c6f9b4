//! Deciding whether a path is SealFS's, and mapping it to a SealFS path.
//!
//! Absolute paths under the prefix (after lexical normalisation) map to
//! SealFS paths; relative paths and `*at(AT_FDCWD, …)` resolve against the
//! virtual cwd when it is inside SealFS; `*at` with a SealFS directory fd
//! resolve against that directory. Everything else is local.

use crate::config::config;
use crate::fdtable;
use parking_lot::RwLock;
use sealfs_client::{Errno, FileKind};
use sealfs_proto::path;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

use libc::{c_char, c_int};

static VCWD_ON: AtomicBool = AtomicBool::new(false);
static VCWD: RwLock<Option<String>> = parking_lot::const_rwlock(None);

/// Cheap pre-check (no allocation): could `(dirfd, p)` be a SealFS path?
///
/// # Safety
/// `p` is null or a NUL-terminated string.
#[inline(always)]
pub unsafe fn maybe(dirfd: c_int, p: *const c_char) -> bool {
    if p.is_null() {
        return dirfd != libc::AT_FDCWD && fdtable::is_ours(dirfd);
    }
    if never_user_memory(p) {
        // Not ours: the kernel answers EFAULT instead of a crash here.
        return false;
    }
    // SAFETY: `p` is a valid C string (caller), so its first byte is readable.
    let first = unsafe { *p } as u8;
    if first == b'/' {
        // SAFETY: as above.
        unsafe { has_prefix(p) }
    } else if dirfd == libc::AT_FDCWD {
        VCWD_ON.load(Ordering::Relaxed)
    } else {
        fdtable::is_ours(dirfd)
    }
}

/// Whether `p` can never point into this process's memory: the first
/// page, or at or above 2^56 (beyond the user half of the address space
/// even with 5-level paging). Such a path is left to the kernel, which
/// answers `EFAULT`, as the caller expects; any other bad pointer faults
/// here as it would inside glibc.
#[inline(always)]
pub fn never_user_memory(p: *const c_char) -> bool {
    let a = p as usize;
    !(4096..1 << 56).contains(&a)
}

/// Whether the C string `p` starts with the prefix followed by `/` or its end.
///
/// # Safety
/// `p` is a NUL-terminated string.
#[inline]
unsafe fn has_prefix(p: *const c_char) -> bool {
    let pre = config().prefix.as_bytes();
    for (i, b) in pre.iter().enumerate() {
        // SAFETY: we stop at the first mismatch, so never read past the NUL.
        if unsafe { *p.add(i) } as u8 != *b {
            return false;
        }
    }
    // SAFETY: all prefix bytes matched, so index pre.len() is at most the NUL.
    matches!(unsafe { *p.add(pre.len()) } as u8, b'/' | 0)
}

/// Maps a normalised absolute local path to a SealFS path if it is under
/// the prefix.
pub fn strip(abs: &str) -> Option<String> {
    let pre = &config().prefix;
    if !path::is_within(abs, pre) {
        return None;
    }
    let rest = &abs[pre.len()..];
    Some(if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    })
}

/// Where a path leads.
pub enum Loc {
    /// Not SealFS: pass to the real function untouched.
    Local,
    /// This SealFS path (normalised).
    Seal(String),
}

/// `loc`, after checking that a caller other than root may search every
/// directory its lookup walks through from `from` (see
/// [`crate::perm::may_search`]).
fn searchable(loc: Loc, from: &str) -> Result<Loc, Errno> {
    if let (Loc::Seal(p), Some((uid, gid))) = (&loc, crate::perm::caller()) {
        crate::perm::may_search(crate::config::client()?, from, p, uid, gid)?;
    }
    Ok(loc)
}

/// Resolves `(dirfd, p)`; `p` non-null. `Err` for a SealFS-bound path that
/// is malformed (not UTF-8, too long, …) or a dirfd that is no directory.
///
/// # Safety
/// `p` is a NUL-terminated string.
pub unsafe fn resolve(dirfd: c_int, p: *const c_char) -> Result<Loc, Errno> {
    if p.is_null() || never_user_memory(p) {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: caller guarantees a C string.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    let s = std::str::from_utf8(bytes);
    if bytes.first() == Some(&b'/') {
        let Ok(s) = s else { return Ok(Loc::Local) };
        let n = match path::normalize(s) {
            Ok(n) => n,
            // Under the prefix (a name over 255 bytes, a path over
            // PATH_MAX): SealFS's error, not the kernel's ENOENT.
            // SAFETY: `p` is a C string (checked above).
            Err(e) if unsafe { has_prefix(p) } => return Err(e),
            Err(_) => return Ok(Loc::Local),
        };
        return searchable(strip(&n).map_or(Loc::Local, Loc::Seal), "/");
    }
    let base = if dirfd == libc::AT_FDCWD {
        match VCWD.read().clone() {
            Some(c) => c,
            None => return Ok(Loc::Local),
        }
    } else {
        match fdtable::get(dirfd) {
            Some(f) if f.kind == FileKind::Dir => f.path(),
            Some(_) => {
                if bytes.is_empty() {
                    return Err(Errno::ENOENT);
                }
                return Err(Errno::ENOTDIR);
            }
            None => return Ok(Loc::Local),
        }
    };
    let s = s.map_err(|_| Errno::EINVAL)?;
    if s.is_empty() {
        return Err(Errno::ENOENT);
    }
    let joined = path::join(&base, s)?;
    searchable(Loc::Seal(joined), &base)
}

/// The virtual cwd (a SealFS path) if the cwd is inside SealFS.
pub fn vcwd() -> Option<String> {
    if !VCWD_ON.load(Ordering::Relaxed) {
        return None;
    }
    VCWD.read().clone()
}

/// Moves the virtual cwd into SealFS (`Some`) or back to the kernel's.
pub fn set_vcwd(p: Option<String>) {
    let mut g = VCWD.write();
    VCWD_ON.store(p.is_some(), Ordering::Relaxed);
    *g = p;
}

/// `from` was renamed to `to` by this process: a virtual cwd at or below
/// it follows, as the kernel's cwd follows its inode.
pub fn rename_vcwd(from: &str, to: &str) {
    let mut g = VCWD.write();
    if let Some(c) = g.as_mut() {
        if c == from {
            *c = to.to_string();
        } else if let Some(rest) = c
            .strip_prefix(from)
            .filter(|r| r.starts_with('/') && from != "/")
        {
            *c = format!("{to}{rest}");
        }
    }
}

/// The local form of a SealFS path (`/sealfs/a` for `/a`).
pub fn local(p: &str) -> String {
    let pre = &config().prefix;
    if p == "/" {
        pre.clone()
    } else {
        format!("{pre}{p}")
    }
}

pub fn fork_prepare() {
    std::mem::forget(VCWD.write());
}

pub fn fork_release() {
    // SAFETY: fork_prepare left the write lock held by this thread (parent),
    // or by the only thread there is (child).
    unsafe { VCWD.force_unlock_write() };
}
