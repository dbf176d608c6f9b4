//! The FUSE mount (`sealfs mount`) against a real cluster: the POSIX
//! behaviour suite agrees with Linux, files cross between the client library
//! and the mount byte-exact with their attributes, inode numbers are the
//! servers', unmount/remount keeps everything, real programs work inside
//! the mount, a down server gives EIO (never a hang) and the mount recovers,
//! and stale mounts, SIGTERM and `--background` behave.
//!
//! Needs root and /dev/fuse; every mount is unmounted when its `FuseMount`
//! is dropped.

mod common;

use common::{ids, is_mounted, run_posix_suite, sealfs_bin, Cluster, FuseMount, Opts};
use sealfs_client::SetAttr;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fast() -> Opts {
    Opts {
        sync: "none",
        ..Opts::default()
    }
}

/// A local directory others can traverse (the suite drops to uid 65534).
fn local_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("sealfs-local")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

#[test]
fn posix_suite_agrees_with_linux() {
    let cl = Cluster::start(fast());
    let m = FuseMount::start(&cl, &[]);
    let local = local_dir();
    let want = run_posix_suite(local.path());
    let got = run_posix_suite(m.path());
    assert!(want.len() >= 60, "the suite ran only {} cases", want.len());
    let mut bad = Vec::new();
    let mut passed = 0;
    for (case, outcome) in &want {
        match got.iter().find(|(c, _)| c == case) {
            Some((_, o)) if o == outcome => passed += 1,
            Some((_, o)) => bad.push(format!("{case}: linux `{outcome}`, mount `{o}`")),
            None => bad.push(format!("{case}: missing on the mount")),
        }
    }
    println!("| front end | cases passed |");
    println!("|---|---|");
    println!(
        "| local directory (reference) | {} / {} |",
        want.len(),
        want.len()
    );
    println!("| FUSE mount | {passed} / {} |", want.len());
    assert!(
        bad.is_empty(),
        "the mount disagrees with Linux:\n{}",
        bad.join("\n")
    );
}

#[test]
fn files_cross_between_client_and_mount_with_attributes() {
    let cl = Cluster::start(fast());
    let m = FuseMount::start(&cl, &[]);
    let client = cl.client();
    let (uid, gid) = ids();

    // Written through the client library, read through the mount.
    let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    client.mkdir("/dir", 0o750, uid, gid).unwrap();
    client.write_file("/dir/from-client", &data, 0o640).unwrap();
    client
        .setattr(
            "/dir/from-client",
            SetAttr {
                uid: Some(1234),
                gid: Some(4321),
                ..SetAttr::default()
            },
        )
        .unwrap();
    let a = client.lstat("/dir/from-client").unwrap().attr;
    let p = m.path().join("dir/from-client");
    assert_eq!(std::fs::read(&p).unwrap(), data);
    let md = std::fs::symlink_metadata(&p).unwrap();
    assert_eq!(md.ino(), a.ino);
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (1234, 4321));
    assert_eq!(md.size(), a.size);
    assert_eq!(
        (md.mtime(), md.mtime_nsec() as u32),
        (a.mtime.sec, a.mtime.nsec)
    );
    assert_eq!(md.nlink(), 1);

    // Written through the mount, read through the client library.
    let q = m.path().join("dir/from-mount");
    std::fs::write(&q, &data[..777_777]).unwrap();
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o600)).unwrap();
    let md = std::fs::symlink_metadata(&q).unwrap();
    let i = client.lstat("/dir/from-mount").unwrap().attr;
    assert_eq!(
        client.read_file("/dir/from-mount").unwrap(),
        &data[..777_777]
    );
    assert_eq!(
        (i.ino, i.mode, i.size, i.uid, i.gid),
        (md.ino(), 0o600, 777_777, md.uid(), md.gid())
    );
    assert_eq!(
        (i.mtime.sec, i.mtime.nsec),
        (md.mtime(), md.mtime_nsec() as u32)
    );

    // Directory entries carry the same inode numbers as stat.
    for e in std::fs::read_dir(m.path().join("dir")).unwrap() {
        let e = e.unwrap();
        use std::os::unix::fs::DirEntryExt;
        assert_eq!(e.ino(), std::fs::symlink_metadata(e.path()).unwrap().ino());
    }
    // The root's st_ino is the server's root inode.
    assert_eq!(
        std::fs::metadata(m.path()).unwrap().ino(),
        client.lstat("/").unwrap().attr.ino
    );

    // link: SealFS has no hard links (EPERM); RENAME_EXCHANGE is refused.
    assert_eq!(
        errno_of(std::fs::hard_link(&q, m.path().join("dir/hard"))),
        libc::EPERM
    );
    let other = m.path().join("dir/other");
    std::fs::write(&other, b"o").unwrap();
    // SAFETY: both paths are valid NUL-terminated strings for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            c(&q).as_ptr(),
            libc::AT_FDCWD,
            c(&other).as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EINVAL)
    );

    // statfs answers.
    let st = nix_statfs(m.path());
    assert!(st > 0, "statfs reported no blocks");
    // The reserved name of files unlinked while open is invisible.
    assert!(!std::fs::read_dir(m.path())
        .unwrap()
        .any(|e| e.unwrap().file_name() == ".sealfs-hidden"));
}

