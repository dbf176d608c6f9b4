//! The `steady` part: the engine under a steady create / overwrite /
//! delete workload, run twice on fresh directories, with background
//! compaction and without, so that a run shows what compaction costs the
//! foreground and what it saves on disk (issue 3: "bounded so foreground
//! latency stays flat; space amplification stays under 1.5×").
//!
//! Each thread owns `--steady-files / --threads` files of 4 KiB, all
//! created first (untimed, then a `sync`). Then, for `--steady-secs`
//! seconds, every thread picks one of its files at random, paced so that
//! all threads together start `--steady-rate` operations a second: a file
//! that is not there is created (data, then inode and entry, as the
//! server does); one that is there is deleted one time in four and
//! rewritten whole otherwise. So about four files in five are live, and
//! the operations are a fifth creates, a fifth deletes and three fifths
//! overwrites. Every overwrite and delete leaves a dead record behind.
//!
//! Measured: the latency of each operation (from its start, not from the
//! time its pacing planned: a thread that falls behind runs its next ones
//! at once, so a stall shows in the one operation that met it, not in
//! those queued behind it; one more than [`BACKLOG`] behind gives up the
//! operations it missed), as percentiles over the run and per second;
//! and the space amplification (bytes of segment files over bytes of
//! live records, meta and data logs together, and each log alone)
//! sampled every 100 ms, and how many commits each log's engine slowed
//! (its compaction behind). The samples are taken when the sampling
//! thread gets a core, which is more often while writers are held back:
//! the count of slowed commits is exact, a share of samples was not.

use crate::{fresh, sync_disks, EngineTarget, Policy, Target};
use hdrhistogram::Histogram;
use sealfs_server::engine::EngineOptions;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the steady workload is asked to do.
pub struct SteadyArgs {
    /// Files over all threads.
    pub files: u64,
    /// Length of each of the two runs.
    pub secs: u64,
    /// Operations started per second, over all threads.
    pub rate: u64,
    pub threads: u64,
    pub sync: Policy,
}

/// Latencies of one run: over the whole run, and per second.
struct Latencies {
    all: Histogram<u64>,
    per_sec: Vec<Histogram<u64>>,
}

/// What one run measured.
struct Outcome {
    lat: Latencies,
    ops: u64,
    elapsed: Duration,
    /// Every 100 ms.
    amp: Vec<Sample>,
    compacted: u64,
    /// Creates and overwrites (each one data commit with a value; a
    /// create is one meta commit with values too).
    writes: u64,
    creates: u64,
    /// Commits slowed during the run, meta and data logs.
    meta_slowed: u64,
    data_slowed: u64,
}

/// How far a thread may fall behind its pacing before it gives up the
/// operations it missed: the rate asked is a ceiling, and a store that
/// held its writers back (compaction behind) is not then sent a burst.
const BACKLOG: Duration = Duration::from_millis(100);

/// Latencies in nanoseconds, from 1 ns to 100 s, two significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 2).expect("valid histogram bounds")
}

impl Latencies {
    fn new(secs: u64) -> Latencies {
        Latencies {
            all: histogram(),
            per_sec: (0..secs.max(1)).map(|_| histogram()).collect(),
        }
    }

    fn record(&mut self, at: Duration, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.all.saturating_record(ns);
        let s = (at.as_secs() as usize).min(self.per_sec.len() - 1);
        self.per_sec[s].saturating_record(ns);
    }

    fn add(&mut self, o: &Latencies) {
        self.all.add(&o.all).expect("same bounds");
        for (a, b) in self.per_sec.iter_mut().zip(&o.per_sec) {
            a.add(b).expect("same bounds");
        }
    }
}

/// One look at the logs.
#[derive(Clone, Copy)]
struct Sample {
    /// Seconds since the start.
    t: f64,
    /// Bytes of segment files over bytes of live records, both logs.
    amp: f64,
    /// The same for the meta log and the data log alone.
    meta_amp: f64,
    data_amp: f64,
    /// Commits the meta log's and the data log's engines slowed so far.
    meta_slowed: u64,
    data_slowed: u64,
}

fn sample(e: &EngineTarget, t: f64) -> Sample {
    let m = e.meta.engine().stats();
    let d = e.data.engine().map(|e| e.stats()).unwrap_or_default();
    let ratio = |seg: u64, live: u64| seg as f64 / live.max(1) as f64;
    Sample {
        t,
        amp: ratio(
            m.segment_bytes + d.segment_bytes,
            m.live_bytes + d.live_bytes,
        ),
        meta_amp: ratio(m.segment_bytes, m.live_bytes),
        data_amp: ratio(d.segment_bytes, d.live_bytes),
        meta_slowed: m.slowed_commits,
        data_slowed: d.slowed_commits,
    }
}

/// A small generator per thread (xorshift64*): which file next.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n.max(1)
    }
}

