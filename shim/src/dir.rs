//! Directory streams (`DIR*`) and `getdents64` on SealFS directories.
//!
//! A SealFS `DIR*` points to our own heap struct whose first 8 bytes are a
//! magic value no glibc `DIR` can start with (glibc's begins with its fd, a
//! non-negative `int`), so every DIR function tells ours apart with one
//! load, without a lock.

use crate::config::client;
use crate::fdtable::{self, OpenFile};
use crate::ops::{self, Op};
use libc::{c_char, c_int, c_long, c_void, DIR};
use sealfs_client::{Errno, FileKind};
use sealfs_proto::path;
use std::sync::Arc;

/// Low half (the glibc fd's place) is negative as an `i32`.
const MAGIC: u64 = 0x5ea1_d1e5_dea1_f5d1;

/// One directory entry as handed out.
#[derive(Clone)]
pub struct Ent {
    pub name: Vec<u8>,
    pub ino: u64,
    pub dtype: u8,
}

fn dtype(k: FileKind) -> u8 {
    match k {
        FileKind::File => libc::DT_REG,
        FileKind::Dir => libc::DT_DIR,
        FileKind::Symlink => libc::DT_LNK,
    }
}

/// The entries of the directory `f`, with `.` and `..` first as Linux lists them.
pub fn list(f: &OpenFile) -> Result<Vec<Ent>, Errno> {
    let c = client()?;
    let entries = c.readdir(&f.path())?;
    let parent_ino = match path::split(&f.path()) {
        Some((parent, _)) => c.lstat(parent).map(|i| i.attr.ino).unwrap_or(f.ino),
        None => f.ino,
    };
    let mut v = Vec::with_capacity(entries.len() + 2);
    v.push(Ent {
        name: b".".to_vec(),
        ino: f.ino,
        dtype: libc::DT_DIR,
    });
    v.push(Ent {
        name: b"..".to_vec(),
        ino: parent_ino,
        dtype: libc::DT_DIR,
    });
    // Files unlinked while open (`ops::unlink_at`) are gone as far as
    // listings go.
    v.extend(
        entries
            .into_iter()
            .filter(|e| !e.name.starts_with(crate::fdtable::UNLINKED_PREFIX))
            .map(|e| Ent {
                name: e.name.into_bytes(),
                ino: e.ino,
                dtype: dtype(e.kind),
            }),
    );
    Ok(v)
}

#[repr(C)]
struct SealDir {
    magic: u64,
    fd: c_int,
    file: Arc<OpenFile>,
    ents: Option<Vec<Ent>>,
    pos: usize,
    ent: libc::dirent64,
}

/// Whether `d` is one of ours.
///
/// # Safety
/// `d` is null or a live `DIR*` (ours or glibc's, both at least 8 bytes).
#[inline(always)]
pub unsafe fn is_ours(d: *mut DIR) -> bool {
    // SAFETY: both kinds of DIR are 8-aligned heap objects of >= 8 bytes.
    !d.is_null() && unsafe { *(d as *const u64) } == MAGIC
}

unsafe fn sd<'a>(d: *mut DIR) -> &'a mut SealDir {
    // SAFETY: caller checked `is_ours`.
    unsafe { &mut *(d as *mut SealDir) }
}

fn make(fd: c_int, file: Arc<OpenFile>) -> *mut DIR {
    // SAFETY: all-zero is a valid dirent64.
    let ent: libc::dirent64 = unsafe { std::mem::zeroed() };
    Box::into_raw(Box::new(SealDir {
        magic: MAGIC,
        fd,
        file,
        ents: None,
        pos: 0,
        ent,
    })) as *mut DIR
}

/// Opens the SealFS directory `p` as a stream.
pub fn open_seal(p: &str) -> Result<*mut DIR, Errno> {
    let fd = ops::open_seal(p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)?;
    let f = fdtable::get(fd).ok_or(Errno::EBADF)?;
    Ok(make(fd, f))
}

