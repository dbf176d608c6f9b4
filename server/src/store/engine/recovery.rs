//! Opening an engine: checking the segments, mapping the index, and
//! bringing the index up to date with the log.
//!
//! * The index is **trusted as it is** when it says it was closed cleanly
//!   and its table CRC matches.
//! * It is **brought up to date** by replaying the log from the header's
//!   replay position when it is dirty but was last opened in this same boot:
//!   the process died (SIGKILL, panic) but the page cache, which holds both
//!   the mapping and the log, did not. Commits appended but not (or half)
//!   published are re-applied; a torn commit at the tail is cut off.
//! * It is **rebuilt from the log** (and the log says so, at info level)
//!   when it is missing, torn, of another version, of another log, or dirty
//!   from an earlier boot (a power loss may have lost any of its pages).
//!
//! Replay applies records in log order, last one wins: the engine
//! serialises commits of one key (stripe locks held from append to publish,
//! compaction included), so log order is each key's version order.

use super::index::{slot_hash, HeaderInfo, Index, Slot, MIN_CAPACITY};
use super::log::{check_seg_header, list_segments, seg_name, Pos, SEG_HEADER_LEN};
use super::record::{self, FLAG_COMMIT, KIND_PUT, REC_HEADER_LEN};
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
    /// Segment ids, ascending.
    pub ids: Vec<u32>,
    /// Valid length of the last segment.
    pub tail_len: u64,
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
    /// Mapped and brought up to date by replaying `records` from the log.
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

/// Replays segments `ids` from `from`, applying complete commits. Cuts a
/// torn tail off the last segment. Returns (records applied, max seq,
/// valid length of the last segment).
fn replay(
    dir: &Path,
    ids: &[u32],
    from: Pos,
    ix: &mut Index,
    idx_path: &Path,
    hdr: &HeaderInfo,
) -> Result<(u64, u64, u64), StoreError> {
    let mut files = SegFiles {
        dir: dir.to_path_buf(),
        files: HashMap::new(),
    };
    let mut applied = 0u64;
    let mut max_seq = 0u64;
    let mut tail_len = SEG_HEADER_LEN;
    for (n, &id) in ids.iter().enumerate() {
        let last = n + 1 == ids.len();
        if id < from.seg {
            continue;
        }
        let p = dir.join(seg_name(id));
        let buf = fs::read(&p).map_err(|e| io(format!("read {}", p.display()), e))?;
        let mut off = if id == from.seg {
            u64::from(from.off).max(SEG_HEADER_LEN)
        } else {
            SEG_HEADER_LEN
        } as usize;
        if off > buf.len() {
            // The replay point is past the end: only a torn tail could
            // make that happen; nothing to apply here.
            off = buf.len();
        }
        let mut batch: Vec<(record::RecHeader, Vec<u8>, Pos)> = Vec::new();
        let mut good_end = off;
        let mut bad: Option<String> = None;
        while off < buf.len() {
            let rec = match record::decode(&buf[off..]) {
                Ok(r) => r,
                Err(e) => {
                    bad = Some(e.to_string());
                    break;
                }
            };
            let len = rec.h.total_len();
            if off + len > buf.len() {
                bad = Some("record runs past the end".into());
                break;
            }
            max_seq = max_seq.max(rec.h.seq);
            batch.push((
                rec.h,
                rec.key.to_vec(),
                Pos {
                    seg: id,
                    off: off as u32,
                },
            ));
            off += len;
            if rec.h.flags & FLAG_COMMIT != 0 {
                for (h, key, pos) in batch.drain(..) {
                    apply(ix, &mut files, idx_path, hdr, &h, &key, pos)?;
                    applied += 1;
                }
                good_end = off;
            }
        }
        if !batch.is_empty() && bad.is_none() {
            bad = Some("commit without its last record".into());
        }
        if let Some(why) = bad {
            if last {
                tracing::warn!(
                    "segment {id}: torn tail at offset {good_end} ({why}); discarding {} bytes",
                    buf.len() - good_end
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| io(format!("open {}", p.display()), e))?;
                f.set_len(good_end as u64)
                    .map_err(|e| io(format!("truncate {}", p.display()), e))?;
                f.sync_all()
                    .map_err(|e| io(format!("fsync {}", p.display()), e))?;
            } else {
                tracing::error!(
                    "segment {id}: unreadable from offset {good_end} ({why}); {} bytes skipped",
                    buf.len() - good_end
                );
            }
        }
        if last {
            tail_len = good_end as u64;
        }
    }
    Ok((applied, max_seq, tail_len))
}

