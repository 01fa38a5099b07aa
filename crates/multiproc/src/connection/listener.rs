//! Connections between processes that do not share a parent: a [`Listener`]
//! on an [`Address`] and [`Client`]s that connect to it, with an optional
//! HMAC-SHA256 auth key.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::address::{Address, IntoAddress};
use super::{Connection, ConnectionError, auth};
use crate::sys::Deadline;
use crate::sys::imp::listen::{self, FileId};
use crate::wire::Channel;

/// How long the opening handshake of a connection may take on the listener's
/// side, and the default limit of [`Client::connect`] (connecting and the
/// handshake together). Change the listener's with
/// [`Listener::set_handshake_timeout`]; the client's with
/// [`Client::connect_timeout`].
///
/// # Examples
///
/// ```
/// assert_eq!(multiproc::connection::HANDSHAKE_TIMEOUT.as_secs(), 10);
/// ```
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Listens for [`Client`] connections on a Unix socket file, a Linux abstract
/// Unix name or a TCP address (Python's `multiprocessing.connection.Listener`).
///
/// Each accepted connection starts with a handshake. With an auth key, each
/// side proves to the other that it knows the key (an HMAC-SHA256 answer to a
/// random 32-byte challenge, the listener's challenge first); the key itself
/// never travels. Keys are compared exactly: an empty key is a key, and both
/// sides must then use the empty key. With `None`, no challenge is made, and
/// both sides must use `None`. Any disagreement — different keys, or a key on
/// one side only — is [`ConnectionError::AuthenticationFailed`] on **both**
/// sides, at once. A peer that stalls is dropped after the handshake timeout
/// ([`HANDSHAKE_TIMEOUT`], 10 s, by default).
///
/// Over Unix addresses, messages may carry handles (pipe ends, [`SendFd`](crate::SendFd)s…)
/// and large payloads travel through shared memory. Over TCP, sending a
/// message that holds a handle is an error (nothing is sent).
///
/// A Unix socket file is created by `bind` and removed when the listener is
/// dropped (unless another socket has replaced it meanwhile).
///
/// # Examples
///
/// ```
/// use multiproc::{Client, Connection, Listener};
/// use std::time::Duration;
///
/// let listener = Listener::bind("tcp:127.0.0.1:0", Some(b"secret")).unwrap();
/// let address = listener.address().clone();
/// let client = std::thread::spawn(move || {
///     let conn: Connection<String> = Client::connect(&address, Some(b"secret")).unwrap();
///     conn.send(&"hello".to_string()).unwrap();
/// });
/// let conn: Connection<String> = listener.accept_timeout(Duration::from_secs(10)).unwrap();
/// assert_eq!(conn.recv_timeout(Duration::from_secs(10)).unwrap(), "hello");
/// client.join().unwrap();
/// ```
pub struct Listener {
    fd: OwnedFd,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    /// The socket file we created, removed on drop if it is still ours.
    socket_file: Option<(PathBuf, FileId)>,
}

