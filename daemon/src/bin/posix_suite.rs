//! `sealfs-posix-suite DIR [FILTER]`: the POSIX behaviour suite shared by
//! every SealFS front end.
//!
//! Each case makes plain libc calls on paths under a fresh directory inside
//! `DIR` and prints one line, `case<TAB>outcome`, where the outcome is made
//! only of things every correct file system agrees on (errno names, sizes,
//! modes, booleans; never inode numbers or times). A harness runs the
//! program once on a local directory to record Linux's answers and once on
//! the front end under test (the FUSE mount, or the shim's prefix under
//! `LD_PRELOAD`: the program is dynamically linked to libc for that), and
//! compares the lines. The last line is `# cases N`.
//!
//! Permission cases fork a child that drops to uid/gid 65534 (`nobody`)
//! when run as root; without root they print `skipped`.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

type Out = Result<String, String>;

/// The errno name of the last failed call.
fn last() -> String {
    let n = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    sealfs_proto::Errno(n).name().to_string()
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Thin libc wrappers: `Ok(value)` or `Err(errno name)`.
mod sys {
    use super::{c, last};
    use std::path::Path;

    macro_rules! call {
        ($e:expr) => {{
            // SAFETY: every call below passes NUL-terminated paths that live
            // for the call and buffers whose lengths are passed along.
            let r = unsafe { $e };
            if r == -1 {
                Err(last())
            } else {
                Ok(r)
            }
        }};
    }

    pub fn open(p: &Path, flags: i32, mode: u32) -> Result<i32, String> {
        call!(libc::open(c(p).as_ptr(), flags, mode))
    }
    pub fn close(fd: i32) {
        // SAFETY: closing an fd this program opened.
        unsafe { libc::close(fd) };
    }
    pub fn pwrite(fd: i32, buf: &[u8], off: i64) -> Result<isize, String> {
        call!(libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off))
    }
    pub fn write(fd: i32, buf: &[u8]) -> Result<isize, String> {
        call!(libc::write(fd, buf.as_ptr().cast(), buf.len()))
    }
    pub fn pread(fd: i32, len: usize, off: i64) -> Result<Vec<u8>, String> {
        let mut v = vec![0u8; len];
        let n = call!(libc::pread(fd, v.as_mut_ptr().cast(), len, off))?;
        v.truncate(n as usize);
        Ok(v)
    }
    pub fn mkdir(p: &Path, mode: u32) -> Result<i32, String> {
        call!(libc::mkdir(c(p).as_ptr(), mode))
    }
    pub fn rmdir(p: &Path) -> Result<i32, String> {
        call!(libc::rmdir(c(p).as_ptr()))
    }
    pub fn unlink(p: &Path) -> Result<i32, String> {
        call!(libc::unlink(c(p).as_ptr()))
    }
    pub fn rename(a: &Path, b: &Path) -> Result<i32, String> {
        call!(libc::rename(c(a).as_ptr(), c(b).as_ptr()))
    }
    pub fn renameat2(a: &Path, b: &Path, flags: u32) -> Result<i64, String> {
        call!(libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            c(a).as_ptr(),
            libc::AT_FDCWD,
            c(b).as_ptr(),
            flags
        ))
    }
    pub fn truncate(p: &Path, len: i64) -> Result<i32, String> {
        call!(libc::truncate(c(p).as_ptr(), len))
    }
    pub fn ftruncate(fd: i32, len: i64) -> Result<i32, String> {
        call!(libc::ftruncate(fd, len))
    }
    pub fn symlink(target: &str, p: &Path) -> Result<i32, String> {
        let t = std::ffi::CString::new(target).unwrap_or_default();
        call!(libc::symlink(t.as_ptr(), c(p).as_ptr()))
    }
    pub fn readlink(p: &Path) -> Result<String, String> {
        let mut buf = vec![0u8; 4096];
        let n = call!(libc::readlink(
            c(p).as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len()
        ))?;
        buf.truncate(n as usize);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    pub fn chmod(p: &Path, mode: u32) -> Result<i32, String> {
        call!(libc::chmod(c(p).as_ptr(), mode))
    }
    pub fn chown(p: &Path, uid: u32, gid: u32) -> Result<i32, String> {
        call!(libc::chown(c(p).as_ptr(), uid, gid))
    }
    fn stat_with(p: &Path, follow: bool) -> Result<libc::stat, String> {
        // SAFETY: a zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if follow {
            call!(libc::stat(c(p).as_ptr(), &mut st))?;
        } else {
            call!(libc::lstat(c(p).as_ptr(), &mut st))?;
        }
        Ok(st)
    }
    pub fn stat(p: &Path) -> Result<libc::stat, String> {
        stat_with(p, true)
    }
    pub fn lstat(p: &Path) -> Result<libc::stat, String> {
        stat_with(p, false)
    }
    pub fn fstat(fd: i32) -> Result<libc::stat, String> {
        // SAFETY: a zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        call!(libc::fstat(fd, &mut st))?;
        Ok(st)
    }
    pub fn utimes(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> Result<i32, String> {
        let ts = [
            libc::timespec {
                tv_sec: atime.0,
                tv_nsec: atime.1,
            },
            libc::timespec {
                tv_sec: mtime.0,
                tv_nsec: mtime.1,
            },
        ];
        call!(libc::utimensat(
            libc::AT_FDCWD,
            c(p).as_ptr(),
            ts.as_ptr(),
            0
        ))
    }
    pub fn access(p: &Path, mode: i32) -> Result<i32, String> {
        call!(libc::access(c(p).as_ptr(), mode))
    }
    pub fn umask(m: u32) -> u32 {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(m) }
    }
}

