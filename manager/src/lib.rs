//! The SealFS manager: membership and the cluster map.
//!
//! Servers `Register` (by their persistent uuid, getting a stable numeric id)
//! and `Heartbeat`; clients and servers `GetMap`. A member whose heartbeats
//! stop for longer than the configured timeout is marked down; every change
//! of the map (a join, an address change, up ↔ down) bumps the epoch.
//!
//! The member list, the epoch and the cluster's fixed parameters (chunk size,
//! virtual nodes) survive a manager restart: they are kept in
//! `DIR/cluster.map`, rewritten atomically (temp file, fsync, rename, fsync
//! of the directory) on every change. After a restart every member starts as
//! down until its next heartbeat.

mod state;

pub use state::{ManagerError, Membership};

use sealfs_proto::{Envelope, Errno, Reply, Request};
use sealfs_transport::tcp::Handler;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a manager is started.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Address to listen on (`127.0.0.1:7700` by default in the CLI).
    pub listen: String,
    /// Directory for the persistent member list.
    pub dir: PathBuf,
    /// Chunk size for a new cluster (ignored, with a warning, when the
    /// cluster already has one).
    pub chunk_size: u32,
    /// Virtual nodes per server for a new cluster.
    pub vnodes: u32,
    /// A server silent for this long is marked down.
    pub heartbeat_timeout: Duration,
}

struct Manager {
    members: Membership,
}

impl Handler for Manager {
    async fn handle(self: Arc<Self>, env: Envelope) -> Reply {
        {
            let m = &self.members;
            let res = match env.req {
                Request::GetMap => Ok(Reply::Map(m.map())),
                Request::Register { uuid, addr } => m
                    .register(&uuid, &addr)
                    .map(|(id, map)| Reply::Registered { id, map }),
                Request::Heartbeat { id } => m.heartbeat(id).map(Reply::Map),
                other => {
                    tracing::debug!("manager got a {} request", other.name());
                    Err(ManagerError::Errno(Errno::EINVAL))
                }
            };
            match res {
                Ok(r) => r,
                Err(ManagerError::Errno(e)) => Reply::Err(e),
                Err(e) => {
                    tracing::error!("{e}");
                    Reply::Err(Errno::EIO)
                }
            }
        }
    }
}

/// Runs a manager until the process ends (blocking; owns its tokio runtime).
pub fn run(cfg: ManagerConfig) -> Result<(), ManagerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ManagerError::Runtime)?;
    rt.block_on(run_async(cfg))
}

/// Runs a manager on the current tokio runtime.
pub async fn run_async(cfg: ManagerConfig) -> Result<(), ManagerError> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| ManagerError::Bind(cfg.listen.clone(), e))?;
    serve(listener, cfg).await
}

/// Runs a manager on an already bound listener (`cfg.listen` is only used
/// in messages).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: ManagerConfig,
) -> Result<(), ManagerError> {
    let members = Membership::open(&cfg.dir, cfg.chunk_size, cfg.vnodes, cfg.heartbeat_timeout)?;
    let addr = listener
        .local_addr()
        .map_err(|e| ManagerError::Bind(cfg.listen.clone(), e))?;
    let map = members.map();
    tracing::info!(
        "manager listening on {addr}: {} known servers, epoch {}, chunk size {}",
        map.servers.len(),
        map.epoch,
        map.chunk_size
    );
    let mgr = Arc::new(Manager { members });
    let sweeper = mgr.clone();
    let period = (cfg.heartbeat_timeout / 4).max(Duration::from_millis(20));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            if let Err(e) = sweeper.members.sweep() {
                tracing::error!("{e}");
            }
        }
    });
    sealfs_transport::tcp::serve(listener, mgr).await;
    Ok(())
}
