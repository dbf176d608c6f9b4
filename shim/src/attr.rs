//! Filling the C `stat`, `statx`, `statfs` and `statvfs` structures from
//! SealFS attributes.

use sealfs_client::{FileKind, Inode, StatFs};

/// `st_dev` of every SealFS file (major 0x5ea, minor 0x1f5), so `cp`,
/// `find -xdev`, `du` and friends see one device.
pub const DEV_MAJOR: u32 = 0x5ea;
pub const DEV_MINOR: u32 = 0x1f5;
/// `f_type` of `statfs`.
pub const SEALFS_MAGIC: i64 = 0x5ea1_f500;

pub fn dev() -> u64 {
    libc::makedev(DEV_MAJOR, DEV_MINOR)
}

fn size_of(i: &Inode) -> u64 {
    match (i.attr.kind, &i.target) {
        (FileKind::Symlink, Some(t)) => t.len() as u64,
        _ => i.attr.size,
    }
}

/// `struct stat` (and `stat64`, the same on x86_64) of `i`.
pub fn fill_stat(st: &mut libc::stat, i: &Inode, blksize: u32) {
    // SAFETY: all-zero is a valid `struct stat` (plain integers).
    *st = unsafe { std::mem::zeroed() };
    let a = &i.attr;
    let size = size_of(i);
    st.st_dev = dev();
    st.st_ino = a.ino;
    st.st_nlink = u64::from(a.nlink);
    st.st_mode = a.st_mode();
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_size = size as i64;
    st.st_blksize = i64::from(blksize.max(512));
    st.st_blocks = size.div_ceil(512) as i64;
    st.st_atime = a.atime.sec;
    st.st_atime_nsec = i64::from(a.atime.nsec);
    st.st_mtime = a.mtime.sec;
    st.st_mtime_nsec = i64::from(a.mtime.nsec);
    st.st_ctime = a.ctime.sec;
    st.st_ctime_nsec = i64::from(a.ctime.nsec);
}

fn ts(t: sealfs_client::Timespec) -> libc::statx_timestamp {
    // SAFETY: all-zero is a valid statx_timestamp.
    let mut x: libc::statx_timestamp = unsafe { std::mem::zeroed() };
    x.tv_sec = t.sec;
    x.tv_nsec = t.nsec;
    x
}

/// `struct statx` of `i`.
pub fn fill_statx(sx: &mut libc::statx, i: &Inode, blksize: u32) {
    // SAFETY: all-zero is a valid `struct statx`.
    *sx = unsafe { std::mem::zeroed() };
    let a = &i.attr;
    let size = size_of(i);
    sx.stx_mask = libc::STATX_BASIC_STATS;
    sx.stx_blksize = blksize.max(512);
    sx.stx_nlink = a.nlink;
    sx.stx_uid = a.uid;
    sx.stx_gid = a.gid;
    sx.stx_mode = a.st_mode() as u16;
    sx.stx_ino = a.ino;
    sx.stx_size = size;
    sx.stx_blocks = size.div_ceil(512);
    sx.stx_atime = ts(a.atime);
    sx.stx_mtime = ts(a.mtime);
    sx.stx_ctime = ts(a.ctime);
    sx.stx_dev_major = DEV_MAJOR;
    sx.stx_dev_minor = DEV_MINOR;
}

/// `struct statfs` (and `statfs64`) of the cluster.
pub fn fill_statfs(f: &mut libc::statfs, s: &StatFs) {
    // SAFETY: all-zero is a valid `struct statfs`.
    *f = unsafe { std::mem::zeroed() };
    f.f_type = SEALFS_MAGIC;
    f.f_bsize = i64::from(s.bsize.max(512));
    f.f_frsize = i64::from(s.bsize.max(512));
    f.f_blocks = s.blocks;
    f.f_bfree = s.bfree;
    f.f_bavail = s.bavail;
    f.f_files = s.files;
    f.f_ffree = s.ffree;
    f.f_namelen = i64::from(s.namemax);
}

/// `struct statvfs` (and `statvfs64`) of the cluster.
pub fn fill_statvfs(f: &mut libc::statvfs, s: &StatFs) {
    // SAFETY: all-zero is a valid `struct statvfs`.
    *f = unsafe { std::mem::zeroed() };
    f.f_bsize = u64::from(s.bsize.max(512));
    f.f_frsize = u64::from(s.bsize.max(512));
    f.f_blocks = s.blocks;
    f.f_bfree = s.bfree;
    f.f_bavail = s.bavail;
    f.f_files = s.files;
    f.f_ffree = s.ffree;
    f.f_favail = s.ffree;
    f.f_fsid = SEALFS_MAGIC as u64;
    f.f_namemax = u64::from(s.namemax);
}
