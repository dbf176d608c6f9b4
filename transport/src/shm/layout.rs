//! The shared region of one ring pair: its byte layout, the typed view of
//! it, and the producer-side allocator of its data areas.
//!
//! ```text
//! offset            size          what
//! 0                 4096          Control: magic, layout version, sizes, then
//!                                 each index / flag on its own cache line
//! 4096              64 × 16       submission entries (client → server)
//! 4096 + 1024       64 × 16       completion entries (server → client)
//! 8192              DATA_CAP      submission data (request frames)
//! 8192 + DATA_CAP   DATA_CAP      completion data (reply frames)
//! ```
//!
//! An entry is `(id: u64, off: u32, len: u32)`: the frame with request id
//! `id` lies at `off..off+len` of its direction's data area, encoded exactly
//! as on TCP (`sealfs_proto::frame`). Indexes are monotonic u64 counters;
//! entry `i` lives in slot `i % ENTRIES`.
//!
//! Ownership (single producer, single consumer per direction): the producer
//! writes data, then the entry, then publishes with a `Release` store of
//! `prod`; the consumer reads `prod` with `Acquire`, **copies** the frame
//! out, then publishes `cons` with `Release`. Data space is freed only
//! through `cons`: each producer remembers privately where each of its
//! frames ends, so it never trusts the peer about data positions.
//!
//! Nothing read from the region is trusted: every index, offset and length
//! is checked against the constants before use ([`Region::decode_frame`],
//! [`check_cons`]); a bad one is a [`Violation`] that disconnects the peer.

use super::sys::Mapping;
use crossbeam_utils::CachePadded;
use sealfs_proto::frame::decode_payload;
use sealfs_proto::{FrameHeader, FrameKind, FRAME_HEADER_LEN, MAX_FRAME_LEN, PROTO_VERSION};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `b"SEALRING"` little-endian: the first word of a region and of the hello.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SEALRING");
/// Version of this layout.
pub const LAYOUT_VERSION: u64 = 1;
/// Entries per ring (a power of two, ≥ the server's in-flight limit).
pub const ENTRIES: u64 = 64;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 16;
/// Offset of the submission entries.
pub const SQ_OFF: usize = 4096;
/// Offset of the completion entries.
pub const CQ_OFF: usize = SQ_OFF + ENTRIES as usize * ENTRY_LEN;
/// Offset of the submission data area.
pub const DATA_OFF: usize = 8192;
/// Bytes of each data area: the largest legal frame, rounded up to a page,
/// so any single message fits an empty area. Pages are allocated on first
/// touch and the allocator restarts at 0 whenever an area drains, so a ring
/// that carries small messages touches only a few pages.
pub const DATA_CAP: usize = (FRAME_HEADER_LEN + MAX_FRAME_LEN as usize - 10 + 4095) & !4095;
/// Total bytes of a region.
pub const REGION_LEN: usize = DATA_OFF + 2 * DATA_CAP;

/// The control page. Each index and flag is on its own cache line, so the
/// two sides never write the same line.
#[repr(C)]
pub struct Control {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU64,
    /// [`ENTRIES`].
    pub entries: AtomicU64,
    /// [`DATA_CAP`].
    pub data_cap: AtomicU64,
    /// Submission entries published by the client.
    pub sq_prod: CachePadded<AtomicU64>,
    /// Submission entries consumed (copied out) by the server.
    pub sq_cons: CachePadded<AtomicU64>,
    /// Completion entries published by the server.
    pub cq_prod: CachePadded<AtomicU64>,
    /// Completion entries consumed by the client.
    pub cq_cons: CachePadded<AtomicU64>,
    /// 1 while the server's poller sleeps: a client that publishes work
    /// swaps it to 0 and rings the doorbell (one byte on the socket).
    pub server_sleeping: CachePadded<AtomicU32>,
    /// 1 while the client sleeps on `client_futex`.
    pub client_sleeping: CachePadded<AtomicU32>,
    /// The word the client sleeps on; the server bumps it and wakes.
    pub client_futex: CachePadded<AtomicU32>,
}

const _: () = assert!(std::mem::size_of::<Control>() <= SQ_OFF);
const _: () = assert!(CQ_OFF + ENTRIES as usize * ENTRY_LEN <= DATA_OFF);

/// One ring entry.
#[repr(C)]
pub struct Entry {
    /// Request id (the frame header's id).
    pub id: AtomicU64,
    /// Offset of the frame in its data area.
    pub off: AtomicU32,
    /// Length of the whole frame, header included.
    pub len: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_LEN);

