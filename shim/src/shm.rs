//! The shared offsets region: a memfd mapped `MAP_SHARED`, one `u64` slot
//! per open-file description. Forked children share the mapping, and exec'd
//! images map the inherited memfd again, so a shell's `for …; do cmd; done >
//! /sealfs/out` appends each command's output as on Linux. Slot 0 is the
//! bump allocator; slots are never reused (when the region is full, new
//! descriptions keep a private offset).

use crate::{fdtable, real};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

const SLOTS: usize = 1 << 16;
const BYTES: usize = SLOTS * 8;

static BASE: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
static FD: AtomicI32 = AtomicI32::new(-1);

fn map(fd: i32) -> Option<*mut AtomicU64> {
    // SAFETY: mapping a memfd we own (or inherited) of at least BYTES bytes.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

fn base() -> Option<*mut AtomicU64> {
    let b = BASE.load(Ordering::Acquire);
    if !b.is_null() {
        return Some(b);
    }
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"sealfs-offsets".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: sizing and, on failure, closing the memfd just made.
    if unsafe { real::ftruncate(fd, BYTES as i64) } != 0 {
        // SAFETY: closing the memfd just made, never published.
        unsafe { real::close(fd) };
        return None;
    }
    let Some(p) = map(fd) else {
        // SAFETY: closing the memfd just made.
        unsafe { real::close(fd) };
        return None;
    };
    match BASE.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            FD.store(fdtable::relocate_internal(fd), Ordering::Release);
            Some(p)
        }
        Err(other) => {
            // SAFETY: undoing our own mapping and memfd, never published.
            unsafe {
                libc::munmap(p.cast(), BYTES);
                real::close(fd);
            }
            Some(other)
        }
    }
}

/// A fresh slot and its index.
pub fn alloc() -> Option<(u32, &'static AtomicU64)> {
    let b = base()?;
    // SAFETY: slot 0 of a live mapping that is never unmapped.
    let next = unsafe { &*b }.fetch_add(1, Ordering::AcqRel) + 1;
    let i = usize::try_from(next).ok().filter(|i| *i < SLOTS)?;
    Some((i as u32, slot_at(b, i)))
}

fn slot_at(b: *mut AtomicU64, i: usize) -> &'static AtomicU64 {
    // SAFETY: `i < SLOTS`, inside a mapping that is never unmapped.
    unsafe { &*b.add(i) }
}

/// Slot `i` of the region (after [`attach`]).
pub fn slot(i: u32) -> Option<&'static AtomicU64> {
    let b = BASE.load(Ordering::Acquire);
    let i = i as usize;
    (!b.is_null() && i > 0 && i < SLOTS).then(|| slot_at(b, i))
}

/// The memfd, if the region exists.
pub fn fd() -> Option<i32> {
    let fd = FD.load(Ordering::Acquire);
    (fd >= 0).then_some(fd)
}

/// In an exec'd image: maps the inherited memfd `fd`.
pub fn attach(fd: i32) -> bool {
    if !BASE.load(Ordering::Acquire).is_null() {
        return true;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat into a local buffer.
    if unsafe { real::fstat(fd, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded and filled the buffer.
    let st = unsafe { st.assume_init() };
    if st.st_size < BYTES as i64 {
        return false;
    }
    let Some(p) = map(fd) else { return false };
    BASE.store(p, Ordering::Release);
    FD.store(fd, Ordering::Release);
    // SAFETY: setting close-on-exec on the inherited memfd (exec clears it
    // again when it passes fds on).
    unsafe { real::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC as libc::c_long) };
    fdtable::mark_internal(fd);
    true
}
