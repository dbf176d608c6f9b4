//! Thin wrappers around the few libc calls the daemon makes: unmounting,
//! signal masks, and the notification pipe of `--background`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a `-1` return into the thread's `errno`.
macro_rules! syscall {
    ($e:expr) => {{
        let r = $e;
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }};
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `umount2(path, flags)`.
pub fn umount2(path: &Path, flags: i32) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    syscall!(unsafe { libc::umount2(c.as_ptr(), flags) }).map(|_| ())
}

/// `MNT_DETACH`: lazy unmount.
pub const MNT_DETACH: i32 = libc::MNT_DETACH;

/// The signals that end a mount.
const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we own; a zeroed
    // sigset_t is a valid value to start from.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in
/// every thread it starts afterwards), so that [`wait_stop_signal`] receives
/// them.
pub fn block_stop_signals() -> io::Result<()> {
    let set = stop_set();
    // SAFETY: `set` is a valid, initialised signal set; the old mask is not
    // asked for (null).
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Waits for one of the blocked stop signals; returns its number.
pub fn wait_stop_signal() -> i32 {
    let set = stop_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is valid and `sig` is a valid place to store the result.
        let r = unsafe { libc::sigwait(&set, &mut sig) };
        if r == 0 {
            return sig;
        }
    }
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    syscall!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// Clears close-on-exec on `fd` so a child process inherits it.
pub fn inherit(fd: i32) -> io::Result<()> {
    // SAFETY: F_SETFD on an fd we own changes only its flags.
    syscall!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(|_| ())
}

/// Takes ownership of an inherited fd number.
pub fn file_from_fd(fd: i32) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only checks that the descriptor is open.
    syscall!(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the fd is open and was handed to this process to own (by the
    // `--background` parent); nothing else in the process uses it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Starts a new session (detaches from the controlling terminal).
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and touches no memory of ours.
    syscall!(unsafe { libc::setsid() }).map(|_| ())
}

/// The effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}
