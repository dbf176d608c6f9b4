//! [`DataStore`] on plain files: chunk `c` of inode `i` is the file
//! `data_dir/chunks/{i:016x}/{c}` (decimal chunk index), as long as the
//! highest byte written into it (or shorter after a truncate). Holes inside a
//! chunk file are sparse and read as zeros; a missing chunk file reads as
//! empty.
//!
//! Durability: with `sync_each_write` every write is `fdatasync`ed before it
//! returns, together with the directories a write had to create. Otherwise
//! data reaches stable storage on [`DataStore::sync`] (the client's `fsync`),
//! which syncs every chunk file of the inode and both directory levels.
//!
//! The inodes that have a chunk directory are kept in memory (listed once
//! at open, a superset at all times: added before a directory is created,
//! dropped before it is removed), so the common small-file case (no chunk
//! file at all) costs no path lookup on write, read, truncate or remove.

use super::{DataStore, StoreError};
use crate::sys;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The chunk-file data store.
pub struct FileDataStore {
    chunks: PathBuf,
    sync_each_write: bool,
    /// Inodes that may have a chunk directory (a superset).
    dirs: RwLock<HashSet<u64>>,
}

fn sync_dir(p: &Path) -> Result<(), StoreError> {
    File::open(p)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsync {}", p.display()), e))
}

impl FileDataStore {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path, sync_each_write: bool) -> Result<Self, StoreError> {
        let chunks = data_dir.join("chunks");
        fs::create_dir_all(&chunks)
            .map_err(|e| StoreError::io(format!("create {}", chunks.display()), e))?;
        let mut dirs = HashSet::new();
        let list_err = |e| StoreError::io(format!("list {}", chunks.display()), e);
        for ent in fs::read_dir(&chunks).map_err(list_err)? {
            let ent = ent.map_err(list_err)?;
            match ent
                .file_name()
                .to_str()
                .and_then(|n| u64::from_str_radix(n, 16).ok())
            {
                Some(ino) => {
                    dirs.insert(ino);
                }
                None => tracing::warn!("{}: not a chunk directory, ignored", ent.path().display()),
            }
        }
        Ok(FileDataStore {
            chunks,
            sync_each_write,
            dirs: RwLock::new(dirs),
        })
    }

    /// Whether `ino` may have chunk files.
    fn may_have(&self, ino: u64) -> bool {
        self.dirs.read().contains(&ino)
    }

    /// Creates the chunk directory of `ino` (recorded first); true if new.
    fn make_ino_dir(&self, ino: u64) -> Result<bool, StoreError> {
        if !self.may_have(ino) {
            self.dirs.write().insert(ino);
        }
        let dir = self.ino_dir(ino);
        match fs::create_dir(&dir) {
            Ok(()) => {
                // Again: a racing remove may have dropped it in between.
                self.dirs.write().insert(ino);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::io(format!("create {}", dir.display()), e)),
        }
    }

    fn ino_dir(&self, ino: u64) -> PathBuf {
        self.chunks.join(format!("{ino:016x}"))
    }

    fn chunk_path(&self, ino: u64, chunk: u64) -> PathBuf {
        self.ino_dir(ino).join(chunk.to_string())
    }

    /// The chunk files of `ino` (index, path); empty if it has none.
    fn chunk_files(&self, ino: u64) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        if !self.may_have(ino) {
            return Ok(Vec::new());
        }
        let dir = self.ino_dir(ino);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(format!("list {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io(format!("list {}", dir.display()), e))?;
            if let Some(c) = ent.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                out.push((c, ent.path()));
            }
        }
        out.sort_unstable_by_key(|p| p.0);
        Ok(out)
    }
}

impl FileDataStore {
    /// Whether chunk `chunk` of `ino` has a file.
    pub fn has_chunk(&self, ino: u64, chunk: u64) -> bool {
        self.may_have(ino) && self.chunk_path(ino, chunk).exists()
    }

    /// Replaces the whole content of a chunk with `data` (used when a small
    /// chunk moves out of the packed log); synced, with its directories,
    /// when `durable`.
    pub fn replace_chunk(
        &self,
        ino: u64,
        chunk: u64,
        data: &[u8],
        durable: bool,
    ) -> Result<(), StoreError> {
        let dir = self.ino_dir(ino);
        let created_dir = self.make_ino_dir(ino)?;
        let p = self.chunk_path(ino, chunk);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .map_err(|e| StoreError::io(format!("create {}", p.display()), e))?;
        f.write_all_at(data, 0)
            .map_err(|e| StoreError::io(format!("write {}", p.display()), e))?;
        if durable {
            f.sync_data()
                .map_err(|e| StoreError::io(format!("fsync {}", p.display()), e))?;
            sync_dir(&dir)?;
            if created_dir {
                sync_dir(&self.chunks)?;
            }
        }
        Ok(())
    }
}

