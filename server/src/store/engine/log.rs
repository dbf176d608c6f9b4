//! The packed log: append-only segment files `{id:08}.seg` of records (see
//! [`super::record`]), each at most `segment_size` bytes, with a 32-byte
//! segment header (magic, version, segment id, log id, lane).
//!
//! Owns: appending commits, reading records back (in place, through a
//! shared mapping of each segment, so a lookup costs no syscall and no
//! copy), and durability with group commit.
//!
//! **Appends through the mapping.** A lane writes zeros [`WINDOW`] bytes
//! ahead of its appends, with one `pwrite` (the file system reserves their
//! blocks and the page cache holds them in large folios), and maps those
//! pages writable at once (`MADV_POPULATE_WRITE`); a commit is then one
//! copy into the page cache, with no syscall. A full disk or any other
//! error shows in those two calls, never as a `SIGBUS` in the copy, and
//! the commit then falls back to `pwrite`. Records reach the page cache
//! when the copy ends, as with `pwrite`, so a killed process loses
//! nothing, and `fdatasync` covers them. A sealed segment (and every
//! active one at a clean close) is trimmed to its records; after a crash,
//! recovery trims the zeros left after the last record. The zeros ahead
//! are written to disk once if a sync or writeback comes before the
//! records do. A sync write-protects the pages it wrote, and a copy into
//! one then faults, which made a commit followed by a sync 3× slower than
//! with `pwrite` on ext4 without a journal: after a sync, a lane writes
//! the rest of its window with `pwrite` and maps the next one. One fault
//! remains possible: once the kernel has written a
//! page back it write-protects it, and the next copy into it faults; its
//! block is allocated by then, so the fault needs no space, but a failing
//! disk there raises `SIGBUS` and stops the server, as reading a failing
//! page through the mapping already would (a restart recovers the log).
//! That a written-back page needs no new space holds on file systems that
//! write blocks in place; mapped appends are used only there (ext4, XFS,
//! tmpfs: [`super::sys::overwrites_in_place`]), and elsewhere every
//! commit is one `pwrite`.
//! Store bench, 8 threads, medians of 4–5 alternating runs:
//! against one `pwrite` per commit, creates of 4 KiB files 157k → 224k/s
//! (synced 64k → 80k/s), deletes 218k → 343k/s. Allocating the window
//! with `fallocate` instead of writing zeros gained only the deletes: the
//! populate's page faults then allocated, zeroed and converted each page.
//! A sparse window (the file extended with `ftruncate`, each page
//! allocated by the populate's faults) was slower still: creates
//! 173k–194k/s against 193k–242k/s, synced creates 56k–67k/s against
//! 75k–84k/s (three alternating runs each, 2026-12-05).
//!
//! **Lanes.** The log has several writers ([`super::EngineOptions::lanes`]),
//! each appending to a segment of its own, so that commits from several
//! threads are written at once instead of queueing on one lock. A commit
//! takes a free lane, gets its sequence number from a counter shared by
//! all lanes while it holds the lane, and is written in one piece:
//! within a lane (and across its segments, in id order) sequence numbers
//! rise, and a key's commits never overlap (stripe locks), so sequence
//! order is each key's version order. Recovery merges the lanes by
//! sequence number. At open every segment is sealed; each lane starts a new
//! segment at its first commit.
//!
//! Crash ordering: a commit is written with one copy (or one `pwrite`); if
//! a `pwrite` fails (ENOSPC, EIO) the segment is cut back to its previous
//! length, so the log never holds a partial commit that recovery would
//! have to guess about (a copy cut short by a crash is a torn tail).
//! [`Log::sync_to`] makes every commit up to a sequence number durable: one
//! thread runs `fdatasync` for every waiter behind it (group commit), and
//! the directory is synced after a segment was created. Segments are only
//! ever deleted by compaction, after their live records were copied and
//! synced.

use super::record::{self, u32_at, u64_at, Unsealed, REC_HEADER_LEN};
use crate::store::StoreError;
use bytes::Bytes;
use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use memmap2::{Advice, MmapOptions, MmapRaw};
use parking_lot::{Mutex, MutexGuard};
use sealfs_proto::Errno;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// `"SEALSEG1"`: the first bytes of every segment.
pub const SEG_MAGIC: &[u8; 8] = b"SEALSEG1";
/// Format version of segments and records (2: lanes, the check value;
/// 3: the check value is XXH3, not CRC32C).
pub const SEG_VERSION: u32 = 3;
/// Length of the segment header; the first record starts here.
pub const SEG_HEADER_LEN: u64 = 32;
/// Smallest segment size a log takes (a header and one page).
pub const MIN_SEG_LEN: u64 = SEG_HEADER_LEN + 4096;
/// Bytes of a segment a lane writes as zeros and maps writable at a time,
/// ahead of its appends (see [`Seg::write_mapped`]).
const WINDOW: u64 = 1 << 20;
/// What is written ahead (in `.bss`: costs no memory until read, and then
/// only the shared zero page).
static ZEROS: [u8; WINDOW as usize] = [0; WINDOW as usize];
/// Most lanes a log has (the index header has room for this many).
pub const MAX_LANES: usize = 16;

/// Bytes kept preallocated in `dir/reserve` and given up when a delete or
/// compaction finds the disk full, so space can always be freed.
pub const RESERVE_BYTES: u64 = 2 << 20;

/// A position in the log: segment id, byte offset. Orders as the log does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Segment id.
    pub seg: u32,
    /// Byte offset in the segment.
    pub off: u32,
}

