//! The engine: a key-value store over the packed log ([`super::log`]) and
//! the mapped index ([`super::index`]). Keys are byte strings; each live key
//! has one index slot that points at its newest record.
//!
//! Crash ordering of a commit, under the stripe locks of its keys:
//! 1. append every record of the commit in one write (the last one marked
//!    COMMIT);
//! 2. if the caller asked for durability, wait for the group commit's
//!    `fdatasync` to cover it;
//! 3. publish the slots (fields, then the state word) under the index lock,
//!    all of the commit at once, so readers never see half a commit;
//! 4. mark the commit published (it no longer needs replay).
//!
//! A key's commits never overlap (stripe locks from 1 to 3), so log order
//! is version order, which recovery and compaction rely on.

use super::index::{group_bits, slot_hash, HeaderInfo, Index, Probe, Slot, MAX_TAG};
use super::log::{InPlace, Log};
use super::record::{
    self, RecHeader, FLAG_COMMIT, KIND_DEL, KIND_PUT, MAX_KEY_LEN, REC_HEADER_LEN,
};
use super::recovery::{self, OpenHow};
use crate::store::StoreError;
use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use parking_lot::{Mutex, MutexGuard};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Number of key stripe locks.
const STRIPES: usize = 1024;

/// [`Inner::room`] must exceed a commit's inserts by this much for the
/// commit to skip the index lock when it checks for room: more than the
/// inserts of all the commits that are between that check and their
/// publish at once (a few per server thread). Past the load limit the
/// table still has a tenth of its slots free, at least 102.
const ROOM_SLACK: u64 = 1024;

/// The hash of a key in the index.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// How an engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Largest segment file.
    pub segment_size: u64,
    /// Run background compaction.
    pub compaction: bool,
    /// Compact while segment bytes exceed live bytes by this factor.
    pub max_space_amp: f64,
    /// Time between background steps.
    pub tick: Duration,
    /// Make the log durable at least this often in the background (the
    /// `fsync` sync policy's bound on what a power loss can take), or never.
    pub sync_interval: Option<Duration>,
    /// Writers of the log, each with a segment of its own (at most
    /// [`super::log::MAX_LANES`]): commits from several threads are written
    /// at once.
    pub lanes: usize,
    /// Append by copying into the segments' mappings where the file system
    /// writes in place (see [`super::log`]); `false`: one `pwrite` per
    /// commit (tests, and the benchmark's comparisons).
    pub mapped_appends: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            segment_size: 64 << 20,
            compaction: true,
            max_space_amp: 1.25,
            tick: Duration::from_millis(50),
            sync_interval: None,
            lanes: 4,
            mapped_appends: true,
        }
    }
}

/// One change of a commit.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// Set `key` to `value`; `tag` and `group` are kept in its slot.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// User tag (kind of key, flags).
        tag: u16,
        /// User group hash.
        group: u32,
    },
    /// Delete `key` (nothing if absent).
    Del {
        /// The key.
        key: &'a [u8],
    },
}

impl Op<'_> {
    fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Del { key } => key,
        }
    }
}

/// A value read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    /// The value.
    pub value: Vec<u8>,
    /// Its tag.
    pub tag: u16,
}

/// Sizes, for tests and the benchmark.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Segment files.
    pub segments: usize,
    /// Bytes in segment files.
    pub segment_bytes: u64,
    /// Bytes of live records.
    pub live_bytes: u64,
    /// Bytes of tombstones written since open that compaction still
    /// counts as needed (it copies them while an older segment may hold
    /// a record of their key).
    pub tomb_bytes: u64,
    /// Live keys.
    pub keys: u64,
    /// Bytes of the index region.
    pub index_bytes: u64,
    /// Segments compacted since open.
    pub compacted: u64,
    /// The size new segments roll at (scaled with the live bytes, see
    /// [`super::compaction::segment_target`]).
    pub segment_size: u64,
    /// Commits that write values are slowed: compaction is behind.
    pub writes_slowed: bool,
    /// Commits slowed since open.
    pub slowed_commits: u64,
}

