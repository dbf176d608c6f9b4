//! The persistent-memory index: an open-addressing hash table (linear
//! probing) in a memory-mapped file, from a key's 64-bit hash to where its
//! live record is in the log. A slot is [`SLOT_LEN`] bytes; the full key
//! lives only in the record, so every lookup verifies it there.
//!
//! Layout (little-endian; also in `docs/store.md`): a header page
//! ([`IDX_HEADER_LEN`] bytes: magic, version, slot length, capacity, log
//! id, boot id, clean flag, replay position, next sequence number, table
//! CRC, header CRC), then `capacity` slots of
//! `hash u64 | seg u32 | off u32 | len u32 | group u32 | tag u16 | pad u16 | state u32`.
//!
//! Crash ordering: a slot is published by writing its fields and then its
//! `state` word last (after a release fence); deletion writes only the state
//! word (`DELETED`, never a backward shift, so a crash cannot lose another
//! key's slot). A slot torn by a crash belongs to a commit at or after the
//! header's replay position, which recovery re-applies. The header says
//! `clean` only after the table was flushed (`msync`) with its CRC; it is
//! made dirty (and flushed) before the first change after open.

use super::log::Pos;
use super::sys;
use crate::store::StoreError;
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

/// `"SEALIDX1"`.
pub const IDX_MAGIC: &[u8; 8] = b"SEALIDX1";
/// Layout version of the index file.
pub const IDX_VERSION: u32 = 1;
/// Length of the header page.
pub const IDX_HEADER_LEN: usize = 4096;
/// Length of a slot.
pub const SLOT_LEN: usize = 32;
/// Grow (rehash into a table twice as large) above this fill.
pub const MAX_LOAD_PCT: u64 = 70;
/// Smallest table.
pub const MIN_CAPACITY: u64 = 1024;

/// Slot state: never used (ends a probe).
pub const EMPTY: u32 = 0;
/// Slot state: deleted (a probe continues past it).
pub const DELETED: u32 = 1;
/// Slot state: valid.
pub const VALID: u32 = 0x5641_4c44;

/// One slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    /// The key's hash.
    pub hash: u64,
    /// Segment of the record.
    pub seg: u32,
    /// Offset of the record.
    pub off: u32,
    /// Length of the record (padding included).
    pub len: u32,
    /// The user's group hash (e.g. a directory's, for listings).
    pub group: u32,
    /// The user's tag (kind of key and flags).
    pub tag: u16,
    /// [`EMPTY`], [`DELETED`] or [`VALID`].
    pub state: u32,
}

impl Slot {
    /// The live slot of a record just appended at (`seg`, `off`).
    pub(crate) fn of_record(h: &super::record::RecHeader, key: &[u8], seg: u32, off: u32) -> Slot {
        Slot {
            hash: super::kv::key_hash(key),
            seg,
            off,
            len: h.total_len() as u32,
            group: h.group,
            tag: h.tag,
            state: 0,
        }
    }
}

