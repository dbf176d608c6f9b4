//! The real libc functions, found with `dlsym(RTLD_NEXT, …)` on first use
//! and cached in one atomic each.

#![allow(non_snake_case, clippy::too_many_arguments)]

use libc::{
    c_char, c_int, c_long, c_uint, c_void, mode_t, off64_t, off_t, size_t, ssize_t, DIR, FILE,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Resolves `name` (NUL-terminated) in the libraries after this one.
/// Aborts with a message if it does not exist: every name listed here exists
/// in glibc 2.36, so a miss means a broken installation.
#[cold]
fn resolve(name: &'static str) -> usize {
    // SAFETY: `name` is a NUL-terminated literal (built by the macros below).
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    if p.is_null() {
        let msg = format!(
            "libsealfs: cannot find the real {}\n",
            name.trim_end_matches('\0')
        );
        // SAFETY: writing a valid buffer to stderr; abort never returns.
        unsafe {
            libc::syscall(libc::SYS_write, 2, msg.as_ptr(), msg.len());
            libc::abort();
        }
    }
    p as usize
}

#[inline(always)]
fn addr(cache: &AtomicUsize, name: &'static str) -> usize {
    let a = cache.load(Ordering::Relaxed);
    if a != 0 {
        return a;
    }
    let a = resolve(name);
    cache.store(a, Ordering::Relaxed);
    a
}

/// The address of the real `vfork` (jumped to, never called from Rust: a
/// vfork child must not return through a frame of ours).
pub fn vfork_addr() -> usize {
    static CACHE: AtomicUsize = AtomicUsize::new(0);
    addr(&CACHE, "vfork\0")
}

macro_rules! reals {
    ($( fn $name:ident($($a:ident: $t:ty),*) -> $r:ty; )*) => {$(
        /// The real libc function of this name.
        #[inline]
        pub unsafe fn $name($($a: $t),*) -> $r {
            static CACHE: AtomicUsize = AtomicUsize::new(0);
            let a = addr(&CACHE, concat!(stringify!($name), "\0"));
            // SAFETY: `a` is the address of the libc function of this name,
            // whose C prototype is the one declared here.
            let f: unsafe extern "C" fn($($t),*) -> $r = unsafe { std::mem::transmute(a) };
            // SAFETY: the caller upholds the C function's contract (this
            // fn is `unsafe` with exactly that contract).
            unsafe { f($($a),*) }
        }
    )*};
}

/// Real C-variadic functions, called with one fixed extra argument.
macro_rules! reals_variadic {
    ($( fn $name:ident($($a:ident: $t:ty),*; $v:ident: $vt:ty) -> $r:ty; )*) => {$(
        /// The real libc function of this name (C-variadic; called with one
        /// extra argument).
        #[inline]
        pub unsafe fn $name($($a: $t,)* $v: $vt) -> $r {
            static CACHE: AtomicUsize = AtomicUsize::new(0);
            let a = addr(&CACHE, concat!(stringify!($name), "\0"));
            // SAFETY: `a` is the address of the C-variadic libc function of
            // this name; calling it with one more argument of a promoted type
            // is what a C caller does.
            let f: unsafe extern "C" fn($($t,)* ...) -> $r = unsafe { std::mem::transmute(a) };
            // SAFETY: the caller upholds the C function's contract.
            unsafe { f($($a,)* $v) }
        }
    )*};
}

reals_variadic! {
    fn open(path: *const c_char, flags: c_int; mode: c_uint) -> c_int;
    fn open64(path: *const c_char, flags: c_int; mode: c_uint) -> c_int;
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int; mode: c_uint) -> c_int;
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int; mode: c_uint) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int; arg: c_long) -> c_int;
    fn fcntl64(fd: c_int, cmd: c_int; arg: c_long) -> c_int;
}