/// The index behind a lock whose readers do not share a cache line: every
/// lookup takes it, and with a plain reader-writer lock the two cores
/// passed its counter back and forth (a third of a `stat`'s time in the
/// store benchmark). Writers lock every shard (a commit's publish, a
/// rehash).
pub(crate) struct IndexLock(ShardedLock<Index>);

impl IndexLock {
    /// Shared access. A panic while the index was held leaves each slot
    /// whole (one 8-byte store publishes it): go on with it.
    pub(crate) fn read(&self) -> ShardedLockReadGuard<'_, Index> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exclusive access.
    pub(crate) fn write(&self) -> ShardedLockWriteGuard<'_, Index> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) struct Inner {
    pub(crate) log: Log,
    pub(crate) index: IndexLock,
    /// The index's [`Index::room`] as last seen under its lock: commits
    /// read it instead of taking the lock while it is far from zero.
    room: AtomicU64,
    pub(crate) hdr: Mutex<HeaderInfo>,
    idx_path: PathBuf,
    stripes: Box<[Mutex<()>]>,
    /// Live record bytes per segment.
    pub(crate) live: Mutex<HashMap<u32, u64>>,
    /// Per segment (by id modulo its length): the background tick at which
    /// a record in it last died. Compaction leaves a segment that is
    /// still emptying alone (see [`super::compaction`]). Two segments that
    /// share a slot only delay each other's compaction.
    pub(crate) dropped: Box<[AtomicU64]>,
    /// Background ticks since open.
    pub(crate) tick: AtomicU64,
    /// Tombstone bytes per segment written since open (compaction counts
    /// them as live while they may still hide an older record), less the
    /// obsolete ones [`Self::forget_tomb`] took out. An estimate for
    /// compaction's choices, never for what it keeps: it reads each
    /// record it copies.
    pub(crate) tombs: Mutex<HashMap<u32, u64>>,
    /// Where recent tombstones lie, so that a put of their key (which
    /// makes the tombstone obsolete) takes its bytes out of
    /// [`Self::tombs`] at once ([`Self::forget_tomb`]): [`TOMB_SLOTS`]
    /// slots indexed by [`key_hash`], each the hash's upper half (its low
    /// bit set, so that a noted slot is never 0) over the segment id. A
    /// tombstone whose slot is taken over by another key's stays counted
    /// until compaction reads its segment, as before there was a table.
    tomb_at: Box<[AtomicU64]>,
    /// Whether any tombstone was noted since open: until one is, a put
    /// does not look (the store bench's creates).
    tomb_any: AtomicBool,
    pub(crate) opts: EngineOptions,
    pub(crate) compacted: std::sync::atomic::AtomicU64,
    /// Set by the background thread while compaction is behind (see
    /// [`super::compaction::behind`]; 0: not): every commit that writes a
    /// value then waits that level's [`WRITE_DELAYS`] first, so writers
    /// cannot outrun compaction until the disk is full.
    pub(crate) slow_writes: AtomicU8,
    /// Commits slowed since open.
    slowed: AtomicU64,
    /// When the engine was opened: the clock of [`Self::next_slow_check`].
    opened: Instant,
    /// When (µs after [`Self::opened`]) a commit that writes values next
    /// checks whether writes must be slowed ([`SLOW_CHECK_EVERY`]).
    next_slow_check: AtomicU64,
}

/// Slots of the table of recent tombstones' segments (8 bytes each: 2 MiB
/// per engine). A tombstone of a key that was put again is obsolete, and
/// left counted until compaction reads its segment it holds compaction
/// back: in the store bench's steady workload (50 000 files, deletes and
/// creates of the same files), 4 MB of the meta log's tombstones were
/// counted as live beside its 6.7 MB of live records, and the meta log
/// sat at 2× its live bytes. A map of every tombstone's key behind a
/// lock made the bench's deletes 30 % slower; this table costs a delete
/// one store.
pub const TOMB_SLOTS: usize = 1 << 18;

