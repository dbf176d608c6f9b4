//! The operations behind the hooks. Each returns [`Op`]: `None` to pass the
//! call to the real libc function untouched, `Some(Ok(v))` when SealFS
//! handled it, `Some(Err(errno))` when it failed as a local file system
//! would. Raw pointers are checked here; the hooks stay thin.

use crate::attr;
use crate::config::{client, log, logging};
use crate::fdtable::{self, OpenFile, Pos};
use crate::paths::{self, Loc};
use crate::perm;
use crate::real;
use libc::{c_char, c_int, c_uint, c_void};
use sealfs_client::{Client, Errno, FileKind, Inode, SetAttr, TimeSet, Timespec};
use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `None`: not ours, pass through. `Some(result)`: handled.
pub type Op<T> = Option<Result<T, Errno>>;

/// Longest single read or write sent at once (larger calls are short).
const MAX_IO: usize = 64 << 20;

macro_rules! seal {
    ($dirfd:expr, $p:expr) => {
        // SAFETY: the hooks pass a NUL-terminated path (checked non-null).
        match unsafe { paths::resolve($dirfd, $p) } {
            Ok(Loc::Local) => return None,
            Ok(Loc::Seal(s)) => s,
            Err(e) => return Some(Err(e)),
        }
    };
}

macro_rules! file {
    ($fd:expr) => {
        match fdtable::get($fd) {
            Some(f) => f,
            None => return None,
        }
    };
}

pub fn errno() -> Errno {
    // SAFETY: reading this thread's errno.
    Errno(unsafe { *libc::__errno_location() })
}

pub fn set_errno(e: Errno) {
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = e.0 };
}

fn ids() -> (u32, u32) {
    // SAFETY: cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

fn umask() -> u32 {
    // SAFETY: umask cannot fail; the second call restores the mask (there
    // is no way to read it without setting it).
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    }
}

fn blksize(c: &Client) -> u32 {
    c.chunk_size().clamp(4096, 4 << 20)
}

fn trace(what: &str, p: &str, r: &Result<impl std::fmt::Debug, Errno>) {
    if logging() {
        log(&format!("{what} {p} -> {r:?}"));
    }
}

// ---------------------------------------------------------------- open/close

/// Opens the SealFS path `p` and reserves a kernel fd for it.
pub fn open_seal(p: &str, flags: c_int, mode: u32) -> Result<c_int, Errno> {
    if flags & libc::O_TMPFILE == libc::O_TMPFILE {
        return Err(Errno(libc::EOPNOTSUPP));
    }
    let c = client()?;
    let (uid, gid) = ids();
    let (rp, ino) = if flags & libc::O_PATH != 0 {
        if flags & libc::O_NOFOLLOW != 0 {
            (p.to_string(), c.lstat(p)?)
        } else {
            c.open_resolved(p, libc::O_RDONLY | (flags & libc::O_DIRECTORY), 0, uid, gid)?
        }
    } else {
        if perm::applies_to(uid) {
            perm::may_open(c, p, flags, uid, gid)?;
        }
        let mode = if flags & libc::O_CREAT != 0 {
            mode & 0o7777 & !umask()
        } else {
            0
        };
        c.open_resolved(p, flags, mode, uid, gid)?
    };
    let cloexec = flags & libc::O_CLOEXEC;
    // SAFETY: real open of a NUL-terminated literal.
    let kfd = unsafe { real::open(c"/dev/null".as_ptr(), libc::O_RDONLY | cloexec, 0) };
    if kfd < 0 {
        return Err(errno());
    }
    let keep =
        flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC);
    let of = OpenFile::new(rp, ino.attr.kind, ino.attr.ino, keep, Pos::new(0));
    if !fdtable::insert(kfd, Arc::new(of)) {
        // SAFETY: closing the fd we just opened.
        unsafe { real::close(kfd) };
        return Err(Errno::EMFILE);
    }
    if kfd <= 2 {
        crate::stdio::proxy_std(kfd);
    }
    Ok(kfd)
}

pub fn open_at(dirfd: c_int, p: *const c_char, flags: c_int, mode: u32) -> Op<c_int> {
    let p = seal!(dirfd, p);
    let r = open_seal(&p, flags, mode);
    trace("open", &p, &r);
    Some(r)
}

pub fn close(fd: c_int) -> Op<c_int> {
    if fdtable::is_internal(fd) {
        return Some(Ok(0));
    }
    fdtable::remove(fd)?;
    // SAFETY: closing the reserved kernel fd of a file we just forgot.
    unsafe { real::close(fd) };
    Some(Ok(0))
}

pub fn close_range(first: c_uint, last: c_uint, flags: c_int) -> Op<c_int> {
    let files = fdtable::files_in(first, last);
    let internal = fdtable::internal_in(first, last);
    if files.is_empty() && internal.is_empty() {
        return None;
    }
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 {
        return None; // the kernel keeps close-on-exec for us
    }
    for fd in files {
        fdtable::remove(fd);
    }
    let mut lo = first;
    for i in internal {
        let i = i as u32;
        if i > lo {
            // SAFETY: closing a range that holds none of the shim's fds.
            let r = unsafe { real::close_range(lo, i - 1, flags) };
            if r != 0 {
                return Some(Err(errno()));
            }
        }
        lo = i + 1;
    }
    if lo <= last {
        // SAFETY: as above.
        if unsafe { real::close_range(lo, last, flags) } != 0 {
            return Some(Err(errno()));
        }
    }
    Some(Ok(0))
}

// ---------------------------------------------------------------- data