/// One run on a fresh engine under `dir`.
fn run_once(dir: &Path, s: &SteadyArgs, opts: &EngineOptions) -> Outcome {
    let e = Arc::new(EngineTarget::open(&fresh(dir), s.sync, opts));
    let per = (s.files / s.threads.max(1)).max(1);
    // Fill: every file there at the start.
    let hs: Vec<_> = (0..s.threads)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || (0..per).for_each(|i| e.create(t, i)))
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    sync_disks();

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let sampler = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut amp = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                amp.push(sample(&e, start.elapsed().as_secs_f64()));
                std::thread::sleep(Duration::from_millis(100));
            }
            amp
        })
    };
    let until = Duration::from_secs(s.secs);
    // The time between two operations of one thread.
    let gap = Duration::from_secs_f64(s.threads.max(1) as f64 / s.rate.max(1) as f64);
    let hs: Vec<_> = (0..s.threads)
        .map(|t| {
            let e = e.clone();
            let secs = s.secs;
            std::thread::spawn(move || {
                let mut lat = Latencies::new(secs);
                let mut live = vec![true; per as usize];
                let mut rng =
                    Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
                let (mut ops, mut next) = (0u64, Duration::ZERO);
                let (mut writes, mut creates) = (0u64, 0u64);
                loop {
                    let now = start.elapsed();
                    if now >= until {
                        break;
                    }
                    if next > now {
                        std::thread::sleep(next - now);
                    } else if now - next > BACKLOG {
                        // Held back (a slowed store, a descheduled
                        // thread): the operations missed are given up,
                        // not made in a burst after.
                        next = now;
                    }
                    next += gap;
                    let i = rng.below(per);
                    let at = start.elapsed();
                    let l = &mut live[i as usize];
                    if !*l {
                        e.create(t, i);
                        *l = true;
                        writes += 1;
                        creates += 1;
                    } else if rng.below(4) == 0 {
                        e.delete(t, i);
                        *l = false;
                    } else {
                        e.overwrite(t, i, ops + i);
                        writes += 1;
                    }
                    lat.record(at, start.elapsed() - at);
                    ops += 1;
                }
                (lat, ops, writes, creates)
            })
        })
        .collect();
    let mut lat = Latencies::new(s.secs);
    let (mut ops, mut writes, mut creates) = (0, 0, 0);
    for h in hs {
        let (l, n, w, c) = h.join().unwrap();
        lat.add(&l);
        ops += n;
        writes += w;
        creates += c;
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let amp = sampler.join().unwrap();
    let m = e.meta.engine().stats();
    let d = e.data.engine().map(|d| d.stats()).unwrap_or_default();
    let first = amp.first().copied();
    Outcome {
        lat,
        ops,
        elapsed,
        compacted: m.compacted + d.compacted,
        writes,
        creates,
        meta_slowed: m
            .slowed_commits
            .saturating_sub(first.map_or(0, |a| a.meta_slowed)),
        data_slowed: d
            .slowed_commits
            .saturating_sub(first.map_or(0, |a| a.data_slowed)),
        amp,
    }
}

fn us(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Runs the workload with compaction, then without, and prints both.
pub fn run(dir: &Path, s: &SteadyArgs, opts: &EngineOptions) {
    println!();
    println!(
        "steady create/overwrite/delete: {} files of 4 KiB, {} threads, {} ops/s asked, {} s per run, sync {}",
        s.files,
        s.threads,
        s.rate,
        s.secs,
        s.sync.name()
    );
    let mut outs = Vec::new();
    for compaction in [true, false] {
        let o = EngineOptions {
            compaction,
            ..opts.clone()
        };
        eprintln!(
            "  steady, compaction {}",
            if compaction { "on" } else { "off" }
        );
        outs.push((compaction, run_once(&dir.join("steady"), s, &o)));
        let _ = std::fs::remove_dir_all(dir.join("steady"));
    }
    println!();
    println!("| compaction | ops/s | p50 | p99 | p99.9 | max | space amp., highest after 5 s | at the end | meta / data log at the end | commits slowed, meta (of creates) / data (of writes) | segments compacted |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (c, o) in &outs {
        let h = &o.lat.all;
        let late = o
            .amp
            .iter()
            .filter(|a| a.t >= 5.0)
            .map(|a| a.amp)
            .fold(f64::NAN, f64::max);
        let end = o.amp.last();
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2}× | {:.2}× | {:.2}× / {:.2}× | {:.1} % / {:.1} % | {} |",
            if *c { "on" } else { "off" },
            crate::fmt_rate(o.ops as f64 / o.elapsed.as_secs_f64()),
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
            late,
            end.map_or(f64::NAN, |a| a.amp),
            end.map_or(f64::NAN, |a| a.meta_amp),
            end.map_or(f64::NAN, |a| a.data_amp),
            100.0 * o.meta_slowed as f64 / o.creates.max(1) as f64,
            100.0 * o.data_slowed as f64 / o.writes.max(1) as f64,
            o.compacted
        );
    }
    println!();
    println!("per second: operations, p50 / p99 / max, space amplification at its end, commits the meta / data log slowed in it");
    println!();
    println!("| second | compaction on | compaction off |");
    println!("|---|---|---|");
    for sec in 0..s.secs as usize {
        let cell = |o: &Outcome| {
            let h = &o.lat.per_sec[sec];
            // The last sample before the second's end, and before its start.
            let by = |t: f64| o.amp.iter().take_while(|a| a.t < t).last().copied();
            let (from, to) = (
                by(sec as f64).or(o.amp.first().copied()),
                by((sec + 1) as f64),
            );
            let slowed = |f: fn(&Sample) -> u64| {
                to.map_or(0, |a| f(&a))
                    .saturating_sub(from.map_or(0, |a| f(&a)))
            };
            format!(
                "{} ops, {} / {} / {}, {:.2}×, slowed {} / {}",
                h.len(),
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.99)),
                us(h.max()),
                to.map_or(f64::NAN, |a| a.amp),
                slowed(|a| a.meta_slowed),
                slowed(|a| a.data_slowed),
            )
        };
        println!(
            "| {} | {} | {} |",
            sec + 1,
            cell(&outs[0].1),
            cell(&outs[1].1)
        );
    }
}
