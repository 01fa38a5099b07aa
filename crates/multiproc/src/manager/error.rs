//! Errors of managers and proxies.

use super::protocol::{Kind, RemoteError};
use crate::{ConnectionError, ProcessError, WireError};

/// Why a manager call failed.
///
/// # Examples
///
/// ```
/// use multiproc::manager::{Manager, ManagerError, RemoteError};
/// use std::time::Duration;
///
/// let manager = Manager::start().unwrap();
/// let q = manager.queue::<u32>().unwrap();
/// let err = q.get_timeout(Duration::from_millis(10)).unwrap_err();
/// assert!(matches!(err, ManagerError::Remote(RemoteError::Timeout)));
/// assert!(err.is_timeout());
/// manager.shutdown().unwrap();
/// assert!(q.put(1).unwrap_err().is_connection());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager cannot be reached: it is gone (shut down, killed), it
    /// refused our auth key, or the connection broke mid-call.
    #[error("manager connection failed: {0}")]
    Connection(#[from] ConnectionError),
    /// The manager answered with an error (timeout, empty queue, panic in a
    /// shipped function, …).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A value could not be encoded, or an answer could not be decoded as
    /// the proxy's type.
    #[error("manager value could not be encoded or decoded: {0}")]
    Codec(WireError),
    /// The object published under `name` is not of the type asked for.
    #[error("the manager's object {name:?} is a {found_kind:?} of {found}, not a {expected_kind:?} of {expected}")]
    TypeMismatch {
        /// The name looked up.
        name: String,
        /// The kind asked for.
        expected_kind: Kind,
        /// The type asked for.
        expected: String,
        /// The object's kind.
        found_kind: Kind,
        /// The object's type.
        found: String,
    },
    /// A namespace field read (or updated) as another type than it holds.
    #[error("namespace field {field:?} holds a {stored}, not a {asked}")]
    FieldType {
        /// The field.
        field: String,
        /// The type it holds.
        stored: String,
        /// The type asked for.
        asked: String,
    },
    /// The request is larger than a manager reads in one message (64 MiB);
    /// nothing was sent (store the value in smaller parts).
    #[error(
        "the request is too large for a manager: {size} bytes, at most {limit}; nothing was sent: send the \
         value in smaller parts, or keep bulk data in shared memory (`multiproc::shared`) and only its name \
         in the manager"
    )]
    TooLarge {
        /// The encoded request's size.
        size: usize,
        /// The most a manager reads.
        limit: u64,
    },
    /// The proxy given to [`Manager::publish`](super::Manager::publish) or
    /// [`Manager::remove`](super::Manager::remove) belongs to another
    /// manager than the handle's (or to an earlier one at the same address;
    /// nothing was sent).
    #[error("the proxy belongs to the manager at {proxy}, not to this one at {manager}")]
    ForeignProxy {
        /// The address of the proxy's manager.
        proxy: String,
        /// The address of the handle's manager.
        manager: String,
    },
    /// The manager process could not start, or did not exit cleanly.
    #[error("manager process: {0}")]
    Process(#[from] ProcessError),
    /// The manager process did not come up.
    #[error("the manager did not start: {0}")]
    Start(String),
    /// The manager answered something that is not an answer to the call
    /// (a protocol error).
    #[error("unexpected answer from the manager: {0}")]
    Protocol(String),
    /// A function running in the manager (a [`Shared`](super::Shared)
    /// type's `call`, an `update`, a barrier's action) called a proxy of
    /// that same manager; in a manager process
    /// ([`Manager::start`](super::Manager::start)), any thread of that
    /// process did (a thread such a function started, and may wait for).
    /// Nothing was sent: the manager would wait for itself (it holds the
    /// object the function runs on, which the call may need).
    /// Do that work in the client, or keep what the function needs inside
    /// its own object.
    #[error(
        "a function running in the manager calls its own manager through a proxy: refused, as the manager \
         would wait for itself (do that call in the client, or keep the data in the object itself)"
    )]
    CallsItsOwnManager,
}

impl ManagerError {
    /// True when the manager could not be reached or the connection broke.
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::manager::Manager::connect("tcp:127.0.0.1:1", Some(b"k")).unwrap_err();
    /// assert!(err.is_connection());
    /// ```
    pub fn is_connection(&self) -> bool {
        matches!(self, ManagerError::Connection(_))
    }

    /// True when a timed call ran out of time.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::manager::{ManagerError, RemoteError};
    /// assert!(ManagerError::Remote(RemoteError::Timeout).is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, ManagerError::Remote(RemoteError::Timeout))
    }

    /// True when the peer did not know the auth key (or we did not know its).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::manager::Manager;
    ///
    /// let manager = Manager::builder().address("tcp:127.0.0.1:0").authkey(b"right").start().unwrap();
    /// let err = Manager::connect(manager.address(), Some(b"wrong")).unwrap_err();
    /// assert!(err.is_authentication_failed());
    /// ```
    pub fn is_authentication_failed(&self) -> bool {
        matches!(self, ManagerError::Connection(e) if e.is_authentication_failed())
    }
}

impl From<WireError> for ManagerError {
    fn from(e: WireError) -> ManagerError {
        match e {
            WireError::Closed => ManagerError::Connection(ConnectionError::Closed),
            other => ManagerError::Codec(other),
        }
    }
}