pub fn read_file(f: &OpenFile, buf: &mut [u8], at: Option<u64>) -> Result<usize, Errno> {
    if f.kind == FileKind::Dir {
        return Err(Errno::EISDIR);
    }
    if !f.readable() {
        return Err(Errno::EBADF);
    }
    let c = client()?;
    let n = buf.len().min(MAX_IO);
    if n == 0 {
        return Ok(0);
    }
    match at {
        Some(off) => {
            let d = c.read_at(&f.path(), f.ino, off, n)?;
            buf[..d.len()].copy_from_slice(&d);
            Ok(d.len())
        }
        None => {
            let _g = f.io.lock();
            let pos = f.pos.get();
            let d = c.read_at(&f.path(), f.ino, pos, n)?;
            buf[..d.len()].copy_from_slice(&d);
            f.pos.set(pos + d.len() as u64);
            Ok(d.len())
        }
    }
}

pub fn write_file(f: &OpenFile, data: &[u8], at: Option<u64>) -> Result<usize, Errno> {
    if f.kind == FileKind::Dir || !f.writable() {
        return Err(Errno::EBADF);
    }
    if data.is_empty() {
        return Ok(0);
    }
    let c = client()?;
    let data = &data[..data.len().min(MAX_IO)];
    let append = f.flags.load(Ordering::Relaxed) & libc::O_APPEND != 0;
    if append {
        // As on Linux, pwrite on an O_APPEND file appends too.
        let _g = f.io.lock();
        let off = c.append(&f.path(), f.ino, data)?;
        if at.is_none() {
            f.pos.set(off + data.len() as u64);
        }
        return Ok(data.len());
    }
    match at {
        Some(off) => c.write_at(&f.path(), f.ino, off, data),
        None => {
            let _g = f.io.lock();
            let pos = f.pos.get();
            let n = c.write_at(&f.path(), f.ino, pos, data)?;
            f.pos.set(pos + n as u64);
            Ok(n)
        }
    }
}

/// # Safety
/// `buf` is valid for `n` bytes of writes.
pub unsafe fn read(fd: c_int, buf: *mut c_void, n: usize, at: Option<i64>) -> Op<isize> {
    let f = file!(fd);
    if let Some(o) = at {
        if o < 0 {
            return Some(Err(Errno::EINVAL));
        }
    }
    if n == 0 {
        return Some(Ok(0));
    }
    // SAFETY: caller guarantees `buf` holds `n` writable bytes.
    let b = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) };
    Some(read_file(&f, b, at.map(|o| o as u64)).map(|n| n as isize))
}

/// # Safety
/// `buf` is valid for `n` bytes of reads.
pub unsafe fn write(fd: c_int, buf: *const c_void, n: usize, at: Option<i64>) -> Op<isize> {
    let f = file!(fd);
    if let Some(o) = at {
        if o < 0 {
            return Some(Err(Errno::EINVAL));
        }
    }
    if n == 0 {
        return Some(Ok(0));
    }
    // SAFETY: caller guarantees `buf` holds `n` readable bytes.
    let b = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) };
    Some(write_file(&f, b, at.map(|o| o as u64)).map(|n| n as isize))
}

fn iov_slices<'a>(iov: *const libc::iovec, cnt: c_int) -> Result<&'a [libc::iovec], Errno> {
    if !(0..=libc::UIO_MAXIOV).contains(&cnt) {
        return Err(Errno::EINVAL);
    }
    if cnt == 0 {
        return Ok(&[]);
    }
    // SAFETY: the caller passed `cnt` iovecs at `iov`.
    Ok(unsafe { std::slice::from_raw_parts(iov, cnt as usize) })
}

/// # Safety
/// `iov` holds `cnt` valid iovecs.
pub unsafe fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int, at: Option<i64>) -> Op<isize> {
    let f = file!(fd);
    Some((|| {
        let v = iov_slices(iov, cnt)?;
        let total: usize = v.iter().map(|x| x.iov_len).sum();
        let mut tmp = vec![0u8; total.min(MAX_IO)];
        let n = read_file(&f, &mut tmp, at.map(|o| o as u64))?;
        let mut done = 0;
        for x in v {
            if done == n {
                break;
            }
            let k = x.iov_len.min(n - done);
            // SAFETY: each iovec is valid for iov_len bytes (caller).
            unsafe {
                std::ptr::copy_nonoverlapping(tmp.as_ptr().add(done), x.iov_base.cast::<u8>(), k)
            };
            done += k;
        }
        Ok(n as isize)
    })())
}

/// # Safety
/// `iov` holds `cnt` valid iovecs.
pub unsafe fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int, at: Option<i64>) -> Op<isize> {
    let f = file!(fd);
    Some((|| {
        let v = iov_slices(iov, cnt)?;
        let mut tmp = Vec::new();
        for x in v {
            if x.iov_len > 0 {
                // SAFETY: each iovec is valid for iov_len bytes (caller).
                tmp.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(x.iov_base.cast::<u8>(), x.iov_len)
                });
            }
        }
        write_file(&f, &tmp, at.map(|o| o as u64)).map(|n| n as isize)
    })())
}

pub fn lseek(fd: c_int, off: i64, whence: c_int) -> Op<i64> {
    let f = file!(fd);
    Some((|| {
        let _g = f.io.lock();
        let cur = f.pos.get() as i64;
        let size = || -> Result<i64, Errno> { Ok(client()?.lstat(&f.path())?.attr.size as i64) };
        let new = match whence {
            libc::SEEK_SET => off,
            libc::SEEK_CUR => cur.checked_add(off).ok_or(Errno::EOVERFLOW)?,
            libc::SEEK_END => size()?.checked_add(off).ok_or(Errno::EOVERFLOW)?,
            libc::SEEK_DATA => {
                if off >= size()? {
                    return Err(Errno(libc::ENXIO));
                }
                off
            }
            libc::SEEK_HOLE => {
                let s = size()?;
                if off >= s {
                    return Err(Errno(libc::ENXIO));
                }
                s
            }
            _ => return Err(Errno::EINVAL),
        };
        if new < 0 {
            return Err(Errno::EINVAL);
        }
        if f.kind == FileKind::Dir {
            let mut d = f.dir.lock();
            if let Some((_, i)) = d.as_mut() {
                *i = new as usize;
            }
        }
        f.pos.set(new as u64);
        Ok(new)
    })())
}

