//! `libsealfs.so`: the LD_PRELOAD interception library of SealFS and its
//! direct-link C API (`include/sealfs.h`).
//!
//! Calls on paths under `SEALFS_MOUNT` (default `/sealfs`), on fds the shim
//! handed out, and relative to a cwd inside SealFS go to the cluster
//! through [`sealfs_client`]; every other call passes to the real libc
//! function after one branch. See `shim/README.md` for what is covered.
//!
//! Layout (after mirrord's layer and GekkoFS's client): `real` (the real
//! libc functions), `guard` (re-entrancy), `fdtable` (fd → open file),
//! `paths` (what is SealFS's), `ops` (the operations), `dir` (directory
//! streams), `stdio` (cookie streams), `process` (fork/exec), `hooks`
//! (the exported names), `capi` (the direct-link API).

#![cfg_attr(test, allow(dead_code, unused_imports))]

mod attr;
mod capi;
mod config;
mod dir;
mod fdtable;
mod guard;
#[cfg(not(test))]
mod hooks;
mod ops;
mod paths;
mod perm;
mod process;
mod real;
mod shm;
mod spawn;
mod stdio;
#[cfg(not(test))]
mod variadic;

/// The library constructor (cheap: registers fork handlers and parses what
/// an exec carried over; never connects).
#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = process::init;

/// The library destructor: finishes the deferred unlinks of files this
/// process unlinked while they were open and never closed.
#[cfg(not(test))]
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = process::fini;
