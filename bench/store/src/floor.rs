//! The `floor` target: the loads the engine's `stat` and read cannot
//! avoid, with no store code around them, so that a run says how much of a
//! phase is this machine's memory and how much is the engine's own code.
//!
//! A `stat` in the engine is two dependent cache misses (the index slot of
//! the path, then its record); a 4 KiB read is four (inode slot, inode
//! record, data slot, data record) and a pass over the 4 KiB to check
//! them. This target makes the same loads over tables of the same sizes,
//! each address computed from the value the load before returned (so no
//! load starts before the one it depends on ends, as in a lookup), hashes
//! the 4 KiB with the engine's XXH3, and starts no operation before the
//! thread's one before has ended (as a synchronous call does). The slots
//! are spread as a hash table spreads keys; the records lie in the order
//! the files were made, each thread's one after another, the layout
//! kindest to a thread that reads its files in that order (the bench's).
//! No store of this shape reads faster on the same machine in the same
//! minute; plain files are not bound by it (their own lookups and copy,
//! and system calls, are what they pay).
//!
//! The tables take memory of their own: about 4.4 KiB per file, allocated
//! and filled (every page real) before the phases run.
//!
//! Its create phase is the floor of the engine's writes: the files'
//! bodies and nothing else (no key, no record header, no index), appended
//! to one file per thread in writes of [`STREAM_CHUNK`] bytes, the
//! cheapest way to put those bytes in the page cache. Counted until the
//! `sync` after it, it is the fastest any store could make the create
//! phase durable on this disk in this minute: the synced creates of every
//! target are bound by it, and plain files over it is as high as any
//! store's synced creates over plain files can go.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

/// Bytes a 4 KiB file's data record takes in the log (header, key, value,
/// padding: 32 + 9 + 4096, rounded up to 8).
const DATA_REC: usize = 4144;
/// Bytes of index per key (a 16-byte slot in a table about 87 % full: the
/// engine's 18.3 bytes per key at 200 000 files).
const SLOT_BYTES: usize = 18;
/// Bytes of meta log per file (an inode record and an entry record).
const META_REC: usize = 256;

/// Bytes a thread's stream gathers before it writes them.
const STREAM_CHUNK: usize = 1 << 20;

/// A thread's file of bodies and what it has gathered for it.
struct Stream {
    file: File,
    buf: Vec<u8>,
}

/// Tables the size of the engine's, filled so that every page is real,
/// and a file per thread for the create phase.
pub struct FloorTarget {
    /// One per thread (each thread locks only its own).
    streams: Vec<Mutex<Stream>>,
    /// Meta index: two keys (inode, entry) per file.
    meta_slots: Vec<u64>,
    /// Meta log.
    meta_log: Vec<u64>,
    /// Data index: one key per file.
    data_slots: Vec<u64>,
    /// Data log.
    data_log: Vec<u8>,
    files: usize,
    /// Files per thread.
    per: usize,
}

impl FloorTarget {
    /// Tables for `files` files, and a stream file per thread under `dir`.
    pub fn new(files: u64, threads: u64, dir: &Path) -> io::Result<FloorTarget> {
        let files = files.max(1) as usize;
        let words = |bytes: usize| vec![1u64; bytes.div_ceil(8)];
        let streams = (0..threads.max(1))
            .map(|t| {
                Ok(Mutex::new(Stream {
                    file: File::create(dir.join(format!("stream{t}")))?,
                    buf: Vec::with_capacity(STREAM_CHUNK),
                }))
            })
            .collect::<io::Result<_>>()?;
        Ok(FloorTarget {
            streams,
            meta_slots: words(files * 2 * SLOT_BYTES),
            meta_log: words(files * META_REC),
            data_slots: words(files * SLOT_BYTES),
            data_log: vec![1u8; files * DATA_REC],
            files,
            per: files / threads.max(1) as usize,
        })
    }

    /// A create: file `i`'s body appended to thread `t`'s stream, which is
    /// written when it holds [`STREAM_CHUNK`] bytes and after the thread's
    /// last file.
    pub fn create(&self, t: u64, i: u64, body: &[u8]) -> io::Result<()> {
        let mut s = self.streams[t as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.buf.extend_from_slice(body);
        if s.buf.len() >= STREAM_CHUNK || i as usize + 1 == self.per {
            let Stream { file, buf } = &mut *s;
            file.write_all(buf)?;
            buf.clear();
        }
        Ok(())
    }

    /// The meta side of a lookup of file `key`: the slot, then the record
    /// it names. Returns a value of the record (what the next load's
    /// address depends on).
    fn meta(&self, key: u64) -> u64 {
        let slot = self.meta_slots[pick(key, self.meta_slots.len())];
        let rec = self.place(slot, key) * (META_REC / 8);
        self.meta_log[rec] ^ key
    }

    /// A `stat`: the floor of the engine's.
    pub fn stat(&self, t: u64, i: u64) {
        let k = key(t, i) ^ carried();
        carry(self.meta(k) ^ k);
    }

    /// A 4 KiB read: the meta lookup, the data slot, the record's pass.
    pub fn read(&self, t: u64, i: u64) {
        let k = key(t, i) ^ carried();
        let ino = self.meta(k);
        let slot = self.data_slots[pick(ino, self.data_slots.len())];
        let at = self.place(slot, k) * DATA_REC;
        let rec = &self.data_log[at..at + DATA_REC];
        carry(xxhash_rust::xxh3::xxh3_64(rec));
    }

    /// Where file `key`'s record lies in a log: each thread's files one
    /// after another in creation order, the layout most kind to a thread
    /// that reads them in that order (the engine's lanes, shared by two
    /// threads at 8 threads, interleave them more). `got`, the value the
    /// load before returned (a slot: every slot holds 1), moves every
    /// place by one: the address must depend on it, and no two files may
    /// share a record (so that none finds another's in the cache).
    fn place(&self, got: u64, key: u64) -> usize {
        let (t, i) = ((key >> 32) as usize, (key & 0xffff_ffff) as usize);
        (t * self.per + i + (got & 1) as usize) % self.files
    }
}

thread_local!(static CARRY: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });

/// A value the thread's next operation's first address depends on: zero,
/// but only once this operation's last load has returned, so that no
/// operation starts before the one before it ended, as with a synchronous
/// call (without it the core overlaps the misses of several `stat`s).
fn carried() -> u64 {
    CARRY.with(|c| c.get())
}

/// Sets what [`carried`] gives from `x`: in effect zero (one if `x` is all
/// ones), computed from `x`, so the core must wait for `x`.
fn carry(x: u64) {
    CARRY.with(|c| c.set(u64::from(x == u64::MAX)));
}

fn key(t: u64, i: u64) -> u64 {
    (t << 32) | i
}

/// A position in `0..n` for `x`, spread as a hash table spreads keys.
fn pick(x: u64, n: usize) -> usize {
    ((xxhash_rust::xxh3::xxh3_64(&x.to_le_bytes()) as u128 * n as u128) >> 64) as usize
}
