//! [`DataStore`] on the packed-log engine for small files, chunk files for
//! the rest.
//!
//! The first chunk of a file lives in the data log (`data_dir/log/`, index
//! `data.index` under `meta_dir` or the `--pmem` directory) as one record
//! keyed `D` + ino (8 bytes LE) while it is at most `small_max` bytes long;
//! every other chunk, and a first chunk that grows past `small_max`, is a
//! chunk file of [`FileDataStore`]. So 100 000 files of 4 KiB are a few
//! segment files, not 100 000 files.
//!
//! Rule: **a log record, when present, is the chunk**; a chunk file of the
//! same chunk is then stale. Moving a chunk out of the log writes (and, for
//! any policy but `none`, syncs) the chunk file first and deletes the record
//! after, so a crash in between leaves the record authoritative (the write
//! that moved it was not acknowledged) and the stale file is rewritten at
//! the next move. Writes of one chunk are serialised (read-modify-write of
//! the record) by stripe locks.

use super::engine::{Engine, EngineOptions, Op};
use super::{DataStore, FileDataStore, StoreError};
use bytes::Bytes;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TAG_DATA: u16 = 4;
const STRIPES: usize = 256;

fn data_key(ino: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'D';
    k[1..].copy_from_slice(&ino.to_le_bytes());
    k
}

/// The log-engine data store.
pub struct LogDataStore {
    /// Opened at start if the data log exists, else at the first small
    /// write: a server that only ever holds large chunks has no data log.
    eng: OnceLock<Engine>,
    eng_paths: (PathBuf, PathBuf, EngineOptions),
    open_lock: Mutex<()>,
    files: FileDataStore,
    small_max: u32,
    always: bool,
    durable_moves: bool,
    stripes: Box<[Mutex<()>]>,
}

impl LogDataStore {
    /// Opens (or creates) the store. `always`: every write durable when it
    /// returns; `durable_moves`: sync a chunk leaving the log (false only
    /// for the `none` policy).
    pub fn open(
        data_dir: &Path,
        index_dir: &Path,
        small_max: u32,
        always: bool,
        durable_moves: bool,
        opts: EngineOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(index_dir)
            .map_err(|e| StoreError::io(format!("create {}", index_dir.display()), e))?;
        let (log_dir, idx) = (data_dir.join("log"), index_dir.join("data.index"));
        let eng = OnceLock::new();
        if log_dir.exists() {
            let _ = eng.set(Engine::open(&log_dir, &idx, opts.clone())?);
        }
        let files = FileDataStore::open(data_dir, always)?;
        Ok(LogDataStore {
            eng,
            eng_paths: (log_dir, idx, opts),
            open_lock: Mutex::new(()),
            files,
            small_max,
            always,
            durable_moves,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// Stops as a crash would (tests): the index stays dirty.
    pub fn abandon(self) {
        if let Some(e) = self.eng.into_inner() {
            e.abandon();
        }
    }

    /// The engine, if the data log exists (stats, tests).
    pub fn engine(&self) -> Option<&Engine> {
        self.eng.get()
    }

    /// The engine, opened (creating the data log) if needed.
    fn engine_mut(&self) -> Result<&Engine, StoreError> {
        if let Some(e) = self.eng.get() {
            return Ok(e);
        }
        let _g = self.open_lock.lock();
        if self.eng.get().is_none() {
            let (dir, idx, opts) = &self.eng_paths;
            let _ = self.eng.set(Engine::open(dir, idx, opts.clone())?);
        }
        self.eng
            .get()
            .ok_or_else(|| StoreError::Corrupt("data log did not open".into()))
    }

    /// The value of the small-chunk record of `ino`, if any.
    fn small(&self, ino: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.eng.get() {
            Some(e) => Ok(e.get(&data_key(ino))?.map(|g| g.value)),
            None => Ok(None),
        }
    }

    fn stripe(&self, ino: u64) -> &Mutex<()> {
        &self.stripes[(xxhash_rust::xxh3::xxh3_64(&ino.to_le_bytes()) % STRIPES as u64) as usize]
    }
}

impl DataStore for LogDataStore {
    fn read(&self, ino: u64, chunk: u64, offset: u32, len: u32) -> Result<Bytes, StoreError> {
        if chunk == 0 {
            if let Some(e) = self.eng.get() {
                // The part asked for, as a view of the log: no copy.
                let part = e.get_shared(&data_key(ino), |v, _, b| {
                    let start = (offset as usize).min(v.len());
                    let end = (offset as usize).saturating_add(len as usize).min(v.len());
                    b.share(&v[start..end])
                })?;
                if let Some(part) = part {
                    return Ok(part);
                }
            }
        }
        self.files.read(ino, chunk, offset, len)
    }

    fn write(&self, ino: u64, chunk: u64, offset: u32, data: &[u8]) -> Result<(), StoreError> {
        if chunk != 0 {
            return self.files.write(ino, chunk, offset, data);
        }
        let _g = self.stripe(ino).lock();
        let key = data_key(ino);
        let end = offset as usize + data.len();
        let cur = match self.small(ino)? {
            Some(v) => v,
            None if self.files.has_chunk(ino, 0) => {
                return self.files.write(ino, chunk, offset, data)
            }
            None if end > self.small_max as usize => {
                return self.files.write(ino, chunk, offset, data)
            }
            None => Vec::new(),
        };
        // A new file's first write is its whole content: no copy to make.
        let whole = cur.is_empty() && offset == 0;
        let mut new = cur;
        if !whole {
            if new.len() < end {
                new.resize(end, 0);
            }
            new[offset as usize..end].copy_from_slice(data);
        }
        let value: &[u8] = if whole { data } else { &new };
        if value.len() <= self.small_max as usize {
            return self.engine_mut()?.commit(
                &[Op::Put {
                    key: &key,
                    value,
                    tag: TAG_DATA,
                    group: 0,
                }],
                self.always,
            );
        }
        // Move out of the log: the file first, then the record goes.
        self.files
            .replace_chunk(ino, 0, value, self.durable_moves)?;
        self.engine_mut()?
            .commit(&[Op::Del { key: &key }], self.always)
    }

    fn truncate(&self, ino: u64, size: u64, chunk_size: u32) -> Result<(), StoreError> {
        {
            let _g = self.stripe(ino).lock();
            let key = data_key(ino);
            if let Some(cur) = self.small(ino)? {
                let eng = self.engine_mut()?;
                if size == 0 {
                    eng.commit(&[Op::Del { key: &key }], self.always)?;
                } else if size < cur.len() as u64 {
                    let v = &cur[..size as usize];
                    eng.commit(
                        &[Op::Put {
                            key: &key,
                            value: v,
                            tag: TAG_DATA,
                            group: 0,
                        }],
                        self.always,
                    )?;
                }
            }
        }
        self.files.truncate(ino, size, chunk_size)
    }

    fn remove(&self, ino: u64) -> Result<(), StoreError> {
        {
            let _g = self.stripe(ino).lock();
            if let Some(e) = self.eng.get() {
                e.commit(
                    &[Op::Del {
                        key: &data_key(ino),
                    }],
                    self.always,
                )?;
            }
        }
        self.files.remove(ino)
    }

    fn sync(&self, ino: Option<u64>) -> Result<(), StoreError> {
        if let Some(e) = self.eng.get() {
            e.sync()?;
        }
        self.files.sync(ino)
    }

    fn writes_slowed(&self) -> bool {
        self.eng.get().is_some_and(Engine::writes_slowed)
    }
}
