//! `sealfs-store-bench`: the server store's small-file benchmark (issue 3).
//!
//! Phases, each over `--files` files of 4 KiB spread over `--threads`
//! threads (one directory per thread), as the server's store sees them:
//! create+write, stat, read, delete. Targets:
//!
//! * `engine`: the packed-log stores (`LogMetaStore` + `LogDataStore`), sync
//!   policy `--sync`, as a server runs them: `fsync` (the default: commits
//!   reach the page cache and are made durable by the background sync
//!   every 5 s or by an fsync), `always` (every commit durable when it
//!   returns, group-committed), `none`;
//! * `redb`: the same records (inode, entry, data) in one redb database, one
//!   write transaction per create/delete, durable as the engine's commits
//!   (`Eventual`, `Immediate` or `None` for the three policies);
//! * `fjall`: the same records in a fjall LSM tree (one keyspace per kind,
//!   uncompressed, a 2 GiB block cache), one atomic write batch per
//!   create/delete, in the OS's buffers when it returns (`fsync`, fjall's
//!   default), synced (`always`) or left in fjall's buffer (`none`);
//! * `plain`: plain files in a directory per thread (create, write, close;
//!   stat; open, read; unlink), the file system's own durability;
//! * `floor`: no store. Its creates stream the bodies alone to one file
//!   per thread in 1 MiB writes; its stats and reads make only the cache
//!   misses and the pass over the data that the engine's cannot avoid,
//!   over tables of the same sizes (see [`floor`]): the fastest any store
//!   of this shape could go on this machine in this minute (no delete
//!   phase). With `--runs`, the summary gives the floor against each
//!   target too: the highest ratio the engine could reach.
//!
//! The targets run side by side: each phase, and each round of the stat
//! and read phases, runs on every target in turn before the next starts.
//! Each phase starts after a `sync` (untimed). The create and delete
//! phases are also reported counted until a `sync` after them returned
//! ("synced"): what it costs each target to make the phase durable.
//!
//! Then the engine under a steady create/overwrite/delete workload, with
//! background compaction and without: latency percentiles and space
//! amplification over time (see [`steady`]; `--steady-files 50000`,
//! `--steady-secs 20`, `--steady-rate 50000` operations a second).
//!
//! Then restart times of a meta store with `--restart-files` files: after a
//! clean close, after a crash (dirty index, same boot: mapped and replayed),
//! and after the index is deleted (rebuilt from the log).
//!
//! Usage: `sealfs-store-bench --dir /mnt/ext4j/bench [--files 200000]
//! [--threads 8] [--sync fsync|always|none] [--restart-files 1000000]
//! [--only engine,redb,fjall,plain,floor,steady,restart]
//! [--no-reads] [--no-compaction] [--rounds N] [--runs N] [--lanes N]`:
//! `--runs` repeats the whole side-by-side run on fresh directories and
//! ends with the engine against each other target run by run and the
//! median ratio of each phase (the README's tables); `--rounds`
//! runs the stat and read phases N times each and reports their median
//! rate (steadier figures, and a profile of the read paths);
//! `--no-compaction` runs the engine without background compaction, to see
//! what it costs; `--lanes` sets the engine's log lanes (its default: 4).

mod floor;
mod steady;

use sealfs_proto::{Attr, DirEntry, FileKind, Inode, Timespec};
use sealfs_server::engine::EngineOptions;
use sealfs_server::{DataStore, InodeRecord, LogDataStore, LogMetaStore, MetaOp, MetaStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BODY: usize = 4096;
const PHASES: [&str; 6] = [
    "create+write",
    "stat",
    "read",
    "delete",
    "create+write, synced",
    "delete, synced",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Fsync,
    Always,
    None,
}

impl Policy {
    /// As `--sync` spells it.
    fn name(self) -> &'static str {
        match self {
            Policy::Fsync => "fsync",
            Policy::Always => "always",
            Policy::None => "none",
        }
    }
}