fn nix_statfs(p: &Path) -> u64 {
    // SAFETY: a zeroed statfs is a valid out-buffer; the path is valid.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(c(p).as_ptr(), &mut s) };
    assert_eq!(r, 0, "statfs: {}", std::io::Error::last_os_error());
    s.f_blocks
}

#[test]
fn unmount_and_remount_keep_everything() {
    let cl = Cluster::start(fast());
    let mut m = FuseMount::start(&cl, &[]);
    let root = m.path().to_path_buf();
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/b/c/file"), b"kept").unwrap();
    std::os::unix::fs::symlink("b/c/file", root.join("a/link")).unwrap();
    std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o711)).unwrap();
    let ino = std::fs::metadata(root.join("a/b/c/file")).unwrap().ino();
    m.unmount();
    assert!(!is_mounted(&root));
    assert!(
        std::fs::read_dir(&root).unwrap().next().is_none(),
        "the mount point is empty while unmounted"
    );
    m.mount(&cl, &[]);
    assert_eq!(std::fs::read(root.join("a/b/c/file")).unwrap(), b"kept");
    assert_eq!(std::fs::read(root.join("a/link")).unwrap(), b"kept");
    assert_eq!(
        std::fs::read_link(root.join("a/link")).unwrap(),
        Path::new("b/c/file")
    );
    assert_eq!(
        std::fs::metadata(root.join("a/b")).unwrap().mode() & 0o7777,
        0o711
    );
    assert_eq!(
        std::fs::metadata(root.join("a/b/c/file")).unwrap().ino(),
        ino
    );
}

