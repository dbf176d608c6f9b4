//! The record format of the packed log (see `docs/store.md`).
//!
//! A record is a 32-byte header, the key, the value, and zero padding to a
//! multiple of [`REC_ALIGN`]. All integers are little-endian. The check
//! value covers the header (without the check field) and the body: see
//! [`body_check`] and [`check_value`]. It is an XXH3 hash, not a CRC: on
//! this project's machines CRC32C runs at under 5 GB/s (the `crc32`
//! instruction and PCLMULQDQ are slow there), XXH3 at 14 GB/s, and every
//! read checks its record, so a 4 KiB read spent more time on its CRC
//! than on anything else. A torn or flipped record never decodes (but for
//! a chance of 2^-32). A commit of several operations is a run of
//! records with one sequence number; only the last carries
//! [`FLAG_COMMIT`], and a run without it (a torn tail) is never applied.

use crate::store::StoreError;

/// `"SLR1"`: the first four bytes of every record.
pub const REC_MAGIC: u32 = u32::from_le_bytes(*b"SLR1");
/// Length of a record header.
pub const REC_HEADER_LEN: usize = 32;
/// Records start at multiples of this.
pub const REC_ALIGN: usize = 8;
/// Longest key.
pub const MAX_KEY_LEN: usize = 16 * 1024;

/// Kind: the key now has this value.
pub const KIND_PUT: u8 = 1;
/// Kind: the key is deleted (a tombstone).
pub const KIND_DEL: u8 = 2;
/// Flag: the last record of its commit.
pub const FLAG_COMMIT: u8 = 1;

// Header field offsets.
const OFF_MAGIC: usize = 0;
const OFF_KIND: usize = 4;
const OFF_FLAGS: usize = 5;
const OFF_TAG: usize = 6;
const OFF_KEY_LEN: usize = 8;
const OFF_VAL_LEN: usize = 12;
const OFF_SEQ: usize = 16;
const OFF_GROUP: usize = 24;
const OFF_CHECK: usize = 28;

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecHeader {
    /// [`KIND_PUT`] or [`KIND_DEL`].
    pub kind: u8,
    /// [`FLAG_COMMIT`] or 0.
    pub flags: u8,
    /// The user's tag, copied into the index slot.
    pub tag: u16,
    /// Key length.
    pub key_len: u32,
    /// Value length.
    pub val_len: u32,
    /// Sequence number of the commit.
    pub seq: u64,
    /// The user's group hash, copied into the index slot.
    pub group: u32,
}

impl RecHeader {
    /// Length of the whole record, padding included.
    pub fn total_len(&self) -> usize {
        padded(REC_HEADER_LEN + self.key_len as usize + self.val_len as usize)
    }
}

/// `n` rounded up to [`REC_ALIGN`].
pub fn padded(n: usize) -> usize {
    (n + REC_ALIGN - 1) & !(REC_ALIGN - 1)
}

/// The little-endian `u32` at `at` of `b` (which must hold it).
#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The little-endian `u64` at `at` of `b` (which must hold it).
#[inline]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends one sealed record to `out` (tests; the log seals its own).
#[cfg(test)]
pub fn encode(out: &mut Vec<u8>, h: &RecHeader, key: &[u8], value: &[u8]) {
    let u = encode_unsealed(out, h, key, value);
    seal(out, &u, h.seq);
}

/// A record encoded without its sequence number and check value yet:
/// where it starts in its buffer and the check value of the rest.
#[derive(Clone, Copy, Debug)]
pub struct Unsealed {
    /// Offset of the record in its buffer.
    pub at: usize,
    check_without_seq: u32,
}

/// Appends one record to `out` with sequence number 0 and no check value; the
/// key and value are copied and checksummed here, so that [`seal`], which
/// runs under the log's writer lock, only touches the 32-byte header.
pub fn encode_unsealed(out: &mut Vec<u8>, h: &RecHeader, key: &[u8], value: &[u8]) -> Unsealed {
    let start = out.len();
    let mut hdr = [0u8; REC_HEADER_LEN];
    hdr[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&REC_MAGIC.to_le_bytes());
    hdr[OFF_KIND] = h.kind;
    hdr[OFF_FLAGS] = h.flags;
    hdr[OFF_TAG..OFF_TAG + 2].copy_from_slice(&h.tag.to_le_bytes());
    hdr[OFF_KEY_LEN..OFF_KEY_LEN + 4].copy_from_slice(&(key.len() as u32).to_le_bytes());
    hdr[OFF_VAL_LEN..OFF_VAL_LEN + 4].copy_from_slice(&(value.len() as u32).to_le_bytes());
    hdr[OFF_GROUP..OFF_GROUP + 4].copy_from_slice(&h.group.to_le_bytes());
    out.extend_from_slice(&hdr);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let end = start + REC_HEADER_LEN + key.len() + value.len();
    let check = body_check(&hdr, &out[start + REC_HEADER_LEN..end]);
    out.resize(start + padded(REC_HEADER_LEN + key.len() + value.len()), 0);
    Unsealed {
        at: start,
        check_without_seq: check,
    }
}

