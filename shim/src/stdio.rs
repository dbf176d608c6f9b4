//! stdio on SealFS files: `fopen`/`fdopen`/`freopen` give a `fopencookie`
//! stream whose callbacks call the shim, so `fread`/`fwrite`/`fgets`/
//! `fprintf`/`fseek`/`ftell`/`fflush`/`fclose` work. glibc's own streams
//! (`stdin`, `stdout`, `stderr`) write through internal calls no hook sees,
//! so when fd 0, 1 or 2 becomes a SealFS fd (a shell's `> /sealfs/out`, an
//! inherited fd after exec) the stream variable is replaced once by a
//! cookie stream that dispatches by fd number at each call (so it follows
//! later `dup2`s back to a terminal).

use crate::fdtable;
use crate::guard::Guard;
use crate::ops::{self, set_errno, Op};
use crate::real;
use libc::{c_char, c_int, c_void, size_t, ssize_t, FILE};
use parking_lot::RwLock;
use sealfs_client::Errno;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

#[repr(C)]
struct CookieIo {
    read: Option<unsafe extern "C" fn(*mut c_void, *mut c_char, size_t) -> ssize_t>,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, size_t) -> ssize_t>,
    seek: Option<unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
}

extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, io: CookieIo) -> *mut FILE;
}

struct Cookie {
    fd: c_int,
    file: AtomicUsize,
}

/// Cookie streams and their fds, for `fileno`.
static FILES: RwLock<BTreeMap<usize, c_int>> = parking_lot::const_rwlock(BTreeMap::new());
static NFILES: AtomicUsize = AtomicUsize::new(0);
static PROXY: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

fn with_guard<T>(f: impl FnOnce() -> T) -> T {
    let _g = Guard::enter();
    f()
}

fn done(r: Op<isize>, pass: impl FnOnce() -> isize) -> isize {
    match r {
        None => pass(),
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
    }
}

unsafe extern "C" fn c_read(c: *mut c_void, buf: *mut c_char, n: size_t) -> ssize_t {
    // SAFETY: `c` is the Cookie we gave fopencookie; `buf` holds `n` bytes.
    let fd = unsafe { &*(c as *const Cookie) }.fd;
    // SAFETY: `buf` holds `n` writable bytes (fopencookie's contract).
    with_guard(|| unsafe {
        done(ops::read(fd, buf.cast(), n, None), || {
            real::read(fd, buf.cast(), n)
        })
    })
}

unsafe extern "C" fn c_write(c: *mut c_void, buf: *const c_char, n: size_t) -> ssize_t {
    // SAFETY: as c_read.
    let fd = unsafe { &*(c as *const Cookie) }.fd;
    // SAFETY: `buf` holds `n` readable bytes (fopencookie's contract).
    let r = with_guard(|| unsafe {
        done(ops::write(fd, buf.cast(), n, None), || {
            real::write(fd, buf.cast(), n)
        })
    });
    // fopencookie treats a negative return as an error, and 0 as one too.
    if r < 0 {
        -1
    } else {
        r
    }
}

unsafe extern "C" fn c_seek(c: *mut c_void, off: *mut i64, whence: c_int) -> c_int {
    // SAFETY: as c_read; `off` is glibc's in/out offset.
    let (fd, o) = unsafe { ((*(c as *const Cookie)).fd, *off) };
    let r = with_guard(|| match ops::lseek(fd, o, whence) {
        // SAFETY: plain lseek on a kernel fd.
        None => unsafe { real::lseek64(fd, o, whence) },
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
    });
    if r < 0 {
        return -1;
    }
    // SAFETY: as above.
    unsafe { *off = r };
    0
}