struct Args {
    dir: PathBuf,
    files: u64,
    threads: u64,
    sync: Policy,
    restart_files: u64,
    only: Option<String>,
    /// Skip the stat and read phases (profiling creates and deletes).
    no_reads: bool,
    /// Times the stat and read phases run (the median rate is reported).
    rounds: u64,
    /// Run the engine without background compaction (to see its cost).
    no_compaction: bool,
    /// The engine's log lanes (its default when not given).
    lanes: Option<usize>,
    /// Whole side-by-side runs, each on fresh directories (a summary of
    /// the engine against each peer, with medians, ends them).
    runs: u64,
    /// The steady workload's files, seconds per run and operations asked
    /// per second ([`steady`]).
    steady_files: u64,
    steady_secs: u64,
    steady_rate: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::new(),
        files: 200_000,
        threads: 8,
        sync: Policy::Fsync,
        restart_files: 1_000_000,
        only: None,
        no_reads: false,
        rounds: 1,
        no_compaction: false,
        lanes: None,
        runs: 1,
        steady_files: 50_000,
        steady_secs: 20,
        steady_rate: 50_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--dir" => a.dir = PathBuf::from(v()?),
            "--files" => a.files = v()?.parse().map_err(|e| format!("--files: {e}"))?,
            "--threads" => a.threads = v()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--restart-files" => {
                a.restart_files = v()?.parse().map_err(|e| format!("--restart-files: {e}"))?
            }
            "--sync" => {
                a.sync = match v()?.as_str() {
                    "fsync" => Policy::Fsync,
                    "always" => Policy::Always,
                    "none" => Policy::None,
                    s => return Err(format!("--sync: unknown policy {s}")),
                }
            }
            "--only" => a.only = Some(v()?),
            "--no-reads" => a.no_reads = true,
            "--no-compaction" => a.no_compaction = true,
            "--lanes" => a.lanes = Some(v()?.parse().map_err(|e| format!("--lanes: {e}"))?),
            "--runs" => {
                a.runs = v()?
                    .parse::<u64>()
                    .map_err(|e| format!("--runs: {e}"))?
                    .max(1)
            }
            "--rounds" => {
                a.rounds = v()?
                    .parse::<u64>()
                    .map_err(|e| format!("--rounds: {e}"))?
                    .max(1)
            }
            "--steady-files" => {
                a.steady_files = v()?.parse().map_err(|e| format!("--steady-files: {e}"))?
            }
            "--steady-secs" => {
                a.steady_secs = v()?.parse().map_err(|e| format!("--steady-secs: {e}"))?
            }
            "--steady-rate" => {
                a.steady_rate = v()?.parse().map_err(|e| format!("--steady-rate: {e}"))?
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.dir.as_os_str().is_empty() {
        return Err("--dir is required (a directory on the file system to measure)".into());
    }
    Ok(a)
}

fn inode(ino: u64) -> InodeRecord {
    let t = Timespec {
        sec: 1_700_000_000,
        nsec: 0,
    };
    InodeRecord::normal(Inode {
        attr: Attr {
            ino,
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: BODY as u64,
            nlink: 1,
            atime: t,
            mtime: t,
            ctime: t,
        },
        target: None,
    })
}

/// Runs `f` on the body of file `i` (`BODY` bytes of `i % 251`), filled
/// in a buffer the thread reuses: a fresh `Vec` per file (allocated,
/// filled, freed) was 6 % of an engine create in a profile, harness cost
/// that no target should be charged for.
fn with_body<T>(i: u64, f: impl FnOnce(&[u8]) -> T) -> T {
    thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    BUF.with_borrow_mut(|b| {
        b.clear();
        b.resize(BODY, (i % 251) as u8);
        f(b)
    })
}

