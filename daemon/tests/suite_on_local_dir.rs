//! The POSIX suite program runs on a plain local directory and every case
//! completes (the outcomes there are Linux's answers, which the FUSE mount
//! and the shim are compared against in the workspace's `tests/`). Building
//! this test also builds the program for those tests.

use std::process::Command;

#[test]
fn every_case_runs_on_a_local_directory() {
    let dir = tempfile::Builder::new()
        .prefix("sealfs-suite")
        .tempdir()
        .expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_sealfs-posix-suite"))
        .arg(dir.path())
        .output()
        .expect("run the suite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let cases: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(cases.len() >= 60, "{text}");
    let failed: Vec<&&str> = cases.iter().filter(|l| l.contains("\tfailed:")).collect();
    assert!(failed.is_empty(), "cases that could not run: {failed:?}");
    assert!(text
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("# cases ")));
    // The work directory is removed afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).expect("read dir").count(), 0);
}
