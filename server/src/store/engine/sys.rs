//! The engine's few unsafe calls, behind safe functions: mapping the index
//! file and preallocating it (so a full disk is an error at grow time, never
//! a `SIGBUS` on a store into the mapping), and the boot id.

use memmap2::MmapMut;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// Allocates the blocks of `f` up to `len` bytes (`posix_fallocate`), so
/// stores through a mapping of it cannot hit a full disk.
pub fn preallocate(f: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: the descriptor is borrowed from `f` and open for the call;
    // posix_fallocate touches no memory of ours.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) };
    match r {
        0 => Ok(()),
        // File systems without fallocate: fall back to a plain length.
        libc::EOPNOTSUPP => f.set_len(len as u64),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Whether the file system holding `dir` writes a file's blocks in place
/// (ext4, XFS, tmpfs): there, once a page of a file has its block, storing
/// into it through a mapping needs no new space. On a copy-on-write file
/// system (btrfs, bcachefs, ZFS) every write fault allocates, and a full
/// disk would raise `SIGBUS` in the store; the log appends with `pwrite`
/// there (see [`super::log`]).
pub fn overwrites_in_place(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    /// ext2/3/4 (`EXT4_SUPER_MAGIC` in `linux/magic.h`).
    const EXT4: i64 = 0xEF53;
    /// `XFS_SUPER_MAGIC`.
    const XFS: i64 = 0x5846_5342;
    /// `TMPFS_MAGIC`.
    const TMPFS: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` is plain data, for which all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid, writable
    // `statfs` that outlives the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type as i64, EXT4 | XFS | TMPFS)
}

/// Maps all of `f` read-write and shared.
pub fn map(f: &File) -> io::Result<MmapMut> {
    // SAFETY: the index file is private to this store (its directory is
    // locked by the server's single open), it is never truncated while
    // mapped (growing makes a new file and renames it), and its blocks are
    // allocated by `preallocate` first, so no access faults.
    unsafe { MmapMut::map_mut(f) }
}

/// A hash of this boot's id: a dirty index left by a process crash in the
/// same boot still matches its log (the page cache survived); one left by
/// a power loss does not, and is rebuilt.
pub fn boot_id() -> u64 {
    match std::fs::read("/proc/sys/kernel/random/boot_id") {
        Ok(b) => xxhash_rust::xxh3::xxh3_64(&b) | 1,
        // Unknown boot: never trust a dirty index.
        Err(_) => 0,
    }
}
