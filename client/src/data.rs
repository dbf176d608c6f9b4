//! File data: striping in chunks, reads, writes, appends, fsync and statfs.
//!
//! Layout (shared with the servers): the data of inode `ino` is cut into
//! chunks of `map.chunk_size` bytes; chunk `i` lives on
//! `ring.owner_chunk(ino, i)`. The inode record on the path's owner holds the
//! size, which is the truth: bytes past it are never shown, and bytes below
//! it that no chunk server returns (holes, chunks never written) read as
//! zeros.
//!
//! Ordering: a write stores its chunks first and then extends the size
//! (`Extend`), so a concurrent reader never sees a size that covers bytes not
//! yet written. `append` reads the size and writes there; it is not atomic
//! against another appender of the same file.
//!
//! The data calls take the path and the inode number the caller opened: the
//! chunks are keyed by the inode number, the size lives at the path. A read
//! through a path that now names another inode fails with `ESTALE`.

use crate::meta::{want_inode, want_ok};
use crate::route::To;
use crate::Client;
use sealfs_proto::path;
use sealfs_proto::{Errno, FileKind, Reply, Request, StatFs, Timespec};

/// Chunk writes sent per scatter round by one `write_at` (bounds the memory
/// a large write copies at once).
const WRITE_BATCH: usize = 32;
/// Chunk reads sent per scatter round by one `read_at`.
const READ_BATCH: usize = 32;
/// Chunk reads sent together with the `GetAttr` of a read, before the size is
/// known.
const SPECULATIVE_READS: usize = 4;
/// Largest file size (as ext4 on 64-bit Linux allows offsets: `i64::MAX`).
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// The part of one chunk a byte range covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Chunk index.
    pub chunk: u64,
    /// Offset inside the chunk.
    pub off: u32,
    /// Bytes in this chunk.
    pub len: u32,
    /// Offset of these bytes from the start of the range.
    pub buf_off: u64,
}

impl Piece {
    /// File offset of the first byte.
    pub fn file_off(&self, chunk_size: u32) -> u64 {
        self.chunk * u64::from(chunk_size) + u64::from(self.off)
    }
}

/// Splits the byte range `[offset, offset + len)` at chunk boundaries.
/// `chunk_size` must not be zero (maps with a zero chunk size are refused).
pub(crate) fn split_range(offset: u64, len: u64, chunk_size: u32) -> Vec<Piece> {
    let cs = u64::from(chunk_size.max(1));
    let end = offset.saturating_add(len);
    let mut out = Vec::with_capacity(((len / cs) + 2) as usize);
    let mut pos = offset;
    while pos < end {
        let chunk = pos / cs;
        let off = pos % cs;
        let n = (cs - off).min(end - pos);
        out.push(Piece {
            chunk,
            off: off as u32,
            len: n as u32,
            buf_off: pos - offset,
        });
        pos += n;
    }
    out
}

/// Copies the bytes a chunk server returned for `piece` into `buf` (which
/// holds the range starting at the range's offset and is already zeroed up
/// to the file size); bytes past `buf`'s end (the file size) are dropped.
pub(crate) fn place(buf: &mut [u8], piece: &Piece, data: &[u8]) {
    let start = piece.buf_off as usize;
    if start >= buf.len() {
        return;
    }
    let n = data.len().min(piece.len as usize).min(buf.len() - start);
    buf[start..start + n].copy_from_slice(&data[..n]);
}

fn want_data(r: Result<Reply, Errno>) -> Result<bytes::Bytes, Errno> {
    match r? {
        Reply::Data(d) => Ok(d),
        other => Err(other.unexpected()),
    }
}

/// `EISDIR`/`EINVAL` unless `inode` is a regular file, `ESTALE` unless it is
/// inode `ino`.
fn check_file(inode: &sealfs_proto::Inode, ino: u64) -> Result<(), Errno> {
    match inode.attr.kind {
        FileKind::File => {}
        FileKind::Dir => return Err(Errno::EISDIR),
        FileKind::Symlink => return Err(Errno::EINVAL),
    }
    if inode.attr.ino != ino {
        return Err(Errno::ESTALE);
    }
    Ok(())
}

/// A zeroed buffer of `n` bytes; `ENOMEM` rather than an abort when it
/// cannot be had.
fn zeroed(n: u64) -> Result<Vec<u8>, Errno> {
    let n = usize::try_from(n).map_err(|_| Errno::ENOMEM)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Errno::ENOMEM)?;
    v.resize(n, 0);
    Ok(v)
}

fn read_req(ino: u64, pc: &Piece) -> (To, Request) {
    (
        To::Owner,
        Request::Read {
            ino,
            chunk: pc.chunk,
            offset: pc.off,
            len: pc.len,
        },
    )
}

