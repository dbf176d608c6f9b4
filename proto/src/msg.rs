//! Typed requests and replies. One request gets exactly one reply with the
//! same frame id. Which server a request goes to:
//!
//! * cluster messages (`Register`, `Heartbeat`, `GetMap`) go to the manager;
//! * path messages go to `ring.owner_path(path)`;
//! * entry messages (`AddEntry`, `RemoveEntry`, `GetEntry`) go to the owner of
//!   the directory, and are sent by the server that coordinates a create or a
//!   remove, never by clients;
//! * chunk messages (`Read`, `Write`) go to `ring.owner_chunk(ino, chunk)`;
//! * `TruncateData`, `RemoveData`, `StatFs` and `Fsync` go to any server (the
//!   client sends them to each server that may hold the file's chunks).
//!
//! File data is keyed by the inode number, not the path, so a rename moves
//! only the inode record and never the data.

use crate::placement::{ClusterMap, ServerId};
use crate::Errno;
use serde::{Deserialize, Serialize};

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is in [`Inode::target`].
    Symlink,
}

impl FileKind {
    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, below 1e9.
    pub nsec: u32,
}

impl Timespec {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        }
    }
}

/// The attributes of an inode, as `stat` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// Inode number, handed out by the server that created the inode; stable
    /// across renames and restarts, never reused.
    pub ino: u64,
    /// File, directory or symlink.
    pub kind: FileKind,
    /// Permission bits (`0o7777`), without the type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (for a directory: 4096; for a symlink: target length).
    pub size: u64,
    /// Link count (a directory: 2 + its subdirectories).
    pub nlink: u32,
    /// Last access.
    pub atime: Timespec,
    /// Last data change.
    pub mtime: Timespec,
    /// Last status change.
    pub ctime: Timespec,
}

impl Attr {
    /// `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.mode & 0o7777)
    }
}

/// An inode record as its owner keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    /// The attributes.
    pub attr: Attr,
    /// A symlink's target.
    pub target: Option<String>,
}

/// One name in a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The name (one path component).
    pub name: String,
    /// What it names.
    pub kind: FileKind,
    /// Its inode number.
    pub ino: u64,
}

/// A time to set with `SetAttr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    /// The server's current time (`UTIME_NOW`).
    Now,
    /// A given time.
    At(Timespec),
}

/// The attribute changes of a `SetAttr`; `None` leaves a field as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (the inode only; the client then trims the chunks).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSet>,
    /// New modification time.
    pub mtime: Option<TimeSet>,
}

/// File-system statistics of one server, in `bsize` blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    /// Block size.
    pub bsize: u32,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Longest name.
    pub namemax: u32,
    /// The server's stores slow commits that write values, their
    /// compaction being behind (not a `statvfs` field: `sealfs status`
    /// shows it; summed over servers, whether any does).
    pub writes_slowed: bool,
}

/// What `Create` makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInode {
    /// File, directory or symlink.
    pub kind: FileKind,
    /// Permission bits (after the caller's umask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A symlink's target.
    pub target: Option<String>,
}

/// A request with the sender's view of the cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Epoch of the map the sender routed by (0 for cluster messages).
    pub epoch: u64,
    /// The request.
    pub req: Request,
}