/// Runs `f` on `{prefix}/d{t}/f{i}`, the path of file `i` of thread `t`,
/// built in a buffer the thread reuses, so that the phases time the
/// targets, not the harness: a `format!` and its allocation were a sixth
/// of an engine stat (and a 25th of a plain one). Only the engine's and
/// redb's creates and deletes still format their keys: the store's API
/// takes owned strings, as the server hands it.
fn with_path<T>(prefix: &str, t: u64, i: u64, f: impl FnOnce(&str) -> T) -> T {
    thread_local!(static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
    BUF.with_borrow_mut(|b| {
        b.clear();
        b.push_str(prefix);
        b.push_str("/d");
        push_decimal(b, t);
        b.push_str("/f");
        push_decimal(b, i);
        f(b)
    })
}

fn push_decimal(b: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// One target: what each phase does for file `i` of thread `t`.
trait Target: Send + Sync {
    fn create(&self, t: u64, i: u64);
    fn stat(&self, t: u64, i: u64);
    fn read(&self, t: u64, i: u64);
    fn delete(&self, t: u64, i: u64);
    /// Whether it has phase `p` (0 create, 1 stat, 2 read, 3 delete).
    fn has(&self, _p: usize) -> bool {
        true
    }
    /// Waits (untimed, before each phase) until background work the
    /// target started has ended, so that it does not run beside the next
    /// phase of another target.
    fn settle(&self) {}
    /// Said after the create phase (sizes).
    fn report(&self, _files: u64) {}
    /// Said after the delete phase (compaction's work).
    fn report_end(&self) {}
}

fn ino_of(t: u64, i: u64) -> u64 {
    (t << 32) | (i + 16)
}

struct EngineTarget {
    meta: LogMetaStore,
    data: LogDataStore,
}

impl EngineTarget {
    /// The meta and data stores under `d`, as a server opens them (the
    /// index of both under `meta`, 64 KiB small files).
    fn open(d: &Path, sync: Policy, opts: &EngineOptions) -> EngineTarget {
        let meta = LogMetaStore::open(
            &d.join("meta"),
            &d.join("meta"),
            sync == Policy::Always,
            opts.clone(),
        )
        .unwrap();
        let data = LogDataStore::open(
            &d.join("data"),
            &d.join("meta"),
            64 << 10,
            sync == Policy::Always,
            sync != Policy::None,
            opts.clone(),
        )
        .unwrap();
        EngineTarget { meta, data }
    }

    /// Rewrites file `i` of thread `t` whole with the body of `v`.
    fn overwrite(&self, t: u64, i: u64, v: u64) {
        with_body(v, |b| self.data.write(ino_of(t, i), 0, 0, b)).unwrap();
    }
}

impl Target for EngineTarget {
    fn create(&self, t: u64, i: u64) {
        let ino = ino_of(t, i);
        with_body(i, |b| self.data.write(ino, 0, 0, b)).unwrap();
        self.meta
            .commit(&[
                MetaOp::PutInode(format!("/d{t}/f{i}"), inode(ino)),
                MetaOp::PutEntry(
                    format!("/d{t}"),
                    DirEntry {
                        name: format!("f{i}"),
                        kind: FileKind::File,
                        ino,
                    },
                ),
            ])
            .unwrap();
    }
    fn stat(&self, t: u64, i: u64) {
        assert!(with_path("", t, i, |p| self.meta.get_inode(p))
            .unwrap()
            .is_some());
    }
    fn read(&self, t: u64, i: u64) {
        let r = with_path("", t, i, |p| self.meta.get_inode(p))
            .unwrap()
            .unwrap();
        let d = self.data.read(r.inode.attr.ino, 0, 0, 1 << 20).unwrap();
        assert_eq!(d.len(), BODY);
    }
    fn delete(&self, t: u64, i: u64) {
        self.meta
            .commit(&[
                MetaOp::DelInode(format!("/d{t}/f{i}")),
                MetaOp::DelEntry(format!("/d{t}"), format!("f{i}")),
            ])
            .unwrap();
        self.data.remove(ino_of(t, i)).unwrap();
    }
    fn report_end(&self) {
        let m = self.meta.engine().stats();
        let d = self.data.engine().map(|e| e.stats()).unwrap_or_default();
        eprintln!(
            "  compacted so far: {} meta and {} data segments; {:.1} MiB of segments left",
            m.compacted,
            d.compacted,
            (m.segment_bytes + d.segment_bytes) as f64 / 1048576.0
        );
    }
    fn report(&self, files: u64) {
        let m = self.meta.engine().stats().index_bytes;
        let d = self.data.engine().map_or(0, |e| e.stats().index_bytes);
        eprintln!(
            "  index: {:.1} bytes per file (meta index {:.1} MiB, data index {:.1} MiB)",
            (m + d) as f64 / files.max(1) as f64,
            m as f64 / 1048576.0,
            d as f64 / 1048576.0
        );
    }
}

const INODES: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("inodes");
const ENTRIES: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("entries");
const DATA: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("data");

struct RedbTarget {
    db: redb::Database,
    durability: redb::Durability,
}

impl Target for RedbTarget {
    fn create(&self, t: u64, i: u64) {
        let ino = ino_of(t, i);
        let mut tx = self.db.begin_write().unwrap();
        tx.set_durability(self.durability);
        {
            let rec = postcard_like(ino);
            tx.open_table(INODES)
                .unwrap()
                .insert(format!("/d{t}/f{i}").as_str(), rec.as_slice())
                .unwrap();
            tx.open_table(ENTRIES)
                .unwrap()
                .insert(format!("/d{t}\0f{i}").as_str(), &ino.to_le_bytes()[..])
                .unwrap();
            with_body(i, |b| tx.open_table(DATA).unwrap().insert(ino, b).map(drop)).unwrap();
        }
        tx.commit().unwrap();
    }
    fn stat(&self, t: u64, i: u64) {
        let tx = self.db.begin_read().unwrap();
        let table = tx.open_table(INODES).unwrap();
        assert!(with_path("", t, i, |p| table.get(p)).unwrap().is_some());
    }
    fn read(&self, t: u64, i: u64) {
        let tx = self.db.begin_read().unwrap();
        let table = tx.open_table(INODES).unwrap();
        let rec = with_path("", t, i, |p| table.get(p)).unwrap().unwrap();
        let mut b = [0u8; 8];
        b.copy_from_slice(&rec.value()[..8]);
        let d = tx
            .open_table(DATA)
            .unwrap()
            .get(u64::from_le_bytes(b))
            .unwrap()
            .unwrap();
        assert_eq!(d.value().len(), BODY);
    }
    fn delete(&self, t: u64, i: u64) {
        let mut tx = self.db.begin_write().unwrap();
        tx.set_durability(self.durability);
        {
            tx.open_table(INODES)
                .unwrap()
                .remove(format!("/d{t}/f{i}").as_str())
                .unwrap();
            tx.open_table(ENTRIES)
                .unwrap()
                .remove(format!("/d{t}\0f{i}").as_str())
                .unwrap();
            tx.open_table(DATA).unwrap().remove(ino_of(t, i)).unwrap();
        }
        tx.commit().unwrap();
    }
}

/// The same records in a fjall LSM tree: one keyspace each for inodes,
/// entries and data, one atomic write batch per create and per delete.
/// fjall's default durability is close to the engine's `fsync` policy: a
/// batch is in the operating system's buffers when `commit` returns, on
/// disk after a `persist` or a `sync`; but fjall syncs nothing in the
/// background, where the engine syncs its log every 5 s (a cost only the
/// engine pays here).
struct FjallTarget {
    db: fjall::Database,
    inodes: fjall::Keyspace,
    entries: fjall::Keyspace,
    data: fjall::Keyspace,
    durability: Option<fjall::PersistMode>,
}

impl FjallTarget {
    fn open(dir: &Path, sync: Policy) -> fjall::Result<FjallTarget> {
        // A block cache that holds every file (the engine and the plain
        // files read from the page cache, which holds them all).
        let db = fjall::Database::builder(dir).cache_size(2 << 30).open()?;
        let ks = |name: &str| db.keyspace(name, fjall::KeyspaceCreateOptions::default);
        let (inodes, entries, data) = (ks("inodes")?, ks("entries")?, ks("data")?);
        // `Buffer` is what `Database::batch` sets by default (the batch's
        // journal bytes written to the OS before `commit` returns); `None`
        // leaves them in fjall's own buffer.
        let durability = match sync {
            Policy::Always => Some(fjall::PersistMode::SyncData),
            Policy::Fsync => Some(fjall::PersistMode::Buffer),
            Policy::None => None,
        };
        Ok(FjallTarget {
            db,
            inodes,
            entries,
            data,
            durability,
        })
    }
}

impl Target for FjallTarget {
    /// The memtable flushes and compactions a phase left running (an LSM
    /// tree's write cost, here not charged to fjall's phase at all: a
    /// conservative comparison), for at most two minutes. fjall counts
    /// queued flushes and running compactions, not a flush a worker has
    /// taken nor a compaction still queued, so it must look idle for 200
    /// ms in a row with no compaction ending meanwhile.
    fn settle(&self) {
        let until = Instant::now() + Duration::from_secs(120);
        let (mut quiet, mut done) = (0, self.db.compactions_completed());
        while quiet < 20 {
            if Instant::now() > until {
                eprintln!("  fjall: still flushing or compacting after 120 s; going on");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
            let now = self.db.compactions_completed();
            let idle = self.db.outstanding_flushes() == 0 && self.db.active_compactions() == 0;
            quiet = if idle && now == done { quiet + 1 } else { 0 };
            done = now;
        }
    }
    fn create(&self, t: u64, i: u64) {
        let ino = ino_of(t, i);
        let mut b = self.db.batch().durability(self.durability);
        b.insert(&self.inodes, format!("/d{t}/f{i}"), postcard_like(ino));
        b.insert(&self.entries, format!("/d{t}\0f{i}"), ino.to_le_bytes());
        with_body(i, |v| b.insert(&self.data, ino.to_be_bytes(), v));
        b.commit().unwrap();
    }
    fn stat(&self, t: u64, i: u64) {
        assert!(with_path("", t, i, |p| self.inodes.get(p))
            .unwrap()
            .is_some());
    }
    fn read(&self, t: u64, i: u64) {
        let rec = with_path("", t, i, |p| self.inodes.get(p))
            .unwrap()
            .unwrap();
        let mut b = [0u8; 8];
        b.copy_from_slice(&rec[..8]);
        let ino = u64::from_le_bytes(b);
        let d = self.data.get(ino.to_be_bytes()).unwrap().unwrap();
        assert_eq!(d.len(), BODY);
    }
    fn delete(&self, t: u64, i: u64) {
        let mut b = self.db.batch().durability(self.durability);
        b.remove(&self.inodes, format!("/d{t}/f{i}"));
        b.remove(&self.entries, format!("/d{t}\0f{i}"));
        b.remove(&self.data, ino_of(t, i).to_be_bytes());
        b.commit().unwrap();
    }
}

/// An inode-record-sized value starting with the ino.
fn postcard_like(ino: u64) -> Vec<u8> {
    let mut v = ino.to_le_bytes().to_vec();
    v.resize(60, 7);
    v
}

impl Target for floor::FloorTarget {
    fn create(&self, t: u64, i: u64) {
        with_body(i, |b| floor::FloorTarget::create(self, t, i, b)).unwrap();
    }
    fn stat(&self, t: u64, i: u64) {
        floor::FloorTarget::stat(self, t, i)
    }
    fn read(&self, t: u64, i: u64) {
        floor::FloorTarget::read(self, t, i)
    }
    fn delete(&self, _t: u64, _i: u64) {}
    fn has(&self, p: usize) -> bool {
        p < 3
    }
}

struct PlainTarget {
    /// The directory of the files' directories.
    root: String,
}

impl Target for PlainTarget {
    fn create(&self, t: u64, i: u64) {
        with_body(i, |b| with_path(&self.root, t, i, |p| std::fs::write(p, b))).unwrap();
    }
    fn stat(&self, t: u64, i: u64) {
        with_path(&self.root, t, i, |p| std::fs::metadata(p)).unwrap();
    }
    fn read(&self, t: u64, i: u64) {
        let d = with_path(&self.root, t, i, |p| std::fs::read(p)).unwrap();
        assert_eq!(d.len(), BODY);
    }
    fn delete(&self, t: u64, i: u64) {
        with_path(&self.root, t, i, |p| std::fs::remove_file(p)).unwrap();
    }
}

/// Runs the four phases over every target, interleaved: each phase (and
/// each round of the stat and read phases) runs on every target in turn
/// before the next one starts. This VM's rates drift by a quarter from
/// one minute to the next, and a target run whole after another met a
/// different machine; side by side, a drift weighs on all alike. Returns,
/// per target, ops/s of each phase, then of the create and delete phases
/// counted until a `sync` after them returned.
fn run_phases(
    targets: &[(&str, Arc<dyn Target>)],
    files: u64,
    threads: u64,
    no_reads: bool,
    rounds: u64,
) -> Vec<[f64; 6]> {
    let mut out = vec![[f64::NAN; 6]; targets.len()];
    for p in 0..4 {
        if no_reads && (p == 1 || p == 2) {
            continue;
        }
        let rounds = if p == 1 || p == 2 { rounds } else { 1 };
        let mut rates: Vec<Vec<(f64, f64)>> = vec![Vec::new(); targets.len()];
        for _ in 0..rounds {
            for (k, (name, target)) in targets.iter().enumerate() {
                if !target.has(p) {
                    continue;
                }
                rates[k].push(run_phase(targets, name, target, p, files, threads));
            }
        }
        for (k, (name, target)) in targets.iter().enumerate() {
            let r = &mut rates[k];
            if r.is_empty() {
                continue;
            }
            if r.len() > 1 {
                let passes: Vec<String> = r.iter().map(|x| fmt_rate(x.0)).collect();
                eprintln!(
                    "  {name:<12} {:<22} passes in order: {}",
                    PHASES[p],
                    passes.join(", ")
                );
            }
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (rate, synced) = r[r.len() / 2];
            out[k][p] = rate;
            eprintln!("  {name:<12} {:<22} {rate:>12.0} ops/s", PHASES[p]);
            if p == 0 || p == 3 {
                let q = if p == 0 { 4 } else { 5 };
                out[k][q] = synced;
                eprintln!("  {name:<12} {:<22} {synced:>12.0} ops/s", PHASES[q]);
            }
            if p == 0 {
                target.report(files / threads * threads);
            }
            if p == 3 {
                target.report_end();
            }
        }
    }
    out
}

/// Runs phase `p` once over every file; its rate in ops/s, and the rate
/// counted until a `sync` after it returned (for creates and deletes).
///
/// Every target's background work is waited for first ([`Target::settle`]).
///
/// The file system is synced first (not timed), so no phase pays for the
/// writeback of the one before it: without this, the kernel's flusher
/// threads write back the create phase's 800 MiB on the same two cores
/// while the stat and read phases run, and their rates swing by 2x.
///
/// The synced rate charges every target for making its work durable: the
/// engine's `fsync` policy syncs its log every 5 s in the background,
/// inside the phase, while plain files leave their data to the kernel's
/// writeback (30 s), after the phase.
fn run_phase(
    targets: &[(&str, Arc<dyn Target>)],
    name: &str,
    target: &Arc<dyn Target>,
    p: usize,
    files: u64,
    threads: u64,
) -> (f64, f64) {
    for (_, t) in targets {
        t.settle();
    }
    sync_disks();
    let per = files / threads;
    let cpu0 = cpu_secs();
    let start = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let target = target.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    match p {
                        0 => target.create(t, i),
                        1 => target.stat(t, i),
                        2 => target.read(t, i),
                        _ => target.delete(t, i),
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let n = (per * threads) as f64;
    let done = start.elapsed();
    let cpu = cpu_secs().zip(cpu0).map(|(b, a)| (b - a) / n * 1e6);
    if p == 0 || p == 3 {
        sync_disks();
    }
    if let Some(us) = cpu {
        eprintln!(
            "    ({} {}: {us:.2} µs of CPU per op in this process)",
            name, PHASES[p]
        );
    }
    (n / done.as_secs_f64(), n / start.elapsed().as_secs_f64())
}

/// CPU time (user + system) this process has used, in seconds, from
/// `/proc/self/stat` (in units of `USER_HZ`, 100 per second on Linux):
/// a phase that is bound by the CPU is compared by what it costs, which
/// swings less than its rate on this shared VM. The kernel's writeback
/// threads are not counted. `None` where `/proc` cannot tell.
fn cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((utime + stime) as f64 / 100.0)
}

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}

/// `sync`: every file system's dirty pages written back (not a cache drop:
/// cold reads are not what this measures).
fn sync_disks() {
    let _ = std::process::Command::new("sync").status();
}

fn fmt_rate(r: f64) -> String {
    if r.is_nan() {
        "—".into()
    } else if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sealfs-store-bench: {e}");
            std::process::exit(2);
        }
    };
    let want = |n: &str| {
        a.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == n))
    };
    let policy = a.sync.name();
    let defaults = EngineOptions::default();
    let opts = EngineOptions {
        sync_interval: (a.sync == Policy::Fsync).then_some(sealfs_server::LAZY_SYNC_INTERVAL),
        compaction: !a.no_compaction,
        lanes: a.lanes.unwrap_or(defaults.lanes),
        ..defaults
    };
    println!(
        "store benchmark: {} files of 4 KiB, {} threads, sync {policy}, under {}",
        a.files,
        a.threads,
        a.dir.display()
    );
    eprintln!(
        "targets, each phase on each in turn: engine = packed log + mapped index; \
         redb = the same records, one transaction per create/delete; fjall = the \
         same records, one write batch per create/delete; floor = the \
         bodies alone, streamed (create), and the engine's cache misses and \
         data pass alone (stat, read); plain files"
    );
    let mut all: Vec<Vec<(&str, [f64; 6])>> = Vec::new();
    for run in 1..=a.runs {
        if a.runs > 1 {
            println!();
            println!("run {run} of {} ({} UTC)", a.runs, utc_now());
        }
        let targets = open_targets(&a, &opts, &want);
        let rates = run_phases(&targets, a.files, a.threads, a.no_reads, a.rounds);
        let names: Vec<&str> = targets.iter().map(|t| t.0).collect();
        drop(targets);
        sync_disks();
        let rows: Vec<(&str, [f64; 6])> = names.into_iter().zip(rates).collect();
        let engine = rows.iter().find(|r| r.0 == "engine").map(|r| r.1);
        println!();
        println!("| target | {} |", PHASES.join(" | "));
        println!("|---|---|---|---|---|---|---|");
        for (name, r) in &rows {
            let cells: Vec<String> = (0..6)
                .map(|p| match engine {
                    _ if r[p].is_nan() => fmt_rate(r[p]),
                    Some(e) if *name == "floor" => {
                        format!(
                            "{} (engine at {:.0} %)",
                            fmt_rate(r[p]),
                            100.0 * e[p] / r[p]
                        )
                    }
                    Some(e) if *name != "engine" => {
                        format!("{} (engine {:.2}x)", fmt_rate(r[p]), e[p] / r[p])
                    }
                    _ => fmt_rate(r[p]),
                })
                .collect();
            println!("| {name} | {} |", cells.join(" | "));
        }
        all.push(rows);
    }
    if a.runs > 1 {
        summary(&all);
    }
    if want("steady") && a.steady_secs > 0 {
        let s = steady::SteadyArgs {
            files: a.steady_files,
            secs: a.steady_secs,
            rate: a.steady_rate,
            threads: a.threads,
            sync: a.sync,
        };
        steady::run(&a.dir, &s, &opts);
    }
    if want("restart") && a.restart_files > 0 {
        restart(&a);
    }
}

