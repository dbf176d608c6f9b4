//! The SealFS client library, shared by the LD_PRELOAD shim, the FUSE daemon
//! and the `sealfs` CLI.
//!
//! It is synchronous on purpose: it starts no background threads and runs no
//! async runtime, because it lives inside preloaded applications. Every call
//! blocks the calling thread until its replies arrive (the transport has
//! timeouts, so nothing hangs). A [`Client`] is `Send + Sync` and can be used
//! from many threads at once. The only threads it ever starts are scoped
//! ones that end before the call that started them returns (to run large
//! striped reads and writes against several servers at once).
//!
//! What it owns:
//! * the cluster map and routing ([`Client::map`], retries on stale epochs
//!   and on restarted servers) — `state`, `route`;
//! * the namespace operations, path normalisation and symlink following —
//!   `meta`;
//! * striping of file data in chunks keyed by inode number — `data`;
//! * rename, coordinated by the client — `rename`.
//!
//! Every path is an absolute SealFS path (`/a/b`), normalised with
//! [`sealfs_proto::path::normalize`]; errors are [`Errno`] values, as a local
//! file system would give them.
//!
//! **No caching.** Attributes, directory entries and data are not cached:
//! every call asks the owning server, which keeps many clients coherent with
//! each other at the cost of a round trip per call.

mod data;
mod meta;
mod rename;
mod route;
mod state;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod scenarios;

pub use sealfs_proto::{
    Attr, ClusterMap, DirEntry, Errno, FileKind, Inode, SetAttr, StatFs, TimeSet, Timespec,
};
pub use state::Connector;

use sealfs_transport::ClientConfig;
use std::sync::Arc;
use thiserror::Error;

/// How a [`Client`] connects.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Timeouts and limits of the connections to the manager and servers.
    pub transport: ClientConfig,
    /// Where applications see SealFS (the shim's prefix, e.g. `/sealfs`):
    /// an absolute symlink target under it is followed as the SealFS path
    /// below it, so `ln -s /sealfs/data/x link` works as it would on a
    /// mount. Other absolute targets are taken as SealFS paths.
    pub mount_prefix: Option<String>,
}

/// Why [`Client::connect`] failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The manager did not answer.
    #[error("cannot reach the SealFS manager at {addr}: {reason}")]
    Unreachable {
        /// The manager's address as given.
        addr: String,
        /// What the transport said.
        reason: String,
    },
    /// The manager answered, but not with a usable cluster map.
    #[error("the SealFS manager at {addr} did not send a usable cluster map: {reason}")]
    BadMap {
        /// The manager's address as given.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

/// A connection to one SealFS cluster.
pub struct Client {
    shared: state::Shared,
    mount_prefix: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state();
        f.debug_struct("Client")
            .field("epoch", &st.map.epoch)
            .field("servers", &st.map.servers.len())
            .finish()
    }
}

impl Client {
    /// Connects to the manager at `manager` (`host:port`) and fetches the
    /// cluster map. Servers are connected lazily, on first use.
    pub fn connect(manager: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        Self::connect_with(manager, opts, state::default_connector())
    }

    /// [`Client::connect`] with another transport: `connector` makes the
    /// transport to an address (the manager's and each server's).
    pub fn connect_with(
        manager: &str,
        opts: ClientOptions,
        connector: Arc<Connector>,
    ) -> Result<Client, ClientError> {
        let mount_prefix = opts
            .mount_prefix
            .filter(|p| p.starts_with('/') && p.len() > 1);
        match state::Shared::connect(manager, opts.transport, connector) {
            Ok(shared) => Ok(Client {
                shared,
                mount_prefix,
            }),
            Err(state::FetchError::Transport(e)) => Err(ClientError::Unreachable {
                addr: manager.to_string(),
                reason: e.to_string(),
            }),
            Err(state::FetchError::Bad(reason)) => Err(ClientError::BadMap {
                addr: manager.to_string(),
                reason,
            }),
        }
    }

    /// The cluster map requests are routed by now.
    pub fn map(&self) -> ClusterMap {
        self.shared.state().map.clone()
    }

    /// Fetches the cluster map from the manager now.
    pub fn refresh_map(&self) -> Result<ClusterMap, Errno> {
        Ok(self.shared.refresh()?.map.clone())
    }

    /// Forgets every connection and reconnects lazily on next use. A child
    /// process calls this after `fork`: the sockets it inherited are shared
    /// with its parent and must not carry its requests.
    ///
    /// Call it from the child's only thread (right after `fork`): a lock
    /// held by another parent thread at fork time would never be released.
    pub fn reset_connections(&self) {
        self.shared.reset_connections();
    }

    /// Bytes per chunk of file data.
    pub fn chunk_size(&self) -> u32 {
        self.shared.state().map.chunk_size
    }
}

/// The caller's effective uid and gid, for operations that create files on
/// behalf of this process.
pub(crate) fn process_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn client_is_send_and_sync() {
        assert_send_sync::<Client>();
    }

    #[test]
    fn unreachable_manager_is_reported_clearly() {
        let opts = ClientOptions {
            transport: ClientConfig {
                connect_timeout: std::time::Duration::from_millis(200),
                ..Default::default()
            },
            ..Default::default()
        };
        // Port 1 on loopback: nothing listens there.
        let e = Client::connect("127.0.0.1:1", opts).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot reach the SealFS manager at 127.0.0.1:1: "),
            "{msg}"
        );
    }
}