/// How often commits that write values check, themselves, whether
/// writes must be slowed ([`Inner::slow_check_due`]). The background
/// thread checks every tick and while it copies, but not while it waits
/// 60–80 ms for a batch's sync, and at 50 000 rewrites a second a 200 MB
/// store gains 3 % of space amplification in that time: the store
/// bench's steady workload (`--steady-files 50000`) peaked at 1.56×.
/// Timed per engine rather than counted per thread: a thread's count,
/// shared by the meta and data engines, could fall on the same one of
/// them every time (a create commits to both, in turn).
pub const SLOW_CHECK_EVERY: Duration = Duration::from_millis(2);

/// What a commit that writes a value waits while compaction is behind,
/// by how far ([`super::compaction::behind`]): at the first level a
/// writer thread makes at most 1 000 such commits a second, which
/// compaction outruns on two cores in most workloads (the store bench's
/// steady workload: 20 000 rewrites of 4 KiB a second from eight threads
/// on 1.6 GB of files are never slowed, 50 000 asked are held to 34 000);
/// at the second, 250.
pub const WRITE_DELAYS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_millis(4),
];

/// The engine. Dropping it closes it cleanly.
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    stop: Arc<AtomicBool>,
    bg: Option<JoinHandle<()>>,
    how: OpenHow,
}

/// Stripe locks held for a set of keys (taken in ascending order, so two
/// holders never deadlock).
pub(crate) struct KeyLocks<'a> {
    _g: Vec<MutexGuard<'a, ()>>,
}

impl Inner {
    pub(crate) fn lock_keys<'a>(&'a self, keys: impl Iterator<Item = &'a [u8]>) -> KeyLocks<'a> {
        let mut ids: Vec<usize> = keys
            .map(|k| (key_hash(k) >> 40) as usize % STRIPES)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        KeyLocks {
            _g: ids.into_iter().map(|i| self.stripes[i].lock()).collect(),
        }
    }

    /// The slot of `key` (index read or write guard given).
    pub(crate) fn find(&self, ix: &Index, key: &[u8]) -> Result<Option<(usize, Slot)>, StoreError> {
        ix.find(slot_hash(key_hash(key)), |s| self.is_key(s, key))
    }

    /// Whether the record at `s` has key `key` (read in place).
    fn is_key(&self, s: &Slot, key: &[u8]) -> Result<bool, StoreError> {
        if s.len != 0 && (s.len as usize) < REC_HEADER_LEN + key.len() {
            return Ok(false);
        }
        self.log
            .with_bytes(s.pos(), (REC_HEADER_LEN + key.len()) as u32, |head| {
                record::decode_header(head).is_some_and(|h| h.key_len as usize == key.len())
                    && &head[REC_HEADER_LEN..] == key
            })
    }

    /// Grows the index if `extra` more inserts would pass its load limit.
    fn reserve(&self, extra: u64) -> Result<(), StoreError> {
        if self.room.load(Ordering::Relaxed) >= extra + ROOM_SLACK {
            return Ok(());
        }
        {
            let ix = self.index.read();
            self.note_room(&ix);
            if !ix.needs_grow_by(extra) {
                return Ok(());
            }
        }
        let mut ix = self.index.write();
        if ix.needs_grow_by(extra) {
            let hdr = *self.hdr.lock();
            recovery::grow(&mut ix, &self.idx_path, &hdr, extra)?;
            tracing::debug!("index rehashed to {} slots", ix.capacity());
        }
        self.note_room(&ix);
        Ok(())
    }

    /// Records the index's room (the caller holds its lock).
    pub(crate) fn note_room(&self, ix: &Index) {
        self.room.store(ix.room(), Ordering::Relaxed);
    }

