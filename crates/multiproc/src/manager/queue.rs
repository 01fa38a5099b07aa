//! [`Queue`] and [`JoinableQueue`] proxies: Python's `manager.Queue()`, and
//! the queues a remote manager serves over TCP.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::protocol::{Kind, Op, RemoteError};
use super::proxy::{ObjectRef, encode, proxy};
use super::{ManagerError, Proxy};

/// A FIFO queue in a manager, of any serde type `T`: the same names and
/// timed forms as [`crate::Queue`]. A `get` waiting on an empty queue blocks
/// only its caller. Prefer [`crate::Queue`] between processes of one machine
/// (shared memory, much faster); a manager queue is for processes that find
/// each other by address, on other machines too.
///
/// Errors are [`ManagerError::Remote`] with
/// [`RemoteError::Empty`](super::RemoteError::Empty) or
/// [`Full`](super::RemoteError::Full) (no wait),
/// [`Timeout`](super::RemoteError::Timeout) (timed forms) or
/// [`Closed`](super::RemoteError::Closed).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::manager::{Manager, ManagerError, RemoteError};
///
/// let manager = Manager::start().unwrap();
/// let q = manager.bounded_queue::<String>(1).unwrap();
/// q.put("a".into()).unwrap();
/// assert!(matches!(q.put_nowait("b".into()), Err(ManagerError::Remote(RemoteError::Full))));
/// assert_eq!(q.qsize().unwrap(), 1);
/// assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), "a");
/// assert!(matches!(q.get_nowait(), Err(ManagerError::Remote(RemoteError::Empty))));
/// ```
pub struct Queue<T> {
    object: ObjectRef,
    _type: PhantomData<fn(T) -> T>,
}

proxy!(Queue<T>, Kind::Queue);

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn put_inner(&self, value: &T, timeout: Option<Duration>) -> Result<(), ManagerError> {
        self.object.unit(Op::Put { item: encode(value)?, timeout })
    }

    fn get_inner(&self, timeout: Option<Duration>) -> Result<T, ManagerError> {
        self.object.value(Op::Take { timeout })
    }

    /// Puts `value`, waiting as long as it takes for room.
    ///
    /// # Errors
    ///
    /// `Closed`, or the manager cannot be reached, or the value cannot be encoded.
    pub fn put(&self, value: T) -> Result<(), ManagerError> {
        self.put_inner(&value, None)
    }

    /// Puts `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// `Timeout`, or as [`Queue::put`].
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), ManagerError> {
        self.put_inner(&value, Some(timeout)).map_err(timed_out)
    }

    /// Puts `value` if there is room now.
    ///
    /// # Errors
    ///
    /// `Full`, or as [`Queue::put`].
    pub fn put_nowait(&self, value: T) -> Result<(), ManagerError> {
        self.put_inner(&value, Some(Duration::ZERO))
    }

    /// Takes the oldest item, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// `Closed` once the queue is closed and empty, or the manager cannot be
    /// reached (a killed manager fails a waiting `get` at once).
    pub fn get(&self) -> Result<T, ManagerError> {
        self.get_inner(None)
    }

    /// Takes the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout`, or as [`Queue::get`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, ManagerError> {
        self.get_inner(Some(timeout)).map_err(timed_out)
    }

    /// Takes the oldest item if there is one now.
    ///
    /// # Errors
    ///
    /// `Empty`, or as [`Queue::get`].
    pub fn get_nowait(&self) -> Result<T, ManagerError> {
        self.get_inner(Some(Duration::ZERO))
    }

    /// Puts every item of `values`, in order and at once, waiting as long
    /// as it takes for room for all of them: one round trip to the manager
    /// for the lot, where a `put` each costs one per item (over a network,
    /// the round trips are the cost). No other client's item comes between
    /// them. On a bounded queue the batch goes in only when there is room
    /// for all of it, so single puts that keep the queue nearly full can
    /// make it wait: bound the wait with [`Queue::put_many_timeout`].
    ///
    /// # Errors
    ///
    /// `Closed` (nothing was put); [`RemoteError::BadRequest`] for more
    /// items than a bounded queue ever holds; a request over 64 MiB
    /// ([`ManagerError::TooLarge`]: put them in parts); or as [`Queue::put`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let manager = multiproc::manager::Manager::start().unwrap();
    /// let q = manager.queue::<u32>().unwrap();
    /// q.put_many(1..=5).unwrap();
    /// assert_eq!(q.get_many(3).unwrap(), [1, 2, 3]);
    /// assert_eq!(q.get_many_timeout(10, Duration::from_secs(5)).unwrap(), [4, 5]);
    /// ```
    pub fn put_many<I: IntoIterator<Item = T>>(&self, values: I) -> Result<(), ManagerError> {
        self.put_many_inner(values, None)
    }

    /// As [`Queue::put_many`], waiting at most `timeout` for room for all
    /// of them (on `Timeout` none was put).
    ///
    /// # Errors
    ///
    /// `Timeout`, or as [`Queue::put_many`].
    pub fn put_many_timeout<I: IntoIterator<Item = T>>(
        &self,
        values: I,
        timeout: Duration,
    ) -> Result<(), ManagerError> {
        self.put_many_inner(values, Some(timeout)).map_err(timed_out)
    }

    /// As [`Queue::put_many`], if there is room for all of them now.
    ///
    /// # Errors
    ///
    /// `Full` (none was put), or as [`Queue::put_many`].
    pub fn put_many_nowait<I: IntoIterator<Item = T>>(&self, values: I) -> Result<(), ManagerError> {
        self.put_many_inner(values, Some(Duration::ZERO))
    }

    fn put_many_inner<I: IntoIterator<Item = T>>(
        &self,
        values: I,
        timeout: Option<Duration>,
    ) -> Result<(), ManagerError> {
        let items = values.into_iter().map(|v| encode(&v)).collect::<Result<Vec<_>, _>>()?;
        self.object.unit(Op::PutMany { items, timeout })
    }

    /// Takes the oldest items, waiting as long as it takes for the first:
    /// then as many as are there, at most `max` (and as many as fit one
    /// answer, 256 MiB; the rest stay queued). One round trip for the lot.
    /// `max` 0 takes nothing and returns at once.
    ///
    /// # Errors
    ///
    /// As [`Queue::get`].
    pub fn get_many(&self, max: usize) -> Result<Vec<T>, ManagerError> {
        self.get_many_inner(max, None)
    }

    /// As [`Queue::get_many`], waiting at most `timeout` for the first item.
    ///
    /// # Errors
    ///
    /// `Timeout`, or as [`Queue::get`].
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>, ManagerError> {
        self.get_many_inner(max, Some(timeout)).map_err(timed_out)
    }

    /// As [`Queue::get_many`], if there is an item now.
    ///
    /// # Errors
    ///
    /// `Empty`, or as [`Queue::get`].
    pub fn get_many_nowait(&self, max: usize) -> Result<Vec<T>, ManagerError> {
        self.get_many_inner(max, Some(Duration::ZERO))
    }

    fn get_many_inner(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<T>, ManagerError> {
        self.object.many(Op::TakeMany { max: max as u64, timeout })
    }

    /// The number of items in the queue.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn qsize(&self) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::Len)? as usize)
    }

    /// True when the queue holds no item.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn empty(&self) -> Result<bool, ManagerError> {
        Ok(self.qsize()? == 0)
    }

    /// True when a bounded queue is full.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn full(&self) -> Result<bool, ManagerError> {
        self.object.bool(Op::Full)
    }

    /// Closes the queue: later puts fail with `Closed`; gets take what is
    /// left, then fail with `Closed`; waiting calls return.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn close(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::Close)
    }

    /// True after [`Queue::close`].
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn is_closed(&self) -> Result<bool, ManagerError> {
        self.object.bool(Op::IsSet)
    }
}

