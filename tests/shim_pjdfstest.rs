//! pjdfstest (the crates.io POSIX suite) run under `LD_PRELOAD=libsealfs.so`
//! against the shim's prefix: every failure must be explained by a
//! limitation SealFS states (no hard links or special files, as for the
//! FUSE mount) or one the shim states in shim/README.md (symlinks in
//! directory components are not followed, a stored binary cannot be
//! executed, nothing can be mounted on a SealFS directory). Skipped (with a
//! note) where pjdfstest is not installed: `.ci/run` installs it.

mod common;

use common::{pjdfstest_bin, run_pjdfstest_script, Preloaded};

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
    let manager = p.cl.manager_addr();
    run_pjdfstest_script(
        std::path::Path::new(&dir),
        &bin,
        &[
            ("PJDFSTEST_PRELOAD", p.lib.as_os_str()),
            ("PJDFSTEST_EXPLAINED", SHIM_EXPLAINED.as_ref()),
            ("SEALFS_MANAGER", manager.as_ref()),
            ("SEALFS_MOUNT", PREFIX.as_ref()),
        ],
    );
}