    /// Runs `f` on the whole record a slot points at, decoded in place.
    pub(crate) fn with_record<T>(
        &self,
        s: &Slot,
        f: impl FnOnce(record::Rec<'_>) -> T,
    ) -> Result<T, StoreError> {
        self.with_record_in_place(s, |rec, _| f(rec))
    }

    /// As [`Self::with_record`], with the record's bytes as they lie, so
    /// `f` may keep a part of them ([`InPlace::share`]).
    fn with_record_in_place<T>(
        &self,
        s: &Slot,
        f: impl FnOnce(record::Rec<'_>, &InPlace<'_>) -> T,
    ) -> Result<T, StoreError> {
        let len = self.slot_len(s)?;
        self.log
            .in_place(s.pos(), len, |b| record::decode(b.bytes).map(|r| f(r, &b)))?
    }

    /// The length of the record a slot points at (from the slot, or from
    /// the record's header when it is too long for the slot).
    pub(crate) fn slot_len(&self, s: &Slot) -> Result<u32, StoreError> {
        if s.len != 0 {
            return Ok(s.len);
        }
        let h = self
            .log
            .with_bytes(s.pos(), REC_HEADER_LEN as u32, record::decode_header)?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("index points at no record: {:?}", s.pos()))
            })?;
        u32::try_from(h.total_len())
            .map_err(|_| StoreError::Corrupt(format!("record too long at {:?}", s.pos())))
    }

    /// Appends `recs` as one commit: (header without seq/flags, key, value),
    /// and counts its tombstones in their segment. The caller holds the
    /// keys' stripe locks.
    pub(crate) fn append(
        &self,
        recs: &[(RecHeader, &[u8], &[u8])],
        frees: bool,
    ) -> Result<super::log::Appended, StoreError> {
        let app = self.log.append(frees, |buf| {
            buf.reserve_exact(recs.iter().map(|r| r.0.total_len()).sum());
            recs.iter()
                .enumerate()
                .map(|(i, (h, k, v))| {
                    let flags = if i + 1 == recs.len() { FLAG_COMMIT } else { 0 };
                    record::encode_unsealed(buf, &RecHeader { flags, ..*h }, k, v)
                })
                .collect()
        })?;
        let mut tomb_bytes = 0u64;
        for (h, k, _) in recs.iter().filter(|r| r.0.kind == KIND_DEL) {
            tomb_bytes += h.total_len() as u64;
            self.track_tomb(k, app.seg);
        }
        if tomb_bytes > 0 {
            *self.tombs.lock().entry(app.seg).or_insert(0) += tomb_bytes;
        }
        Ok(app)
    }

    /// Whether it is time for a writer to check whether writes must be
    /// slowed ([`SLOW_CHECK_EVERY`]); the next check is then due one
    /// interval later. Two writers may both check: harmless.
    fn slow_check_due(&self) -> bool {
        let now = self.opened.elapsed().as_micros() as u64;
        if now < self.next_slow_check.load(Ordering::Relaxed) {
            return false;
        }
        let every = SLOW_CHECK_EVERY.as_micros() as u64;
        self.next_slow_check.store(now + every, Ordering::Relaxed);
        true
    }

    /// The slot of [`Self::tomb_at`] for `key`, and the value that notes
    /// a tombstone of it in segment `seg`.
    fn tomb_slot(&self, key: &[u8], seg: u32) -> (&AtomicU64, u64) {
        let h = key_hash(key);
        let tag = (h | (1 << 32)) & !0xffff_ffff;
        (&self.tomb_at[h as usize % TOMB_SLOTS], tag | u64::from(seg))
    }

    /// Notes that the newest tombstone of `key` is in segment `seg`.
    fn track_tomb(&self, key: &[u8], seg: u32) {
        let (slot, v) = self.tomb_slot(key, seg);
        slot.store(v, Ordering::Relaxed);
        if !self.tomb_any.load(Ordering::Relaxed) {
            self.tomb_any.store(true, Ordering::Relaxed);
        }
    }

    /// `key` is live again (`seg` `None`), or its tombstone in segment
    /// `seg` is dropped: a noted tombstone stops counting. Of two calls
    /// that find the same note (a put and compaction, which does not hold
    /// the key's stripe lock while it reads a segment), the one whose
    /// compare-and-swap clears it takes the bytes out.
    pub(crate) fn forget_tomb(&self, key: &[u8], seg: Option<u32>) {
        if !self.tomb_any.load(Ordering::Relaxed) {
            return;
        }
        let (slot, v) = self.tomb_slot(key, seg.unwrap_or(0));
        let cur = slot.load(Ordering::Relaxed);
        let tag = !0xffff_ffffu64;
        let noted = cur != 0
            && cur & tag == v & tag
            && seg.is_none_or(|s| cur & 0xffff_ffff == u64::from(s));
        if !noted
            || slot
                .compare_exchange(cur, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let len = record::padded(REC_HEADER_LEN + key.len()) as u64;
        if let Some(n) = self.tombs.lock().get_mut(&((cur & 0xffff_ffff) as u32)) {
            *n = n.saturating_sub(len);
        }
    }

    /// Publishes a put at `pos` (the caller holds the key's stripe lock and
    /// the index write lock).
    pub(crate) fn publish_put(
        &self,
        ix: &mut Index,
        key: &[u8],
        s: Slot,
        live: &mut HashMap<u32, u64>,
    ) -> Result<(), StoreError> {
        match ix.probe(s.hash, |x| self.is_key(x, key))? {
            Probe::Found(i, old) => {
                self.sub_live(live, old.seg, self.slot_len(&old)?);
                ix.replace(i, &s);
            }
            Probe::Absent(Some(i)) => {
                ix.insert_at(i, &s);
                self.forget_tomb(key, None);
            }
            Probe::Absent(None) => {
                ix.insert(&s)?;
                self.forget_tomb(key, None);
            }
        }
        *live.entry(s.seg).or_insert(0) += u64::from(self.slot_len(&s)?);
        Ok(())
    }
}

