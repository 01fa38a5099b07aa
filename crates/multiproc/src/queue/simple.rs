//! `SimpleQueue`: the plain put/get subset.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{GetError, PutError, Queue};
use crate::connection::{ConnectionError, Waitable};

/// An unbounded queue with only `put`, `get`, `empty` and `close` (Python's
/// `multiprocessing.SimpleQueue`). It is a [`Queue`] underneath, with the
/// same guarantees; `get_timeout` is added so that a caller never has to wait
/// forever.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, SimpleQueue};
/// use std::time::Duration;
///
/// fn double(q: SimpleQueue<u64>, x: u64) {
///     q.put(2 * x).unwrap();
/// }
///
/// let q = SimpleQueue::new().unwrap();
/// let mut p = Process::spawn(double, (q.clone(), 21u64)).unwrap();
/// assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), 42);
/// p.join_timeout(Duration::from_secs(10)).unwrap();
/// assert!(q.empty());
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue").field("empty", &self.empty()).finish()
    }
}

impl<T> SimpleQueue<T> {
    /// True when the queue holds no items (approximate while others put and get).
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes this handle (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close();
    }

    /// Shuts the queue down for every handle (see [`Queue::shutdown`]).
    pub fn shutdown(&self, immediate: bool) {
        self.queue.shutdown(immediate);
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new queue.
    ///
    /// # Errors
    ///
    /// The OS could not create the shared memory.
    pub fn new() -> io::Result<SimpleQueue<T>> {
        Ok(SimpleQueue { queue: Queue::new()? })
    }

    /// Puts `value` at the back; never waits.
    ///
    /// # Errors
    ///
    /// As for [`Queue::put`].
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.queue.put(value)
    }

    /// Takes the item at the front, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As for [`Queue::get`].
    pub fn get(&self) -> Result<T, GetError> {
        self.queue.get()
    }

    /// Takes the item at the front, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.queue.get_timeout(timeout)
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue { queue: Queue::deserialize(d)? })
    }
}

impl<T> Waitable for SimpleQueue<T> {
    /// As for [`Queue`].
    fn is_ready(&self) -> Result<bool, ConnectionError> {
        self.queue.is_ready()
    }

    /// As for [`Queue`].
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
