//! Background work: the replay checkpoint in the index header, shrinking
//! an index that deletes left sparse, the periodic log sync (when [`super::EngineOptions::sync_interval`] is set),
//! and compaction of mostly-dead segments.
//!
//! Compaction picks the sealed segment with the smallest live fraction while
//! the log's bytes exceed its live bytes by more than `max_space_amp` (or
//! any sealed segment is under half live), and copies its live records to
//! the head of the log in small commits (at most [`STEP_RECORDS`] records
//! or [`STEP_BYTES`] bytes each, the stripe locks of just those keys held),
//! so foreground commits wait at most one small step. Segments go in
//! batches of up to [`BATCH_SEGMENTS`] segments' worth, one sync each
//! ([`compact_batch`]). Also here: the size new segments roll at
//! ([`segment_target`]) and the slowdown of writers while compaction is
//! behind ([`behind`]).
//!
//! Crash ordering: copy (append, publish the new slot) → sync the log →
//! delete the old segments. A crash before the delete leaves both copies;
//! the newer one (a copy gets a new sequence number) wins a replay. A live
//! record is one its key's slot points at. A tombstone is copied while
//! another segment holds a record numbered below it (it may still hide an
//! older version there), and dropped once none does.

use super::index::Slot;
use super::kv::{Inner, DROP_SLOTS};
use super::log::{Pos, SEG_HEADER_LEN};
use super::record::{self, RecHeader, KIND_PUT};
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A segment in which a record died this many background ticks ago or
/// less is still emptying: compaction leaves it for later (1 s at the
/// default 50 ms tick) unless the log's bytes exceed its live bytes by
/// more than [`HOT_SPACE_AMP`]. Measured on the store bench (200 000
/// files, 8 threads): copying records out of segments that a sweep of
/// deletes was emptying cost a fifth of the delete phase.
pub const COOL_TICKS: u64 = 20;
/// Space amplification past which still-emptying segments are compacted
/// too, batch after batch without waiting for the next tick. Compaction
/// otherwise starts at `max_space_amp` (1.25 by default), a batch a
/// tick; the engine's goal is to stay under 1.5 in a steady workload.
/// Under [`behind`]'s first level (1.4), so that compaction hurries
/// before writers are slowed: at 1.35 the store bench's steady workload
/// (400 000 files, 20 000 operations a second) slowed 2 % of its writes.
pub const HOT_SPACE_AMP: f64 = 1.3;

/// Most records copied per step. A step holds the stripe locks of its
/// keys while it copies them, so a foreground commit on one of those
/// stripes waits for the whole step: with 128 records (an eighth of the
/// stripes, held for about 0.4 ms) the store bench's steady workload
/// (`--only steady`, 400 000 files, 20 000 operations a second) had its
/// p99 at 0.54 ms with compaction against 0.12 ms without; with 16,
/// 0.24–0.36 ms in three runs, and compaction kept up as well (space
/// amplification 1.41× against 1.43×).
pub const STEP_RECORDS: usize = 16;
/// Most bytes copied per step (16 files of 16 KiB).
pub const STEP_BYTES: usize = 256 << 10;

/// Most segments (of the size new segments roll at) compacted between
/// two syncs ([`compact_batch`]).
pub const BATCH_SEGMENTS: usize = 4;