/// Which direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client → server.
    Sq,
    /// Server → client.
    Cq,
}

/// The peer broke the ring protocol (or wrote garbage into the region).
#[derive(Debug)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mapped region with its typed accessors.
pub struct Region {
    map: Mapping,
}

// SAFETY: the region is only accessed through atomics (control page and
// entries) and through bounds-checked byte copies; it is shared with another
// process by design, so sharing it between threads adds nothing.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Wraps a mapping of exactly [`REGION_LEN`] bytes.
    pub fn new(map: Mapping) -> Region {
        assert_eq!(map.len(), REGION_LEN);
        Region { map }
    }

    /// Writes the constants of a fresh (all-zero) region.
    pub fn init(&self) {
        let c = self.control();
        c.entries.store(ENTRIES, Ordering::Relaxed);
        c.data_cap.store(DATA_CAP as u64, Ordering::Relaxed);
        c.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        c.magic.store(MAGIC, Ordering::Release);
    }

    /// Checks the constants a server wrote.
    pub fn check(&self) -> Result<(), Violation> {
        let c = self.control();
        let got = (
            c.magic.load(Ordering::Acquire),
            c.version.load(Ordering::Relaxed),
            c.entries.load(Ordering::Relaxed),
            c.data_cap.load(Ordering::Relaxed),
        );
        if got != (MAGIC, LAYOUT_VERSION, ENTRIES, DATA_CAP as u64) {
            return Err(Violation(format!(
                "region header {got:x?} is not this build's layout"
            )));
        }
        Ok(())
    }

    /// The control page.
    pub fn control(&self) -> &Control {
        // SAFETY: the mapping is page aligned and at least REGION_LEN bytes;
        // Control is made of atomics only, valid for any bit pattern, and
        // lives as long as `self`.
        unsafe { &*(self.map.ptr() as *const Control) }
    }

    /// Slot `idx % ENTRIES` of a ring.
    pub fn entry(&self, dir: Dir, idx: u64) -> &Entry {
        let base = match dir {
            Dir::Sq => SQ_OFF,
            Dir::Cq => CQ_OFF,
        };
        let off = base + (idx % ENTRIES) as usize * ENTRY_LEN;
        // SAFETY: `off + ENTRY_LEN ≤ DATA_OFF < REGION_LEN` (checked by the
        // const asserts), 16-byte aligned; Entry is atomics only.
        unsafe { &*(self.map.ptr().add(off) as *const Entry) }
    }

    fn data_base(&self, dir: Dir) -> *mut u8 {
        let off = match dir {
            Dir::Sq => DATA_OFF,
            Dir::Cq => DATA_OFF + DATA_CAP,
        };
        // SAFETY: both offsets are inside the mapping (REGION_LEN).
        unsafe { self.map.ptr().add(off) }
    }

    /// Runs `f` on `len` bytes at `off` of a data area that this side owns
    /// under the ring protocol (reserved by its [`DataAlloc`], not yet
    /// published). Returns `None` if the range is out of bounds.
    pub fn with_data_mut<R>(
        &self,
        dir: Dir,
        off: usize,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Option<R> {
        if off > DATA_CAP || len > DATA_CAP - off {
            return None;
        }
        // SAFETY: the range is inside the data area (checked). The protocol
        // gives this side sole ownership of it until it is published; a
        // misbehaving peer that writes into it anyway can only garble bytes
        // that it will itself receive, and the slice does not outlive `f`.
        let s = unsafe { std::slice::from_raw_parts_mut(self.data_base(dir).add(off), len) };
        Some(f(s))
    }

    /// Encodes `msg` as a frame of `kind` for `id` straight into the data
    /// area of `dir` at `off`, within `avail` bytes (no copy through a
    /// buffer); its whole length, or `None` when it does not fit there
    /// (or not in a frame).
    pub fn encode_frame_at<T: serde::Serialize>(
        &self,
        dir: Dir,
        off: usize,
        avail: usize,
        kind: FrameKind,
        id: u64,
        msg: &T,
    ) -> Option<usize> {
        self.with_data_mut(dir, off, avail, |buf| {
            if buf.len() < FRAME_HEADER_LEN {
                return None;
            }
            let n = postcard::to_slice(msg, &mut buf[FRAME_HEADER_LEN..])
                .ok()?
                .len();
            write_frame_header(buf, kind, id, n)?;
            Some(FRAME_HEADER_LEN + n)
        })
        .flatten()
    }

    /// Reads the entry at index `idx` of `dir`, checks it and its frame
    /// header, and decodes the frame's payload straight from the data area
    /// (a 1 MiB write's bytes are copied once, into the decoded request).
    /// Returns the header and the decoded message, or why the payload did
    /// not decode. The caller publishes the new `cons` afterwards.
    pub fn decode_frame<T: serde::de::DeserializeOwned>(
        &self,
        dir: Dir,
        idx: u64,
        kind: FrameKind,
    ) -> Result<(FrameHeader, Result<T, String>), Violation> {
        let e = self.entry(dir, idx);
        let id = e.id.load(Ordering::Relaxed);
        let off = e.off.load(Ordering::Relaxed) as usize;
        let len = e.len.load(Ordering::Relaxed) as usize;
        if len < FRAME_HEADER_LEN || off > DATA_CAP || len > DATA_CAP - off {
            return Err(Violation(format!(
                "entry {idx}: frame at {off}+{len} outside the {DATA_CAP}-byte area"
            )));
        }
        let mut hdr = [0u8; FRAME_HEADER_LEN];
        // SAFETY: `off..off+FRAME_HEADER_LEN` is inside the data area
        // (checked above); the header is copied once and checked as a copy.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.data_base(dir).add(off),
                hdr.as_mut_ptr(),
                FRAME_HEADER_LEN,
            );
        }
        let h = FrameHeader::parse(&hdr).map_err(|e| Violation(format!("entry {idx}: {e}")))?;
        if h.kind != kind || h.id != id || h.payload_len() + FRAME_HEADER_LEN != len {
            return Err(Violation(format!(
                "entry {idx}: header (kind {:?}, id {}, {} bytes) does not match the entry (id {id}, {len} bytes)",
                h.kind,
                h.id,
                h.payload_len() + FRAME_HEADER_LEN
            )));
        }
        // SAFETY: the payload range is inside the data area (checked), and
        // the protocol gives this side sole ownership of it until `cons`
        // moves past the entry, which the caller does after this returns;
        // the slice does not outlive this call. A misbehaving peer writing
        // into it meanwhile can only change bytes the decoder reads once
        // each (postcard is a single forward pass; lengths are read before
        // the bytes they cover and every length is checked against the
        // slice), so it garbles its own request, never our memory.
        let payload = unsafe {
            std::slice::from_raw_parts(
                self.data_base(dir).add(off + FRAME_HEADER_LEN),
                h.payload_len(),
            )
        };
        let msg = decode_payload::<T>(payload).map_err(|e| e.to_string());
        Ok((h, msg))
    }

    /// Publishes a frame already written at `off..off+len`.
    pub fn publish(&self, dir: Dir, idx: u64, id: u64, off: usize, len: usize) {
        let e = self.entry(dir, idx);
        e.id.store(id, Ordering::Relaxed);
        e.off.store(off as u32, Ordering::Relaxed);
        e.len.store(len as u32, Ordering::Relaxed);
        let c = self.control();
        let prod = match dir {
            Dir::Sq => &c.sq_prod,
            Dir::Cq => &c.cq_prod,
        };
        prod.store(idx + 1, Ordering::Release);
    }
}

