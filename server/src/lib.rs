//! SealFS storage server.
//!
//! A server owns the inode records (and directory entries) of the paths the
//! ring gives it and the chunks of file data the ring gives it. It registers
//! with the manager, heartbeats, and answers requests over TCP.
//!
//! Modules:
//! * `store` — the [`MetaStore`] and [`DataStore`] traits, the packed-log
//!   engine (the default) and the interim engines (redb metadata, chunk
//!   files), chosen by [`StoreKind`];
//! * `locks` — the per-path lock table;
//! * `ops` — request handling and the two-server create/remove protocol;
//! * `membership` — identity, registration, heartbeats, the cluster map;
//! * `recovery` — finishing operations a crash left half done;
//! * `sys` — the few libc calls std lacks.

mod error;
mod locks;
mod membership;
mod ops;
mod recovery;
mod store;
mod sys;

pub use error::ServerError;
pub use locks::{LockTable, PathGuard};
pub use store::engine;
pub use store::{
    DataStore, FileDataStore, InodeRecord, LogDataStore, LogMetaStore, MetaOp, MetaStore,
    RecordState, RedbMetaStore, StoreError,
};

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// When an acknowledged operation is on stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Metadata and file data on the client's `fsync` (which syncs every
    /// server's logs), and in the background at least every
    /// [`LAZY_SYNC_INTERVAL`] (a power loss takes at most that much
    /// un-fsynced work, as ext4's commit interval does; a crash of the
    /// server process alone takes nothing: the page cache keeps it).
    #[default]
    Fsync,
    /// Metadata on every commit and file data on every write.
    Always,
    /// Nothing is promised (scratch / burst-buffer use); `fsync` is a no-op.
    None,
}

impl FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(SyncPolicy::Fsync),
            "always" => Ok(SyncPolicy::Always),
            "none" => Ok(SyncPolicy::None),
            _ => Err(format!(
                "unknown sync policy {s:?} (expected fsync, always or none)"
            )),
        }
    }
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncPolicy::Fsync => "fsync",
            SyncPolicy::Always => "always",
            SyncPolicy::None => "none",
        })
    }
}

/// Under the `fsync` policy, the longest a commit stays only in the page
/// cache before the background sync makes it durable: ext4's default
/// journal commit interval (`commit=5`), the bound the local file system
/// gives its own metadata (its file data waits for writeback, 30 s). It
/// was 1 s until 2026-12: the store then paid for writing back its log
/// inside every burst of creates (the store bench's create phase lasts
/// about 2 s: 155k/s without the sync, 122k/s with it), which the plain
/// files it is measured against do not.
pub const LAZY_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Which store engine a server runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// The packed log with the mapped index (small files in the log, large
    /// chunks as chunk files).
    #[default]
    Log,
    /// The interim store: redb metadata, one file per chunk.
    Redb,
}

impl FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "log" => Ok(StoreKind::Log),
            "redb" => Ok(StoreKind::Redb),
            _ => Err(format!("unknown store {s:?} (expected log or redb)")),
        }
    }
}

/// Default largest file chunk kept in the packed log.
pub const DEFAULT_SMALL_FILE_MAX: u32 = 64 * 1024;

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The manager's address (`host:port`).
    pub manager: String,
    /// Address to bind.
    pub listen: String,
    /// Address to register with the manager (default: the bound address).
    pub advertise: Option<String>,
    /// Metadata directory (fast device).
    pub meta_dir: PathBuf,
    /// Data directory (bulk).
    pub data_dir: PathBuf,
    /// Durability of acknowledged operations.
    pub sync: SyncPolicy,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// The store engine.
    pub store: StoreKind,
    /// Directory for the index regions (a DAX or `/dev/shm` mount); default
    /// `meta_dir`.
    pub pmem: Option<PathBuf>,
    /// Largest first chunk of a file kept in the packed log.
    pub small_file_max: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            manager: "127.0.0.1:7000".into(),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            meta_dir: PathBuf::from("meta"),
            data_dir: PathBuf::from("data"),
            sync: SyncPolicy::Fsync,
            heartbeat: Duration::from_millis(500),
            store: StoreKind::Log,
            pmem: None,
            small_file_max: DEFAULT_SMALL_FILE_MAX,
        }
    }
}

