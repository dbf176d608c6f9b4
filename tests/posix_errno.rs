//! Every namespace and data operation of the client library gives the same
//! result and errno as Linux's own file system for the same sequence: each
//! sequence runs on a local temp dir and on a 3-server cluster, and the two
//! transcripts must be equal.

mod common;

use common::{ids, Cluster, Opts};
use sealfs_client::{Client, FileKind};
use std::ffi::CString;

#[derive(Clone, Debug)]
enum Op {
    Mkdir(&'static str),
    Rmdir(&'static str),
    Create(&'static str, bool),
    Open(&'static str, i32),
    Write(&'static str, u64, &'static [u8]),
    Read(&'static str, u64, usize),
    Truncate(&'static str, u64),
    Unlink(&'static str),
    Rename(&'static str, &'static str),
    RenameNoReplace(&'static str, &'static str),
    Stat(&'static str),
    ReadDir(&'static str),
    Symlink(&'static str, &'static str),
    Readlink(&'static str),
    Chmod(&'static str, u32),
    CreateOwned(String, bool),
    StatOwned(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Done,
    Bytes(Vec<u8>),
    Names(Vec<String>),
    /// kind, size (files and symlinks only), nlink, permission bits
    Stat(&'static str, Option<u64>, u64, u32),
    Text(String),
}

type Res = Result<Out, String>;

fn errname(e: i32) -> String {
    sealfs_proto::Errno(e).name().to_string()
}

struct Local {
    root: tempfile::TempDir,
}

impl Local {
    fn c(&self, p: &str) -> CString {
        CString::new(format!("{}{}", self.root.path().display(), p)).unwrap()
    }
    fn check(r: libc::c_int) -> Result<libc::c_int, String> {
        if r < 0 {
            Err(errname(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        } else {
            Ok(r)
        }
    }
    fn run(&self, op: &Op) -> Res {
        // SAFETY: plain libc calls with valid NUL-terminated paths and
        // buffers that outlive the calls.
        unsafe {
            match op {
                Op::Mkdir(p) => {
                    Self::check(libc::mkdir(self.c(p).as_ptr(), 0o755)).map(|_| Out::Done)
                }
                Op::Rmdir(p) => Self::check(libc::rmdir(self.c(p).as_ptr())).map(|_| Out::Done),
                Op::Create(p, excl) => self.open_close(
                    p,
                    libc::O_CREAT | libc::O_WRONLY | if *excl { libc::O_EXCL } else { 0 },
                ),
                Op::CreateOwned(p, excl) => self.open_close(
                    p,
                    libc::O_CREAT | libc::O_WRONLY | if *excl { libc::O_EXCL } else { 0 },
                ),
                Op::Open(p, fl) => self.open_close(p, *fl),
                Op::Write(p, off, d) => {
                    let fd = Self::check(libc::open(self.c(p).as_ptr(), libc::O_WRONLY))?;
                    let r = Self::check(
                        libc::pwrite(fd, d.as_ptr().cast(), d.len(), *off as i64) as i32
                    );
                    libc::close(fd);
                    r.map(|_| Out::Done)
                }
                Op::Read(p, off, len) => {
                    let fd = Self::check(libc::open(self.c(p).as_ptr(), libc::O_RDONLY))?;
                    let mut buf = vec![0u8; *len];
                    let r = Self::check(
                        libc::pread(fd, buf.as_mut_ptr().cast(), *len, *off as i64) as i32,
                    );
                    libc::close(fd);
                    r.map(|n| Out::Bytes(buf[..n as usize].to_vec()))
                }
                Op::Truncate(p, s) => {
                    Self::check(libc::truncate(self.c(p).as_ptr(), *s as i64)).map(|_| Out::Done)
                }
                Op::Unlink(p) => Self::check(libc::unlink(self.c(p).as_ptr())).map(|_| Out::Done),
                Op::Rename(a, b) => {
                    Self::check(libc::rename(self.c(a).as_ptr(), self.c(b).as_ptr()))
                        .map(|_| Out::Done)
                }
                Op::RenameNoReplace(a, b) => Self::check(libc::renameat2(
                    libc::AT_FDCWD,
                    self.c(a).as_ptr(),
                    libc::AT_FDCWD,
                    self.c(b).as_ptr(),
                    libc::RENAME_NOREPLACE,
                ))
                .map(|_| Out::Done),
                Op::Stat(p) => self.stat(p),
                Op::StatOwned(p) => self.stat(p),
                Op::ReadDir(p) => {
                    let rd = std::fs::read_dir(format!("{}{}", self.root.path().display(), p))
                        .map_err(|e| errname(e.raw_os_error().unwrap_or(0)))?;
                    let mut v: Vec<String> = rd
                        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                        .collect();
                    v.sort();
                    Ok(Out::Names(v))
                }
                Op::Symlink(t, p) => {
                    let t = CString::new(*t).unwrap();
                    Self::check(libc::symlink(t.as_ptr(), self.c(p).as_ptr())).map(|_| Out::Done)
                }
                Op::Readlink(p) => {
                    let mut buf = vec![0u8; 4096];
                    let n = libc::readlink(self.c(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len());
                    Self::check(n as i32)
                        .map(|n| Out::Text(String::from_utf8_lossy(&buf[..n as usize]).into()))
                }
                Op::Chmod(p, m) => {
                    Self::check(libc::chmod(self.c(p).as_ptr(), *m)).map(|_| Out::Done)
                }
            }
        }
    }
    fn open_close(&self, p: &str, flags: i32) -> Res {
        // SAFETY: valid path, fd closed right after.
        unsafe {
            let fd = Self::check(libc::open(
                self.c(p).as_ptr(),
                flags | libc::O_CLOEXEC,
                0o644,
            ))?;
            libc::close(fd);
        }
        Ok(Out::Done)
    }
    fn stat(&self, p: &str) -> Res {
        let m = std::fs::symlink_metadata(format!("{}{}", self.root.path().display(), p))
            .map_err(|e| errname(e.raw_os_error().unwrap_or(0)))?;
        use std::os::unix::fs::MetadataExt;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else {
            "file"
        };
        Ok(Out::Stat(
            kind,
            if ft.is_dir() { None } else { Some(m.len()) },
            m.nlink(),
            m.mode() & 0o7777,
        ))
    }
}

fn remote(c: &Client, op: &Op) -> Res {
    let (uid, gid) = ids();
    let e = |x: sealfs_proto::Errno| errname(x.0);
    match op {
        Op::Mkdir(p) => c.mkdir(p, 0o755, uid, gid).map(|_| Out::Done).map_err(e),
        Op::Rmdir(p) => c.rmdir(p).map(|_| Out::Done).map_err(e),
        Op::Create(p, excl) => c
            .open(
                p,
                libc::O_CREAT | libc::O_WRONLY | if *excl { libc::O_EXCL } else { 0 },
                0o644,
                uid,
                gid,
            )
            .map(|_| Out::Done)
            .map_err(e),
        Op::CreateOwned(p, excl) => c
            .open(
                p,
                libc::O_CREAT | libc::O_WRONLY | if *excl { libc::O_EXCL } else { 0 },
                0o644,
                uid,
                gid,
            )
            .map(|_| Out::Done)
            .map_err(e),
        Op::Open(p, fl) => c
            .open(p, *fl, 0o644, uid, gid)
            .map(|_| Out::Done)
            .map_err(e),
        Op::Write(p, off, d) => {
            let i = c.open(p, libc::O_WRONLY, 0, uid, gid).map_err(e)?;
            c.write_at(p, i.attr.ino, *off, d)
                .map(|_| Out::Done)
                .map_err(e)
        }
        Op::Read(p, off, len) => {
            let i = c.open(p, libc::O_RDONLY, 0, uid, gid).map_err(e)?;
            c.read_at(p, i.attr.ino, *off, *len)
                .map(Out::Bytes)
                .map_err(e)
        }
        Op::Truncate(p, s) => c.truncate(p, *s).map(|_| Out::Done).map_err(e),
        Op::Unlink(p) => c.unlink(p).map(|_| Out::Done).map_err(e),
        Op::Rename(a, b) => c.rename(a, b, 0).map(|_| Out::Done).map_err(e),
        Op::RenameNoReplace(a, b) => c
            .rename(a, b, libc::RENAME_NOREPLACE)
            .map(|_| Out::Done)
            .map_err(e),
        Op::Stat(p) => rstat(c, p),
        Op::StatOwned(p) => rstat(c, p),
        Op::ReadDir(p) => {
            let mut v: Vec<String> = c
                .readdir(p)
                .map_err(e)?
                .into_iter()
                .map(|d| d.name)
                .collect();
            v.sort();
            Ok(Out::Names(v))
        }
        Op::Symlink(t, p) => c.symlink(t, p, uid, gid).map(|_| Out::Done).map_err(e),
        Op::Readlink(p) => c.readlink(p).map(Out::Text).map_err(e),
        Op::Chmod(p, m) => c
            .setattr(
                p,
                sealfs_proto::SetAttr {
                    mode: Some(*m),
                    ..Default::default()
                },
            )
            .map(|_| Out::Done)
            .map_err(e),
    }
}

fn rstat(c: &Client, p: &str) -> Res {
    let i = c.lstat(p).map_err(|x| errname(x.0))?;
    let kind = match i.attr.kind {
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::File => "file",
    };
    Ok(Out::Stat(
        kind,
        if kind == "dir" {
            None
        } else {
            Some(i.attr.size)
        },
        i.attr.nlink as u64,
        i.attr.mode,
    ))
}

fn compare(c: &Client, ops: &[Op]) {
    let local = Local {
        root: tempfile::tempdir().unwrap(),
    };
    // the umask shapes the local modes; the client gets modes as given
    // SAFETY: umask only changes this process's mask.
    unsafe { libc::umask(0o022) };
    let mut bad = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let want = local.run(op);
        let got = remote(c, op);
        if want != got {
            bad.push(format!("#{i} {op:?}: linux {want:?}, sealfs {got:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} operations differ from Linux:\n{}",
        bad.len(),
        ops.len(),
        bad.join("\n")
    );
}

#[test]
fn namespace_and_data_match_linux() {
    let cl = Cluster::start(Opts::default());
    let c = cl.client();
    use Op::*;
    let ops = vec![
        // directories and errno
        Mkdir("/a"),
        Mkdir("/a"),
        Mkdir("/x/y"),
        Stat("/a"),
        Stat("/nope"),
        Create("/a/f", false),
        Create("/a/f", false),
        Create("/a/f", true),
        Mkdir("/a/f/g"),
        Create("/a/f/g", false),
        Stat("/a/f/g"),
        Open("/a/f", libc::O_RDONLY | libc::O_DIRECTORY),
        Open("/a", libc::O_WRONLY),
        Open("/a", libc::O_RDWR),
        Open("/a", libc::O_RDONLY),
        Open("/nope", libc::O_RDONLY),
        Open("/nope/x", libc::O_CREAT | libc::O_WRONLY),
        Rmdir("/a"),
        Rmdir("/a/f"),
        Rmdir("/nope"),
        Unlink("/a"),
        Unlink("/nope"),
        Unlink("/a/f/x"),
        ReadDir("/a"),
        ReadDir("/a/f"),
        ReadDir("/nope"),
        // data: sparse writes, reads past EOF, truncate up and down
        Write("/a/f", 0, b"hello"),
        Read("/a/f", 0, 100),
        Read("/a/f", 2, 2),
        Read("/a/f", 5, 10),
        Read("/a/f", 1000, 10),
        Write("/a/f", 10, b"x"),
        Read("/a/f", 0, 100),
        Stat("/a/f"),
        Truncate("/a/f", 3),
        Read("/a/f", 0, 100),
        Truncate("/a/f", 10),
        Read("/a/f", 0, 100),
        Stat("/a/f"),
        Truncate("/a", 0),
        Truncate("/nope", 0),
        Write("/a", 0, b"x"),
        Open("/a/f", libc::O_WRONLY | libc::O_TRUNC),
        Stat("/a/f"),
        Write("/a/f", 0, b"again"),
        // rename: files, dirs, every errno
        Rename("/a/f", "/a/g"),
        Stat("/a/f"),
        Read("/a/g", 0, 100),
        Rename("/nope", "/a/h"),
        Rename("/a/g", "/nope/h"),
        Rename("/a/g", "/a/g"),
        Mkdir("/b"),
        Rename("/a/g", "/b"),
        Rename("/b", "/a/g"),
        Mkdir("/b/c"),
        Rename("/b", "/b/c/d"),
        Rename("/b", "/b/c"),
        Mkdir("/e"),
        Create("/e/x", false),
        Rename("/b", "/e"),
        Mkdir("/empty"),
        Rename("/b", "/empty"),
        Stat("/empty"),
        Stat("/b"),
        ReadDir("/empty"),
        Stat("/empty/c"),
        Create("/a/k", false),
        Write("/a/k", 0, b"kk"),
        RenameNoReplace("/a/k", "/a/g"),
        Rename("/a/k", "/a/g"),
        Read("/a/g", 0, 100),
        Stat("/a/k"),
        Rename("/e/x", "/a/f/x"),
        // nlink of directories follows their subdirectories
        Mkdir("/n"),
        Mkdir("/n/1"),
        Mkdir("/n/2"),
        Stat("/n"),
        Rmdir("/n/1"),
        Stat("/n"),
        // symlinks
        Symlink("/a/g", "/l"),
        Readlink("/l"),
        Stat("/l"),
        Readlink("/a/g"),
        Symlink("x", "/l"),
        Unlink("/l"),
        Readlink("/l"),
        // chmod
        Chmod("/a/g", 0o600),
        Stat("/a/g"),
        Chmod("/nope", 0o600),
        // long names
        CreateOwned(format!("/a/{}", "n".repeat(255)), true),
        StatOwned(format!("/a/{}", "n".repeat(255))),
        CreateOwned(format!("/a/{}", "n".repeat(256)), true),
        StatOwned(format!("/a/{}", "m".repeat(256))),
        ReadDir("/"),
        ReadDir("/a"),
        // tear down
        Unlink("/a/g"),
        Rmdir("/a"),
        Rmdir("/empty"),
        Rmdir("/empty/c"),
        Rmdir("/empty"),
        ReadDir("/"),
    ];
    compare(&c, &ops);
}

#[test]
fn deep_paths_and_dir_rename_with_contents() {
    let cl = Cluster::start(Opts::default());
    let c = cl.client();
    let (uid, gid) = ids();
    let mut p = String::new();
    for i in 0..40 {
        p.push_str(&format!("/d{i}"));
        c.mkdir(&p, 0o755, uid, gid).unwrap();
    }
    c.write_file(&format!("{p}/leaf"), b"deep", 0o644).unwrap();
    assert_eq!(c.read_file(&format!("{p}/leaf")).unwrap(), b"deep");
    // a tree with files at several levels moves as a whole
    c.rename("/d0/d1", "/moved", 0).unwrap();
    let newp = p.replacen("/d0/d1", "/moved", 1);
    assert_eq!(c.read_file(&format!("{newp}/leaf")).unwrap(), b"deep");
    assert_eq!(c.lstat("/d0/d1").unwrap_err(), sealfs_proto::Errno::ENOENT);
    assert!(c.readdir("/d0").unwrap().is_empty());
    assert_eq!(c.readdir("/moved").unwrap().len(), 1);
    // `..` never escapes the root
    assert_eq!(c.lstat("/../../moved").unwrap().attr.kind, FileKind::Dir);
}