/// Checks a consumer index read from the region against what the producer
/// knows: it may only move forward, and never past `prod`.
pub fn check_cons(cons: u64, seen: u64, prod: u64) -> Result<u64, Violation> {
    if cons < seen || cons > prod {
        return Err(Violation(format!(
            "consumer index {cons} outside {seen}..={prod}"
        )));
    }
    Ok(cons)
}

/// Checks a producer index read from the region against what the consumer
/// knows: at most [`ENTRIES`] ahead, never behind.
pub fn check_prod(prod: u64, cons: u64) -> Result<u64, Violation> {
    if prod < cons || prod - cons > ENTRIES {
        return Err(Violation(format!(
            "producer index {prod} outside {cons}..={}",
            cons + ENTRIES
        )));
    }
    Ok(prod)
}

/// Writes the 14-byte frame header (`docs/protocol.md`) for a payload of
/// `payload_len` bytes. Returns `None` if it exceeds the frame limit.
pub fn write_frame_header(
    out: &mut [u8],
    kind: FrameKind,
    id: u64,
    payload_len: usize,
) -> Option<()> {
    let len = payload_len + 10;
    if len > MAX_FRAME_LEN as usize {
        return None;
    }
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4] = PROTO_VERSION;
    out[5] = kind as u8;
    out[6..14].copy_from_slice(&id.to_le_bytes());
    Some(())
}