impl Client {
    /// Reads up to `len` bytes at `offset` of the file `ino` opened at
    /// `path`; short only at the end of the file.
    pub fn read_at(&self, path: &str, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let p = path::normalize(path)?;
        let cs = self.chunk_size();
        let want_end = offset.saturating_add(len as u64);

        // The size and the first chunks in one round trip.
        let spec_len = (want_end - offset)
            .min(SPECULATIVE_READS as u64 * u64::from(cs) - offset % u64::from(cs));
        let spec = split_range(offset, spec_len, cs);
        let mut reqs = Vec::with_capacity(spec.len() + 1);
        reqs.push((To::Owner, Request::GetAttr { path: p }));
        reqs.extend(spec.iter().map(|pc| read_req(ino, pc)));
        let mut replies = self.shared.scatter(reqs).into_iter();
        let inode = want_inode(replies.next().unwrap_or(Err(Errno::EIO)))?;
        check_file(&inode, ino)?;
        let size = inode.attr.size;
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = want_end.min(size);
        let mut buf = zeroed(end - offset)?;
        for (pc, r) in spec.iter().zip(replies) {
            if pc.file_off(cs) >= end {
                continue; // past the size: whatever came back does not count
            }
            place(&mut buf, pc, &want_data(r)?);
        }
        if offset + spec_len < end {
            self.read_chunks(ino, offset, offset + spec_len, &mut buf)?;
        }
        Ok(buf)
    }

