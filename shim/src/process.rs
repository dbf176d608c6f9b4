//! Processes: `pthread_atfork` handlers, carrying SealFS fds and the
//! virtual cwd across `exec`, and restoring them in the new image.
//!
//! Before an exec, every SealFS fd that is not close-on-exec is described in
//! `SEALFS_FDS=m<memfd>;<fd>,<slot>,<offset>,<flags>,<kind>,<ino>,<hex path>;…`
//! and the cwd in `SEALFS_CWD=<hex path>`, set in a copy of the environment
//! handed to the real exec. The reserved kernel fds (`/dev/null`) and the
//! offsets memfd survive the exec; the new image's constructor only parses
//! these variables (no connection) and removes them from its environment.

use crate::fdtable::{self, OpenFile, Pos};
use crate::{config, paths, real, shm, stdio};
use libc::{c_char, c_int};
use sealfs_client::FileKind;
use std::ffi::{CStr, CString};
use std::sync::Arc;

extern "C" {
    static environ: *const *const c_char;
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn kind_char(k: FileKind) -> char {
    match k {
        FileKind::File => 'f',
        FileKind::Dir => 'd',
        FileKind::Symlink => 'l',
    }
}

/// The SealFS fds an exec carries: those that are not close-on-exec.
pub fn carried_files() -> Vec<(c_int, Arc<OpenFile>)> {
    fdtable::snapshot()
        .into_iter()
        .filter(|(fd, _)| {
            // SAFETY: reading the close-on-exec flag of a kernel fd.
            let fdfl = unsafe { real::fcntl(*fd, libc::F_GETFD, 0) };
            fdfl >= 0 && fdfl & libc::FD_CLOEXEC == 0
        })
        .collect()
}

/// The variables to add for an exec whose new image has `files` open, and
/// whether the memfd must survive it.
fn exec_vars(files: Vec<(c_int, Arc<OpenFile>)>) -> (Vec<CString>, bool) {
    let mut vars = Vec::new();
    let mut parts = Vec::new();
    for (fd, f) in files {
        let flags = f.flags.load(std::sync::atomic::Ordering::Relaxed);
        parts.push(format!(
            "{fd},{},{},{flags},{},{},{}",
            f.pos.slot().unwrap_or(0),
            f.pos.get(),
            kind_char(f.kind),
            f.ino,
            hex(&f.path())
        ));
    }
    let mut need_memfd = false;
    if !parts.is_empty() {
        let m = shm::fd().unwrap_or(-1);
        need_memfd = m >= 0;
        if let Ok(c) = CString::new(format!("SEALFS_FDS=m{m};{}", parts.join(";"))) {
            vars.push(c);
        }
    }
    if let Some(cwd) = paths::vcwd() {
        if let Ok(c) = CString::new(format!("SEALFS_CWD={}", hex(&cwd))) {
            vars.push(c);
        }
    }
    (vars, need_memfd)
}

/// An environment for an exec: `envp` without old SealFS variables plus
/// the current ones. Keep the returned value alive until the exec.
pub struct ExecEnv {
    _vars: Vec<CString>,
    ptrs: Vec<*const c_char>,
    memfd: Option<c_int>,
}

impl ExecEnv {
    pub fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

impl Drop for ExecEnv {
    fn drop(&mut self) {
        // The exec failed: the memfd goes back to close-on-exec.
        if let Some(m) = self.memfd {
            // SAFETY: setting a flag on our own fd.
            unsafe { real::fcntl(m, libc::F_SETFD, libc::FD_CLOEXEC as libc::c_long) };
        }
    }
}

/// `None` when there is nothing to carry (use the caller's envp as is).
///
/// # Safety
/// `envp` is null or a null-terminated array of C strings.
pub unsafe fn exec_env(envp: *const *const c_char) -> Option<ExecEnv> {
    // SAFETY: forwarded caller guarantee.
    unsafe { exec_env_for(envp, carried_files()) }
}

/// [`exec_env`] for a new image that will have `files` open (a spawn whose
/// file actions moved fds around).
///
/// # Safety
/// `envp` is null or a null-terminated array of C strings.
pub unsafe fn exec_env_for(
    envp: *const *const c_char,
    files: Vec<(c_int, Arc<OpenFile>)>,
) -> Option<ExecEnv> {
    let (vars, need_memfd) = exec_vars(files);
    if vars.is_empty() {
        return None;
    }
    let mut ptrs = Vec::new();
    if !envp.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: walking a null-terminated array (caller).
            let p = unsafe { *envp.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: each element is a C string.
            let b = unsafe { CStr::from_ptr(p) }.to_bytes();
            if !b.starts_with(b"SEALFS_FDS=") && !b.starts_with(b"SEALFS_CWD=") {
                ptrs.push(p);
            }
            i += 1;
        }
    }
    ptrs.extend(vars.iter().map(|v| v.as_ptr()));
    ptrs.push(std::ptr::null());
    let memfd = if need_memfd { shm::fd() } else { None };
    if let Some(m) = memfd {
        // SAFETY: letting our own memfd survive the exec.
        unsafe { real::fcntl(m, libc::F_SETFD, 0) };
    }
    Some(ExecEnv {
        _vars: vars,
        ptrs,
        memfd,
    })
}

/// The process environment.
pub fn environ_ptr() -> *const *const c_char {
    // SAFETY: reading libc's environ pointer.
    unsafe { environ }
}

fn getenv(name: &CStr) -> Option<String> {
    // SAFETY: getenv with a NUL-terminated name; copied at once.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: a C string from getenv.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn is_dev_null(fd: c_int) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat into a local buffer.
    if unsafe { real::fstat(fd, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: filled by a successful fstat.
    let st = unsafe { st.assume_init() };
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == libc::makedev(1, 3)
}

/// In a new image: takes over the fds and cwd the old image described.
fn restore() {
    if let Some(v) = getenv(c"SEALFS_FDS") {
        let mut it = v.split(';');
        let memfd_ok = it
            .next()
            .and_then(|m| m.strip_prefix('m'))
            .and_then(|m| m.parse::<c_int>().ok())
            .filter(|m| *m >= 0)
            .is_some_and(shm::attach);
        for e in it {
            let f: Vec<&str> = e.split(',').collect();
            if f.len() != 7 {
                continue;
            }
            let (Ok(fd), Ok(slot), Ok(pos), Ok(flags), Ok(ino), Some(path)) = (
                f[0].parse::<c_int>(),
                f[1].parse::<u32>(),
                f[2].parse::<u64>(),
                f[3].parse::<c_int>(),
                f[5].parse::<u64>(),
                unhex(f[6]),
            ) else {
                continue;
            };
            let kind = match f[4] {
                "d" => FileKind::Dir,
                "l" => FileKind::Symlink,
                _ => FileKind::File,
            };
            if !is_dev_null(fd) {
                continue;
            }
            let pos = match (memfd_ok, shm::slot(slot)) {
                (true, Some(s)) if slot != 0 => Pos::Shared(slot, s),
                _ => Pos::Own(std::sync::atomic::AtomicU64::new(pos)),
            };
            if fdtable::insert(fd, Arc::new(OpenFile::new(path, kind, ino, flags, pos))) && fd <= 2
            {
                stdio::proxy_std(fd);
            }
        }
        // SAFETY: single-threaded at constructor time.
        unsafe { libc::unsetenv(c"SEALFS_FDS".as_ptr()) };
    }
    if let Some(c) = getenv(c"SEALFS_CWD") {
        if let Some(p) = unhex(&c) {
            paths::set_vcwd(Some(p));
        }
        // SAFETY: single-threaded at constructor time.
        unsafe { libc::unsetenv(c"SEALFS_CWD".as_ptr()) };
    }
}

extern "C" fn prepare() {
    paths::fork_prepare();
    stdio::fork_prepare();
    fdtable::fork_prepare();
}

extern "C" fn parent() {
    fdtable::fork_parent();
    stdio::fork_release();
    paths::fork_release();
}

extern "C" fn child() {
    crate::guard::fork_child();
    fdtable::fork_child();
    stdio::fork_release();
    paths::fork_release();
    config::forget_client();
}

/// The library constructor: registers the fork handlers and restores what
/// an exec carried. No connection is made here.
pub extern "C" fn init() {
    let _g = crate::guard::Guard::enter();
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: registering plain extern "C" handlers.
        unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        let _ = config::config();
        restore();
    });
}

/// Whether this process holds any SealFS state a `vfork` child could
/// corrupt: open SealFS fds, a virtual cwd, or a connected client.
pub fn has_state() -> bool {
    fdtable::has_files() || paths::vcwd().is_some() || config::connected()
}

/// The target of the `vfork` trampoline (`csrc/variadic.c`): `fork` while
/// the shim holds state, the real `vfork` otherwise.
#[no_mangle]
pub extern "C" fn sealfs_vfork_target() -> usize {
    if has_state() {
        return libc::fork as *const () as usize;
    }
    real::vfork_addr()
}

/// The library destructor (see `lib.rs`).
pub extern "C" fn fini() {
    let _g = crate::guard::Guard::enter();
    let _ = std::panic::catch_unwind(fdtable::exit_unlinks);
}