pub fn ftruncate(fd: c_int, len: i64) -> Op<c_int> {
    let f = file!(fd);
    Some((|| {
        if len < 0 || f.kind != FileKind::File || !f.writable() {
            return Err(Errno::EINVAL);
        }
        client()?.truncate(&f.path(), len as u64)?;
        Ok(0)
    })())
}

pub fn truncate(p: *const c_char, len: i64) -> Op<c_int> {
    let p = seal!(libc::AT_FDCWD, p);
    Some((|| {
        if len < 0 {
            return Err(Errno::EINVAL);
        }
        let c = client()?;
        let i = c.stat(&p)?;
        if i.attr.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        if let Some((uid, gid)) = perm::caller() {
            perm::check(&i, perm::W, uid, gid)?;
        }
        c.truncate(&p, len as u64)?;
        Ok(0)
    })())
}

pub fn fsync(fd: c_int) -> Op<c_int> {
    let f = file!(fd);
    Some((|| {
        if f.kind == FileKind::File {
            client()?.fsync(&f.path(), f.ino)?;
        }
        Ok(0)
    })())
}

pub fn fadvise(fd: c_int) -> Op<c_int> {
    let _f = file!(fd);
    Some(Ok(0))
}

pub fn fallocate(fd: c_int, mode: c_int, off: i64, len: i64) -> Op<c_int> {
    let f = file!(fd);
    Some((|| {
        if off < 0 || len <= 0 {
            return Err(Errno::EINVAL);
        }
        if mode & !libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        if !f.writable() {
            return Err(Errno::EBADF);
        }
        if f.kind != FileKind::File {
            return Err(Errno(libc::ENODEV));
        }
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
            return Ok(0);
        }
        let c = client()?;
        let end = off.checked_add(len).ok_or(Errno::EFBIG)? as u64;
        if c.lstat(&f.path())?.attr.size < end {
            c.truncate(&f.path(), end)?;
        }
        Ok(0)
    })())
}

