//! `JoinableQueue`: a queue that counts unfinished tasks.

use std::fmt;
use std::io;
use std::ops::Deref;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{JoinTimeoutError, Queue, TaskDoneError};
use crate::connection::{ConnectionError, Waitable};
use crate::sys::Deadline;

/// A [`Queue`] that counts unfinished tasks (Python's
/// `multiprocessing.JoinableQueue`): every `put` adds a task, every
/// [`task_done`](JoinableQueue::task_done) finishes one, and
/// [`join`](JoinableQueue::join) waits until none is left.
///
/// It dereferences to a [`Queue`] for `put`, `get` and the rest; a `Queue`
/// handle made from it (by cloning through the deref) still counts tasks.
///
/// A producer killed anywhere inside `put` leaves either its item in the
/// queue with its task, or neither: never a task without an item, so `join`
/// does not wait for it. A consumer killed while it holds a task leaves it
/// unfinished, as in Python: one killed after its `get` and before its
/// `task_done`, or in the middle of a `get` once it has claimed the item
/// (the item is then lost with it). Each such kill leaves at most one task;
/// [`join`](JoinableQueue::join) would wait for it for ever, so wait with
/// [`join_timeout`](JoinableQueue::join_timeout) where consumers may be
/// killed.
///
/// As in Python, `task_done` may be called before the `get` of its item;
/// it fails only when called more times than items were put.
///
/// # Examples
///
/// ```
/// use multiproc::{JoinableQueue, Process};
/// use std::time::Duration;
///
/// fn worker(tasks: JoinableQueue<Option<u32>>) {
///     while let Ok(Some(n)) = tasks.get_timeout(Duration::from_secs(10)) {
///         assert!(n < 3);
///         tasks.task_done().unwrap();
///     }
///     tasks.task_done().unwrap(); // the poison pill
/// }
///
/// let tasks = JoinableQueue::new().unwrap();
/// let mut p = Process::spawn(worker, (tasks.clone(),)).unwrap();
/// for n in 0..3 {
///     tasks.put(Some(n)).unwrap();
/// }
/// tasks.put(None).unwrap();
/// tasks.join_timeout(Duration::from_secs(10)).unwrap();
/// assert_eq!(tasks.unfinished_tasks(), 0);
/// p.join_timeout(Duration::from_secs(10)).unwrap();
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("maxsize", &self.maxsize())
            .field("qsize", &self.qsize())
            .field("unfinished_tasks", &self.unfinished_tasks())
            .finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> JoinableQueue<T> {
    pub(super) fn from_queue(queue: Queue<T>) -> JoinableQueue<T> {
        JoinableQueue { queue }
    }

    /// Marks one task done: call it once per item got, when its work is
    /// finished.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// assert!(q.task_done().is_err()); // one too many
    /// ```
    ///
    /// # Errors
    ///
    /// [`TaskDoneError`] if no task is unfinished (called more times than
    /// items were put).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.queue.ring.task_done() { Ok(()) } else { Err(TaskDoneError) }
    }

    /// Waits until every item put has been marked done: it returns once the
    /// count of unfinished tasks reached zero after the call began, even if
    /// later puts raised it again (as Python's `join` does).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.join(); // nothing put: returns at once
    /// q.put(7).unwrap();
    /// assert_eq!(q.get().unwrap(), 7);
    /// q.task_done().unwrap();
    /// q.join(); // the one item is done: returns at once
    /// assert!(q.task_done().is_err()); // more task_done calls than items
    /// ```
    pub fn join(&self) {
        self.queue.ring.join(Deadline::NEVER);
    }

    /// Waits at most `timeout` until every item put has been marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.join_timeout(Duration::from_millis(10)).unwrap_err().unfinished, 1);
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// q.join_timeout(Duration::from_millis(10)).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`JoinTimeoutError`] after ≈`timeout` with tasks still unfinished.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        if self.queue.ring.join(Deadline::after(timeout)) {
            Ok(())
        } else {
            Err(JoinTimeoutError { unfinished: self.queue.ring.unfinished() })
        }
    }

    /// Tasks put and not yet marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::bounded(4).unwrap();
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// q.get().unwrap();
    /// assert_eq!(q.unfinished_tasks(), 2); // got, but not marked done
    /// ```
    pub fn unfinished_tasks(&self) -> usize {
        self.queue.ring.unfinished() as usize
    }

    /// A plain [`Queue`] handle to the same queue (puts still count tasks).
    pub fn as_queue(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new unbounded joinable queue.
    ///
    /// # Errors
    ///
    /// The OS could not create the shared memory.
    pub fn new() -> io::Result<JoinableQueue<T>> {
        Queue::builder().build_joinable()
    }

    /// A new joinable queue holding at most `maxsize` items.
    ///
    /// # Errors
    ///
    /// As for [`Queue::bounded`].
    pub fn bounded(maxsize: usize) -> io::Result<JoinableQueue<T>> {
        Queue::builder().maxsize(maxsize).build_joinable()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(JoinableQueue::from_queue(Queue::receive(d, true)?))
    }
}

impl<T> Waitable for JoinableQueue<T> {
    /// As for [`Queue`].
    fn is_ready(&self) -> Result<bool, ConnectionError> {
        self.queue.is_ready()
    }

    /// As for [`Queue`].
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
