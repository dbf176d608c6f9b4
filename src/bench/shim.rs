//! `sealfs bench shim`: what the preload library costs and delivers.
//!
//! 1. Per-operation latency (median, p99) and ops/s of create, stat and
//!    open + read 4 KiB + close, and the throughput of 1 MiB writes (plus
//!    one fsync), measured by a worker process (`sealfs bench shim-worker`,
//!    plain std::fs → libc calls) in three places: the SealFS prefix under
//!    `LD_PRELOAD` against a local cluster this command starts (its state
//!    on tmpfs), a tmpfs directory, and a directory on the local disk.
//! 2. Passthrough overhead on local paths: `find /usr -type f | wc -l` and
//!    a stat loop over local files, with and without `LD_PRELOAD`,
//!    alternating, the median of several runs of each.
//!
//! All ratios come from one run on one machine.

use crate::cluster::{LocalCluster, UpArgs};
use clap::Args;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The prefix the worker uses under `LD_PRELOAD` (need not exist on disk).
const PREFIX: &str = "/sealfs-bench";

/// Arguments of `sealfs bench shim`.
#[derive(Args, Debug, Clone)]
pub struct ShimArgs {
    /// Files for the create, stat and open+read phases.
    #[arg(long, default_value_t = 2000)]
    pub files: usize,
    /// MiB written in 1 MiB writes for the throughput phase.
    #[arg(long, default_value_t = 256)]
    pub write_mib: usize,
    /// Storage servers of the cluster started for the run.
    #[arg(long, default_value_t = 3)]
    pub servers: u16,
    /// Repetitions of each passthrough measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Stats per run of the passthrough stat loop.
    #[arg(long, default_value_t = 200_000)]
    pub stats: usize,
    /// The preload library (default: libsealfs.so next to this binary).
    #[arg(long)]
    pub lib: Option<PathBuf>,
    /// tmpfs directory for the local baseline and the cluster's state.
    #[arg(long, default_value = "/dev/shm")]
    pub tmpfs: PathBuf,
    /// Directory on the local disk for the second baseline.
    #[arg(long, default_value = "/var/tmp")]
    pub disk: PathBuf,
}

/// Arguments of one worker (started by `bench shim`; not for direct use).
#[derive(Args, Debug, Clone)]
pub struct ShimWorkerArgs {
    /// Directory to work in (must exist and be empty).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, default_value_t = 2000)]
    pub files: usize,
    #[arg(long, default_value_t = 256)]
    pub write_mib: usize,
    /// Instead of the phases: stat the files of this directory round-robin.
    #[arg(long)]
    pub stat_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 200_000)]
    pub stats: usize,
}

/// Latencies of one phase, in nanoseconds.
struct Lat(Vec<u64>);

impl Lat {
    fn line(mut self, name: &str) -> String {
        self.0.sort_unstable();
        let n = self.0.len().max(1);
        let med = self.0.get(n / 2).copied().unwrap_or(0);
        let p99 = self.0.get((n * 99 / 100).min(n - 1)).copied().unwrap_or(0);
        let total: u64 = self.0.iter().sum();
        let ops = self.0.len() as f64 / (total as f64 / 1e9).max(1e-12);
        format!(
            "RESULT {name} {} {:.2} {:.2} {:.0}",
            self.0.len(),
            med as f64 / 1e3,
            p99 as f64 / 1e3,
            ops
        )
    }
}

fn io<T>(what: &Path, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}

fn timed(n: usize, mut f: impl FnMut(usize) -> Result<(), String>) -> Result<Lat, String> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i)?;
        v.push(t.elapsed().as_nanos() as u64);
    }
    Ok(Lat(v))
}