fn io_read(fd: c_int, buf: &mut [u8], at: Option<i64>) -> Result<usize, Errno> {
    if let Some(f) = fdtable::get(fd) {
        return read_file(&f, buf, at.map(|o| o as u64));
    }
    // SAFETY: `buf` is a valid slice.
    let r = unsafe {
        match at {
            Some(o) => real::pread64(fd, buf.as_mut_ptr().cast(), buf.len(), o),
            None => real::read(fd, buf.as_mut_ptr().cast(), buf.len()),
        }
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

fn io_write_all(fd: c_int, mut data: &[u8], mut at: Option<i64>) -> Result<(), Errno> {
    let ours = fdtable::get(fd);
    while !data.is_empty() {
        let n = match &ours {
            Some(f) => write_file(f, data, at.map(|o| o as u64))?,
            None => {
                // SAFETY: `data` is a valid slice.
                let r = unsafe {
                    match at {
                        Some(o) => real::pwrite64(fd, data.as_ptr().cast(), data.len(), o),
                        None => real::write(fd, data.as_ptr().cast(), data.len()),
                    }
                };
                if r < 0 {
                    let e = errno();
                    if e == Errno(libc::EINTR) {
                        continue;
                    }
                    return Err(e);
                }
                r as usize
            }
        };
        if n == 0 {
            return Err(Errno::EIO);
        }
        data = &data[n..];
        at = at.map(|o| o + n as i64);
    }
    Ok(())
}

/// `copy_file_range`/`sendfile` when either fd is ours: a read/write loop.
///
/// # Safety
/// `off_in`/`off_out` are null or valid.
pub unsafe fn copy_range(
    fd_in: c_int,
    off_in: *mut i64,
    fd_out: c_int,
    off_out: *mut i64,
    len: usize,
) -> Op<isize> {
    if fdtable::get(fd_in).is_none() && fdtable::get(fd_out).is_none() {
        return None;
    }
    Some((|| {
        let mut buf = vec![0u8; len.min(1 << 20)];
        let mut total = 0usize;
        while total < len {
            let want = (len - total).min(buf.len());
            // SAFETY: the offset pointers are null or valid (caller).
            let ai = if off_in.is_null() {
                None
            } else {
                Some(unsafe { *off_in })
            };
            // SAFETY: as above.
            let ao = if off_out.is_null() {
                None
            } else {
                Some(unsafe { *off_out })
            };
            let n = match io_read(fd_in, &mut buf[..want], ai) {
                Ok(n) => n,
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            };
            if n == 0 {
                break;
            }
            if let Err(e) = io_write_all(fd_out, &buf[..n], ao) {
                if total == 0 {
                    return Err(e);
                }
                break;
            }
            // SAFETY: as above.
            unsafe {
                if !off_in.is_null() {
                    *off_in += n as i64;
                }
                if !off_out.is_null() {
                    *off_out += n as i64;
                }
            }
            total += n;
        }
        Ok(total as isize)
    })())
}

// ---------------------------------------------------------------- attributes

fn stat_path(p: &str, follow: bool) -> Result<Inode, Errno> {
    let c = client()?;
    if follow {
        c.stat(p)
    } else {
        c.lstat(p)
    }
}

fn stat_file(f: &OpenFile) -> Result<Inode, Errno> {
    let path = f.path();
    let mut i = client()?.lstat(&path)?;
    if i.attr.ino != f.ino {
        return Err(Errno::ESTALE);
    }
    if fdtable::is_unlinked_name(&path) {
        // Unlinked while open (kept under a hidden name until the last
        // close): no name links to it any more, as Linux reports.
        i.attr.nlink = 0;
    }
    Ok(i)
}

/// # Safety
/// `st` points to a writable `struct stat`.
pub unsafe fn fstat(fd: c_int, st: *mut libc::stat) -> Op<c_int> {
    let f = file!(fd);
    Some((|| {
        let i = stat_file(&f)?;
        // SAFETY: caller guarantees a writable struct.
        attr::fill_stat(unsafe { &mut *st }, &i, blksize(client()?));
        Ok(0)
    })())
}

/// What `(dirfd, p, flags)` names for the `*at` stat-like calls: an open
/// file (`AT_EMPTY_PATH` with an empty path) or a path.
enum Target {
    Fd(Arc<OpenFile>),
    Path(String, bool),
}

/// # Safety
/// `p` is a NUL-terminated string.
unsafe fn target(dirfd: c_int, p: *const c_char, flags: c_int) -> Op<Target> {
    if p.is_null() {
        return Some(Err(Errno(libc::EFAULT)));
    }
    // SAFETY: `p` is a C string (caller).
    let empty = unsafe { *p } == 0;
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        if dirfd == libc::AT_FDCWD {
            return paths::vcwd().map(|c| Ok(Target::Path(c, true)));
        }
        return fdtable::get(dirfd).map(|f| Ok(Target::Fd(f)));
    }
    let s = seal!(dirfd, p);
    Some(Ok(Target::Path(s, flags & libc::AT_SYMLINK_NOFOLLOW == 0)))
}

fn stat_target(t: &Target) -> Result<Inode, Errno> {
    match t {
        Target::Fd(f) => stat_file(f),
        Target::Path(p, follow) => stat_path(p, *follow),
    }
}

/// # Safety
/// `p` is a C string, `st` a writable `struct stat`.
pub unsafe fn stat_at(
    dirfd: c_int,
    p: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let t = match unsafe { target(dirfd, p, flags) }? {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    let r = (|| {
        let i = stat_target(&t)?;
        // SAFETY: caller guarantees a writable struct.
        attr::fill_stat(unsafe { &mut *st }, &i, blksize(client()?));
        Ok(0)
    })();
    if let Target::Path(p, _) = &t {
        trace("stat", p, &r);
    }
    Some(r)
}

/// # Safety
/// `p` is a C string, `sx` a writable `struct statx`.
pub unsafe fn statx(
    dirfd: c_int,
    p: *const c_char,
    flags: c_int,
    sx: *mut libc::statx,
) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let t = match unsafe { target(dirfd, p, flags) }? {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    Some((|| {
        let i = stat_target(&t)?;
        // SAFETY: caller guarantees a writable struct.
        attr::fill_statx(unsafe { &mut *sx }, &i, blksize(client()?));
        Ok(0)
    })())
}

fn check_access(i: &Inode, mode: c_int, effective: bool) -> Result<(), Errno> {
    if mode & !(libc::R_OK | libc::W_OK | libc::X_OK) != 0 {
        return Err(Errno::EINVAL);
    }
    if mode == libc::F_OK {
        return Ok(());
    }
    // SAFETY: these cannot fail.
    let (uid, gid) = unsafe {
        if effective {
            (libc::geteuid(), libc::getegid())
        } else {
            (libc::getuid(), libc::getgid())
        }
    };
    if uid == 0 {
        if mode & libc::X_OK != 0 && i.attr.kind != FileKind::Dir && i.attr.mode & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
        return Ok(());
    }
    perm::check(i, mode as u32, uid, gid)
}

/// # Safety
/// `p` is a C string.
pub unsafe fn access_at(dirfd: c_int, p: *const c_char, mode: c_int, flags: c_int) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let t = match unsafe { target(dirfd, p, flags) }? {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    Some((|| {
        let i = stat_target(&t)?;
        check_access(&i, mode, flags & libc::AT_EACCESS != 0)?;
        Ok(0)
    })())
}

/// The path to change for `(dirfd, p)`, following a final symlink if asked.
fn follow(p: String, follow: bool) -> Result<String, Errno> {
    if !follow {
        return Ok(p);
    }
    let c = client()?;
    let (uid, gid) = ids();
    Ok(c.open_resolved(&p, libc::O_RDONLY, 0, uid, gid)?.0)
}

fn setattr_target(t: Target, set: SetAttr) -> Result<c_int, Errno> {
    let c = client()?;
    let p = match t {
        Target::Fd(f) => f.path(),
        Target::Path(p, fl) => follow(p, fl)?,
    };
    if let Some((uid, gid)) = perm::caller() {
        perm::may_setattr(&c.lstat(&p)?, &set, uid, gid)?;
    }
    c.setattr(&p, set)?;
    Ok(0)
}

/// # Safety
/// `p` is a C string.
pub unsafe fn chmod_at(dirfd: c_int, p: *const c_char, mode: u32, flags: c_int) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let t = match unsafe { target(dirfd, p, flags) }? {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    Some(setattr_target(
        t,
        SetAttr {
            mode: Some(mode & 0o7777),
            ..Default::default()
        },
    ))
}

pub fn fchmod(fd: c_int, mode: u32) -> Op<c_int> {
    let f = file!(fd);
    Some(setattr_target(
        Target::Fd(f),
        SetAttr {
            mode: Some(mode & 0o7777),
            ..Default::default()
        },
    ))
}

fn owner(uid: u32, gid: u32) -> SetAttr {
    SetAttr {
        uid: (uid != u32::MAX).then_some(uid),
        gid: (gid != u32::MAX).then_some(gid),
        ..Default::default()
    }
}

/// # Safety
/// `p` is a C string.
pub unsafe fn chown_at(
    dirfd: c_int,
    p: *const c_char,
    uid: u32,
    gid: u32,
    flags: c_int,
) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let t = match unsafe { target(dirfd, p, flags) }? {
        Ok(t) => t,
        Err(e) => return Some(Err(e)),
    };
    Some(setattr_target(t, owner(uid, gid)))
}

pub fn fchown(fd: c_int, uid: u32, gid: u32) -> Op<c_int> {
    let f = file!(fd);
    Some(setattr_target(Target::Fd(f), owner(uid, gid)))
}

fn time_of(t: &libc::timespec) -> Result<Option<TimeSet>, Errno> {
    if t.tv_nsec == libc::UTIME_NOW {
        return Ok(Some(TimeSet::Now));
    }
    if t.tv_nsec == libc::UTIME_OMIT {
        return Ok(None);
    }
    if !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    Ok(Some(TimeSet::At(Timespec {
        sec: t.tv_sec,
        nsec: t.tv_nsec as u32,
    })))
}

/// # Safety
/// `ts` is null or two timespecs.
unsafe fn times(ts: *const libc::timespec) -> Result<SetAttr, Errno> {
    if ts.is_null() {
        return Ok(SetAttr {
            atime: Some(TimeSet::Now),
            mtime: Some(TimeSet::Now),
            ..Default::default()
        });
    }
    // SAFETY: caller guarantees two timespecs.
    let (a, m) = unsafe { (&*ts, &*ts.add(1)) };
    Ok(SetAttr {
        atime: time_of(a)?,
        mtime: time_of(m)?,
        ..Default::default()
    })
}

/// `utimensat`; `p` may be null (then `dirfd` itself, as Linux allows).
///
/// # Safety
/// `p` is null or a C string; `ts` null or two timespecs.
pub unsafe fn utimens_at(
    dirfd: c_int,
    p: *const c_char,
    ts: *const libc::timespec,
    flags: c_int,
) -> Op<c_int> {
    let t = if p.is_null() {
        Target::Fd(file!(dirfd))
    } else {
        // SAFETY: forwarded caller guarantees.
        match unsafe { target(dirfd, p, flags) }? {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        }
    };
    // SAFETY: forwarded caller guarantees.
    let set = match unsafe { times(ts) } {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    if set.atime.is_none() && set.mtime.is_none() {
        return Some(stat_target(&t).map(|_| 0));
    }
    Some(setattr_target(t, set))
}

/// Converts `timeval[2]` (or null) into a `timespec[2]` for `utimens_at`.
///
/// # Safety
/// `tv` is null or two timevals.
pub unsafe fn tv_to_ts(tv: *const libc::timeval) -> Option<[libc::timespec; 2]> {
    if tv.is_null() {
        return None;
    }
    // SAFETY: caller guarantees two timevals.
    let (a, m) = unsafe { (&*tv, &*tv.add(1)) };
    Some([
        libc::timespec {
            tv_sec: a.tv_sec,
            tv_nsec: a.tv_usec * 1000,
        },
        libc::timespec {
            tv_sec: m.tv_sec,
            tv_nsec: m.tv_usec * 1000,
        },
    ])
}

// ---------------------------------------------------------------- namespace

/// # Safety
/// `p` is a C string.
pub unsafe fn mkdir_at(dirfd: c_int, p: *const c_char, mode: u32) -> Op<c_int> {
    let p = seal!(dirfd, p);
    let r = (|| {
        let (uid, gid) = ids();
        let c = client()?;
        if perm::applies_to(uid) {
            perm::may_change_dir(c, &p, uid, gid)?;
        }
        c.mkdir(&p, mode & 0o7777 & !umask(), uid, gid)?;
        Ok(0)
    })();
    trace("mkdir", &p, &r);
    Some(r)
}

/// Linux's answer to `rmdir` of a path whose last component is `.`
/// (`EINVAL`) or `..` (`ENOTEMPTY`), which normalisation would otherwise
/// turn into the directory itself or its parent.
fn rmdir_dot_errno(raw: &[u8]) -> Option<Errno> {
    let trimmed = match raw.iter().rposition(|&b| b != b'/') {
        Some(i) => &raw[..=i],
        None => return None,
    };
    let last = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    match last {
        b"." => Some(Errno::EINVAL),
        b".." => Some(Errno::ENOTEMPTY),
        _ => None,
    }
}

/// The regular files open at `p` in this process.
fn open_files_at(p: &str) -> Vec<Arc<OpenFile>> {
    fdtable::open_at_path(p)
        .into_iter()
        .filter(|f| f.kind == FileKind::File)
        .collect()
}

/// If files are `open` at `p` in this process, renames `p` to a hidden name
/// whose unlink waits for their last close (NFS's "silly rename"), so the
/// data stays readable through the open fds as on Linux, and returns
/// the hidden name. The hidden name lives in the root, not
/// the file's directory, so an `rmdir` of that directory still succeeds.
fn hide_open(c: &Client, p: &str, open: &[Arc<OpenFile>]) -> Result<Option<String>, Errno> {
    let Some(first) = open.first() else {
        return Ok(None);
    };
    let hidden = format!(
        "/{}{:x}-{}",
        fdtable::UNLINKED_PREFIX,
        first.ino,
        std::process::id()
    );
    c.rename(p, &hidden, 0)?;
    for f in open {
        f.set_path(hidden.clone());
    }
    fdtable::defer_unlink(hidden.clone());
    Ok(Some(hidden))
}

/// Undoes [`hide_open`] (the operation it made room for failed).
fn unhide(c: &Client, p: &str, hidden: &str, open: &[Arc<OpenFile>]) {
    if c.rename(hidden, p, libc::RENAME_NOREPLACE).is_ok() {
        for f in open {
            f.set_path(p.to_string());
        }
        fdtable::cancel_unlink(hidden);
    }
}

/// # Safety
/// `p` is a C string.
pub unsafe fn unlink_at(dirfd: c_int, p: *const c_char, flags: c_int) -> Op<c_int> {
    let raw = p;
    let p = seal!(dirfd, p);
    let r = (|| {
        if flags & !libc::AT_REMOVEDIR != 0 {
            return Err(Errno::EINVAL);
        }
        let c = client()?;
        if flags & libc::AT_REMOVEDIR != 0 {
            // SAFETY: `seal!` checked the hook's path (non-null, NUL-terminated).
            let raw = unsafe { CStr::from_ptr(raw) };
            if let Some(e) = rmdir_dot_errno(raw.to_bytes()) {
                return Err(e);
            }
        }
        if let Some((uid, gid)) = perm::caller() {
            perm::may_delete(c, &p, uid, gid)?;
        }
        if flags & libc::AT_REMOVEDIR != 0 {
            c.rmdir(&p)?;
            return Ok(0);
        }
        if hide_open(c, &p, &open_files_at(&p))?.is_some() {
            return Ok(0);
        }
        c.unlink(&p)?;
        Ok(0)
    })();
    trace("unlink", &p, &r);
    Some(r)
}

/// # Safety
/// `a` and `b` are C strings.
pub unsafe fn rename_at(
    da: c_int,
    a: *const c_char,
    db: c_int,
    b: *const c_char,
    flags: c_uint,
) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let (la, lb) = unsafe { (paths::resolve(da, a), paths::resolve(db, b)) };
    let (la, lb) = match (la, lb) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
    };
    match (la, lb) {
        (Loc::Local, Loc::Local) => None,
        (Loc::Seal(x), Loc::Seal(y)) => {
            // `d/.` or `d/..` on either side: Linux refuses (EINVAL or
            // EBUSY), where normalisation would rename `d` or its parent.
            // SAFETY: `resolve` accepted both, so both are C strings.
            let dot = |p: *const c_char| {
                rmdir_dot_errno(unsafe { CStr::from_ptr(p) }.to_bytes()).is_some()
            };
            if dot(a) || dot(b) {
                return Some(Err(Errno::EINVAL));
            }
            let r = client()
                .and_then(|c| {
                    if let Some((uid, gid)) = perm::caller() {
                        perm::may_delete(c, &x, uid, gid)?;
                        perm::may_change_dir(c, &y, uid, gid)?;
                    }
                    // A file open here at the destination keeps its data
                    // for its fds, as if the rename had unlinked it.
                    // The source is looked up (one request) only when a
                    // file is open there: a rename whose source is missing
                    // must not move that file away.
                    let open = if x != y && flags & libc::RENAME_NOREPLACE == 0 {
                        open_files_at(&y)
                    } else {
                        Vec::new()
                    };
                    let hidden = if !open.is_empty() && c.lstat(&x).is_ok() {
                        hide_open(c, &y, &open)?
                    } else {
                        None
                    };
                    let r = c.rename(&x, &y, flags);
                    if let (Err(_), Some(h)) = (&r, &hidden) {
                        unhide(c, &y, h, &open);
                    }
                    r
                })
                .map(|_| 0);
            trace("rename", &format!("{x} {y}"), &r);
            if r.is_ok() {
                // Open descriptions and the cwd follow the renamed path.
                fdtable::rename_paths(&x, &y);
                paths::rename_vcwd(&x, &y);
            }
            Some(r)
        }
        _ => Some(Err(Errno::EXDEV)),
    }
}

