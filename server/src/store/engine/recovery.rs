//! Opening an engine: checking the segments, mapping the index, and
//! bringing the index up to date with the log.
//!
//! * The index is **trusted as it is** when it says it was closed cleanly
//!   and its table CRC matches.
//! * It is **brought up to date** by replaying the log from the header's
//!   replay point when it is dirty but was last opened in this same boot:
//!   the process died (SIGKILL, panic) but the page cache, which holds both
//!   the mapping and the log, did not. Commits appended but not (or half)
//!   published are re-applied; a torn commit at the tail of a lane is cut
//!   off.
//! * It is **rebuilt from the log** (and the log says so, at info level)
//!   when it is missing, torn, of another version, of another log, or dirty
//!   from an earlier boot (a power loss may have lost any of its pages).
//!
//! Replay merges the log's lanes by sequence number and applies commits in
//! that order, last one wins: within a lane sequence numbers rise, and a
//! key's commits never overlap (stripe locks held from append to publish,
//! compaction included), so sequence order is each key's version order.
//! The replay point names a sequence number below which every commit is in
//! the index, and where in each lane the commits from it on start; every
//! commit at or above it is re-applied, so a commit already published is
//! applied again in its place in the order, never after a newer one.

use super::index::{slot_hash, HeaderInfo, Index, Slot, MIN_CAPACITY};
use super::log::{
    check_seg_header, list_segments, read_first_seq, read_sync_marker, seg_header_version,
    seg_name, sync_dir, Pos, ReplayPoint, SegInfo, MAX_LANES, SEG_HEADER_LEN, SEG_VERSION,
};
use super::record::{self, RecHeader, FLAG_COMMIT, KIND_PUT, REC_HEADER_LEN};
use super::sys;
use crate::store::StoreError;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What [`open`] found and made.
pub struct Opened {
    /// The log's identity.
    pub log_id: u64,
    /// The segments, ascending, with their valid lengths.
    pub segs: Vec<SegInfo>,
    /// Next sequence number.
    pub next_seq: u64,
    /// The index, up to date.
    pub index: Index,
    /// Its header (dirty, this boot).
    pub hdr: HeaderInfo,
    /// How the index was obtained, for logs and tests.
    pub how: OpenHow,
}

/// How the index came to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenHow {
    /// Mapped after a clean close.
    Clean,
    /// Mapped and brought up to date by re-applying `records` from the log.
    Replayed {
        /// Records re-applied.
        records: u64,
    },
    /// Rebuilt from the whole log.
    Rebuilt {
        /// Why the old index was not used.
        reason: String,
        /// Records applied.
        records: u64,
    },
}

fn io(what: String, e: std::io::Error) -> StoreError {
    StoreError::io(what, e)
}

/// Reads records of any segment (open files cached).
struct SegFiles {
    dir: PathBuf,
    files: HashMap<u32, File>,
}

impl SegFiles {
    fn read(&mut self, pos: Pos, len: usize) -> Result<Vec<u8>, StoreError> {
        if !self.files.contains_key(&pos.seg) {
            let p = self.dir.join(seg_name(pos.seg));
            let f = File::open(&p).map_err(|e| io(format!("open {}", p.display()), e))?;
            self.files.insert(pos.seg, f);
        }
        let mut buf = vec![0u8; len];
        let f = &self.files[&pos.seg];
        f.read_exact_at(&mut buf, u64::from(pos.off))
            .map_err(|e| io(format!("read segment {}", pos.seg), e))?;
        Ok(buf)
    }
}

/// Whether the record at `s` has key `key`.
fn slot_has_key(files: &mut SegFiles, s: &Slot, key: &[u8]) -> Result<bool, StoreError> {
    if s.len != 0 && (s.len as usize) < REC_HEADER_LEN + key.len() {
        return Ok(false);
    }
    let head = files.read(s.pos(), REC_HEADER_LEN + key.len())?;
    match record::decode_header(&head) {
        Some(h) => Ok(h.key_len as usize == key.len() && &head[REC_HEADER_LEN..] == key),
        None => Ok(false),
    }
}

