//! Pipes and connections: typed and raw messages between two processes.
//!
//! A [`Connection`] is one end of a framed stream. [`Pipe::duplex`] makes two
//! ends that both send and receive; [`Pipe::one_way`] makes a receive-only
//! and a send-only end. Message boundaries are kept: three sends are three
//! receives, and an empty message is a message. Connection ends are ordinary
//! arguments: pass one to [`Process::spawn`](crate::Process::spawn) and the
//! child gets the same end.
//!
//! Processes that do not share a parent meet through a [`Listener`] on an
//! [`Address`] (a Unix socket file, a Linux abstract name or TCP) and a
//! [`Client`] that connects to it, optionally proving to each other that
//! they know an auth key. [`wait`] blocks until one of several connections
//! or processes is ready.

mod address;
mod auth;
mod closed_fd;
mod error;
mod listener;
mod pipe;
mod wait;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use address::{Address, AddressError, IntoAddress};
pub use error::ConnectionError;
pub(crate) use listener::Unauthenticated;
pub use listener::{Client, HANDSHAKE_TIMEOUT, Listener};
pub use pipe::Pipe;
pub use wait::{Waitable, wait};

use crate::sys::Deadline;
use crate::wire::{self, Channel, Kind, RecvError, SendError, WireError, fd_serde};