fn run_in(dir: &Path, cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The system's Python (`python3` on PATH may be a pyenv shim).
fn python() -> Option<&'static str> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

#[test]
fn real_programs_work_in_the_mount() {
    let cl = Cluster::start(fast());
    let m = FuseMount::start(&cl, &[]);
    let root = m.path();
    let src = local_dir();
    // A small tree: nested dirs, a symlink, an executable, a 3 MiB file.
    std::fs::create_dir_all(src.path().join("t/sub/deeper")).unwrap();
    std::fs::write(src.path().join("t/sub/a.txt"), b"alpha\n").unwrap();
    std::fs::write(
        src.path().join("t/big.bin"),
        (0..3_000_000u32)
            .map(|i| (i * 31 % 256) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(src.path().join("t/run.sh"), b"#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(
        src.path().join("t/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/a.txt", src.path().join("t/link")).unwrap();
    let s = src.path().display().to_string();
    let r = root.display().to_string();

    // cp -a in and back out, compared with diff -r.
    run_in(root, "cp", &["-a", &format!("{s}/t"), &format!("{r}/cp")]);
    run_in(
        root,
        "diff",
        &[
            "-r",
            "--no-dereference",
            &format!("{s}/t"),
            &format!("{r}/cp"),
        ],
    );
    let out = Command::new(format!("{r}/cp/run.sh")).output().unwrap();
    assert_eq!(out.stdout, b"ran\n", "execve of a stored script");
    // tar out of the mount and into it.
    run_in(root, "tar", &["-cf", &format!("{s}/t.tar"), "-C", &r, "cp"]);
    std::fs::create_dir(root.join("untar")).unwrap();
    run_in(
        root,
        "tar",
        &["-xf", &format!("{s}/t.tar"), "-C", &format!("{r}/untar")],
    );
    run_in(
        root,
        "diff",
        &[
            "-r",
            "--no-dereference",
            &format!("{s}/t"),
            &format!("{r}/untar/cp"),
        ],
    );
    // find sees every file once.
    let out = Command::new("find").arg(root.join("cp")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 7);
    // rsync -a (when installed).
    if have("rsync") {
        run_in(
            root,
            "rsync",
            &["-a", &format!("{s}/t/"), &format!("{r}/rs/")],
        );
        run_in(
            root,
            "rsync",
            &["-a", &format!("{s}/t/"), &format!("{r}/rs/")],
        );
        run_in(
            root,
            "diff",
            &[
                "-r",
                "--no-dereference",
                &format!("{s}/t"),
                &format!("{r}/rs"),
            ],
        );
    } else {
        println!("rsync not installed: skipped");
    }
    // git init/add/commit/status.
    if have("git") {
        let repo = root.join("repo");
        std::fs::create_dir(&repo).unwrap();
        std::fs::write(repo.join("README"), b"hello git\n").unwrap();
        run_in(&repo, "git", &["init", "-q"]);
        run_in(&repo, "git", &["add", "."]);
        run_in(
            &repo,
            "git",
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "first",
            ],
        );
        let st = Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            st.status.success() && st.stdout.is_empty(),
            "git status: {}",
            String::from_utf8_lossy(&st.stdout)
        );
        run_in(&repo, "git", &["log", "--oneline"]);
        run_in(&repo, "git", &["fsck", "--no-progress"]);
    }
    // python3 -m compileall with the real interpreter.
    if let Some(py) = python() {
        let pk = root.join("py/pkg");
        std::fs::create_dir_all(&pk).unwrap();
        std::fs::write(pk.join("__init__.py"), b"").unwrap();
        std::fs::write(pk.join("mod.py"), b"def f():\n    return 42\n").unwrap();
        run_in(&root.join("py"), py, &["-m", "compileall", "-q", "pkg"]);
        let out = Command::new(py)
            .args(["-c", "import pkg.mod; print(pkg.mod.f())"])
            .current_dir(root.join("py"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
        assert!(std::fs::read_dir(pk.join("__pycache__")).unwrap().count() >= 2);
    }
    // make of a tiny C project, and run what it built.
    if have("make") && have("cc") {
        let proj = root.join("cproj");
        std::fs::create_dir(&proj).unwrap();
        std::fs::write(proj.join("main.c"), b"#include <stdio.h>\nint add(int,int);\nint main(void){printf(\"%d\\n\", add(2,3));return 0;}\n").unwrap();
        std::fs::write(proj.join("add.c"), b"int add(int a,int b){return a+b;}\n").unwrap();
        std::fs::write(
            proj.join("Makefile"),
            b"app: main.o add.o\n\tcc -o app main.o add.o\n%.o: %.c\n\tcc -c -o $@ $<\n",
        )
        .unwrap();
        run_in(&proj, "make", &["-s"]);
        let out = Command::new(proj.join("app")).output().unwrap();
        assert_eq!(out.stdout, b"5\n");
        // Nothing to do the second time: mtimes are kept.
        let again = Command::new("make")
            .arg("-q")
            .current_dir(&proj)
            .status()
            .unwrap();
        assert!(again.success(), "make -q says the build is out of date");
    }
}

/// Reads a file in a child process bounded by `bound`: `Some(errno)` (0 on
/// success), or `None` if it did not finish (a hang).
fn bounded_read(p: &Path, bound: Duration) -> Option<i32> {
    let mut child = Command::new("cat")
        .arg(p)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cat");
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            if st.success() {
                return Some(0);
            }
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            return Some(if err.contains("Input/output error") {
                libc::EIO
            } else {
                -1
            });
        }
        if t0.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server (1-based index) that owns none of `paths`.
fn victim_sparing(cl: &Cluster, paths: &[&str]) -> u16 {
    let map = cl.map().expect("cluster map");
    let ring = sealfs_proto::Ring::of_map(&map);
    (1..=cl.opts.servers)
        .find(|i| {
            let addr = format!("127.0.0.1:{}", cl.port + i);
            let id = map.servers.iter().find(|s| s.addr == addr).map(|s| s.id);
            paths.iter().all(|p| ring.owner_path(p) != id)
        })
        .expect("a server that owns none of the paths")
}

#[test]
fn down_server_gives_eio_and_the_mount_recovers() {
    let mut cl = Cluster::start(Opts {
        heartbeat_timeout: "2s",
        ..fast()
    });
    let m = FuseMount::start(&cl, &["--io-timeout", "2s", "--attr-timeout", "0"]);
    std::fs::create_dir(m.path().join("d")).unwrap();
    for i in 0..40 {
        std::fs::write(m.path().join(format!("d/f{i}")), format!("{i}")).unwrap();
    }
    // The victim owns neither `/` nor `/d` (a directory whose owner is down
    // cannot be traversed: its attributes live there).
    let victim = victim_sparing(&cl, &["/", "/d"]);
    cl.kill_server(victim);
    cl.wait_down(victim);
    let mut eio = 0;
    let mut ok = 0;
    for i in 0..40 {
        match bounded_read(&m.path().join(format!("d/f{i}")), Duration::from_secs(60)) {
            Some(0) => ok += 1,
            Some(e) if e == libc::EIO => eio += 1,
            Some(e) => panic!("f{i}: unexpected failure {e}"),
            None => panic!("f{i}: reading hung while a server was down"),
        }
    }
    assert!(eio > 0, "no file gave EIO with a server down");
    assert!(ok > 0, "no file was readable with one server of three down");
    assert!(is_mounted(m.path()), "the mount went away");

    cl.start_server(victim);
    cl.wait_all_up();
    let t0 = Instant::now();
    for i in 0..40 {
        let p = m.path().join(format!("d/f{i}"));
        loop {
            match std::fs::read_to_string(&p) {
                Ok(s) => {
                    assert_eq!(s, format!("{i}"));
                    break;
                }
                Err(e) => assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "f{i} still unreadable after the server returned: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn killing_a_server_mid_copy_gives_eio_not_a_hang() {
    let mut cl = Cluster::start(Opts {
        heartbeat_timeout: "2s",
        ..fast()
    });
    let m = FuseMount::start(&cl, &["--io-timeout", "2s"]);
    let src = local_dir();
    let big = src.path().join("big");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&big).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 241) as u8 + 1).collect();
        for _ in 0..256 {
            f.write_all(&block).unwrap();
        }
    }
    let dst = m.path().join("copy");
    let mut cp = Command::new("cp")
        .arg("--sparse=never")
        .arg(&big)
        .arg(&dst)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0) < 8 << 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the copy never started"
        );
        if cp.try_wait().unwrap().is_some() {
            panic!("cp finished before a server could be killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cl.kill_server(1);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = cp.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = cp.kill();
            panic!("cp hung after a server was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    cp.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        !status.success(),
        "cp succeeded although a server died mid-copy"
    );
    assert!(err.contains("Input/output error"), "cp said: {err}");
    assert!(is_mounted(m.path()));
}

#[test]
fn stale_mount_is_reported_and_cleared() {
    let cl = Cluster::start(fast());
    let mut m = FuseMount::start(&cl, &[]);
    std::fs::write(m.path().join("f"), b"x").unwrap();
    // SIGKILL the daemon: the kernel mount stays, disconnected.
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(errno_of(std::fs::metadata(m.path())), libc::ENOTCONN);
    let out = Command::new(sealfs_bin())
        .arg("mount")
        .arg(m.path())
        .args(["--manager", &cl.manager_addr()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("stale") && err.contains(&format!("fusermount3 -u {}", m.path().display())),
        "{err}"
    );
    let out = Command::new(sealfs_bin())
        .arg("umount")
        .arg(m.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(m.path()));
    m.mount(&cl, &[]);
    assert_eq!(std::fs::read(m.path().join("f")).unwrap(), b"x");
}

#[test]
fn background_mount_and_sigterm_unmount() {
    let cl = Cluster::start(fast());
    let dir = tempfile::Builder::new()
        .prefix("sealfs-mnt")
        .tempdir()
        .unwrap();
    let log = cl.dir.path().join("bg.log");
    let out = Command::new(sealfs_bin())
        .arg("mount")
        .arg(dir.path())
        .args(["--manager", &cl.manager_addr(), "--background", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Live as soon as the command returned.
    assert!(is_mounted(dir.path()));
    std::fs::write(dir.path().join("bg"), b"live").unwrap();
    // A second mount on a live one is refused, not stacked.
    let again = Command::new(sealfs_bin())
        .arg("mount")
        .arg(dir.path())
        .args(["--manager", &cl.manager_addr()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already mounted"));
    let text = String::from_utf8_lossy(&out.stdout);
    let pid: i32 = text
        .split("pid ")
        .nth(1)
        .and_then(|s| s.trim_end().trim_end_matches(')').parse().ok())
        .expect("daemon pid printed");
    // SAFETY: signalling the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    while is_mounted(dir.path()) {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = Command::new(sealfs_bin())
                .args(["umount", "--lazy"])
                .arg(dir.path())
                .status();
            panic!(
                "SIGTERM did not unmount; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The mount point is an ordinary empty directory again.
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn concurrent_writers_readers_and_listers() {
    let cl = Cluster::start(fast());
    let m = FuseMount::start(&cl, &[]);
    let root = m.path().to_path_buf();
    std::fs::create_dir(root.join("par")).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let root = &root;
            s.spawn(move || {
                for i in 0..150 {
                    let p = root.join(format!("par/t{t}-{i}"));
                    let body = format!("thread {t} file {i} ").repeat(i + 1);
                    std::fs::write(&p, &body).unwrap();
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), body);
                    if i % 3 == 0 {
                        std::fs::rename(&p, root.join(format!("par/r{t}-{i}"))).unwrap();
                    }
                }
            });
        }
        // Listing while the writers work: never an error, never a duplicate.
        let root = &root;
        s.spawn(move || {
            for _ in 0..20 {
                let mut names: Vec<_> = std::fs::read_dir(root.join("par"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                let n = names.len();
                names.sort();
                names.dedup();
                assert_eq!(n, names.len(), "duplicate names in one listing");
            }
        });
    });
    let names: Vec<_> = std::fs::read_dir(root.join("par"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 8 * 150);
    let renamed = names
        .iter()
        .filter(|n| n.to_string_lossy().starts_with('r'))
        .count();
    assert_eq!(renamed, 8 * 50);
}
