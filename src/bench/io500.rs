//! `sealfs bench io500`: the IO500 phases, run by N worker processes that
//! make plain POSIX calls (std::fs → libc), so one binary measures a local
//! directory, a FUSE mount, or the SealFS prefix under `LD_PRELOAD`.
//!
//! Phases, in IO500's order: ior-easy-write, mdtest-easy-write,
//! ior-hard-write, mdtest-hard-write, find, ior-easy-read, mdtest-easy-stat,
//! ior-hard-read, mdtest-hard-stat, mdtest-easy-delete, mdtest-hard-read,
//! mdtest-hard-delete.
//!
//! * ior-easy: one file per process, sequential `--transfer` writes.
//! * ior-hard: one shared file, 47 008-byte transfers; process p writes
//!   segment i at offset (i·N + p)·47 008.
//! * mdtest-easy: empty files, one directory per process.
//! * mdtest-hard: 3 901-byte files, every process in one shared directory.
//! * find: walks the whole tree and matches files by name (`*01*`) and size
//!   (3 901 bytes), as IO500's find does.
//!
//! Write phases run until the stonewall (or a size/count cap); read, stat and
//! delete phases cover exactly what was written. Every byte read is checked
//! against the pattern it was written with, so a fast wrong answer fails the
//! run. A phase's rate is its total work over the slowest worker's time.
//! Scores: bandwidth = geometric mean of the four ior phases (GiB/s),
//! metadata = geometric mean of the mdtest phases and find (kIOPS),
//! total = √(bandwidth · metadata).

use crate::units::{parse_duration, parse_size};
use clap::Args;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// IO500's ior-hard transfer size.
pub const HARD_XFER: u64 = 47_008;
/// IO500's mdtest-hard file size.
pub const HARD_FILE: usize = 3_901;

/// Arguments of `sealfs bench io500`.
#[derive(Args, Debug, Clone)]
pub struct Io500Args {
    /// Directory to run in (created if missing; a fresh `io500-<pid>` below it is used).
    #[arg(long)]
    pub target: PathBuf,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// How long each write phase runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stonewall: Duration,
    /// ior-easy transfer size.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub transfer: u64,
    /// Cap on bytes per process in ior-easy-write.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub easy_max: u64,
    /// Cap on files per process in the mdtest write phases.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_files: u64,
    /// Cap on segments per process in ior-hard-write (100 000 × 47 008 B
    /// ≈ 4.4 GiB per process, like the ior-easy cap).
    #[arg(long, default_value_t = 100_000)]
    pub hard_max: u64,
    /// Also write the results as tab-separated lines (phase, value, unit) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the files afterwards (the delete phases still run for mdtest).
    #[arg(long)]
    pub keep: bool,
}

/// Arguments of one worker (internal).
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    phase: String,
    #[arg(long)]
    rank: u64,
    #[arg(long)]
    procs: u64,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    stonewall_ms: u64,
    #[arg(long)]
    transfer: u64,
    /// For write phases the cap, for the others the count this rank wrote.
    #[arg(long)]
    limit: u64,
}

/// What one worker did in one phase.
#[derive(Clone, Copy, Debug, Default)]
struct Work {
    ops: u64,
    bytes: u64,
    secs: f64,
    matched: u64,
}

/// Fills `buf` with the pattern of `file` at byte `offset`: little-endian
/// words `mix(file) ^ position`, cut at the buffer's end.
pub fn fill(buf: &mut [u8], file: u64, offset: u64) {
    let seed = file.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let w = (seed ^ (pos & !7)).to_le_bytes();
        let skip = (pos & 7) as usize;
        let n = (8 - skip).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&w[skip..skip + n]);
        i += n;
        pos += n as u64;
    }
}

/// Checks `buf` against the pattern; the error names the first bad byte.
pub fn verify(buf: &[u8], file: u64, offset: u64, scratch: &mut Vec<u8>) -> Result<(), String> {
    scratch.resize(buf.len(), 0);
    fill(scratch, file, offset);
    match buf.iter().zip(scratch.iter()).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "verification failed: file {file} byte {} is {:#04x}, expected {:#04x}",
            offset + i as u64,
            buf[i],
            scratch[i]
        )),
    }
}

