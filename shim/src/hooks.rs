//! The exported libc names. Each hook is thin: a one-branch test (an fd bit
//! or a path prefix), then [`run`], which enters the re-entrancy guard,
//! calls the operation under `catch_unwind` (no panic crosses the C ABI)
//! and either passes the call to the real function or returns the result,
//! setting `errno` on failure and leaving it untouched on success.
//!
//! # Safety
//!
//! Every hook is an `unsafe extern "C"` function whose contract is the libc
//! function's own (valid C strings, buffers of the stated sizes, live
//! `DIR*`/`FILE*`). The `unsafe` blocks fall into four families, each
//! sound for the reason given here and marked with its letter:
//!
//! * (P) pass-through: the real libc function (`real.rs`, resolved with
//!   `dlsym(RTLD_NEXT)` and called with its exact C prototype) gets the
//!   application's arguments unchanged, so the caller's guarantees are
//!   exactly the ones it needs; the shim adds no obligation.
//! * (O) operation or pass-through: `ops::*`/`stdio::*`/`spawn::*` are
//!   `unsafe fn`s whose `# Safety` sections ask only what the C function
//!   asks of its caller; they get the application's arguments unchanged,
//!   and so does the real function when the operation passes.
//! * (D) directory streams: `dir::is_ours` reads the first 8 bytes behind
//!   a non-null `DIR*`, and both kinds of `DIR` (glibc's and our
//!   `SealDir`) are 8-aligned heap objects larger than that; past a true
//!   `is_ours` the stream is a `SealDir` this library allocated, which is
//!   what the other `dir::*` functions require.
//! * (M) path pre-check: `paths::maybe` (and `maybe2`) read an application
//!   C string only up to the prefix's length or its NUL, whichever comes
//!   first, and treat null as "not a path".

#![allow(clippy::missing_safety_doc)]

use crate::guard::Guard;
use crate::ops::{self, errno, set_errno, Op};
use crate::{dir, fdtable, paths, process, real, spawn, stdio};
use libc::{
    c_char, c_int, c_long, c_uint, c_void, mode_t, off64_t, off_t, size_t, ssize_t, DIR, FILE,
};
use sealfs_client::Errno;
use std::panic::AssertUnwindSafe;

const AT: c_int = libc::AT_FDCWD;

pub trait Fail {
    const FAIL: Self;
}
impl Fail for c_int {
    const FAIL: Self = -1;
}
impl Fail for isize {
    const FAIL: Self = -1;
}
impl Fail for i64 {
    const FAIL: Self = -1;
}
impl<T> Fail for *mut T {
    const FAIL: Self = std::ptr::null_mut();
}

#[inline]
fn run<T: Fail>(op: impl FnOnce() -> Op<T>, pass: impl FnOnce() -> T) -> T {
    let Some(g) = Guard::enter() else {
        return pass();
    };
    let saved = errno();
    let r = std::panic::catch_unwind(AssertUnwindSafe(op));
    drop(g);
    match r {
        Ok(None) => {
            set_errno(saved);
            pass()
        }
        Ok(Some(Ok(v))) => {
            set_errno(saved);
            v
        }
        Ok(Some(Err(e))) => {
            set_errno(e);
            T::FAIL
        }
        Err(_) => {
            set_errno(Errno::EIO);
            T::FAIL
        }
    }
}

macro_rules! path_hook {
    ($dirfd:expr, $p:expr, $op:expr, $real:expr) => {{
        // SAFETY: `$p` comes from the application as a C string (or null).
        if !unsafe { paths::maybe($dirfd, $p) } {
            // SAFETY: the real function with the application's arguments.
            return unsafe { $real };
        }
        // SAFETY: as above, for the operation and the pass-through.
        #[allow(unused_unsafe)]
        run(|| unsafe { $op }, || unsafe { $real })
    }};
}

macro_rules! fd_hook {
    ($fd:expr, $op:expr, $real:expr) => {{
        if !fdtable::is_ours($fd) {
            // SAFETY: the real function with the application's arguments.
            return unsafe { $real };
        }
        // SAFETY: as above, for the operation and the pass-through.
        #[allow(unused_unsafe)]
        run(|| unsafe { $op }, || unsafe { $real })
    }};
}

// ------------------------------------------------------------------ open

