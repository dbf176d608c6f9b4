//! Process creation that glibc does through internal entry points no hook
//! sees: `posix_spawn`/`posix_spawnp` (internal `__execve` in a CLONE_VM
//! child), `system` and `popen` (internal `__posix_spawn`).
//!
//! The child's new image is preloaded too (it inherits `LD_PRELOAD`), and
//! the reserved kernel fds (`/dev/null`) are inherited unless
//! close-on-exec, so what it lacks is the description of each SealFS fd
//! and the virtual cwd: the same `SEALFS_FDS`/`SEALFS_CWD` variables the
//! `execve` hook adds ([`crate::process`]). For `posix_spawn` the file
//! actions decide which fds the child has: the hooks of
//! `posix_spawn_file_actions_add{dup2,close,open}` record them (the struct
//! is opaque), and the spawn replays them on a copy of the fd table.
//! `system` and `popen` are re-implemented on the real `posix_spawn` when
//! the shim holds SealFS state, and pass through otherwise.

use crate::fdtable::{self, OpenFile};
use crate::ops::{errno, set_errno, Op};
use crate::{paths, process, real};
use libc::{c_char, c_int, pid_t, FILE};
use parking_lot::Mutex;
use sealfs_client::Errno;
use std::collections::HashMap;
use std::sync::Arc;

enum Act {
    Dup2(c_int, c_int),
    Close(c_int),
    Open(c_int),
}

/// Recorded file actions, by the address of their `posix_spawn_file_actions_t`.
static ACTIONS: Mutex<Option<HashMap<usize, Vec<Act>>>> = parking_lot::const_mutex(None);
/// `popen` streams made here, and their child.
static POPENS: Mutex<Option<HashMap<usize, pid_t>>> = parking_lot::const_mutex(None);

fn record(fa: *mut libc::posix_spawn_file_actions_t, a: Act) {
    ACTIONS
        .lock()
        .get_or_insert_with(HashMap::new)
        .entry(fa as usize)
        .or_default()
        .push(a);
}

pub fn forget(fa: *mut libc::posix_spawn_file_actions_t) {
    if let Some(m) = ACTIONS.lock().as_mut() {
        m.remove(&(fa as usize));
    }
}

pub fn record_dup2(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, new: c_int) {
    record(fa, Act::Dup2(fd, new));
}
pub fn record_close(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int) {
    record(fa, Act::Close(fd));
}
pub fn record_open(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int) {
    record(fa, Act::Open(fd));
}

/// Whether a spawn needs SealFS variables at all (the one check the
/// pass-through path pays beyond an uncontended lock-free load or two).
pub fn needed() -> bool {
    fdtable::has_files() || paths::vcwd().is_some()
}

/// The SealFS fds the spawned image will have after the file actions `fa`.
fn files_after(fa: *const libc::posix_spawn_file_actions_t) -> Vec<(c_int, Arc<OpenFile>)> {
    // (fd, file, close-on-exec) as the child starts: the parent's table.
    let mut t: Vec<(c_int, Arc<OpenFile>, bool)> = fdtable::snapshot()
        .into_iter()
        .map(|(fd, f)| {
            // SAFETY: reading the close-on-exec flag of a kernel fd.
            let fl = unsafe { real::fcntl(fd, libc::F_GETFD, 0) };
            (fd, f, fl < 0 || fl & libc::FD_CLOEXEC != 0)
        })
        .collect();
    if !fa.is_null() {
        if let Some(acts) = ACTIONS.lock().as_ref().and_then(|m| m.get(&(fa as usize))) {
            for a in acts {
                match *a {
                    Act::Close(fd) | Act::Open(fd) => t.retain(|e| e.0 != fd),
                    // dup2(fd, fd) in a spawn clears close-on-exec (glibc >= 2.29).
                    Act::Dup2(fd, new) if fd == new => {
                        t.iter_mut().filter(|e| e.0 == fd).for_each(|e| e.2 = false)
                    }
                    Act::Dup2(fd, new) => {
                        let src = t.iter().find(|e| e.0 == fd).map(|e| e.1.clone());
                        t.retain(|e| e.0 != new);
                        if let Some(f) = src {
                            t.push((new, f, false));
                        }
                    }
                }
            }
        }
    }
    t.into_iter()
        .filter(|e| !e.2)
        .map(|(fd, f, _)| (fd, f))
        .collect()
}