/// Hard links: SealFS has none (`EPERM`, as Linux says for a file system
/// without them); across file systems `EXDEV`.
///
/// # Safety
/// `a` and `b` are C strings.
pub unsafe fn link_at(da: c_int, a: *const c_char, db: c_int, b: *const c_char) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let (la, lb) = unsafe { (paths::resolve(da, a), paths::resolve(db, b)) };
    match (la, lb) {
        (Err(e), _) | (_, Err(e)) => Some(Err(e)),
        (Ok(Loc::Local), Ok(Loc::Local)) => None,
        (Ok(Loc::Seal(x)), Ok(Loc::Seal(_))) => Some(stat_path(&x, false).and(Err(Errno::EPERM))),
        _ => Some(Err(Errno::EXDEV)),
    }
}

/// # Safety
/// `target` and `p` are C strings.
pub unsafe fn symlink_at(target: *const c_char, dirfd: c_int, p: *const c_char) -> Op<c_int> {
    let p = seal!(dirfd, p);
    if target.is_null() || paths::never_user_memory(target) {
        return Some(Err(Errno(libc::EFAULT)));
    }
    // SAFETY: caller guarantees a C string.
    let t = unsafe { CStr::from_ptr(target) };
    Some((|| {
        let t = t.to_str().map_err(|_| Errno::EINVAL)?;
        let (uid, gid) = ids();
        let c = client()?;
        if perm::applies_to(uid) {
            perm::may_change_dir(c, &p, uid, gid)?;
        }
        c.symlink(t, &p, uid, gid)?;
        Ok(0)
    })())
}

