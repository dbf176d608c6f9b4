//! The packed log: append-only segment files `{id:08}.seg` of records (see
//! [`super::record`]), each at most `segment_size` bytes, with a 32-byte
//! segment header (magic, version, segment id, log id).
//!
//! Owns: appending commits (one `pwrite` per commit, the whole commit in one
//! segment), reading records back (in place, through a read-only mapping of
//! each segment, so a lookup costs no syscall and no copy), and durability with group commit.
//!
//! Crash ordering: a commit is written with one `pwrite`; if the write fails
//! (ENOSPC, EIO) the segment is cut back to its previous length, so the log
//! never holds a partial commit that recovery would have to guess about.
//! [`Log::sync_to`] makes everything up to a position durable: one thread
//! runs `fdatasync` for every waiter behind it (group commit), and the
//! directory is synced after a segment was created. Segments are only ever
//! deleted by compaction, after their live records were copied and synced.

use crate::store::StoreError;
use memmap2::{Mmap, MmapOptions};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `"SEALSEG1"`: the first bytes of every segment.
pub const SEG_MAGIC: &[u8; 8] = b"SEALSEG1";
/// Format version of segments and records.
pub const SEG_VERSION: u32 = 1;
/// Length of the segment header; the first record starts here.
pub const SEG_HEADER_LEN: u64 = 32;

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

fn seg_header(id: u32, log_id: u64) -> [u8; SEG_HEADER_LEN as usize] {
    let mut h = [0u8; SEG_HEADER_LEN as usize];
    h[0..8].copy_from_slice(SEG_MAGIC);
    h[8..12].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&id.to_le_bytes());
    h[16..24].copy_from_slice(&log_id.to_le_bytes());
    h
}