unsafe extern "C" fn c_close(c: *mut c_void) -> c_int {
    // SAFETY: the Cookie box we leaked in `make`; glibc calls close once.
    let ck = unsafe { Box::from_raw(c as *mut Cookie) };
    let f = ck.file.load(Ordering::Relaxed);
    {
        let mut m = FILES.write();
        if m.remove(&f).is_some() {
            NFILES.fetch_sub(1, Ordering::Relaxed);
        }
    }
    for p in &PROXY {
        let _ = p.compare_exchange(f, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
    let fd = ck.fd;
    with_guard(|| match ops::close(fd) {
        // SAFETY: plain close of a kernel fd.
        None => unsafe { real::close(fd) },
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
    })
}

fn make(fd: c_int, mode: &std::ffi::CStr) -> *mut FILE {
    let ck = Box::into_raw(Box::new(Cookie {
        fd,
        file: AtomicUsize::new(0),
    }));
    let io = CookieIo {
        read: Some(c_read),
        write: Some(c_write),
        seek: Some(c_seek),
        close: Some(c_close),
    };
    // SAFETY: a valid cookie, mode string and callback table.
    let f = unsafe { fopencookie(ck.cast(), mode.as_ptr(), io) };
    if f.is_null() {
        // SAFETY: the cookie was never handed out.
        drop(unsafe { Box::from_raw(ck) });
        return f;
    }
    // SAFETY: `ck` lives until c_close.
    unsafe { &*ck }.file.store(f as usize, Ordering::Relaxed);
    FILES.write().insert(f as usize, fd);
    NFILES.fetch_add(1, Ordering::Relaxed);
    f
}

/// The fd of a cookie stream we made (`fileno` of ours), if it is one.
#[inline]
pub fn fileno_of(f: *mut FILE) -> Option<c_int> {
    if NFILES.load(Ordering::Relaxed) == 0 {
        return None;
    }
    FILES.read().get(&(f as usize)).copied()
}

/// `fopen` flags from a mode string.
fn parse_mode(m: &[u8]) -> Result<c_int, Errno> {
    let plus = m.iter().take_while(|c| **c != b',').any(|c| *c == b'+');
    let mut fl = match (m.first(), plus) {
        (Some(b'r'), false) => libc::O_RDONLY,
        (Some(b'r'), true) => libc::O_RDWR,
        (Some(b'w'), false) => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        (Some(b'w'), true) => libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
        (Some(b'a'), false) => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        (Some(b'a'), true) => libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
        _ => return Err(Errno::EINVAL),
    };
    for c in m.iter().skip(1).take_while(|c| **c != b',') {
        match c {
            b'x' => fl |= libc::O_EXCL,
            b'e' => fl |= libc::O_CLOEXEC,
            _ => {}
        }
    }
    Ok(fl)
}

/// The mode string for the cookie stream (only r/w/a and '+' matter).
fn cookie_mode(fl: c_int) -> &'static std::ffi::CStr {
    match (fl & libc::O_ACCMODE, fl & libc::O_APPEND != 0) {
        (libc::O_RDONLY, _) => c"r",
        (libc::O_WRONLY, false) => c"w",
        (libc::O_WRONLY, true) => c"a",
        (_, false) => c"r+",
        (_, true) => c"a+",
    }
}

/// # Safety
/// `p` and `mode` are C strings.
pub unsafe fn fopen(p: *const c_char, mode: *const c_char) -> Op<*mut FILE> {
    // SAFETY: forwarded caller guarantee.
    let p = match unsafe { crate::paths::resolve(libc::AT_FDCWD, p) } {
        Ok(crate::paths::Loc::Local) => return None,
        Ok(crate::paths::Loc::Seal(s)) => s,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: caller guarantees a C string.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    Some((|| {
        let fl = parse_mode(m)?;
        let fd = ops::open_seal(&p, fl, 0o666)?;
        let f = make(fd, cookie_mode(fl));
        if f.is_null() {
            let _ = ops::close(fd);
            return Err(Errno::ENOMEM);
        }
        Ok(f)
    })())
}

/// # Safety
/// `mode` is a C string.
pub unsafe fn fdopen(fd: c_int, mode: *const c_char) -> Op<*mut FILE> {
    let of = fdtable::get(fd)?;
    // SAFETY: caller guarantees a C string.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    Some((|| {
        let fl = parse_mode(m)?;
        let want_w = fl & libc::O_ACCMODE != libc::O_RDONLY;
        let want_r = fl & libc::O_ACCMODE != libc::O_WRONLY;
        if (want_w && !of.writable()) || (want_r && !of.readable()) {
            return Err(Errno::EINVAL);
        }
        let f = make(
            fd,
            cookie_mode(fl & !libc::O_APPEND | (of.flags.load(Ordering::Relaxed) & libc::O_APPEND)),
        );
        if f.is_null() {
            return Err(Errno::ENOMEM);
        }
        Ok(f)
    })())
}