/// # Safety
/// `p` is a C string; `buf` is valid for `n` bytes.
pub unsafe fn readlink_at(dirfd: c_int, p: *const c_char, buf: *mut c_char, n: usize) -> Op<isize> {
    let p = seal!(dirfd, p);
    Some((|| {
        if n == 0 {
            return Err(Errno::EINVAL);
        }
        let t = client()?.readlink(&p)?;
        let k = t.len().min(n);
        // SAFETY: `buf` holds `n >= k` bytes (caller).
        unsafe { std::ptr::copy_nonoverlapping(t.as_ptr(), buf.cast::<u8>(), k) };
        Ok(k as isize)
    })())
}

/// `mknod`/`mkfifo` under the prefix: SealFS stores no special files.
///
/// # Safety
/// `p` is a C string.
pub unsafe fn mknod_at(dirfd: c_int, p: *const c_char) -> Op<c_int> {
    let p = seal!(dirfd, p);
    Some(match stat_path(&p, false) {
        Ok(_) => Err(Errno::EEXIST),
        Err(_) => Err(Errno::EPERM),
    })
}

/// Extended attributes: not supported on SealFS (`ENOTSUP`, which `cp -a`,
/// `ls` and Python's `copystat` treat as "none").
///
/// # Safety
/// `p` is a C string.
pub unsafe fn xattr_path(p: *const c_char, follow_link: bool) -> Op<isize> {
    let p = seal!(libc::AT_FDCWD, p);
    Some(stat_path(&p, follow_link).and(Err(Errno(libc::EOPNOTSUPP))))
}