/// Reads a segment header: its log id, if it is one of ours.
pub fn check_seg_header(b: &[u8], id: u32) -> Option<u64> {
    if b.len() < SEG_HEADER_LEN as usize || &b[0..8] != SEG_MAGIC {
        return None;
    }
    let v = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    let sid = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    if v != SEG_VERSION || sid != id {
        return None;
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&b[16..24]);
    Some(u64::from_le_bytes(l))
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

/// One open segment: its file (appends, syncs) and a read-only shared
/// mapping of `map_len` bytes (reads of published records, no syscall).
pub(crate) struct Seg {
    file: File,
    map: Option<Mmap>,
    /// Bytes written (and not cut back): reads through the map stay below.
    len: AtomicU64,
}

impl Seg {
    /// Opens the segment's mapping over `map_len` bytes (the file may still
    /// be shorter: only bytes below its length are ever read through the
    /// map, see [`Log::read`]). A failed mapping falls back to `pread`.
    fn new(file: File, len: u64, map_len: u64) -> Seg {
        let map = usize::try_from(map_len).ok().and_then(|len| {
            // SAFETY: the mapping is read-only and shared; the segment
            // files belong to this store alone, are never truncated below a
            // published record (a failed append cuts back only its own
            // unpublished bytes), and are unmapped only when the last
            // reader drops its `Arc<Seg>`. Reads go only to published
            // records, below the file's length, so no page past the end of
            // the file is touched (which would raise SIGBUS).
            unsafe { MmapOptions::new().len(len).map(&file) }.ok()
        });
        Seg {
            file,
            map,
            len: AtomicU64::new(len),
        }
    }
}

struct Writer {
    id: u32,
    file: Arc<Seg>,
    len: u64,
    /// Start positions of commits appended but not yet published to the
    /// index (with a count): recovery replays from the smallest.
    pending: BTreeMap<u64, u32>,
    /// Sealed segments not yet synced.
    unsynced: Vec<Arc<Seg>>,
    /// A segment was created or deleted since the last directory sync.
    dir_dirty: bool,
}

/// Where a commit landed.
pub struct Appended {
    /// Segment of every record.
    pub seg: u32,
    /// Offset of each record.
    pub offs: Vec<u32>,
    /// End of the commit (for [`Log::sync_to`]).
    pub end: Pos,
    /// Its start (for [`Log::published`]).
    pub start: Pos,
}

/// The log of one engine.
pub struct Log {
    dir: PathBuf,
    log_id: u64,
    seg_size: u64,
    writer: Mutex<Writer>,
    /// The next commit's sequence number. Taken before the writer lock, so
    /// commits are encoded (copied, checksummed) outside it: sequence
    /// numbers need not follow log order (recovery applies commits in log
    /// order and uses them only to continue numbering).
    next_seq: AtomicU64,
    files: RwLock<BTreeMap<u32, Arc<Seg>>>,
    synced: Mutex<Pos>,
}

impl Log {
    /// Opens the log over existing segments `ids` (ascending, all checked by
    /// recovery, the last one cut to `tail_len`), or a new log when empty.
    pub fn open(
        dir: &Path,
        log_id: u64,
        ids: &[u32],
        tail_len: u64,
        next_seq: u64,
        seg_size: u64,
    ) -> Result<Log, StoreError> {
        let seg_size = seg_size.max(SEG_HEADER_LEN + 4096);
        let mut files = BTreeMap::new();
        for &id in ids {
            let p = dir.join(seg_name(id));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(|e| io(format!("open {}", p.display()), e))?;
            let len = f
                .metadata()
                .map_err(|e| io(format!("stat {}", p.display()), e))?
                .len();
            files.insert(id, Arc::new(Seg::new(f, len, len.max(seg_size))));
        }
        let (id, file, len, dir_dirty) = match ids.last() {
            Some(&id) => (id, files[&id].clone(), tail_len, false),
            None => {
                let f = Arc::new(Seg::new(
                    create_segment(dir, 1, log_id)?,
                    SEG_HEADER_LEN,
                    seg_size,
                ));
                files.insert(1, f.clone());
                (1, f, SEG_HEADER_LEN, true)
            }
        };
        let log = Log {
            dir: dir.to_path_buf(),
            log_id,
            seg_size,
            writer: Mutex::new(Writer {
                id,
                file,
                len,
                pending: BTreeMap::new(),
                unsynced: Vec::new(),
                dir_dirty,
            }),
            next_seq: AtomicU64::new(next_seq),
            files: RwLock::new(files),
            synced: Mutex::new(Pos { seg: 0, off: 0 }),
        };
        log.ensure_reserve();
        Ok(log)
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

    /// Appends one commit: `encode(seq, buf)` writes its records into
    /// `buf` and returns each record's offset within it. The commit is
    /// registered as pending until [`Log::published`].
    /// `frees`: the commit only frees space (deletes, compaction), so it may
    /// use the reserve when the disk is full.
    pub fn append(
        &self,
        frees: bool,
        encode: impl FnOnce(u64, &mut Vec<u8>) -> Vec<usize>,
    ) -> Result<Appended, StoreError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut buf = Vec::new();
        let rel = encode(seq, &mut buf);
        let n = buf.len() as u64;
        if n + SEG_HEADER_LEN > u64::from(u32::MAX) {
            return Err(StoreError::io(
                "append",
                std::io::Error::from_raw_os_error(libc::EFBIG),
            ));
        }
        let mut w = lock_briefly(&self.writer);
        if w.len + n > self.seg_size && w.len > SEG_HEADER_LEN {
            self.roll(&mut w)?;
        }
        let at = w.len;
        if let Err(mut e) = w.file.file.write_all_at(&buf, at) {
            // Never leave a partial commit behind: cut back to the old end.
            let _ = w.file.file.set_len(at);
            let full = e.raw_os_error() == Some(libc::ENOSPC);
            if full && frees && fs::remove_file(self.dir.join("reserve")).is_ok() {
                tracing::warn!(
                    "{}: disk full; using the space reserve to free space",
                    self.dir.display()
                );
                match w.file.file.write_all_at(&buf, at) {
                    Ok(()) => e = std::io::Error::from_raw_os_error(0),
                    Err(e2) => {
                        let _ = w.file.file.set_len(at);
                        e = e2;
                    }
                }
            }
            if e.raw_os_error() != Some(0) {
                return Err(io(format!("append to {}", seg_name(w.id)), e));
            }
        }
        w.len += n;
        w.file.len.store(w.len, Ordering::Release);
        let start = Pos {
            seg: w.id,
            off: at as u32,
        };
        *w.pending.entry(start.raw()).or_insert(0) += 1;
        Ok(Appended {
            seg: w.id,
            offs: rel.into_iter().map(|r| (at + r as u64) as u32).collect(),
            end: Pos {
                seg: w.id,
                off: w.len as u32,
            },
            start,
        })
    }

    /// The commit starting at `start` is now in the index.
    pub fn published(&self, start: Pos) {
        let mut w = lock_briefly(&self.writer);
        if let Some(c) = w.pending.get_mut(&start.raw()) {
            *c -= 1;
            if *c == 0 {
                w.pending.remove(&start.raw());
            }
        }
    }

    /// Everything before this position is in the index.
    pub fn replay_point(&self) -> Pos {
        let w = self.writer.lock();
        match w.pending.keys().next() {
            Some(&p) => Pos::from_raw(p),
            None => Pos {
                seg: w.id,
                off: w.len as u32,
            },
        }
    }

    fn roll(&self, w: &mut Writer) -> Result<(), StoreError> {
        let id = w.id + 1;
        let f = Arc::new(Seg::new(
            create_segment(&self.dir, id, self.log_id)?,
            SEG_HEADER_LEN,
            self.seg_size,
        ));
        self.files.write().insert(id, f.clone());
        let old = std::mem::replace(&mut w.file, f);
        w.unsynced.push(old);
        w.id = id;
        w.len = SEG_HEADER_LEN;
        w.dir_dirty = true;
        Ok(())
    }

    /// Starts a new segment now (compaction never copies into the segment
    /// it is emptying; tests use it to make sealed segments).
    pub fn seal_active(&self) -> Result<u32, StoreError> {
        let mut w = self.writer.lock();
        if w.len > SEG_HEADER_LEN {
            self.roll(&mut w)?;
        }
        Ok(w.id)
    }

    /// The active segment's id and length.
    pub fn tail(&self) -> Pos {
        let w = self.writer.lock();
        Pos {
            seg: w.id,
            off: w.len as u32,
        }
    }

    /// Makes the log durable up to `pos` (group commit: whoever syncs,
    /// syncs everything written so far, for every waiter).
    pub fn sync_to(&self, pos: Pos) -> Result<(), StoreError> {
        let mut synced = self.synced.lock();
        if *synced >= pos {
            return Ok(());
        }
        let (files, dir_dirty, tail) = {
            let mut w = self.writer.lock();
            let mut files = std::mem::take(&mut w.unsynced);
            files.push(w.file.clone());
            let d = std::mem::replace(&mut w.dir_dirty, false);
            (
                files,
                d,
                Pos {
                    seg: w.id,
                    off: w.len as u32,
                },
            )
        };
        let res = (|| {
            for f in &files {
                f.file.sync_data().map_err(|e| io("fdatasync segment", e))?;
            }
            if dir_dirty {
                sync_dir(&self.dir)?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            let mut w = self.writer.lock();
            w.unsynced.extend(files);
            w.dir_dirty |= dir_dirty;
            return Err(e);
        }
        *synced = tail;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        let t = self.tail();
        self.sync_to(t)
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
        let files = self.files.read();
        let seg = files.get(&pos.seg).ok_or_else(|| {
            StoreError::Corrupt(format!("index points at missing segment {}", pos.seg))
        })?;
        let (start, end) = (pos.off as usize, pos.off as usize + len as usize);
        if end as u64 <= seg.len.load(Ordering::Acquire) {
            if let Some(b) = seg.map.as_ref().and_then(|m| m.get(start..end)) {
                return Ok(f(b));
            }
        }
        let seg = seg.clone();
        drop(files);
        let mut buf = vec![0u8; len as usize];
        seg.file
            .read_exact_at(&mut buf, u64::from(pos.off))
            .map_err(|e| io(format!("read {} at {}", seg_name(pos.seg), pos.off), e))?;
        Ok(f(&buf))
    }

    /// Ids of all segments, ascending.
    pub fn segments(&self) -> Vec<u32> {
        self.files.read().keys().copied().collect()
    }

    /// Length of a segment file (0 if gone).
    pub fn seg_len(&self, id: u32) -> u64 {
        let w = self.writer.lock();
        if id == w.id {
            return w.len;
        }
        drop(w);
        self.files
            .read()
            .get(&id)
            .and_then(|f| f.file.metadata().ok())
            .map_or(0, |m| m.len())
    }

    /// The whole content of a segment.
    pub fn read_segment(&self, id: u32) -> Result<Vec<u8>, StoreError> {
        let p = self.dir.join(seg_name(id));
        fs::read(&p).map_err(|e| io(format!("read {}", p.display()), e))
    }

    /// Deletes a sealed segment (compaction, after its live records were
    /// copied and synced).
    pub fn delete_segment(&self, id: u32) -> Result<(), StoreError> {
        {
            let w = self.writer.lock();
            if id == w.id {
                return Err(StoreError::Corrupt(
                    "refusing to delete the active segment".into(),
                ));
            }
        }
        self.files.write().remove(&id);
        let p = self.dir.join(seg_name(id));
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("remove {}", p.display()), e)),
        }
        self.writer.lock().dir_dirty = true;
        Ok(())
    }

    /// The next sequence number (persisted in the index at close).
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }
}

fn create_segment(dir: &Path, id: u32, log_id: u64) -> Result<File, StoreError> {
    let p = dir.join(seg_name(id));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(|e| io(format!("create {}", p.display()), e))?;
    if let Err(e) = f.write_all_at(&seg_header(id, log_id), 0) {
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
/// before it sleeps on it. The lock is held for one `pwrite`, a few µs, but
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