/// Length of [`Inner::dropped`].
pub(crate) const DROP_SLOTS: usize = 1024;

impl Inner {
    /// `len` bytes of segment `seg` died (noted for compaction).
    fn sub_live(&self, live: &mut HashMap<u32, u64>, seg: u32, len: u32) {
        self.dropped[seg as usize % DROP_SLOTS]
            .store(self.tick.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Some(v) = live.get_mut(&seg) {
            *v = v.saturating_sub(u64::from(len));
        }
    }
}

impl Engine {
    /// Opens the engine whose segments are in `dir` and whose index is the
    /// file `idx_path`.
    pub fn open(dir: &Path, idx_path: &Path, opts: EngineOptions) -> Result<Engine, StoreError> {
        let o = recovery::open(dir, idx_path)?;
        let log = Log::open(
            dir,
            o.log_id,
            &o.segs,
            o.next_seq,
            opts.segment_size,
            opts.lanes,
            opts.sync_interval.is_some(),
        )?;
        if !opts.mapped_appends {
            log.no_mapped_appends();
        }
        let mut live = HashMap::new();
        let mut long = Vec::new();
        for s in o.index.valid_slots() {
            if s.len == 0 {
                long.push(s);
            }
            *live.entry(s.seg).or_insert(0u64) += u64::from(s.len);
        }
        let inner = Arc::new(Inner {
            log,
            room: AtomicU64::new(o.index.room()),
            index: IndexLock(ShardedLock::new(o.index)),
            hdr: Mutex::new(o.hdr),
            idx_path: idx_path.to_path_buf(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            live: Mutex::new(live),
            dropped: (0..DROP_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            // Untouched segments (tick 0) count as cold from the start.
            tick: AtomicU64::new(super::compaction::COOL_TICKS),
            tombs: Mutex::new(HashMap::new()),
            tomb_at: (0..TOMB_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            tomb_any: AtomicBool::new(false),
            opts: opts.clone(),
            compacted: Default::default(),
            slow_writes: AtomicU8::new(0),
            slowed: AtomicU64::new(0),
            opened: Instant::now(),
            next_slow_check: AtomicU64::new(0),
        });
        for s in long {
            let len = inner.slot_len(&s)?;
            *inner.live.lock().entry(s.seg).or_insert(0) += u64::from(len);
        }
        super::compaction::scale_segments(&inner);
        if opts.sync_interval.is_some() {
            // The sync marker names this boot from now on: a rebuild in
            // this boot (the page cache intact) keeps every commit.
            inner.log.sync_all()?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let bg = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("sealfs-store-bg".into())
                .spawn(move || super::compaction::run(inner, stop))
                .map_err(|e| StoreError::io("start the store's background thread", e))?
        };
        Ok(Engine {
            inner,
            stop,
            bg: Some(bg),
            how: o.how,
        })
    }

    /// How the index was obtained at open.
    pub fn open_how(&self) -> &OpenHow {
        &self.how
    }

    /// Applies `ops` atomically; durable when it returns if `durable`.
    pub fn commit(&self, ops: &[Op<'_>], durable: bool) -> Result<(), StoreError> {
        let inner = &*self.inner;
        for op in ops {
            if op.key().len() > MAX_KEY_LEN {
                return Err(StoreError::io(
                    "commit",
                    std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
                ));
            }
            if let Op::Put { tag, .. } = op {
                if *tag > MAX_TAG {
                    return Err(StoreError::Corrupt(format!(
                        "tag {tag} is over the index's limit {MAX_TAG}"
                    )));
                }
            }
        }
        // Before any lock: a writer held back here holds up no one else.
        let puts = ops.iter().any(|o| matches!(o, Op::Put { .. }));
        if puts && inner.opts.compaction && inner.slow_check_due() {
            super::compaction::refresh_slow(inner);
        }
        let slow = usize::from(inner.slow_writes.load(Ordering::Relaxed));
        if slow > 0 && puts {
            std::thread::sleep(WRITE_DELAYS[slow.min(WRITE_DELAYS.len() - 1)]);
            inner.slowed.fetch_add(1, Ordering::Relaxed);
        }
        let _locks = inner.lock_keys(ops.iter().map(|o| o.key()));
        // Deletes of absent keys need no record (no older version of an
        // absent key can win a replay: its last record is a tombstone or
        // nothing). Later ops of the same commit are kept as they are.
        let mut recs: Vec<(RecHeader, &[u8], &[u8])> = Vec::with_capacity(ops.len());
        {
            // Taken only for a delete's check: a commit of puts alone
            // does not touch the index before it publishes.
            let mut ix = None;
            for op in ops {
                match *op {
                    Op::Put {
                        key,
                        value,
                        tag,
                        group,
                    } => recs.push((
                        RecHeader {
                            kind: KIND_PUT,
                            flags: 0,
                            tag,
                            key_len: key.len() as u32,
                            val_len: value.len() as u32,
                            seq: 0,
                            group,
                        },
                        key,
                        value,
                    )),
                    Op::Del { key } => {
                        let later_put = recs.iter().any(|r| r.1 == key);
                        let ix = ix.get_or_insert_with(|| inner.index.read());
                        if later_put || inner.find(ix, key)?.is_some() {
                            recs.push((
                                RecHeader {
                                    kind: KIND_DEL,
                                    flags: 0,
                                    tag: 0,
                                    key_len: key.len() as u32,
                                    val_len: 0,
                                    seq: 0,
                                    group: 0,
                                },
                                key,
                                &[],
                            ));
                        }
                    }
                }
            }
        }
        if recs.is_empty() {
            return Ok(());
        }
        // Only puts take slots: a delete marks its slot, so a commit of
        // deletes needs no room, and works on a full meta device (where a
        // grown index could not be allocated).
        let inserts = recs.iter().filter(|r| r.0.kind == KIND_PUT).count();
        if inserts > 0 {
            inner.reserve(inserts as u64)?;
        }
        let frees = inserts == 0;
        let app = inner.append(&recs, frees)?;
        let synced = if durable {
            inner.log.sync_to(app.seq)
        } else {
            Ok(())
        };
        // Published even if the sync failed: the records are in the log, and
        // the index must say what a replay would.
        let res = (|| {
            let mut ix = inner.index.write();
            let mut live = inner.live.lock();
            for ((h, key, _), off) in recs.iter().zip(&app.offs) {
                if h.kind == KIND_PUT {
                    inner.publish_put(
                        &mut ix,
                        key,
                        Slot::of_record(h, key, app.seg, *off),
                        &mut live,
                    )?;
                } else if let Some((i, old)) = inner.find(&ix, key)? {
                    inner.sub_live(&mut live, old.seg, inner.slot_len(&old)?);
                    ix.remove(i);
                }
            }
            inner.note_room(&ix);
            Ok(())
        })();
        // A commit whose publishing failed part-way stays pending, so the
        // replay point never passes it: a restart applies it whole.
        if res.is_ok() {
            inner.log.published(&app);
        }
        res.and(synced)
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Got>, StoreError> {
        self.get_with(key, |value, tag| Got {
            value: value.to_vec(),
            tag,
        })
    }

    /// Runs `f` on the value (and tag) of `key` in place, without copying
    /// it out of the log; `f` runs under the index's read lock, so it must
    /// be short (a decode, a copy of the part wanted).
    pub fn get_with<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8], u16) -> T,
    ) -> Result<Option<T>, StoreError> {
        self.get_shared(key, |value, tag, _| f(value, tag))
    }

    /// As [`Self::get_with`], and `f` may keep parts of the value beyond
    /// the call without a copy, with [`InPlace::share`] on the handle it
    /// is given: a file's read goes from the log to its reply this way.
    pub fn get_shared<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(&[u8], u16, &InPlace<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let inner = &*self.inner;
        let ix = inner.index.read();
        let mut f = Some(f);
        let mut got = None;
        let found = ix.find(slot_hash(key_hash(key)), |s| {
            inner.with_record_in_place(s, |rec, b| {
                if rec.key == key {
                    got = f.take().map(|f| f(rec.value, rec.h.tag, b));
                    true
                } else {
                    false
                }
            })
        })?;
        Ok(found.and(got))
    }

    /// Whether `key` is live.
    pub fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        let ix = self.inner.index.read();
        Ok(self.inner.find(&ix, key)?.is_some())
    }

    /// Every live (key, value, tag) whose tag satisfies `tag` and, when
    /// `group` is given, whose group is that: one pass over the index,
    /// reading only the records whose slot matches (a slot keeps
    /// [`super::index::GROUP_BITS`] of the group; the record's header says
    /// the rest).
    pub fn collect(
        &self,
        tag: impl Fn(u16) -> bool,
        group: Option<u32>,
    ) -> Result<Vec<(Vec<u8>, Got)>, StoreError> {
        let inner = &*self.inner;
        let ix = inner.index.read();
        let mut out = Vec::new();
        for s in ix.valid_slots() {
            if !tag(u16::from(s.tag)) || group.is_some_and(|g| group_bits(g) != s.group) {
                continue;
            }
            let item = inner.with_record(&s, |rec| {
                group.is_none_or(|g| g == rec.h.group).then(|| {
                    (
                        rec.key.to_vec(),
                        Got {
                            value: rec.value.to_vec(),
                            tag: rec.h.tag,
                        },
                    )
                })
            })?;
            out.extend(item);
        }
        Ok(out)
    }

    /// Makes every earlier commit durable (group commit).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.inner.log.sync_all()
    }

