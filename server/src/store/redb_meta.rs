//! [`MetaStore`] on redb, in `meta_dir/meta.redb`.
//!
//! Tables (keys and values; values are postcard):
//!
//! | table       | key                 | value                          |
//! | ----------- | ------------------- | ------------------------------ |
//! | `inodes`    | path                | [`InodeRecord`]                |
//! | `entries`   | `"{dir}\0{name}"`   | `(FileKind, ino)`              |
//! | `unsettled` | path                | `()`: the record is not Normal |
//! | `info`      | `"format"`, `"ino_reserved"` | `u64`                 |
//!
//! Paths and names hold no NUL, so a directory's entries are exactly the key
//! range `"{dir}\0".."{dir}\x01"`, in byte order of the names. `unsettled`
//! is kept in the same transaction as `inodes`, so recovery never scans every
//! record.

use super::{EntryValue, InodeRecord, MetaOp, MetaStore, StoreError};
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use sealfs_proto::DirEntry;
use std::ops::Bound;
use std::path::Path;

const INODES: TableDefinition<&str, &[u8]> = TableDefinition::new("inodes");
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const UNSETTLED: TableDefinition<&str, ()> = TableDefinition::new("unsettled");
const INFO: TableDefinition<&str, u64> = TableDefinition::new("info");

/// Version of the table layout above.
const FORMAT: u64 = 1;
const KEY_FORMAT: &str = "format";
const KEY_INO_RESERVED: &str = "ino_reserved";

/// The redb meta store.
pub struct RedbMetaStore {
    db: Database,
    durability: Durability,
}

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::from(e.into())
}

fn entry_key(dir: &str, name: &str) -> String {
    let mut k = String::with_capacity(dir.len() + 1 + name.len());
    k.push_str(dir);
    k.push('\0');
    k.push_str(name);
    k
}

fn decode_record(path: &str, bytes: &[u8]) -> Result<InodeRecord, StoreError> {
    postcard::from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("inode record of {path:?}: {e}")))
}