/// `ok` or the errno name.
fn res<T>(r: Result<T, String>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e,
    }
}

fn put(p: &Path, data: &[u8]) -> Result<(), String> {
    let fd = sys::open(p, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    let r = sys::pwrite(fd, data, 0);
    sys::close(fd);
    r.map(|_| ())
}

fn get(p: &Path) -> Result<Vec<u8>, String> {
    let fd = sys::open(p, libc::O_RDONLY, 0)?;
    let r = sys::pread(fd, 1 << 24, 0);
    sys::close(fd);
    r
}

fn names(p: &Path) -> Result<Vec<String>, String> {
    let rd = std::fs::read_dir(p).map_err(|e| {
        sealfs_proto::Errno(e.raw_os_error().unwrap_or(0))
            .name()
            .to_string()
    })?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| {
            sealfs_proto::Errno(e.raw_os_error().unwrap_or(0))
                .name()
                .to_string()
        })?;
        v.push(e.file_name().to_string_lossy().into_owned());
    }
    Ok(v)
}

/// Runs `f` in a child process as uid/gid 65534 and returns its outcome.
fn as_nobody(f: impl FnOnce() -> String) -> String {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return "skipped".into();
    }
    let (mut rd, mut wr) = match std::os::unix::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return format!("error: {e}"),
    };
    // SAFETY: the child only makes async-signal-safe-enough calls of its own
    // (this program is single-threaded while a case runs) and leaves by _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(rd);
        // SAFETY: dropping privileges in the child; failures are reported.
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(65534) == 0
                && libc::setuid(65534) == 0
        };
        let out = if ok {
            f()
        } else {
            format!("setuid failed: {}", last())
        };
        let _ = wr.write_all(out.as_bytes());
        drop(wr);
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(wr);
    let mut out = String::new();
    let _ = rd.read_to_string(&mut out);
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    out
}

fn mode(st: &libc::stat) -> String {
    format!("{:o}", st.st_mode & 0o7777)
}