/// The worker: prints `RESULT <op> <n> <median µs> <p99 µs> <ops/s>` lines
/// and `WRITE <MiB/s>`, or `STATLOOP <seconds>`.
pub fn worker(a: ShimWorkerArgs) -> Result<(), String> {
    if let Some(d) = &a.stat_dir {
        let files: Vec<PathBuf> = io(d, fs::read_dir(d))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        if files.is_empty() {
            return Err(format!("{}: no files", d.display()));
        }
        let (t, c0) = (Instant::now(), cpu_self());
        let mut ok = 0usize;
        for i in 0..a.stats {
            ok += usize::from(fs::symlink_metadata(&files[i % files.len()]).is_ok());
        }
        println!(
            "STATLOOP {:.6} {:.6} {ok}",
            t.elapsed().as_secs_f64(),
            cpu_self() - c0
        );
        return Ok(());
    }
    let dir = a.dir.ok_or("--dir or --stat-dir is required")?;
    let path = |i: usize| dir.join(format!("f{i}"));
    let block = vec![0x5au8; 4096];
    let create = timed(a.files, |i| {
        let p = path(i);
        io(&p, OpenOptions::new().write(true).create_new(true).open(&p)).map(drop)
    })?;
    for i in 0..a.files {
        let p = path(i);
        io(
            &p,
            OpenOptions::new()
                .write(true)
                .open(&p)
                .and_then(|mut f| f.write_all(&block)),
        )?;
    }
    let stat = timed(a.files, |i| {
        let p = path(i);
        io(&p, fs::metadata(&p)).map(drop)
    })?;
    let mut buf = vec![0u8; 4096];
    let read = timed(a.files, |i| {
        let p = path(i);
        let n = io(&p, File::open(&p).and_then(|mut f| f.read(&mut buf)))?;
        if n != 4096 {
            return Err(format!("{}: short read {n}", p.display()));
        }
        Ok(())
    })?;
    println!("{}", create.line("create"));
    println!("{}", stat.line("stat"));
    println!("{}", read.line("open+read4k+close"));
    let big = dir.join("big");
    let mib = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    let mut f = io(&big, File::create(&big))?;
    for _ in 0..a.write_mib {
        io(&big, f.write_all(&mib))?;
    }
    io(&big, f.sync_all())?;
    drop(f);
    println!(
        "WRITE {:.1}",
        a.write_mib as f64 / t.elapsed().as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// User + system CPU seconds of this process so far.
fn cpu_self() -> f64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage into a local struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Runs `c` and returns (wall seconds, user + system CPU seconds of it and
/// every descendant it waited for), via `wait4`.
fn timed_cpu(c: &mut Command) -> Result<(f64, f64), String> {
    let t = Instant::now();
    let child = c
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{c:?}: {e}"))?;
    let mut st: libc::c_int = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaping our own child into locals (the Child is never waited
    // on again).
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut st, 0, &mut ru) };
    let wall = t.elapsed().as_secs_f64();
    if r < 0 || !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
        return Err(format!("{c:?} failed (status {st})"));
    }
    Ok((wall, secs(ru.ru_utime) + secs(ru.ru_stime)))
}

/// One worker's figures.
#[derive(Default, Clone)]
struct Figures {
    /// (op, median µs, p99 µs, ops/s)
    ops: Vec<(String, f64, f64, f64)>,
    write_mib_s: f64,
}

fn parse(out: &str) -> Figures {
    let mut f = Figures::default();
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        match w.first() {
            Some(&"RESULT") => {
                f.ops
                    .push((w.get(1).unwrap_or(&"?").to_string(), num(3), num(4), num(5)))
            }
            Some(&"WRITE") => f.write_mib_s = num(1),
            _ => {}
        }
    }
    f
}

