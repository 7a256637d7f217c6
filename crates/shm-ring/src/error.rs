//! Errors of the shared-memory transport.
//!
//! One enum for the whole crate boundary, as the house style asks. A peer
//! that breaks the ring's rules (a corrupt index, an oversized or unknown
//! frame, a bad header) is reported as [`RingError::Corrupt`]; the caller
//! treats it exactly like a crash of that peer, never as a panic.

use std::io;

/// Everything that can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The peer broke the ring protocol: the region must be abandoned and the
    /// peer treated as crashed.
    #[error("peer violated the ring protocol: {0}")]
    Corrupt(String),
    /// The peer closed its end of the doorbell: it exited or crashed.
    #[error("peer is gone (doorbell closed)")]
    PeerGone,
    /// The region header does not describe a region this build can use.
    #[error("incompatible region: {0}")]
    Incompatible(String),
    /// A frame larger than the region's maximum frame size was offered.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Payload length offered.
        len: usize,
        /// Largest payload the region accepts.
        max: usize,
    },
    /// A frame kind the region does not accept was offered.
    #[error("frame kind {0} is reserved or outside the accepted range")]
    BadKind(u16),
    /// The configuration asked for an impossible geometry.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No frame (or no room) arrived before the deadline.
    #[error("timed out")]
    Timeout,
    /// The connection's tasks have stopped (the worker died or the
    /// connection was dropped).
    #[error("connection closed: {0}")]
    Closed(String),
    /// An operating-system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// The error it returned.
        #[source]
        source: io::Error,
    },
}

impl RingError {
    pub(crate) fn os(op: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Os {
            op,
            source: source.into(),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt(what.into())
    }

    /// Whether this error means the peer must be considered dead.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Corrupt(_) | Self::PeerGone | Self::Closed(_))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = RingError> = std::result::Result<T, E>;