fn hard_file_id(rank: u64, i: u64) -> u64 {
    (1 << 40) | (rank << 24) | i
}

fn io<T>(what: &Path, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}

/// Offset of ior-hard segment `i` of `rank` among `procs`.
pub fn hard_offset(i: u64, procs: u64, rank: u64) -> u64 {
    (i * procs + rank) * HARD_XFER
}

/// Runs one worker phase and prints `RESULT ops bytes secs matched`.
pub fn worker(a: WorkerArgs) -> Result<(), String> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(a.stonewall_ms);
    let mut w = Work::default();
    let mut scratch = Vec::new();
    match a.phase.as_str() {
        "ior-easy-write" => {
            let p = a.dir.join("ior-easy").join(format!("file.{:06}", a.rank));
            let f = io(
                &p,
                OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(&p),
            )?;
            let mut buf = vec![0u8; a.transfer as usize];
            while Instant::now() < deadline && w.bytes + a.transfer <= a.limit {
                fill(&mut buf, a.rank, w.bytes);
                io(&p, f.write_all_at(&buf, w.bytes))?;
                w.bytes += a.transfer;
                w.ops += 1;
            }
            io(&p, f.sync_all())?;
        }
        "ior-easy-read" => {
            let p = a.dir.join("ior-easy").join(format!("file.{:06}", a.rank));
            let mut f = io(&p, File::open(&p))?;
            let mut buf = vec![0u8; a.transfer as usize];
            while w.bytes < a.limit {
                io(&p, f.read_exact(&mut buf))?;
                verify(&buf, a.rank, w.bytes, &mut scratch)?;
                w.bytes += a.transfer;
                w.ops += 1;
            }
        }
        "ior-hard-write" => {
            let p = a.dir.join("ior-hard").join("file");
            let f = io(&p, OpenOptions::new().write(true).open(&p))?;
            let mut buf = vec![0u8; HARD_XFER as usize];
            while Instant::now() < deadline && w.ops < a.limit {
                let off = hard_offset(w.ops, a.procs, a.rank);
                fill(&mut buf, 1 << 32, off);
                io(&p, f.write_all_at(&buf, off))?;
                w.ops += 1;
                w.bytes += HARD_XFER;
            }
            io(&p, f.sync_all())?;
        }
        "ior-hard-read" => {
            let p = a.dir.join("ior-hard").join("file");
            let f = io(&p, File::open(&p))?;
            let mut buf = vec![0u8; HARD_XFER as usize];
            while w.ops < a.limit {
                let off = hard_offset(w.ops, a.procs, a.rank);
                io(&p, f.read_exact_at(&mut buf, off))?;
                verify(&buf, 1 << 32, off, &mut scratch)?;
                w.ops += 1;
                w.bytes += HARD_XFER;
            }
        }
        "mdtest-easy-write" => {
            let d = a.dir.join("mdt-easy").join(format!("p{}", a.rank));
            io(&d, fs::create_dir_all(&d))?;
            while Instant::now() < deadline && w.ops < a.limit {
                let p = d.join(format!("f{}", w.ops));
                io(&p, OpenOptions::new().create_new(true).write(true).open(&p))?;
                w.ops += 1;
            }
        }
        "mdtest-easy-stat" | "mdtest-easy-delete" => {
            let d = a.dir.join("mdt-easy").join(format!("p{}", a.rank));
            let stat = a.phase.ends_with("stat");
            while w.ops < a.limit {
                let p = d.join(format!("f{}", w.ops));
                if stat {
                    let m = io(&p, fs::metadata(&p))?;
                    if m.len() != 0 {
                        return Err(format!("{}: size {} (expected 0)", p.display(), m.len()));
                    }
                } else {
                    io(&p, fs::remove_file(&p))?;
                }
                w.ops += 1;
            }
        }
        "mdtest-hard-write" => {
            let d = a.dir.join("mdt-hard");
            let mut buf = vec![0u8; HARD_FILE];
            while Instant::now() < deadline && w.ops < a.limit {
                let p = d.join(format!("file.{}.{}", a.rank, w.ops));
                fill(&mut buf, hard_file_id(a.rank, w.ops), 0);
                let mut f = io(&p, OpenOptions::new().create_new(true).write(true).open(&p))?;
                io(&p, f.write_all(&buf))?;
                w.ops += 1;
                w.bytes += HARD_FILE as u64;
            }
        }
        "mdtest-hard-stat" | "mdtest-hard-read" | "mdtest-hard-delete" => {
            let d = a.dir.join("mdt-hard");
            let mut buf = vec![0u8; HARD_FILE + 1];
            while w.ops < a.limit {
                let p = d.join(format!("file.{}.{}", a.rank, w.ops));
                match a.phase.as_str() {
                    "mdtest-hard-stat" => {
                        let m = io(&p, fs::metadata(&p))?;
                        if m.len() != HARD_FILE as u64 {
                            return Err(format!(
                                "{}: size {} (expected {HARD_FILE})",
                                p.display(),
                                m.len()
                            ));
                        }
                    }
                    "mdtest-hard-read" => {
                        let mut f = io(&p, File::open(&p))?;
                        let mut n = 0;
                        loop {
                            let k = io(&p, f.read(&mut buf[n..]))?;
                            if k == 0 {
                                break;
                            }
                            n += k;
                            if n == buf.len() {
                                break;
                            }
                        }
                        if n != HARD_FILE {
                            return Err(format!(
                                "{}: read {n} bytes (expected {HARD_FILE})",
                                p.display()
                            ));
                        }
                        verify(&buf[..n], hard_file_id(a.rank, w.ops), 0, &mut scratch)?;
                        w.bytes += n as u64;
                    }
                    _ => io(&p, fs::remove_file(&p))?,
                }
                w.ops += 1;
            }
        }
        "find" => {
            // rank r walks the easy directories p ≡ r (mod N); rank 0 also
            // walks everything else.
            let mut roots = Vec::new();
            let easy = a.dir.join("mdt-easy");
            for e in io(&easy, fs::read_dir(&easy))? {
                let e = io(&easy, e)?;
                let name = e.file_name().to_string_lossy().to_string();
                if let Some(k) = name.strip_prefix('p').and_then(|k| k.parse::<u64>().ok()) {
                    if k % a.procs == a.rank {
                        roots.push(e.path());
                    }
                }
            }
            if a.rank == 0 {
                for d in ["mdt-hard", "ior-easy", "ior-hard"] {
                    roots.push(a.dir.join(d));
                }
            }
            for r in roots {
                walk(&r, &mut w)?;
            }
        }
        other => return Err(format!("unknown phase {other:?}")),
    }
    w.secs = t0.elapsed().as_secs_f64();
    println!("RESULT {} {} {} {}", w.ops, w.bytes, w.secs, w.matched);
    Ok(())
}