fn run_out(mut c: Command, what: &str) -> Result<String, String> {
    let o = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and prints the tables.
pub fn run(a: ShimArgs) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sealfs binary: {e}"))?;
    let lib = match &a.lib {
        Some(l) => l.clone(),
        None => exe
            .parent()
            .map(|d| d.join("libsealfs.so"))
            .ok_or("no binary dir")?,
    };
    if !lib.exists() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release -p sealfs-shim` or pass --lib",
            lib.display()
        ));
    }
    let pid = std::process::id();
    let state = a.tmpfs.join(format!("sealfs-bench-shim-{pid}"));
    let local_tmpfs = a.tmpfs.join(format!("sealfs-bench-local-{pid}"));
    let local_disk = a.disk.join(format!("sealfs-bench-local-{pid}"));
    let res = (|| {
        let port = crate::demo::free_ports(a.servers + 1)?;
        let up = UpArgs {
            dir: state.clone(),
            servers: a.servers,
            port,
            sync: "fsync".into(),
            chunk_size: "1M".into(),
            heartbeat_timeout: "3s".into(),
        };
        println!(
            "starting 1 manager + {} servers (state on {}, sync=fsync)",
            a.servers,
            a.tmpfs.display()
        );
        let cl = LocalCluster::start(&up)?;
        let worker = |dir: &Path, preload: bool| -> Result<Figures, String> {
            let mut c = Command::new(&exe);
            c.args([
                "bench",
                "shim-worker",
                "--files",
                &a.files.to_string(),
                "--write-mib",
                &a.write_mib.to_string(),
                "--dir",
            ])
            .arg(dir);
            if preload {
                c.env("LD_PRELOAD", &lib)
                    .env("SEALFS_MANAGER", &cl.manager)
                    .env("SEALFS_MOUNT", PREFIX);
            }
            Ok(parse(&run_out(c, &format!("worker in {}", dir.display()))?))
        };
        // The SealFS run dir is made through the shim as well.
        let mut mk = Command::new("mkdir");
        mk.arg(format!("{PREFIX}/run"))
            .env("LD_PRELOAD", &lib)
            .env("SEALFS_MANAGER", &cl.manager)
            .env("SEALFS_MOUNT", PREFIX);
        run_out(mk, "mkdir under the prefix")?;
        io(&local_tmpfs, fs::create_dir_all(&local_tmpfs))?;
        io(&local_disk, fs::create_dir_all(&local_disk))?;
        let seal = worker(Path::new(&format!("{PREFIX}/run")), true)?;
        let tmpfs = worker(&local_tmpfs, false)?;
        let disk = worker(&local_disk, false)?;
        drop(cl);

        println!();
        println!(
            "{} files, {} MiB of 1 MiB writes + fsync; SealFS = LD_PRELOAD libsealfs.so, {} local servers, SEALFS_TRANSPORT={}",
            a.files,
            a.write_mib,
            a.servers,
            std::env::var("SEALFS_TRANSPORT").unwrap_or_else(|_| "auto (rings to same-host servers)".into())
        );
        println!(
            "{:<18} {:>22} {:>22} {:>22} {:>10} {:>10}",
            "operation",
            "SealFS med/p99 µs",
            "tmpfs med/p99 µs",
            "disk med/p99 µs",
            "vs tmpfs",
            "vs disk"
        );
        for (i, (op, m, p, r)) in seal.ops.iter().enumerate() {
            let t = tmpfs.ops.get(i).cloned().unwrap_or_default();
            let d = disk.ops.get(i).cloned().unwrap_or_default();
            println!(
                "{op:<18} {:>22} {:>22} {:>22} {:>10} {:>10}",
                format!("{m:.1}/{p:.1} ({r:.0}/s)"),
                format!("{:.1}/{:.1} ({:.0}/s)", t.1, t.2, t.3),
                format!("{:.1}/{:.1} ({:.0}/s)", d.1, d.2, d.3),
                format!("{:.3}x", r / t.3.max(1e-9)),
                format!("{:.3}x", r / d.3.max(1e-9)),
            );
        }
        println!(
            "{:<18} {:>22} {:>22} {:>22} {:>10} {:>10}",
            "write 1 MiB",
            format!("{:.0} MiB/s", seal.write_mib_s),
            format!("{:.0} MiB/s", tmpfs.write_mib_s),
            format!("{:.0} MiB/s", disk.write_mib_s),
            format!("{:.3}x", seal.write_mib_s / tmpfs.write_mib_s.max(1e-9)),
            format!("{:.3}x", seal.write_mib_s / disk.write_mib_s.max(1e-9)),
        );
        println!("(ratios: SealFS ops/s or MiB/s over the baseline's)");

        // Passthrough overhead on local paths.
        println!();
        println!(
            "passthrough overhead on local paths (median of {} runs each, alternating):",
            a.reps
        );
        let find = |preload: bool| -> Result<(f64, f64), String> {
            let mut c = Command::new("sh");
            c.args(["-c", "find /usr -type f | wc -l"])
                .stdout(Stdio::null());
            if preload {
                c.env("LD_PRELOAD", &lib)
                    .env("SEALFS_MOUNT", PREFIX)
                    .env("SEALFS_MANAGER", "127.0.0.1:1");
            }
            timed_cpu(&mut c)
        };
        let statloop = |preload: bool| -> Result<(f64, f64), String> {
            let mut c = Command::new(&exe);
            c.args([
                "bench",
                "shim-worker",
                "--stat-dir",
                "/usr/bin",
                "--stats",
                &a.stats.to_string(),
            ]);
            if preload {
                c.env("LD_PRELOAD", &lib)
                    .env("SEALFS_MOUNT", PREFIX)
                    .env("SEALFS_MANAGER", "127.0.0.1:1");
            }
            let out = run_out(c, "stat loop")?;
            out.lines()
                .find_map(|l| {
                    let w: Vec<f64> = l
                        .strip_prefix("STATLOOP ")?
                        .split_whitespace()
                        .filter_map(|s| s.parse().ok())
                        .collect();
                    Some((*w.first()?, *w.get(1)?))
                })
                .ok_or_else(|| "stat loop printed no result".to_string())
        };
        find(false)?; // warm the page and dentry caches
                      // Each preloaded run is paired with the plain run just before it;
                      // the median of the pairs' ratios cancels slow drift of a shared
                      // machine's load better than the ratio of the two medians. CPU time
                      // (user + system, of the process tree) is what the shim can add;
                      // wall time is shown as well.
        let mut runs: [Vec<(f64, f64)>; 4] = Default::default();
        for _ in 0..a.reps.max(1) {
            runs[0].push(find(false)?);
            runs[1].push(find(true)?);
            runs[2].push(statloop(false)?);
            runs[3].push(statloop(true)?);
        }
        let col = |i: usize, cpu: bool| -> Vec<f64> {
            runs[i]
                .iter()
                .map(|r| if cpu { r.1 } else { r.0 })
                .collect()
        };
        let paired = |b: &[f64], p: &[f64]| {
            (median(b.iter().zip(p).map(|(b, p)| p / b.max(1e-12)).collect()) - 1.0) * 100.0
        };
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}",
            "workload", "plain", "preloaded", "CPU plain", "CPU pre", "wall ovh", "CPU ovh"
        );
        for (name, b, p, unit, scale) in [
            ("find /usr -type f | wc -l".to_string(), 0, 1, "ms", 1e3),
            (
                format!("lstat loop ({} stats, /usr/bin)", a.stats),
                2,
                3,
                "ns",
                1e9 / a.stats as f64,
            ),
        ] {
            let (wb, wp, cb, cp) = (col(b, false), col(p, false), col(b, true), col(p, true));
            println!(
                "{name:<34} {:>8.1}{unit} {:>8.1}{unit} {:>8.1}{unit} {:>8.1}{unit} {:>+10.2}% {:>+10.2}%",
                median(wb.clone()) * scale,
                median(wp.clone()) * scale,
                median(cb.clone()) * scale,
                median(cp.clone()) * scale,
                paired(&wb, &wp),
                paired(&cb, &cp),
            );
        }
        println!(
            "(overheads: median over the {} pairs of preloaded/plain - 1)",
            a.reps.max(1)
        );
        Ok(())
    })();
    let _ = fs::remove_dir_all(&state);
    let _ = fs::remove_dir_all(&local_tmpfs);
    let _ = fs::remove_dir_all(&local_disk);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lines_parse() {
        let f = parse(
            "RESULT create 10 1.50 2.00 600000\nRESULT stat 10 0.5 0.9 2000000\nWRITE 1234.5\n",
        );
        assert_eq!(f.ops.len(), 2);
        assert_eq!(f.ops[0].0, "create");
        assert!((f.ops[1].3 - 2e6).abs() < 1.0);
        assert!((f.write_mib_s - 1234.5).abs() < 1e-9);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