impl Slot {
    /// Where the record is.
    pub fn pos(&self) -> Pos {
        Pos {
            seg: self.seg,
            off: self.off,
        }
    }
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
    /// Every commit before this position is in the table.
    pub replay: Pos,
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
const H_REPLAY: usize = 44;
const H_NEXT_SEQ: usize = 52;
const H_TABLE_CRC: usize = 60;
const H_CRC: usize = 64;

fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn rd64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

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
    /// Creates a new, empty table at `path` (replacing any file there),
    /// dirty, with `hdr`.
    pub fn create(path: &Path, cap: u64, hdr: &HeaderInfo) -> Result<Index, StoreError> {
        let cap = cap.max(MIN_CAPACITY).next_power_of_two();
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
        if crc32c::crc32c(&h[..H_CRC]) != rd32(h, H_CRC) {
            return Err("header checksum mismatch".into());
        }
        let version = rd32(h, H_VERSION);
        if version != IDX_VERSION || rd32(h, H_SLOT_LEN) as usize != SLOT_LEN {
            return Err(format!(
                "layout version {version}, this build reads {IDX_VERSION}"
            ));
        }
        let cap = rd64(h, H_CAP);
        if !cap.is_power_of_two()
            || cap < MIN_CAPACITY
            || IDX_HEADER_LEN as u64 + cap * SLOT_LEN as u64 != flen
        {
            return Err(format!(
                "capacity {cap} does not match the file length {flen}"
            ));
        }
        let info = HeaderInfo {
            log_id: rd64(h, H_LOG_ID),
            boot: rd64(h, H_BOOT),
            clean: rd32(h, H_CLEAN) == 1,
            replay: Pos::from_raw(rd64(h, H_REPLAY)),
            next_seq: rd64(h, H_NEXT_SEQ),
            table_crc: rd32(h, H_TABLE_CRC),
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
            match ix.slot(i).state {
                EMPTY => {}
                VALID => {
                    ix.live += 1;
                    ix.used += 1;
                }
                _ => ix.used += 1,
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
        h[H_REPLAY..H_REPLAY + 8].copy_from_slice(&hdr.replay.raw().to_le_bytes());
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

    /// Slot `i`.
    pub fn slot(&self, i: usize) -> Slot {
        let b = &self.map[IDX_HEADER_LEN + i * SLOT_LEN..IDX_HEADER_LEN + (i + 1) * SLOT_LEN];
        Slot {
            hash: rd64(b, 0),
            seg: rd32(b, 8),
            off: rd32(b, 12),
            len: rd32(b, 16),
            group: rd32(b, 20),
            tag: u16::from_le_bytes([b[24], b[25]]),
            state: rd32(b, 28),
        }
    }

    fn set_state(&mut self, i: usize, state: u32) {
        fence(Ordering::Release);
        let at = IDX_HEADER_LEN + i * SLOT_LEN + 28;
        self.map[at..at + 4].copy_from_slice(&state.to_le_bytes());
    }

    /// Writes a slot's fields, then its state word last.
    fn write_slot(&mut self, i: usize, s: &Slot) {
        let at = IDX_HEADER_LEN + i * SLOT_LEN;
        let b = &mut self.map[at..at + SLOT_LEN];
        b[0..8].copy_from_slice(&s.hash.to_le_bytes());
        b[8..12].copy_from_slice(&s.seg.to_le_bytes());
        b[12..16].copy_from_slice(&s.off.to_le_bytes());
        b[16..20].copy_from_slice(&s.len.to_le_bytes());
        b[20..24].copy_from_slice(&s.group.to_le_bytes());
        b[24..26].copy_from_slice(&s.tag.to_le_bytes());
        b[26..28].copy_from_slice(&[0, 0]);
        self.set_state(i, VALID);
    }

    /// The valid slot of the key with `hash` for which `is_key` says yes.
    pub fn find(
        &self,
        hash: u64,
        mut is_key: impl FnMut(&Slot) -> Result<bool, StoreError>,
    ) -> Result<Option<(usize, Slot)>, StoreError> {
        let mask = (self.cap - 1) as usize;
        let mut i = hash as usize & mask;
        for _ in 0..self.cap {
            let s = self.slot(i);
            match s.state {
                EMPTY => return Ok(None),
                VALID if s.hash == hash && is_key(&s)? => return Ok(Some((i, s))),
                _ => {}
            }
            i = (i + 1) & mask;
        }
        Ok(None)
    }

    /// Replaces slot `i` (found by [`Index::find`]) with `s`.
    pub fn replace(&mut self, i: usize, s: &Slot) {
        self.write_slot(i, s);
    }

    /// Inserts `s` for a key known to be absent. Fails only when the table
    /// is full (the caller grows first).
    pub fn insert(&mut self, s: &Slot) -> Result<usize, StoreError> {
        let mask = (self.cap - 1) as usize;
        let mut i = s.hash as usize & mask;
        for _ in 0..self.cap {
            let st = self.slot(i).state;
            if st != VALID {
                if st == EMPTY {
                    self.used += 1;
                }
                self.write_slot(i, s);
                self.live += 1;
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
        Err(StoreError::io(
            "index insert",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ))
    }

    /// Deletes slot `i`.
    pub fn remove(&mut self, i: usize) {
        self.set_state(i, DELETED);
        self.live -= 1;
    }

    /// Whether one more insert would pass the load limit.
    pub fn needs_grow(&self) -> bool {
        (self.used + 1) * 100 > self.cap * MAX_LOAD_PCT
    }

    /// A new table at `path` holding every valid slot of this one, sized
    /// for the live slots at half load.
    pub fn rehash(&self, path: &Path, hdr: &HeaderInfo) -> Result<Index, StoreError> {
        let want = ((self.live + 1) * 2).max(MIN_CAPACITY);
        let mut n = Index::create(path, want, hdr)?;
        for i in 0..self.cap as usize {
            let s = self.slot(i);
            if s.state == VALID {
                n.insert(&s)?;
            }
        }
        Ok(n)
    }

    /// Every valid slot, in table order.
    pub fn valid_slots(&self) -> impl Iterator<Item = Slot> + '_ {
        (0..self.cap as usize)
            .map(|i| self.slot(i))
            .filter(|s| s.state == VALID)
    }
}
