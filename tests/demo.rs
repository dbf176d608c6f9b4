//! The README's first command: `sealfs demo` starts a cluster, runs its
//! client-library workload and the preloaded shell workload, and reports
//! success for both.

mod common;

use common::{sealfs_bin, shim_lib};
use std::process::Command;

#[test]
fn demo_runs_both_workloads() {
    // the demo preloads the library found next to the binary
    let lib = shim_lib();
    assert_eq!(lib.parent(), std::path::Path::new(sealfs_bin()).parent());
    if std::path::Path::new("/sealfs").exists() {
        eprintln!("skipped: /sealfs exists on this machine's disk");
        return;
    }
    let o = Command::new(sealfs_bin())
        .args(["demo", "--files", "100", "--large-mib", "8"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "demo failed: {}\n{out}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("readdir      100 entries (expected 100)"),
        "{out}"
    );
    assert!(out.contains("  OK"), "{out}");
    assert!(out.contains("files listed: 300"), "{out}");
    assert!(out.contains("f42 reads:    line of file 42"), "{out}");
    assert!(out.contains("the client library sees 300 files"), "{out}");
    assert!(out.contains("root after clean-up: 0 entries"), "{out}");
    assert!(!std::path::Path::new("/sealfs").exists());
}
