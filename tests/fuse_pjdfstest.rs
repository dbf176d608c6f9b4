//! pjdfstest (the crates.io POSIX suite) against the FUSE mount: every
//! failure must be explained by a limitation SealFS states (no hard links,
//! no FIFOs/sockets/device nodes); `tests/pjdfstest/run.sh` holds that list
//! and prints the counts. Skipped (with a note) where pjdfstest is not
//! installed: `.ci/run` installs it.

mod common;

use common::{pjdfstest_bin, run_pjdfstest_script, Cluster, FuseMount, Opts};

#[test]
fn pjdfstest_failures_are_only_stated_limitations() {
    let Some(bin) = pjdfstest_bin() else {
        println!("pjdfstest is not installed (cargo install pjdfstest): skipped");
        return;
    };
    let cl = Cluster::start(Opts {
        sync: "none",
        ..Opts::default()
    });
    let m = FuseMount::start(&cl, &[]);
    let dir = m.path().join("pjdfstest");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(
        &dir,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    run_pjdfstest_script(&dir, &bin, &[]);
}
