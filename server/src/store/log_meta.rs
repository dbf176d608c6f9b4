//! [`MetaStore`] on the packed-log engine, in `meta_dir/log/` with its
//! index `meta.index` (under `meta_dir`, or the `--pmem` directory).
//!
//! Keys (inode records in the fixed layout of [`super::inode_codec`], the
//! other values postcard):
//!
//! | key                      | value             | slot tag / group          |
//! | ------------------------ | ----------------- | ------------------------- |
//! | `I` path                 | [`InodeRecord`]   | `TAG_INODE` or `TAG_UNSETTLED` |
//! | `E` dir `\0` name        | `(FileKind, ino)` | `TAG_ENTRY`, hash of dir  |
//! | `C` `ino_reserved`       | `u64` LE          | `TAG_INFO`                |
//!
//! Listings: a directory's names are loaded on first use into an ordered
//! in-memory set, by one pass over the index picking the entry slots whose
//! group bits match the directory's hash (no log scan; only the records of
//! that directory, and of about 1 in 4096 others, are read), and kept up to
//! date by commits. Chosen over entry-page records
//! because a create then appends one small record instead of rewriting a
//! page, and over per-directory record chains because compaction moves
//! records freely. The unsettled (non-Normal) records are found the same
//! way at open, through their slot tag.

use super::engine::{Engine, EngineOptions, Op};
use super::{EntryValue, InodeRecord, MetaOp, MetaStore, StoreError};
use parking_lot::Mutex;
use sealfs_proto::DirEntry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;

const TAG_INODE: u16 = 1;
const TAG_ENTRY: u16 = 2;
const TAG_INFO: u16 = 3;
/// The tag of an inode record that is not Normal.
const TAG_UNSETTLED: u16 = 5;
const KEY_INO_RESERVED: &[u8] = b"Cino_reserved";
/// Most directory entries held in the listing cache.
const MAX_CACHED_ENTRIES: usize = 4 << 20;

fn inode_key(path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + path.len());
    k.push(b'I');
    k.extend_from_slice(path.as_bytes());
    k
}

/// Runs `f` on the index key of `path` ([`inode_key`]), built on the
/// stack when the path is shorter than 256 bytes: every `stat` and open
/// makes one, and their allocation and the copies of the record passed
/// back through the engine's `Option`s were a tenth of a lookup from the
/// cache (`get_inode` 216 against 242 ns).
fn with_inode_key<T>(path: &str, f: impl FnOnce(&[u8]) -> T) -> T {
    let mut buf = [0u8; 256];
    match buf.get_mut(..1 + path.len()) {
        Some(k) => {
            k[0] = b'I';
            k[1..].copy_from_slice(path.as_bytes());
            f(k)
        }
        None => f(&inode_key(path)),
    }
}

fn entry_prefix(dir: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + dir.len());
    k.push(b'E');
    k.extend_from_slice(dir.as_bytes());
    k.push(0);
    k
}

fn entry_key(dir: &str, name: &str) -> Vec<u8> {
    let mut k = entry_prefix(dir);
    k.extend_from_slice(name.as_bytes());
    k
}

fn dir_group(dir: &str) -> u32 {
    xxhash_rust::xxh3::xxh3_64(dir.as_bytes()) as u32
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(v).map_err(|e| StoreError::Corrupt(format!("encode: {e}")))
}

fn decode_record(path: &str, b: &[u8]) -> Result<InodeRecord, StoreError> {
    super::inode_codec::decode(b)
        .map_err(|e| StoreError::Corrupt(format!("inode record of {path:?}: {e}")))
}

fn decode_entry(dir: &str, name: &str, b: &[u8]) -> Result<EntryValue, StoreError> {
    postcard::from_bytes(b)
        .map_err(|e| StoreError::Corrupt(format!("entry {name:?} of {dir:?}: {e}")))
}

type Names = BTreeMap<String, EntryValue>;

#[derive(Default)]
struct DirCache {
    dirs: HashMap<String, Names>,
    entries: usize,
}

/// The log-engine meta store.
pub struct LogMetaStore {
    eng: Engine,
    durable: bool,
    cache: Mutex<DirCache>,
    unsettled: Mutex<BTreeSet<String>>,
}