#[no_mangle]
pub unsafe extern "C" fn open(p: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    path_hook!(
        AT,
        p,
        ops::open_at(AT, p, flags, mode),
        real::open(p, flags, mode)
    )
}
#[no_mangle]
pub unsafe extern "C" fn open64(p: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    path_hook!(
        AT,
        p,
        ops::open_at(AT, p, flags, mode),
        real::open64(p, flags, mode)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __open_2(p: *const c_char, flags: c_int) -> c_int {
    path_hook!(
        AT,
        p,
        ops::open_at(AT, p, flags, 0),
        real::__open_2(p, flags)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __open64_2(p: *const c_char, flags: c_int) -> c_int {
    path_hook!(
        AT,
        p,
        ops::open_at(AT, p, flags, 0),
        real::__open64_2(p, flags)
    )
}
#[no_mangle]
pub unsafe extern "C" fn openat(d: c_int, p: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    path_hook!(
        d,
        p,
        ops::open_at(d, p, flags, mode),
        real::openat(d, p, flags, mode)
    )
}
#[no_mangle]
pub unsafe extern "C" fn openat64(d: c_int, p: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    path_hook!(
        d,
        p,
        ops::open_at(d, p, flags, mode),
        real::openat64(d, p, flags, mode)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __openat_2(d: c_int, p: *const c_char, flags: c_int) -> c_int {
    path_hook!(
        d,
        p,
        ops::open_at(d, p, flags, 0),
        real::__openat_2(d, p, flags)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __openat64_2(d: c_int, p: *const c_char, flags: c_int) -> c_int {
    path_hook!(
        d,
        p,
        ops::open_at(d, p, flags, 0),
        real::__openat64_2(d, p, flags)
    )
}
const CREAT: c_int = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;
#[no_mangle]
pub unsafe extern "C" fn creat(p: *const c_char, mode: mode_t) -> c_int {
    path_hook!(
        AT,
        p,
        ops::open_at(AT, p, CREAT, mode),
        real::creat(p, mode)
    )
}
#[no_mangle]
pub unsafe extern "C" fn creat64(p: *const c_char, mode: mode_t) -> c_int {
    path_hook!(
        AT,
        p,
        ops::open_at(AT, p, CREAT, mode),
        real::creat64(p, mode)
    )
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    fd_hook!(fd, ops::close(fd), real::close(fd))
}
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || ops::close_range(first, last, flags),
        || unsafe { real::close_range(first, last, flags) },
    )
}

// ------------------------------------------------------------------ data

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, b: *mut c_void, n: size_t) -> ssize_t {
    fd_hook!(fd, ops::read(fd, b, n, None), real::read(fd, b, n))
}
#[no_mangle]
pub unsafe extern "C" fn __read_chk(fd: c_int, b: *mut c_void, n: size_t, bl: size_t) -> ssize_t {
    fd_hook!(
        fd,
        if n > bl {
            None
        } else {
            ops::read(fd, b, n, None)
        },
        real::__read_chk(fd, b, n, bl)
    )
}
#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, b: *mut c_void, n: size_t, o: off_t) -> ssize_t {
    fd_hook!(fd, ops::read(fd, b, n, Some(o)), real::pread(fd, b, n, o))
}
#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, b: *mut c_void, n: size_t, o: off64_t) -> ssize_t {
    fd_hook!(fd, ops::read(fd, b, n, Some(o)), real::pread64(fd, b, n, o))
}
#[no_mangle]
pub unsafe extern "C" fn __pread_chk(
    fd: c_int,
    b: *mut c_void,
    n: size_t,
    o: off_t,
    bl: size_t,
) -> ssize_t {
    fd_hook!(
        fd,
        if n > bl {
            None
        } else {
            ops::read(fd, b, n, Some(o))
        },
        real::__pread_chk(fd, b, n, o, bl)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __pread64_chk(
    fd: c_int,
    b: *mut c_void,
    n: size_t,
    o: off64_t,
    bl: size_t,
) -> ssize_t {
    fd_hook!(
        fd,
        if n > bl {
            None
        } else {
            ops::read(fd, b, n, Some(o))
        },
        real::__pread64_chk(fd, b, n, o, bl)
    )
}
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, v: *const libc::iovec, c: c_int) -> ssize_t {
    fd_hook!(fd, ops::readv(fd, v, c, None), real::readv(fd, v, c))
}
#[no_mangle]
pub unsafe extern "C" fn preadv(fd: c_int, v: *const libc::iovec, c: c_int, o: off_t) -> ssize_t {
    fd_hook!(fd, ops::readv(fd, v, c, Some(o)), real::preadv(fd, v, c, o))
}
#[no_mangle]
pub unsafe extern "C" fn preadv64(
    fd: c_int,
    v: *const libc::iovec,
    c: c_int,
    o: off64_t,
) -> ssize_t {
    fd_hook!(
        fd,
        ops::readv(fd, v, c, Some(o)),
        real::preadv64(fd, v, c, o)
    )
}
#[no_mangle]
pub unsafe extern "C" fn preadv2(
    fd: c_int,
    v: *const libc::iovec,
    c: c_int,
    o: off_t,
    f: c_int,
) -> ssize_t {
    fd_hook!(
        fd,
        ops::readv(fd, v, c, (o != -1).then_some(o)),
        real::preadv2(fd, v, c, o, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, b: *const c_void, n: size_t) -> ssize_t {
    fd_hook!(fd, ops::write(fd, b, n, None), real::write(fd, b, n))
}
#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, b: *const c_void, n: size_t, o: off_t) -> ssize_t {
    fd_hook!(fd, ops::write(fd, b, n, Some(o)), real::pwrite(fd, b, n, o))
}
#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, b: *const c_void, n: size_t, o: off64_t) -> ssize_t {
    fd_hook!(
        fd,
        ops::write(fd, b, n, Some(o)),
        real::pwrite64(fd, b, n, o)
    )
}
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, v: *const libc::iovec, c: c_int) -> ssize_t {
    fd_hook!(fd, ops::writev(fd, v, c, None), real::writev(fd, v, c))
}
#[no_mangle]
pub unsafe extern "C" fn pwritev(fd: c_int, v: *const libc::iovec, c: c_int, o: off_t) -> ssize_t {
    fd_hook!(
        fd,
        ops::writev(fd, v, c, Some(o)),
        real::pwritev(fd, v, c, o)
    )
}
#[no_mangle]
pub unsafe extern "C" fn pwritev64(
    fd: c_int,
    v: *const libc::iovec,
    c: c_int,
    o: off64_t,
) -> ssize_t {
    fd_hook!(
        fd,
        ops::writev(fd, v, c, Some(o)),
        real::pwritev64(fd, v, c, o)
    )
}
#[no_mangle]
pub unsafe extern "C" fn pwritev2(
    fd: c_int,
    v: *const libc::iovec,
    c: c_int,
    o: off_t,
    f: c_int,
) -> ssize_t {
    fd_hook!(
        fd,
        ops::writev(fd, v, c, (o != -1).then_some(o)),
        real::pwritev2(fd, v, c, o, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn lseek(fd: c_int, o: off_t, w: c_int) -> off_t {
    fd_hook!(fd, ops::lseek(fd, o, w), real::lseek(fd, o, w))
}
#[no_mangle]
pub unsafe extern "C" fn lseek64(fd: c_int, o: off64_t, w: c_int) -> off64_t {
    fd_hook!(fd, ops::lseek(fd, o, w), real::lseek64(fd, o, w))
}
#[no_mangle]
pub unsafe extern "C" fn truncate(p: *const c_char, l: off_t) -> c_int {
    path_hook!(AT, p, ops::truncate(p, l), real::truncate(p, l))
}
#[no_mangle]
pub unsafe extern "C" fn truncate64(p: *const c_char, l: off64_t) -> c_int {
    path_hook!(AT, p, ops::truncate(p, l), real::truncate64(p, l))
}
#[no_mangle]
pub unsafe extern "C" fn ftruncate(fd: c_int, l: off_t) -> c_int {
    fd_hook!(fd, ops::ftruncate(fd, l), real::ftruncate(fd, l))
}
#[no_mangle]
pub unsafe extern "C" fn ftruncate64(fd: c_int, l: off64_t) -> c_int {
    fd_hook!(fd, ops::ftruncate(fd, l), real::ftruncate64(fd, l))
}
#[no_mangle]
pub unsafe extern "C" fn fsync(fd: c_int) -> c_int {
    fd_hook!(fd, ops::fsync(fd), real::fsync(fd))
}
#[no_mangle]
pub unsafe extern "C" fn fdatasync(fd: c_int) -> c_int {
    fd_hook!(fd, ops::fsync(fd), real::fdatasync(fd))
}
#[no_mangle]
pub unsafe extern "C" fn posix_fadvise(fd: c_int, o: off_t, l: off_t, a: c_int) -> c_int {
    fd_hook!(fd, ops::fadvise(fd), real::posix_fadvise(fd, o, l, a))
}
#[no_mangle]
pub unsafe extern "C" fn posix_fadvise64(fd: c_int, o: off64_t, l: off64_t, a: c_int) -> c_int {
    fd_hook!(fd, ops::fadvise(fd), real::posix_fadvise64(fd, o, l, a))
}
#[no_mangle]
pub unsafe extern "C" fn fallocate(fd: c_int, m: c_int, o: off_t, l: off_t) -> c_int {
    fd_hook!(
        fd,
        ops::fallocate(fd, m, o, l),
        real::fallocate(fd, m, o, l)
    )
}
#[no_mangle]
pub unsafe extern "C" fn fallocate64(fd: c_int, m: c_int, o: off64_t, l: off64_t) -> c_int {
    fd_hook!(
        fd,
        ops::fallocate(fd, m, o, l),
        real::fallocate64(fd, m, o, l)
    )
}
/// `posix_fallocate` returns the error number instead of setting errno.
fn errno_ret(r: c_int) -> c_int {
    if r == 0 {
        0
    } else {
        errno().0
    }
}
#[no_mangle]
pub unsafe extern "C" fn posix_fallocate(fd: c_int, o: off_t, l: off_t) -> c_int {
    if !fdtable::is_ours(fd) {
        // SAFETY: the real function with the application's arguments.
        return unsafe { real::posix_fallocate(fd, o, l) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    errno_ret(run(
        || ops::fallocate(fd, 0, o, l),
        || unsafe { real::fallocate(fd, 0, o, l) },
    ))
}
#[no_mangle]
pub unsafe extern "C" fn posix_fallocate64(fd: c_int, o: off64_t, l: off64_t) -> c_int {
    if !fdtable::is_ours(fd) {
        // SAFETY: the real function with the application's arguments.
        return unsafe { real::posix_fallocate64(fd, o, l) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    errno_ret(run(
        || ops::fallocate(fd, 0, o, l),
        || unsafe { real::fallocate64(fd, 0, o, l) },
    ))
}
#[no_mangle]
pub unsafe extern "C" fn copy_file_range(
    fi: c_int,
    oi: *mut off64_t,
    fo: c_int,
    oo: *mut off64_t,
    n: size_t,
    f: c_uint,
) -> ssize_t {
    if !fdtable::is_ours(fi) && !fdtable::is_ours(fo) {
        // SAFETY: the real function with the application's arguments.
        return unsafe { real::copy_file_range(fi, oi, fo, oo, n, f) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::copy_range(fi, oi, fo, oo, n) },
        || unsafe { real::copy_file_range(fi, oi, fo, oo, n, f) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn sendfile(out: c_int, inp: c_int, o: *mut off_t, n: size_t) -> ssize_t {
    if !fdtable::is_ours(out) && !fdtable::is_ours(inp) {
        // SAFETY: the real function with the application's arguments.
        return unsafe { real::sendfile(out, inp, o, n) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::copy_range(inp, o, out, std::ptr::null_mut(), n) },
        || unsafe { real::sendfile(out, inp, o, n) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn sendfile64(out: c_int, inp: c_int, o: *mut off64_t, n: size_t) -> ssize_t {
    if !fdtable::is_ours(out) && !fdtable::is_ours(inp) {
        // SAFETY: the real function with the application's arguments.
        return unsafe { real::sendfile64(out, inp, o, n) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::copy_range(inp, o, out, std::ptr::null_mut(), n) },
        || unsafe { real::sendfile64(out, inp, o, n) },
    )
}

// ------------------------------------------------------------------ stat

#[no_mangle]
pub unsafe extern "C" fn stat(p: *const c_char, st: *mut libc::stat) -> c_int {
    path_hook!(AT, p, ops::stat_at(AT, p, st, 0), real::stat(p, st))
}
#[no_mangle]
pub unsafe extern "C" fn stat64(p: *const c_char, st: *mut libc::stat64) -> c_int {
    path_hook!(
        AT,
        p,
        ops::stat_at(AT, p, st.cast(), 0),
        real::stat64(p, st)
    )
}
#[no_mangle]
pub unsafe extern "C" fn lstat(p: *const c_char, st: *mut libc::stat) -> c_int {
    path_hook!(
        AT,
        p,
        ops::stat_at(AT, p, st, libc::AT_SYMLINK_NOFOLLOW),
        real::lstat(p, st)
    )
}
#[no_mangle]
pub unsafe extern "C" fn lstat64(p: *const c_char, st: *mut libc::stat64) -> c_int {
    path_hook!(
        AT,
        p,
        ops::stat_at(AT, p, st.cast(), libc::AT_SYMLINK_NOFOLLOW),
        real::lstat64(p, st)
    )
}
#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, st: *mut libc::stat) -> c_int {
    fd_hook!(fd, ops::fstat(fd, st), real::fstat(fd, st))
}
#[no_mangle]
pub unsafe extern "C" fn fstat64(fd: c_int, st: *mut libc::stat64) -> c_int {
    fd_hook!(fd, ops::fstat(fd, st.cast()), real::fstat64(fd, st))
}
#[no_mangle]
pub unsafe extern "C" fn fstatat(
    d: c_int,
    p: *const c_char,
    st: *mut libc::stat,
    f: c_int,
) -> c_int {
    path_hook!(d, p, ops::stat_at(d, p, st, f), real::fstatat(d, p, st, f))
}
#[no_mangle]
pub unsafe extern "C" fn fstatat64(
    d: c_int,
    p: *const c_char,
    st: *mut libc::stat64,
    f: c_int,
) -> c_int {
    path_hook!(
        d,
        p,
        ops::stat_at(d, p, st.cast(), f),
        real::fstatat64(d, p, st, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn statx(
    d: c_int,
    p: *const c_char,
    f: c_int,
    m: c_uint,
    sx: *mut libc::statx,
) -> c_int {
    path_hook!(d, p, ops::statx(d, p, f, sx), real::statx(d, p, f, m, sx))
}
// The pre-2.33 names (compat symbols in 2.36): the real side is the new name.
#[no_mangle]
pub unsafe extern "C" fn __xstat(_v: c_int, p: *const c_char, st: *mut libc::stat) -> c_int {
    path_hook!(AT, p, ops::stat_at(AT, p, st, 0), real::stat(p, st))
}
#[no_mangle]
pub unsafe extern "C" fn __xstat64(_v: c_int, p: *const c_char, st: *mut libc::stat64) -> c_int {
    path_hook!(
        AT,
        p,
        ops::stat_at(AT, p, st.cast(), 0),
        real::stat64(p, st)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __lxstat(_v: c_int, p: *const c_char, st: *mut libc::stat) -> c_int {
    path_hook!(
        AT,
        p,
        ops::stat_at(AT, p, st, libc::AT_SYMLINK_NOFOLLOW),
        real::lstat(p, st)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __lxstat64(_v: c_int, p: *const c_char, st: *mut libc::stat64) -> c_int {
    path_hook!(
        AT,
        p,
        ops::stat_at(AT, p, st.cast(), libc::AT_SYMLINK_NOFOLLOW),
        real::lstat64(p, st)
    )
}
#[no_mangle]
pub unsafe extern "C" fn __fxstat(_v: c_int, fd: c_int, st: *mut libc::stat) -> c_int {
    fd_hook!(fd, ops::fstat(fd, st), real::fstat(fd, st))
}
#[no_mangle]
pub unsafe extern "C" fn __fxstat64(_v: c_int, fd: c_int, st: *mut libc::stat64) -> c_int {
    fd_hook!(fd, ops::fstat(fd, st.cast()), real::fstat64(fd, st))
}
#[no_mangle]
pub unsafe extern "C" fn __fxstatat(
    _v: c_int,
    d: c_int,
    p: *const c_char,
    st: *mut libc::stat,
    f: c_int,
) -> c_int {
    path_hook!(d, p, ops::stat_at(d, p, st, f), real::fstatat(d, p, st, f))
}
#[no_mangle]
pub unsafe extern "C" fn __fxstatat64(
    _v: c_int,
    d: c_int,
    p: *const c_char,
    st: *mut libc::stat64,
    f: c_int,
) -> c_int {
    path_hook!(
        d,
        p,
        ops::stat_at(d, p, st.cast(), f),
        real::fstatat64(d, p, st, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn access(p: *const c_char, m: c_int) -> c_int {
    path_hook!(AT, p, ops::access_at(AT, p, m, 0), real::access(p, m))
}
#[no_mangle]
pub unsafe extern "C" fn eaccess(p: *const c_char, m: c_int) -> c_int {
    path_hook!(
        AT,
        p,
        ops::access_at(AT, p, m, libc::AT_EACCESS),
        real::eaccess(p, m)
    )
}
#[no_mangle]
pub unsafe extern "C" fn euidaccess(p: *const c_char, m: c_int) -> c_int {
    path_hook!(
        AT,
        p,
        ops::access_at(AT, p, m, libc::AT_EACCESS),
        real::eaccess(p, m)
    )
}
#[no_mangle]
pub unsafe extern "C" fn faccessat(d: c_int, p: *const c_char, m: c_int, f: c_int) -> c_int {
    path_hook!(
        d,
        p,
        ops::access_at(d, p, m, f),
        real::faccessat(d, p, m, f)
    )
}

// ------------------------------------------------------------------ namespace

#[no_mangle]
pub unsafe extern "C" fn mkdir(p: *const c_char, m: mode_t) -> c_int {
    path_hook!(AT, p, ops::mkdir_at(AT, p, m), real::mkdir(p, m))
}
#[no_mangle]
pub unsafe extern "C" fn mkdirat(d: c_int, p: *const c_char, m: mode_t) -> c_int {
    path_hook!(d, p, ops::mkdir_at(d, p, m), real::mkdirat(d, p, m))
}
#[no_mangle]
pub unsafe extern "C" fn rmdir(p: *const c_char) -> c_int {
    path_hook!(
        AT,
        p,
        ops::unlink_at(AT, p, libc::AT_REMOVEDIR),
        real::rmdir(p)
    )
}
#[no_mangle]
pub unsafe extern "C" fn unlink(p: *const c_char) -> c_int {
    path_hook!(AT, p, ops::unlink_at(AT, p, 0), real::unlink(p))
}
#[no_mangle]
pub unsafe extern "C" fn unlinkat(d: c_int, p: *const c_char, f: c_int) -> c_int {
    path_hook!(d, p, ops::unlink_at(d, p, f), real::unlinkat(d, p, f))
}
unsafe fn maybe2(da: c_int, a: *const c_char, db: c_int, b: *const c_char) -> bool {
    // SAFETY: application C strings (or null).
    unsafe { paths::maybe(da, a) || paths::maybe(db, b) }
}

/// A two-path call where one pointer is null or can never be valid and
/// the other names a SealFS path: Linux answers `EFAULT`, but the kernel
/// alone would look the SealFS path up first and answer `ENOENT`.
unsafe fn efault_pair(da: c_int, a: *const c_char, db: c_int, b: *const c_char) -> bool {
    let bad = |x: *const c_char| x.is_null() || paths::never_user_memory(x);
    // SAFETY: the pointer checked is not a bad one (application C string).
    (bad(a) && !bad(b) && unsafe { paths::maybe(db, b) })
        || (bad(b) && !bad(a) && unsafe { paths::maybe(da, a) })
}
#[no_mangle]
pub unsafe extern "C" fn rename(a: *const c_char, b: *const c_char) -> c_int {
    // SAFETY: pointer pre-check only (never dereferences a bad one).
    if unsafe { efault_pair(AT, a, AT, b) } {
        ops::set_errno(sealfs_client::Errno(libc::EFAULT));
        return -1;
    }
    // SAFETY: path pre-check, see (M) in the module docs.
    if a.is_null() || b.is_null() || !unsafe { maybe2(AT, a, AT, b) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::rename(a, b) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::rename_at(AT, a, AT, b, 0) },
        || unsafe { real::rename(a, b) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn renameat(
    da: c_int,
    a: *const c_char,
    db: c_int,
    b: *const c_char,
) -> c_int {
    // SAFETY: pointer pre-check only (never dereferences a bad one).
    if unsafe { efault_pair(da, a, db, b) } {
        ops::set_errno(sealfs_client::Errno(libc::EFAULT));
        return -1;
    }
    // SAFETY: path pre-check, see (M) in the module docs.
    if a.is_null() || b.is_null() || !unsafe { maybe2(da, a, db, b) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::renameat(da, a, db, b) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::rename_at(da, a, db, b, 0) },
        || unsafe { real::renameat(da, a, db, b) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn renameat2(
    da: c_int,
    a: *const c_char,
    db: c_int,
    b: *const c_char,
    f: c_uint,
) -> c_int {
    // SAFETY: pointer pre-check only (never dereferences a bad one).
    if unsafe { efault_pair(da, a, db, b) } {
        ops::set_errno(sealfs_client::Errno(libc::EFAULT));
        return -1;
    }
    // SAFETY: path pre-check, see (M) in the module docs.
    if a.is_null() || b.is_null() || !unsafe { maybe2(da, a, db, b) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::renameat2(da, a, db, b, f) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::rename_at(da, a, db, b, f) },
        || unsafe { real::renameat2(da, a, db, b, f) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn link(a: *const c_char, b: *const c_char) -> c_int {
    // SAFETY: pointer pre-check only (never dereferences a bad one).
    if unsafe { efault_pair(AT, a, AT, b) } {
        ops::set_errno(sealfs_client::Errno(libc::EFAULT));
        return -1;
    }
    // SAFETY: path pre-check, see (M) in the module docs.
    if a.is_null() || b.is_null() || !unsafe { maybe2(AT, a, AT, b) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::link(a, b) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::link_at(AT, a, AT, b) },
        || unsafe { real::link(a, b) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn linkat(
    da: c_int,
    a: *const c_char,
    db: c_int,
    b: *const c_char,
    f: c_int,
) -> c_int {
    // SAFETY: pointer pre-check only (never dereferences a bad one).
    if unsafe { efault_pair(da, a, db, b) } {
        ops::set_errno(sealfs_client::Errno(libc::EFAULT));
        return -1;
    }
    // SAFETY: path pre-check, see (M) in the module docs.
    if a.is_null() || b.is_null() || !unsafe { maybe2(da, a, db, b) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::linkat(da, a, db, b, f) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::link_at(da, a, db, b) },
        || unsafe { real::linkat(da, a, db, b, f) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn symlink(t: *const c_char, p: *const c_char) -> c_int {
    if t.is_null() {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::symlink(t, p) };
    }
    path_hook!(AT, p, ops::symlink_at(t, AT, p), real::symlink(t, p))
}
#[no_mangle]
pub unsafe extern "C" fn symlinkat(t: *const c_char, d: c_int, p: *const c_char) -> c_int {
    if t.is_null() {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::symlinkat(t, d, p) };
    }
    path_hook!(d, p, ops::symlink_at(t, d, p), real::symlinkat(t, d, p))
}
#[no_mangle]
pub unsafe extern "C" fn readlink(p: *const c_char, b: *mut c_char, n: size_t) -> ssize_t {
    path_hook!(
        AT,
        p,
        ops::readlink_at(AT, p, b, n),
        real::readlink(p, b, n)
    )
}
#[no_mangle]
pub unsafe extern "C" fn readlinkat(
    d: c_int,
    p: *const c_char,
    b: *mut c_char,
    n: size_t,
) -> ssize_t {
    path_hook!(
        d,
        p,
        ops::readlink_at(d, p, b, n),
        real::readlinkat(d, p, b, n)
    )
}
#[no_mangle]
pub unsafe extern "C" fn mknod(p: *const c_char, m: mode_t, dev: libc::dev_t) -> c_int {
    path_hook!(AT, p, ops::mknod_at(AT, p), real::mknod(p, m, dev))
}
#[no_mangle]
pub unsafe extern "C" fn mknodat(d: c_int, p: *const c_char, m: mode_t, dev: libc::dev_t) -> c_int {
    path_hook!(d, p, ops::mknod_at(d, p), real::mknodat(d, p, m, dev))
}
#[no_mangle]
pub unsafe extern "C" fn mkfifo(p: *const c_char, m: mode_t) -> c_int {
    path_hook!(AT, p, ops::mknod_at(AT, p), real::mkfifo(p, m))
}
#[no_mangle]
pub unsafe extern "C" fn mkfifoat(d: c_int, p: *const c_char, m: mode_t) -> c_int {
    path_hook!(d, p, ops::mknod_at(d, p), real::mkfifoat(d, p, m))
}

// ------------------------------------------------------------------ attributes

#[no_mangle]
pub unsafe extern "C" fn chmod(p: *const c_char, m: mode_t) -> c_int {
    path_hook!(AT, p, ops::chmod_at(AT, p, m, 0), real::chmod(p, m))
}
#[no_mangle]
pub unsafe extern "C" fn fchmod(fd: c_int, m: mode_t) -> c_int {
    fd_hook!(fd, ops::fchmod(fd, m), real::fchmod(fd, m))
}
#[no_mangle]
pub unsafe extern "C" fn fchmodat(d: c_int, p: *const c_char, m: mode_t, f: c_int) -> c_int {
    path_hook!(d, p, ops::chmod_at(d, p, m, f), real::fchmodat(d, p, m, f))
}
#[no_mangle]
pub unsafe extern "C" fn chown(p: *const c_char, u: libc::uid_t, g: libc::gid_t) -> c_int {
    path_hook!(AT, p, ops::chown_at(AT, p, u, g, 0), real::chown(p, u, g))
}
#[no_mangle]
pub unsafe extern "C" fn lchown(p: *const c_char, u: libc::uid_t, g: libc::gid_t) -> c_int {
    path_hook!(
        AT,
        p,
        ops::chown_at(AT, p, u, g, libc::AT_SYMLINK_NOFOLLOW),
        real::lchown(p, u, g)
    )
}
#[no_mangle]
pub unsafe extern "C" fn fchown(fd: c_int, u: libc::uid_t, g: libc::gid_t) -> c_int {
    fd_hook!(fd, ops::fchown(fd, u, g), real::fchown(fd, u, g))
}
#[no_mangle]
pub unsafe extern "C" fn fchownat(
    d: c_int,
    p: *const c_char,
    u: libc::uid_t,
    g: libc::gid_t,
    f: c_int,
) -> c_int {
    path_hook!(
        d,
        p,
        ops::chown_at(d, p, u, g, f),
        real::fchownat(d, p, u, g, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn utimensat(
    d: c_int,
    p: *const c_char,
    ts: *const libc::timespec,
    f: c_int,
) -> c_int {
    path_hook!(
        d,
        p,
        ops::utimens_at(d, p, ts, f),
        real::utimensat(d, p, ts, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn futimens(fd: c_int, ts: *const libc::timespec) -> c_int {
    fd_hook!(
        fd,
        ops::utimens_at(fd, std::ptr::null(), ts, 0),
        real::futimens(fd, ts)
    )
}
#[no_mangle]
pub unsafe extern "C" fn utimes(p: *const c_char, tv: *const libc::timeval) -> c_int {
    path_hook!(
        AT,
        p,
        {
            let ts = ops::tv_to_ts(tv);
            ops::utimens_at(
                AT,
                p,
                ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                0,
            )
        },
        real::utimes(p, tv)
    )
}
#[no_mangle]
pub unsafe extern "C" fn lutimes(p: *const c_char, tv: *const libc::timeval) -> c_int {
    path_hook!(
        AT,
        p,
        {
            let ts = ops::tv_to_ts(tv);
            ops::utimens_at(
                AT,
                p,
                ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        real::lutimes(p, tv)
    )
}
#[no_mangle]
pub unsafe extern "C" fn futimes(fd: c_int, tv: *const libc::timeval) -> c_int {
    fd_hook!(
        fd,
        {
            let ts = ops::tv_to_ts(tv);
            ops::utimens_at(
                fd,
                std::ptr::null(),
                ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                0,
            )
        },
        real::futimes(fd, tv)
    )
}
#[no_mangle]
pub unsafe extern "C" fn utime(p: *const c_char, t: *const libc::utimbuf) -> c_int {
    path_hook!(
        AT,
        p,
        {
            let ts = if t.is_null() {
                None
            } else {
                let t = &*t;
                Some([
                    libc::timespec {
                        tv_sec: t.actime,
                        tv_nsec: 0,
                    },
                    libc::timespec {
                        tv_sec: t.modtime,
                        tv_nsec: 0,
                    },
                ])
            };
            ops::utimens_at(
                AT,
                p,
                ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                0,
            )
        },
        real::utime(p, t)
    )
}

// xattrs: not supported on SealFS.
#[no_mangle]
pub unsafe extern "C" fn getxattr(
    p: *const c_char,
    n: *const c_char,
    v: *mut c_void,
    s: size_t,
) -> ssize_t {
    path_hook!(AT, p, ops::xattr_path(p, true), real::getxattr(p, n, v, s))
}
#[no_mangle]
pub unsafe extern "C" fn lgetxattr(
    p: *const c_char,
    n: *const c_char,
    v: *mut c_void,
    s: size_t,
) -> ssize_t {
    path_hook!(
        AT,
        p,
        ops::xattr_path(p, false),
        real::lgetxattr(p, n, v, s)
    )
}
#[no_mangle]
pub unsafe extern "C" fn fgetxattr(
    fd: c_int,
    n: *const c_char,
    v: *mut c_void,
    s: size_t,
) -> ssize_t {
    fd_hook!(fd, ops::xattr_fd(fd), real::fgetxattr(fd, n, v, s))
}
#[no_mangle]
pub unsafe extern "C" fn listxattr(p: *const c_char, l: *mut c_char, s: size_t) -> ssize_t {
    path_hook!(AT, p, ops::xattr_path(p, true), real::listxattr(p, l, s))
}
#[no_mangle]
pub unsafe extern "C" fn llistxattr(p: *const c_char, l: *mut c_char, s: size_t) -> ssize_t {
    path_hook!(AT, p, ops::xattr_path(p, false), real::llistxattr(p, l, s))
}
#[no_mangle]
pub unsafe extern "C" fn flistxattr(fd: c_int, l: *mut c_char, s: size_t) -> ssize_t {
    fd_hook!(fd, ops::xattr_fd(fd), real::flistxattr(fd, l, s))
}
fn int(r: Op<isize>) -> Op<c_int> {
    r.map(|r| r.map(|v| v as c_int))
}
#[no_mangle]
pub unsafe extern "C" fn setxattr(
    p: *const c_char,
    n: *const c_char,
    v: *const c_void,
    s: size_t,
    f: c_int,
) -> c_int {
    path_hook!(
        AT,
        p,
        int(ops::xattr_path(p, true)),
        real::setxattr(p, n, v, s, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn lsetxattr(
    p: *const c_char,
    n: *const c_char,
    v: *const c_void,
    s: size_t,
    f: c_int,
) -> c_int {
    path_hook!(
        AT,
        p,
        int(ops::xattr_path(p, false)),
        real::lsetxattr(p, n, v, s, f)
    )
}
#[no_mangle]
pub unsafe extern "C" fn fsetxattr(
    fd: c_int,
    n: *const c_char,
    v: *const c_void,
    s: size_t,
    f: c_int,
) -> c_int {
    fd_hook!(fd, int(ops::xattr_fd(fd)), real::fsetxattr(fd, n, v, s, f))
}
#[no_mangle]
pub unsafe extern "C" fn removexattr(p: *const c_char, n: *const c_char) -> c_int {
    path_hook!(
        AT,
        p,
        int(ops::xattr_path(p, true)),
        real::removexattr(p, n)
    )
}
#[no_mangle]
pub unsafe extern "C" fn lremovexattr(p: *const c_char, n: *const c_char) -> c_int {
    path_hook!(
        AT,
        p,
        int(ops::xattr_path(p, false)),
        real::lremovexattr(p, n)
    )
}
#[no_mangle]
pub unsafe extern "C" fn fremovexattr(fd: c_int, n: *const c_char) -> c_int {
    fd_hook!(fd, int(ops::xattr_fd(fd)), real::fremovexattr(fd, n))
}

// ------------------------------------------------------------------ statfs

#[no_mangle]
pub unsafe extern "C" fn statfs(p: *const c_char, b: *mut libc::statfs) -> c_int {
    path_hook!(AT, p, ops::statfs(p, b), real::statfs(p, b))
}
#[no_mangle]
pub unsafe extern "C" fn statfs64(p: *const c_char, b: *mut libc::statfs64) -> c_int {
    path_hook!(AT, p, ops::statfs(p, b.cast()), real::statfs64(p, b))
}
#[no_mangle]
pub unsafe extern "C" fn fstatfs(fd: c_int, b: *mut libc::statfs) -> c_int {
    fd_hook!(fd, ops::fstatfs(fd, b), real::fstatfs(fd, b))
}
#[no_mangle]
pub unsafe extern "C" fn fstatfs64(fd: c_int, b: *mut libc::statfs64) -> c_int {
    fd_hook!(fd, ops::fstatfs(fd, b.cast()), real::fstatfs64(fd, b))
}
#[no_mangle]
pub unsafe extern "C" fn statvfs(p: *const c_char, b: *mut libc::statvfs) -> c_int {
    path_hook!(AT, p, ops::statvfs(p, b), real::statvfs(p, b))
}
#[no_mangle]
pub unsafe extern "C" fn statvfs64(p: *const c_char, b: *mut libc::statvfs64) -> c_int {
    path_hook!(AT, p, ops::statvfs(p, b.cast()), real::statvfs64(p, b))
}
#[no_mangle]
pub unsafe extern "C" fn pathconf(p: *const c_char, name: c_int) -> libc::c_long {
    path_hook!(AT, p, ops::pathconf(p, name), real::pathconf(p, name))
}
#[no_mangle]
pub unsafe extern "C" fn fpathconf(fd: c_int, name: c_int) -> libc::c_long {
    fd_hook!(fd, ops::fpathconf(fd, name), real::fpathconf(fd, name))
}
#[no_mangle]
pub unsafe extern "C" fn fstatvfs(fd: c_int, b: *mut libc::statvfs) -> c_int {
    fd_hook!(fd, ops::fstatvfs(fd, b), real::fstatvfs(fd, b))
}
#[no_mangle]
pub unsafe extern "C" fn fstatvfs64(fd: c_int, b: *mut libc::statvfs64) -> c_int {
    fd_hook!(fd, ops::fstatvfs(fd, b.cast()), real::fstatvfs64(fd, b))
}

// ------------------------------------------------------------------ cwd

#[no_mangle]
pub unsafe extern "C" fn chdir(p: *const c_char) -> c_int {
    // SAFETY: application C string.
    if !p.is_null() && unsafe { paths::maybe(AT, p) } {
        // SAFETY: operation or pass-through, see (O) in the module docs.
        let r = run(|| unsafe { ops::chdir(p) }, || -2);
        if r != -2 {
            return r;
        }
    }
    // SAFETY: the real chdir; on success the cwd is local again.
    let r = unsafe { real::chdir(p) };
    if r == 0 && paths::vcwd().is_some() {
        paths::set_vcwd(None);
    }
    r
}
#[no_mangle]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    if fdtable::is_ours(fd) {
        let r = run(|| ops::fchdir(fd), || -2);
        if r != -2 {
            return r;
        }
    }
    // SAFETY: the real fchdir; on success the cwd is local again.
    let r = unsafe { real::fchdir(fd) };
    if r == 0 && paths::vcwd().is_some() {
        paths::set_vcwd(None);
    }
    r
}
#[no_mangle]
pub unsafe extern "C" fn getcwd(b: *mut c_char, n: size_t) -> *mut c_char {
    if paths::vcwd().is_none() {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::getcwd(b, n) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::getcwd(b, n) },
        || unsafe { real::getcwd(b, n) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn get_current_dir_name() -> *mut c_char {
    if paths::vcwd().is_none() {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::get_current_dir_name() };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { ops::getcwd(std::ptr::null_mut(), 0) },
        || unsafe { real::get_current_dir_name() },
    )
}
#[no_mangle]
pub unsafe extern "C" fn realpath(p: *const c_char, out: *mut c_char) -> *mut c_char {
    path_hook!(AT, p, ops::realpath(p, out), real::realpath(p, out))
}
#[no_mangle]
pub unsafe extern "C" fn canonicalize_file_name(p: *const c_char) -> *mut c_char {
    path_hook!(
        AT,
        p,
        ops::realpath(p, std::ptr::null_mut()),
        real::canonicalize_file_name(p)
    )
}

// ------------------------------------------------------------------ directories

#[no_mangle]
pub unsafe extern "C" fn opendir(p: *const c_char) -> *mut DIR {
    path_hook!(AT, p, dir::opendir(p), real::opendir(p))
}
#[no_mangle]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut DIR {
    fd_hook!(fd, dir::fdopendir(fd), real::fdopendir(fd))
}
#[no_mangle]
pub unsafe extern "C" fn readdir(d: *mut DIR) -> *mut libc::dirent {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::readdir(d) };
    }
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    run(
        || Some(unsafe { dir::readdir(d) }.map(|p| p.cast())),
        std::ptr::null_mut,
    )
}
#[no_mangle]
pub unsafe extern "C" fn readdir64(d: *mut DIR) -> *mut libc::dirent64 {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::readdir64(d) };
    }
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    run(|| Some(unsafe { dir::readdir(d) }), std::ptr::null_mut)
}
#[no_mangle]
pub unsafe extern "C" fn readdir_r(
    d: *mut DIR,
    e: *mut libc::dirent,
    r: *mut *mut libc::dirent,
) -> c_int {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::readdir_r(d, e, r) };
    }
    let _g = Guard::enter();
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    std::panic::catch_unwind(AssertUnwindSafe(|| unsafe {
        dir::readdir_r(d, e.cast(), r.cast())
    }))
    .unwrap_or(libc::EIO)
}
#[no_mangle]
pub unsafe extern "C" fn readdir64_r(
    d: *mut DIR,
    e: *mut libc::dirent64,
    r: *mut *mut libc::dirent64,
) -> c_int {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::readdir64_r(d, e, r) };
    }
    let _g = Guard::enter();
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { dir::readdir_r(d, e, r) }))
        .unwrap_or(libc::EIO)
}
#[no_mangle]
pub unsafe extern "C" fn closedir(d: *mut DIR) -> c_int {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::closedir(d) };
    }
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    run(|| Some(Ok(unsafe { dir::closedir(d) })), || 0)
}
#[no_mangle]
pub unsafe extern "C" fn rewinddir(d: *mut DIR) {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::rewinddir(d) };
    }
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    unsafe { dir::rewinddir(d) }
}
#[no_mangle]
pub unsafe extern "C" fn dirfd(d: *mut DIR) -> c_int {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::dirfd(d) };
    }
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    unsafe { dir::dirfd(d) }
}
#[no_mangle]
pub unsafe extern "C" fn telldir(d: *mut DIR) -> c_long {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::telldir(d) };
    }
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    unsafe { dir::telldir(d) }
}
#[no_mangle]
pub unsafe extern "C" fn seekdir(d: *mut DIR, pos: c_long) {
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    if !unsafe { dir::is_ours(d) } {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::seekdir(d, pos) };
    }
    // SAFETY: a `DIR*` of the application, see (D) in the module docs.
    unsafe { dir::seekdir(d, pos) }
}
#[no_mangle]
pub unsafe extern "C" fn scandir(
    p: *const c_char,
    out: *mut *mut *mut libc::dirent,
    filter: Option<unsafe extern "C" fn(*const libc::dirent) -> c_int>,
    cmp: Option<unsafe extern "C" fn(*mut *const libc::dirent, *mut *const libc::dirent) -> c_int>,
) -> c_int {
    path_hook!(
        AT,
        p,
        dir::scandir(p, out, filter, cmp),
        real::scandir(p, out, filter, cmp)
    )
}
#[no_mangle]
pub unsafe extern "C" fn scandir64(
    p: *const c_char,
    out: *mut *mut *mut libc::dirent64,
    filter: Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>,
    cmp: Option<
        unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int,
    >,
) -> c_int {
    path_hook!(
        AT,
        p,
        dir::scandir(p, out, filter, cmp),
        real::scandir64(p, out, filter, cmp)
    )
}
#[no_mangle]
pub unsafe extern "C" fn getdents64(fd: c_int, b: *mut c_void, n: size_t) -> ssize_t {
    fd_hook!(fd, dir::getdents64(fd, b, n), real::getdents64(fd, b, n))
}

// ------------------------------------------------------------------ fds

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    fd_hook!(fd, ops::dup(fd), real::dup(fd))
}
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, new: c_int) -> c_int {
    if !fdtable::is_ours(fd) && !fdtable::is_ours(new) {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::dup2(fd, new) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || ops::dup3(fd, new, 0, true),
        || unsafe { real::dup2(fd, new) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, new: c_int, f: c_int) -> c_int {
    if !fdtable::is_ours(fd) && !fdtable::is_ours(new) {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::dup3(fd, new, f) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || ops::dup3(fd, new, f, false),
        || unsafe { real::dup3(fd, new, f) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    fd_hook!(fd, ops::fcntl(fd, cmd, arg), real::fcntl(fd, cmd, arg))
}
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_long) -> c_int {
    fd_hook!(fd, ops::fcntl(fd, cmd, arg), real::fcntl64(fd, cmd, arg))
}
#[no_mangle]
pub unsafe extern "C" fn flock(fd: c_int, op: c_int) -> c_int {
    fd_hook!(fd, ops::flock(fd), real::flock(fd, op))
}

// ------------------------------------------------------------------ stdio

#[no_mangle]
pub unsafe extern "C" fn fopen(p: *const c_char, m: *const c_char) -> *mut FILE {
    if m.is_null() {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::fopen(p, m) };
    }
    path_hook!(AT, p, stdio::fopen(p, m), real::fopen(p, m))
}
#[no_mangle]
pub unsafe extern "C" fn fopen64(p: *const c_char, m: *const c_char) -> *mut FILE {
    if m.is_null() {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::fopen64(p, m) };
    }
    path_hook!(AT, p, stdio::fopen(p, m), real::fopen64(p, m))
}
#[no_mangle]
pub unsafe extern "C" fn freopen(p: *const c_char, m: *const c_char, f: *mut FILE) -> *mut FILE {
    // SAFETY: path pre-check, see (M) in the module docs.
    if m.is_null()
        || (!p.is_null() && !unsafe { paths::maybe(AT, p) })
        || (p.is_null() && stdio::fileno_of(f).is_none())
    {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::freopen(p, m, f) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { stdio::freopen(p, m, f) },
        || unsafe { real::freopen(p, m, f) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn freopen64(p: *const c_char, m: *const c_char, f: *mut FILE) -> *mut FILE {
    // SAFETY: path pre-check, see (M) in the module docs.
    if m.is_null()
        || (!p.is_null() && !unsafe { paths::maybe(AT, p) })
        || (p.is_null() && stdio::fileno_of(f).is_none())
    {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::freopen64(p, m, f) };
    }
    // SAFETY: operation or pass-through, see (O) in the module docs.
    run(
        || unsafe { stdio::freopen(p, m, f) },
        || unsafe { real::freopen64(p, m, f) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, m: *const c_char) -> *mut FILE {
    if m.is_null() {
        // SAFETY: pass-through, see (P) in the module docs.
        return unsafe { real::fdopen(fd, m) };
    }
    fd_hook!(fd, stdio::fdopen(fd, m), real::fdopen(fd, m))
}
#[no_mangle]
pub unsafe extern "C" fn fileno(f: *mut FILE) -> c_int {
    match stdio::fileno_of(f) {
        Some(fd) => fd,
        // SAFETY: pass-through, see (P) in the module docs.
        None => unsafe { real::fileno(f) },
    }
}
#[no_mangle]
pub unsafe extern "C" fn fileno_unlocked(f: *mut FILE) -> c_int {
    match stdio::fileno_of(f) {
        Some(fd) => fd,
        // SAFETY: pass-through, see (P) in the module docs.
        None => unsafe { real::fileno_unlocked(f) },
    }
}

// ------------------------------------------------------------------ exec

#[no_mangle]
pub unsafe extern "C" fn execve(
    p: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let env = {
        let _g = Guard::enter();
        // SAFETY: `envp` is the application's null-terminated environment
        // array (or null), as execve requires; `exec_env` only reads it.
        std::panic::catch_unwind(|| unsafe { process::exec_env(envp) })
            .ok()
            .flatten()
    };
    let e = env.as_ref().map_or(envp, |e| e.as_ptr());
    // SAFETY: the real execve; `env` outlives it.
    unsafe { real::execve(p, argv, e) }
}
/// `execve` under a name of its own, for the C wrappers of `csrc/variadic.c`.
#[no_mangle]
pub unsafe extern "C" fn sealfs_hook_execve(
    p: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the caller's (execl/execle's) arguments, forwarded.
    unsafe { execve(p, argv, envp) }
}
/// `execvpe` under a name of its own, for `execlp` in `csrc/variadic.c`.
#[no_mangle]
pub unsafe extern "C" fn sealfs_hook_execvpe(
    f: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the caller's (execlp's) arguments, forwarded.
    unsafe { execvpe(f, argv, envp) }
}
#[no_mangle]
pub unsafe extern "C" fn execv(p: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the application's arguments and libc's own environment, to
    // our execve hook (same contract).
    unsafe { execve(p, argv, process::environ_ptr()) }
}
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    f: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let env = {
        let _g = Guard::enter();
        // SAFETY: `envp` is the application's null-terminated environment
        // array (or null), as execve requires; `exec_env` only reads it.
        std::panic::catch_unwind(|| unsafe { process::exec_env(envp) })
            .ok()
            .flatten()
    };
    let e = env.as_ref().map_or(envp, |e| e.as_ptr());
    // SAFETY: the real execvpe; `env` outlives it.
    unsafe { real::execvpe(f, argv, e) }
}
#[no_mangle]
pub unsafe extern "C" fn execvp(f: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the application's arguments and libc's own environment, to
    // our execvpe hook (same contract).
    unsafe { execvpe(f, argv, process::environ_ptr()) }
}

// ------------------------------------------------------------------ sockets

/// Sockets made while a thread is inside the shim (the client's
/// connections, also from its helper threads) move to a high fd number.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    // SAFETY: the real socket with the application's arguments.
    let fd = unsafe { real::socket(domain, ty, proto) };
    if fd < 0 || !crate::guard::busy() {
        return fd;
    }
    let saved = errno();
    let fd = fdtable::relocate_socket(fd);
    set_errno(saved);
    fd
}

// ------------------------------------------------------------------ spawn

#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    p: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    at: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: the application's arguments, unchanged, to the operation (which
    // only reads `fa`'s address and `envp`) and to the real function.
    run(
        || unsafe { spawn::posix_spawn(pid, p, fa, at, argv, envp, false) },
        || unsafe { real::posix_spawn(pid, p, fa, at, argv, envp) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    f: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    at: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: as for posix_spawn.
    run(
        || unsafe { spawn::posix_spawn(pid, f, fa, at, argv, envp, true) },
        || unsafe { real::posix_spawnp(pid, f, fa, at, argv, envp) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_init(
    fa: *mut libc::posix_spawn_file_actions_t,
) -> c_int {
    spawn::forget(fa);
    // SAFETY: the application's argument, unchanged.
    unsafe { real::posix_spawn_file_actions_init(fa) }
}
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_destroy(
    fa: *mut libc::posix_spawn_file_actions_t,
) -> c_int {
    spawn::forget(fa);
    // SAFETY: the application's argument, unchanged.
    unsafe { real::posix_spawn_file_actions_destroy(fa) }
}
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_adddup2(
    fa: *mut libc::posix_spawn_file_actions_t,
    fd: c_int,
    new: c_int,
) -> c_int {
    // SAFETY: the application's arguments, unchanged.
    let r = unsafe { real::posix_spawn_file_actions_adddup2(fa, fd, new) };
    if r == 0 {
        spawn::record_dup2(fa, fd, new);
    }
    r
}
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_addclose(
    fa: *mut libc::posix_spawn_file_actions_t,
    fd: c_int,
) -> c_int {
    // SAFETY: the application's arguments, unchanged.
    let r = unsafe { real::posix_spawn_file_actions_addclose(fa, fd) };
    if r == 0 {
        spawn::record_close(fa, fd);
    }
    r
}
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_addopen(
    fa: *mut libc::posix_spawn_file_actions_t,
    fd: c_int,
    p: *const c_char,
    fl: c_int,
    m: mode_t,
) -> c_int {
    // SAFETY: the application's arguments, unchanged.
    let r = unsafe { real::posix_spawn_file_actions_addopen(fa, fd, p, fl, m) };
    if r == 0 {
        spawn::record_open(fa, fd);
    }
    r
}
#[no_mangle]
pub unsafe extern "C" fn system(cmd: *const c_char) -> c_int {
    // SAFETY: the application's command string, to the operation and to the
    // real function.
    run(
        || unsafe { spawn::system(cmd) },
        || unsafe { real::system(cmd) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn popen(cmd: *const c_char, m: *const c_char) -> *mut FILE {
    // SAFETY: the application's strings, to the operation and the real function.
    run(
        || unsafe { spawn::popen(cmd, m) },
        || unsafe { real::popen(cmd, m) },
    )
}
#[no_mangle]
pub unsafe extern "C" fn pclose(f: *mut FILE) -> c_int {
    // SAFETY: the application's stream, to the operation (which only
    // compares its address unless it made it) and the real function.
    run(
        || unsafe { spawn::pclose(f) },
        || unsafe { real::pclose(f) },
    )
}