impl Listener {
    /// Listens on `address`, with an auth key (`Some`, possibly empty) or
    /// without (`None`). `Debug` output never shows the key. See [`Address`] for the address forms; a TCP port 0
    /// picks a free port, which [`Listener::address`] then shows.
    ///
    /// # Examples
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("multiproc-doc-bind-{}.sock", std::process::id()));
    /// let listener = multiproc::Listener::bind(multiproc::Address::unix(&path), None).unwrap();
    /// assert!(path.exists());
    /// drop(listener);
    /// assert!(!path.exists());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Address`] if `address` is a string that names no
    /// address; [`ConnectionError::Bind`] if the OS refuses (address in use,
    /// a socket file that already exists, no permission…).
    pub fn bind(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Listener, ConnectionError> {
        let address = address.into_address()?;
        let bind_error = |source| ConnectionError::Bind { address: address.to_string(), source };
        let (fd, bound, socket_file) = match &address {
            Address::Unix(path) => {
                let (fd, id) = listen::listen_unix(path).map_err(bind_error)?;
                (fd, address.clone(), Some((path.clone(), id)))
            }
            Address::Abstract(name) => (listen::listen_abstract(name).map_err(bind_error)?, address.clone(), None),
            Address::Tcp(addr) => {
                let (fd, bound) = listen::listen_tcp(*addr).map_err(bind_error)?;
                (fd, Address::Tcp(bound), None)
            }
        };
        Ok(Listener {
            fd,
            address: bound,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: HANDSHAKE_TIMEOUT,
            socket_file,
        })
    }

    /// The address clients connect to (for TCP port 0, with the chosen port).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Address, Listener};
    ///
    /// let listener = Listener::bind("tcp:127.0.0.1:0", None).unwrap();
    /// match listener.address() {
    ///     Address::Tcp(addr) => assert_ne!(addr.port(), 0),
    ///     other => panic!("not TCP: {other}"),
    /// }
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Sets how long a connecting peer may take to complete the handshake
    /// before `accept` gives up on it (default [`HANDSHAKE_TIMEOUT`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let name = format!("@multiproc-doc-handshake-{}", std::process::id());
    /// let mut listener = multiproc::Listener::bind(name, None).unwrap();
    /// listener.set_handshake_timeout(Duration::from_secs(2));
    /// assert_eq!(listener.handshake_timeout(), Duration::from_secs(2));
    /// ```
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// How long a connecting peer may take to complete the handshake.
    ///
    /// # Examples
    ///
    /// ```
    /// let listener = multiproc::Listener::bind("tcp:127.0.0.1:0", None).unwrap();
    /// assert_eq!(listener.handshake_timeout(), multiproc::connection::HANDSHAKE_TIMEOUT);
    /// ```
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Waits for a client as long as it takes, then runs the handshake with it
    /// (which may take up to the handshake timeout).
    ///
    /// # Errors
    ///
    /// As for [`Listener::accept_timeout`], except `Timeout`.
    pub fn accept<T>(&self) -> Result<Connection<T>, ConnectionError> {
        self.accept_until(Deadline::NEVER)
    }

    /// Waits at most `timeout` for a client, then runs the handshake with it
    /// (which has its own limit, [`Listener::handshake_timeout`], so an honest
    /// client arriving just before the timeout is not refused).
    ///
    /// A failed handshake is this call's error; the listener stays usable.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let listener = multiproc::Listener::bind("tcp:127.0.0.1:0", None).unwrap();
    /// let start = Instant::now();
    /// let err = listener.accept_timeout::<()>(Duration::from_millis(100)).unwrap_err();
    /// assert!(err.is_timeout());
    /// assert!(start.elapsed() >= Duration::from_millis(100));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Timeout`] when no client came in time;
    /// [`ConnectionError::AuthenticationFailed`] when the client does not
    /// know the key (or only one side uses a key);
    /// [`ConnectionError::HandshakeFailed`] when it hung up, stalled or does
    /// not speak the protocol; an OS error.
    pub fn accept_timeout<T>(&self, timeout: Duration) -> Result<Connection<T>, ConnectionError> {
        self.accept_until(Deadline::after(timeout))
    }

    fn accept_until<T>(&self, deadline: Deadline) -> Result<Connection<T>, ConnectionError> {
        self.accept_unauthenticated(deadline)?.authenticate()
    }

    /// Accepts a connection without running the handshake, so a server can
    /// run each handshake on its own thread (a peer that stalls then delays
    /// nobody else).
    pub(crate) fn accept_unauthenticated(&self, deadline: Deadline) -> Result<Unauthenticated, ConnectionError> {
        let tcp = self.address.is_tcp();
        let fd = listen::accept(self.fd.as_fd(), deadline, tcp)
            .map_err(|e| ConnectionError::Wire(self.accept_error(e).into()))?
            .ok_or(ConnectionError::Timeout)?;
        let channel = if tcp { Channel::stream(fd) } else { Channel::unix(fd) };
        Ok(Unauthenticated {
            channel: Arc::new(channel),
            authkey: self.authkey.clone(),
            handshake_timeout: self.handshake_timeout,
        })
    }
}

impl Listener {
    /// A failed `accept`, saying where (the OS error then says why, as "Too
    /// many open files"), and that the client is not lost.
    fn accept_error(&self, e: std::io::Error) -> std::io::Error {
        let what = format!(
            "cannot accept a connection on {}: {e}; the client stays queued, and a later accept may take it",
            self.address
        );
        std::io::Error::new(e.kind(), what)
    }
}

/// An accepted connection whose handshake has not run yet.
#[derive(Debug)]
pub(crate) struct Unauthenticated {
    channel: Arc<Channel>,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
}

