//! The `sealfs` command: `up` starts a local cluster and prints its manager
//! address, `status` reports it, the debugging commands (`mkdir`, `put`,
//! `get`, `cat`, `ls`, `stat`, `mv`, `rm`) work against it, SIGTERM stops it
//! cleanly, and `up` on the same directory brings the same files back.

mod common;

use common::{free_ports, sealfs_bin};
use rand::{RngCore, SeedableRng};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn up(dir: &std::path::Path, port: u16) -> (Child, String) {
    let mut child = Command::new(sealfs_bin())
        .args(["up", "--dir"])
        .arg(dir)
        .args(["--servers", "3", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("SEALFS_MANAGER=")
        .unwrap_or_else(|| panic!("up printed {line:?}"))
        .to_string();
    (child, addr)
}

fn run(addr: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(sealfs_bin())
        .args(args)
        .env("SEALFS_MANAGER", addr)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn terminate(mut child: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert!(st.success(), "up exited with {st} after SIGTERM");
}

#[test]
fn up_status_and_debug_commands() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_ports(4);
    let (child, addr) = up(dir.path(), port);
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    let (ok, out, _) = run(&addr, &["status"]);
    assert!(ok, "status: {out}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" up")).count(),
        3,
        "{out}"
    );
    // A script waiting for 4 servers is not told the 3-server cluster is ready.
    let (ok, out, _) = run(&addr, &["status", "--expect", "4"]);
    assert!(
        !ok && out.contains("3 of 4 registered"),
        "status --expect 4: {out}"
    );
    assert!(run(&addr, &["status", "--expect", "3"]).0);

    let local = dir.path().join("in.bin");
    let mut data = vec![0u8; 3 << 20];
    rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut data);
    std::fs::write(&local, &data).unwrap();
    assert!(run(&addr, &["mkdir", "-p", "/p/q/r"]).0);
    assert!(
        run(&addr, &["mkdir", "-p", "/p/q/r"]).0,
        "mkdir -p of an existing dir succeeds"
    );
    let (ok, _, err) = run(&addr, &["mkdir", "/p"]);
    assert!(!ok && err.contains("File exists"), "{err}");
    let (ok, _, err) = run(&addr, &["put", local.to_str().unwrap(), "/p/q/r/file"]);
    assert!(ok, "{err}");
    let back = dir.path().join("out.bin");
    let (ok, _, err) = run(&addr, &["get", "/p/q/r/file", back.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read(&back).unwrap() == data);
    let (ok, out, _) = run(&addr, &["ls", "/p/q/r"]);
    assert!(
        ok && out.contains("file") && out.contains(&(3 << 20).to_string()),
        "{out}"
    );
    let (ok, out, _) = run(&addr, &["stat", "/p/q/r/file"]);
    assert!(ok && out.contains("Size: 3145728"), "{out}");
    assert!(run(&addr, &["mv", "/p/q/r/file", "/p/moved"]).0);
    let (ok, out, _) = run(&addr, &["cat", "/p/moved"]);
    assert!(ok && !out.is_empty());
    let (ok, _, err) = run(&addr, &["stat", "/p/q/r/file"]);
    assert!(!ok && err.contains("No such file or directory"), "{err}");
    let (ok, _, err) = run(&addr, &["rm", "/p"]);
    assert!(!ok && err.contains("Directory not empty"), "{err}");
    std::fs::write(dir.path().join("small"), b"keep me").unwrap();
    assert!(
        run(
            &addr,
            &["put", dir.path().join("small").to_str().unwrap(), "/keep"]
        )
        .0
    );
    assert!(run(&addr, &["rm", "-r", "/p"]).0);
    let (_, out, _) = run(&addr, &["ls", "/"]);
    assert!(!out.contains(" p\n") && out.contains("keep"), "{out}");

    // A reader that goes away (`sealfs cat … | head -c 1`) ends the command
    // quietly, as coreutils do: no panic message about a broken pipe.
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 4 << 20]).unwrap();
    assert!(run(&addr, &["put", big.to_str().unwrap(), "/big"]).0);
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' cat /big | head -c 1", sealfs_bin()))
        .env("SEALFS_MANAGER", &addr)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.stdout, b"x");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );

    terminate(child);
    // the cluster is gone: status fails with a clear message
    let (ok, _, err) = run(&addr, &["status"]);
    assert!(
        !ok && err.contains("cannot reach the SealFS manager"),
        "{err}"
    );

    // same directory: same files
    let (child, addr) = up(dir.path(), port);
    let (ok, out, _) = run(&addr, &["cat", "/keep"]);
    assert!(ok && out == "keep me", "{out}");
    terminate(child);
}

#[test]
fn bad_arguments_get_clear_errors() {
    let o = Command::new(sealfs_bin())
        .args(["status", "--manager", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("cannot reach the SealFS manager at 127.0.0.1:1"));
    let o = Command::new(sealfs_bin())
        .args(["manager", "--dir", "/tmp/x", "--chunk-size", "9G"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = Command::new(sealfs_bin())
        .args(["ls", "relative/path"])
        .env("SEALFS_MANAGER", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!o.status.success());
}