fn decode_entry(dir: &str, name: &str, bytes: &[u8]) -> Result<DirEntry, StoreError> {
    let (kind, ino): EntryValue = postcard::from_bytes(bytes)
        .map_err(|e| StoreError::Corrupt(format!("entry {name:?} of {dir:?}: {e}")))?;
    Ok(DirEntry {
        name: name.to_string(),
        kind,
        ino,
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(v).map_err(|e| StoreError::Corrupt(format!("encode: {e}")))
}

impl RedbMetaStore {
    /// Opens (or creates) `meta_dir/meta.redb`. `durable` chooses whether a
    /// commit is on stable storage when it returns.
    pub fn open(meta_dir: &Path, durable: bool) -> Result<Self, StoreError> {
        let path = meta_dir.join("meta.redb");
        let database = Database::create(&path).map_err(db)?;
        let store = RedbMetaStore {
            db: database,
            durability: if durable {
                Durability::Immediate
            } else {
                Durability::None
            },
        };
        let mut txn = store.db.begin_write().map_err(db)?;
        txn.set_durability(Durability::Immediate);
        {
            txn.open_table(INODES).map_err(db)?;
            txn.open_table(ENTRIES).map_err(db)?;
            txn.open_table(UNSETTLED).map_err(db)?;
            let mut info = txn.open_table(INFO).map_err(db)?;
            let format = info.get(KEY_FORMAT).map_err(db)?.map(|g| g.value());
            match format {
                None => {
                    info.insert(KEY_FORMAT, FORMAT).map_err(db)?;
                }
                Some(FORMAT) => {}
                Some(f) => {
                    return Err(StoreError::Corrupt(format!(
                        "{} has layout version {f}, this build reads {FORMAT}",
                        path.display()
                    )))
                }
            }
        }
        txn.commit().map_err(db)?;
        Ok(store)
    }

    fn write(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(db)?;
        txn.set_durability(durability);
        // An error drops (aborts) the transaction.
        f(&txn)?;
        txn.commit().map_err(db)
    }
}

impl MetaStore for RedbMetaStore {
    fn get_inode(&self, path: &str) -> Result<Option<InodeRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(INODES).map_err(db)?;
        match t.get(path).map_err(db)? {
            Some(g) => Ok(Some(decode_record(path, g.value())?)),
            None => Ok(None),
        }
    }

    fn get_entry(&self, dir: &str, name: &str) -> Result<Option<DirEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(ENTRIES).map_err(db)?;
        match t.get(entry_key(dir, name).as_str()).map_err(db)? {
            Some(g) => Ok(Some(decode_entry(dir, name, g.value())?)),
            None => Ok(None),
        }
    }

    fn list_entries(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(ENTRIES).map_err(db)?;
        let start = match after {
            Some(a) => entry_key(dir, a),
            None => entry_key(dir, ""),
        };
        let end = format!("{dir}\x01");
        let lo = if after.is_some() {
            Bound::Excluded(start.as_str())
        } else {
            Bound::Included(start.as_str())
        };
        let mut out = Vec::new();
        for item in t
            .range::<&str>((lo, Bound::Excluded(end.as_str())))
            .map_err(db)?
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(db)?;
            let key = k.value();
            let name = key.get(dir.len() + 1..).unwrap_or("");
            out.push(decode_entry(dir, name, v.value())?);
        }
        Ok(out)
    }

    fn has_entries(&self, dir: &str) -> Result<bool, StoreError> {
        Ok(!self.list_entries(dir, None, 1)?.is_empty())
    }

    fn commit(&self, ops: &[MetaOp]) -> Result<(), StoreError> {
        self.write(self.durability, |txn| {
            let mut inodes = txn.open_table(INODES).map_err(db)?;
            let mut entries = txn.open_table(ENTRIES).map_err(db)?;
            let mut unsettled = txn.open_table(UNSETTLED).map_err(db)?;
            for op in ops {
                match op {
                    MetaOp::PutInode(path, rec) => {
                        inodes
                            .insert(path.as_str(), encode(rec)?.as_slice())
                            .map_err(db)?;
                        if rec.is_normal() {
                            unsettled.remove(path.as_str()).map_err(db)?;
                        } else {
                            unsettled.insert(path.as_str(), ()).map_err(db)?;
                        }
                    }
                    MetaOp::DelInode(path) => {
                        inodes.remove(path.as_str()).map_err(db)?;
                        unsettled.remove(path.as_str()).map_err(db)?;
                    }
                    MetaOp::PutEntry(dir, e) => {
                        let v: EntryValue = (e.kind, e.ino);
                        entries
                            .insert(entry_key(dir, &e.name).as_str(), encode(&v)?.as_slice())
                            .map_err(db)?;
                    }
                    MetaOp::DelEntry(dir, name) => {
                        entries.remove(entry_key(dir, name).as_str()).map_err(db)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn unsettled(&self) -> Result<Vec<(String, InodeRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let u = txn.open_table(UNSETTLED).map_err(db)?;
        if u.is_empty().map_err(db)? {
            return Ok(Vec::new());
        }
        let inodes = txn.open_table(INODES).map_err(db)?;
        let mut out = Vec::new();
        for item in u.iter().map_err(db)? {
            let (k, _) = item.map_err(db)?;
            let path = k.value();
            if let Some(g) = inodes.get(path).map_err(db)? {
                let rec = decode_record(path, g.value())?;
                if !rec.is_normal() {
                    out.push((path.to_string(), rec));
                }
            }
        }
        Ok(out)
    }

    fn ino_reserved(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(INFO).map_err(db)?;
        Ok(t.get(KEY_INO_RESERVED)
            .map_err(db)?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    fn set_ino_reserved(&self, v: u64) -> Result<(), StoreError> {
        // Always durable: a restart must never hand out a number twice.
        self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(INFO).map_err(db)?;
            t.insert(KEY_INO_RESERVED, v).map_err(db)?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.write(Durability::Immediate, |_| Ok(()))
    }
}
