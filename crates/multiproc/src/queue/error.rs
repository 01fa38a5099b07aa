//! Queue errors, in crossbeam's style: the operations that take a value give
//! it back in every error.

use std::fmt;
use std::io;

use crate::wire::WireError;

/// Why [`Queue::put`](super::Queue::put) did not queue the value; the value
/// comes back in every case.
///
/// # Examples
///
/// ```
/// use multiproc::{PutError, Queue};
///
/// let q = Queue::<String>::new().unwrap();
/// q.close();
/// let err = q.put("late".to_string()).unwrap_err();
/// assert!(err.is_closed());
/// assert_eq!(err.into_inner(), "late");
/// ```
pub enum PutError<T> {
    /// This handle was closed, or the queue was shut down (by any handle,
    /// in any process).
    Closed(T),
    /// The value cannot be serialized, or carries handles (file descriptors),
    /// which cannot travel through a queue. Nothing was queued.
    Unserializable(T, WireError),
    /// The item could not be stored: the system is out of memory, or the
    /// queue already holds as many items as it can.
    Io(T, io::Error),
}

/// Why [`Queue::put_nowait`](super::Queue::put_nowait) or
/// [`Queue::put_timeout`](super::Queue::put_timeout) did not queue the value;
/// the value comes back in every case.
///
/// # Examples
///
/// ```
/// use multiproc::{Queue, TryPutError};
///
/// let q = Queue::<u32>::bounded(1).unwrap();
/// q.put_nowait(1).unwrap();
/// let err = q.put_nowait(2).unwrap_err();
/// assert!(err.is_full());
/// assert_eq!(err.into_inner(), 2);
/// ```
pub enum TryPutError<T> {
    /// The queue is full (after ≈T for `put_timeout`).
    Full(T),
    /// This handle was closed, or the queue was shut down.
    Closed(T),
    /// The value cannot be serialized (see [`PutError::Unserializable`]).
    Unserializable(T, WireError),
    /// The item could not be stored (see [`PutError::Io`]).
    Io(T, io::Error),
}

impl<T> PutError<T> {
    /// The value that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Closed(v) | PutError::Unserializable(v, _) | PutError::Io(v, _) => v,
        }
    }

    /// True if this handle was closed or the queue shut down.
    pub fn is_closed(&self) -> bool {
        matches!(self, PutError::Closed(_))
    }
}

impl<T> TryPutError<T> {
    /// The value that was not queued.
    pub fn into_inner(self) -> T {
        match self {
            TryPutError::Full(v)
            | TryPutError::Closed(v)
            | TryPutError::Unserializable(v, _)
            | TryPutError::Io(v, _) => v,
        }
    }

    /// True if the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, TryPutError::Full(_))
    }

    /// True if the queue was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, TryPutError::Closed(_))
    }
}

impl<T> From<PutError<T>> for TryPutError<T> {
    fn from(e: PutError<T>) -> TryPutError<T> {
        match e {
            PutError::Closed(v) => TryPutError::Closed(v),
            PutError::Unserializable(v, e) => TryPutError::Unserializable(v, e),
            PutError::Io(v, e) => TryPutError::Io(v, e),
        }
    }
}

// Debug does not require `T: Debug` (the value is elided), as tokio's errors do.
impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Unserializable(_, e) => f.debug_tuple("Unserializable").field(&"..").field(e).finish(),
            PutError::Io(_, e) => f.debug_tuple("Io").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Debug for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("Full(..)"),
            TryPutError::Closed(_) => f.write_str("Closed(..)"),
            TryPutError::Unserializable(_, e) => f.debug_tuple("Unserializable").field(&"..").field(e).finish(),
            TryPutError::Io(_, e) => f.debug_tuple("Io").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Closed(_) => f.write_str("the queue is closed (this handle closed, or the queue shut down)"),
            PutError::Unserializable(_, e) => write!(f, "the item cannot be queued: {e}"),
            PutError::Io(_, e) => write!(f, "the queue could not store the item: {e}"),
        }
    }
}

impl<T> fmt::Display for TryPutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPutError::Full(_) => f.write_str("the queue is full"),
            TryPutError::Closed(_) => f.write_str("the queue is closed (this handle closed, or the queue shut down)"),
            TryPutError::Unserializable(_, e) => write!(f, "the item cannot be queued: {e}"),
            TryPutError::Io(_, e) => write!(f, "the queue could not store the item: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PutError::Unserializable(_, e) => Some(e),
            PutError::Io(_, e) => Some(e),
            PutError::Closed(_) => None,
        }
    }
}

impl<T> std::error::Error for TryPutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TryPutError::Unserializable(_, e) => Some(e),
            TryPutError::Io(_, e) => Some(e),
            TryPutError::Full(_) | TryPutError::Closed(_) => None,
        }
    }
}

/// Why a `get` returned no item.
///
/// # Examples
///
/// ```
/// use multiproc::{GetError, Queue};
/// use std::time::Duration;
///
/// let q = Queue::<u8>::new().unwrap();
/// assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(GetError::Timeout)));
/// q.close();
/// assert!(matches!(q.get(), Err(GetError::Closed)));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Nothing to take right now (`get_nowait`).
    #[error("the queue is empty")]
    Empty,
    /// Nothing arrived within the timeout (`get_timeout`; Python's `Empty`).
    #[error("timed out waiting for an item")]
    Timeout,
    /// This handle was closed; or the queue was shut down and every item
    /// put before has been taken (or discarded, after an immediate shutdown).
    #[error("the queue is closed (this handle closed, or the queue shut down and empty)")]
    Closed,
    /// An item was taken but could not be deserialized as the expected type;
    /// it is lost.
    #[error("an item could not be deserialized: {0}")]
    Decode(WireError),
    /// The queue's memory could not be read.
    #[error("the queue could not read an item: {0}")]
    Io(#[from] io::Error),
}

impl GetError {
    /// True when no item came: [`GetError::Empty`] or [`GetError::Timeout`]
    /// (both are Python's `queue.Empty`).
    pub fn is_empty(&self) -> bool {
        matches!(self, GetError::Empty | GetError::Timeout)
    }

    /// True for [`GetError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, GetError::Timeout)
    }

    /// True for [`GetError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, GetError::Closed)
    }
}

/// [`JoinableQueue::task_done`](super::JoinableQueue::task_done) was called
/// more times than items were put (Python's `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than items were put")]
pub struct TaskDoneError;

/// [`JoinableQueue::join_timeout`](super::JoinableQueue::join_timeout) gave
/// up with tasks still unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out with {unfinished} tasks unfinished")]
pub struct JoinTimeoutError {
    /// Tasks not yet marked done when the timeout passed.
    pub unfinished: u32,
}