/// # Safety
/// `p` is a C string.
pub unsafe fn opendir(p: *const c_char) -> Op<*mut DIR> {
    // SAFETY: forwarded caller guarantee.
    let p = match unsafe { crate::paths::resolve(libc::AT_FDCWD, p) } {
        Ok(crate::paths::Loc::Local) => return None,
        Ok(crate::paths::Loc::Seal(s)) => s,
        Err(e) => return Some(Err(e)),
    };
    Some(open_seal(&p))
}

pub fn fdopendir(fd: c_int) -> Op<*mut DIR> {
    let f = fdtable::get(fd)?;
    if f.kind != FileKind::Dir {
        return Some(Err(Errno::ENOTDIR));
    }
    if !f.readable() {
        return Some(Err(Errno::EBADF));
    }
    Some(Ok(make(fd, f)))
}

/// The next entry, or `Ok(None)` at the end.
///
/// # Safety
/// `d` is ours.
unsafe fn next<'a>(d: *mut DIR) -> Result<Option<&'a mut libc::dirent64>, Errno> {
    // SAFETY: caller checked.
    let s = unsafe { sd(d) };
    if s.ents.is_none() {
        s.ents = Some(list(&s.file)?);
    }
    let ents = s.ents.as_deref().unwrap_or(&[]);
    let Some(e) = ents.get(s.pos) else {
        return Ok(None);
    };
    s.pos += 1;
    let n = e.name.len().min(255);
    s.ent.d_ino = e.ino;
    s.ent.d_off = s.pos as i64;
    s.ent.d_reclen = std::mem::size_of::<libc::dirent64>() as u16;
    s.ent.d_type = e.dtype;
    for (dst, src) in s.ent.d_name.iter_mut().zip(&e.name[..n]) {
        *dst = *src as c_char;
    }
    s.ent.d_name[n] = 0;
    Ok(Some(&mut s.ent))
}

/// # Safety
/// `d` is ours.
pub unsafe fn readdir(d: *mut DIR) -> Result<*mut libc::dirent64, Errno> {
    // SAFETY: forwarded.
    Ok(unsafe { next(d) }?.map_or(std::ptr::null_mut(), |e| e as *mut _))
}

/// `readdir_r`: returns an errno value, as the C function does.
///
/// # Safety
/// `d` is ours; `entry` and `result` are writable.
pub unsafe fn readdir_r(
    d: *mut DIR,
    entry: *mut libc::dirent64,
    result: *mut *mut libc::dirent64,
) -> c_int {
    // SAFETY: forwarded caller guarantees.
    unsafe {
        match next(d) {
            Ok(Some(e)) => {
                std::ptr::copy_nonoverlapping(e as *const libc::dirent64, entry, 1);
                *result = entry;
                0
            }
            Ok(None) => {
                *result = std::ptr::null_mut();
                0
            }
            Err(e) => {
                *result = std::ptr::null_mut();
                e.0
            }
        }
    }
}

/// # Safety
/// `d` is ours; it is freed.
pub unsafe fn closedir(d: *mut DIR) -> c_int {
    // SAFETY: `d` is a box we made; the magic is cleared before freeing so
    // a stale pointer is never taken for ours.
    let b = unsafe {
        (*(d as *mut SealDir)).magic = 0;
        Box::from_raw(d as *mut SealDir)
    };
    let _ = ops::close(b.fd);
    0
}

/// # Safety
/// `d` is ours.
pub unsafe fn rewinddir(d: *mut DIR) {
    // SAFETY: forwarded.
    let s = unsafe { sd(d) };
    s.ents = None;
    s.pos = 0;
}

/// # Safety
/// `d` is ours.
pub unsafe fn dirfd(d: *mut DIR) -> c_int {
    // SAFETY: forwarded.
    unsafe { sd(d) }.fd
}

/// # Safety
/// `d` is ours.
pub unsafe fn telldir(d: *mut DIR) -> c_long {
    // SAFETY: forwarded.
    unsafe { sd(d) }.pos as c_long
}

/// # Safety
/// `d` is ours.
pub unsafe fn seekdir(d: *mut DIR, pos: c_long) {
    // SAFETY: forwarded.
    unsafe { sd(d) }.pos = pos.max(0) as usize;
}