/// The background loop: every tick, the checkpoint, the index shrink, the
/// periodic sync and one batch of compaction; while the log's bytes
/// exceed its live bytes by more than [`HOT_SPACE_AMP`], batch after
/// batch without waiting for the next tick.
pub(crate) fn run(inner: Arc<Inner>, stop: Arc<AtomicBool>) {
    let mut last_sync = Instant::now();
    let mut last_tick = Instant::now();
    let mut urgent = false;
    while !stop.load(Ordering::Relaxed) {
        if !urgent {
            std::thread::park_timeout(inner.opts.tick);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if !urgent || last_tick.elapsed() >= inner.opts.tick {
            last_tick = Instant::now();
            inner.tick.fetch_add(1, Ordering::Relaxed);
            scale_segments(&inner);
            super::kv::checkpoint(&inner);
            super::kv::maybe_shrink(&inner);
            if let Some(every) = inner.opts.sync_interval {
                if last_sync.elapsed() >= every {
                    last_sync = Instant::now();
                    if let Err(e) = inner.log.sync_all() {
                        tracing::warn!("background log sync: {e}");
                    }
                }
            }
        }
        urgent = false;
        if !inner.opts.compaction {
            continue;
        }
        refresh_slow(&inner);
        match compact_batch(&inner, &stop) {
            Ok(u) => urgent = u,
            Err(e) => {
                tracing::warn!("compaction: {e}");
                // Back off: a full disk or an I/O error will not pass soon.
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Compacts segments ([`pick`]) until [`BATCH_SEGMENTS`] segments' worth
/// of bytes are copied (at most `segment_size`), then makes the copies durable
/// with one sync and deletes them; whether compaction is urgent (space
/// amplification over [`HOT_SPACE_AMP`] when the batch began). A segment
/// takes a few ms to copy and a sync 15–25 ms (ext4 loop image): one
/// segment of a small store's 4 MiB per tick (see [`segment_target`])
/// reclaimed too little to keep up with 9 000 rewrites a second.
fn compact_batch(inner: &Inner, stop: &AtomicBool) -> Result<bool, StoreError> {
    let mut ids = Vec::new();
    let mut bytes = 0u64;
    let mut urgent = false;
    let most = (BATCH_SEGMENTS as u64 * inner.log.segment_size()).min(inner.opts.segment_size);
    while bytes < most {
        let Some((id, amp)) = pick(inner, true, &ids) else {
            break;
        };
        if ids.is_empty() {
            urgent = amp > HOT_SPACE_AMP.max(inner.opts.max_space_amp);
        }
        let len = inner.log.seg_len(id);
        if !copy_out(inner, id, stop)? {
            break;
        }
        ids.push(id);
        bytes += len;
    }
    if ids.is_empty() {
        return Ok(false);
    }
    drop_copied(inner, &ids)?;
    Ok(urgent)
}

/// Compacts until nothing qualifies.
pub(crate) fn compact_all(inner: &Inner) -> Result<(), StoreError> {
    let never = AtomicBool::new(false);
    let mut done = std::collections::HashSet::new();
    while let Some((id, _)) = pick(inner, false, &[]) {
        if !done.insert(id) {
            break;
        }
        if copy_out(inner, id, &never)? {
            drop_copied(inner, &[id])?;
        }
    }
    super::kv::maybe_shrink(inner);
    Ok(())
}

/// Each segment's first sequence number with its id, smallest first.
fn sorted_firsts(ranges: &BTreeMap<u32, (u64, u64)>) -> Vec<(u64, u32)> {
    let mut firsts: Vec<(u64, u32)> = ranges.iter().map(|(&id, &(f, _))| (f, id)).collect();
    firsts.sort_unstable();
    firsts
}

/// The oldest record outside segment `id` (from [`sorted_firsts`]): a
/// tombstone of `id` numbered above it may still hide an older version of
/// its key there.
fn oldest_elsewhere(firsts: &[(u64, u32)], id: u32) -> u64 {
    firsts
        .iter()
        .find(|&&(_, s)| s != id)
        .map_or(u64::MAX, |&(f, _)| f)
}

/// Dead bytes the log may hold beyond two fifths of its live bytes, in
/// segments, before writers are slowed ([`behind`]): room for the lanes' active
/// segments (which compaction cannot touch until they are sealed) and a
/// few sealed ones waiting for it, so that a small store with a busy log
/// is not slowed for what compaction could not reclaim anyway.
pub const BEHIND_SLACK_SEGMENTS: u64 = 8;

/// How far compaction is behind, as an index into
/// [`super::kv::WRITE_DELAYS`]: 0 when the log's `total` bytes exceed its
/// `live` bytes by at most [`BEHIND_SLACK_SEGMENTS`] segments; else 1
/// past two fifths of them (space amplification 1.4), 2 past nine
/// twentieths (1.45, short of the engine's bound of 1.5 by what a tick
/// of lag adds). Commits that write values are slowed by the level's
/// delay until compaction catches up. The second level is for a disk
/// that compaction cannot keep up with even then: under the store
/// bench's steady workload on 200 MB of live files (`--steady-files
/// 50000 --steady-rate 50000`) the data log went to 1.46–1.58× with one
/// level, because rewriting a half-live segment (what a uniform random
/// workload leaves at 1.4×) copies as much as it frees, and each batch
/// waits 60–80 ms for its sync behind the writers' data.
pub fn behind(total: u64, live: u64, segment_size: u64) -> u8 {
    let dead = total.saturating_sub(live);
    if dead <= BEHIND_SLACK_SEGMENTS.saturating_mul(segment_size) {
        0
    } else if dead > live / 20 * 9 {
        2
    } else if dead > live / 5 * 2 {
        1
    } else {
        0
    }
}

/// Smallest segment size [`segment_target`] scales down to.
pub const MIN_SCALED_SEGMENT: u64 = 1 << 20;

/// Live bytes per byte of segment size ([`segment_target`]).
pub const LIVE_PER_SEGMENT: u64 = 32;

/// The size new segments roll at for a log of `total` bytes holding
/// `live` bytes of live records: `max` (the engine's `segment_size`)
/// while the log's dead bytes are at most an eighth of its live bytes
/// (there is little for compaction to do, and a log being filled rolls
/// least often: with scaled segments, creates of 4 KiB files in the
/// store bench ran 8–15 % slower); else the power of two at or below a
/// 32nd of the live bytes, between [`MIN_SCALED_SEGMENT`] (or `max` if
/// smaller) and `max`. What compaction cannot reclaim is counted in
/// segments: the lanes' active segments, and the slack of
/// [`BEHIND_SLACK_SEGMENTS`] before writers are slowed. With segments of
/// a fixed 64 MiB those were 768 MiB, which left a store of 200 MB live
/// at 4.1–4.5× space amplification under a steady workload of 50 000
/// rewrites a second (store bench, `--only steady --steady-files
/// 50000`). Scaled, four active segments and the slack are at most
/// 12 % and 25 % of the live bytes from 128 MiB live up, under the two
/// fifths at which writers are slowed.
pub fn segment_target(total: u64, live: u64, max: u64) -> u64 {
    if total.saturating_sub(live) <= live / 8 {
        return max;
    }
    let want = (live / LIVE_PER_SEGMENT).max(1);
    let pow2 = 1u64 << (63 - want.leading_zeros());
    pow2.clamp(MIN_SCALED_SEGMENT.min(max), max)
}

/// Sets the log's segment size from its live bytes now
/// ([`segment_target`]).
pub(crate) fn scale_segments(inner: &Inner) {
    let total = inner.log.total_len();
    let live: u64 = inner.live.lock().values().sum();
    let target = segment_target(total, live, inner.opts.segment_size);
    let was = inner.log.segment_size();
    if target != was {
        inner.log.set_segment_size(target);
        tracing::debug!(
            "segments roll at {} MiB from now on ({:.0} MiB live)",
            target >> 20,
            live as f64 / 1048576.0
        );
    }
}

/// Compaction steps between two [`refresh_slow`] calls inside a segment.
const REFRESH_STEPS: usize = 16;

/// Sets or clears [`Inner::slow_writes`] from the log's bytes now: every
/// tick; every [`REFRESH_STEPS`] steps while a segment is compacted (a
/// segment can take a second, and writers let go too late would undo
/// it); and by a commit that writes values every
/// [`super::kv::SLOW_CHECK_EVERY`], since commits go on while the
/// background thread waits for a batch's sync. Tombstones count as live here, which errs on the side of
/// not slowing. Never set without background compaction, which alone
/// could clear it. Segments copied out and waiting for the sync that lets
/// them go are counted: they are on the disk.
pub(crate) fn refresh_slow(inner: &Inner) {
    let total = inner.log.total_len();
    let live: u64 =
        inner.live.lock().values().sum::<u64>() + inner.tombs.lock().values().sum::<u64>();
    let slow = if inner.opts.compaction {
        behind(total, live, inner.log.segment_size())
    } else {
        0
    };
    // Written only when it changes: every commit reads it.
    if slow != inner.slow_writes.load(Ordering::Relaxed) {
        inner.slow_writes.store(slow, Ordering::Relaxed);
        tracing::debug!(
            "compaction {}: {:.0} MiB of segments for {:.0} MiB of live records",
            match slow {
                0 => "caught up",
                1 => "is behind, writes slowed",
                _ => "is far behind, writes slowed more",
            },
            total as f64 / 1048576.0,
            live as f64 / 1048576.0
        );
    }
}

/// The segment to compact next, if any, and the space amplification
/// seen; `patient`: leave segments that are still emptying (see
/// [`COOL_TICKS`]) while space allows; `copied`: segments already copied
/// out, which the next sync lets go (not counted, never picked).
fn pick(inner: &Inner, patient: bool, copied: &[u32]) -> Option<(u32, f64)> {
    let ranges = inner.log.seq_ranges();
    let segs: Vec<u32> = ranges.keys().copied().collect();
    let live = inner.live.lock().clone();
    let tombs = inner.tombs.lock().clone();
    let firsts = sorted_firsts(&ranges);
    let mut total = 0u64;
    let mut total_live = 0u64;
    let mut best: Option<(f64, u32)> = None;
    let now = inner.tick.load(Ordering::Relaxed);
    let mut hot: Vec<(f64, u32)> = Vec::new();
    for &id in &segs {
        if copied.contains(&id) {
            continue;
        }
        let len = inner.log.seg_len(id);
        // Tombstones that must be kept (a segment elsewhere may hold an
        // older record of their key) are live: compacting would only copy
        // them.
        let max_seq = ranges.get(&id).map_or(u64::MAX, |r| r.1);
        let kept = if oldest_elsewhere(&firsts, id) > max_seq {
            0
        } else {
            tombs.get(&id).copied().unwrap_or(0)
        };
        let l = live.get(&id).copied().unwrap_or(0) + kept;
        total += len;
        total_live += l;
        if inner.log.is_active(id) {
            continue;
        }
        let frac = l as f64 / len as f64;
        let dropped = inner.dropped[id as usize % DROP_SLOTS].load(Ordering::Relaxed);
        if patient && l > 0 && now.saturating_sub(dropped) < COOL_TICKS {
            hot.push((frac, id));
            continue;
        }
        if best.is_none_or(|(f, _)| frac < f) {
            best = Some((frac, id));
        }
    }
    let amp = total as f64 / total_live.max(1) as f64;
    // A segment whose records are still dying is left to empty itself
    // (a sweep of deletes would otherwise have its last live records
    // copied just before they die too) until space runs short.
    if amp > HOT_SPACE_AMP.max(inner.opts.max_space_amp) {
        for h in hot {
            if best.is_none_or(|(f, _)| h.0 < f) {
                best = Some(h);
            }
        }
    }
    best.filter(|&(frac, _)| frac < 0.5 || (amp > inner.opts.max_space_amp && frac < 0.9))
        .map(|(_, id)| (id, amp))
}

/// Copies the live records of segment `id` forward (not yet durable: see
/// [`drop_copied`]); `false` if it was not copied whole (it is active, or
/// the engine is stopping).
fn copy_out(inner: &Inner, id: u32, stop: &AtomicBool) -> Result<bool, StoreError> {
    if inner.log.is_active(id) {
        return Ok(false);
    }
    let buf = inner.log.read_segment(id)?;
    // A tombstone may hide an older version of its key in another segment
    // as long as one holds a record numbered below it.
    let oldest_elsewhere = oldest_elsewhere(&sorted_firsts(&inner.log.seq_ranges()), id);
    let mut off = SEG_HEADER_LEN as usize;
    let mut step: Vec<(RecHeader, &[u8], &[u8], u32)> = Vec::new();
    let mut step_bytes = 0usize;
    let mut steps = 0usize;
    while off < buf.len() {
        let rec = match record::decode(&buf[off..]) {
            Ok(r) => r,
            // Written ahead of appends as zeros and never used (a trim
            // that did not reach the disk): the end.
            Err(_) if record::unused_tail(&buf[off..]) => {
                tracing::info!(
                    "segment {id}: {} bytes of zeros after its last record, at {off}",
                    buf.len() - off
                );
                break;
            }
            Err(e) => {
                // Never delete what cannot be read through.
                return Err(StoreError::Corrupt(format!(
                    "segment {id} unreadable at {off}: {e}"
                )));
            }
        };
        let len = rec.h.total_len();
        if rec.h.kind == KIND_PUT || oldest_elsewhere < rec.h.seq {
            step.push((rec.h, rec.key, rec.value, off as u32));
            step_bytes += len;
        } else {
            // A tombstone that hides nothing any more goes with its segment.
            inner.forget_tomb(rec.key, Some(id));
        }
        off += len;
        if step.len() >= STEP_RECORDS || step_bytes >= STEP_BYTES {
            copy_step(inner, id, &step)?;
            step.clear();
            step_bytes = 0;
            steps += 1;
            if steps.is_multiple_of(REFRESH_STEPS) {
                refresh_slow(inner);
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            std::thread::yield_now();
        }
    }
    copy_step(inner, id, &step)?;
    Ok(true)
}

/// Makes the copies out of segments `ids` durable, then deletes them.
fn drop_copied(inner: &Inner, ids: &[u32]) -> Result<(), StoreError> {
    // The copies must be durable before the originals go.
    inner.log.sync_all()?;
    for &id in ids {
        inner.log.delete_segment(id)?;
        inner.live.lock().remove(&id);
        inner.tombs.lock().remove(&id);
        inner.compacted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("compacted segment {id}");
    }
    inner.log.ensure_reserve();
    Ok(())
}

/// One bounded step: copies the records of `cands` that are still live.
fn copy_step(
    inner: &Inner,
    id: u32,
    cands: &[(RecHeader, &[u8], &[u8], u32)],
) -> Result<(), StoreError> {
    if cands.is_empty() {
        return Ok(());
    }
    let _locks = inner.lock_keys(cands.iter().map(|c| c.1));
    let mut keep: Vec<(RecHeader, &[u8], &[u8])> = Vec::new();
    {
        let ix = inner.index.read();
        for (h, key, value, off) in cands {
            let live = if h.kind == KIND_PUT {
                inner
                    .find(&ix, key)?
                    .is_some_and(|(_, s)| s.pos() == Pos { seg: id, off: *off })
            } else {
                // A tombstone of a key that is live again is obsolete.
                inner.find(&ix, key)?.is_none()
            };
            if live {
                keep.push((*h, key, value));
            }
        }
    }
    if keep.is_empty() {
        return Ok(());
    }
    let app = inner.append(&keep, true)?;
    let res = (|| {
        let mut ix = inner.index.write();
        let mut live = inner.live.lock();
        for ((h, key, _), off) in keep.iter().zip(&app.offs) {
            if h.kind == KIND_PUT {
                inner.publish_put(
                    &mut ix,
                    key,
                    Slot::of_record(h, key, app.seg, *off),
                    &mut live,
                )?;
            }
        }
        Ok(())
    })();
    // A commit whose publishing failed part-way stays pending, so the
    // replay point never passes it: a restart applies it whole.
    if res.is_ok() {
        inner.log.published(&app);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn writers_are_slowed_past_1_4_1_45_and_the_slack() {
        let seg = 64 * MIB;
        // A large store: the ratio decides.
        assert_eq!(behind(14_000 * MIB, 10_000 * MIB, seg), 0);
        assert_eq!(behind(14_100 * MIB, 10_000 * MIB, seg), 1);
        assert_eq!(behind(14_500 * MIB, 10_000 * MIB, seg), 1);
        assert_eq!(behind(14_600 * MIB, 10_000 * MIB, seg), 2);
        // A small store: dead bytes within the slack (the lanes' active
        // segments and a few sealed ones) never slow writers.
        assert_eq!(behind(200 * MIB + 8 * seg, 200 * MIB, seg), 0);
        assert_eq!(behind(200 * MIB + 8 * seg + 1, 200 * MIB, seg), 2);
        // An empty log, or one whose records all died.
        assert_eq!(behind(0, 0, seg), 0);
        assert_eq!(behind(9 * seg, 0, seg), 2);
    }

    #[test]
    fn segments_scale_with_live_bytes() {
        let max = 64 * MIB;
        // A log with few dead bytes (an eighth of its live ones at most,
        // as while it is filled): the engine's segment size.
        assert_eq!(segment_target(0, 0, max), max);
        assert_eq!(segment_target(225 * MIB, 200 * MIB, max), max);
        // Dead bytes: small stores roll the smallest scaled size.
        let t = |live: u64| segment_target(live * 3 / 2, live, max);
        assert_eq!(segment_target(MIB, 0, max), MIB);
        assert_eq!(t(20 * MIB), MIB);
        // A 32nd of the live bytes, rounded down to a power of two.
        assert_eq!(segment_target(226 * MIB, 200 * MIB, max), 4 * MIB);
        assert_eq!(t(64 * MIB), 2 * MIB);
        assert_eq!(t(200 * MIB), 4 * MIB);
        assert_eq!(t(256 * MIB), 8 * MIB);
        assert_eq!(t(800 * MIB), 16 * MIB);
        assert_eq!(t(1600 * MIB), 32 * MIB);
        // Large stores: the engine's segment size.
        assert_eq!(t(2048 * MIB), 64 * MIB);
        assert_eq!(t(1 << 40), 64 * MIB);
        // An engine whose segments are smaller than the scaled minimum
        // (tests) keeps its own size.
        assert_eq!(segment_target(MIB, 0, 64 << 10), 64 << 10);
        assert_eq!(segment_target(3 << 40, 1 << 40, 64 << 10), 64 << 10);
        // From 128 MiB live up, the lanes' active segments and the slack
        // stay under two fifths of the live bytes.
        for live in [128 * MIB, 300 * MIB, 999 * MIB, 5000 * MIB] {
            let t = t(live);
            assert!((4 + BEHIND_SLACK_SEGMENTS) * t <= live / 5 * 2, "{live}");
        }
    }
}
