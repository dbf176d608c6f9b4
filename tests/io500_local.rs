//! `sealfs bench io500` runs every IO500 phase on a local directory with
//! tiny stonewalls, verifies what it reads, reports all twelve phases and
//! the three scores, and cleans up after itself.

mod common;

use common::sealfs_bin;
use std::process::Command;

#[test]
fn io500_runs_every_phase_on_a_local_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.tsv");
    let o = Command::new(sealfs_bin())
        .args([
            "bench",
            "io500",
            "--procs",
            "2",
            "--stonewall",
            "300ms",
            "--easy-max",
            "16M",
            "--target",
        ])
        .arg(dir.path())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "io500 failed: {}\n{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    for phase in [
        "ior-easy-write",
        "mdtest-easy-write",
        "ior-hard-write",
        "mdtest-hard-write",
        "find",
        "ior-easy-read",
        "mdtest-easy-stat",
        "ior-hard-read",
        "mdtest-hard-stat",
        "mdtest-easy-delete",
        "mdtest-hard-read",
        "mdtest-hard-delete",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(phase))
            .unwrap_or_else(|| panic!("no {phase} in\n{stdout}"));
        let value: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(value > 0.0, "{line}");
    }
    assert!(stdout.contains("[SCORE] bandwidth"), "{stdout}");
    let tsv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(tsv.lines().count(), 15, "{tsv}");
    // the run directory is gone
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path() != out)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
