//! Pipes and connections: typed and raw messages between two processes.
//!
//! A [`Connection`] is one end of a framed stream. [`Pipe::duplex`] makes two
//! ends that both send and receive; [`Pipe::one_way`] makes a receive-only
//! and a send-only end. Message boundaries are kept: three sends are three
//! receives, and an empty message is a message. Connection ends are ordinary
//! arguments: pass one to [`Process::spawn`](crate::Process::spawn) and the
//! child gets the same end.

mod error;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use error::ConnectionError;

use crate::sys::Deadline;
use crate::wire::{self, Channel, Kind, RecvError, WireError, fd_serde};

/// Makes pairs of connected [`Connection`]s.
#[derive(Debug)]
pub struct Pipe<T = Vec<u8>>(PhantomData<fn() -> T>);

impl<T: Serialize + DeserializeOwned> Pipe<T> {
    /// Two ends that can both send and receive (Python's `Pipe()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::<u32>::duplex().unwrap();
    /// a.send(&1).unwrap();
    /// b.send(&2).unwrap();
    /// assert_eq!(b.recv().unwrap(), 1);
    /// assert_eq!(a.recv().unwrap(), 2);
    /// ```
    ///
    /// # Errors
    ///
    /// The OS could not create the socket pair.
    pub fn duplex() -> Result<(Connection<T>, Connection<T>), ConnectionError> {
        let (a, b) = Channel::pair().map_err(WireError::Io)?;
        Ok((Connection::from_channel(a, true, true), Connection::from_channel(b, true, true)))
    }

    /// A receive-only end and a send-only end, in that order (Python's
    /// `Pipe(duplex=False)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = multiproc::Pipe::<String>::one_way().unwrap();
    /// tx.send(&"hi".to_string()).unwrap();
    /// assert_eq!(rx.recv().unwrap(), "hi");
    /// assert!(rx.send(&"no".to_string()).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// The OS could not create the socket pair.
    pub fn one_way() -> Result<(Connection<T>, Connection<T>), ConnectionError> {
        let (a, b) = Channel::pair().map_err(WireError::Io)?;
        Ok((Connection::from_channel(a, true, false), Connection::from_channel(b, false, true)))
    }
}

/// One end of a pipe or of a [`Listener`](crate::Listener) connection,
/// carrying messages of type `T` (any `serde` type) and raw byte messages.
///
/// A connection may be shared between threads (`&self` methods). Cloning is
/// cheap and refers to the same end.
pub struct Connection<T = Vec<u8>> {
    inner: Option<Arc<Channel>>,
    readable: bool,
    writable: bool,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection { inner: self.inner.clone(), readable: self.readable, writable: self.writable, _type: PhantomData }
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.inner.as_ref().map(|c| c.as_fd()))
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

impl<T> Connection<T> {
    pub(crate) fn from_channel(channel: Channel, readable: bool, writable: bool) -> Connection<T> {
        Connection { inner: Some(Arc::new(channel)), readable, writable, _type: PhantomData }
    }

    fn channel(&self) -> Result<&Channel, ConnectionError> {
        self.inner.as_deref().ok_or(ConnectionError::HandleClosed)
    }

    fn reader(&self) -> Result<&Channel, ConnectionError> {
        let ch = self.channel()?;
        if self.readable { Ok(ch) } else { Err(ConnectionError::NotReadable) }
    }

    fn writer(&self) -> Result<&Channel, ConnectionError> {
        let ch = self.channel()?;
        if self.writable { Ok(ch) } else { Err(ConnectionError::NotWritable) }
    }

    /// True if this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// True if this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// True after [`Connection::close`].
    pub fn closed(&self) -> bool {
        self.inner.is_none()
    }