impl Pos {
    /// As one integer (segment in the high half).
    pub fn raw(self) -> u64 {
        (u64::from(self.seg) << 32) | u64::from(self.off)
    }

    /// From [`Pos::raw`].
    pub fn from_raw(v: u64) -> Pos {
        Pos {
            seg: (v >> 32) as u32,
            off: v as u32,
        }
    }
}

fn io(what: impl Into<String>, e: std::io::Error) -> StoreError {
    StoreError::io(what, e)
}

/// The name of segment `id`.
pub fn seg_name(id: u32) -> String {
    format!("{id:08}.seg")
}

fn seg_header(id: u32, log_id: u64, lane: u32) -> [u8; SEG_HEADER_LEN as usize] {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEG_MAGIC);
    h[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&id.to_le_bytes());
    h[16..24].copy_from_slice(&log_id.to_le_bytes());
    h[24..28].copy_from_slice(&lane.to_le_bytes());
    h
}

/// The format version in a segment header, if it starts like one.
pub fn seg_header_version(b: &[u8]) -> Option<u32> {
    if b.len() < SEG_HEADER_LEN as usize || &b[0..8] != SEG_MAGIC {
        return None;
    }
    Some(u32_at(b, 8))
}

/// Reads a segment header: its log id and lane, if it is one of ours.
pub fn check_seg_header(b: &[u8], id: u32) -> Option<(u64, u32)> {
    if seg_header_version(b)? != SEG_VERSION || u32_at(b, 12) != id {
        return None;
    }
    Some((u64_at(b, 16), u32_at(b, 24)))
}

/// The ids of the segment files in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let mut ids = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| io(format!("list {}", dir.display()), e))? {
        let ent = ent.map_err(|e| io(format!("list {}", dir.display()), e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// One open segment: its file (syncs, and appends when the mapping cannot
/// take them) and a shared mapping of `map_len` bytes, through which
/// published records are read (no syscall, no copy) and, in a segment this
/// log created, new records are written (see [`Log::append`]).
pub(crate) struct Seg {
    id: u32,
    file: File,
    /// Shared with the views handed out of it (see [`Seg::views`]), which
    /// may outlive the segment.
    map: Option<Arc<MmapRaw>>,
    /// Once sealed (no byte of it changes again): [`VIEW_SHARDS`] views of
    /// its records. A shared read takes a slice of one of them, picked by
    /// thread, so that reads on two cores count their references on
    /// different cache lines (each view's count sits in its owner's
    /// allocation, aligned to a line pair: [`SealedBytes`]) and make no
    /// allocation.
    views: OnceLock<Box<[Bytes]>>,
    /// Created by this log: writable through `map`. Segments found at open
    /// are sealed and mapped read-only.
    writable: bool,
    /// Bytes written (and not cut back): reads through the map stay below.
    len: AtomicU64,
    /// Largest length appends take it to: the log's segment size when it
    /// was created ([`Log::set_segment_size`]), the length it was found
    /// with at open.
    cap: u64,
    /// Sequence number of its first record (`u64::MAX` while empty).
    first_seq: AtomicU64,
    /// At least the sequence number of its last record.
    max_seq: AtomicU64,
}

/// Bytes of the log read where they lie ([`Log::in_place`]).
pub struct InPlace<'a> {
    /// The bytes asked for.
    pub bytes: &'a [u8],
    /// Their segment and offset in it, when `bytes` lie in its mapping
    /// (else they were read into a buffer).
    seg: Option<(&'a Arc<Seg>, usize)>,
}

impl InPlace<'_> {
    /// `part` (a part of [`Self::bytes`]) as [`Bytes`] that outlive the
    /// call: a view of the segment's mapping that keeps the segment
    /// mapped, so a read is handed to the reply without a copy; a copy
    /// when the bytes were read into a buffer.
    pub fn share(&self, part: &[u8]) -> Bytes {
        let base = self.bytes.as_ptr() as usize;
        let at = (part.as_ptr() as usize).wrapping_sub(base);
        let inside = at <= self.bytes.len() && part.len() <= self.bytes.len() - at;
        match self.seg {
            Some((seg, off)) if inside => {
                let (start, end) = (off + at, off + at + part.len());
                if let Some(views) = seg.views.get() {
                    let view = &views[view_shard() % views.len()];
                    if end <= view.len() {
                        return view.slice(start..end);
                    }
                }
                Bytes::from_owner(SegBytes::Mapped(Arc::clone(seg), start..end))
            }
            _ => Bytes::copy_from_slice(part),
        }
    }
}

/// Views a sealed segment keeps ([`Seg::views`]).
const VIEW_SHARDS: usize = 16;

/// The view shard of the calling thread: threads take them in turn.
fn view_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    SHARD.with(|s| *s)
}

/// The first `len` bytes of a sealed segment's mapping: the owner behind
/// its views. Holding the mapping (not the segment) keeps it mapped after
/// the segment is closed or compacted away, and makes no cycle. Aligned
/// to 128 bytes (two cache lines, what the adjacent-line prefetcher pairs)
/// so that the reference count `Bytes` keeps beside each owner is alone on
/// its lines: the views' owners are allocated one after the other.
#[repr(align(128))]
struct SealedBytes {
    map: Arc<MmapRaw>,
    len: usize,
}