/// Opens (creating if needed) the log in `dir` and its index at `idx_path`.
pub fn open(dir: &Path, idx_path: &Path) -> Result<Opened, StoreError> {
    fs::create_dir_all(dir).map_err(|e| io(format!("create {}", dir.display()), e))?;
    let mut ids = list_segments(dir)?;
    // A segment whose header is not ours: the last one may be a creation
    // cut short by a crash (then it holds nothing); any other is an error.
    let mut log_id = None;
    let mut k = 0;
    while k < ids.len() {
        let id = ids[k];
        let p = dir.join(seg_name(id));
        let head = fs::read(&p).map(|b| b[..b.len().min(SEG_HEADER_LEN as usize)].to_vec());
        let head = head.map_err(|e| io(format!("read {}", p.display()), e))?;
        match check_seg_header(&head, id) {
            Some(l) if log_id.is_none() || log_id == Some(l) => {
                log_id = Some(l);
                k += 1;
            }
            Some(l) => {
                return Err(StoreError::Corrupt(format!(
                    "{} belongs to log {l:016x}, not {:016x}",
                    p.display(),
                    log_id.unwrap_or(0)
                )))
            }
            None if k + 1 == ids.len() && k > 0 => {
                tracing::warn!("{}: half-created segment, removing", p.display());
                fs::remove_file(&p).map_err(|e| io(format!("remove {}", p.display()), e))?;
                ids.pop();
            }
            None => {
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
            replay: Pos { seg: 1, off: 0 },
            next_seq: 1,
            table_crc: 0,
        };
        let index = Index::create(idx_path, MIN_CAPACITY, &hdr)?;
        index.flush_header()?;
        return Ok(Opened {
            log_id,
            ids,
            tail_len: SEG_HEADER_LEN,
            next_seq: 1,
            index,
            hdr,
            how: OpenHow::Clean,
        });
    };

    let first = Pos { seg: 0, off: 0 };
    let started = Instant::now();
    let attempt = match Index::open(idx_path) {
        Err(reason) if !idx_path.exists() => {
            Err("index file missing".to_string()).map_err(|r| (r, reason))
        }
        Err(reason) => Err((reason, String::new())),
        Ok((ix, info)) => {
            if info.log_id != log_id {
                Err(("index belongs to another log".to_string(), String::new()))
            } else if info.clean {
                if ix.table_crc() == info.table_crc {
                    Ok((ix, info, true))
                } else {
                    Err(("index table checksum mismatch".to_string(), String::new()))
                }
            } else if info.boot == boot && boot != 0 {
                Ok((ix, info, false))
            } else {
                Err((
                    "index not closed cleanly before the machine restarted".to_string(),
                    String::new(),
                ))
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
            let (records, max_seq, tail_len) =
                replay(dir, &ids, info.replay, &mut ix, idx_path, &hdr)?;
            hdr.next_seq = info.next_seq.max(max_seq + 1);
            hdr.replay = Pos {
                seg: ids.last().copied().unwrap_or(1),
                off: tail_len as u32,
            };
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
                ids,
                tail_len,
                next_seq: hdr.next_seq,
                index: ix,
                hdr,
                how,
            })
        }
        Err((reason, _)) => {
            let total: u64 = ids
                .iter()
                .filter_map(|id| fs::metadata(dir.join(seg_name(*id))).ok())
                .map(|m| m.len())
                .sum();
            // A guess of the record count (4 KiB files are ~4.1 KiB records);
            // the table grows past it if needed and is packed at the end.
            let cap = (total / 512).max(MIN_CAPACITY);
            let tmp = idx_path.with_extension("rebuild");
            let hdr0 = HeaderInfo {
                log_id,
                boot,
                clean: false,
                replay: first,
                next_seq: 1,
                table_crc: 0,
            };
            let mut ix = Index::create(&tmp, cap, &hdr0)?;
            let (records, max_seq, tail_len) = replay(dir, &ids, first, &mut ix, &tmp, &hdr0)?;
            // Pack the table to its normal fill (a rebuild sized it loosely).
            let packed = ix.live * 100 / super::index::TARGET_LOAD_PCT + 1;
            if ix.capacity() > packed.max(MIN_CAPACITY) + packed / 8 {
                rehash(&mut ix, &tmp, &hdr0, 0, None)?;
            }
            let hdr = HeaderInfo {
                next_seq: max_seq + 1,
                replay: Pos {
                    seg: ids.last().copied().unwrap_or(1),
                    off: tail_len as u32,
                },
                ..hdr0
            };
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
                ids,
                tail_len,
                next_seq: hdr.next_seq,
                index: ix,
                hdr,
                how: OpenHow::Rebuilt { reason, records },
            })
        }
    }
}
