//! The record format of the packed log (see `docs/store.md`).
//!
//! A record is a 32-byte header, the key, the value, and zero padding to a
//! multiple of [`REC_ALIGN`]. All integers are little-endian. The CRC32C
//! covers the header (without the CRC field) and the body, so a torn or
//! flipped record never decodes. A commit of several operations is a run of
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
const OFF_CRC: usize = 28;

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

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends one record to `out`.
pub fn encode(out: &mut Vec<u8>, h: &RecHeader, key: &[u8], value: &[u8]) {
    let start = out.len();
    let mut hdr = [0u8; REC_HEADER_LEN];
    hdr[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&REC_MAGIC.to_le_bytes());
    hdr[OFF_KIND] = h.kind;
    hdr[OFF_FLAGS] = h.flags;
    hdr[OFF_TAG..OFF_TAG + 2].copy_from_slice(&h.tag.to_le_bytes());
    hdr[OFF_KEY_LEN..OFF_KEY_LEN + 4].copy_from_slice(&(key.len() as u32).to_le_bytes());
    hdr[OFF_VAL_LEN..OFF_VAL_LEN + 4].copy_from_slice(&(value.len() as u32).to_le_bytes());
    hdr[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&h.seq.to_le_bytes());
    hdr[OFF_GROUP..OFF_GROUP + 4].copy_from_slice(&h.group.to_le_bytes());
    let mut crc = crc32c::crc32c(&hdr[..OFF_CRC]);
    crc = crc32c::crc32c_append(crc, key);
    crc = crc32c::crc32c_append(crc, value);
    hdr[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&hdr);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out.resize(start + padded(REC_HEADER_LEN + key.len() + value.len()), 0);
}

/// Decodes only the header (no CRC check: the body is not there yet).
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

/// A record checked against its CRC: header, key, value.
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
    let mut crc = crc32c::crc32c(&b[..OFF_CRC]);
    crc = crc32c::crc32c_append(crc, key);
    crc = crc32c::crc32c_append(crc, value);
    let stored = u32_at(b, OFF_CRC);
    if crc != stored {
        return Err(StoreError::Checksum {
            got: crc,
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
}