/// Fill of the table while a rebuild or replay grows it (packed to the
/// normal fill once at the end of a rebuild).
const REBUILD_LOAD_PCT: u64 = 45;

/// Applies one record to the index (last one wins). Grows the table when
/// needed (in place: a rebuild or replay owns the index exclusively).
fn apply(
    ix: &mut Index,
    files: &mut SegFiles,
    idx_path: &Path,
    hdr: &HeaderInfo,
    h: &record::RecHeader,
    key: &[u8],
    pos: Pos,
) -> Result<(), StoreError> {
    let hash = slot_hash(super::kv::key_hash(key));
    let found = ix.find(hash, |s| slot_has_key(files, s, key))?;
    if h.kind == KIND_PUT {
        let s = Slot::of_record(h, key, pos.seg, pos.off);
        match found {
            Some((i, _)) => ix.replace(i, &s),
            None => {
                if ix.needs_grow_by(1) {
                    rehash(ix, idx_path, hdr, 1, Some(REBUILD_LOAD_PCT))?;
                }
                ix.insert(&s)?;
            }
        }
    } else if let Some((i, _)) = found {
        ix.remove(i);
    }
    Ok(())
}

/// Replaces `ix` by a rehashed copy with room for `extra` more keys (new
/// file, renamed over the old one, so a crash leaves one whole table or
/// the other).
///
/// No `msync`: the new table is dirty, and a dirty table is only trusted
/// in the boot that wrote it (the page cache survives a process crash; a
/// power loss changes the boot id and the table is rebuilt from the log).
/// The flush cost a TLB shoot-down per page on every core.
pub fn grow(
    ix: &mut Index,
    idx_path: &Path,
    hdr: &HeaderInfo,
    extra: u64,
) -> Result<(), StoreError> {
    rehash(ix, idx_path, hdr, extra, None)
}

fn rehash(
    ix: &mut Index,
    idx_path: &Path,
    hdr: &HeaderInfo,
    extra: u64,
    load_pct: Option<u64>,
) -> Result<(), StoreError> {
    let tmp = idx_path.with_extension("grow");
    let n = ix.rehash(&tmp, hdr, extra, load_pct)?;
    fs::rename(&tmp, idx_path).map_err(|e| io(format!("rename {}", tmp.display()), e))?;
    *ix = n;
    Ok(())
}

/// One commit read back: its sequence number and records.
struct Commit {
    seq: u64,
    recs: Vec<(RecHeader, Vec<u8>, Pos)>,
}

/// The commits of one lane from the replay point on, in order.
struct LaneReader<'a> {
    dir: &'a Path,
    /// (index into `segs`, offset to start at), ascending.
    todo: std::collections::VecDeque<(usize, usize)>,
    /// The segment being read: its index in `segs`, bytes, offset.
    cur: Option<(usize, Vec<u8>, usize)>,
    from_seq: u64,
    /// After a power loss, the sync marker: an unreadable record right
    /// after one numbered at least this minus one was torn by the power
    /// loss, in any segment, and is cut off like a torn tail.
    torn_above: Option<u64>,
    /// The number of the last whole commit read in this lane.
    last_seq: Option<u64>,
}

