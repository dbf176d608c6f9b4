//! SealFS wire protocol: the only crate that knows bytes on the wire.
//!
//! * [`frame`] owns the frame layout (length prefix, version byte, kind,
//!   request id) and its bounds checks.
//! * [`msg`] owns the typed requests and replies, encoded with `postcard`.
//! * [`errno`] is the error that travels: a Linux errno value.
//! * [`path`] owns the path rules every component shares (normalisation,
//!   limits, parent/name split).
//! * [`placement`] owns the cluster map and the consistent-hash ring that maps
//!   a path or a chunk to its owner server.
//!
//! The layout is written down once in `docs/protocol.md`.

pub mod errno;
pub mod frame;
pub mod msg;
pub mod path;
pub mod placement;

pub use errno::Errno;
pub use frame::{
    FrameError, FrameHeader, FrameKind, FRAME_HEADER_LEN, MAX_FRAME_LEN, PROTO_VERSION,
};
pub use msg::*;
pub use placement::{ClusterMap, Ring, ServerId, ServerInfo, ServerState};