fn std_var(n: c_int) -> *mut *mut FILE {
    let name: &std::ffi::CStr = match n {
        0 => c"stdin",
        1 => c"stdout",
        _ => c"stderr",
    };
    // SAFETY: looking up a data symbol by a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }.cast()
}

/// Makes `stdin`/`stdout`/`stderr` (for fd `n` in 0..=2) a cookie stream
/// that dispatches by fd number, once. Flushes the old stream first.
pub fn proxy_std(n: c_int) {
    let Some(slot) = usize::try_from(n).ok().and_then(|i| PROXY.get(i)) else {
        return;
    };
    if slot.load(Ordering::Relaxed) != 0 {
        return;
    }
    let var = std_var(n);
    if var.is_null() {
        return;
    }
    // SAFETY: `var` is the address of glibc's (or the program's copy of the)
    // stream variable; flushing the old stream writes pending output to
    // where the fd pointed so far.
    unsafe {
        let old = *var;
        if !old.is_null() && n > 0 {
            libc::fflush(old);
        }
    }
    let f = make(n, if n == 0 { c"r" } else { c"w" });
    if f.is_null() {
        return;
    }
    if n == 2 {
        // SAFETY: setting a fresh stream unbuffered, as stderr is.
        unsafe { libc::setvbuf(f, std::ptr::null_mut(), libc::_IONBF, 0) };
    } else if n == 1 {
        // SAFETY: line buffering keeps interleaving with stderr sane.
        unsafe { libc::setvbuf(f, std::ptr::null_mut(), libc::_IOLBF, 0) };
    }
    slot.store(f as usize, Ordering::Relaxed);
    // SAFETY: replacing the stream pointer (see the module comment).
    unsafe { *var = f };
}

/// `freopen` onto a SealFS path.
///
/// # Safety
/// `p`, `mode` C strings; `stream` a live stream.
pub unsafe fn freopen(p: *const c_char, mode: *const c_char, stream: *mut FILE) -> Op<*mut FILE> {
    if p.is_null() {
        return fileno_of(stream).map(|_| Ok(stream));
    }
    // SAFETY: forwarded caller guarantee.
    let sp = match unsafe { crate::paths::resolve(libc::AT_FDCWD, p) } {
        Ok(crate::paths::Loc::Local) => return None,
        Ok(crate::paths::Loc::Seal(s)) => s,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: caller guarantees a C string.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    let std_n = (0..3).find(|n| {
        let v = std_var(*n);
        // SAFETY: reading the stream variable.
        !v.is_null() && unsafe { *v } == stream
    });
    Some((|| {
        let fl = parse_mode(m)?;
        let fd = ops::open_seal(&sp, fl, 0o666)?;
        if let Some(n) = std_n {
            // SAFETY: flushing the stream being replaced.
            unsafe { libc::fflush(stream) };
            let r = ops::dup3(fd, n, 0, true);
            let _ = ops::close(fd);
            match r {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(Errno::EBADF),
            }
            let v = std_var(n);
            // SAFETY: reading the (now proxied) stream variable.
            return Ok(unsafe { *v });
        }
        // SAFETY: closing the old stream as freopen does.
        unsafe { libc::fclose(stream) };
        let f = make(fd, cookie_mode(fl));
        if f.is_null() {
            let _ = ops::close(fd);
            return Err(Errno::ENOMEM);
        }
        Ok(f)
    })())
}

pub fn fork_prepare() {
    std::mem::forget(FILES.write());
}

pub fn fork_release() {
    // SAFETY: fork_prepare left the lock held by this thread (parent) or by
    // the only thread there is (child).
    unsafe { FILES.force_unlock_write() };
}
