//! `sealfs-daemon`: the per-node agent that serves the FUSE fallback mount
//! (`sealfs mount`), built on the `fuser` crate and the SealFS client
//! library.
//!
//! Programs that cannot be preloaded with the shim (static binaries, Go
//! programs, other users' shells, `execve` of a stored binary) reach SealFS
//! through this mount. It is the compatibility path, not the fast one.
//!
//! Modules: `table` (node id ↔ path, lookup counts, files unlinked while
//! open), `fs` (the `fuser::Filesystem`), `mount` (mount, serve, signals,
//! unmount, stale mounts), `cli` (the subcommands), `sys` (libc wrappers).

mod cli;
mod fs;
mod mount;
mod sys;
mod table;

pub use cli::{
    mount as mount_command, parse_duration, umount as umount_command, MountArgs, UmountArgs,
};
pub use fs::{FsOptions, SealFs, MAX_WRITE};
pub use mount::{check_mountpoint, run, umount, DaemonError, MountConfig};
pub use table::{HIDDEN_DIR, HIDDEN_NAME};