impl LogMetaStore {
    /// Opens (or creates) the store: segments in `meta_dir/log`, index at
    /// `index_dir/meta.index`. `durable`: a commit is on stable storage when
    /// it returns (group-committed).
    pub fn open(
        meta_dir: &Path,
        index_dir: &Path,
        durable: bool,
        opts: EngineOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(index_dir)
            .map_err(|e| StoreError::io(format!("create {}", index_dir.display()), e))?;
        let eng = Engine::open(&meta_dir.join("log"), &index_dir.join("meta.index"), opts)?;
        let mut unsettled = BTreeSet::new();
        for (key, _) in eng.collect(|tag| tag == TAG_UNSETTLED, None)? {
            if let Some(p) = key.strip_prefix(b"I") {
                unsettled.insert(String::from_utf8_lossy(p).into_owned());
            }
        }
        Ok(LogMetaStore {
            eng,
            durable,
            cache: Mutex::new(DirCache::default()),
            unsettled: Mutex::new(unsettled),
        })
    }

    /// Stops as a crash would (tests): the index stays dirty.
    pub fn abandon(self) {
        self.eng.abandon();
    }

    /// The engine (stats, tests).
    pub fn engine(&self) -> &Engine {
        &self.eng
    }

    /// Runs `f` on the loaded name set of `dir`.
    fn with_dir<T>(&self, dir: &str, f: impl FnOnce(&Names) -> T) -> Result<T, StoreError> {
        let mut c = self.cache.lock();
        if !c.dirs.contains_key(dir) {
            let prefix = entry_prefix(dir);
            let g = dir_group(dir);
            let mut names = Names::new();
            for (key, got) in self.eng.collect(|tag| tag == TAG_ENTRY, Some(g))? {
                if let Some(name) = key.strip_prefix(prefix.as_slice()) {
                    let name = String::from_utf8_lossy(name).into_owned();
                    let v = decode_entry(dir, &name, &got.value)?;
                    names.insert(name, v);
                }
            }
            if c.entries + names.len() > MAX_CACHED_ENTRIES {
                c.dirs.clear();
                c.entries = 0;
            }
            c.entries += names.len();
            c.dirs.insert(dir.to_string(), names);
        }
        Ok(f(&c.dirs[dir]))
    }

    fn note_committed(&self, ops: &[MetaOp]) {
        let mut c = self.cache.lock();
        let mut u = self.unsettled.lock();
        for op in ops {
            match op {
                MetaOp::PutInode(p, rec) => {
                    if rec.is_normal() {
                        u.remove(p);
                    } else {
                        u.insert(p.clone());
                    }
                }
                MetaOp::DelInode(p) => {
                    u.remove(p);
                }
                MetaOp::PutEntry(dir, e) => {
                    let c = &mut *c;
                    if let Some(names) = c.dirs.get_mut(dir) {
                        if names.insert(e.name.clone(), (e.kind, e.ino)).is_none() {
                            c.entries += 1;
                        }
                    }
                }
                MetaOp::DelEntry(dir, name) => {
                    let c = &mut *c;
                    if let Some(names) = c.dirs.get_mut(dir) {
                        if names.remove(name).is_some() {
                            c.entries -= 1;
                        }
                    }
                }
            }
        }
    }

    /// After a failed commit the index may or may not hold it: forget what
    /// the caches say about its keys.
    fn forget(&self, ops: &[MetaOp]) {
        let mut c = self.cache.lock();
        for op in ops {
            if let MetaOp::PutEntry(dir, _) | MetaOp::DelEntry(dir, _) = op {
                if let Some(n) = c.dirs.remove(dir) {
                    c.entries -= n.len();
                }
            }
        }
        drop(c);
        for op in ops {
            if let MetaOp::PutInode(p, _) | MetaOp::DelInode(p) = op {
                let unsettled = matches!(self.get_inode(p), Ok(Some(r)) if !r.is_normal());
                let mut u = self.unsettled.lock();
                if unsettled {
                    u.insert(p.clone());
                } else {
                    u.remove(p);
                }
            }
        }
    }
}

impl MetaStore for LogMetaStore {
    fn get_inode(&self, path: &str) -> Result<Option<InodeRecord>, StoreError> {
        let mut found = Ok(None);
        with_inode_key(path, |key| {
            self.eng
                .get_with(key, |v, _| found = decode_record(path, v).map(Some))
        })?;
        found
    }

