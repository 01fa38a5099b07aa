use std::io;

/// What went wrong on the wire between two processes.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer speaks another protocol version.
    #[error(
        "the peer speaks wire protocol {got}, this build speaks {expected}; run the same multiproc build on both ends"
    )]
    Version {
        /// Version announced by the peer.
        got: u8,
        /// Version of this build.
        expected: u8,
    },
    /// The bytes received are not a valid frame.
    #[error("corrupt frame from the peer: {0}")]
    Corrupt(String),
    /// A value could not be serialized; nothing was sent.
    #[error("could not serialize the value ({0}); nothing was sent")]
    Encode(String),
    /// A payload could not be deserialized as the expected type.
    #[error("could not deserialize a {type_name} from the peer's message: {reason}")]
    Decode {
        /// The Rust type that was expected.
        type_name: &'static str,
        /// The codec's explanation.
        reason: String,
    },
    /// The peer closed its end: no more messages will arrive.
    #[error("the peer closed the connection (end of stream)")]
    Closed,
    /// An operating-system error.
    #[error("i/o error on the connection: {0}")]
    Io(#[from] io::Error),
}

impl WireError {
    pub(crate) fn corrupt(what: impl Into<String>) -> WireError {
        WireError::Corrupt(what.into())
    }
}