impl AsRef<[u8]> for SealedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` is at most the mapping's length ([`Seg::seal_views`]
        // checks it), and the mapping lives as long as `self.map`. The
        // bytes are a sealed segment's published records: nothing writes
        // them again, and its file is never cut below them (sealing trims
        // only the zeros past them; compaction unlinks the file, which
        // leaves its pages mapped), so no access faults.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) }
    }
}

impl Seg {
    /// Opens the segment's mapping over `map_len` bytes, read-write if
    /// `writable` (the file may still be shorter: only bytes below its
    /// length are ever touched, see [`Log::with_bytes`] and
    /// [`Log::append`]). A failed mapping falls back to `pread`/`pwrite`.
    fn new(id: u32, file: File, len: u64, map_len: u64, seqs: (u64, u64), writable: bool) -> Seg {
        let map = usize::try_from(map_len).ok().and_then(|len| {
            let mut o = MmapOptions::new();
            o.len(len);
            if writable {
                o.map_raw(&file).ok()
            } else {
                o.map_raw_read_only(&file).ok()
            }
        });
        let seg = Seg {
            id,
            file,
            map: map.map(Arc::new),
            views: OnceLock::new(),
            writable,
            len: AtomicU64::new(len),
            cap: map_len,
            first_seq: AtomicU64::new(seqs.0),
            max_seq: AtomicU64::new(seqs.1),
        };
        if !writable {
            seg.seal_views();
        }
        seg
    }

    /// Makes the views of a segment no byte of which changes again (see
    /// [`Seg::views`]).
    fn seal_views(&self) {
        let Some(map) = &self.map else { return };
        let len = self.len.load(Ordering::Acquire);
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        if len > map.len() {
            return;
        }
        self.views.get_or_init(|| {
            (0..VIEW_SHARDS)
                .map(|_| {
                    Bytes::from_owner(SealedBytes {
                        map: Arc::clone(map),
                        len,
                    })
                })
                .collect()
        });
    }

    /// The bytes `start..end` of the segment, through its mapping, if
    /// they lie in it and below its length (published: never written
    /// again).
    fn bytes(&self, start: usize, end: usize) -> Option<&[u8]> {
        let map = self.map.as_ref()?;
        if start > end || end > map.len() || end as u64 > self.len.load(Ordering::Acquire) {
            return None;
        }
        // SAFETY: the range lies in the mapping, which lives as long as
        // `self`, and below `len`: bytes the lane wrote before it published
        // `len` (Release, read here with Acquire) and never writes again.
        // The segment files belong to this store alone and are never
        // truncated below `len` while open (a failed append cuts back only
        // its own unpublished bytes, a sealed segment is trimmed to `len`),
        // so no page past the end of the file is touched (`SIGBUS`).
        Some(unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), end - start) })
    }

    /// Writes `buf` at offset `at` through the mapping, first making the
    /// range ready if it passes `w.ready` (the end of what the lane made
    /// ready so far in this segment, moved on here): zeros written ahead,
    /// [`WINDOW`] bytes at a time (so the file system has reserved their
    /// blocks and no store can meet a full disk), and those pages mapped
    /// writable (so an error comes back here, not as a `SIGBUS` in the
    /// copy). `false`, with nothing of `buf` written, when the segment is
    /// not writable, the range is past the mapping or cannot be made
    /// ready: the caller writes with `pwrite` instead. The caller holds the
    /// segment's lane, and `at` is its end: nothing at or past it is a
    /// record.
    ///
    /// A sync writes the pages back and write-protects them, and a copy
    /// into such a page faults; measured on ext4 without a journal, a
    /// commit copied in and then synced took 600 µs against 180 µs with
    /// `pwrite` (and 136 µs with `pwrite` into zeros written ahead, as the
    /// file's size does not change). So after a sync (`sync_gen` no longer
    /// the window's), the rest of the window is written with `pwrite`, and
    /// the next window is mapped again.
    ///
    /// `enabled`: the log's switch, turned off here for good when the
    /// kernel has no `MADV_POPULATE_WRITE` (before 5.14).
    fn write_mapped(
        &self,
        enabled: &AtomicBool,
        w: &mut Window,
        sync_gen: u64,
        at: u64,
        buf: &[u8],
    ) -> bool {
        let Some(map) = self
            .map
            .as_ref()
            .filter(|_| self.writable && enabled.load(Ordering::Relaxed))
        else {
            return false;
        };
        let end = at + buf.len() as u64;
        if end > map.len() as u64 || at < self.len.load(Ordering::Relaxed) {
            return false;
        }
        if end <= w.ready && w.gen != sync_gen {
            return false;
        }
        if end > w.ready {
            let from = w.ready.max(at);
            let to = end.max(from + WINDOW).min(map.len() as u64);
            let mut off = from;
            while off < to {
                let n = (to - off).min(WINDOW);
                if self.file.write_all_at(&ZEROS[..n as usize], off).is_err() {
                    return false;
                }
                off += n;
            }
            // From `at`, not `from`: after a sync the pages below `w.ready`
            // are write-protected again, and must not fault in the copy.
            let len = (to - at) as usize;
            if let Err(e) = map.advise_range(Advice::PopulateWrite, at as usize, len) {
                if e.raw_os_error() == Some(libc::EINVAL) {
                    tracing::warn!(
                        "{}: the kernel cannot populate a mapping ({e}); \
                         the log appends with pwrite",
                        seg_name(self.id)
                    );
                    enabled.store(false, Ordering::Relaxed);
                }
                return false;
            }
            *w = Window {
                ready: to,
                gen: sync_gen,
            };
        }
        // SAFETY: `at..end` lies in the mapping (checked above) and below
        // `w.ready`: written (zeros, their blocks reserved) and populated
        // writable, so the copy does not fault on a full disk. It lies at
        // or above `len`, so no reader reads there until the lane publishes
        // `len` past it, and only the lane's holder (the caller) writes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.as_ptr(),
                map.as_mut_ptr().add(at as usize),
                buf.len(),
            )
        };
        true
    }
}

/// Bytes of a segment (see [`Log::read_segment`], [`InPlace::share`]).
pub enum SegBytes {
    /// This range of the segment's mapping, checked to lie below its
    /// published length when made (it never shrinks below while the
    /// segment lives, see [`Seg::bytes`]); holding the segment keeps it
    /// mapped.
    Mapped(Arc<Seg>, std::ops::Range<usize>),
    /// A copy.
    Read(Vec<u8>),
}

impl std::ops::Deref for SegBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // Never empty in its place: compaction would take a segment
            // read as empty for one without live records.
            SegBytes::Mapped(s, r) => s
                .bytes(r.start, r.end)
                .expect("a segment range checked when made stays readable"),
            SegBytes::Read(b) => b,
        }
    }
}

impl AsRef<[u8]> for SegBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// One writer of the log: the lane itself, held while a commit is written,
/// and the bookkeeping of its commits, under a lock of its own that is
/// never held across I/O (publishing a commit does not wait for the lane's
/// next write).
struct LaneSlot {
    w: Mutex<Lane>,
    track: Mutex<Track>,
    /// The id of the segment it appends to (0: none), readable without
    /// waiting for a write.
    active: AtomicU32,
}

/// The writing side of a lane.
struct Lane {
    lane: u32,
    /// The segment it appends to (none until its first commit after open).
    seg: Option<Arc<Seg>>,
    /// How far `seg` is ready for stores through its mapping.
    window: Window,
}

/// What of a lane's segment is ready for stores through its mapping (see
/// [`Seg::write_mapped`]).
#[derive(Clone, Copy, Default)]
struct Window {
    /// Zeros are written and mapped writable up to here.
    ready: u64,
    /// [`Log::sync_gen`] when they were mapped.
    gen: u64,
}

/// A lane's commits not yet covered by a checkpoint.
#[derive(Default)]
struct Track {
    /// Commits numbered but not yet published to the index (with a count:
    /// compaction and commits never share one).
    pending: BTreeMap<u64, u32>,
    /// Commits numbered since the last checkpoint (sequence number, start),
    /// in sequence order: where a replay of this lane must start.
    recent: VecDeque<(u64, Pos)>,
}

/// Where a commit landed.
pub struct Appended {
    /// Segment of every record.
    pub seg: u32,
    /// Offset of each record.
    pub offs: Vec<u32>,
    /// Its sequence number (for [`Log::sync_to`] and [`Log::published`]).
    pub seq: u64,
    /// The lane that wrote it.
    lane: usize,
}

/// What a replay after a crash must cover: every commit whose sequence
/// number is at least `seq`, which lie in each lane from its position on
/// and in every segment newer than `max_seg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayPoint {
    /// Every commit below this sequence number is in the index.
    pub seq: u64,
    /// Segments above this id were created after the checkpoint.
    pub max_seg: u32,
    /// Per lane: where its commits from `seq` on start (`None`: the lane
    /// had no segment).
    pub lanes: [Option<Pos>; MAX_LANES],
}

