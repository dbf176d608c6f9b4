//! The persistent-memory index: an open-addressing hash table (linear
//! probing) in a memory-mapped file, from a key's hash to where its live
//! record is in the log. A slot is [`SLOT_LEN`] = 16 bytes; the full key
//! lives only in the record, so a lookup verifies it there.
//!
//! Layout (little-endian; also in `docs/store.md`): a header page
//! ([`IDX_HEADER_LEN`] bytes: magic, version, slot length, capacity, log
//! id, boot id, clean flag, replay point, next sequence number, table
//! CRC, header CRC), then `capacity` slots of two words:
//! `pos u64` (segment << 32 | offset; 0 empty, all ones deleted), then
//! `meta u64` = `hash u32 | tag u4 | group u12 | len/8 u16`. The table's
//! capacity is any number of slots: a key's home slot is
//! `hash * capacity >> 32`, so the table grows by a quarter, not by two,
//! and stays between [`TARGET_LOAD_PCT`] and [`MAX_LOAD_PCT`] full.
//!
//! Crash ordering: a slot is published by writing its `meta` word and then
//! its `pos` word, with one 8-byte store after a release fence, so a slot
//! never points at half an address. Deletion writes only `pos` (deleted,
//! never a backward shift, so a crash cannot lose another key's slot). A
//! replace that a crash cut between the two words points at the key's old
//! record with the new tag: it belongs to a commit at or after the header's
//! replay point, which recovery re-applies. The header says `clean` only
//! after the table was flushed (`msync`) with its CRC; it is made dirty
//! (and flushed) before the first change after open.

use super::log::{Pos, ReplayPoint, MAX_LANES};
use super::record::{u32_at, u64_at, REC_ALIGN};
use super::sys;
use crate::store::StoreError;
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// `"SEALIDX1"`.
pub const IDX_MAGIC: &[u8; 8] = b"SEALIDX1";
/// Layout version of the index file (3: 16-byte slots, a replay point per
/// log lane).
pub const IDX_VERSION: u32 = 3;
/// Length of the header page.
pub const IDX_HEADER_LEN: usize = 4096;
/// Length of a slot.
pub const SLOT_LEN: usize = 16;
/// Rehash when valid + deleted slots pass this fill.
pub const MAX_LOAD_PCT: u64 = 90;
/// Fill of the table a rehash makes (live slots only).
pub const TARGET_LOAD_PCT: u64 = 76;
/// Smallest table.
pub const MIN_CAPACITY: u64 = 1024;
/// Largest tag a slot keeps.
pub const MAX_TAG: u16 = 15;
/// Bits of the group a slot keeps.
pub const GROUP_BITS: u32 = 12;
/// Longest record length a slot keeps (longer ones are stored as 0 and
/// read from the record's header).
pub const MAX_SLOT_LEN: u32 = 0xffff * REC_ALIGN as u32;

/// `pos` word of a never-used slot (ends a probe).
const EMPTY: u64 = 0;
/// `pos` word of a deleted slot (a probe continues past it).
const DELETED: u64 = u64::MAX;

/// One valid slot, unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// The high 32 bits of the key's hash ([`slot_hash`]).
    pub hash: u32,
    /// Segment of the record.
    pub seg: u32,
    /// Offset of the record.
    pub off: u32,
    /// Length of the record (padding included), or 0 when it is longer
    /// than [`MAX_SLOT_LEN`].
    pub len: u32,
    /// The low [`GROUP_BITS`] of the user's group hash (a filter: the
    /// record holds all of it).
    pub group: u16,
    /// The user's tag (kind of key), at most [`MAX_TAG`].
    pub tag: u8,
}

/// The part of a key's 64-bit hash the index keeps.
pub fn slot_hash(key_hash: u64) -> u32 {
    (key_hash >> 32) as u32
}

/// The slot form of a group hash.
pub fn group_bits(group: u32) -> u16 {
    (group & ((1 << GROUP_BITS) - 1)) as u16
}

impl Slot {
    /// The live slot of a record just appended at (`seg`, `off`).
    pub(crate) fn of_record(h: &super::record::RecHeader, key: &[u8], seg: u32, off: u32) -> Slot {
        let len = h.total_len() as u64;
        Slot {
            hash: slot_hash(super::kv::key_hash(key)),
            seg,
            off,
            len: if len <= u64::from(MAX_SLOT_LEN) {
                len as u32
            } else {
                0
            },
            group: group_bits(h.group),
            tag: h.tag.min(MAX_TAG) as u8,
        }
    }

