//! The few libc calls std does not wrap, behind safe functions. This is the
//! only module of the server with `unsafe`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
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

/// What `statvfs` says about the file system holding a path.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStat {
    /// Fragment size (the unit of the block counts).
    pub frsize: u64,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
}

/// `statvfs(2)` of `path`.
pub fn statvfs(path: &Path) -> io::Result<FsStat> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string that outlives the call and `st`
    // is a valid, writable `statvfs`.
    syscall!(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(FsStat {
        frsize: if st.f_frsize > 0 {
            st.f_frsize as u64
        } else {
            st.f_bsize as u64
        },
        blocks: st.f_blocks as u64,
        bfree: st.f_bfree as u64,
        bavail: st.f_bavail as u64,
        files: st.f_files as u64,
        ffree: st.f_ffree as u64,
    })
}

/// `syncfs(2)`: writes back every dirty page of the file system of `f`.
pub fn syncfs(f: &std::fs::File) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call (borrowed
    // from `f`); syncfs touches no memory of ours.
    syscall!(unsafe { libc::syncfs(f.as_raw_fd()) })?;
    Ok(())
}

/// This process's effective uid and gid.
pub fn euid_egid() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}