/// A segment found at open: id, lane, valid length, first sequence number.
#[derive(Clone, Copy, Debug)]
pub struct SegInfo {
    /// Segment id.
    pub id: u32,
    /// Lane that wrote it.
    pub lane: u32,
    /// Valid length (recovery cut any torn tail).
    pub len: u64,
    /// Sequence number of its first record (`u64::MAX`: none).
    pub first_seq: u64,
    /// At least the sequence number of its last record.
    pub max_seq: u64,
}

/// The log of one engine.
pub struct Log {
    dir: PathBuf,
    log_id: u64,
    /// The size new segments roll at ([`Log::set_segment_size`]).
    seg_size: AtomicU64,
    lanes: Box<[LaneSlot]>,
    next_seg: AtomicU32,
    next_seq: AtomicU64,
    /// The open segments. Read on every lookup by every thread, changed
    /// only when a segment is created or deleted: a sharded lock, whose
    /// readers do not share a cache line.
    files: ShardedLock<BTreeMap<u32, Arc<Seg>>>,
    /// Sealed segments not yet synced.
    unsynced: Mutex<Vec<Arc<Seg>>>,
    /// A segment was created or deleted since the last directory sync.
    dir_dirty: AtomicBool,
    /// Every commit below this sequence number is durable.
    synced: Mutex<u64>,
    /// Syncs started: pages mapped for appends before one are
    /// write-protected again (see [`Seg::write_mapped`]).
    sync_gen: AtomicU64,
    /// Appends go through the segments' mappings: the file system writes
    /// in place ([`super::sys::overwrites_in_place`]) and the kernel can
    /// populate a mapping.
    mapped_appends: AtomicBool,
    /// The sync marker file (see [`read_sync_marker`]), when kept.
    marker: Option<File>,
    /// This boot, for the marker.
    boot: u64,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's place in the order threads first appended in.
    static THREAD_ORDINAL: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// The name of the sync marker file in a log's directory.
pub const SYNC_MARKER: &str = "synced";

/// The sync marker: after each group commit's `fdatasync`, the sequence
/// number below which every commit is durable and the boot that wrote it,
/// written and synced into `synced` (two u64 LE and their CRC32C). After a
/// power loss (the marker is from another boot) the lanes are each durable
/// up to different points; recovery keeps every commit below the marker
/// and, above it, only the gap-free run of sequence numbers, so a server
/// recovers a prefix of its commits in sequence order.
pub fn read_sync_marker(dir: &Path) -> Option<SyncMarker> {
    let b = fs::read(dir.join(SYNC_MARKER)).ok()?;
    if b.len() != 20 {
        return None;
    }
    if crc32c::crc32c(&b[..16]) != u32_at(&b, 16) {
        return None;
    }
    Some(SyncMarker {
        durable_below: u64_at(&b, 0),
        boot: u64_at(&b, 8),
    })
}

/// What the sync marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncMarker {
    /// Every commit numbered below this is durable.
    pub durable_below: u64,
    /// The boot that wrote it (see [`super::sys::boot_id`]).
    pub boot: u64,
}