/// `posix_spawn`/`posix_spawnp` with SealFS state: the real one, with the
/// SealFS variables in a copy of `envp`.
///
/// # Safety
/// The arguments of `posix_spawn`.
pub unsafe fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
    search: bool,
) -> Op<c_int> {
    if !needed() {
        return None;
    }
    // SAFETY: `envp` is the caller's environment array.
    let env = unsafe { process::exec_env_for(envp.cast(), files_after(fa)) }?;
    let e = env.as_ptr() as *const *mut c_char;
    // SAFETY: the caller's arguments, with an environment that outlives the
    // call (`env` is dropped after it, which restores the memfd's flag).
    let r = unsafe {
        if search {
            real::posix_spawnp(pid, path, fa, attr, argv, e)
        } else {
            real::posix_spawn(pid, path, fa, attr, argv, e)
        }
    };
    drop(env);
    Some(Ok(r))
}

fn sh_argv(cmd: *const c_char) -> [*mut c_char; 4] {
    [
        c"sh".as_ptr().cast_mut(),
        c"-c".as_ptr().cast_mut(),
        cmd.cast_mut(),
        std::ptr::null_mut(),
    ]
}

/// `/bin/sh -c cmd` with SealFS variables; the fd table as the child will
/// have it is `files`, the file actions `fa` (may be null).
///
/// # Safety
/// `cmd` is a C string; `fa`/`attr` null or initialised.
unsafe fn spawn_sh(
    cmd: *const c_char,
    fa: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    files: Vec<(c_int, Arc<OpenFile>)>,
) -> Result<pid_t, Errno> {
    let argv = sh_argv(cmd);
    let environ = process::environ_ptr();
    // SAFETY: libc's environment array.
    let env = unsafe { process::exec_env_for(environ, files) };
    let e = env.as_ref().map_or(environ, |e| e.as_ptr()) as *const *mut c_char;
    let mut pid: pid_t = 0;
    // SAFETY: valid pid out-pointer, literal path, null-terminated argv and
    // an environment that outlives the call.
    let r = unsafe { real::posix_spawn(&mut pid, c"/bin/sh".as_ptr(), fa, attr, argv.as_ptr(), e) };
    drop(env);
    if r != 0 {
        return Err(Errno(r));
    }
    Ok(pid)
}

fn wait(pid: pid_t) -> c_int {
    let mut st: c_int = 0;
    loop {
        // SAFETY: waiting for our own child into a local.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            return st;
        }
        if r < 0 && errno() != Errno(libc::EINTR) {
            return -1;
        }
    }
}

/// `system(cmd)` with SealFS state, as POSIX specifies it: SIGINT and
/// SIGQUIT ignored and SIGCHLD blocked in the caller while it waits; the
/// child gets the original mask and dispositions.
///
/// # Safety
/// `cmd` is null or a C string.
pub unsafe fn system(cmd: *const c_char) -> Op<c_int> {
    if cmd.is_null() || !needed() {
        return None;
    }
    // SAFETY: plain signal-state calls on local, zero-initialised structs;
    // everything changed here is restored before returning.
    unsafe {
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut ign.sa_mask);
        let mut oint: libc::sigaction = std::mem::zeroed();
        let mut oquit: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGINT, &ign, &mut oint);
        libc::sigaction(libc::SIGQUIT, &ign, &mut oquit);
        let mut chld: libc::sigset_t = std::mem::zeroed();
        let mut omask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, &mut omask);

        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        let mut def: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut def);
        if oint.sa_sigaction != libc::SIG_IGN {
            libc::sigaddset(&mut def, libc::SIGINT);
        }
        if oquit.sa_sigaction != libc::SIG_IGN {
            libc::sigaddset(&mut def, libc::SIGQUIT);
        }
        libc::posix_spawnattr_setsigdefault(&mut attr, &def);
        libc::posix_spawnattr_setsigmask(&mut attr, &omask);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        );

        let status = match spawn_sh(cmd, std::ptr::null(), &attr, process::carried_files()) {
            Ok(pid) => wait(pid),
            Err(_) => 127 << 8, // as glibc: "the shell could not be run"
        };
        let saved = errno();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::sigaction(libc::SIGINT, &oint, std::ptr::null_mut());
        libc::sigaction(libc::SIGQUIT, &oquit, std::ptr::null_mut());
        libc::sigprocmask(libc::SIG_SETMASK, &omask, std::ptr::null_mut());
        set_errno(saved);
        Some(Ok(status))
    }
}

