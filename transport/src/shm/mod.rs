//! Shared-memory rings: the transport to a server on the same host.
//!
//! Set-up: the client connects to the server's ring socket, an abstract
//! Unix socket named after the server's advertised address
//! ([`ring_socket_name`]); the server answers with a 16-byte hello and, by
//! `SCM_RIGHTS`, a memfd holding one ring pair (submission ring, completion
//! ring, and a data area per direction; layout in `layout.rs` and
//! `docs/protocol.md`). Both sides map it; frames are the TCP frames of
//! `sealfs_proto`, written once into the shared data area.
//!
//! Promises:
//! * one ring pair per client connection; a client pool ([`ShmPool`]) hands a
//!   ring to one thread at a time, and rings never cross a `fork`;
//! * every index, offset and length read from shared memory is checked; a
//!   peer that writes garbage is disconnected with an error, never followed;
//! * waits are bounded: the waiting side spins for tens of µs, then sleeps
//!   (client: futex in the region; server: `poll(2)` with a doorbell byte),
//!   wakes periodically to check that its peer is alive, and gives up with
//!   `EIO` (client) after the io timeout;
//! * one polling thread per server process serves every ring
//!   ([`RingServer`]).

mod client;
mod layout;
mod select;
mod server;
mod sys;
#[doc(hidden)]
pub mod testing;

pub use client::{ShmPool, RINGS_OPENED};
pub use layout::{DATA_CAP, ENTRIES, REGION_LEN};
pub use select::{choices, connect, Choice, Mode};
pub use server::{on_ring_poller, RingServer, RingStats};

use std::time::Duration;

/// The abstract Unix socket name of the ring server for a server advertised
/// as `addr` (abstract names live in the network namespace, so only a
/// client that shares the server's host and namespace finds it).
pub fn ring_socket_name(addr: &str) -> String {
    let name = format!("sealfs-ring:{addr}");
    if name.len() <= 100 {
        name
    } else {
        format!(
            "sealfs-ring:{:016x}",
            xxhash_rust::xxh3::xxh3_64(addr.as_bytes())
        )
    }
}

/// Starts the ring server of a server advertised as `addr`, next to its TCP
/// listener, unless `SEALFS_TRANSPORT=tcp`. Must be called inside a tokio
/// runtime (handlers run in its context). A failure to bind (another
/// process holds the name) is logged and the server stays TCP-only.
pub fn serve_rings<H: crate::tcp::Handler>(
    addr: &str,
    handler: std::sync::Arc<H>,
) -> Option<RingServer> {
    if Mode::from_env() == Mode::Tcp {
        tracing::info!("SEALFS_TRANSPORT=tcp: no ring socket");
        return None;
    }
    match RingServer::start(addr, handler, tokio::runtime::Handle::current()) {
        Ok(s) => {
            tracing::info!(
                "ring socket @{} (shared-memory clients on this host)",
                s.name()
            );
            Some(s)
        }
        Err(e) => {
            tracing::warn!("cannot bind the ring socket for {addr}: {e}; serving TCP only");
            None
        }
    }
}

/// Wait tuning of both sides.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// How long a client spins for a reply before sleeping.
    pub spin: Duration,
    /// How long the server's poller spins after its last message.
    pub server_spin: Duration,
    /// Longest single sleep of a waiting client (between liveness checks).
    pub sleep_slice: Duration,
}

impl RingConfig {
    /// Defaults: a client spins 50 µs for a reply, a server's poller 250 µs
    /// after its last message, sleep slices of 10 ms. `SEALFS_RING_SPIN_US`
    /// sets both spins, `SEALFS_RING_SERVER_SPIN_US` the poller's alone.
    ///
    /// The poller spins longer because a request that finds it asleep pays
    /// a doorbell and a thread wake-up (~50 µs here), and requests that
    /// come through the kernel (a FUSE mount: one every ~100–150 µs per
    /// process) would otherwise find it asleep every time: a 250 µs spin
    /// took FUSE stat from 1.31× to 1.87× bindfs and delete from 0.67× to
    /// 0.87× in one `bench/fuse.sh` pair. Spinning yields the core on every
    /// empty poll, so it only takes CPU nobody else wants.
    pub fn from_env() -> RingConfig {
        let us = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_micros)
        };
        let spin = us("SEALFS_RING_SPIN_US");
        RingConfig {
            spin: spin.unwrap_or(Duration::from_micros(50)),
            server_spin: us("SEALFS_RING_SERVER_SPIN_US")
                .or(spin)
                .unwrap_or(Duration::from_micros(250)),
            sleep_slice: Duration::from_millis(10),
        }
    }
}
