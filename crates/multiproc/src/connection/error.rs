use crate::wire::WireError;

/// Errors of [`Connection`](super::Connection) operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer closed its end and no message is left (end of stream).
    #[error("the other end of the connection is closed (end of stream)")]
    Closed,
    /// Nothing arrived in time.
    #[error("timed out waiting for a message")]
    Timeout,
    /// This end was closed with `close()`.
    #[error("this connection was closed with close(); it can no longer be used")]
    HandleClosed,
    /// Receiving on a send-only end.
    #[error("this end of a one-way pipe can only send")]
    NotReadable,
    /// Sending on a receive-only end.
    #[error("this end of a one-way pipe can only receive")]
    NotWritable,
    /// The message did not fit the buffer; here it is, whole.
    #[error("the buffer is too short for the {}-byte message (the message is in this error)", .0.len())]
    BufferTooShort(Vec<u8>),
    /// The peer did not prove it knows the auth key, or refused ours.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// Encoding, decoding or transport failed.
    #[error(transparent)]
    Wire(WireError),
}

impl From<WireError> for ConnectionError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Closed => ConnectionError::Closed,
            other => ConnectionError::Wire(other),
        }
    }
}

impl ConnectionError {
    /// True for [`ConnectionError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectionError::Timeout)
    }

    /// True for [`ConnectionError::Closed`] (end of stream).
    pub fn is_closed(&self) -> bool {
        matches!(self, ConnectionError::Closed)
    }
}
