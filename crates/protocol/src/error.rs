//! Errors of decoding and validating protocol messages.

/// A message that cannot be accepted. Decoding bytes from a peer yields one
/// of these, never a panic; the transport treats it as a peer crash.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The payload ended before the message did.
    #[error("message truncated")]
    Truncated,
    /// A frame kind this protocol version does not define (or that does not
    /// travel in this direction).
    #[error("unknown message kind {0}")]
    UnknownKind(u16),
    /// A field is out of range or the bytes are malformed.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The peer speaks another protocol version.
    #[error("protocol version {theirs} is not supported (this build speaks {ours})")]
    VersionMismatch {
        /// Version announced by the peer.
        theirs: u32,
        /// Version of this build.
        ours: u32,
    },
    /// A message does not fit in one frame even when chunked.
    #[error("message of {len} bytes does not fit in frames of {max} bytes")]
    TooLarge {
        /// Bytes needed.
        len: usize,
        /// Largest frame payload.
        max: usize,
    },
    /// The chunks of a long prompt arrived out of order or inconsistent.
    #[error("bad prompt chunk for request {request_id}: {why}")]
    BadChunk {
        /// Request concerned.
        request_id: u64,
        /// What was wrong.
        why: String,
    },
}

impl ProtocolError {
    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        Self::Invalid(why.into())
    }
}
