//! pjdfstest (the crates.io POSIX suite) run under `LD_PRELOAD=libsealfs.so`
//! against the shim's prefix: every failure must be explained by a
//! limitation SealFS states (no hard links or special files, as for the
//! FUSE mount) or one the shim states in shim/README.md (symlinks in
//! directory components are not followed, a stored binary cannot be
//! executed, nothing can be mounted on a SealFS directory). Skipped (with a
//! note) where pjdfstest is not installed: `.ci/run` installs it.

mod common;

use common::{pjdfstest_bin, Preloaded};
use std::process::Command;

const PREFIX: &str = "/sealfs-pjdfstest";

/// The shim's own stated limits, as pjdfstest names the tests they fail.
const SHIM_EXPLAINED: &str = "::eloop_comp$|::etxtbsy$|^rmdir::ebusy$";

#[test]
fn pjdfstest_under_the_shim_fails_only_on_stated_limits() {
    let Some(bin) = pjdfstest_bin() else {
        println!("pjdfstest is not installed (cargo install pjdfstest): skipped");
        return;
    };
    let p = Preloaded::new(PREFIX);
    let dir = format!("{PREFIX}/pjdfstest");
    let mut mk = p.cmd("mkdir");
    mk.args(["-m", "0755", &dir]);
    p.run(mk);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjdfstest/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(&dir)
        .arg(&bin)
        .env("PJDFSTEST_PRELOAD", &p.lib)
        .env("PJDFSTEST_EXPLAINED", SHIM_EXPLAINED)
        .env("SEALFS_MANAGER", p.cl.manager_addr())
        .env("SEALFS_MOUNT", PREFIX)
        .output()
        .expect("run pjdfstest");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