fn walk(dir: &Path, w: &mut Work) -> Result<(), String> {
    for e in io(dir, fs::read_dir(dir))? {
        let e = io(dir, e)?;
        let p = e.path();
        let ft = io(&p, e.file_type())?;
        w.ops += 1;
        if ft.is_dir() {
            walk(&p, w)?;
        } else if e.file_name().to_string_lossy().contains("01") {
            let m = io(&p, fs::symlink_metadata(&p))?;
            if m.len() == HARD_FILE as u64 {
                w.matched += 1;
            }
        }
    }
    Ok(())
}

/// One phase's result.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    /// IO500 phase name.
    pub name: &'static str,
    /// GiB/s for ior phases, kIOPS for the others.
    pub value: f64,
    /// Total operations.
    pub ops: u64,
    /// Slowest worker's time.
    pub secs: f64,
}

impl PhaseResult {
    /// Whether the value is a bandwidth.
    pub fn is_bw(&self) -> bool {
        self.name.starts_with("ior")
    }
}

struct Runner {
    a: Io500Args,
    dir: PathBuf,
    exe: PathBuf,
}

impl Runner {
    fn phase(&self, name: &'static str, limits: &[u64]) -> Result<Vec<Work>, String> {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(format!("{name} ({} procs)", self.a.procs));
        pb.enable_steady_tick(Duration::from_millis(200));
        let mut children = Vec::new();
        for (rank, limit) in limits.iter().enumerate() {
            let child = Command::new(&self.exe)
                .args([
                    "bench",
                    "io500-worker",
                    "--phase",
                    name,
                    "--rank",
                    &rank.to_string(),
                ])
                .args(["--procs", &self.a.procs.to_string(), "--dir"])
                .arg(&self.dir)
                .args(["--stonewall-ms", &self.a.stonewall.as_millis().to_string()])
                .args([
                    "--transfer",
                    &self.a.transfer.to_string(),
                    "--limit",
                    &limit.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start a worker: {e}"))?;
            children.push(child);
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (rank, c) in children.into_iter().enumerate() {
            let o = c
                .wait_with_output()
                .map_err(|e| format!("worker {rank}: {e}"))?;
            let stdout = String::from_utf8_lossy(&o.stdout);
            let line = stdout.lines().find(|l| l.starts_with("RESULT "));
            match (o.status.success(), line) {
                (true, Some(l)) => {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let num =
                        |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
                    out.push(Work {
                        ops: num(1) as u64,
                        bytes: num(2) as u64,
                        secs: num(3),
                        matched: num(4) as u64,
                    });
                }
                _ => errors.push(format!(
                    "worker {rank} of {name} failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
            }
        }
        pb.finish_and_clear();
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors.join("\n"))
        }
    }
}

fn summarize(name: &'static str, w: &[Work]) -> PhaseResult {
    let secs = w.iter().map(|x| x.secs).fold(0.0, f64::max).max(1e-9);
    let ops: u64 = w.iter().map(|x| x.ops).sum();
    let bytes: u64 = w.iter().map(|x| x.bytes).sum();
    let value = if name.starts_with("ior") {
        bytes as f64 / secs / (1u64 << 30) as f64
    } else {
        ops as f64 / secs / 1000.0
    };
    PhaseResult {
        name,
        value,
        ops,
        secs,
    }
}

/// Geometric mean of positive values (0 if any is 0).
pub fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() || v.iter().any(|x| *x <= 0.0) {
        return 0.0;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// Runs every phase and prints the table and scores.
pub fn run(a: Io500Args) -> Result<(), String> {
    if a.procs == 0 || a.transfer == 0 || a.transfer > (64 << 20) {
        return Err("--procs must be ≥ 1 and --transfer between 1 byte and 64M".into());
    }
    let results = run_phases(&a)?;
    let bw = geomean(
        &results
            .iter()
            .filter(|r| r.is_bw())
            .map(|r| r.value)
            .collect::<Vec<_>>(),
    );
    let md = geomean(
        &results
            .iter()
            .filter(|r| !r.is_bw())
            .map(|r| r.value)
            .collect::<Vec<_>>(),
    );
    let total = (bw * md).sqrt();
    println!(
        "{:<22} {:>12} {:>8} {:>12} {:>9}",
        "phase", "value", "unit", "ops", "time s"
    );
    for r in &results {
        let unit = if r.is_bw() { "GiB/s" } else { "kIOPS" };
        println!(
            "{:<22} {:>12.4} {:>8} {:>12} {:>9.3}",
            r.name, r.value, unit, r.ops, r.secs
        );
    }
    println!("[SCORE] bandwidth {bw:.4} GiB/s : iops {md:.4} kiops : total {total:.4}");
    if let Some(out) = &a.out {
        let mut s = String::new();
        for r in &results {
            s.push_str(&format!(
                "{}\t{}\t{}\n",
                r.name,
                r.value,
                if r.is_bw() { "GiB/s" } else { "kIOPS" }
            ));
        }
        s.push_str(&format!(
            "score-bandwidth\t{bw}\tGiB/s\nscore-iops\t{md}\tkIOPS\nscore-total\t{total}\t-\n"
        ));
        let mut f = io(out, File::create(out))?;
        io(out, f.write_all(s.as_bytes()))?;
    }
    Ok(())
}

/// Runs the twelve phases; returns them in IO500 order.
pub fn run_phases(a: &Io500Args) -> Result<Vec<PhaseResult>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the sealfs binary: {e}"))?;
    let dir = a.target.join(format!("io500-{}", std::process::id()));
    for d in ["ior-easy", "ior-hard", "mdt-easy", "mdt-hard"] {
        let p = dir.join(d);
        io(&p, fs::create_dir_all(&p))?;
    }
    let hard = dir.join("ior-hard").join("file");
    io(&hard, File::create(&hard))?;
    let r = Runner {
        a: a.clone(),
        dir: dir.clone(),
        exe,
    };
    let n = a.procs;
    let cap = |c: u64| vec![c; n];
    let counts = |w: &[Work]| w.iter().map(|x| x.ops).collect::<Vec<u64>>();
    let bytes = |w: &[Work]| w.iter().map(|x| x.bytes).collect::<Vec<u64>>();
    let mut res = Vec::new();
    let mut step = |name: &'static str, limits: &[u64]| -> Result<Vec<Work>, String> {
        let w = r.phase(name, limits)?;
        let s = summarize(name, &w);
        eprintln!(
            "{:<22} {:>10.4} {}",
            s.name,
            s.value,
            if s.is_bw() { "GiB/s" } else { "kIOPS" }
        );
        res.push(s);
        Ok(w)
    };
    let easy = step("ior-easy-write", &cap(a.easy_max))?;
    let mde = step("mdtest-easy-write", &cap(a.max_files))?;
    let hardw = step("ior-hard-write", &cap(a.hard_max))?;
    let mdh = step("mdtest-hard-write", &cap(a.max_files))?;
    let found = step("find", &cap(0))?;
    let expect: u64 = mdh
        .iter()
        .enumerate()
        .map(|(rank, w)| {
            (0..w.ops)
                .filter(|i| format!("file.{rank}.{i}").contains("01"))
                .count() as u64
        })
        .sum();
    let got: u64 = found.iter().map(|w| w.matched).sum();
    if got != expect {
        return Err(format!("find matched {got} files, expected {expect}"));
    }
    step("ior-easy-read", &bytes(&easy))?;
    step("mdtest-easy-stat", &counts(&mde))?;
    step("ior-hard-read", &counts(&hardw))?;
    step("mdtest-hard-stat", &counts(&mdh))?;
    step("mdtest-easy-delete", &counts(&mde))?;
    step("mdtest-hard-read", &counts(&mdh))?;
    step("mdtest-hard-delete", &counts(&mdh))?;
    if !a.keep {
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_position_dependent_and_verifiable() {
        let mut a = vec![0u8; 100];
        fill(&mut a, 3, 13);
        let mut s = Vec::new();
        assert!(verify(&a, 3, 13, &mut s).is_ok());
        assert!(
            verify(&a, 4, 13, &mut s).is_err(),
            "another file's pattern differs"
        );
        assert!(
            verify(&a, 3, 21, &mut s).is_err(),
            "another offset's pattern differs"
        );
        // a piece of a larger fill equals the fill at that offset
        let mut big = vec![0u8; 64];
        fill(&mut big, 9, 0);
        let mut part = vec![0u8; 19];
        fill(&mut part, 9, 5);
        assert_eq!(&big[5..24], &part[..]);
        // one flipped byte is caught and named
        a[57] ^= 1;
        let e = verify(&a, 3, 13, &mut s).unwrap_err();
        assert!(e.contains("byte 70"), "{e}");
    }

    #[test]
    fn hard_offsets_interleave() {
        let n = 3;
        let mut offs: Vec<u64> = (0..4)
            .flat_map(|i| (0..n).map(move |p| hard_offset(i, n, p)))
            .collect();
        let sorted = {
            let mut s = offs.clone();
            s.sort();
            s
        };
        assert_eq!(
            offs, sorted,
            "segment i of every process comes before segment i+1"
        );
        offs.dedup();
        assert_eq!(offs.len(), 12);
        assert_eq!(hard_offset(1, 3, 2), 5 * HARD_XFER);
    }

    #[test]
    fn geomean_of_scores() {
        assert!((geomean(&[1.0, 4.0]) - 2.0).abs() < 1e-12);
        assert_eq!(geomean(&[1.0, 0.0]), 0.0);
        assert_eq!(geomean(&[]), 0.0);
    }
}