impl LaneReader<'_> {
    /// The next commit numbered at least `from_seq`, cutting a torn tail off
    /// the lane's last segment.
    fn next(
        &mut self,
        segs: &mut [SegInfo],
        max_seq: &mut u64,
    ) -> Result<Option<Commit>, StoreError> {
        loop {
            if self.cur.is_none() {
                let Some((i, off)) = self.todo.pop_front() else {
                    return Ok(None);
                };
                let p = self.dir.join(seg_name(segs[i].id));
                let buf = fs::read(&p).map_err(|e| io(format!("read {}", p.display()), e))?;
                let off = off.min(buf.len());
                self.cur = Some((i, buf, off));
            }
            let Some((i, buf, off)) = self.cur.as_mut() else {
                continue;
            };
            let (i, start) = (*i, *off);
            let mut at = start;
            let mut recs = Vec::new();
            let mut bad: Option<String> = None;
            let mut done = None;
            while at < buf.len() {
                let rec = match record::decode(&buf[at..]) {
                    Ok(r) => r,
                    Err(e) => {
                        bad = Some(e.to_string());
                        break;
                    }
                };
                let len = rec.h.total_len();
                if at + len > buf.len() {
                    bad = Some("record runs past the end".into());
                    break;
                }
                *max_seq = (*max_seq).max(rec.h.seq);
                recs.push((
                    rec.h,
                    rec.key.to_vec(),
                    Pos {
                        seg: segs[i].id,
                        off: at as u32,
                    },
                ));
                at += len;
                if rec.h.flags & FLAG_COMMIT != 0 {
                    done = Some(rec.h.seq);
                    break;
                }
            }
            if let Some(seq) = done {
                *off = at;
                self.last_seq = Some(seq);
                if seq >= self.from_seq {
                    return Ok(Some(Commit { seq, recs }));
                }
                continue;
            }
            // The end of this segment: clean, torn, or unreadable.
            if !recs.is_empty() && bad.is_none() {
                bad = Some("commit without its last record".into());
            }
            let lane_last = self.todo.is_empty();
            let unsynced = self
                .torn_above
                .is_some_and(|m| self.last_seq.is_some_and(|s| s + 1 >= m));
            let len = buf.len();
            let unused = record::unused_tail(&buf[start..]);
            self.cur = None;
            if let Some(why) = bad {
                let id = segs[i].id;
                if unused {
                    // Written ahead of appends as zeros and never used: the
                    // process stopped before it trimmed the segment, which
                    // is expected for a lane's last one (and possible for
                    // the one before, sealed just after the next was made).
                    if lane_last {
                        tracing::debug!(
                            "segment {id}: {} unused bytes at the end; trimming",
                            len - start
                        );
                    } else {
                        tracing::warn!(
                            "segment {id}: {} bytes of zeros after its last record \
                             (a crash before its trim, or a trim that did not reach \
                             the disk); trimming",
                            len - start
                        );
                    }
                    cut_segment(self.dir, &mut segs[i], start as u64)?;
                } else if lane_last || unsynced {
                    tracing::warn!(
                        "segment {id}: torn tail at offset {start} ({why}); discarding {} bytes",
                        len - start
                    );
                    cut_segment(self.dir, &mut segs[i], start as u64)?;
                } else {
                    tracing::error!(
                        "segment {id}: unreadable from offset {start} ({why}); {} bytes skipped",
                        len - start
                    );
                }
            }
        }
    }
}