reals! {
    fn __open_2(path: *const c_char, flags: c_int) -> c_int;
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int;
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn creat(path: *const c_char, mode: mode_t) -> c_int;
    fn creat64(path: *const c_char, mode: mode_t) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t;
    fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off64_t) -> ssize_t;
    fn __pread_chk(fd: c_int, buf: *mut c_void, n: size_t, off: off_t, buflen: size_t) -> ssize_t;
    fn __pread64_chk(fd: c_int, buf: *mut c_void, n: size_t, off: off64_t, buflen: size_t) -> ssize_t;
    fn readv(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t;
    fn preadv(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: off_t) -> ssize_t;
    fn preadv64(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: off64_t) -> ssize_t;
    fn preadv2(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: off_t, flags: c_int) -> ssize_t;
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t;
    fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off64_t) -> ssize_t;
    fn writev(fd: c_int, iov: *const libc::iovec, cnt: c_int) -> ssize_t;
    fn pwritev(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: off_t) -> ssize_t;
    fn pwritev64(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: off64_t) -> ssize_t;
    fn pwritev2(fd: c_int, iov: *const libc::iovec, cnt: c_int, off: off_t, flags: c_int) -> ssize_t;
    fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t;
    fn lseek64(fd: c_int, off: off64_t, whence: c_int) -> off64_t;
    fn stat(path: *const c_char, st: *mut libc::stat) -> c_int;
    fn stat64(path: *const c_char, st: *mut libc::stat64) -> c_int;
    fn lstat(path: *const c_char, st: *mut libc::stat) -> c_int;
    fn lstat64(path: *const c_char, st: *mut libc::stat64) -> c_int;
    fn fstat(fd: c_int, st: *mut libc::stat) -> c_int;
    fn fstat64(fd: c_int, st: *mut libc::stat64) -> c_int;
    fn fstatat(dirfd: c_int, path: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int;
    fn fstatat64(dirfd: c_int, path: *const c_char, st: *mut libc::stat64, flags: c_int) -> c_int;
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, st: *mut libc::statx) -> c_int;
    fn access(path: *const c_char, mode: c_int) -> c_int;
    fn eaccess(path: *const c_char, mode: c_int) -> c_int;
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int;
    fn mkdir(path: *const c_char, mode: mode_t) -> c_int;
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int;
    fn rmdir(path: *const c_char) -> c_int;
    fn unlink(path: *const c_char) -> c_int;
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn rename(a: *const c_char, b: *const c_char) -> c_int;
    fn renameat(da: c_int, a: *const c_char, db: c_int, b: *const c_char) -> c_int;
    fn renameat2(da: c_int, a: *const c_char, db: c_int, b: *const c_char, flags: c_uint) -> c_int;
    fn link(a: *const c_char, b: *const c_char) -> c_int;
    fn linkat(da: c_int, a: *const c_char, db: c_int, b: *const c_char, flags: c_int) -> c_int;
    fn truncate(path: *const c_char, len: off_t) -> c_int;
    fn truncate64(path: *const c_char, len: off64_t) -> c_int;
    fn ftruncate(fd: c_int, len: off_t) -> c_int;
    fn ftruncate64(fd: c_int, len: off64_t) -> c_int;
    fn fsync(fd: c_int) -> c_int;
    fn fdatasync(fd: c_int) -> c_int;
    fn chmod(path: *const c_char, mode: mode_t) -> c_int;
    fn fchmod(fd: c_int, mode: mode_t) -> c_int;
    fn fchmodat(dirfd: c_int, path: *const c_char, mode: mode_t, flags: c_int) -> c_int;
    fn chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    fn lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    fn fchown(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int;
    fn fchownat(dirfd: c_int, path: *const c_char, uid: libc::uid_t, gid: libc::gid_t, flags: c_int) -> c_int;
    fn utimensat(dirfd: c_int, path: *const c_char, ts: *const libc::timespec, flags: c_int) -> c_int;
    fn futimens(fd: c_int, ts: *const libc::timespec) -> c_int;
    fn utimes(path: *const c_char, tv: *const libc::timeval) -> c_int;
    fn lutimes(path: *const c_char, tv: *const libc::timeval) -> c_int;
    fn futimes(fd: c_int, tv: *const libc::timeval) -> c_int;
    fn utime(path: *const c_char, t: *const libc::utimbuf) -> c_int;
    fn symlink(target: *const c_char, path: *const c_char) -> c_int;
    fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int;
    fn readlink(path: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t;
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, n: size_t) -> ssize_t;
    fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int;
    fn statfs64(path: *const c_char, buf: *mut libc::statfs64) -> c_int;
    fn fstatfs(fd: c_int, buf: *mut libc::statfs) -> c_int;
    fn fstatfs64(fd: c_int, buf: *mut libc::statfs64) -> c_int;
    fn statvfs(path: *const c_char, buf: *mut libc::statvfs) -> c_int;
    fn statvfs64(path: *const c_char, buf: *mut libc::statvfs64) -> c_int;
    fn pathconf(path: *const c_char, name: c_int) -> libc::c_long;
    fn fpathconf(fd: c_int, name: c_int) -> libc::c_long;
    fn fstatvfs(fd: c_int, buf: *mut libc::statvfs) -> c_int;
    fn fstatvfs64(fd: c_int, buf: *mut libc::statvfs64) -> c_int;
    fn chdir(path: *const c_char) -> c_int;
    fn fchdir(fd: c_int) -> c_int;
    fn getcwd(buf: *mut c_char, n: size_t) -> *mut c_char;
    fn get_current_dir_name() -> *mut c_char;
    fn realpath(path: *const c_char, out: *mut c_char) -> *mut c_char;
    fn canonicalize_file_name(path: *const c_char) -> *mut c_char;
    fn opendir(path: *const c_char) -> *mut DIR;
    fn fdopendir(fd: c_int) -> *mut DIR;
    fn readdir(d: *mut DIR) -> *mut libc::dirent;
    fn readdir64(d: *mut DIR) -> *mut libc::dirent64;
    fn readdir_r(d: *mut DIR, e: *mut libc::dirent, r: *mut *mut libc::dirent) -> c_int;
    fn readdir64_r(d: *mut DIR, e: *mut libc::dirent64, r: *mut *mut libc::dirent64) -> c_int;
    fn closedir(d: *mut DIR) -> c_int;
    fn rewinddir(d: *mut DIR) -> ();
    fn dirfd(d: *mut DIR) -> c_int;
    fn telldir(d: *mut DIR) -> c_long;
    fn seekdir(d: *mut DIR, pos: c_long) -> ();
    fn scandir(path: *const c_char, out: *mut *mut *mut libc::dirent, filter: Option<unsafe extern "C" fn(*const libc::dirent) -> c_int>, cmp: Option<unsafe extern "C" fn(*mut *const libc::dirent, *mut *const libc::dirent) -> c_int>) -> c_int;
    fn scandir64(path: *const c_char, out: *mut *mut *mut libc::dirent64, filter: Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>, cmp: Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int>) -> c_int;
    fn getdents64(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn dup(fd: c_int) -> c_int;
    fn dup2(fd: c_int, new: c_int) -> c_int;
    fn dup3(fd: c_int, new: c_int, flags: c_int) -> c_int;
    fn flock(fd: c_int, op: c_int) -> c_int;
    fn posix_fadvise(fd: c_int, off: off_t, len: off_t, advice: c_int) -> c_int;
    fn posix_fadvise64(fd: c_int, off: off64_t, len: off64_t, advice: c_int) -> c_int;
    fn fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int;
    fn fallocate64(fd: c_int, mode: c_int, off: off64_t, len: off64_t) -> c_int;
    fn posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int;
    fn posix_fallocate64(fd: c_int, off: off64_t, len: off64_t) -> c_int;
    fn copy_file_range(fi: c_int, oi: *mut off64_t, fo: c_int, oo: *mut off64_t, len: size_t, flags: c_uint) -> ssize_t;
    fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t;
    fn sendfile64(out: c_int, inp: c_int, off: *mut off64_t, n: size_t) -> ssize_t;
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE;
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE;
    fn freopen(path: *const c_char, mode: *const c_char, f: *mut FILE) -> *mut FILE;
    fn freopen64(path: *const c_char, mode: *const c_char, f: *mut FILE) -> *mut FILE;
    fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE;
    fn fileno(f: *mut FILE) -> c_int;
    fn fileno_unlocked(f: *mut FILE) -> c_int;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn posix_spawn(pid: *mut libc::pid_t, path: *const c_char, fa: *const libc::posix_spawn_file_actions_t, at: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    fn posix_spawnp(pid: *mut libc::pid_t, file: *const c_char, fa: *const libc::posix_spawn_file_actions_t, at: *const libc::posix_spawnattr_t, argv: *const *mut c_char, envp: *const *mut c_char) -> c_int;
    fn posix_spawn_file_actions_init(fa: *mut libc::posix_spawn_file_actions_t) -> c_int;
    fn posix_spawn_file_actions_destroy(fa: *mut libc::posix_spawn_file_actions_t) -> c_int;
    fn posix_spawn_file_actions_adddup2(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, new: c_int) -> c_int;
    fn posix_spawn_file_actions_addclose(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int) -> c_int;
    fn posix_spawn_file_actions_addopen(fa: *mut libc::posix_spawn_file_actions_t, fd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int;
    fn system(cmd: *const c_char) -> c_int;
    fn popen(cmd: *const c_char, mode: *const c_char) -> *mut FILE;
    fn pclose(f: *mut FILE) -> c_int;
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn getxattr(path: *const c_char, name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t;
    fn lgetxattr(path: *const c_char, name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t;
    fn fgetxattr(fd: c_int, name: *const c_char, v: *mut c_void, n: size_t) -> ssize_t;
    fn listxattr(path: *const c_char, l: *mut c_char, n: size_t) -> ssize_t;
    fn llistxattr(path: *const c_char, l: *mut c_char, n: size_t) -> ssize_t;
    fn flistxattr(fd: c_int, l: *mut c_char, n: size_t) -> ssize_t;
    fn setxattr(path: *const c_char, name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int;
    fn lsetxattr(path: *const c_char, name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int;
    fn fsetxattr(fd: c_int, name: *const c_char, v: *const c_void, n: size_t, f: c_int) -> c_int;
    fn removexattr(path: *const c_char, name: *const c_char) -> c_int;
    fn lremovexattr(path: *const c_char, name: *const c_char) -> c_int;
    fn fremovexattr(fd: c_int, name: *const c_char) -> c_int;
    fn mknod(path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int;
    fn mknodat(dirfd: c_int, path: *const c_char, mode: mode_t, dev: libc::dev_t) -> c_int;
    fn mkfifo(path: *const c_char, mode: mode_t) -> c_int;
    fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fn mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int;
}