impl Log {
    /// Opens the log over existing segments `segs` (ascending ids, checked
    /// by recovery), all sealed, with `lanes` writers; `marker`: keep the
    /// sync marker (for a log made durable lazily).
    pub fn open(
        dir: &Path,
        log_id: u64,
        segs: &[SegInfo],
        next_seq: u64,
        seg_size: u64,
        lanes: usize,
        marker: bool,
    ) -> Result<Log, StoreError> {
        let marker = if marker {
            let p = dir.join(SYNC_MARKER);
            Some(
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&p)
                    .map_err(|e| io(format!("open {}", p.display()), e))?,
            )
        } else {
            let _ = fs::remove_file(dir.join(SYNC_MARKER));
            None
        };
        let seg_size = seg_size.max(MIN_SEG_LEN);
        let mut files = BTreeMap::new();
        for s in segs {
            let p = dir.join(seg_name(s.id));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(|e| io(format!("open {}", p.display()), e))?;
            files.insert(
                s.id,
                Arc::new(Seg::new(
                    s.id,
                    f,
                    s.len,
                    s.len,
                    (s.first_seq, s.max_seq),
                    false,
                )),
            );
        }
        let lanes = lanes.clamp(1, MAX_LANES);
        let log = Log {
            dir: dir.to_path_buf(),
            log_id,
            seg_size: AtomicU64::new(seg_size),
            lanes: (0..lanes)
                .map(|l| LaneSlot {
                    w: Mutex::new(Lane {
                        lane: l as u32,
                        seg: None,
                        window: Window::default(),
                    }),
                    track: Mutex::new(Track::default()),
                    active: AtomicU32::new(0),
                })
                .collect(),
            next_seg: AtomicU32::new(segs.last().map_or(1, |s| s.id + 1)),
            next_seq: AtomicU64::new(next_seq),
            files: ShardedLock::new(files),
            unsynced: Mutex::new(Vec::new()),
            dir_dirty: AtomicBool::new(false),
            synced: Mutex::new(0),
            sync_gen: AtomicU64::new(0),
            mapped_appends: AtomicBool::new(super::sys::overwrites_in_place(dir)),
            marker,
            boot: super::sys::boot_id(),
        };
        log.ensure_reserve();
        Ok(log)
    }

    /// The size segments roll at from now on (at least [`MIN_SEG_LEN`]):
    /// segments created from now on, and an active segment already past
    /// it at its next append (see [`Log::append`]).
    pub fn set_segment_size(&self, n: u64) {
        self.seg_size.store(n.max(MIN_SEG_LEN), Ordering::Relaxed);
    }

    /// The size new segments roll at.
    pub fn segment_size(&self) -> u64 {
        self.seg_size.load(Ordering::Relaxed)
    }

    /// Appends with one `pwrite` per commit from now on.
    pub fn no_mapped_appends(&self) {
        self.mapped_appends.store(false, Ordering::Relaxed);
    }

    fn files(&self) -> ShardedLockReadGuard<'_, BTreeMap<u32, Arc<Seg>>> {
        // A panic while the table was held leaves it whole (one insert or
        // remove): go on with it.
        self.files
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn files_mut(&self) -> ShardedLockWriteGuard<'_, BTreeMap<u32, Arc<Seg>>> {
        self.files
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-creates the space reserve if it is gone (best effort).
    pub fn ensure_reserve(&self) {
        let p = self.dir.join("reserve");
        if p.exists() {
            return;
        }
        let made = File::create(&p).and_then(|f| super::sys::preallocate(&f, RESERVE_BYTES));
        if made.is_err() {
            let _ = fs::remove_file(&p);
        }
    }

    /// Deletes the space reserve so that a commit that frees space can be
    /// written on a full disk; whether there was one to give up.
    fn give_up_reserve(&self) -> bool {
        let gone = fs::remove_file(self.dir.join("reserve")).is_ok();
        if gone {
            tracing::warn!(
                "{}: disk full; using the space reserve to free space",
                self.dir.display()
            );
        }
        gone
    }

    /// The calling thread's own lane (threads are dealt lanes in turn, so
    /// a thread keeps appending to one segment and concurrent threads
    /// spread), else the first free one, else its own after a short spin.
    fn take_lane(&self) -> (usize, MutexGuard<'_, Lane>) {
        let n = self.lanes.len();
        let own = THREAD_ORDINAL.with(|o| *o) % n;
        if let Some(g) = self.lanes[own].w.try_lock() {
            return (own, g);
        }
        for (l, lane) in self.lanes.iter().enumerate() {
            if let Some(g) = lane.w.try_lock() {
                return (l, g);
            }
        }
        (own, lock_briefly(&self.lanes[own].w))
    }

    /// Appends one commit: `encode(buf)` writes its records into `buf`
    /// (see [`record::encode_unsealed`]); they are sealed with the commit's
    /// sequence number under the lane. The commit is registered as pending
    /// until [`Log::published`].
    /// `frees`: the commit only frees space (deletes, compaction), so it may
    /// use the reserve when the disk is full.
    pub fn append(
        &self,
        frees: bool,
        encode: impl FnOnce(&mut Vec<u8>) -> Vec<Unsealed>,
    ) -> Result<Appended, StoreError> {
        let mut buf = Vec::new();
        let recs = encode(&mut buf);
        let n = buf.len() as u64;
        if n + SEG_HEADER_LEN > u64::from(u32::MAX) {
            return Err(StoreError::io(
                "append",
                std::io::Error::from_raw_os_error(libc::EFBIG),
            ));
        }
        let (li, lane) = self.take_lane();
        match self.append_on(li, lane, frees, &mut buf, &recs) {
            // This lane's segment or its next one met a full disk, but
            // another lane may still have room written ahead of its
            // appends. The writer gets ENOSPC only when no lane has room,
            // so that the next writer meets the same full disk rather than
            // whichever lane happened to be free (the lanes are tried one
            // at a time, each after the last one was let go).
            Err(e) if e.errno() == Errno::ENOSPC => {
                for l in (0..self.lanes.len()).filter(|&l| l != li) {
                    match self.append_on(l, self.lanes[l].w.lock(), frees, &mut buf, &recs) {
                        Err(e2) if e2.errno() == Errno::ENOSPC => {}
                        r => return r,
                    }
                }
                Err(e)
            }
            r => r,
        }
    }

    /// [`Log::append`] on lane `li` (held): the encoded commit `buf` of
    /// records `recs`, sealed here with a new sequence number.
    fn append_on(
        &self,
        li: usize,
        mut lane: MutexGuard<'_, Lane>,
        frees: bool,
        buf: &mut [u8],
        recs: &[Unsealed],
    ) -> Result<Appended, StoreError> {
        let n = buf.len() as u64;
        let seg = match &lane.seg {
            // A segment rolls at the size it was created for, or sooner
            // if the log's segment size shrank since (its records can be
            // compacted only once it is sealed).
            Some(s) if s.len.load(Ordering::Relaxed) + n <= s.cap.min(self.segment_size()) => {
                s.clone()
            }
            Some(s) if s.len.load(Ordering::Relaxed) <= SEG_HEADER_LEN => s.clone(),
            _ => match self.roll(&mut lane) {
                Err(e) if frees && e.errno() == Errno::ENOSPC && self.give_up_reserve() => {
                    self.roll(&mut lane)?
                }
                r => r?,
            },
        };
        let at = seg.len.load(Ordering::Relaxed);
        let start = Pos {
            seg: seg.id,
            off: at as u32,
        };
        // Numbered and registered in one step, so a checkpoint that read
        // the counter first finds every smaller number here.
        let seq = {
            let mut t = self.lanes[li].track.lock();
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
            *t.pending.entry(seq).or_insert(0) += 1;
            t.recent.push_back((seq, start));
            seq
        };
        for r in recs {
            record::seal(buf, r, seq);
        }
        let gen = self.sync_gen.load(Ordering::Relaxed);
        let mapped = seg.write_mapped(&self.mapped_appends, &mut lane.window, gen, at, buf);
        if let Err(mut e) = if mapped {
            Ok(())
        } else {
            seg.file.write_all_at(buf, at)
        } {
            // Never leave a partial commit behind: cut back to the old end.
            let _ = seg.file.set_len(at);
            lane.window.ready = lane.window.ready.min(at);
            let full = e.raw_os_error() == Some(libc::ENOSPC);
            if full && frees && self.give_up_reserve() {
                match seg.file.write_all_at(buf, at) {
                    Ok(()) => e = std::io::Error::from_raw_os_error(0),
                    Err(e2) => {
                        let _ = seg.file.set_len(at);
                        e = e2;
                    }
                }
            }
            if e.raw_os_error() != Some(0) {
                let mut t = self.lanes[li].track.lock();
                t.pending.remove(&seq);
                if t.recent.back().is_some_and(|r| r.0 == seq) {
                    t.recent.pop_back();
                }
                return Err(io(format!("append to {}", seg_name(seg.id)), e));
            }
        }
        seg.len.store(at + n, Ordering::Release);
        if seg.first_seq.load(Ordering::Relaxed) == u64::MAX {
            seg.first_seq.store(seq, Ordering::Relaxed);
        }
        seg.max_seq.store(seq, Ordering::Relaxed);
        drop(lane);
        Ok(Appended {
            seg: seg.id,
            offs: recs.iter().map(|r| (at + r.at as u64) as u32).collect(),
            seq,
            lane: li,
        })
    }

    /// The commit is now in the index.
    pub fn published(&self, app: &Appended) {
        let mut t = self.lanes[app.lane].track.lock();
        if let Some(c) = t.pending.get_mut(&app.seq) {
            *c -= 1;
            if *c == 0 {
                t.pending.remove(&app.seq);
            }
        }
    }

    /// Where a replay after a crash must start, and forgets what lies
    /// before it (the background checkpoint).
    pub fn replay_point(&self) -> ReplayPoint {
        // Every commit numbered below `n` was numbered and registered in
        // one step before this load, so its lane shows it unless published.
        let n = self.next_seq.load(Ordering::SeqCst);
        let mut seq = n;
        for l in self.lanes.iter() {
            if let Some((&s, _)) = l.track.lock().pending.first_key_value() {
                seq = seq.min(s);
            }
        }
        let max_seg = self.next_seg.load(Ordering::SeqCst).saturating_sub(1);
        let mut lanes = [None; MAX_LANES];
        for (i, slot) in self.lanes.iter().enumerate() {
            let l = slot.w.lock();
            let mut t = slot.track.lock();
            while t.recent.front().is_some_and(|&(s, _)| s < seq) {
                t.recent.pop_front();
            }
            lanes[i] = match (t.recent.front(), &l.seg) {
                (Some(&(_, p)), _) => Some(p),
                (None, Some(s)) => Some(Pos {
                    seg: s.id,
                    off: s.len.load(Ordering::Relaxed) as u32,
                }),
                (None, None) => None,
            };
        }
        ReplayPoint {
            seq,
            max_seg,
            lanes,
        }
    }

    /// Starts a new segment for `lane` (its old one, if any, is sealed).
    fn roll(&self, lane: &mut Lane) -> Result<Arc<Seg>, StoreError> {
        let id = self.next_seg.fetch_add(1, Ordering::SeqCst);
        // Created before the old one is sealed: when the disk is full, the
        // lane keeps its segment and the zeros written ahead in it, so
        // the failure gives no space back and the next writer meets the
        // same full disk (a trim first let a write after an ENOSPC
        // succeed in the space the failed one had freed). A crash between
        // the two leaves zeros at the end of a segment that is not its
        // lane's last, which recovery trims.
        let file = create_segment(&self.dir, id, self.log_id, lane.lane)?;
        if let Some(old) = lane.seg.take() {
            self.seal(old);
        }
        lane.window = Window::default();
        let f = Arc::new(Seg::new(
            id,
            file,
            SEG_HEADER_LEN,
            self.segment_size(),
            (u64::MAX, 0),
            true,
        ));
        // Active before it is listed, so compaction never takes it for an
        // empty sealed segment.
        self.lanes[lane.lane as usize]
            .active
            .store(id, Ordering::SeqCst);
        self.files_mut().insert(id, f.clone());
        lane.seg = Some(f.clone());
        self.dir_dirty.store(true, Ordering::SeqCst);
        Ok(f)
    }

    /// A lane is done with `seg`: its file is cut to its records (the
    /// zeros written ahead of appends are given back) and it waits for
    /// the next sync.
    fn seal(&self, seg: Arc<Seg>) {
        seg.seal_views();
        if seg.writable {
            if let Err(e) = seg.file.set_len(seg.len.load(Ordering::Relaxed)) {
                // Harmless: the zeros after the last record are taken for
                // the end by recovery (which trims them when it reads the
                // segment) and by compaction.
                tracing::warn!("trim {}: {e}", seg_name(seg.id));
            }
        }
        self.unsynced.lock().push(seg);
    }

    /// Seals every lane's segment now (compaction never copies into a
    /// segment it is emptying; tests use it to make sealed segments; a
    /// clean close, so that every segment file ends with its last record).
    pub fn seal_active(&self) {
        for l in self.lanes.iter() {
            let mut w = l.w.lock();
            if let Some(old) = w.seg.take() {
                self.seal(old);
            }
            w.window = Window::default();
            l.active.store(0, Ordering::SeqCst);
        }
    }

    /// Whether a lane appends to segment `id`.
    pub fn is_active(&self, id: u32) -> bool {
        self.lanes
            .iter()
            .any(|l| l.active.load(Ordering::SeqCst) == id)
    }

    /// Makes every commit numbered up to `seq` durable (group commit:
    /// whoever syncs, syncs everything written so far, for every waiter).
    pub fn sync_to(&self, seq: u64) -> Result<(), StoreError> {
        let mut synced = self.synced.lock();
        // A deleted segment's directory entry still to sync is not covered
        // by any sequence number: sync it even when nothing new was written.
        if *synced > seq && !self.dir_dirty.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Commits numbered below `upto` are written once their lane is
        // free: take each lane's segment after that, then the segments
        // sealed so far.
        let upto = self.next_seq.load(Ordering::SeqCst);
        let mut files: Vec<Arc<Seg>> = Vec::new();
        for l in self.lanes.iter() {
            if let Some(s) = &l.w.lock().seg {
                files.push(s.clone());
            }
        }
        files.append(&mut self.unsynced.lock());
        let dir_dirty = self.dir_dirty.swap(false, Ordering::SeqCst);
        self.sync_gen.fetch_add(1, Ordering::Relaxed);
        let res = (|| {
            for f in &files {
                f.file.sync_data().map_err(|e| io("fdatasync segment", e))?;
            }
            if dir_dirty {
                sync_dir(&self.dir)?;
            }
            if let Some(m) = &self.marker {
                let mut b = [0u8; 20];
                b[..8].copy_from_slice(&upto.to_le_bytes());
                b[8..16].copy_from_slice(&self.boot.to_le_bytes());
                let crc = crc32c::crc32c(&b[..16]);
                b[16..].copy_from_slice(&crc.to_le_bytes());
                m.write_all_at(&b, 0)
                    .and_then(|()| m.sync_data())
                    .map_err(|e| io("write the sync marker", e))?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            self.unsynced.lock().extend(files);
            if dir_dirty {
                self.dir_dirty.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        *synced = upto;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        let n = self.next_seq.load(Ordering::SeqCst);
        self.sync_to(n.saturating_sub(1))
    }

    /// Runs `f` on the `len` bytes at `pos`: a slice of the segment's
    /// mapping, without a copy (or a buffer read with `pread` when the
    /// range is past the mapping). `f` runs under the segment table's read
    /// lock, so it must be short.
    pub fn with_bytes<T>(
        &self,
        pos: Pos,
        len: u32,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, StoreError> {
        self.in_place(pos, len, |b| f(b.bytes))
    }

    /// As [`Self::with_bytes`], but `f` may also keep a part of the bytes
    /// beyond the call, without a copy ([`InPlace::share`]).
    pub fn in_place<T>(
        &self,
        pos: Pos,
        len: u32,
        f: impl FnOnce(InPlace<'_>) -> T,
    ) -> Result<T, StoreError> {
        let files = self.files();
        let seg = files.get(&pos.seg).ok_or_else(|| {
            StoreError::Corrupt(format!("index points at missing segment {}", pos.seg))
        })?;
        let (start, end) = (pos.off as usize, pos.off as usize + len as usize);
        if let Some(b) = seg.bytes(start, end) {
            return Ok(f(InPlace {
                bytes: b,
                seg: Some((seg, start)),
            }));
        }
        let seg = seg.clone();
        drop(files);
        let mut buf = vec![0u8; len as usize];
        seg.file
            .read_exact_at(&mut buf, u64::from(pos.off))
            .map_err(|e| io(format!("read {} at {}", seg_name(pos.seg), pos.off), e))?;
        Ok(f(InPlace {
            bytes: &buf,
            seg: None,
        }))
    }

    /// Ids of all segments, ascending.
    pub fn segments(&self) -> Vec<u32> {
        self.files().keys().copied().collect()
    }

    /// Bytes of all segments.
    pub fn total_len(&self) -> u64 {
        self.files()
            .values()
            .map(|s| s.len.load(Ordering::Acquire))
            .sum()
    }

    /// Length of a segment (0 if gone).
    pub fn seg_len(&self, id: u32) -> u64 {
        self.files()
            .get(&id)
            .map_or(0, |s| s.len.load(Ordering::Acquire))
    }

    /// The sequence numbers each segment holds: its first record's
    /// (`u64::MAX` for an empty segment) and at least its last one's.
    pub fn seq_ranges(&self) -> BTreeMap<u32, (u64, u64)> {
        self.files()
            .iter()
            .map(|(&id, s)| {
                let r = (
                    s.first_seq.load(Ordering::Relaxed),
                    s.max_seq.load(Ordering::Relaxed),
                );
                (id, r)
            })
            .collect()
    }

    /// The whole content of a segment: its mapping (no copy), or a copy
    /// read with `pread` when it has none.
    pub fn read_segment(&self, id: u32) -> Result<SegBytes, StoreError> {
        let seg = self
            .files()
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("segment {id} is not open")))?;
        let len = seg.len.load(Ordering::Acquire) as usize;
        if seg.bytes(0, len).is_some() {
            return Ok(SegBytes::Mapped(seg, 0..len));
        }
        let mut b = vec![0u8; len];
        seg.file
            .read_exact_at(&mut b, 0)
            .map_err(|e| io(format!("read {}", seg_name(id)), e))?;
        Ok(SegBytes::Read(b))
    }

    /// Deletes a sealed segment (compaction, after its live records were
    /// copied and synced).
    pub fn delete_segment(&self, id: u32) -> Result<(), StoreError> {
        if self.is_active(id) {
            return Err(StoreError::Corrupt(
                "refusing to delete an active segment".into(),
            ));
        }
        self.files_mut().remove(&id);
        self.unsynced.lock().retain(|s| s.id != id);
        let p = self.dir.join(seg_name(id));
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("remove {}", p.display()), e)),
        }
        self.dir_dirty.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The next sequence number (persisted in the index at close).
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }
}

