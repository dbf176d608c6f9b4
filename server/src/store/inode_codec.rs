//! The stored form of an [`InodeRecord`] in the packed log: a fixed
//! 72-byte head that decodes with a few loads, then the variable strings.
//!
//! Every `stat` decodes one of these, and with `postcard` (varints, field
//! by field through serde) the decode was a sixth of a `stat` in the store
//! bench. The head is 72 bytes where postcard took about 40: a small-file
//! record in the meta log grows by about a fifth.
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format (1) |
//! | 1 | kind: 0 file, 1 directory, 2 symlink |
//! | 2 | state: 0 normal, 1 pending, 2 unlinking |
//! | 3 | 1 if a symlink target follows |
//! | 4..12 | ino |
//! | 12..16, 16..20, 20..24 | mode, uid, gid |
//! | 24..32 | size |
//! | 32..36 | nlink |
//! | 36..48, 48..60, 60..72 | atime, mtime, ctime (i64 seconds, u32 nanoseconds) |
//! | 72.. | the target, then (pending, unlinking) parent and name: each a u32 length and UTF-8 bytes |
//!
//! All integers little-endian.

use super::engine::record::{u32_at, u64_at};
use super::{InodeRecord, RecordState};
use sealfs_proto::{Attr, FileKind, Inode, Timespec};

/// Format byte of this layout.
const FORMAT: u8 = 1;
/// Length of the fixed head.
const HEAD: usize = 72;

/// Encodes `r`.
pub(crate) fn encode(r: &InodeRecord) -> Vec<u8> {
    let a = &r.inode.attr;
    let mut b = Vec::with_capacity(HEAD + r.inode.target.as_ref().map_or(0, |t| 4 + t.len()));
    b.push(FORMAT);
    b.push(match a.kind {
        FileKind::File => 0,
        FileKind::Dir => 1,
        FileKind::Symlink => 2,
    });
    let (state, names) = match &r.state {
        RecordState::Normal => (0, None),
        RecordState::Pending { parent, name } => (1, Some((parent, name))),
        RecordState::Unlinking { parent, name } => (2, Some((parent, name))),
    };
    b.push(state);
    b.push(u8::from(r.inode.target.is_some()));
    b.extend_from_slice(&a.ino.to_le_bytes());
    for v in [a.mode, a.uid, a.gid] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&a.size.to_le_bytes());
    b.extend_from_slice(&a.nlink.to_le_bytes());
    for t in [a.atime, a.mtime, a.ctime] {
        b.extend_from_slice(&t.sec.to_le_bytes());
        b.extend_from_slice(&t.nsec.to_le_bytes());
    }
    let mut string = |s: &str| {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    if let Some(t) = &r.inode.target {
        string(t);
    }
    if let Some((parent, name)) = names {
        string(parent);
        string(name);
    }
    b
}

/// Reads the stored form; an error says what is wrong, never a panic.
pub(crate) fn decode(b: &[u8]) -> Result<InodeRecord, String> {
    if b.len() < HEAD {
        return Err(format!(
            "{} bytes, shorter than the {HEAD}-byte head",
            b.len()
        ));
    }
    if b[0] != FORMAT {
        return Err(format!("unknown inode record format {}", b[0]));
    }
    let kind = match b[1] {
        0 => FileKind::File,
        1 => FileKind::Dir,
        2 => FileKind::Symlink,
        k => return Err(format!("unknown file kind {k}")),
    };
    let time_at = |at: usize| Timespec {
        sec: u64_at(b, at) as i64,
        nsec: u32_at(b, at + 8),
    };
    let attr = Attr {
        ino: u64_at(b, 4),
        kind,
        mode: u32_at(b, 12),
        uid: u32_at(b, 16),
        gid: u32_at(b, 20),
        size: u64_at(b, 24),
        nlink: u32_at(b, 32),
        atime: time_at(36),
        mtime: time_at(48),
        ctime: time_at(60),
    };
    let mut rest = &b[HEAD..];
    let mut string = || -> Result<String, String> {
        if rest.len() < 4 {
            return Err("a string's length is cut off".into());
        }
        let n = u32_at(rest, 0) as usize;
        let s = rest
            .get(4..4 + n)
            .ok_or_else(|| format!("a string of {n} bytes runs past the record"))?;
        rest = &rest[4 + n..];
        String::from_utf8(s.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    };
    let target = match b[3] {
        0 => None,
        1 => Some(string()?),
        t => return Err(format!("bad target flag {t}")),
    };
    let state = match b[2] {
        0 => RecordState::Normal,
        1 | 2 => {
            let (parent, name) = (string()?, string()?);
            if b[2] == 1 {
                RecordState::Pending { parent, name }
            } else {
                RecordState::Unlinking { parent, name }
            }
        }
        s => return Err(format!("unknown record state {s}")),
    };
    if !rest.is_empty() {
        return Err(format!("{} bytes after the record", rest.len()));
    }
    Ok(InodeRecord {
        inode: Inode { attr, target },
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = InodeRecord> {
        let time =
            (any::<i64>(), 0u32..1_000_000_000).prop_map(|(sec, nsec)| Timespec { sec, nsec });
        let attr = (
            any::<u64>(),
            0u8..3,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            time.clone(),
            time.clone(),
            time,
        )
            .prop_map(
                |(ino, k, mode, uid, gid, size, nlink, atime, mtime, ctime)| Attr {
                    ino,
                    kind: [FileKind::File, FileKind::Dir, FileKind::Symlink][k as usize],
                    mode,
                    uid,
                    gid,
                    size,
                    nlink,
                    atime,
                    mtime,
                    ctime,
                },
            );
        let state = prop_oneof![
            Just(RecordState::Normal),
            (".{0,20}", ".{0,20}").prop_map(|(parent, name)| RecordState::Pending { parent, name }),
            (".{0,20}", ".{0,20}")
                .prop_map(|(parent, name)| RecordState::Unlinking { parent, name }),
        ];
        (attr, proptest::option::of(".{0,40}"), state).prop_map(|(attr, target, state)| {
            InodeRecord {
                inode: Inode { attr, target },
                state,
            }
        })
    }

    proptest! {
        #[test]
        fn records_come_back_as_they_went_in(r in record()) {
            prop_assert_eq!(decode(&encode(&r)), Ok(r));
        }

        #[test]
        fn cut_or_changed_bytes_give_an_error_or_a_record_never_a_panic(
            r in record(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let b = encode(&r);
            let _ = decode(&b[..cut.index(b.len())]);
            let mut c = b.clone();
            let i = flip.index(c.len());
            c[i] = byte;
            let _ = decode(&c);
            prop_assert!(decode(&b[..b.len() - 1]).is_err());
        }
    }
}