    /// Whether commits that write values are slowed now, compaction being
    /// behind ([`WRITE_DELAYS`]).
    pub fn writes_slowed(&self) -> bool {
        self.inner.slow_writes.load(Ordering::Relaxed) > 0
    }

    /// Sizes of the log and the index.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let ix = inner.index.read();
        Stats {
            segments: inner.log.segments().len(),
            segment_bytes: inner.log.total_len(),
            live_bytes: inner.live.lock().values().sum(),
            tomb_bytes: inner.tombs.lock().values().sum(),
            keys: ix.live,
            index_bytes: ix.region_bytes(),
            compacted: inner.compacted.load(Ordering::Relaxed),
            segment_size: inner.log.segment_size(),
            writes_slowed: inner.slow_writes.load(Ordering::Relaxed) > 0,
            slowed_commits: inner.slowed.load(Ordering::Relaxed),
        }
    }

    /// Runs compaction until no segment qualifies, then shrinks a sparse
    /// index (tests, benchmarks).
    pub fn compact_now(&self) -> Result<(), StoreError> {
        super::compaction::compact_all(&self.inner)
    }

    /// Decides now whether writes are slowed, as the background thread
    /// does every tick (tests).
    pub fn check_slowdown(&self) {
        super::compaction::refresh_slow(&self.inner);
    }