pub fn xattr_fd(fd: c_int) -> Op<isize> {
    let _f = file!(fd);
    Some(Err(Errno(libc::EOPNOTSUPP)))
}

// ---------------------------------------------------------------- statfs

/// SealFS's answer to `pathconf`/`fpathconf` for `name` (as a local file
/// system with the same limits would give); `EINVAL` for unknown names.
fn pathconf_value(kind: FileKind, name: c_int) -> Result<i64, Errno> {
    Ok(match name {
        libc::_PC_NAME_MAX => sealfs_proto::path::NAME_MAX as i64,
        libc::_PC_PATH_MAX => libc::PATH_MAX as i64,
        // No hard links: a file has exactly one name (directories count
        // their subdirectories, as ext4 does, up to its limit).
        libc::_PC_LINK_MAX => {
            if kind == FileKind::Dir {
                65_000
            } else {
                1
            }
        }
        libc::_PC_PIPE_BUF => libc::PIPE_BUF as i64,
        libc::_PC_CHOWN_RESTRICTED | libc::_PC_NO_TRUNC => 1,
        libc::_PC_FILESIZEBITS => 64,
        libc::_PC_MAX_CANON | libc::_PC_MAX_INPUT => 255,
        libc::_PC_VDISABLE => 0,
        libc::_PC_2_SYMLINKS => 1,
        libc::_PC_SYMLINK_MAX | libc::_PC_ALLOC_SIZE_MIN | libc::_PC_REC_MIN_XFER_SIZE => 4096,
        libc::_PC_SYNC_IO | libc::_PC_ASYNC_IO | libc::_PC_PRIO_IO => -1,
        libc::_PC_REC_INCR_XFER_SIZE | libc::_PC_REC_XFER_ALIGN => 4096,
        libc::_PC_REC_MAX_XFER_SIZE => -1,
        _ => return Err(Errno::EINVAL),
    })
}

/// # Safety
/// `p` is a C string.
pub unsafe fn pathconf(p: *const c_char, name: c_int) -> Op<i64> {
    let p = seal!(libc::AT_FDCWD, p);
    Some(stat_path(&p, true).and_then(|i| pathconf_value(i.attr.kind, name)))
}

pub fn fpathconf(fd: c_int, name: c_int) -> Op<i64> {
    let f = file!(fd);
    Some(pathconf_value(f.kind, name))
}

fn statfs_any(t: Target) -> Result<sealfs_client::StatFs, Errno> {
    if let Target::Path(p, _) = &t {
        stat_path(p, true)?;
    }
    client()?.statfs()
}

/// # Safety
/// `p` is a C string; `out` writable.
pub unsafe fn statfs(p: *const c_char, out: *mut libc::statfs) -> Op<c_int> {
    let p = seal!(libc::AT_FDCWD, p);
    Some(statfs_any(Target::Path(p, true)).map(|s| {
        // SAFETY: caller guarantees a writable struct.
        attr::fill_statfs(unsafe { &mut *out }, &s);
        0
    }))
}

/// # Safety
/// `out` writable.
pub unsafe fn fstatfs(fd: c_int, out: *mut libc::statfs) -> Op<c_int> {
    let f = file!(fd);
    Some(statfs_any(Target::Fd(f)).map(|s| {
        // SAFETY: caller guarantees a writable struct.
        attr::fill_statfs(unsafe { &mut *out }, &s);
        0
    }))
}

/// # Safety
/// `p` is a C string; `out` writable.
pub unsafe fn statvfs(p: *const c_char, out: *mut libc::statvfs) -> Op<c_int> {
    let p = seal!(libc::AT_FDCWD, p);
    Some(statfs_any(Target::Path(p, true)).map(|s| {
        // SAFETY: caller guarantees a writable struct.
        attr::fill_statvfs(unsafe { &mut *out }, &s);
        0
    }))
}

/// # Safety
/// `out` writable.
pub unsafe fn fstatvfs(fd: c_int, out: *mut libc::statvfs) -> Op<c_int> {
    let f = file!(fd);
    Some(statfs_any(Target::Fd(f)).map(|s| {
        // SAFETY: caller guarantees a writable struct.
        attr::fill_statvfs(unsafe { &mut *out }, &s);
        0
    }))
}

// ---------------------------------------------------------------- cwd

/// `chdir` into SealFS; `None` for a local path (the hook then calls the
/// real `chdir` and leaves SealFS on success).
///
/// # Safety
/// `p` is a C string.
pub unsafe fn chdir(p: *const c_char) -> Op<c_int> {
    let p = seal!(libc::AT_FDCWD, p);
    Some((|| {
        let (uid, gid) = ids();
        let (rp, i) = client()?.open_resolved(&p, libc::O_RDONLY, 0, uid, gid)?;
        if i.attr.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        paths::set_vcwd(Some(rp));
        Ok(0)
    })())
}