/// Opens every target `--only` asks for, on fresh directories.
fn open_targets(
    a: &Args,
    opts: &EngineOptions,
    want: &dyn Fn(&str) -> bool,
) -> Vec<(&'static str, Arc<dyn Target>)> {
    let mut targets: Vec<(&'static str, Arc<dyn Target>)> = Vec::new();
    if want("engine") {
        let e = EngineTarget::open(&fresh(&a.dir.join("engine")), a.sync, opts);
        targets.push(("engine", Arc::new(e)));
    }
    if want("redb") {
        let d = fresh(&a.dir.join("redb"));
        let db = redb::Database::create(d.join("bench.redb")).unwrap();
        let durability = match a.sync {
            Policy::Fsync => redb::Durability::Eventual,
            Policy::Always => redb::Durability::Immediate,
            Policy::None => redb::Durability::None,
        };
        targets.push(("redb", Arc::new(RedbTarget { db, durability })));
    }
    if want("fjall") {
        let d = fresh(&a.dir.join("fjall"));
        targets.push(("fjall", Arc::new(FjallTarget::open(&d, a.sync).unwrap())));
    }
    if want("floor") {
        targets.push((
            "floor",
            Arc::new(
                floor::FloorTarget::new(a.files, a.threads, &fresh(&a.dir.join("floor"))).unwrap(),
            ),
        ));
    }
    if want("plain") {
        let d = fresh(&a.dir.join("plain"));
        for t in 0..a.threads {
            std::fs::create_dir_all(d.join(format!("d{t}"))).unwrap();
        }
        targets.push((
            "plain files",
            Arc::new(PlainTarget {
                // `--dir` came in as a `String`: exact.
                root: d.to_string_lossy().into_owned(),
            }),
        ));
    }
    targets
}

/// The time of day, UTC, as `HH:MM:SS`.
fn utc_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// After several runs: the engine against every other target but the
/// floor, run by run (engine / target, ratio), and the median ratio of
/// each phase; then the floor against the same targets, the highest
/// ratio the engine could reach in each phase.
fn summary(all: &[Vec<(&str, [f64; 6])>]) {
    let Some(first) = all.first() else { return };
    let peers: Vec<&str> = first
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "engine" && *n != "floor")
        .collect();
    for top in ["engine", "floor"] {
        for peer in &peers {
            ratio_table(all, top, peer);
        }
    }
}