/// Every request of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    // ---- cluster messages, to the manager ----
    /// A server joins or rejoins. `uuid` is its persistent identity.
    /// Reply: `Registered`.
    Register {
        /// The server's persistent identity (kept in its meta dir).
        uuid: String,
        /// The address clients reach it at.
        addr: String,
    },
    /// A server is alive. Reply: `Map`.
    Heartbeat {
        /// The server's id.
        id: ServerId,
    },
    /// The current cluster map. Reply: `Map`.
    GetMap,

    // ---- path messages, to owner_path(path) ----
    /// `stat` a path. Reply: `Inode`.
    GetAttr {
        /// Normalised absolute path.
        path: String,
    },
    /// Create a file, directory or symlink and link it into its parent.
    /// With `excl == false` an existing inode is returned instead of
    /// `EEXIST`. Reply: `Created`.
    Create {
        /// Normalised absolute path.
        path: String,
        /// What to make.
        new: NewInode,
        /// `O_EXCL` semantics.
        excl: bool,
    },
    /// Change attributes. Reply: `Inode`.
    SetAttr {
        /// Normalised absolute path.
        path: String,
        /// The changes.
        set: SetAttr,
    },
    /// After a write: size = max(size, `size`), mtime = ctime = `mtime`.
    /// Reply: `Inode`.
    Extend {
        /// Normalised absolute path.
        path: String,
        /// End offset of the write.
        size: u64,
        /// Time of the write.
        mtime: Timespec,
    },
    /// Unlink (`dir == false`) or rmdir (`dir == true`) and unlink from the
    /// parent. The file's chunks are the client's to remove. Reply: `Inode`
    /// (the record removed).
    Remove {
        /// Normalised absolute path.
        path: String,
        /// rmdir rather than unlink.
        dir: bool,
    },
    /// Insert an existing inode record at a new path and link it into the
    /// parent (the first half of a rename). `EEXIST` if the path exists.
    /// Reply: `Inode`.
    Adopt {
        /// Normalised absolute path.
        path: String,
        /// The record, as it was at the old path.
        inode: Inode,
    },
    /// List a directory in name order, `limit` names after `after`.
    /// Reply: `Entries`.
    ReadDir {
        /// Normalised absolute path.
        path: String,
        /// Resume after this name (exclusive); `None` starts at the beginning.
        after: Option<String>,
        /// At most this many entries.
        limit: u32,
    },

    // ---- entry messages, server to server, to owner_path(dir) ----
    /// Add a name to a directory. `ENOENT`/`ENOTDIR` if the directory is gone
    /// or is no directory, `EEXIST` if the name is taken. Reply: `Ok`.
    AddEntry {
        /// The directory.
        dir: String,
        /// The new entry.
        entry: DirEntry,
    },
    /// Remove a name from a directory if it names `ino` (idempotent).
    /// Reply: `Ok`.
    RemoveEntry {
        /// The directory.
        dir: String,
        /// The name.
        name: String,
        /// The inode the name must refer to.
        ino: u64,
    },
    /// Look up one name in a directory (used by recovery). Reply: `Entry`.
    GetEntry {
        /// The directory.
        dir: String,
        /// The name.
        name: String,
    },

    // ---- chunk messages, to owner_chunk(ino, chunk) ----
    /// Read from one chunk. A hole or the end of the stored chunk gives a
    /// shorter reply; the client fills zeros up to the file size.
    /// Reply: `Data`.
    Read {
        /// Inode number.
        ino: u64,
        /// Chunk index.
        chunk: u64,
        /// Offset inside the chunk.
        offset: u32,
        /// Bytes wanted; `offset + len` ≤ chunk size.
        len: u32,
    },
    /// Write into one chunk. Reply: `Written`.
    Write {
        /// Inode number.
        ino: u64,
        /// Chunk index.
        chunk: u64,
        /// Offset inside the chunk.
        offset: u32,
        /// The bytes; `offset + data.len()` ≤ chunk size. Shared, so a
        /// request kept for a retry costs no copy (same wire bytes as a
        /// `serde_bytes` vector).
        data: bytes::Bytes,
    },

    // ---- per-server messages ----
    /// Drop this server's bytes of `ino` at and past `size`. Reply: `Ok`.
    TruncateData {
        /// Inode number.
        ino: u64,
        /// New size of the file.
        size: u64,
    },
    /// Drop every chunk of `ino` on this server. Reply: `Ok`.
    RemoveData {
        /// Inode number.
        ino: u64,
    },
    /// Make this server's writes of `ino` (or of everything) durable.
    /// Reply: `Ok`.
    Fsync {
        /// The file, or every file.
        ino: Option<u64>,
    },
    /// Space and inode counts of this server. Reply: `StatFs`.
    StatFs,

    // ---- transport set-up ----
    /// Opens an RDMA connection: `params` are the client endpoint's
    /// connection parameters (queue pair number, port address, buffer
    /// key), opaque to everything but `sealfs_transport::rdma`.
    /// Reply: `RdmaAccept` with the server endpoint's parameters, or
    /// `ENOTSUP` from a server without RDMA.
    RdmaConnect {
        /// The client endpoint's parameters.
        #[serde(with = "serde_bytes")]
        params: Vec<u8>,
    },
}

impl Request {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Heartbeat { .. } => "heartbeat",
            Request::GetMap => "get_map",
            Request::GetAttr { .. } => "getattr",
            Request::Create { .. } => "create",
            Request::SetAttr { .. } => "setattr",
            Request::Extend { .. } => "extend",
            Request::Remove { .. } => "remove",
            Request::Adopt { .. } => "adopt",
            Request::ReadDir { .. } => "readdir",
            Request::AddEntry { .. } => "add_entry",
            Request::RemoveEntry { .. } => "remove_entry",
            Request::GetEntry { .. } => "get_entry",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::TruncateData { .. } => "truncate_data",
            Request::RemoveData { .. } => "remove_data",
            Request::Fsync { .. } => "fsync",
            Request::StatFs => "statfs",
            Request::RdmaConnect { .. } => "rdma_connect",
        }
    }
}

/// Every reply of the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to return.
    Ok,
    /// The operation failed with this errno.
    Err(Errno),
    /// The sender routed by an older map, or this server does not own the
    /// key under its map: fetch the map (at least this epoch) and retry.
    StaleEpoch {
        /// The epoch the server knows.
        epoch: u64,
    },
    /// A server's id and the map after it joined.
    Registered {
        /// The id the manager gave (stable for the server's uuid).
        id: ServerId,
        /// The current map.
        map: ClusterMap,
    },
    /// The cluster map.
    Map(ClusterMap),
    /// An inode record.
    Inode(Inode),
    /// The result of `Create`.
    Created {
        /// The inode (new, or the existing one when `created == false`).
        inode: Inode,
        /// Whether it was made by this request.
        created: bool,
    },
    /// A page of directory entries.
    Entries {
        /// Entries in name order.
        entries: Vec<DirEntry>,
        /// Where to resume; `None` when the listing is complete.
        next: Option<String>,
    },
    /// One directory entry, if present.
    Entry(Option<DirEntry>),
    /// Bytes read (encoded as a `serde_bytes` vector). A server hands
    /// a small file's bytes from its log to the reply without a copy.
    Data(bytes::Bytes),
    /// Bytes written.
    Written(u32),
    /// Space and inode counts.
    StatFs(StatFs),
    /// The server endpoint's RDMA connection parameters.
    RdmaAccept(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Reply {
    /// The errno of an error reply, `EPROTO` for a reply of the wrong type.
    pub fn unexpected(self) -> Errno {
        match self {
            Reply::Err(e) => e,
            _ => Errno::EPROTO,
        }
    }
}