/// The error of a timed `get` or `put`: the manager answers a zero
/// timeout as the `_nowait` forms (`Empty`, `Full`); a timed form says
/// `Timeout` for every timeout, zero too (a deadline loop's last wait).
fn timed_out(e: ManagerError) -> ManagerError {
    match e {
        ManagerError::Remote(RemoteError::Empty | RemoteError::Full) => ManagerError::Remote(RemoteError::Timeout),
        other => other,
    }
}

/// A [`Queue`] that counts unfinished tasks (Python's
/// `manager.JoinableQueue()`): every `put` adds one, [`task_done`](JoinableQueue::task_done)
/// removes one, and [`join`](JoinableQueue::join) waits until none is left.
/// It derefs to [`Queue`] for `put`, `get` and the rest.
///
/// A consumer killed between its `get` and its `task_done` leaves that task
/// unfinished (its item is lost with it): `join` waits for it, as in
/// Python; bound it with [`join_timeout`](JoinableQueue::join_timeout).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let q = manager.joinable_queue::<u32>().unwrap();
/// q.put(1).unwrap();
/// assert!(q.join_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
/// q.get().unwrap();
/// q.task_done().unwrap();
/// q.join_timeout(Duration::from_secs(5)).unwrap();
/// assert!(q.task_done().is_err()); // one too many
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> super::proxy::sealed::Sealed for JoinableQueue<T> {}

impl<T> Proxy for JoinableQueue<T> {
    const KIND: Kind = Kind::JoinableQueue;

    fn object_ref(&self) -> &ObjectRef {
        &self.queue.object
    }

    fn from_object_ref(object: ObjectRef) -> Self {
        JoinableQueue { queue: Queue::from_object_ref(object) }
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.queue.object).finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(JoinableQueue { queue: Queue::deserialize(d)? })
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Marks one item as processed.
    ///
    /// # Errors
    ///
    /// [`RemoteError::TooManyTaskDone`](super::RemoteError::TooManyTaskDone)
    /// when called more times than items were put, or the manager cannot be reached.
    pub fn task_done(&self) -> Result<(), ManagerError> {
        self.queue.object.unit(Op::TaskDone)
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn join(&self) -> Result<(), ManagerError> {
        self.queue.object.unit(Op::Join { timeout: None })
    }

    /// As [`JoinableQueue::join`], waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout`, or the manager cannot be reached.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ManagerError> {
        self.queue.object.unit(Op::Join { timeout: Some(timeout) })
    }

    /// The number of items put and not yet marked done.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn unfinished_tasks(&self) -> Result<usize, ManagerError> {
        Ok(self.queue.object.count(Op::NWaiting)? as usize)
    }
}