/// The check value of a record without its sequence number: the XXH3 of
/// its body (key and value, which lie together), seeded with the XXH3 of
/// its header up to the check field with the sequence number zeroed.
fn body_check(hdr: &[u8], body: &[u8]) -> u32 {
    let mut head = [0u8; OFF_CHECK];
    head.copy_from_slice(&hdr[..OFF_CHECK]);
    head[OFF_SEQ..OFF_SEQ + 8].fill(0);
    let seed = xxhash_rust::xxh3::xxh3_64(&head);
    xxhash_rust::xxh3::xxh3_64_with_seed(body, seed) as u32
}

/// The check value of a record: [`body_check`] XOR the XXH3 of the
/// sequence number, so that the sequence number can be set last, cheaply.
fn check_value(without_seq: u32, seq: u64) -> u32 {
    without_seq ^ xxhash_rust::xxh3::xxh3_64(&seq.to_le_bytes()) as u32
}

/// Writes the sequence number and the check value of a record made by
/// [`encode_unsealed`]: 12 bytes and one hash of 8 bytes, under the log's
/// lock.
pub fn seal(buf: &mut [u8], u: &Unsealed, seq: u64) {
    let hdr = &mut buf[u.at..u.at + REC_HEADER_LEN];
    hdr[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    hdr[OFF_CHECK..OFF_CHECK + 4]
        .copy_from_slice(&check_value(u.check_without_seq, seq).to_le_bytes());
}

/// Decodes only the header (no check: the body is not there yet).
/// `None` if the magic or the lengths are wrong.
pub fn decode_header(b: &[u8]) -> Option<RecHeader> {
    if b.len() < REC_HEADER_LEN || u32_at(b, OFF_MAGIC) != REC_MAGIC {
        return None;
    }
    let h = RecHeader {
        kind: b[OFF_KIND],
        flags: b[OFF_FLAGS],
        tag: u16_at(b, OFF_TAG),
        key_len: u32_at(b, OFF_KEY_LEN),
        val_len: u32_at(b, OFF_VAL_LEN),
        seq: u64_at(b, OFF_SEQ),
        group: u32_at(b, OFF_GROUP),
    };
    if (h.kind != KIND_PUT && h.kind != KIND_DEL)
        || h.key_len as usize > MAX_KEY_LEN
        || h.flags & !FLAG_COMMIT != 0
    {
        return None;
    }
    Some(h)
}

/// Whether the bytes after a segment's last record are zeros only: the
/// zeros the log writes ahead of its appends, never used (a record starts
/// with its magic, so it is never all zeros).
pub fn unused_tail(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// A record checked against its check value: header, key, value.
pub struct Rec<'a> {
    /// The header.
    pub h: RecHeader,
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

/// Decodes and verifies the record at the start of `b`.
pub fn decode(b: &[u8]) -> Result<Rec<'_>, StoreError> {
    let h = decode_header(b).ok_or_else(|| StoreError::Corrupt("bad record header".into()))?;
    let body = REC_HEADER_LEN + h.key_len as usize + h.val_len as usize;
    if b.len() < body {
        return Err(StoreError::Corrupt(format!(
            "short record: {} of {body} bytes",
            b.len()
        )));
    }
    let key = &b[REC_HEADER_LEN..REC_HEADER_LEN + h.key_len as usize];
    let value = &b[REC_HEADER_LEN + h.key_len as usize..body];
    let check = check_value(body_check(b, &b[REC_HEADER_LEN..body]), h.seq);
    let stored = u32_at(b, OFF_CHECK);
    if check != stored {
        return Err(StoreError::Checksum {
            got: check,
            expected: stored,
        });
    }
    Ok(Rec { h, key, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_flip() {
        let h = RecHeader {
            kind: KIND_PUT,
            flags: FLAG_COMMIT,
            tag: 7,
            key_len: 3,
            val_len: 5,
            seq: 99,
            group: 42,
        };
        let mut out = Vec::new();
        encode(&mut out, &h, b"key", b"value");
        assert_eq!(out.len(), 40);
        let r = decode(&out).unwrap();
        assert_eq!(r.h, h);
        assert_eq!(r.key, b"key");
        assert_eq!(r.value, b"value");
        for i in 0..REC_HEADER_LEN + 8 {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {i} must not decode");
        }
        assert!(decode(&out[..20]).is_err());
    }

    #[test]
    fn the_check_value_covers_the_sequence_number() {
        for (k, v) in [
            (&b""[..], &b""[..]),
            (b"k", b"value"),
            (b"key", &[9u8; 5000][..]),
        ] {
            let h = RecHeader {
                kind: KIND_PUT,
                flags: 0,
                tag: 2,
                key_len: k.len() as u32,
                val_len: v.len() as u32,
                seq: 1234567,
                group: 5,
            };
            let mut whole = vec![1u8; 3];
            let u = encode_unsealed(&mut whole, &h, k, v);
            seal(&mut whole, &u, h.seq);
            let r = decode(&whole[3..]).unwrap();
            assert_eq!(r.h, h);
            assert_eq!((r.key, r.value), (k, v));
            for bit in 0..64 {
                let mut bad = whole.clone();
                bad[3 + OFF_SEQ + bit / 8] ^= 1 << (bit % 8);
                assert!(decode(&bad[3..]).is_err(), "seq bit {bit} flipped");
            }
        }
    }
}