/// `popen(cmd, mode)` with SealFS state: a pipe, `/bin/sh -c cmd` spawned
/// with its end on fd 0 or 1, and a stream on ours (close-on-exec, so
/// later children never hold it, as POSIX asks of popen).
///
/// # Safety
/// `cmd` and `mode` are C strings.
pub unsafe fn popen(cmd: *const c_char, mode: *const c_char) -> Op<*mut FILE> {
    if cmd.is_null() || mode.is_null() || !needed() {
        return None;
    }
    // SAFETY: the caller's mode string.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    let read = match m.first() {
        Some(b'r') => true,
        Some(b'w') => false,
        _ => return Some(Err(Errno::EINVAL)),
    };
    let mut p = [-1 as c_int; 2];
    // SAFETY: pipe2 into a local array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Some(Err(errno()));
    }
    let (ours, theirs, target) = if read {
        (p[0], p[1], 1)
    } else {
        (p[1], p[0], 0)
    };
    let close_both = || {
        // SAFETY: closing the pipe made above.
        unsafe {
            real::close(ours);
            real::close(theirs);
        }
    };
    let mut files = process::carried_files();
    files.retain(|(fd, _)| *fd != target);
    // SAFETY: file actions on a local, destroyed below; the real functions
    // are used so nothing is recorded.
    let r = unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        real::posix_spawn_file_actions_init(&mut fa);
        // dup2 onto the target clears close-on-exec (also when theirs == target).
        real::posix_spawn_file_actions_adddup2(&mut fa, theirs, target);
        let r = spawn_sh(cmd, &fa, std::ptr::null(), files);
        real::posix_spawn_file_actions_destroy(&mut fa);
        r
    };
    let pid = match r {
        Ok(pid) => pid,
        Err(e) => {
            close_both();
            return Some(Err(e));
        }
    };
    // SAFETY: the child holds its end now; ours becomes the stream.
    unsafe { real::close(theirs) };
    let fmode = if read { c"r" } else { c"w" };
    // SAFETY: a stream on our own pipe fd.
    let f = unsafe { real::fdopen(ours, fmode.as_ptr()) };
    if f.is_null() {
        let e = errno();
        // SAFETY: closing our end; the child sees EOF or EPIPE and exits.
        unsafe { real::close(ours) };
        wait(pid);
        return Some(Err(e));
    }
    POPENS
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(f as usize, pid);
    Some(Ok(f))
}

/// `pclose` of a stream [`popen`] made: close it and wait for the child.
///
/// # Safety
/// `f` is a stream.
pub unsafe fn pclose(f: *mut FILE) -> Op<c_int> {
    let pid = POPENS
        .lock()
        .as_mut()
        .and_then(|m| m.remove(&(f as usize)))?;
    // SAFETY: a stream made by fdopen in `popen`.
    unsafe { libc::fclose(f) };
    let st = wait(pid);
    Some(if st < 0 {
        Err(Errno(libc::ECHILD))
    } else {
        Ok(st)
    })
}