pub fn fchdir(fd: c_int) -> Op<c_int> {
    let f = file!(fd);
    if f.kind != FileKind::Dir {
        return Some(Err(Errno::ENOTDIR));
    }
    paths::set_vcwd(Some(f.path()));
    Some(Ok(0))
}

/// Copies `s` into `buf` (size `n`), or a fresh `malloc`ed buffer when
/// `buf` is null, as glibc's `getcwd` does.
///
/// # Safety
/// `buf` is null or valid for `n` bytes.
pub unsafe fn c_string_out(s: &str, buf: *mut c_char, n: usize) -> Result<*mut c_char, Errno> {
    let need = s.len() + 1;
    let out = if buf.is_null() {
        // SAFETY: plain allocation.
        let p = unsafe { libc::malloc(need.max(n)) }.cast::<c_char>();
        if p.is_null() {
            return Err(Errno::ENOMEM);
        }
        p
    } else {
        if n == 0 {
            return Err(Errno::EINVAL);
        }
        if n < need {
            return Err(Errno::ERANGE);
        }
        buf
    };
    // SAFETY: `out` holds at least `need` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), out.cast::<u8>(), s.len());
        *out.add(s.len()) = 0;
    }
    Ok(out)
}

/// # Safety
/// `buf` is null or valid for `n` bytes.
pub unsafe fn getcwd(buf: *mut c_char, n: usize) -> Op<*mut c_char> {
    let c = paths::vcwd()?;
    // SAFETY: forwarded caller guarantees.
    Some(unsafe { c_string_out(&paths::local(&c), buf, n) })
}

/// `realpath` of a SealFS path: lexical normalisation plus the final
/// symlink (SealFS has no symlinks in directory parts).
///
/// # Safety
/// `p` is a C string; `out` null or `PATH_MAX` bytes.
pub unsafe fn realpath(p: *const c_char, out: *mut c_char) -> Op<*mut c_char> {
    let p = seal!(libc::AT_FDCWD, p);
    Some((|| {
        let (uid, gid) = ids();
        let (rp, _) = client()?.open_resolved(&p, libc::O_RDONLY, 0, uid, gid)?;
        // SAFETY: forwarded caller guarantees.
        unsafe {
            c_string_out(
                &paths::local(&rp),
                out,
                if out.is_null() {
                    0
                } else {
                    libc::PATH_MAX as usize
                },
            )
        }
    })())
}

// ---------------------------------------------------------------- fds

pub fn dup(fd: c_int) -> Op<c_int> {
    let f = file!(fd);
    // SAFETY: dup of a kernel fd we reserved.
    let n = unsafe { real::dup(fd) };
    if n < 0 {
        return Some(Err(errno()));
    }
    if !fdtable::insert(n, f) {
        // SAFETY: closing the fd just made.
        unsafe { real::close(n) };
        return Some(Err(Errno::EMFILE));
    }
    if n <= 2 {
        crate::stdio::proxy_std(n);
    }
    Some(Ok(n))
}

/// `dup2`/`dup3` when either fd is ours.
pub fn dup3(old: c_int, new: c_int, flags: c_int, is_dup2: bool) -> Op<c_int> {
    let f = fdtable::get(old);
    if f.is_none() && !fdtable::is_ours(new) {
        return None;
    }
    if fdtable::is_internal(new) {
        return Some(Err(Errno::EBUSY));
    }
    if old == new {
        if is_dup2 {
            return Some(if f.is_some() {
                Ok(new)
            } else {
                Err(Errno::EBADF)
            });
        }
        return Some(Err(Errno::EINVAL));
    }
    if f.is_some() && (0..=2).contains(&new) {
        crate::stdio::proxy_std(new);
    }
    // SAFETY: plain dup3/dup2 of kernel fds.
    let r = unsafe {
        if is_dup2 {
            real::dup2(old, new)
        } else {
            real::dup3(old, new, flags)
        }
    };
    if r < 0 {
        return Some(Err(errno()));
    }
    fdtable::remove(new);
    if let Some(f) = f {
        fdtable::insert(new, f);
    }
    Some(Ok(r))
}

const SETFL_MASK: c_int =
    libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;

pub fn fcntl(fd: c_int, cmd: c_int, arg: libc::c_long) -> Op<c_int> {
    let f = file!(fd);
    match cmd {
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: duplicating a kernel fd we reserved.
            let n = unsafe { real::fcntl(fd, cmd, arg) };
            if n < 0 {
                return Some(Err(errno()));
            }
            if !fdtable::insert(n, f) {
                // SAFETY: closing the fd just made.
                unsafe { real::close(n) };
                return Some(Err(Errno::EMFILE));
            }
            Some(Ok(n))
        }
        libc::F_GETFL => Some(Ok(f.flags.load(Ordering::Relaxed) | libc::O_LARGEFILE)),
        libc::F_SETFL => {
            let cur = f.flags.load(Ordering::Relaxed);
            f.flags.store(
                (cur & !SETFL_MASK) | (arg as c_int & SETFL_MASK),
                Ordering::Relaxed,
            );
            Some(Ok(0))
        }
        // Byte-range locks on the reserved fd would lock /dev/null for
        // every SealFS file at once; SealFS has no lock service yet.
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => Some(Err(Errno(libc::ENOLCK))),
        libc::F_ADD_SEALS | libc::F_GET_SEALS => Some(Err(Errno::EINVAL)),
        _ => None, // F_GETFD/F_SETFD and the rest act on the kernel fd
    }
}

pub fn flock(fd: c_int) -> Op<c_int> {
    let _f = file!(fd);
    Some(Err(Errno(libc::ENOLCK)))
}