impl Unauthenticated {
    /// Runs the listener's side of the handshake (within the listener's
    /// handshake timeout, reading only small messages until it succeeds).
    pub(crate) fn authenticate<T>(self) -> Result<Connection<T>, ConnectionError> {
        match auth::serve(&self.channel, self.authkey.as_deref(), Deadline::after(self.handshake_timeout)) {
            Ok(()) => Ok(Connection::from_shared_channel(self.channel, true, true)),
            Err(ConnectionError::Timeout) => Err(ConnectionError::HandshakeFailed(format!(
                "the client did not complete the handshake within {:?}",
                self.handshake_timeout
            ))),
            Err(e) => Err(e),
        }
    }

    /// A handle that can only [`shutdown`](Connection::shutdown) this
    /// connection (from another thread: its handshake then fails, or its
    /// later receives end).
    pub(crate) fn cutter(&self) -> Connection<()> {
        Connection::from_shared_channel(self.channel.clone(), false, false)
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key itself is never printed.
        let auth = match &self.authkey {
            None => "none",
            Some(k) if k.is_empty() => "empty key",
            Some(_) => "key",
        };
        f.debug_struct("Listener")
            .field("address", &self.address.to_string())
            .field("auth", &auth)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl AsFd for Listener {
    /// The listening socket (readable when a client is waiting).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, id)) = &self.socket_file
            && listen::file_id(path) == Some(*id)
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Connects to a [`Listener`] (Python's `multiprocessing.connection.Client`).
///
/// # Examples
///
/// ```
/// use multiproc::{Client, Connection, Listener};
/// use std::time::Duration;
///
/// let name = format!("@multiproc-doc-client-{}", std::process::id());
/// let listener = Listener::bind(&name, Some(b"")).unwrap();
/// let server = std::thread::spawn(move || {
///     let conn: Connection<u32> = listener.accept_timeout(Duration::from_secs(10)).unwrap();
///     conn.send(&(conn.recv_timeout(Duration::from_secs(10)).unwrap() + 1)).unwrap();
/// });
/// let conn: Connection<u32> = Client::connect(&name, Some(b"")).unwrap();
/// conn.send(&41).unwrap();
/// assert_eq!(conn.recv_timeout(Duration::from_secs(10)).unwrap(), 42);
/// server.join().unwrap();
/// ```
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// Connects to `address` and runs the handshake with `authkey` (which
    /// must be the listener's: `Some` of the same bytes, or `None` on both
    /// sides). Gives up after [`HANDSHAKE_TIMEOUT`] (10 s) in all, which
    /// includes waiting for the listener to call `accept`.
    ///
    /// # Errors
    ///
    /// As for [`Client::connect_timeout`].
    pub fn connect<T>(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Connection<T>, ConnectionError> {
        Client::connect_timeout(address, authkey, HANDSHAKE_TIMEOUT)
    }

    /// As [`Client::connect`], giving up after `timeout` in all.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Client, ConnectionError};
    /// use std::time::Duration;
    ///
    /// let missing = std::env::temp_dir().join("multiproc-doc-no-such.sock");
    /// let err = Client::connect_timeout::<()>(multiproc::Address::unix(missing), None, Duration::from_secs(1));
    /// assert!(matches!(err, Err(ConnectionError::Connect { .. })));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Address`] for a string that names no address;
    /// [`ConnectionError::Connect`] when nothing listens there;
    /// [`ConnectionError::Timeout`] when the listener did not accept and
    /// answer in time; [`ConnectionError::AuthenticationFailed`] when the
    /// listener does not accept our key (or only one side uses a key), or
    /// cannot prove that it knows it; [`ConnectionError::HandshakeFailed`]
    /// when the listener hung up or does not speak the protocol.
    pub fn connect_timeout<T>(
        address: impl IntoAddress,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection<T>, ConnectionError> {
        let address = address.into_address()?;
        let deadline = Deadline::after(timeout);
        let connected = match &address {
            Address::Unix(path) => listen::connect_unix(path, deadline).map(Channel::unix),
            Address::Abstract(name) => listen::connect_abstract(name, deadline).map(Channel::unix),
            Address::Tcp(addr) => listen::connect_tcp(*addr, deadline).map(Channel::stream),
        };
        let channel = match connected {
            Ok(channel) => channel,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(ConnectionError::Timeout),
            Err(source) => return Err(ConnectionError::Connect { address: address.to_string(), source }),
        };
        auth::connect(&channel, authkey, deadline)?;
        Ok(Connection::from_channel(channel, true, true))
    }
}