impl DataStore for FileDataStore {
    fn read(&self, ino: u64, chunk: u64, offset: u32, len: u32) -> Result<Bytes, StoreError> {
        if !self.may_have(ino) {
            return Ok(Bytes::new());
        }
        let p = self.chunk_path(ino, chunk);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Bytes::new()),
            Err(e) => return Err(StoreError::io(format!("open {}", p.display()), e)),
        };
        let mut buf = vec![0u8; len as usize];
        let mut got = 0usize;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset as u64 + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::io(format!("read {}", p.display()), e)),
            }
        }
        buf.truncate(got);
        Ok(buf.into())
    }

    fn write(&self, ino: u64, chunk: u64, offset: u32, data: &[u8]) -> Result<(), StoreError> {
        let p = self.chunk_path(ino, chunk);
        let mut opts = OpenOptions::new();
        opts.write(true);
        // Fast path: the chunk exists. Otherwise create it (and its directory).
        let (f, created_file, created_dir) = match opts.open(&p) {
            Ok(f) => (f, false, false),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let created_dir = self.make_ino_dir(ino)?;
                let f = opts
                    .create(true)
                    .open(&p)
                    .map_err(|e| StoreError::io(format!("create {}", p.display()), e))?;
                (f, true, created_dir)
            }
            Err(e) => return Err(StoreError::io(format!("open {}", p.display()), e)),
        };
        f.write_all_at(data, offset as u64)
            .map_err(|e| StoreError::io(format!("write {}", p.display()), e))?;
        if self.sync_each_write {
            f.sync_data()
                .map_err(|e| StoreError::io(format!("fsync {}", p.display()), e))?;
            if created_file {
                sync_dir(&self.ino_dir(ino))?;
            }
            if created_dir {
                sync_dir(&self.chunks)?;
            }
        }
        Ok(())
    }

    fn truncate(&self, ino: u64, size: u64, chunk_size: u32) -> Result<(), StoreError> {
        let cs = u64::from(chunk_size.max(1));
        for (c, p) in self.chunk_files(ino)? {
            let start = c.saturating_mul(cs);
            if start >= size {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(format!("remove {}", p.display()), e)),
                }
            } else if size - start < cs {
                let keep = size - start;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| StoreError::io(format!("open {}", p.display()), e))?;
                let len = f
                    .metadata()
                    .map_err(|e| StoreError::io(format!("stat {}", p.display()), e))?
                    .len();
                if len > keep {
                    f.set_len(keep)
                        .map_err(|e| StoreError::io(format!("truncate {}", p.display()), e))?;
                    if self.sync_each_write {
                        f.sync_all()
                            .map_err(|e| StoreError::io(format!("fsync {}", p.display()), e))?;
                    }
                }
            }
        }
        if self.sync_each_write {
            let dir = self.ino_dir(ino);
            if dir.exists() {
                sync_dir(&dir)?;
            }
        }
        Ok(())
    }

    fn remove(&self, ino: u64) -> Result<(), StoreError> {
        if !self.may_have(ino) {
            return Ok(());
        }
        // Dropped before the directory goes, so the set stays a superset if
        // a racing write recreates it (it re-adds the inode first).
        self.dirs.write().remove(&ino);
        let dir = self.ino_dir(ino);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(format!("remove {}", dir.display()), e)),
        }
        if self.sync_each_write {
            sync_dir(&self.chunks)?;
        }
        Ok(())
    }

    fn sync(&self, ino: Option<u64>) -> Result<(), StoreError> {
        match ino {
            Some(ino) => {
                let files = self.chunk_files(ino)?;
                if files.is_empty() {
                    return Ok(());
                }
                for (_, p) in files {
                    match File::open(&p) {
                        Ok(f) => f
                            .sync_data()
                            .map_err(|e| StoreError::io(format!("fsync {}", p.display()), e))?,
                        // Removed by a concurrent truncate: nothing to sync.
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io(format!("open {}", p.display()), e)),
                    }
                }
                match File::open(self.ino_dir(ino)) {
                    Ok(d) => d
                        .sync_all()
                        .map_err(|e| StoreError::io(format!("fsync dir of {ino:016x}"), e))?,
                    // Removed meanwhile (RemoveData): nothing left to sync.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(format!("open dir of {ino:016x}"), e)),
                }
                sync_dir(&self.chunks)
            }
            None => {
                let d = File::open(&self.chunks)
                    .map_err(|e| StoreError::io(format!("open {}", self.chunks.display()), e))?;
                sys::syncfs(&d)
                    .map_err(|e| StoreError::io(format!("syncfs {}", self.chunks.display()), e))
            }
        }
    }
}