/// `scandir` of a SealFS directory (glibc's own reaches its internal
/// `__opendir`, which no hook sees). `T` is `dirent` or `dirent64` (the
/// same layout on x86_64).
///
/// # Safety
/// As `scandir(3)`.
pub unsafe fn scandir<T>(
    p: *const c_char,
    out: *mut *mut *mut T,
    filter: Option<unsafe extern "C" fn(*const T) -> c_int>,
    cmp: Option<unsafe extern "C" fn(*mut *const T, *mut *const T) -> c_int>,
) -> Op<c_int> {
    // SAFETY: forwarded caller guarantees.
    let d = match unsafe { opendir(p) }? {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    let mut v: Vec<*mut T> = Vec::new();
    let sz = std::mem::size_of::<libc::dirent64>();
    let r = loop {
        // SAFETY: `d` is ours and live until closedir below.
        match unsafe { next(d) } {
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
            Ok(Some(e)) => {
                let e = e as *mut libc::dirent64 as *const T;
                if let Some(f) = filter {
                    // SAFETY: calling the application's filter on a valid entry.
                    if unsafe { f(e) } == 0 {
                        continue;
                    }
                }
                // SAFETY: copying one entry into a fresh allocation.
                let m = unsafe { libc::malloc(sz) }.cast::<T>();
                if m.is_null() {
                    break Err(Errno::ENOMEM);
                }
                // SAFETY: `m` is a fresh allocation of `sz` bytes and `e` a
                // valid entry of at least `sz` bytes; they do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(e.cast::<u8>(), m.cast::<u8>(), sz) };
                v.push(m);
            }
        }
    };
    // SAFETY: `d` is ours.
    unsafe { closedir(d) };
    if let Err(e) = r {
        for m in v {
            // SAFETY: freeing our own allocations.
            unsafe { libc::free(m.cast()) };
        }
        return Some(Err(e));
    }
    if let Some(c) = cmp {
        // SAFETY: qsort over our array of entry pointers with the
        // application's comparator, which takes pointers to elements.
        unsafe {
            let c: unsafe extern "C" fn(*const c_void, *const c_void) -> c_int =
                std::mem::transmute(c);
            libc::qsort(
                v.as_mut_ptr().cast(),
                v.len(),
                std::mem::size_of::<*mut T>(),
                Some(c),
            );
        }
    }
    // SAFETY: the array handed to the caller, who frees it with free().
    let arr =
        unsafe { libc::malloc(std::mem::size_of::<*mut T>() * v.len().max(1)) }.cast::<*mut T>();
    if arr.is_null() {
        return Some(Err(Errno::ENOMEM));
    }
    // SAFETY: `arr` holds v.len() pointers; `out` is writable (caller).
    unsafe {
        std::ptr::copy_nonoverlapping(v.as_ptr(), arr, v.len());
        *out = arr;
    }
    Some(Ok(v.len() as c_int))
}

/// `getdents64` on a SealFS directory fd.
///
/// # Safety
/// `buf` is valid for `n` bytes.
pub unsafe fn getdents64(fd: c_int, buf: *mut c_void, n: usize) -> Op<isize> {
    let f = fdtable::get(fd)?;
    Some((|| {
        if f.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let mut d = f.dir.lock();
        if d.is_none() {
            *d = Some((list(&f)?, 0));
        }
        let Some((ents, idx)) = d.as_mut() else {
            return Err(Errno::EIO);
        };
        let mut off = 0usize;
        while let Some(e) = ents.get(*idx) {
            let name = &e.name[..e.name.len().min(255)];
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            if off + reclen > n {
                if off == 0 {
                    return Err(Errno::EINVAL);
                }
                break;
            }
            // SAFETY: `off + reclen <= n`, inside the caller's buffer.
            unsafe {
                let r = buf.cast::<u8>().add(off);
                std::ptr::write_bytes(r, 0, reclen);
                (r as *mut u64).write_unaligned(e.ino);
                (r.add(8) as *mut i64).write_unaligned(*idx as i64 + 1);
                (r.add(16) as *mut u16).write_unaligned(reclen as u16);
                *r.add(18) = e.dtype;
                std::ptr::copy_nonoverlapping(name.as_ptr(), r.add(19), name.len());
            }
            off += reclen;
            *idx += 1;
        }
        Ok(off as isize)
    })())
}