/// One end of a pipe or of a [`Listener`] connection, carrying messages of
/// type `T` (any `serde` type) and raw byte messages.
///
/// A connection may be shared between threads (`&self` methods). Cloning is
/// cheap and refers to the same end. A connection is `Serialize`: send it to
/// a child as a [`Process::spawn`](crate::Process::spawn) argument, or inside
/// a message over another connection, and the receiver gets the same end.
/// [`Connection::poll`] and [`wait`] read a waiting message into this
/// process; an end that holds one (or part of one, after a receive timed out
/// in its middle) cannot be sent until it is received here: the receiver
/// would read on from the socket without it.
///
/// Messages may hold handles ([`SendFd`](crate::SendFd), other connections…)
/// when the connection is a Unix socket (a [`Pipe`], or a [`Listener`] on a
/// Unix address); over TCP, sending one is an error and nothing is sent.
///
/// # Examples
///
/// ```
/// use multiproc::{Connection, Pipe, Process};
/// use std::time::Duration;
///
/// fn double(conn: Connection<u64>) {
///     while let Ok(x) = conn.recv() {
///         conn.send(&(2 * x)).unwrap();
///     }
/// }
///
/// let (ours, theirs) = Pipe::<u64>::duplex().unwrap();
/// let mut child = Process::spawn(double, (theirs,)).unwrap();
/// ours.send(&21).unwrap();
/// assert_eq!(ours.recv_timeout(Duration::from_secs(10)).unwrap(), 42);
/// drop(ours); // end of stream: the child's loop ends
/// child.join_timeout(Duration::from_secs(10)).unwrap();
/// ```
pub struct Connection<T = Vec<u8>> {
    /// The socket; `None` once closed.
    inner: Option<Arc<Channel>>,
    readable: bool,
    writable: bool,
    /// Set by `close` (the socket may outlive it, see `close`).
    closed: bool,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection {
            inner: self.inner.clone(),
            readable: self.readable,
            writable: self.writable,
            closed: self.closed,
            _type: PhantomData,
        }
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
        Connection::from_shared_channel(Arc::new(channel), readable, writable)
    }

    /// A connection on a channel that other handles share.
    pub(crate) fn from_shared_channel(channel: Arc<Channel>, readable: bool, writable: bool) -> Connection<T> {
        Connection { inner: Some(channel), readable, writable, closed: false, _type: PhantomData }
    }

    /// Refuses received frames announcing more than `limit` payload bytes
    /// (`None`: the wire's own limits); a larger one ends the stream with an
    /// error instead of being buffered.
    pub(crate) fn set_recv_limit(&self, limit: Option<u64>) {
        if let Some(ch) = &self.inner {
            ch.set_recv_limit(limit);
        }
    }

    /// Shuts the socket down in both directions: the peer sees end of
    /// stream, and a receive blocked on this end (in any thread) returns.
    pub(crate) fn shutdown(&self) {
        if let Some(ch) = &self.inner {
            ch.shutdown();
        }
    }

    fn channel(&self) -> Result<&Channel, ConnectionError> {
        self.inner.as_deref().filter(|_| !self.closed).ok_or(ConnectionError::HandleClosed)
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
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = multiproc::Pipe::<u8>::one_way().unwrap();
    /// assert!(rx.readable() && !tx.readable());
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// True if this end can send.
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = multiproc::Pipe::<u8>::one_way().unwrap();
    /// assert!(tx.writable() && !rx.writable());
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// True after [`Connection::close`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut a, _b) = multiproc::Pipe::<u8>::duplex().unwrap();
    /// assert!(!a.closed());
    /// a.close();
    /// assert!(a.closed());
    /// ```
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Sends one raw byte message (any length, including zero). Payloads over
    /// 64 KiB travel through shared memory on Unix connections. As with an OS
    /// pipe, a send blocks while the connection is full: a peer that stops
    /// reading stops the sender once its shared memory for the connection
    /// (8 MiB for 1 MiB messages, at most 64 MiB) and the socket buffer are
    /// full. A message of about 16 MiB or more travels in memory of its own,
    /// held until the peer reads it: a send waits while the peer has 8 such
    /// messages or 256 MiB of them unread (one larger message goes when
    /// nothing else is unread). [`Connection::send_bytes_timeout`] gives up
    /// instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::<()>::duplex().unwrap();
    /// a.send_bytes(b"raw").unwrap();
    /// a.send_bytes(b"").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"raw");
    /// assert_eq!(b.recv_bytes().unwrap(), b"");
    /// ```
    ///
    /// # Errors
    ///
    /// The peer is gone ([`ConnectionError::Closed`]), this end is closed or
    /// receive-only, or the OS failed.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), ConnectionError> {
        Ok(self.writer()?.send(Kind::Data, bytes, &[])?)
    }

    /// As [`Connection::send_bytes`], but waits at most `timeout` for room
    /// before the message starts to go out: for the peer to read large
    /// messages (the bound described at `send_bytes`), for room in the
    /// connection's shared memory (messages over 64 KiB; a send without a
    /// timeout would go through the socket instead) or for the socket to
    /// take bytes; and, when another thread of this process is sending on
    /// the same connection (a send waiting for the peer, say), for that
    /// send to finish. `Duration::ZERO` sends only what can go at once. A
    /// timed-out send sent nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::<()>::duplex().unwrap();
    /// a.send_bytes_timeout(b"quick", Duration::from_secs(1)).unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"quick");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Timeout`] when there was no room in time (nothing
    /// was sent: the peer is not reading), or as [`Connection::send_bytes`].
    pub fn send_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<(), ConnectionError> {
        send_result(self.writer()?.send_until(Kind::Data, bytes, &[], Deadline::after(timeout)))
    }

    /// Receives one raw byte message, waiting as long as it takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::<()>::duplex().unwrap();
    /// a.send_bytes(&[1, 2, 3]).unwrap();
    /// drop(a);
    /// assert_eq!(b.recv_bytes().unwrap(), [1, 2, 3]);
    /// assert!(b.recv_bytes().unwrap_err().is_closed());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Closed`] once the peer is gone and nothing is left;
    /// [`ConnectionError::HandleClosed`] or [`ConnectionError::NotReadable`]
    /// on a closed or send-only end.
    pub fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
        self.recv_bytes_until(Deadline::NEVER)
    }

    /// Receives one raw byte message, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::<()>::duplex().unwrap();
    /// assert!(b.recv_bytes_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// a.send_bytes(b"late").unwrap();
    /// assert_eq!(b.recv_bytes_timeout(Duration::from_secs(1)).unwrap(), b"late");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Timeout`] after ≈`timeout`, or as [`Connection::recv_bytes`].
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, ConnectionError> {
        self.recv_bytes_until(Deadline::after(timeout))
    }

    /// Receives one raw byte message into `buf` at `offset`, waiting as long
    /// as it takes; returns the message's length.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ConnectionError;
    ///
    /// let (a, b) = multiproc::Pipe::<()>::duplex().unwrap();
    /// let mut buf = [0u8; 6];
    /// a.send_bytes(b"abc").unwrap();
    /// assert_eq!(b.recv_bytes_into(&mut buf, 2).unwrap(), 3);
    /// assert_eq!(&buf, b"\0\0abc\0");
    /// a.send_bytes(b"too long").unwrap();
    /// match b.recv_bytes_into(&mut buf, 0) {
    ///     Err(ConnectionError::BufferTooShort(message)) => assert_eq!(message, b"too long"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::BufferTooShort`], carrying the whole message, when it
    /// does not fit (the message is consumed); [`ConnectionError::OffsetOutOfBounds`]
    /// when `offset > buf.len()` (nothing is received); or as
    /// [`Connection::recv_bytes`].
    pub fn recv_bytes_into(&self, buf: &mut [u8], offset: usize) -> Result<usize, ConnectionError> {
        self.recv_bytes_into_until(buf, offset, Deadline::NEVER)
    }

    /// As [`Connection::recv_bytes_into`], waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::<()>::duplex().unwrap();
    /// let mut buf = [0u8; 4];
    /// assert!(b.recv_bytes_into_timeout(&mut buf, 0, Duration::from_millis(10)).unwrap_err().is_timeout());
    /// a.send_bytes(b"hey").unwrap();
    /// assert_eq!(b.recv_bytes_into_timeout(&mut buf, 1, Duration::from_secs(1)).unwrap(), 3);
    /// assert_eq!(&buf, b"\0hey");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Timeout`] after ≈`timeout`, or as
    /// [`Connection::recv_bytes_into`].
    pub fn recv_bytes_into_timeout(
        &self,
        buf: &mut [u8],
        offset: usize,
        timeout: Duration,
    ) -> Result<usize, ConnectionError> {
        self.recv_bytes_into_until(buf, offset, Deadline::after(timeout))
    }

    fn recv_bytes_into_until(
        &self,
        buf: &mut [u8],
        offset: usize,
        deadline: Deadline,
    ) -> Result<usize, ConnectionError> {
        if offset > buf.len() {
            return Err(ConnectionError::OffsetOutOfBounds { offset, len: buf.len() });
        }
        let message = self.recv_bytes_until(deadline)?;
        if message.len() > buf.len() - offset {
            return Err(ConnectionError::BufferTooShort(message));
        }
        buf[offset..offset + message.len()].copy_from_slice(&message);
        Ok(message.len())
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

    /// As [`Connection::send_bytes`], for a message held in parts: the
    /// peer receives their concatenation as one message, and each part is
    /// copied once on its way (no joined copy is made first).
    pub(crate) fn send_bytes_parts(&self, parts: &[&[u8]]) -> Result<(), ConnectionError> {
        send_result(self.writer()?.send_parts_until(Kind::Data, parts, &[], Deadline::NEVER))
    }

    /// Sends one raw byte message with descriptors attached (a Unix
    /// connection only; see [`Connection::recv_bytes_with_fds_timeout`]).
    pub(crate) fn send_bytes_with_fds(
        &self,
        bytes: &[u8],
        fds: &[std::os::fd::OwnedFd],
    ) -> Result<(), ConnectionError> {
        Ok(self.writer()?.send(Kind::Data, bytes, fds)?)
    }

    /// Receives one raw byte message and the descriptors that came with it,
    /// waiting at most `timeout` for all of it ([`ConnectionError::Timeout`]
    /// after that, also for a peer that stalls halfway through a message).
    pub(crate) fn recv_bytes_with_fds_timeout(
        &self,
        timeout: Duration,
    ) -> Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>), ConnectionError> {
        let frame = self.recv_frame(Deadline::after(timeout))?;
        Ok((frame.payload, frame.fds))
    }

    /// True when a message is waiting (or the peer has closed, so `recv` would
    /// return at once). Waits up to `timeout`; `Duration::ZERO` only checks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::<u8>::duplex().unwrap();
    /// assert!(!b.poll(Duration::from_millis(10)).unwrap());
    /// a.send(&1).unwrap();
    /// assert!(b.poll(Duration::ZERO).unwrap());
    /// b.recv().unwrap();
    /// drop(a);
    /// assert!(b.poll(Duration::ZERO).unwrap()); // end of stream is ready too
    /// ```
    ///
    /// # Errors
    ///
    /// This end is closed or send-only, or the OS failed.
    pub fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError> {
        Ok(self.reader()?.poll(Deadline::after(timeout))?)
    }

    /// Closes this end (and this clone's reference to it). Later calls on it
    /// are errors; the peer sees end of stream once every copy is closed
    /// (dropping a copy closes it too).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::ConnectionError;
    ///
    /// let (mut a, b) = multiproc::Pipe::<u8>::duplex().unwrap();
    /// a.close();
    /// assert!(matches!(a.send(&1), Err(ConnectionError::HandleClosed)));
    /// assert!(b.recv().unwrap_err().is_closed());
    /// ```
    pub fn close(&mut self) {
        self.closed = true;
        // The socket goes now, unless `AsFd` has nothing to lend instead
        // (no descriptor left for the placeholder): then it stays open,
        // unused, until the connection is dropped.
        if closed_fd::placeholder().is_some() {
            self.inner = None;
        }
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends one message.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::<Vec<String>>::duplex().unwrap();
    /// a.send(&vec!["x".to_string(), "y".to_string()]).unwrap();
    /// assert_eq!(b.recv().unwrap(), ["x", "y"]);
    /// ```
    ///
    /// # Errors
    ///
    /// The value cannot be serialized or holds more handles than one message
    /// carries (767, see [`SendFd`](crate::SendFd); nothing is sent), the peer is gone, or
    /// this end is closed or receive-only.
    pub fn send(&self, value: &T) -> Result<(), ConnectionError> {
        let writer = self.writer()?;
        Ok(wire::encode_with(value, |bytes, fds| writer.send(Kind::Data, bytes, &fds))?)
    }

    /// Sends one message, waiting at most `timeout` for room before it
    /// starts to go out (see [`Connection::send_bytes_timeout`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::<u32>::duplex().unwrap();
    /// a.send_timeout(&7, Duration::from_secs(1)).unwrap();
    /// assert_eq!(b.recv().unwrap(), 7);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Timeout`] when there was no room in time (nothing
    /// was sent), or as [`Connection::send`].
    pub fn send_timeout(&self, value: &T, timeout: Duration) -> Result<(), ConnectionError> {
        let writer = self.writer()?;
        let deadline = Deadline::after(timeout);
        let mut timed_out = false;
        let sent = wire::encode_with(value, |bytes, fds| match writer.send_until(Kind::Data, bytes, &fds, deadline) {
            Ok(()) => Ok(()),
            Err(SendError::Timeout) => {
                timed_out = true;
                Ok(())
            }
            Err(SendError::Wire(e)) => Err(e),
        });
        if timed_out {
            return Err(ConnectionError::Timeout);
        }
        Ok(sent?)
    }

    /// Receives one message, waiting as long as it takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::<Option<u8>>::duplex().unwrap();
    /// a.send(&None).unwrap();
    /// a.send(&Some(3)).unwrap();
    /// assert_eq!(b.recv().unwrap(), None);
    /// assert_eq!(b.recv().unwrap(), Some(3));
    /// ```
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
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (a, b) = multiproc::Pipe::<u8>::duplex().unwrap();
    /// assert!(b.recv_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// a.send(&5).unwrap();
    /// assert_eq!(b.recv_timeout(Duration::from_secs(1)).unwrap(), 5);
    /// ```
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

/// A send's outcome as the connection reports it.
fn send_result(result: Result<(), SendError>) -> Result<(), ConnectionError> {
    match result {
        Ok(()) => Ok(()),
        Err(SendError::Timeout) => Err(ConnectionError::Timeout),
        Err(SendError::Wire(e)) => Err(e.into()),
    }
}

impl<T> AsFd for Connection<T> {
    /// The underlying socket; after [`Connection::close`], a placeholder
    /// that always reads as end of stream (so waiting on it returns at once,
    /// and the call that follows reports
    /// [`ConnectionError::HandleClosed`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Some(channel) => channel.as_fd(),
            None => closed_fd::placeholder().unwrap_or_else(closed_fd::last_resort),
        }
    }
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ch = self.channel().map_err(|_| wire::ser_error("cannot send a closed connection"))?;
        // Those bytes live in this process only: the receiving process
        // would read on from the socket without them, and lose the message.
        if ch.holds_received_bytes() {
            return Err(wire::ser_error(
                "this connection end has a message (or part of one) already received into this process's buffer \
                 (by poll, wait, or a receive that timed out); receive it here before handing the end on",
            ));
        }
        let index = fd_serde::push_fd(ch.as_fd()).map_err(wire::ser_error)?;
        (index, self.readable, self.writable, ch.can_pass_fds()).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (index, readable, writable, can_pass_fds) = <(u32, bool, bool, bool)>::deserialize(d)?;
        let fd = fd_serde::take_fd(index).map_err(wire::de_error)?;
        let channel = if can_pass_fds { Channel::unix(fd) } else { Channel::stream(fd) };
        Ok(Connection::from_channel(channel, readable, writable))
    }
}
