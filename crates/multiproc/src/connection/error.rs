use std::io;

use super::AddressError;
use crate::wire::WireError;

/// Errors of [`Connection`](super::Connection), [`Listener`](super::Listener),
/// [`Client`](super::Client) and [`wait`](super::wait) operations.
///
/// # Examples
///
/// ```
/// use multiproc::{ConnectionError, Pipe};
///
/// let (rx, tx) = Pipe::<u8>::one_way().unwrap();
/// assert!(matches!(rx.send(&1), Err(ConnectionError::NotWritable)));
/// assert!(matches!(tx.recv(), Err(ConnectionError::NotReadable)));
/// drop(tx);
/// assert!(rx.recv().unwrap_err().is_closed());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer closed its end and no message is left (end of stream).
    #[error("the other end of the connection is closed (end of stream)")]
    Closed,
    /// Nothing arrived in time: a message, a client to accept, or the
    /// listener's answer to a connect; or a send with a timeout found no
    /// room in time (the peer is not reading; nothing was sent).
    #[error(
        "timed out: nothing came in time (a message to receive, a client to accept, or the listener's answer to a \
         connect: is it accepting?), or a send found no room in time (is the peer reading? nothing was sent)"
    )]
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
    /// `recv_bytes_into` was given an offset past the end of the buffer
    /// (nothing was received).
    #[error("offset {offset} is past the end of the {len}-byte buffer")]
    OffsetOutOfBounds {
        /// The offset given.
        offset: usize,
        /// The buffer's length.
        len: usize,
    },
    /// The peer did not prove it knows the auth key, refused ours, or only one
    /// side uses a key.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The opening handshake of a listener connection broke off: the peer hung
    /// up, was too slow, or does not speak the protocol.
    #[error("connection handshake failed: {0}")]
    HandshakeFailed(String),
    /// A string that does not name an address.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// Could not listen on an address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address, as written.
        address: String,
        /// The OS error.
        source: io::Error,
    },
    /// Could not connect to an address (nothing listens there, or the OS failed).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The address, as written.
        address: String,
        /// The OS error.
        source: io::Error,
    },
    /// The object given to [`wait`](super::wait) cannot be waited on.
    #[error("cannot wait on this object: {0}")]
    NotWaitable(&'static str),
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
    ///
    /// # Examples
    ///
    /// ```
    /// let (_a, b) = multiproc::Pipe::<u8>::duplex().unwrap();
    /// assert!(b.recv_timeout(std::time::Duration::ZERO).unwrap_err().is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectionError::Timeout)
    }

    /// True for [`ConnectionError::Closed`] (end of stream).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::<u8>::duplex().unwrap();
    /// drop(a);
    /// assert!(b.recv().unwrap_err().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, ConnectionError::Closed)
    }

    /// True for [`ConnectionError::AuthenticationFailed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, Connection, Listener};
    /// use std::time::Duration;
    ///
    /// let listener = Listener::bind("tcp:127.0.0.1:0", Some(b"right")).unwrap();
    /// let address = listener.address().clone();
    /// let client = std::thread::spawn(move || Client::connect::<()>(&address, Some(b"wrong")).map(drop));
    /// let server = listener.accept_timeout::<()>(Duration::from_secs(10)).unwrap_err();
    /// assert!(server.is_authentication_failed());
    /// assert!(client.join().unwrap().unwrap_err().is_authentication_failed());
    /// ```
    pub fn is_authentication_failed(&self) -> bool {
        matches!(self, ConnectionError::AuthenticationFailed(_))
    }
}