    /// Starts a new segment (tests).
    pub fn seal_active(&self) -> Result<(), StoreError> {
        self.inner.log.seal_active();
        Ok(())
    }

    /// Stops the engine as a crash would (tests): no sync, no flush, the
    /// index stays dirty.
    pub fn abandon(mut self) {
        self.stop_bg();
    }

    /// Closes cleanly: syncs the log, flushes the index, marks it clean.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    /// Stops the background thread now (it waits on a park, not a sleep).
    fn stop_bg(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(bg) = self.bg.take() {
            bg.thread().unpark();
            let _ = bg.join();
        }
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        self.stop_bg();
        let inner = &*self.inner;
        inner.log.seal_active();
        inner.log.sync_all()?;
        let mut ix = inner.index.write();
        ix.flush()?;
        let mut hdr = inner.hdr.lock();
        hdr.clean = true;
        hdr.replay = inner.log.replay_point();
        hdr.next_seq = inner.log.next_seq();
        hdr.table_crc = ix.table_crc();
        ix.write_header(&hdr);
        ix.flush_header()?;
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.bg.is_some() {
            if let Err(e) = self.shutdown() {
                tracing::warn!("store close: {e}");
            }
        }
    }
}

/// Rehashes the index smaller when deletes left it under half its normal
/// fill (background; the table never shrinks in the foreground).
pub(crate) fn maybe_shrink(inner: &Inner) {
    use super::index::{MIN_CAPACITY, TARGET_LOAD_PCT};
    let sparse = |ix: &Index| {
        ix.capacity() > MIN_CAPACITY && ix.live * 100 * 2 < ix.capacity() * TARGET_LOAD_PCT
    };
    if !sparse(&inner.index.read()) {
        return;
    }
    let mut ix = inner.index.write();
    if sparse(&ix) {
        let hdr = *inner.hdr.lock();
        match recovery::grow(&mut ix, &inner.idx_path, &hdr, 0) {
            Ok(()) => {
                inner.note_room(&ix);
                tracing::debug!("index shrunk to {} slots", ix.capacity())
            }
            Err(e) => tracing::warn!("index shrink: {e}"),
        }
    }
}

/// Writes the replay checkpoint into the index header (background).
pub(crate) fn checkpoint(inner: &Inner) {
    let p = inner.log.replay_point();
    let next_seq = inner.log.next_seq();
    let mut ix = inner.index.write();
    let mut hdr = inner.hdr.lock();
    if hdr.replay == p && hdr.next_seq == next_seq {
        return;
    }
    hdr.replay = p;
    hdr.next_seq = next_seq;
    ix.write_header(&hdr);
}