    /// Where the record is.
    pub fn pos(&self) -> Pos {
        Pos {
            seg: self.seg,
            off: self.off,
        }
    }

    fn meta_word(&self) -> u64 {
        u64::from(self.hash)
            | u64::from(self.tag & 0xf) << 32
            | u64::from(self.group) << 36
            | u64::from(self.len / REC_ALIGN as u32) << 48
    }

    fn unpack(pos: u64, meta: u64) -> Slot {
        let p = Pos::from_raw(pos);
        Slot {
            hash: meta as u32,
            seg: p.seg,
            off: p.off,
            len: ((meta >> 48) as u32) * REC_ALIGN as u32,
            group: ((meta >> 36) & ((1 << GROUP_BITS) - 1)) as u16,
            tag: ((meta >> 32) & 0xf) as u8,
        }
    }
}

/// What [`Index::probe`] found.
pub enum Probe {
    /// The key's slot.
    Found(usize, Slot),
    /// The key is absent; where to insert it (`None`: the table is full).
    Absent(Option<usize>),
}

/// What the header says besides the table's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The log this index belongs to.
    pub log_id: u64,
    /// Boot of the process that last opened it.
    pub boot: u64,
    /// Flushed and closed cleanly.
    pub clean: bool,
    /// Which commits may be missing from the table (a replay re-applies
    /// them).
    pub replay: ReplayPoint,
    /// Next sequence number (meaningful when clean).
    pub next_seq: u64,
    /// CRC32C of the table (meaningful when clean).
    pub table_crc: u32,
}

// Header offsets.
const H_VERSION: usize = 8;
const H_SLOT_LEN: usize = 12;
const H_CAP: usize = 16;
const H_LOG_ID: usize = 24;
const H_BOOT: usize = 32;
const H_CLEAN: usize = 40;
const H_REPLAY_SEQ: usize = 44;
const H_NEXT_SEQ: usize = 52;
const H_TABLE_CRC: usize = 60;
const H_MAX_SEG: usize = 64;
const H_LANES: usize = 68;
const H_CRC: usize = H_LANES + 8 * MAX_LANES;

/// The mapped table.
pub struct Index {
    path: PathBuf,
    _file: File,
    map: MmapMut,
    cap: u64,
    /// Valid slots.
    pub live: u64,
    /// Valid and deleted slots.
    pub used: u64,
}

fn io(what: String, e: std::io::Error) -> StoreError {
    StoreError::io(what, e)
}