/// Runs a server until the process ends: opens the stores, binds, registers
/// with the manager (retrying until it answers), then serves. Returns only on
/// a start-up failure.
pub fn run(cfg: ServerConfig) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sealfs-server")
        .build()
        .map_err(|e| ServerError::io("start the runtime", e))?;
    rt.block_on(serve(cfg))
}

fn prepare_dir(p: &std::path::Path, what: &str) -> Result<(), ServerError> {
    std::fs::create_dir_all(p)
        .map_err(|e| ServerError::io(format!("{what} {}", p.display()), e))?;
    let md =
        std::fs::metadata(p).map_err(|e| ServerError::io(format!("{what} {}", p.display()), e))?;
    if !md.is_dir() {
        return Err(ServerError::Config(format!(
            "{what} {} is not a directory",
            p.display()
        )));
    }
    Ok(())
}

/// The two stores of a server.
pub type Stores = (Arc<dyn MetaStore>, Arc<dyn DataStore>);

/// Opens the meta and data stores `cfg` asks for.
pub fn open_stores(cfg: &ServerConfig) -> Result<Stores, ServerError> {
    let durable = cfg.sync != SyncPolicy::None;
    let always = cfg.sync == SyncPolicy::Always;
    Ok(match cfg.store {
        StoreKind::Redb => (
            Arc::new(RedbMetaStore::open(&cfg.meta_dir, durable)?),
            Arc::new(FileDataStore::open(&cfg.data_dir, always)?),
        ),
        StoreKind::Log => {
            let index_dir = cfg.pmem.clone().unwrap_or_else(|| cfg.meta_dir.clone());
            let opts = engine::EngineOptions {
                sync_interval: (cfg.sync == SyncPolicy::Fsync).then_some(LAZY_SYNC_INTERVAL),
                ..Default::default()
            };
            let meta = LogMetaStore::open(&cfg.meta_dir, &index_dir, always, opts.clone())?;
            let data = LogDataStore::open(
                &cfg.data_dir,
                &index_dir,
                cfg.small_file_max,
                always,
                durable,
                opts,
            )?;
            (Arc::new(meta), Arc::new(data))
        }
    })
}

async fn serve(cfg: ServerConfig) -> Result<(), ServerError> {
    prepare_dir(&cfg.meta_dir, "meta dir")?;
    prepare_dir(&cfg.data_dir, "data dir")?;
    let (meta, data) = open_stores(&cfg)?;
    let uuid = membership::load_or_create_uuid(&cfg.meta_dir)?;

    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.listen.clone(),
        source,
    })?;
    let advertise = match &cfg.advertise {
        Some(a) => a.clone(),
        None if bound.ip().is_unspecified() => {
            let a = format!("127.0.0.1:{}", bound.port());
            tracing::warn!(
                "bound to {bound}; advertising {a} (pass an advertise address for other hosts)"
            );
            a
        }
        None => bound.to_string(),
    };

    let members = Arc::new(membership::Membership::new(
        &cfg.manager,
        uuid,
        advertise.clone(),
    ));
    {
        let m = members.clone();
        let retry = cfg
            .heartbeat
            .clamp(Duration::from_millis(100), Duration::from_secs(2));
        tokio::task::spawn_blocking(move || m.register(retry))
            .await
            .map_err(|e| ServerError::Config(format!("registration task failed: {e}")))?;
    }
    members
        .start_heartbeat(cfg.heartbeat.max(Duration::from_millis(10)))
        .map_err(|e| ServerError::io("start the heartbeat thread", e))?;

    let node = Arc::new(ops::Node::new(
        meta,
        data,
        members.clone(),
        cfg.sync,
        cfg.meta_dir.clone(),
        cfg.data_dir.clone(),
    )?);
    node.ensure_root_if_owner().await;
    tokio::spawn(recovery::run(node.clone()));

    tracing::info!(
        "serving on {advertise} as {} (epoch {}, sync {}, store {:?})",
        members.id(),
        members.view().map.epoch,
        cfg.sync,
        cfg.store
    );
    let service = Arc::new(ops::Service(node));
    // Shared-memory rings for clients on this host (transport/src/shm), next to TCP.
    let _rings = sealfs_transport::shm::serve_rings(&advertise, service.clone());
    // The TCP port also answers RDMA connects when this build and host have RDMA.
    let door = sealfs_transport::rdma::FrontDoor::new(service, sealfs_transport::rdma::acceptor());
    sealfs_transport::tcp::serve(listener, door).await;
    Ok(())
}
