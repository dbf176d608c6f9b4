//! `sealfs demo`: the README's first command. Starts a throw-away local
//! cluster (manager + 3 servers as real processes), runs a small workload
//! through the client library, then a shell script of ordinary programs
//! under `LD_PRELOAD=libsealfs.so` (found next to the `sealfs` binary), and
//! prints what happened.

use crate::cluster::{LocalCluster, UpArgs};
use clap::Args;
use rand::{Rng, RngCore, SeedableRng};
use sealfs_client::{Client, ClientOptions, FileKind};
use sealfs_proto::Ring;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `sealfs demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the cluster's state here (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of servers.
    #[arg(long, default_value_t = 3)]
    servers: u16,
    /// Small files to create.
    #[arg(long, default_value_t = 2000)]
    files: usize,
    /// Size of the large striped file, in MiB.
    #[arg(long, default_value_t = 64)]
    large_mib: usize,
}

/// Finds `n` consecutive free loopback ports.
pub fn free_ports(n: u16) -> Result<u16, String> {
    let mut rng = rand::thread_rng();
    for _ in 0..200 {
        // Below Linux's ephemeral range (32768..60999), where an outgoing
        // connection could take a port between this probe and the bind.
        let base: u16 = rng.gen_range(10000..32000);
        let ok = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return Ok(base);
        }
    }
    Err(format!("no {n} consecutive free ports found on 127.0.0.1"))
}

fn rate(n: usize, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64();
    format!(
        "{n:>6} ops in {:>7.3} s = {:>9.0} ops/s",
        s,
        n as f64 / s.max(1e-9)
    )
}

/// Runs the demo.
pub fn run(a: DemoArgs) -> Result<(), String> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("sealfs-demo")
                .tempdir()
                .map_err(|e| e.to_string())?;
            tmp.path().to_path_buf()
        }
    };
    let port = free_ports(a.servers + 1)?;
    let up = UpArgs {
        dir: dir.clone(),
        servers: a.servers,
        port,
        sync: "fsync".into(),
        chunk_size: "1M".into(),
        heartbeat_timeout: "3s".into(),
    };
    println!(
        "starting a local cluster: 1 manager + {} servers under {}",
        a.servers,
        dir.display()
    );
    let t = Instant::now();
    let cl = LocalCluster::start(&up)?;
    println!(
        "  serving after {:.2} s; SEALFS_MANAGER={}",
        t.elapsed().as_secs_f64(),
        cl.manager
    );
    let c = Client::connect(&cl.manager, ClientOptions::default()).map_err(|e| e.to_string())?;
    let map = c.map();
    let ring = Ring::of_map(&map);
    let e = |what: &str, er: sealfs_client::Errno| format!("{what}: {er}");
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };

    c.mkdir("/demo", 0o755, uid, gid)
        .map_err(|er| e("/demo", er))?;
    c.mkdir("/demo/small", 0o755, uid, gid)
        .map_err(|er| e("/demo/small", er))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut files = Vec::with_capacity(a.files);
    for i in 0..a.files {
        let mut d = vec![0u8; 4096];
        rng.fill_bytes(&mut d);
        files.push((format!("/demo/small/f{i:05}"), d));
    }
    println!("\nsmall files (4 KiB each):");
    let t = Instant::now();
    for (p, d) in &files {
        c.write_file(p, d, 0o644).map_err(|er| e(p, er))?;
    }
    println!("  create+write {}", rate(files.len(), t));
    let t = Instant::now();
    for (p, _) in &files {
        c.lstat(p).map_err(|er| e(p, er))?;
    }
    println!("  stat         {}", rate(files.len(), t));
    let t = Instant::now();
    for (p, d) in &files {
        if &c.read_file(p).map_err(|er| e(p, er))? != d {
            return Err(format!("{p}: read back differs from what was written"));
        }
    }
    println!("  read+verify  {}", rate(files.len(), t));
    let listed = c
        .readdir("/demo/small")
        .map_err(|er| e("/demo/small", er))?;
    println!(
        "  readdir      {} entries (expected {})",
        listed.len(),
        files.len()
    );
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for (p, _) in &files {
        if let Some(o) = ring.owner_path(p) {
            *per.entry(o.to_string()).or_default() += 1;
        }
    }
    println!("  inode records per server: {per:?}");

    println!(
        "\nlarge file ({} MiB, striped in {} KiB chunks):",
        a.large_mib,
        map.chunk_size / 1024
    );
    let mut big = vec![0u8; a.large_mib << 20];
    rng.fill_bytes(&mut big);
    let want = Sha256::digest(&big);
    let t = Instant::now();
    let ino = c
        .open(
            "/demo/big",
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
            0o644,
            uid,
            gid,
        )
        .map_err(|er| e("/demo/big", er))?
        .attr
        .ino;
    let step = 8usize << 20;
    for (i, part) in big.chunks(step).enumerate() {
        c.write_at("/demo/big", ino, (i * step) as u64, part)
            .map_err(|er| e("/demo/big", er))?;
    }
    c.fsync("/demo/big", ino).map_err(|er| e("/demo/big", er))?;
    let wsecs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back = c.read_file("/demo/big").map_err(|er| e("/demo/big", er))?;
    let rsecs = t.elapsed().as_secs_f64();
    let got = Sha256::digest(&back);
    println!(
        "  write+fsync {:>8.1} MiB/s, read {:>8.1} MiB/s",
        a.large_mib as f64 / wsecs,
        a.large_mib as f64 / rsecs
    );
    println!("  sha256 written {:x}", want);
    println!(
        "  sha256 read    {:x}  {}",
        got,
        if got == want { "OK" } else { "MISMATCH" }
    );
    if got != want {
        return Err("the large file did not read back intact".into());
    }
    let chunks = big.len().div_ceil(map.chunk_size as usize) as u64;
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for ch in 0..chunks {
        if let Some(o) = ring.owner_chunk(ino, ch) {
            *per.entry(o.to_string()).or_default() += 1;
        }
    }
    println!("  chunks per server: {per:?}");

    println!("\nnamespace:");
    c.rename("/demo/small", "/demo/renamed", 0)
        .map_err(|er| e("rename", er))?;
    let n = c
        .readdir("/demo/renamed")
        .map_err(|er| e("/demo/renamed", er))?
        .len();
    println!("  renamed /demo/small -> /demo/renamed ({n} entries moved)");
    let st = c.statfs().map_err(|er| e("statfs", er))?;
    println!(
        "  statfs: {} GiB free of {} GiB, {} inodes free",
        (st.bavail * st.bsize as u64) >> 30,
        (st.blocks * st.bsize as u64) >> 30,
        st.ffree
    );
    let t = Instant::now();
    for ent in c
        .readdir("/demo/renamed")
        .map_err(|er| e("/demo/renamed", er))?
    {
        let p = format!("/demo/renamed/{}", ent.name);
        if ent.kind == FileKind::File {
            c.unlink(&p).map_err(|er| e(&p, er))?;
        }
    }
    println!("  unlink       {}", rate(n, t));
    c.rmdir("/demo/renamed").map_err(|er| e("rmdir", er))?;
    c.unlink("/demo/big").map_err(|er| e("unlink", er))?;
    c.rmdir("/demo").map_err(|er| e("rmdir", er))?;
    let left = c.readdir("/").map_err(|er| e("/", er))?;
    println!("  root after clean-up: {} entries", left.len());
    preloaded(&c, &cl.manager)?;
    println!("\ndone; stopping the cluster");
    drop(cl);
    Ok(())
}

/// The prefix the demo's preloaded programs see SealFS under.
const DEMO_PREFIX: &str = "/sealfs";

/// What the preloaded shell runs: ordinary programs, no SealFS awareness.
const PRELOADED_SCRIPT: &str = r#"set -e
cd "$P"
mkdir -p work/src
for i in $(seq 1 300); do echo "line of file $i" > work/src/f$i.txt; done
cp -r work/src work/copy
tar czf work/src.tgz -C work src
mkdir work/x && tar xzf work/src.tgz -C work/x
echo "files listed: $(ls work/x/src | wc -l)"
echo "f42 reads:    $(cat work/x/src/f42.txt)"
echo "bytes (du):   $(du -sb work/copy | cut -f1)"
echo "find matches: $(find work -name 'f1*.txt' | wc -l)"
"#;

/// Runs [`PRELOADED_SCRIPT`] in a preloaded bash, then checks through the
/// client library that the files landed in SealFS and removes them.
fn preloaded(c: &Client, manager: &str) -> Result<(), String> {
    let lib = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(|d| d.join("libsealfs.so"))
        .ok_or("cannot locate the sealfs binary's directory")?;
    println!(
        "\npreloaded programs (bash, mkdir, cp, tar, gzip, ls, cat, du, find under LD_PRELOAD):"
    );
    if !lib.exists() {
        println!(
            "  skipped: {} is missing; build it with `cargo build --release -p sealfs-shim`",
            lib.display()
        );
        return Ok(());
    }
    if std::path::Path::new(DEMO_PREFIX).exists() {
        println!(
            "  skipped: {DEMO_PREFIX} exists on the local disk, so the demo will not shadow it"
        );
        return Ok(());
    }
    let t = Instant::now();
    let out = std::process::Command::new("bash")
        .args(["-c", PRELOADED_SCRIPT])
        .env("LD_PRELOAD", &lib)
        .env("SEALFS_MANAGER", manager)
        .env("SEALFS_MOUNT", DEMO_PREFIX)
        .env("P", DEMO_PREFIX)
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        println!("  {l}");
    }
    if !out.status.success() {
        return Err(format!(
            "the preloaded script failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let listed = c
        .readdir("/work/x/src")
        .map_err(|e| format!("/work/x/src: {e}"))?
        .len();
    println!("  script took {secs:.2} s; the client library sees {listed} files in /work/x/src on the servers");
    println!(
        "  (nothing was written under {DEMO_PREFIX} on the local disk: {})",
        !std::path::Path::new(DEMO_PREFIX).exists()
    );
    crate::fsops::remove_tree(c, "/work")?;
    Ok(())
}