/// Producer-side bookkeeping of one data area: monotonic byte counters
/// `head` (next free) and `tail` (start of the oldest unconsumed frame), and
/// where each in-flight frame ends. Entirely private to the producer.
#[derive(Debug, Default)]
pub struct DataAlloc {
    head: u64,
    tail: u64,
    ends: VecDeque<u64>,
}

/// Where a frame can go: counter `start` (its area offset is
/// `start % DATA_CAP`) and the contiguous bytes available there.
#[derive(Clone, Copy, Debug)]
pub struct Space {
    /// Counter value of the first byte.
    pub start: u64,
    /// Offset in the data area.
    pub off: usize,
    /// Contiguous bytes free from `off`.
    pub avail: usize,
}

impl DataAlloc {
    /// Frames published and not yet consumed.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.ends.len()
    }

    /// The largest contiguous free space (an empty area restarts at 0, so
    /// a quiet ring keeps touching the same few pages).
    pub fn best(&mut self) -> Space {
        if self.ends.is_empty() {
            self.head = 0;
            self.tail = 0;
        }
        let cap = DATA_CAP as u64;
        let free = cap - (self.head - self.tail);
        let pos = self.head % cap;
        let to_end = cap - pos;
        if free <= to_end {
            Space {
                start: self.head,
                off: pos as usize,
                avail: free as usize,
            }
        } else if to_end >= free - to_end {
            Space {
                start: self.head,
                off: pos as usize,
                avail: to_end as usize,
            }
        } else {
            Space {
                start: self.head + to_end,
                off: 0,
                avail: (free - to_end) as usize,
            }
        }
    }

    /// Contiguous space for exactly `len` bytes, if there is some now.
    pub fn reserve(&mut self, len: usize) -> Option<Space> {
        let s = self.best();
        if s.avail >= len {
            return Some(s);
        }
        // The larger piece is too small; the other one is smaller still.
        None
    }

    /// Records a frame of `len` bytes written at `space`.
    pub fn commit(&mut self, space: Space, len: usize) {
        let end = space.start + len as u64;
        self.head = end;
        self.ends.push_back(end);
    }

    /// Frees the oldest frame (its entry was consumed).
    pub fn release_one(&mut self) {
        if let Some(end) = self.ends.pop_front() {
            self.tail = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_offsets_match_the_doc() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(Control, sq_prod), 128);
        assert_eq!(offset_of!(Control, sq_cons), 256);
        assert_eq!(offset_of!(Control, cq_prod), 384);
        assert_eq!(offset_of!(Control, cq_cons), 512);
        assert_eq!(offset_of!(Control, server_sleeping), 640);
        assert_eq!(offset_of!(Control, client_sleeping), 768);
        assert_eq!(offset_of!(Control, client_futex), 896);
        assert_eq!(DATA_CAP, (16 << 20) + 4096);
        assert_eq!(REGION_LEN, 33_570_816);
    }

    #[test]
    fn header_matches_proto() {
        let mut b = [0u8; FRAME_HEADER_LEN];
        write_frame_header(&mut b, FrameKind::Reply, 77, 5).unwrap();
        let h = FrameHeader::parse(&b).unwrap();
        assert_eq!((h.kind, h.id, h.payload_len()), (FrameKind::Reply, 77, 5));
        let mut v = Vec::new();
        sealfs_proto::frame::encode_frame(FrameKind::Reply, 77, &sealfs_proto::Reply::Ok, &mut v)
            .unwrap();
        write_frame_header(&mut b, FrameKind::Reply, 77, v.len() - FRAME_HEADER_LEN).unwrap();
        assert_eq!(&v[..FRAME_HEADER_LEN], &b[..]);
    }

    #[test]
    fn alloc_wraps_and_never_overlaps() {
        let mut a = DataAlloc::default();
        let mut live: VecDeque<(usize, usize)> = VecDeque::new();
        let mut rng = 12345u64;
        for _ in 0..20_000 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 14 + (rng >> 33) as usize % (DATA_CAP / 3);
            if rng & 1 == 0 || a.in_flight() == 0 {
                if let Some(s) = a.reserve(len) {
                    assert!(s.off + len <= DATA_CAP);
                    for &(o, l) in &live {
                        assert!(s.off + len <= o || o + l <= s.off, "overlap");
                    }
                    a.commit(s, len);
                    live.push_back((s.off, len));
                    continue;
                }
                assert!(a.in_flight() > 0, "an empty area must fit any frame");
            }
            a.release_one();
            live.pop_front();
        }
    }
}