/// `top` against `peer`, run by run, with the median of each phase (a
/// phase either lacks is a dash). Ratios have two decimals: with
/// one, 2.96× and 3.04× both read 3.0×, and the goal is 3×.
fn ratio_table(all: &[Vec<(&str, [f64; 6])>], top: &str, peer: &str) {
    let get = |rows: &[(&str, [f64; 6])], n: &str| rows.iter().find(|r| r.0 == n).map(|r| r.1);
    let pairs: Vec<([f64; 6], [f64; 6])> = all
        .iter()
        .filter_map(|rows| Some((get(rows, top)?, get(rows, peer)?)))
        .collect();
    if pairs.is_empty() {
        return;
    }
    println!();
    println!("{top} / {peer}, ratio, over {} runs:", pairs.len());
    println!();
    println!("| run | {} |", PHASES.join(" | "));
    println!("|---|---|---|---|---|---|---|");
    for (i, (e, pl)) in pairs.iter().enumerate() {
        let cells: Vec<String> = (0..6)
            .map(|p| match (e[p], pl[p]) {
                (e, pl) if e.is_nan() || pl.is_nan() => "—".to_string(),
                (e, pl) => format!("{} / {} ({:.2}×)", fmt_short(e), fmt_short(pl), e / pl),
            })
            .collect();
        println!("| {} | {} |", i + 1, cells.join(" | "));
    }
    let medians: Vec<String> = (0..6)
        .map(|p| {
            let mut r: Vec<f64> = pairs
                .iter()
                .map(|(e, pl)| e[p] / pl[p])
                .filter(|r| !r.is_nan())
                .collect();
            r.sort_by(f64::total_cmp);
            match r.len() {
                0 => "—".to_string(),
                n if n % 2 == 1 => format!("{:.2}×", r[n / 2]),
                n => format!("{:.2}×", (r[n / 2 - 1] + r[n / 2]) / 2.0),
            }
        })
        .collect();
    println!("| median | {} |", medians.join(" | "));
}