/// Re-applies every commit numbered at least `from.seq`, merging the lanes
/// by sequence number. Cuts torn tails. With `prefix_from` (after a power
/// loss: the sync marker), commits from that number on are applied only
/// while their numbers run without a gap; at the first gap every lane is
/// cut (its later segments removed from `segs` and deleted), so what
/// survives is a prefix of the commits. Returns (records applied, the
/// highest sequence number kept).
fn replay(
    dir: &Path,
    segs: &mut Vec<SegInfo>,
    from: &ReplayPoint,
    prefix_from: Option<u64>,
    ix: &mut Index,
    idx_path: &Path,
    hdr: &HeaderInfo,
) -> Result<(u64, u64), StoreError> {
    let mut files = SegFiles {
        dir: dir.to_path_buf(),
        files: HashMap::new(),
    };
    let mut lanes: Vec<LaneReader<'_>> = (0..MAX_LANES)
        .map(|_| LaneReader {
            dir,
            todo: Default::default(),
            cur: None,
            from_seq: from.seq,
            torn_above: prefix_from,
            last_seq: None,
        })
        .collect();
    for (i, s) in segs.iter().enumerate() {
        let lane = s.lane as usize;
        let start = if s.id > from.max_seg {
            Some(SEG_HEADER_LEN as usize)
        } else {
            match from.lanes[lane] {
                Some(p) if s.id == p.seg => Some((p.off as usize).max(SEG_HEADER_LEN as usize)),
                Some(p) if s.id > p.seg => Some(SEG_HEADER_LEN as usize),
                _ => None,
            }
        };
        if let Some(off) = start {
            lanes[lane].todo.push_back((i, off));
        }
    }
    // Only a lane's last segment can be torn, and it is read whenever the
    // lane wrote after the replay point; segments not read keep their
    // file length.
    let mut max_seq = 0u64;
    let mut heads: Vec<Option<Commit>> = Vec::with_capacity(MAX_LANES);
    for l in lanes.iter_mut() {
        heads.push(l.next(segs, &mut max_seq)?);
    }
    let mut applied = 0u64;
    let mut expected = prefix_from;
    let mut kept_max = 0u64;
    loop {
        let next = heads
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (c.seq, i)))
            .min();
        let Some((seq, l)) = next else { break };
        if let Some(e) = expected.as_mut() {
            if seq > *e {
                cut_after_gap(dir, segs, &mut lanes, &heads, *e)?;
                // Numbering goes on from the missing number, so the run
                // stays gap-free for the next power loss.
                return Ok((applied, kept_max.max(*e - 1)));
            }
            if seq == *e {
                *e += 1;
            }
        }
        kept_max = kept_max.max(seq);
        if let Some(c) = heads[l].take() {
            for (h, key, pos) in &c.recs {
                apply(ix, &mut files, idx_path, hdr, h, key, *pos)?;
                applied += 1;
            }
        }
        heads[l] = lanes[l].next(segs, &mut max_seq)?;
    }
    Ok((applied, max_seq))
}

/// Truncates a segment file to `len` bytes, durably.
fn cut_segment(dir: &Path, s: &mut SegInfo, len: u64) -> Result<(), StoreError> {
    let p = dir.join(seg_name(s.id));
    OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
        .map_err(|e| io(format!("truncate {}", p.display()), e))?;
    s.len = len;
    Ok(())
}