fn case(name: &str, dir: &Path) -> Out {
    let f = dir.join("f");
    let g = dir.join("g");
    let d = dir.join("d");
    let e = dir.join("e");
    Ok(match name {
        "open_enoent" => res(sys::open(&dir.join("missing"), libc::O_RDONLY, 0)),
        "open_creat_excl_existing" => {
            put(&f, b"x")?;
            res(sys::open(
                &f,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            ))
        }
        "open_creat_excl_dangling_symlink" => {
            sys::symlink("nowhere", &f)?;
            res(sys::open(
                &f,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o644,
            ))
        }
        "open_dir_for_write" => {
            sys::mkdir(&d, 0o755)?;
            res(sys::open(&d, libc::O_WRONLY, 0))
        }
        "open_directory_flag_on_file" => {
            put(&f, b"x")?;
            res(sys::open(&f, libc::O_RDONLY | libc::O_DIRECTORY, 0))
        }
        "open_file_as_path_component" => {
            put(&f, b"x")?;
            res(sys::open(&f.join("x"), libc::O_RDONLY, 0))
        }
        "open_nofollow_symlink" => {
            put(&f, b"x")?;
            sys::symlink("f", &g)?;
            res(sys::open(&g, libc::O_RDONLY | libc::O_NOFOLLOW, 0))
        }
        "open_creat_in_missing_dir" => res(sys::open(
            &dir.join("no/f"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )),
        "open_trunc" => {
            put(&f, b"0123456789")?;
            let fd = sys::open(&f, libc::O_WRONLY | libc::O_TRUNC, 0)?;
            let st = sys::fstat(fd);
            sys::close(fd);
            format!("size={}", st?.st_size)
        }
        "open_rdonly_trunc_keeps_data" => {
            put(&f, b"0123456789")?;
            let fd = sys::open(&f, libc::O_RDONLY | libc::O_TRUNC, 0);
            if let Ok(fd) = fd {
                sys::close(fd);
            }
            format!("size={}", sys::stat(&f)?.st_size)
        }
        "open_append" => {
            put(&f, b"abc")?;
            let fd = sys::open(&f, libc::O_WRONLY | libc::O_APPEND, 0)?;
            let r = sys::write(fd, b"def");
            let r2 = sys::pwrite(fd, b"gh", 0);
            sys::close(fd);
            r?;
            r2?;
            String::from_utf8_lossy(&get(&f)?).into_owned()
        }
        "creat_mode_with_umask" => {
            let old = sys::umask(0o027);
            let fd = sys::open(&f, libc::O_CREAT | libc::O_WRONLY, 0o777);
            sys::umask(old);
            sys::close(fd?);
            sys::mkdir(&d, 0o777).ok();
            format!(
                "file={} dir={}",
                mode(&sys::stat(&f)?),
                mode(&sys::stat(&d)?)
            )
        }
        "write_on_rdonly_fd" => {
            put(&f, b"x")?;
            let fd = sys::open(&f, libc::O_RDONLY, 0)?;
            let r = res(sys::write(fd, b"y"));
            sys::close(fd);
            r
        }
        "sparse_write_and_read_past_eof" => {
            let fd = sys::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
            let off = (1 << 20) + 4000;
            sys::pwrite(fd, b"tail", off)?;
            let head = sys::pread(fd, 16, 0)?;
            let mid = sys::pread(fd, 8, off - 4)?;
            let past = sys::pread(fd, 8, off + 4)?;
            let far = sys::pread(fd, 8, off + 1_000_000)?;
            let st = sys::fstat(fd)?;
            sys::close(fd);
            format!(
                "size={} head_zero={} mid={:?} past={} far={}",
                st.st_size,
                head.iter().all(|b| *b == 0),
                mid,
                past.len(),
                far.len()
            )
        }
        "large_write_across_chunks" => {
            let data: Vec<u8> = (0..3 * 1024 * 1024 + 77)
                .map(|i: u32| (i * 7 % 251) as u8)
                .collect();
            put(&f, &data)?;
            let back = get(&f)?;
            format!("equal={} size={}", back == data, sys::stat(&f)?.st_size)
        }
        "truncate_down_then_up" => {
            put(&f, &[b'a'; 100])?;
            sys::truncate(&f, 50)?;
            let s1 = sys::stat(&f)?.st_size;
            sys::truncate(&f, 200)?;
            let b = get(&f)?;
            format!(
                "s1={s1} s2={} head_a={} tail_zero={}",
                b.len(),
                b[..50].iter().all(|x| *x == b'a'),
                b[50..].iter().all(|x| *x == 0)
            )
        }
        "ftruncate_rdonly_fd" => {
            put(&f, b"abc")?;
            let fd = sys::open(&f, libc::O_RDONLY, 0)?;
            let r = res(sys::ftruncate(fd, 1));
            sys::close(fd);
            r
        }
        "truncate_dir" => {
            sys::mkdir(&d, 0o755)?;
            res(sys::truncate(&d, 0))
        }
        "truncate_negative" => {
            put(&f, b"abc")?;
            res(sys::truncate(&f, -1))
        }
        "rename_file_over_file" => {
            put(&f, b"src")?;
            put(&g, b"dst")?;
            sys::rename(&f, &g)?;
            format!(
                "g={} f={}",
                String::from_utf8_lossy(&get(&g)?),
                res(sys::lstat(&f))
            )
        }
        "rename_dir_over_empty_dir" => {
            sys::mkdir(&d, 0o755)?;
            put(&d.join("x"), b"1")?;
            sys::mkdir(&e, 0o755)?;
            sys::rename(&d, &e)?;
            format!(
                "d={} e/x={}",
                res(sys::lstat(&d)),
                res(sys::lstat(&e.join("x")))
            )
        }
        "rename_dir_over_nonempty_dir" => {
            sys::mkdir(&d, 0o755)?;
            sys::mkdir(&e, 0o755)?;
            put(&e.join("x"), b"1")?;
            res(sys::rename(&d, &e))
        }
        "rename_file_over_dir" => {
            put(&f, b"x")?;
            sys::mkdir(&d, 0o755)?;
            res(sys::rename(&f, &d))
        }
        "rename_dir_over_file" => {
            put(&f, b"x")?;
            sys::mkdir(&d, 0o755)?;
            res(sys::rename(&d, &f))
        }
        "rename_into_own_subtree" => {
            sys::mkdir(&d, 0o755)?;
            sys::mkdir(&d.join("s"), 0o755)?;
            res(sys::rename(&d, &d.join("s/t")))
        }
        "rename_missing_source" => res(sys::rename(&f, &g)),
        "rename_to_missing_dir" => {
            put(&f, b"x")?;
            res(sys::rename(&f, &dir.join("no/g")))
        }
        "rename_same_file" => {
            put(&f, b"x")?;
            format!("{} {}", res(sys::rename(&f, &f)), res(sys::lstat(&f)))
        }
        "rename_noreplace" => {
            put(&f, b"x")?;
            put(&g, b"y")?;
            let a = res(sys::renameat2(&f, &g, libc::RENAME_NOREPLACE));
            let b = res(sys::renameat2(&f, &e, libc::RENAME_NOREPLACE));
            format!("existing={a} free={b}")
        }
        "rename_dir_moves_subtree" => {
            sys::mkdir(&d, 0o755)?;
            sys::mkdir(&d.join("s"), 0o755)?;
            put(&d.join("s/x"), b"deep")?;
            sys::rename(&d, &e)?;
            format!(
                "{} {}",
                String::from_utf8_lossy(&get(&e.join("s/x"))?),
                res(sys::lstat(&d))
            )
        }
        "rename_open_file_keeps_fd" => {
            put(&f, b"data")?;
            let fd = sys::open(&f, libc::O_RDWR, 0)?;
            let r = sys::rename(&f, &g);
            let w = sys::pwrite(fd, b"DA", 0);
            let back = sys::pread(fd, 10, 0);
            sys::close(fd);
            r?;
            w?;
            format!(
                "{} {}",
                String::from_utf8_lossy(&back?),
                String::from_utf8_lossy(&get(&g)?)
            )
        }
        "rename_over_open_file" => {
            put(&f, b"new")?;
            put(&g, b"old")?;
            let fd = sys::open(&g, libc::O_RDONLY, 0)?;
            let r = sys::rename(&f, &g);
            let back = sys::pread(fd, 10, 0);
            sys::close(fd);
            r?;
            format!(
                "fd={} name={}",
                String::from_utf8_lossy(&back?),
                String::from_utf8_lossy(&get(&g)?)
            )
        }
        "unlink_open_file" => {
            put(&f, b"still here")?;
            let fd = sys::open(&f, libc::O_RDWR, 0)?;
            let u = sys::unlink(&f);
            let w = sys::pwrite(fd, b"STILL", 0);
            let back = sys::pread(fd, 32, 0);
            let st = sys::fstat(fd);
            let listed = names(dir)?.len();
            sys::close(fd);
            u?;
            w?;
            format!(
                "read={} nlink={} listed={listed} after={}",
                String::from_utf8_lossy(&back?),
                st?.st_nlink,
                res(sys::lstat(&f))
            )
        }
        "unlink_dir" => {
            sys::mkdir(&d, 0o755)?;
            res(sys::unlink(&d))
        }
        "unlink_missing" => res(sys::unlink(&f)),
        "rmdir_nonempty" => {
            sys::mkdir(&d, 0o755)?;
            put(&d.join("x"), b"1")?;
            res(sys::rmdir(&d))
        }
        "rmdir_file" => {
            put(&f, b"x")?;
            res(sys::rmdir(&f))
        }
        "rmdir_dot" => {
            sys::mkdir(&d, 0o755)?;
            res(sys::rmdir(&d.join(".")))
        }
        "mkdir_existing" => {
            sys::mkdir(&d, 0o755)?;
            format!("dir={} file={}", res(sys::mkdir(&d, 0o755)), {
                put(&f, b"x")?;
                res(sys::mkdir(&f, 0o755))
            })
        }
        "nlink_of_dirs_and_files" => {
            sys::mkdir(&d, 0o755)?;
            let n0 = sys::stat(&d)?.st_nlink;
            sys::mkdir(&d.join("s"), 0o755)?;
            put(&d.join("x"), b"x")?;
            let n1 = sys::stat(&d)?.st_nlink;
            sys::rmdir(&d.join("s"))?;
            let n2 = sys::stat(&d)?.st_nlink;
            format!(
                "empty={n0} with_sub={n1} after_rmdir={n2} file={}",
                sys::stat(&d.join("x"))?.st_nlink
            )
        }
        "size_follows_writes" => {
            let fd = sys::open(&f, libc::O_RDWR | libc::O_CREAT, 0o644)?;
            sys::pwrite(fd, &[1; 1000], 0)?;
            let a = sys::fstat(fd)?.st_size;
            sys::pwrite(fd, &[1; 10], 5000)?;
            let b = sys::fstat(fd)?.st_size;
            sys::pwrite(fd, &[1; 10], 0)?;
            let c = sys::fstat(fd)?.st_size;
            sys::close(fd);
            format!("{a} {b} {c} {}", sys::stat(&f)?.st_size)
        }
        "mtime_ctime_advance_on_write" => {
            put(&f, b"x")?;
            sys::utimes(&f, (1_000_000, 0), (1_000_000, 0))?;
            let before = sys::stat(&f)?;
            std::thread::sleep(std::time::Duration::from_millis(20));
            let fd = sys::open(&f, libc::O_WRONLY, 0)?;
            sys::pwrite(fd, b"y", 0)?;
            sys::close(fd);
            let after = sys::stat(&f)?;
            format!(
                "mtime_advanced={} ctime_advanced={}",
                after.st_mtime > before.st_mtime,
                (after.st_ctime, after.st_ctime_nsec) > (before.st_ctime, before.st_ctime_nsec)
            )
        }
        "ctime_advances_on_chmod_and_rename" => {
            put(&f, b"x")?;
            let t0 = sys::stat(&f)?;
            std::thread::sleep(std::time::Duration::from_millis(20));
            sys::chmod(&f, 0o600)?;
            let t1 = sys::stat(&f)?;
            format!(
                "chmod={}",
                (t1.st_ctime, t1.st_ctime_nsec) > (t0.st_ctime, t0.st_ctime_nsec)
            )
        }
        "dir_mtime_advances_on_create_and_unlink" => {
            sys::mkdir(&d, 0o755)?;
            sys::utimes(&d, (1_000_000, 0), (1_000_000, 0))?;
            put(&d.join("x"), b"1")?;
            let m1 = sys::stat(&d)?.st_mtime;
            sys::utimes(&d, (1_000_000, 0), (1_000_000, 0))?;
            sys::unlink(&d.join("x"))?;
            let m2 = sys::stat(&d)?.st_mtime;
            format!("create={} unlink={}", m1 > 1_000_000, m2 > 1_000_000)
        }
        "utimens_exact" => {
            put(&f, b"x")?;
            sys::utimes(
                &f,
                (1_234_567_890, 123_456_789),
                (1_111_111_111, 987_654_321),
            )?;
            let st = sys::stat(&f)?;
            format!(
                "{}.{} {}.{}",
                st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec
            )
        }
        "chmod_bits" => {
            put(&f, b"x")?;
            sys::chmod(&f, 0o640)?;
            let a = mode(&sys::stat(&f)?);
            sys::chmod(&f, 0o4755)?;
            let b = mode(&sys::stat(&f)?);
            sys::mkdir(&d, 0o755)?;
            sys::chmod(&d, 0o1777)?;
            format!("{a} {b} dir={}", mode(&sys::stat(&d)?))
        }
        "chown_root" => {
            // SAFETY: geteuid cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Ok("skipped".into());
            }
            put(&f, b"x")?;
            sys::chown(&f, 65534, 65534)?;
            let st = sys::stat(&f)?;
            format!("{}:{}", st.st_uid, st.st_gid)
        }
        "perm_read_denied" => {
            put(&f, b"secret")?;
            sys::chmod(&f, 0o600)?;
            as_nobody(|| res(sys::open(&f, libc::O_RDONLY, 0)))
        }
        "perm_read_allowed_for_other" => {
            put(&f, b"public")?;
            sys::chmod(&f, 0o644)?;
            as_nobody(|| match get(&f) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => e,
            })
        }
        "perm_write_denied" => {
            put(&f, b"x")?;
            sys::chmod(&f, 0o644)?;
            as_nobody(|| res(sys::open(&f, libc::O_WRONLY, 0)))
        }
        "perm_create_in_readonly_dir" => {
            sys::mkdir(&d, 0o755)?;
            as_nobody(|| {
                res(sys::open(
                    &d.join("x"),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o644,
                ))
            })
        }
        "perm_search_denied" => {
            sys::mkdir(&d, 0o700)?;
            put(&d.join("x"), b"1")?;
            as_nobody(|| res(sys::stat(&d.join("x"))))
        }
        "perm_chmod_not_owner" => {
            put(&f, b"x")?;
            as_nobody(|| res(sys::chmod(&f, 0o777)))
        }
        "perm_create_in_open_dir_owned_by_caller" => {
            sys::mkdir(&d, 0o777)?;
            sys::chmod(&d, 0o777)?;
            let out = as_nobody(|| match put(&d.join("x"), b"mine") {
                Ok(()) => "ok".into(),
                Err(e) => e,
            });
            let st = sys::stat(&d.join("x"));
            format!(
                "{out} owner={}",
                st.map(|s| format!("{}:{}", s.st_uid, s.st_gid))
                    .unwrap_or_else(|e| e)
            )
        }
        "perm_unlink_sticky_dir" => {
            sys::mkdir(&d, 0o777)?;
            sys::chmod(&d, 0o1777)?;
            put(&d.join("x"), b"root's")?;
            as_nobody(|| res(sys::unlink(&d.join("x"))))
        }
        "perm_access_calls" => {
            put(&f, b"x")?;
            sys::chmod(&f, 0o640)?;
            let r = res(sys::access(&f, libc::R_OK | libc::W_OK));
            let n = as_nobody(|| {
                format!(
                    "r={} f={}",
                    res(sys::access(&f, libc::R_OK)),
                    res(sys::access(&f, libc::F_OK))
                )
            });
            format!("root={r} nobody={n}")
        }
        "readdir_10000_entries" => {
            sys::mkdir(&d, 0o755)?;
            for i in 0..10_000 {
                let fd = sys::open(
                    &d.join(format!("n{i:05}")),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o644,
                )?;
                sys::close(fd);
            }
            let mut v = names(&d)?;
            let n = v.len();
            v.sort();
            v.dedup();
            let all = (0..10_000).all(|i| v.binary_search(&format!("n{i:05}")).is_ok());
            format!("count={n} unique={} all={all}", v.len())
        }
        "readdir_with_concurrent_creates" => {
            sys::mkdir(&d, 0o755)?;
            for i in 0..2000 {
                let fd = sys::open(
                    &d.join(format!("a{i:04}")),
                    libc::O_CREAT | libc::O_WRONLY,
                    0o644,
                )?;
                sys::close(fd);
            }
            let d2 = d.clone();
            let creator = std::thread::spawn(move || {
                for i in 0..500 {
                    if let Ok(fd) = sys::open(
                        &d2.join(format!("b{i:04}")),
                        libc::O_CREAT | libc::O_WRONLY,
                        0o644,
                    ) {
                        sys::close(fd);
                    }
                }
            });
            let v = names(&d)?;
            let _ = creator.join();
            let mut olds: Vec<&String> = v.iter().filter(|n| n.starts_with('a')).collect();
            let listed = olds.len();
            olds.sort();
            olds.dedup();
            let total = names(&d)?.len();
            format!(
                "old_listed={listed} old_unique={} total_after={total}",
                olds.len()
            )
        }
        "name_255_and_256_bytes" => {
            let ok = dir.join("x".repeat(255));
            let long = dir.join("y".repeat(256));
            let a = res(sys::open(&ok, libc::O_CREAT | libc::O_WRONLY, 0o644).map(sys::close));
            let b = res(sys::open(&long, libc::O_CREAT | libc::O_WRONLY, 0o644));
            let c = res(sys::mkdir(&long, 0o755));
            let st = res(sys::stat(&ok));
            format!("255={a} stat={st} 256={b} mkdir256={c}")
        }
        "deep_path" => {
            let mut p = dir.to_path_buf();
            for i in 0..40 {
                p = p.join(format!("level{i:02}-{}", "d".repeat(40)));
                sys::mkdir(&p, 0o755)?;
            }
            put(&p.join("leaf"), b"deep")?;
            format!(
                "len>1500={} read={}",
                p.as_os_str().len() > 1500,
                String::from_utf8_lossy(&get(&p.join("leaf"))?)
            )
        }
        "path_too_long" => {
            let mut p = dir.to_path_buf();
            for _ in 0..20 {
                p = p.join("z".repeat(250));
            }
            res(sys::stat(&p))
        }
        "symlink_and_readlink" => {
            put(&f, b"target data")?;
            sys::symlink("f", &g)?;
            let t = sys::readlink(&g)?;
            let l = sys::lstat(&g)?;
            let s = sys::stat(&g)?;
            format!(
                "target={t} lsize={} llink={} follows={} readlink_file={}",
                l.st_size,
                l.st_mode & libc::S_IFMT == libc::S_IFLNK,
                s.st_size,
                res(sys::readlink(&f))
            )
        }
        "symlink_existing_name" => {
            put(&f, b"x")?;
            res(sys::symlink("t", &f))
        }
        "stat_missing_and_enotdir" => {
            put(&f, b"x")?;
            format!("{} {}", res(sys::stat(&g)), res(sys::stat(&f.join("x"))))
        }
        "st_ino_stable_across_rename" => {
            put(&f, b"x")?;
            let a = sys::stat(&f)?.st_ino;
            sys::rename(&f, &g)?;
            let b = sys::stat(&g)?.st_ino;
            sys::mkdir(&d, 0o755)?;
            let listed = std::fs::read_dir(dir)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok())
                .find(|e| e.file_name() == "g")
                .map(|e| std::os::unix::fs::DirEntryExt::ino(&e));
            format!("same={} d_ino_matches={}", a == b, listed == Some(b))
        }
        "write_then_read_other_fd" => {
            let w = sys::open(&f, libc::O_WRONLY | libc::O_CREAT, 0o644)?;
            let r = sys::open(&f, libc::O_RDONLY, 0)?;
            sys::pwrite(w, b"visible", 0)?;
            let back = sys::pread(r, 16, 0);
            sys::close(w);
            sys::close(r);
            String::from_utf8_lossy(&back?).into_owned()
        }
        _ => return Err(format!("unknown case {name}")),
    })
}