    /// Reads `[from, offset + buf.len())` of `ino` into `buf`, which holds
    /// the bytes from `offset` on and is zeroed.
    fn read_chunks(&self, ino: u64, offset: u64, from: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let cs = self.chunk_size();
        let end = offset + buf.len() as u64;
        let mut pieces = split_range(from, end.saturating_sub(from), cs);
        for pc in &mut pieces {
            pc.buf_off += from - offset;
        }
        for batch in pieces.chunks(READ_BATCH) {
            let reqs = batch.iter().map(|pc| read_req(ino, pc)).collect();
            for (pc, r) in batch.iter().zip(self.shared.scatter(reqs)) {
                place(buf, pc, &want_data(r)?);
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset` of the file `ino` opened at `path`; returns
    /// the bytes written (all of them, or an error).
    pub fn write_at(&self, path: &str, ino: u64, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let p = path::normalize(path)?;
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MAX_FILE_SIZE)
            .ok_or(Errno::EFBIG)?;
        let cs = self.chunk_size();
        let pieces = split_range(offset, data.len() as u64, cs);
        for batch in pieces.chunks(WRITE_BATCH) {
            let reqs = batch
                .iter()
                .map(|pc| {
                    let s = pc.buf_off as usize;
                    let chunk_data = bytes::Bytes::copy_from_slice(&data[s..s + pc.len as usize]);
                    (
                        To::Owner,
                        Request::Write {
                            ino,
                            chunk: pc.chunk,
                            offset: pc.off,
                            data: chunk_data,
                        },
                    )
                })
                .collect();
            for (pc, r) in batch.iter().zip(self.shared.scatter(reqs)) {
                match r? {
                    Reply::Written(n) if n == pc.len => {}
                    Reply::Written(n) => {
                        tracing::warn!(
                            ino,
                            chunk = pc.chunk,
                            wanted = pc.len,
                            written = n,
                            "short chunk write"
                        );
                        return Err(Errno::EIO);
                    }
                    other => return Err(other.unexpected()),
                }
            }
        }
        want_inode(self.shared.call_owner(Request::Extend {
            path: p,
            size: end,
            mtime: Timespec::now(),
        }))?;
        Ok(data.len())
    }

    /// Writes `data` at the current end of the file; returns the offset
    /// written at. Not atomic against concurrent appenders.
    pub fn append(&self, path: &str, ino: u64, data: &[u8]) -> Result<u64, Errno> {
        let p = path::normalize(path)?;
        let inode = self.getattr_norm(&p)?;
        check_file(&inode, ino)?;
        let at = inode.attr.size;
        self.write_at(&p, ino, at, data)?;
        Ok(at)
    }

    /// Makes the writes of `ino` durable on every server that is up.
    pub fn fsync(&self, path: &str, ino: u64) -> Result<(), Errno> {
        path::normalize(path)?;
        let st = self.shared.state();
        let reqs = st
            .up_servers()
            .into_iter()
            .map(|id| (To::Server(id), Request::Fsync { ino: Some(ino) }))
            .collect();
        for r in self.shared.scatter(reqs) {
            want_ok(r)?;
        }
        Ok(())
    }

    /// Space and inode counts summed over the servers that are up
    /// (`EIO` when none is).
    pub fn statfs(&self) -> Result<StatFs, Errno> {
        let st = self.shared.state();
        let ids = st.up_servers();
        if ids.is_empty() {
            return Err(Errno::EIO);
        }
        let reqs = ids
            .into_iter()
            .map(|id| (To::Server(id), Request::StatFs))
            .collect();
        let mut sum = StatFs {
            namemax: path::NAME_MAX as u32,
            ..StatFs::default()
        };
        for r in self.shared.scatter(reqs) {
            let s = match r? {
                Reply::StatFs(s) => s,
                other => return Err(other.unexpected()),
            };
            if sum.bsize == 0 {
                sum.bsize = s.bsize;
            }
            sum.blocks = sum.blocks.saturating_add(s.blocks);
            sum.bfree = sum.bfree.saturating_add(s.bfree);
            sum.bavail = sum.bavail.saturating_add(s.bavail);
            sum.files = sum.files.saturating_add(s.files);
            sum.ffree = sum.ffree.saturating_add(s.ffree);
            sum.writes_slowed |= s.writes_slowed;
        }
        Ok(sum)
    }

    /// The whole content of the file at `path` (following final symlinks).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, Errno> {
        let (_, inode) = self.on_path(path, |p| self.resolve(p.to_string()))?;
        check_file(&inode, inode.attr.ino)?;
        // The size just read is used as is: one round trip fewer than read_at.
        let mut buf = zeroed(inode.attr.size)?;
        self.read_chunks(inode.attr.ino, 0, 0, &mut buf)?;
        Ok(buf)
    }

    /// Creates (or truncates) the file at `path` with `mode`, owned by this
    /// process's effective uid and gid, and writes `data` into it.
    pub fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<(), Errno> {
        let (uid, gid) = crate::process_ids();
        let (p, inode) = self.open_resolved(
            path,
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
            mode,
            uid,
            gid,
        )?;
        self.write_at(&p, inode.attr.ino, 0, data)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_inside_one_chunk() {
        assert_eq!(
            split_range(10, 5, 100),
            vec![Piece {
                chunk: 0,
                off: 10,
                len: 5,
                buf_off: 0
            }]
        );
        assert_eq!(
            split_range(100, 100, 100),
            vec![Piece {
                chunk: 1,
                off: 0,
                len: 100,
                buf_off: 0
            }]
        );
        assert!(split_range(7, 0, 100).is_empty());
    }

    #[test]
    fn split_across_chunks() {
        let v = split_range(90, 250, 100);
        assert_eq!(
            v,
            vec![
                Piece {
                    chunk: 0,
                    off: 90,
                    len: 10,
                    buf_off: 0
                },
                Piece {
                    chunk: 1,
                    off: 0,
                    len: 100,
                    buf_off: 10
                },
                Piece {
                    chunk: 2,
                    off: 0,
                    len: 100,
                    buf_off: 110
                },
                Piece {
                    chunk: 3,
                    off: 0,
                    len: 40,
                    buf_off: 210
                },
            ]
        );
        assert_eq!(v.iter().map(|p| u64::from(p.len)).sum::<u64>(), 250);
        for p in &v {
            assert_eq!(p.file_off(100), 90 + p.buf_off);
        }
    }

    #[test]
    fn split_near_the_top_of_the_range() {
        let v = split_range(u64::MAX - 5, 100, 4096);
        assert_eq!(v.iter().map(|p| u64::from(p.len)).sum::<u64>(), 5);
    }

    #[test]
    fn split_covers_every_byte_once() {
        for cs in [1u32, 3, 64, 4096] {
            for off in [0u64, 1, 63, 64, 65, 5000] {
                for len in [0u64, 1, 2, 63, 64, 200, 9000] {
                    let v = split_range(off, len, cs);
                    let mut next = 0;
                    for p in &v {
                        assert_eq!(p.buf_off, next);
                        assert!(p.len > 0 && p.off + p.len <= cs);
                        assert_eq!(p.file_off(cs), off + p.buf_off);
                        next += u64::from(p.len);
                    }
                    assert_eq!(next, len);
                }
            }
        }
    }

    #[test]
    fn place_zero_fills_and_clips() {
        // A 10-byte file read from 0 with chunk size 4: chunk 1 came back
        // short (a hole at its end), chunk 2 came back longer than the size.
        let mut buf = vec![0u8; 10];
        let pieces = split_range(0, 12, 4);
        place(&mut buf, &pieces[0], b"abcd");
        place(&mut buf, &pieces[1], b"ef");
        place(&mut buf, &pieces[2], b"ijkl");
        assert_eq!(&buf, b"abcdef\0\0ij");
        // A server that returns more than asked cannot overflow the piece.
        let mut buf = vec![0u8; 6];
        let pieces = split_range(0, 6, 4);
        place(&mut buf, &pieces[0], b"abcdXXXX");
        assert_eq!(&buf, b"abcd\0\0");
    }
}
