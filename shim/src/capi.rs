//! The direct-link C API (`include/sealfs.h`). Paths are SealFS paths
//! (`/a/b`, no prefix); fds are the same reserved kernel fds the
//! interposed calls use, so `read`/`write`/`close` work on them too.
//! Errors are -1 with `errno`.

#![allow(clippy::missing_safety_doc)]

use crate::guard::Guard;
use crate::ops::{self, set_errno};
use crate::{attr, config};
use libc::{c_char, c_int, c_void, mode_t, off_t, size_t, ssize_t};
use sealfs_client::Errno;
use std::ffi::CStr;
use std::panic::AssertUnwindSafe;

fn api<T>(fail: T, f: impl FnOnce() -> Result<T, Errno>) -> T {
    let _g = Guard::enter();
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e);
            fail
        }
        Err(_) => {
            set_errno(Errno::EIO);
            fail
        }
    }
}

/// # Safety
/// `p` is null or a C string.
unsafe fn path(p: *const c_char) -> Result<String, Errno> {
    if p.is_null() {
        return Err(Errno(libc::EFAULT));
    }
    // SAFETY: caller guarantees a C string.
    let s = unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Errno::EINVAL)?;
    sealfs_proto::path::normalize(s)
}

fn fdop<T>(r: ops::Op<T>) -> Result<T, Errno> {
    r.unwrap_or(Err(Errno::EBADF))
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_init(manager: *const c_char) -> c_int {
    api(-1, || {
        if !manager.is_null() {
            // SAFETY: caller passes a C string.
            let m = unsafe { CStr::from_ptr(manager) }
                .to_str()
                .map_err(|_| Errno::EINVAL)?;
            config::set_manager(m);
        }
        config::client()?;
        Ok(0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_open(p: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: forwarded caller guarantee.
    api(-1, || ops::open_seal(&unsafe { path(p) }?, flags, mode))
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_close(fd: c_int) -> c_int {
    api(-1, || fdop(ops::close(fd)))
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    // SAFETY: caller guarantees `buf` holds `n` bytes.
    api(-1, || fdop(unsafe { ops::read(fd, buf, n, None) }))
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    // SAFETY: caller guarantees `buf` holds `n` bytes.
    api(-1, || fdop(unsafe { ops::write(fd, buf, n, None) }))
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_pread(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    off: off_t,
) -> ssize_t {
    // SAFETY: caller guarantees `buf` holds `n` bytes.
    api(-1, || fdop(unsafe { ops::read(fd, buf, n, Some(off)) }))
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_pwrite(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    off: off_t,
) -> ssize_t {
    // SAFETY: caller guarantees `buf` holds `n` bytes.
    api(-1, || fdop(unsafe { ops::write(fd, buf, n, Some(off)) }))
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_stat(p: *const c_char, st: *mut libc::stat) -> c_int {
    api(-1, || {
        // SAFETY: forwarded caller guarantee.
        let p = unsafe { path(p) }?;
        if st.is_null() {
            return Err(Errno(libc::EFAULT));
        }
        let c = config::client()?;
        let i = c.stat(&p)?;
        // SAFETY: `st` is a writable struct stat (caller).
        attr::fill_stat(unsafe { &mut *st }, &i, c.chunk_size().clamp(4096, 4 << 20));
        Ok(0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_mkdir(p: *const c_char, mode: mode_t) -> c_int {
    api(-1, || {
        // SAFETY: forwarded caller guarantee.
        let p = unsafe { path(p) }?;
        // SAFETY: cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        config::client()?.mkdir(&p, mode & 0o7777, uid, gid)?;
        Ok(0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_unlink(p: *const c_char) -> c_int {
    // SAFETY: forwarded caller guarantee.
    api(-1, || {
        config::client()?.unlink(&unsafe { path(p) }?).map(|_| 0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_rmdir(p: *const c_char) -> c_int {
    // SAFETY: forwarded caller guarantee.
    api(-1, || {
        config::client()?.rmdir(&unsafe { path(p) }?).map(|_| 0)
    })
}

#[no_mangle]
pub unsafe extern "C" fn sealfs_rename(a: *const c_char, b: *const c_char) -> c_int {
    api(-1, || {
        // SAFETY: forwarded caller guarantee.
        let (a, b) = unsafe { (path(a)?, path(b)?) };
        config::client()?.rename(&a, &b, 0).map(|_| 0)
    })
}

/// Calls `cb(name, arg)` for every entry of the directory (no `.`/`..`).
#[no_mangle]
pub unsafe extern "C" fn sealfs_readdir(
    p: *const c_char,
    cb: Option<unsafe extern "C" fn(*const c_char, *mut c_void)>,
    arg: *mut c_void,
) -> c_int {
    api(-1, || {
        // SAFETY: forwarded caller guarantee.
        let p = unsafe { path(p) }?;
        let cb = cb.ok_or(Errno(libc::EFAULT))?;
        for e in config::client()?.readdir(&p)? {
            let Ok(name) = std::ffi::CString::new(e.name) else {
                continue;
            };
            // SAFETY: calling the application's callback with a C string
            // that lives for the call.
            unsafe { cb(name.as_ptr(), arg) };
        }
        Ok(0)
    })
}