    /// Sends one raw byte message.
    ///
    /// # Errors
    ///
    /// The peer is gone ([`ConnectionError::Closed`]), this end is closed or
    /// receive-only, or the OS failed.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
        Ok(self.writer()?.send(Kind::Data, bytes, &[])?)
    }

    /// Receives one raw byte message, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Closed`] once the peer is gone and nothing is left.
    pub fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
        self.recv_bytes_until(Deadline::NEVER)
    }

    /// Receives one raw byte message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Timeout`] after ≈`timeout`, or as [`Connection::recv_bytes`].
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, ConnectionError> {
        self.recv_bytes_until(Deadline::after(timeout))
    }

    /// Receives one raw byte message into `buf` at `offset`; returns its length.
    ///
    /// # Errors
    ///
    /// [`ConnectionError::BufferTooShort`], carrying the whole message, when it
    /// does not fit; or as [`Connection::recv_bytes`].
    pub fn recv_bytes_into(&self, buf: &mut [u8], offset: usize) -> Result<usize, ConnectionError> {
        let message = self.recv_bytes()?;
        let end = offset.checked_add(message.len()).filter(|end| *end <= buf.len());
        match end {
            Some(end) => {
                buf[offset..end].copy_from_slice(&message);
                Ok(message.len())
            }
            None => Err(ConnectionError::BufferTooShort(message)),
        }
    }

    fn recv_bytes_until(&self, deadline: Deadline) -> Result<Vec<u8>, ConnectionError> {
        Ok(self.recv_frame(deadline)?.payload)
    }

    fn recv_frame(&self, deadline: Deadline) -> Result<wire::Frame, ConnectionError> {
        match self.reader()?.recv(deadline, None) {
            Ok(frame) if frame.kind == Kind::Data => Ok(frame),
            Ok(frame) => Err(WireError::corrupt(format!("unexpected {:?} frame on a connection", frame.kind)).into()),
            Err(RecvError::Timeout) => Err(ConnectionError::Timeout),
            Err(RecvError::WatchReady) => Err(ConnectionError::Timeout),
            Err(RecvError::Wire(e)) => Err(e.into()),
        }
    }

    /// True when a message is waiting (or the peer has closed, so `recv` would
    /// return at once). Waits up to `timeout`; `Duration::ZERO` only checks.
    ///
    /// # Errors
    ///
    /// This end is closed or send-only, or the OS failed.
    pub fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError> {
        Ok(self.reader()?.poll(Deadline::after(timeout))?)
    }

    /// Closes this end (and this clone's reference to it). Later calls on it
    /// are errors; the peer sees end of stream once every copy is closed.
    pub fn close(&mut self) {
        self.inner = None;
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends one message.
    ///
    /// # Errors
    ///
    /// The value cannot be serialized (nothing is sent), the peer is gone, or
    /// this end is closed or receive-only.
    pub fn send(&self, value: &T) -> Result<(), ConnectionError> {
        let writer = self.writer()?;
        let encoded = wire::encode(value)?;
        Ok(writer.send(Kind::Data, &encoded.bytes, &encoded.fds)?)
    }

    /// Receives one message, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Closed`] once the peer is gone and nothing is left;
    /// a decode error if the bytes are not a `T`.
    pub fn recv(&self) -> Result<T, ConnectionError> {
        self.recv_until(Deadline::NEVER)
    }

    /// Receives one message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Timeout`] after ≈`timeout`, or as [`Connection::recv`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, ConnectionError> {
        self.recv_until(Deadline::after(timeout))
    }

    fn recv_until(&self, deadline: Deadline) -> Result<T, ConnectionError> {
        let frame = self.recv_frame(deadline)?;
        Ok(wire::decode(&frame.payload, frame.fds)?)
    }
}

impl<T> AsFd for Connection<T> {
    /// The underlying socket.
    ///
    /// # Panics
    ///
    /// If the connection was closed.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_ref().expect("connection is closed").as_fd()
    }
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ch = self.inner.as_ref().ok_or_else(|| serde::ser::Error::custom("cannot send a closed connection"))?;
        let index = fd_serde::push_fd(ch.as_fd()).map_err(serde::ser::Error::custom)?;
        (index, self.readable, self.writable, ch.can_pass_fds()).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (index, readable, writable, can_pass_fds) = <(u32, bool, bool, bool)>::deserialize(d)?;
        let fd = fd_serde::take_fd(index).map_err(serde::de::Error::custom)?;
        let channel = if can_pass_fds { Channel::unix(fd) } else { Channel::stream(fd) };
        Ok(Connection::from_channel(channel, readable, writable))
    }
}