/// Every case, in the order they run.
const CASES: &[&str] = &[
    "open_enoent",
    "open_creat_excl_existing",
    "open_creat_excl_dangling_symlink",
    "open_dir_for_write",
    "open_directory_flag_on_file",
    "open_file_as_path_component",
    "open_nofollow_symlink",
    "open_creat_in_missing_dir",
    "open_trunc",
    "open_rdonly_trunc_keeps_data",
    "open_append",
    "creat_mode_with_umask",
    "write_on_rdonly_fd",
    "sparse_write_and_read_past_eof",
    "large_write_across_chunks",
    "truncate_down_then_up",
    "ftruncate_rdonly_fd",
    "truncate_dir",
    "truncate_negative",
    "rename_file_over_file",
    "rename_dir_over_empty_dir",
    "rename_dir_over_nonempty_dir",
    "rename_file_over_dir",
    "rename_dir_over_file",
    "rename_into_own_subtree",
    "rename_missing_source",
    "rename_to_missing_dir",
    "rename_same_file",
    "rename_noreplace",
    "rename_dir_moves_subtree",
    "rename_open_file_keeps_fd",
    "rename_over_open_file",
    "unlink_open_file",
    "unlink_dir",
    "unlink_missing",
    "rmdir_nonempty",
    "rmdir_file",
    "rmdir_dot",
    "mkdir_existing",
    "nlink_of_dirs_and_files",
    "size_follows_writes",
    "mtime_ctime_advance_on_write",
    "ctime_advances_on_chmod_and_rename",
    "dir_mtime_advances_on_create_and_unlink",
    "utimens_exact",
    "chmod_bits",
    "chown_root",
    "perm_read_denied",
    "perm_read_allowed_for_other",
    "perm_write_denied",
    "perm_create_in_readonly_dir",
    "perm_search_denied",
    "perm_chmod_not_owner",
    "perm_create_in_open_dir_owned_by_caller",
    "perm_unlink_sticky_dir",
    "perm_access_calls",
    "readdir_10000_entries",
    "readdir_with_concurrent_creates",
    "name_255_and_256_bytes",
    "deep_path",
    "path_too_long",
    "symlink_and_readlink",
    "symlink_existing_name",
    "stat_missing_and_enotdir",
    "st_ino_stable_across_rename",
    "write_then_read_other_fd",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(base) = args.next() else {
        eprintln!("usage: sealfs-posix-suite DIR [FILTER]\n  runs the POSIX behaviour cases under DIR, one `case<TAB>outcome` line each");
        std::process::exit(2);
    };
    let filter = args.next();
    if base == "--list" {
        for c in CASES {
            println!("{c}");
        }
        return;
    }
    // SAFETY: getpid cannot fail.
    let work: PathBuf = Path::new(&base).join(format!("posix-suite-{}", unsafe { libc::getpid() }));
    if let Err(e) = std::fs::create_dir(&work) {
        eprintln!("sealfs-posix-suite: cannot create {}: {e}", work.display());
        std::process::exit(1);
    }
    let _ = sys::chmod(&work, 0o755);
    let mut n = 0;
    for name in CASES {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let dir = work.join(name);
        let out = match sys::mkdir(&dir, 0o755).and_then(|_| sys::chmod(&dir, 0o755)) {
            Ok(_) => case(name, &dir),
            Err(e) => Err(format!("setup: {e}")),
        };
        let line = match out {
            Ok(s) => s,
            Err(e) => format!("failed: {e}"),
        };
        println!("{name}\t{}", line.replace(['\n', '\t'], " "));
        let _ = std::io::stdout().flush();
        n += 1;
    }
    if let Err(e) = std::fs::remove_dir_all(&work) {
        eprintln!("sealfs-posix-suite: cleanup of {}: {e}", work.display());
    }
    println!("# cases {n}");
}