/// Cuts every lane at its first unapplied commit (all numbered past the
/// gap at `missing`) and deletes the lane's later segments.
fn cut_after_gap(
    dir: &Path,
    segs: &mut Vec<SegInfo>,
    lanes: &mut [LaneReader<'_>],
    heads: &[Option<Commit>],
    missing: u64,
) -> Result<(), StoreError> {
    let mut dropped = 0u64;
    let mut gone = Vec::new();
    for (l, head) in heads.iter().enumerate() {
        let Some(c) = head else { continue };
        let Some(&(_, _, at)) = c.recs.first() else {
            continue;
        };
        if let Some(s) = segs.iter_mut().find(|s| s.id == at.seg) {
            dropped += s.len.saturating_sub(u64::from(at.off));
            cut_segment(dir, s, u64::from(at.off))?;
        }
        for (i, _) in lanes[l].todo.drain(..) {
            gone.push(segs[i].id);
        }
    }
    for id in &gone {
        if let Some(s) = segs.iter().find(|s| s.id == *id) {
            dropped += s.len;
        }
        let p = dir.join(seg_name(*id));
        fs::remove_file(&p).map_err(|e| io(format!("remove {}", p.display()), e))?;
    }
    segs.retain(|s| !gone.contains(&s.id));
    if !gone.is_empty() {
        sync_dir(dir)?;
    }
    tracing::warn!(
        "after a power loss: commit {missing} never reached the disk; \
         discarding {dropped} bytes of later commits so the log stays a prefix"
    );
    Ok(())
}

/// Opens (creating if needed) the log in `dir` and its index at `idx_path`.
pub fn open(dir: &Path, idx_path: &Path) -> Result<Opened, StoreError> {
    fs::create_dir_all(dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
    // A segment whose header is not ours: one shorter than a header is a
    // creation cut short by a crash (it holds nothing); any other is an
    // error.
    let mut log_id = None;
    let mut segs = Vec::new();
    for id in list_segments(dir)? {
        let p = dir.join(seg_name(id));
        let f = File::open(&p).map_err(|e| io(format!("open {}", p.display()), e))?;
        let len = f
            .metadata()
            .map_err(|e| io(format!("stat {}", p.display()), e))?
            .len();
        let mut head = [0u8; SEG_HEADER_LEN as usize];
        let got = f
            .read_exact_at(&mut head, 0)
            .ok()
            .and_then(|()| check_seg_header(&head, id));
        match got {
            Some((l, lane)) if (lane as usize) < MAX_LANES && log_id.is_none_or(|x| x == l) => {
                log_id = Some(l);
                segs.push(SegInfo {
                    id,
                    lane,
                    len,
                    first_seq: read_first_seq(&f).unwrap_or(u64::MAX),
                    max_seq: u64::MAX,
                });
            }
            Some((l, _)) if log_id.is_some_and(|x| x != l) => {
                return Err(StoreError::Corrupt(format!(
                    "{} belongs to log {l:016x}, not {:016x}",
                    p.display(),
                    log_id.unwrap_or(0)
                )))
            }
            None if let Some(v) = seg_header_version(&head).filter(|&v| v != SEG_VERSION) => {
                return Err(StoreError::Corrupt(format!(
                    "{} is in segment format version {v}; this build reads version \
                     {SEG_VERSION} only (read the files out with the SealFS that wrote them)",
                    p.display(),
                )))
            }
            None if len <= SEG_HEADER_LEN => {
                tracing::warn!("{}: half-created segment, removing", p.display());
                fs::remove_file(&p).map_err(|e| io(format!("remove {}", p.display()), e))?;
            }
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "{} is not a segment of this store",
                    p.display()
                )))
            }
        }
    }
    let boot = sys::boot_id();
    let Some(log_id) = log_id else {
        // A new store.
        let log_id = rand::random::<u64>() | 1;
        let hdr = HeaderInfo {
            log_id,
            boot,
            clean: false,
            replay: nothing_to_replay(1, 0),
            next_seq: 1,
            table_crc: 0,
        };
        let index = Index::create(idx_path, MIN_CAPACITY, &hdr)?;
        index.flush_header()?;
        return Ok(Opened {
            log_id,
            segs,
            next_seq: 1,
            index,
            hdr,
            how: OpenHow::Clean,
        });
    };

    let started = Instant::now();
    let mut power_loss = false;
    let attempt = match Index::open(idx_path) {
        Err(_) if !idx_path.exists() => Err("index file missing".to_string()),
        Err(reason) => Err(reason),
        Ok((ix, info)) => {
            if info.log_id != log_id {
                Err("index belongs to another log".to_string())
            } else if info.clean {
                if ix.table_crc() == info.table_crc {
                    Ok((ix, info, true))
                } else {
                    Err("index table checksum mismatch".to_string())
                }
            } else if info.boot == boot && boot != 0 {
                Ok((ix, info, false))
            } else {
                power_loss = true;
                Err("index not closed cleanly before the machine restarted".to_string())
            }
        }
    };
    match attempt {
        Ok((mut ix, info, clean)) => {
            let mut hdr = HeaderInfo {
                boot,
                clean: false,
                ..info
            };
            let (records, max_seq) =
                replay(dir, &mut segs, &info.replay, None, &mut ix, idx_path, &hdr)?;
            hdr.next_seq = info.next_seq.max(max_seq + 1);
            hdr.replay = nothing_to_replay(hdr.next_seq, segs.last().map_or(0, |s| s.id));
            bound_seqs(&mut segs, hdr.next_seq);
            ix.write_header(&hdr);
            ix.flush_header()?;
            let how = if clean && records == 0 {
                OpenHow::Clean
            } else {
                OpenHow::Replayed { records }
            };
            if records > 0 {
                tracing::info!(
                    "index replayed {records} records from the log tail in {:?}",
                    started.elapsed()
                );
            }
            Ok(Opened {
                log_id,
                segs,
                next_seq: hdr.next_seq,
                index: ix,
                hdr,
                how,
            })
        }
        Err(reason) => {
            let total: u64 = segs.iter().map(|s| s.len).sum();
            // A guess of the record count (4 KiB files are ~4.1 KiB records);
            // the table grows past it if needed and is packed at the end.
            let cap = (total / 512).max(MIN_CAPACITY);
            let tmp = idx_path.with_extension("rebuild");
            let hdr0 = HeaderInfo {
                log_id,
                boot,
                clean: false,
                replay: nothing_to_replay(0, 0),
                next_seq: 1,
                table_crc: 0,
            };
            let mut ix = Index::create(&tmp, cap, &hdr0)?;
            let everything = ReplayPoint {
                seq: 0,
                max_seg: 0,
                lanes: [None; MAX_LANES],
            };
            // A marker from another boot: the machine went down with
            // un-synced commits in the page cache, whatever the index says.
            let prefix_from = read_sync_marker(dir)
                .filter(|m| m.boot != boot || power_loss)
                .map(|m| m.durable_below);
            let (records, max_seq) = replay(
                dir,
                &mut segs,
                &everything,
                prefix_from,
                &mut ix,
                &tmp,
                &hdr0,
            )?;
            // Pack the table to its normal fill (a rebuild sized it loosely).
            let packed = ix.live * 100 / super::index::TARGET_LOAD_PCT + 1;
            if ix.capacity() > packed.max(MIN_CAPACITY) + packed / 8 {
                rehash(&mut ix, &tmp, &hdr0, 0, None)?;
            }
            // After the cut: a deleted segment's id may be used again, and
            // must then count as new.
            let hdr = HeaderInfo {
                next_seq: max_seq + 1,
                replay: nothing_to_replay(max_seq + 1, segs.last().map_or(0, |s| s.id)),
                ..hdr0
            };
            bound_seqs(&mut segs, hdr.next_seq);
            ix.write_header(&hdr);
            ix.flush()?;
            fs::rename(&tmp, idx_path).map_err(|e| io(format!("rename {}", tmp.display()), e))?;
            let (ix, _) = Index::open(idx_path)
                .map_err(|e| StoreError::Corrupt(format!("rebuilt index: {e}")))?;
            tracing::info!(
                "index rebuilt from log: {records} records in {:?} ({reason})",
                started.elapsed()
            );
            Ok(Opened {
                log_id,
                segs,
                next_seq: hdr.next_seq,
                index: ix,
                hdr,
                how: OpenHow::Rebuilt { reason, records },
            })
        }
    }
}

/// Sets each segment's `max_seq` to a bound: below the first sequence
/// number of the next segment of its lane, or below `next_seq` for a lane's
/// last segment (a lane's sequence numbers rise from segment to segment).
/// A segment whose first record was cut off gets its own bound.
fn bound_seqs(segs: &mut [SegInfo], next_seq: u64) {
    let mut next_in_lane = [next_seq; MAX_LANES];
    for s in segs.iter_mut().rev() {
        let lane = s.lane as usize;
        s.max_seq = next_in_lane[lane].saturating_sub(1);
        if s.first_seq != u64::MAX {
            next_in_lane[lane] = s.first_seq;
        }
    }
}

/// The replay point of an index that holds every commit: nothing below
/// `seq` is missing, and the segments up to `max_seg` are sealed.
pub fn nothing_to_replay(seq: u64, max_seg: u32) -> ReplayPoint {
    ReplayPoint {
        seq,
        max_seg,
        lanes: [None; MAX_LANES],
    }
}
