//! The IO500 runner under `LD_PRELOAD=libsealfs.so` against a real 3-server
//! cluster: every phase runs (a short stonewall), every read verifies, the
//! run cleans up after itself, and nothing lands on the local disk under the
//! prefix. Speed is not asserted; `bench/compare.sh` measures it.

mod common;

use common::{sealfs_bin, shim_lib, Cluster, Opts};
use std::process::Command;

#[test]
fn io500_runs_preloaded_against_a_cluster() {
    let prefix = format!("/sealfs-io500-test-{}", std::process::id());
    assert!(!std::path::Path::new(&prefix).exists());
    let cl = Cluster::start(Opts {
        sync: "none",
        ..Opts::default()
    });
    let lib = shim_lib();
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = Command::new(sealfs_bin())
        .args([
            "bench",
            "io500",
            "--procs",
            "2",
            "--stonewall",
            "1s",
            "--easy-max",
            "64M",
        ])
        .args(["--target", &format!("{prefix}/run")])
        .arg("--out")
        .arg(out.path())
        .env("LD_PRELOAD", &lib)
        .env("SEALFS_MANAGER", cl.manager_addr())
        .env("SEALFS_MOUNT", &prefix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "io500 under the shim failed: {}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tsv = std::fs::read_to_string(out.path()).unwrap();
    let phases: Vec<&str> = tsv.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(phases.len(), 15, "{tsv}");
    for l in tsv.lines() {
        let v: f64 = l.split('\t').nth(1).unwrap().parse().unwrap();
        assert!(v > 0.0, "{l}");
    }
    assert!(
        !std::path::Path::new(&prefix).exists(),
        "the run leaked onto the local disk at {prefix}"
    );
    // the files went to SealFS, and the runner removed its directory afterwards
    let c = cl.client();
    let left = c.readdir("/run").unwrap();
    assert!(left.is_empty(), "left behind in SealFS: {left:?}");
}
