//! The server's store, behind two traits so that another engine (the packed
//! log of a later issue) can replace the first implementations:
//!
//! * [`MetaStore`] owns inode records (keyed by path), directory entries
//!   (keyed by directory and name) and the inode-number counter. A
//!   [`MetaStore::commit`] applies its operations atomically: after a crash
//!   either all or none of them are visible.
//! * [`DataStore`] owns file data, keyed by inode number and chunk index.
//!
//! Implementations: the packed-log engine ([`LogMetaStore`],
//! [`LogDataStore`] over [`engine`]; the default) and the interim ones,
//! [`RedbMetaStore`] (`meta_dir/meta.redb`) and [`FileDataStore`]
//! (`data_dir/chunks/{ino:016x}/{chunk}`), which the log data store also
//! uses for large chunks.

mod chunk_files;
pub mod engine;
mod inode_codec;
mod log_data;
mod log_meta;
mod redb_meta;
#[cfg(test)]
mod tests;

pub use chunk_files::FileDataStore;
pub use log_data::LogDataStore;
pub use log_meta::LogMetaStore;
pub use redb_meta::RedbMetaStore;

use bytes::Bytes;
use sealfs_proto::{DirEntry, Errno, FileKind, Inode};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The operating system refused (ENOSPC, EIO, …).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded database failed.
    #[error("metadata database: {0}")]
    Db(Box<redb::Error>),
    /// A stored record does not decode, or the store has an unknown format.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A log record's checksum does not match its bytes.
    #[error("record checksum mismatch: computed {got:08x}, stored {expected:08x}")]
    Checksum {
        /// Computed over the record.
        got: u32,
        /// Stored in the record.
        expected: u32,
    },
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Db(Box::new(e))
    }
}

impl StoreError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            what: what.into(),
            source,
        }
    }

    /// The errno a client sees: the OS error if there is one, else `EIO`.
    pub fn errno(&self) -> Errno {
        match self {
            StoreError::Io { source, .. } => os_errno(source),
            StoreError::Db(e) => match &**e {
                redb::Error::Io(source) => os_errno(source),
                redb::Error::ValueTooLarge(_) => Errno::ENOSPC,
                _ => Errno::EIO,
            },
            StoreError::Corrupt(_) | StoreError::Checksum { .. } => Errno::EIO,
        }
    }
}

/// The raw OS errno of `e`, `EIO` when it has none.
pub(crate) fn os_errno(e: &std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(n) => Errno(n),
        None => Errno::EIO,
    }
}

/// Where an inode record stands in the two-server create/remove protocol.
///
/// A create commits the record `Pending` before it asks the parent's owner
/// to add the name, and `Normal` after; a remove commits `Unlinking` before
/// it asks the parent's owner to drop the name, and deletes the record
/// after. Recovery finishes whatever a crash or an unreachable peer left
/// half done. Only `Normal` records are visible to clients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    /// Linked and visible.
    Normal,
    /// Created, not yet known to be linked into `parent` as `name`.
    Pending {
        /// The parent directory.
        parent: String,
        /// The name in it.
        name: String,
    },
    /// Being removed; the name in `parent` may still exist.
    Unlinking {
        /// The parent directory.
        parent: String,
        /// The name in it.
        name: String,
    },
}

/// An inode record as the meta store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InodeRecord {
    /// The inode.
    pub inode: Inode,
    /// Its protocol state.
    pub state: RecordState,
}

impl InodeRecord {
    /// A visible record.
    pub fn normal(inode: Inode) -> Self {
        InodeRecord {
            inode,
            state: RecordState::Normal,
        }
    }

    /// Whether clients may see it.
    pub fn is_normal(&self) -> bool {
        self.state == RecordState::Normal
    }
}

/// One change of a [`MetaStore::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaOp {
    /// Insert or replace the record of a path.
    PutInode(String, InodeRecord),
    /// Delete the record of a path (no error if absent).
    DelInode(String),
    /// Insert or replace an entry of a directory.
    PutEntry(String, DirEntry),
    /// Delete an entry (directory, name); no error if absent.
    DelEntry(String, String),
}

/// Metadata of the paths this server owns.
pub trait MetaStore: Send + Sync {
    /// The record of a path, whatever its state.
    fn get_inode(&self, path: &str) -> Result<Option<InodeRecord>, StoreError>;
    /// One entry of a directory.
    fn get_entry(&self, dir: &str, name: &str) -> Result<Option<DirEntry>, StoreError>;
    /// Up to `limit` entries of `dir` in name (byte) order, strictly after
    /// `after` when given.
    fn list_entries(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, StoreError>;
    /// Whether `dir` has any entry.
    fn has_entries(&self, dir: &str) -> Result<bool, StoreError>;
    /// Applies `ops` in order, atomically, durably as the sync policy says.
    fn commit(&self, ops: &[MetaOp]) -> Result<(), StoreError>;
    /// Every record not in the `Normal` state, with its path.
    fn unsettled(&self) -> Result<Vec<(String, InodeRecord)>, StoreError>;
    /// The persisted inode counter reservation (0 on a new store).
    fn ino_reserved(&self) -> Result<u64, StoreError>;
    /// Persists a new inode counter reservation (always durably).
    fn set_ino_reserved(&self, v: u64) -> Result<(), StoreError>;
    /// Makes every earlier commit durable, whatever the sync policy.
    fn flush(&self) -> Result<(), StoreError>;
    /// Whether commits that write are held back now (the log's compaction
    /// is behind): a caller on a thread that must not block sends its
    /// writes elsewhere.
    fn writes_slowed(&self) -> bool {
        false
    }
}

/// File data of the chunks this server owns.
pub trait DataStore: Send + Sync {
    /// Reads up to `len` bytes at `offset` of a chunk; shorter at the end of
    /// the stored chunk, empty if nothing is stored. Holes read as zeros.
    /// Small files' bytes come as a view of the log, not a copy.
    fn read(&self, ino: u64, chunk: u64, offset: u32, len: u32) -> Result<Bytes, StoreError>;
    /// Writes `data` at `offset` of a chunk.
    fn write(&self, ino: u64, chunk: u64, offset: u32, data: &[u8]) -> Result<(), StoreError>;
    /// Drops the bytes of `ino` at and past `size` (chunks of `chunk_size`).
    fn truncate(&self, ino: u64, size: u64, chunk_size: u32) -> Result<(), StoreError>;
    /// Drops every chunk of `ino`.
    fn remove(&self, ino: u64) -> Result<(), StoreError>;
    /// Makes the data of `ino` (or of every inode) durable.
    fn sync(&self, ino: Option<u64>) -> Result<(), StoreError>;
    /// As [`MetaStore::writes_slowed`].
    fn writes_slowed(&self) -> bool {
        false
    }
}

/// Stored form of a directory entry's value.
pub(crate) type EntryValue = (FileKind, u64);
