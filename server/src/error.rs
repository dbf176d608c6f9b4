//! The error of this layer: why a server could not start.

use crate::store::StoreError;
use thiserror::Error;

/// Why [`crate::run`] failed.
#[derive(Debug, Error)]
pub enum ServerError {
    /// A directory or file of the server could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stores could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting or a stored identity is unusable.
    #[error("{0}")]
    Config(String),
}

impl ServerError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ServerError::Io {
            what: what.into(),
            source,
        }
    }
}