/// The sequence number of the first record of a segment file, if it has one.
pub fn read_first_seq(f: &File) -> Option<u64> {
    let mut h = [0u8; REC_HEADER_LEN];
    f.read_exact_at(&mut h, SEG_HEADER_LEN).ok()?;
    record::decode_header(&h).map(|h| h.seq)
}

fn create_segment(dir: &Path, id: u32, log_id: u64, lane: u32) -> Result<File, StoreError> {
    let p = dir.join(seg_name(id));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(|e| io(format!("create {}", p.display()), e))?;
    if let Err(e) = f.write_all_at(&seg_header(id, log_id, lane), 0) {
        let _ = fs::remove_file(&p);
        return Err(io(format!("write {}", p.display()), e));
    }
    Ok(f)
}

/// `fsync` of a directory.
pub fn sync_dir(p: &Path) -> Result<(), StoreError> {
    File::open(p)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("fsync {}", p.display()), e))
}

/// How long a committer spins (yielding its core) for the writer lock
/// before it sleeps on it. The lock is held for one copy or `pwrite`, a few µs, but
/// its holder is often preempted on a small machine, and a sleeping waiter
/// costs a futex wake-up (about 50 µs on the 2-core machine this was
/// measured on). Store bench, 100 000 creates of 4 KiB files on ext4: 2
/// threads 90–96k/s with a plain lock, 101–115k/s spinning 50 µs,
/// 147–148k/s spinning up to 1 ms; 8 threads 117–150k/s → 157k/s.
const WRITER_SPIN: std::time::Duration = std::time::Duration::from_micros(1000);

/// Takes `m`, spinning with `yield` for up to [`WRITER_SPIN`] first.
fn lock_briefly<T>(m: &Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    if let Some(g) = m.try_lock() {
        return g;
    }
    let start = std::time::Instant::now();
    loop {
        std::thread::yield_now();
        if let Some(g) = m.try_lock() {
            return g;
        }
        if start.elapsed() >= WRITER_SPIN {
            return m.lock();
        }
    }
}