impl Index {
    /// Creates a new, empty table of `cap` slots (at least
    /// [`MIN_CAPACITY`]) at `path` (replacing any file there), dirty, with
    /// `hdr`.
    pub fn create(path: &Path, cap: u64, hdr: &HeaderInfo) -> Result<Index, StoreError> {
        let cap = cap.clamp(MIN_CAPACITY, u64::from(u32::MAX));
        let len = IDX_HEADER_LEN as u64 + cap * SLOT_LEN as u64;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io(format!("create {}", path.display()), e))?;
        sys::preallocate(&f, len).map_err(|e| io(format!("allocate {}", path.display()), e))?;
        let map = sys::map(&f).map_err(|e| io(format!("map {}", path.display()), e))?;
        let mut ix = Index {
            path: path.to_path_buf(),
            _file: f,
            map,
            cap,
            live: 0,
            used: 0,
        };
        ix.map[..8].copy_from_slice(IDX_MAGIC);
        ix.write_header(&HeaderInfo {
            clean: false,
            ..*hdr
        });
        Ok(ix)
    }

    /// Maps an existing table. `Err(reason)` when it is missing, torn, of
    /// another version or unusable: the caller rebuilds.
    pub fn open(path: &Path) -> Result<(Index, HeaderInfo), String> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open: {e}"))?;
        let flen = f.metadata().map_err(|e| format!("cannot stat: {e}"))?.len();
        if flen < IDX_HEADER_LEN as u64 {
            return Err(format!("too short ({flen} bytes)"));
        }
        let map = sys::map(&f).map_err(|e| format!("cannot map: {e}"))?;
        let h = &map[..IDX_HEADER_LEN];
        if &h[..8] != IDX_MAGIC {
            return Err("bad magic".into());
        }
        if crc32c::crc32c(&h[..H_CRC]) != u32_at(h, H_CRC) {
            return Err("header checksum mismatch".into());
        }
        let version = u32_at(h, H_VERSION);
        if version != IDX_VERSION || u32_at(h, H_SLOT_LEN) as usize != SLOT_LEN {
            return Err(format!(
                "layout version {version}, this build reads {IDX_VERSION}"
            ));
        }
        let cap = u64_at(h, H_CAP);
        if !(MIN_CAPACITY..=u64::from(u32::MAX)).contains(&cap)
            || IDX_HEADER_LEN as u64 + cap * SLOT_LEN as u64 != flen
        {
            return Err(format!(
                "capacity {cap} does not match the file length {flen}"
            ));
        }
        let info = HeaderInfo {
            log_id: u64_at(h, H_LOG_ID),
            boot: u64_at(h, H_BOOT),
            clean: u32_at(h, H_CLEAN) == 1,
            replay: ReplayPoint {
                seq: u64_at(h, H_REPLAY_SEQ),
                max_seg: u32_at(h, H_MAX_SEG),
                lanes: std::array::from_fn(|i| match u64_at(h, H_LANES + 8 * i) {
                    0 => None,
                    p => Some(Pos::from_raw(p)),
                }),
            },
            next_seq: u64_at(h, H_NEXT_SEQ),
            table_crc: u32_at(h, H_TABLE_CRC),
        };
        let mut ix = Index {
            path: path.to_path_buf(),
            _file: f,
            map,
            cap,
            live: 0,
            used: 0,
        };
        for i in 0..cap as usize {
            match ix.pos_word(i) {
                EMPTY => {}
                DELETED => ix.used += 1,
                _ => {
                    ix.live += 1;
                    ix.used += 1;
                }
            }
        }
        Ok((ix, info))
    }

    /// Rewrites the header (with its CRC).
    pub fn write_header(&mut self, hdr: &HeaderInfo) {
        let h = &mut self.map[..IDX_HEADER_LEN];
        h[H_VERSION..H_VERSION + 4].copy_from_slice(&IDX_VERSION.to_le_bytes());
        h[H_SLOT_LEN..H_SLOT_LEN + 4].copy_from_slice(&(SLOT_LEN as u32).to_le_bytes());
        h[H_CAP..H_CAP + 8].copy_from_slice(&self.cap.to_le_bytes());
        h[H_LOG_ID..H_LOG_ID + 8].copy_from_slice(&hdr.log_id.to_le_bytes());
        h[H_BOOT..H_BOOT + 8].copy_from_slice(&hdr.boot.to_le_bytes());
        h[H_CLEAN..H_CLEAN + 4].copy_from_slice(&u32::from(hdr.clean).to_le_bytes());
        h[H_REPLAY_SEQ..H_REPLAY_SEQ + 8].copy_from_slice(&hdr.replay.seq.to_le_bytes());
        h[H_MAX_SEG..H_MAX_SEG + 4].copy_from_slice(&hdr.replay.max_seg.to_le_bytes());
        for (i, p) in hdr.replay.lanes.iter().enumerate() {
            let at = H_LANES + 8 * i;
            h[at..at + 8].copy_from_slice(&p.map_or(0, Pos::raw).to_le_bytes());
        }
        h[H_NEXT_SEQ..H_NEXT_SEQ + 8].copy_from_slice(&hdr.next_seq.to_le_bytes());
        h[H_TABLE_CRC..H_TABLE_CRC + 4].copy_from_slice(&hdr.table_crc.to_le_bytes());
        let crc = crc32c::crc32c(&h[..H_CRC]);
        h[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// CRC32C of the slot table.
    pub fn table_crc(&self) -> u32 {
        crc32c::crc32c(&self.map[IDX_HEADER_LEN..])
    }

    /// Flushes the header page only.
    pub fn flush_header(&self) -> Result<(), StoreError> {
        self.map
            .flush_range(0, IDX_HEADER_LEN)
            .map_err(|e| io(format!("msync {}", self.path.display()), e))
    }

    /// Flushes the whole mapping.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.map
            .flush()
            .map_err(|e| io(format!("msync {}", self.path.display()), e))
    }

    /// Number of slots.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Bytes of index region.
    pub fn region_bytes(&self) -> u64 {
        IDX_HEADER_LEN as u64 + self.cap * SLOT_LEN as u64
    }

    fn at(i: usize) -> usize {
        IDX_HEADER_LEN + i * SLOT_LEN
    }

    fn pos_word(&self, i: usize) -> u64 {
        u64_at(&self.map, Self::at(i))
    }

    /// Slot `i`, if it is valid.
    pub fn slot(&self, i: usize) -> Option<Slot> {
        match self.pos_word(i) {
            EMPTY | DELETED => None,
            pos => Some(Slot::unpack(pos, u64_at(&self.map, Self::at(i) + 8))),
        }
    }

    /// Stores slot `i`'s `pos` word with one 8-byte store, after a release
    /// fence that orders the `meta` word written before it.
    fn set_pos(&mut self, i: usize, pos: u64) {
        fence(Ordering::Release);
        let at = Self::at(i);
        let word = &mut self.map[at..at + 8];
        // SAFETY: `word` is 8 bytes inside the mapping, borrowed mutably
        // (no other reference to it exists), and 8-byte aligned: the
        // mapping starts on a page, the header is a page and slots are 16
        // bytes. An `AtomicU64` has the size and alignment of a `u64`.
        let a = unsafe { &*(word.as_mut_ptr() as *const AtomicU64) };
        a.store(pos.to_le(), Ordering::Relaxed);
    }

    /// Writes a slot's `meta` word, then its `pos` word last.
    fn write_slot(&mut self, i: usize, s: &Slot) {
        let at = Self::at(i) + 8;
        self.map[at..at + 8].copy_from_slice(&s.meta_word().to_le_bytes());
        self.set_pos(i, s.pos().raw());
    }

    /// The home slot of `hash`.
    fn home(&self, hash: u32) -> usize {
        ((u64::from(hash) * self.cap) >> 32) as usize
    }

    /// The valid slot of the key with `hash` for which `is_key` says yes.
    pub fn find(
        &self,
        hash: u32,
        is_key: impl FnMut(&Slot) -> Result<bool, StoreError>,
    ) -> Result<Option<(usize, Slot)>, StoreError> {
        Ok(match self.probe(hash, is_key)? {
            Probe::Found(i, s) => Some((i, s)),
            Probe::Absent(_) => None,
        })
    }

    /// Looks the key up; when it is absent, says where [`Index::insert_at`]
    /// may put it (the first free slot of its probe), so an insert walks
    /// the probe once.
    pub fn probe(
        &self,
        hash: u32,
        mut is_key: impl FnMut(&Slot) -> Result<bool, StoreError>,
    ) -> Result<Probe, StoreError> {
        let cap = self.cap as usize;
        let mut i = self.home(hash);
        let mut free = None;
        for _ in 0..cap {
            let pos = self.pos_word(i);
            if pos == EMPTY {
                return Ok(Probe::Absent(Some(free.unwrap_or(i))));
            }
            if pos == DELETED {
                free.get_or_insert(i);
            } else {
                let meta = u64_at(&self.map, Self::at(i) + 8);
                if meta as u32 == hash {
                    let s = Slot::unpack(pos, meta);
                    if is_key(&s)? {
                        return Ok(Probe::Found(i, s));
                    }
                }
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
        Ok(Probe::Absent(free))
    }

    /// Puts `s` into slot `i`, which [`Index::probe`] gave for its absent
    /// key (no index change in between).
    pub fn insert_at(&mut self, i: usize, s: &Slot) {
        if self.pos_word(i) == EMPTY {
            self.used += 1;
        }
        self.write_slot(i, s);
        self.live += 1;
    }

    /// Replaces slot `i` (found by [`Index::find`]) with `s`.
    pub fn replace(&mut self, i: usize, s: &Slot) {
        self.write_slot(i, s);
    }

    /// Inserts `s` for a key known to be absent. Fails only when the table
    /// is full (the caller grows first).
    pub fn insert(&mut self, s: &Slot) -> Result<usize, StoreError> {
        let cap = self.cap as usize;
        let mut i = self.home(s.hash);
        for _ in 0..cap {
            let pos = self.pos_word(i);
            if pos == EMPTY || pos == DELETED {
                self.insert_at(i, s);
                return Ok(i);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
        Err(StoreError::io(
            "index insert",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ))
    }

    /// Deletes slot `i`.
    pub fn remove(&mut self, i: usize) {
        self.set_pos(i, DELETED);
        self.live -= 1;
    }

    /// Whether `extra` more inserts would pass the load limit.
    pub fn needs_grow_by(&self, extra: u64) -> bool {
        self.used + extra > self.load_limit()
    }

    /// Inserts the table takes before [`Index::needs_grow_by`] says grow.
    pub fn room(&self) -> u64 {
        self.load_limit().saturating_sub(self.used)
    }

    /// Most used slots (valid and deleted) before the table must grow.
    fn load_limit(&self) -> u64 {
        self.cap * MAX_LOAD_PCT / 100
    }

    /// A new table at `path` holding every valid slot of this one, with
    /// room for `extra` more keys, [`TARGET_LOAD_PCT`] full after them
    /// (`load_pct` overrides the fill: a rebuild grows with room to spare
    /// and packs the table once at the end).
    pub fn rehash(
        &self,
        path: &Path,
        hdr: &HeaderInfo,
        extra: u64,
        load_pct: Option<u64>,
    ) -> Result<Index, StoreError> {
        let want = (self.live + extra) * 100 / load_pct.unwrap_or(TARGET_LOAD_PCT) + 1;
        let mut n = Index::create(path, want, hdr)?;
        // Homes rise with the hash, so this table holds its keys nearly in
        // hash order, and the new one can be filled front to back with a
        // cursor instead of a probe per key (the probes were most of a
        // rehash, and a table kept 76-90% full rehashes every 18% of
        // growth, under the write lock). A key goes to its new home, or
        // right after the run of full slots that covers its home; a key
        // that fits neither (out of order, or past the end) is inserted
        // by probing, as are the keys that wrapped around this table's end.
        let cap = n.cap as usize;
        let mut cursor = 0usize;
        let mut run_start = 0usize;
        let mut wrapped = Vec::new();
        for i in 0..self.cap as usize {
            let Some(s) = self.slot(i) else { continue };
            if i < self.home(s.hash) {
                wrapped.push(s);
                continue;
            }
            let h = n.home(s.hash);
            if h >= cursor {
                if h > cursor {
                    run_start = h;
                }
                n.insert_at(h, &s);
                cursor = h + 1;
            } else if h >= run_start && cursor < cap {
                n.insert_at(cursor, &s);
                cursor += 1;
            } else {
                let at = n.insert(&s)?;
                if at >= cursor {
                    cursor = at + 1;
                }
            }
        }
        for s in wrapped {
            n.insert(&s)?;
        }
        Ok(n)
    }

    /// Every valid slot, in table order.
    pub fn valid_slots(&self) -> impl Iterator<Item = Slot> + '_ {
        (0..self.cap as usize).filter_map(|i| self.slot(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engine::log::{ReplayPoint, MAX_LANES};
    use proptest::prelude::*;

    fn hdr() -> HeaderInfo {
        HeaderInfo {
            log_id: 1,
            boot: 2,
            clean: false,
            replay: ReplayPoint {
                seq: 0,
                max_seg: 0,
                lanes: [None; MAX_LANES],
            },
            next_seq: 0,
            table_crc: 0,
        }
    }

    /// Slot `n`: its position names it, so a lookup can tell keys apart.
    fn slot(hash: u32, n: u32) -> Slot {
        Slot {
            hash,
            seg: 1,
            off: n,
            len: 64,
            group: 0,
            tag: 1,
        }
    }

    /// Every key of `want` is found by probing from its home, nothing else
    /// is there, and no probe crosses an empty slot to reach its key.
    fn check(ix: &Index, want: &[Slot]) {
        assert_eq!(ix.live, want.len() as u64);
        assert_eq!(ix.valid_slots().count(), want.len());
        for s in want {
            let found = ix.find(s.hash, |x| Ok(x.off == s.off)).unwrap();
            assert_eq!(found.map(|f| f.1), Some(*s), "key {} lost", s.off);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The cursor fill of a rehash gives a table where every key is
        /// found, for any hashes (clustered ones make runs out of order,
        /// high ones wrap around the end), growing and shrinking.
        #[test]
        fn a_rehash_keeps_every_key_findable(
            hashes in prop::collection::vec(
                prop_oneof![any::<u32>(), (u32::MAX - 4096)..=u32::MAX, 0u32..4096],
                1..3000,
            ),
            dead in prop::collection::vec(any::<bool>(), 3000),
            load in 30u64..=89,
        ) {
            let d = tempfile::tempdir().unwrap();
            let mut ix = Index::create(&d.path().join("a"), 1024, &hdr()).unwrap();
            let mut live = Vec::new();
            for (n, &h) in hashes.iter().enumerate() {
                if ix.needs_grow_by(1) {
                    ix = ix.rehash(&d.path().join(format!("g{n}")), &hdr(), 1, None).unwrap();
                }
                let s = slot(h, n as u32);
                let i = ix.insert(&s).unwrap();
                if dead[n] {
                    ix.remove(i);
                } else {
                    live.push(s);
                }
            }
            check(&ix, &live);
            let n = ix.rehash(&d.path().join("b"), &hdr(), 0, Some(load)).unwrap();
            check(&n, &live);
            let n = n.rehash(&d.path().join("c"), &hdr(), 0, Some(90)).unwrap();
            check(&n, &live);
        }
    }
}