    fn get_entry(&self, dir: &str, name: &str) -> Result<Option<DirEntry>, StoreError> {
        {
            let c = self.cache.lock();
            if let Some(names) = c.dirs.get(dir) {
                return Ok(names.get(name).map(|&(kind, ino)| DirEntry {
                    name: name.to_string(),
                    kind,
                    ino,
                }));
            }
        }
        match self.eng.get(&entry_key(dir, name))? {
            Some(g) => {
                let (kind, ino) = decode_entry(dir, name, &g.value)?;
                Ok(Some(DirEntry {
                    name: name.to_string(),
                    kind,
                    ino,
                }))
            }
            None => Ok(None),
        }
    }

    fn list_entries(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, StoreError> {
        self.with_dir(dir, |names| {
            let lo = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            names
                .range::<str, _>((lo, Bound::Unbounded))
                .take(limit)
                .map(|(n, &(kind, ino))| DirEntry {
                    name: n.clone(),
                    kind,
                    ino,
                })
                .collect()
        })
    }

    fn has_entries(&self, dir: &str) -> Result<bool, StoreError> {
        self.with_dir(dir, |names| !names.is_empty())
    }

    fn commit(&self, ops: &[MetaOp]) -> Result<(), StoreError> {
        let mut keys = Vec::with_capacity(ops.len());
        let mut vals = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                MetaOp::PutInode(p, rec) => {
                    keys.push(inode_key(p));
                    vals.push(super::inode_codec::encode(rec));
                }
                MetaOp::DelInode(p) => {
                    keys.push(inode_key(p));
                    vals.push(Vec::new());
                }
                MetaOp::PutEntry(d, e) => {
                    keys.push(entry_key(d, &e.name));
                    vals.push(encode(&(e.kind, e.ino) as &EntryValue)?);
                }
                MetaOp::DelEntry(d, n) => {
                    keys.push(entry_key(d, n));
                    vals.push(Vec::new());
                }
            }
        }
        let eops: Vec<Op<'_>> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| match op {
                MetaOp::PutInode(_, rec) => Op::Put {
                    key: &keys[i],
                    value: &vals[i],
                    tag: if rec.is_normal() {
                        TAG_INODE
                    } else {
                        TAG_UNSETTLED
                    },
                    group: 0,
                },
                MetaOp::PutEntry(d, _) => Op::Put {
                    key: &keys[i],
                    value: &vals[i],
                    tag: TAG_ENTRY,
                    group: dir_group(d),
                },
                MetaOp::DelInode(_) | MetaOp::DelEntry(..) => Op::Del { key: &keys[i] },
            })
            .collect();
        match self.eng.commit(&eops, self.durable) {
            Ok(()) => {
                self.note_committed(ops);
                Ok(())
            }
            Err(e) => {
                self.forget(ops);
                Err(e)
            }
        }
    }

    fn unsettled(&self) -> Result<Vec<(String, InodeRecord)>, StoreError> {
        let paths: Vec<String> = self.unsettled.lock().iter().cloned().collect();
        let mut out = Vec::new();
        for p in paths {
            if let Some(r) = self.get_inode(&p)? {
                if !r.is_normal() {
                    out.push((p, r));
                }
            }
        }
        Ok(out)
    }

    fn ino_reserved(&self) -> Result<u64, StoreError> {
        match self.eng.get(KEY_INO_RESERVED)? {
            Some(g) => {
                let b: [u8; 8] = g
                    .value
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("ino_reserved is not 8 bytes".into()))?;
                Ok(u64::from_le_bytes(b))
            }
            None => Ok(0),
        }
    }

    fn set_ino_reserved(&self, v: u64) -> Result<(), StoreError> {
        // Always durable: a restart must never hand out a number twice.
        let b = v.to_le_bytes();
        self.eng.commit(
            &[Op::Put {
                key: KEY_INO_RESERVED,
                value: &b,
                tag: TAG_INFO,
                group: 0,
            }],
            true,
        )
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.eng.sync()
    }

    fn writes_slowed(&self) -> bool {
        self.eng.writes_slowed()
    }
}

#[cfg(test)]
mod tests {
    use super::{inode_key, with_inode_key};

    /// The key built on the stack is the key built on the heap, on both
    /// sides of the buffer's end (a path of 255 bytes is the longest that
    /// fits with the tag byte).
    #[test]
    fn the_stack_key_is_the_heap_key() {
        for n in [0, 1, 254, 255, 256, 300, 5000] {
            let p = format!("/{}", "x".repeat(n));
            let key = with_inode_key(&p, |k| k.to_vec());
            assert_eq!(key, inode_key(&p), "path of {} bytes", p.len());
        }
    }
}