/// A rate without its unit, as the README's tables give it.
fn fmt_short(r: f64) -> String {
    fmt_rate(r).trim_end_matches("/s").to_string()
}

fn restart(a: &Args) {
    let d = fresh(&a.dir.join("restart"));
    let (meta_dir, n) = (d.join("meta"), a.restart_files);
    let open =
        || LogMetaStore::open(&meta_dir, &meta_dir, false, EngineOptions::default()).unwrap();
    {
        let m = Arc::new(open());
        let per = n / a.threads;
        let hs: Vec<_> = (0..a.threads)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let ino = ino_of(t, i);
                        m.commit(&[
                            MetaOp::PutInode(format!("/r{t}/f{i}"), inode(ino)),
                            MetaOp::PutEntry(
                                format!("/r{t}"),
                                DirEntry {
                                    name: format!("f{i}"),
                                    kind: FileKind::File,
                                    ino,
                                },
                            ),
                        ])
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        m.flush().unwrap();
        match Arc::try_unwrap(m) {
            Ok(m) => m.abandon(),
            Err(_) => unreachable!("threads joined"),
        }
    }
    let t = Instant::now();
    let m = open();
    let crashed = t.elapsed();
    assert!(m.get_inode("/r0/f1").unwrap().is_some());
    drop(m);
    let t = Instant::now();
    let m = open();
    let clean = t.elapsed();
    let st = m.engine().stats();
    drop(m);
    std::fs::remove_file(meta_dir.join("meta.index")).unwrap();
    let t = Instant::now();
    let m = open();
    let rebuilt = t.elapsed();
    assert!(m.get_inode("/r0/f1").unwrap().is_some());
    println!();
    println!(
        "restart with {n} files ({} keys, {:.0} MiB log, {:.1} MiB index = {:.1} bytes/key, {:.1} bytes/file):",
        st.keys,
        st.segment_bytes as f64 / 1048576.0,
        st.index_bytes as f64 / 1048576.0,
        st.index_bytes as f64 / st.keys.max(1) as f64,
        st.index_bytes as f64 / n.max(1) as f64
    );
    println!("| restart | time |");
    println!("|---|---|");
    println!(
        "| after a crash (index mapped, tail replayed) | {} |",
        ms(crashed)
    );
    println!(
        "| after a clean close (index mapped, CRC checked) | {} |",
        ms(clean)
    );
    println!("| index deleted (rebuilt from the log) | {} |", ms(rebuilt));
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
