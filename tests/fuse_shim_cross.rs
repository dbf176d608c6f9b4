//! The FUSE mount and the LD_PRELOAD shim on one cluster: a file written
//! through the shim reads byte-exact, with the same attributes and inode
//! number, through the mount, and the other way round. Also runs the POSIX
//! behaviour suite under the shim (with `SEALFS_MOUNT` = the FUSE mount, as
//! DESIGN.md intends: calls the shim does not cover reach the same files
//! through the kernel) and prints the cases passed per front end; the
//! shim's results must agree too, except the cases in `SHIM_KNOWN`.

mod common;

use common::{run_posix_suite, shim_lib, Cluster, FuseMount, Opts};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The shim's virtual prefix for the cross-front-end checks (no mount there).
const PREFIX: &str = "/sealfs-cross";

fn preloaded(lib: &Path, cl: &Cluster, prefix: &str, prog: &str) -> Command {
    let mut c = Command::new(prog);
    c.env("LD_PRELOAD", lib)
        .env("SEALFS_MANAGER", cl.manager_addr())
        .env("SEALFS_MOUNT", prefix);
    c
}

fn ok(mut c: Command) -> String {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn files_cross_between_shim_and_mount() {
    assert!(
        !Path::new(PREFIX).exists(),
        "{PREFIX} exists on the local disk"
    );
    let lib = shim_lib();
    let cl = Cluster::start(Opts {
        sync: "none",
        ..Opts::default()
    });
    let m = FuseMount::start(&cl, &[]);
    let src = tempfile::tempdir().expect("tempdir");
    let data: Vec<u8> = (0..1_700_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(src.path().join("blob"), &data).expect("write local");

    // Shim → mount.
    let mut cp = preloaded(&lib, &cl, PREFIX, "cp");
    cp.arg(src.path().join("blob"))
        .arg(format!("{PREFIX}/from-shim"));
    ok(cp);
    let mut chmod = preloaded(&lib, &cl, PREFIX, "chmod");
    chmod.args(["0604", &format!("{PREFIX}/from-shim")]);
    ok(chmod);
    let mut st = preloaded(&lib, &cl, PREFIX, "stat");
    st.args(["-c", "%i %a %s %u %g %Y", &format!("{PREFIX}/from-shim")]);
    let shim_view = ok(st);
    let p = m.path().join("from-shim");
    assert_eq!(std::fs::read(&p).expect("read through the mount"), data);
    let md = std::fs::metadata(&p).expect("stat through the mount");
    let mount_view = format!(
        "{} {:o} {} {} {} {}\n",
        md.ino(),
        md.mode() & 0o7777,
        md.size(),
        md.uid(),
        md.gid(),
        md.mtime()
    );
    assert_eq!(
        shim_view, mount_view,
        "stat through the shim vs through the mount"
    );

    // Mount → shim.
    let q = m.path().join("from-mount");
    std::fs::write(&q, &data[..333_333]).expect("write through the mount");
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let mut cat = preloaded(&lib, &cl, PREFIX, "cat");
    cat.arg(format!("{PREFIX}/from-mount"));
    let out = cat.output().expect("cat");
    assert!(out.status.success());
    assert_eq!(out.stdout, &data[..333_333]);
    let mut st = preloaded(&lib, &cl, PREFIX, "stat");
    st.args(["-c", "%i %a %s", &format!("{PREFIX}/from-mount")]);
    let md = std::fs::metadata(&q).expect("stat");
    assert_eq!(
        ok(st),
        format!("{} {:o} {}\n", md.ino(), md.mode() & 0o7777, md.size())
    );
    assert!(
        !Path::new(PREFIX).exists(),
        "the shim fell back to the local disk"
    );
}

/// Cases where the shim answers differently from Linux, each a limit
/// stated in shim/README.md.
const SHIM_KNOWN: &[(&str, &str)] = &[];

#[test]
fn posix_suite_per_front_end() {
    let lib = shim_lib();
    let cl = Cluster::start(Opts {
        sync: "none",
        ..Opts::default()
    });
    let m = FuseMount::start(&cl, &[]);
    let local = tempfile::Builder::new()
        .prefix("sealfs-local")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(local.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let want = run_posix_suite(local.path());
    let fuse = run_posix_suite(m.path());

    // The same program under the shim, on the mount's path.
    let mnt = m.path().display().to_string();
    let mut c = preloaded(
        &lib,
        &cl,
        &mnt,
        common::posix_suite_bin().to_str().expect("utf-8 path"),
    );
    c.arg(m.path());
    let shim: Vec<(String, String)> = match c.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                l.split_once('\t')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let agree = |got: &[(String, String)]| {
        let mut n = 0;
        let mut bad = Vec::new();
        for (case, outcome) in &want {
            match got.iter().find(|(c, _)| c == case) {
                Some((_, o)) if o == outcome => n += 1,
                Some((_, o)) => bad.push(format!("{case}: linux `{outcome}`, got `{o}`")),
                None => bad.push(format!("{case}: did not run")),
            }
        }
        (n, bad)
    };
    let (nf, bad_fuse) = agree(&fuse);
    let (ns, bad_shim) = agree(&shim);
    println!("| front end | cases passed |");
    println!("|---|---|");
    println!(
        "| local directory (reference) | {} / {} |",
        want.len(),
        want.len()
    );
    println!("| FUSE mount | {nf} / {} |", want.len());
    println!(
        "| shim (LD_PRELOAD, SEALFS_MOUNT = the mount) | {ns} / {} |",
        want.len()
    );
    for b in &bad_shim {
        println!("shim: {b}");
    }
    assert!(
        bad_fuse.is_empty(),
        "the mount disagrees with Linux:\n{}",
        bad_fuse.join("\n")
    );
    let unexpected: Vec<&String> = bad_shim
        .iter()
        .filter(|b| {
            !SHIM_KNOWN
                .iter()
                .any(|(case, _)| b.starts_with(&format!("{case}:")))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the shim disagrees with Linux beyond its stated limits:\n{unexpected:?}"
    );
}
