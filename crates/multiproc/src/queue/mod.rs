//! Queues between processes: [`Queue`], [`JoinableQueue`] and [`SimpleQueue`].
//!
//! A queue is a many-producer, many-consumer FIFO in shared memory. Any
//! number of processes (and threads) put and get; items are any `serde`
//! type. A queue is an ordinary argument: pass a clone to
//! [`Process::spawn`](crate::Process::spawn) (or to a pool task) and the
//! child uses the same queue.
//!
//! What you can rely on:
//!
//! - **FIFO**: items put by one producer are got in the order they were put;
//!   an item whose `put` returned before another `put` began is got first.
//!   This holds across processes, including items put before a child started.
//! - **No feeder thread**: `put` serializes and stores the item in the
//!   caller's thread. When `put` returns, the item is in shared memory: it
//!   survives the producer exiting (or being killed) right after.
//! - **Errors at the call**: an item that cannot be serialized fails `put`
//!   itself and comes back in the error.
//! - **A dead producer never blocks consumers**: a producer killed in the
//!   middle of `put` leaves at most a half-written slot, which consumers skip
//!   as soon as they see its thread is gone (within a few milliseconds), and
//!   the queue stays usable.
//! - **A dead process takes no room with it**: a bounded queue counts its
//!   items by their positions in the ring, admitted and given back in single
//!   atomic steps, so a producer or consumer killed at any instruction leaves
//!   room for `maxsize` items once the queue is emptied.
//! - **Unbounded means unbounded**: [`Queue::new`] never blocks `put`; when
//!   the ring is full, items spill into further segments of shared memory.
//!   [`Queue::bounded`] limits the number of items (Python's `maxsize`).
//! - **Large items** (up to 64 GiB) travel out of the ring, in the queue's
//!   memory file, so they need no large ring. Items up to 1 MiB (and a few
//!   bytes) go in memory the queue keeps for reuse, up to 4 MiB of it once
//!   it carried such items; larger ones in pages of their own, of which the
//!   queue keeps up to two of 8 MiB (and a few bytes) or less for later
//!   items, 16 MiB at most; larger ones are freed once read. Hold bytes as
//!   `serde_bytes::ByteBuf` (see the crate docs).
//!
//! Ending a queue follows Python 3.13: [`Queue::close`] closes one handle
//! (its later puts and gets fail with `Closed`; other handles go on), and
//! [`Queue::shutdown`] ends the queue for every handle in every process:
//! later puts fail with `Closed`, gets return the items still queued and
//! then `Closed` (rather than waiting), or, with `immediate`, fail at once
//! and the items left are discarded. Items that carry file descriptors (a
//! `Connection`, another queue) cannot go through a queue: `put` reports
//! it; send them over a [`Pipe`](crate::Pipe).
//!
//! # Examples
//!
//! ```
//! use multiproc::{Process, Queue};
//! use std::time::Duration;
//!
//! fn producer(q: Queue<String>, name: String) {
//!     q.put(format!("hello from {name}")).unwrap();
//! }
//!
//! let q = Queue::new().unwrap();
//! let mut p = Process::spawn(producer, (q.clone(), "child".to_string())).unwrap();
//! assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), "hello from child");
//! p.join_timeout(Duration::from_secs(10)).unwrap();
//! ```
//!
//! The design (segments, slot stamps, wake-ups, the handling of dead
//! processes) is described in `src/queue/README.md`.

mod builder;
mod error;
mod item;
mod joinable;
mod layout;
mod ring;
mod simple;
mod states;
mod waits;

#[cfg(test)]
mod test;
#[cfg(test)]
mod test_dead;

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use builder::QueueBuilder;
pub use error::{GetError, JoinTimeoutError, PutError, TaskDoneError, TryPutError};
pub use joinable::JoinableQueue;
#[doc(hidden)]
pub use ring::fuzz_slot_decode;
pub use simple::SimpleQueue;

use crate::connection::{ConnectionError, Waitable};
use crate::wire::{WireError, de_error, fd_serde, ser_error};
use item::{encode, with_buffer};
use layout::type_hash;
use ring::Ring;
use waits::{GetFail, PutFail};

/// Default slots per segment.
const DEFAULT_SLOTS: u64 = 4096;
/// Default number of frames (segments alive at once).
const DEFAULT_FRAMES: u64 = 1024;
/// Default arena per segment: two of the largest arena items.
const DEFAULT_ARENA: u64 = 2 * layout::ARENA_ITEM_MAX as u64;

/// A FIFO queue between processes and threads (Python's
/// `multiprocessing.Queue`). See the [module docs](self) for the guarantees.
///
/// Cloning is cheap and gives another handle to the same queue.
pub struct Queue<T> {
    ring: Arc<Ring>,
    /// Set by [`Queue::close`]: this handle only.
    closed: AtomicBool,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    /// Another handle to the same queue; a clone of a closed handle is
    /// closed too.
    fn clone(&self) -> Self {
        // ORDERING: Relaxed: a per-handle flag, no data hangs on it.
        Queue { ring: self.ring.clone(), closed: AtomicBool::new(self.closed.load(Relaxed)), _type: PhantomData }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.maxsize())
            .field("qsize", &self.qsize())
            .field("closed", &self.is_closed())
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

impl<T> Queue<T> {
    fn from_ring(ring: Ring) -> Queue<T> {
        Queue { ring: Arc::new(ring), closed: AtomicBool::new(false), _type: PhantomData }
    }

    /// Options for a new queue.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder::new()
    }

    /// The most items the queue holds, or `None` when unbounded.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::bounded(3).unwrap().maxsize(), Some(3));
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        self.ring.bounded().then(|| self.ring.maxsize() as usize)
    }

    /// How many items are in the queue. Approximate while others put and get
    /// (as in Python); items being written count.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// assert_eq!(q.qsize(), 2);
    /// ```
    pub fn qsize(&self) -> usize {
        self.ring.len() as usize
    }

    /// True when the queue holds no items (approximate, as [`Queue::qsize`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.empty());
    /// q.put(1).unwrap();
    /// assert!(!q.empty());
    /// ```
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// True when a bounded queue holds `maxsize` items; never for an
    /// unbounded queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// assert!(!q.full());
    /// q.put(1).unwrap();
    /// assert!(q.full());
    /// ```
    pub fn full(&self) -> bool {
        self.ring.bounded() && self.ring.len() >= self.ring.maxsize()
    }

    /// Closes this handle (Python's `close`): its later puts and gets fail
    /// with `Closed`. Other handles — clones made before, copies sent to
    /// other processes before — go on; items already put stay in the queue.
    /// Clones made after, and copies sent to other processes after, are
    /// closed too (a closed handle stays closed wherever it goes). To end the
    /// queue for everyone, use [`Queue::shutdown`]. There is no background
    /// thread to join (Python's `join_thread` and `cancel_join_thread` have
    /// nothing to do here).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, Queue};
    ///
    /// let q = Queue::<u8>::new().unwrap();
    /// let other = q.clone();
    /// q.put(1).unwrap();
    /// q.close();
    /// assert!(q.put(2).unwrap_err().is_closed());
    /// assert!(matches!(q.get(), Err(GetError::Closed)));
    /// assert_eq!(other.get().unwrap(), 1); // the queue itself goes on
    /// ```
    pub fn close(&self) {
        // ORDERING: Relaxed: a per-handle flag.
        self.closed.store(true, Relaxed);
    }

    /// True once [`Queue::close`] was called on this handle (or the handle
    /// it was cloned or sent from), or the queue was shut down.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// let other = q.clone();
    /// other.close();
    /// assert!(other.is_closed() && !q.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        // ORDERING: Relaxed: a per-handle flag.
        self.closed.load(Relaxed) || self.ring.is_closed()
    }

    /// Shuts the queue down for every handle in every process (Python
    /// 3.13's `shutdown`). Later puts fail with `Closed`. Without
    /// `immediate`, gets return the items already queued, then
    /// [`GetError::Closed`] instead of waiting; with `immediate`, gets fail
    /// at once and the items left are discarded (for a [`JoinableQueue`],
    /// each discarded item counts as a finished task, so `join` returns once
    /// the items already taken are done). Threads blocked in `put` or `get`
    /// wake up.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{GetError, Queue};
    ///
    /// let q = Queue::<u8>::new().unwrap();
    /// q.put(1).unwrap();
    /// q.clone().shutdown(false);
    /// assert!(q.is_shutdown());
    /// assert!(q.put(2).unwrap_err().is_closed());
    /// assert_eq!(q.get().unwrap(), 1);
    /// assert!(matches!(q.get(), Err(GetError::Closed)));
    ///
    /// let now = Queue::<u8>::new().unwrap();
    /// now.put(1).unwrap();
    /// now.shutdown(true);
    /// assert!(matches!(now.get(), Err(GetError::Closed)));
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.ring.shutdown(immediate);
        if immediate {
            self.ring.drain();
        }
    }

    /// True once the queue was shut down, by any handle in any process
    /// (Python's `is_shutdown`).
    pub fn is_shutdown(&self) -> bool {
        self.ring.is_closed()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A new unbounded queue: `put` never blocks.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<String>::new().unwrap();
    /// assert_eq!(q.maxsize(), None);
    /// for i in 0..10_000 {
    ///     q.put_nowait(i.to_string()).unwrap(); // never full
    /// }
    /// assert_eq!(q.qsize(), 10_000);
    /// ```
    ///
    /// # Errors
    ///
    /// The OS could not create the shared memory.
    pub fn new() -> io::Result<Queue<T>> {
        Queue::builder().build()
    }

    /// A new queue holding at most `maxsize` items (Python's
    /// `Queue(maxsize)`): `put` waits for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let q = multiproc::Queue::<u8>::bounded(2).unwrap();
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// assert!(q.put_timeout(3, Duration::from_millis(20)).unwrap_err().is_full());
    /// ```
    ///
    /// # Errors
    ///
    /// `maxsize` is 0 (use [`Queue::new`] for an unbounded queue) or larger
    /// than about two million (see [`QueueBuilder`]), or the OS could not
    /// create the shared memory.
    pub fn bounded(maxsize: usize) -> io::Result<Queue<T>> {
        Queue::builder().maxsize(maxsize).build()
    }

    /// Puts `value` at the back of the queue, waiting for room if the queue
    /// is bounded and full.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u32>>::new().unwrap();
    /// q.put(vec![1, 2, 3]).unwrap();
    /// assert_eq!(q.get().unwrap(), [1, 2, 3]);
    /// ```
    ///
    /// # Errors
    ///
    /// The value comes back in the error when this handle is closed or the
    /// queue shut down, the value
    /// cannot be serialized (or carries handles), or it cannot be stored.
    pub fn put(&self, value: T) -> Result<(), PutError<T>> {
        self.put_until(value, None, true).map_err(|e| match e {
            TryPutError::Full(_) => unreachable!("a put without deadline does not report Full"),
            TryPutError::Closed(v) => PutError::Closed(v),
            TryPutError::Unserializable(v, e) => PutError::Unserializable(v, e),
            TryPutError::Io(v, e) => PutError::Io(v, e),
        })
    }

    /// Puts `value`, waiting at most `timeout` for room.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let q = multiproc::Queue::<u8>::bounded(1).unwrap();
    /// q.put_timeout(1, Duration::from_secs(1)).unwrap();
    /// let start = Instant::now();
    /// let err = q.put_timeout(2, Duration::from_millis(50)).unwrap_err();
    /// assert!(err.is_full() && start.elapsed() >= Duration::from_millis(50));
    /// ```
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] after ≈`timeout`, or as [`Queue::put`].
    pub fn put_timeout(&self, value: T, timeout: Duration) -> Result<(), TryPutError<T>> {
        self.put_until(value, Some(timeout), true)
    }

    /// Puts `value` if there is room now.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::TryPutError;
    ///
    /// let q = multiproc::Queue::<char>::bounded(1).unwrap();
    /// q.put_nowait('a').unwrap();
    /// assert!(matches!(q.put_nowait('b'), Err(TryPutError::Full('b'))));
    /// ```
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`] at once if the queue is full (found before the
    /// value is serialized, so retrying on a full queue is cheap), or as
    /// [`Queue::put`].
    pub fn put_nowait(&self, value: T) -> Result<(), TryPutError<T>> {
        self.put_until(value, None, false)
    }

    fn put_until(&self, value: T, timeout: Option<Duration>, block: bool) -> Result<(), TryPutError<T>> {
        if self.is_closed() {
            return Err(TryPutError::Closed(value));
        }
        // A put that does not wait fails on a full queue before serializing
        // its item (and writing a large one): a caller may retry it often.
        if !block && !self.ring.room_now() {
            return Err(TryPutError::Full(value));
        }
        with_buffer(|buf| {
            if let Err(e) = encode(&value, buf) {
                return Err(TryPutError::Unserializable(value, e));
            }
            crate::allocator::moved(buf.len());
            match self.ring.put(buf, timeout, block) {
                Ok(()) => Ok(()),
                Err(PutFail::Full) => Err(TryPutError::Full(value)),
                Err(PutFail::Closed) => Err(TryPutError::Closed(value)),
                Err(PutFail::Io(e)) => Err(TryPutError::Io(value, e)),
            }
        })
    }

    /// Takes the item at the front, waiting as long as it takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<char>::new().unwrap();
    /// q.put('a').unwrap();
    /// q.put('b').unwrap();
    /// assert_eq!((q.get().unwrap(), q.get().unwrap()), ('a', 'b'));
    /// ```
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`] if this handle is closed, or once the queue is
    /// shut down and empty (at once after an immediate shutdown); a decode
    /// error if the item is not a `T`.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_until(None, true)
    }

    /// Takes the item at the front, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.get_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// q.put(5).unwrap();
    /// assert_eq!(q.get_timeout(Duration::from_millis(10)).unwrap(), 5);
    /// ```
    ///
    /// # Errors
    ///
    /// [`GetError::Timeout`] after ≈`timeout`, or as [`Queue::get`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_until(Some(timeout), true)
    }

    /// Takes the item at the front if there is one now.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.get_nowait().unwrap_err().is_empty());
    /// ```
    ///
    /// # Errors
    ///
    /// [`GetError::Empty`] at once if there is none, or as [`Queue::get`].
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.get_until(None, false)
    }

    fn get_until(&self, timeout: Option<Duration>, block: bool) -> Result<T, GetError> {
        // ORDERING: Relaxed: a per-handle flag.
        if self.closed.load(Relaxed) {
            return Err(GetError::Closed);
        }
        with_buffer(|buf| {
            self.ring.get(buf, timeout, block).map_err(|e| match e {
                GetFail::Empty => GetError::Empty,
                GetFail::Timeout => GetError::Timeout,
                GetFail::Closed => GetError::Closed,
                GetFail::Io(e) => GetError::Io(e),
            })?;
            crate::allocator::moved(buf.len());
            postcard::from_bytes(buf).map_err(|e| {
                GetError::Decode(WireError::Decode { type_name: std::any::type_name::<T>(), reason: e.to_string() })
            })
        })
    }
}

/// A handle travels with its closed flag: as a clone of a closed handle is
/// closed, so is the copy another process receives (Python's closed queue
/// cannot be used to put wherever it goes). Shared by every queue type.
impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fd = fd_serde::push_fd(self.ring.fd()).map_err(ser_error)?;
        // ORDERING: Relaxed: a per-handle flag.
        (fd, self.closed.load(Relaxed)).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Queue::receive(d, false)
    }
}

impl<T> Queue<T> {
    /// A handle sent by another process (see `Serialize`); `require_joinable`
    /// as for [`Ring::attach`].
    fn receive<'de, D: Deserializer<'de>>(d: D, require_joinable: bool) -> Result<Queue<T>, D::Error> {
        let (fd, closed) = <(u32, bool)>::deserialize(d)?;
        let fd = fd_serde::take_fd(fd).map_err(de_error)?;
        let ring = Ring::attach(fd, require_joinable, type_hash::<T>()).map_err(de_error)?;
        let queue = Queue::from_ring(ring);
        if closed {
            queue.close();
        }
        Ok(queue)
    }
}

impl<T> Waitable for Queue<T> {
    /// True when a `get` would not wait: an item is at the front (or a slot
    /// a dead producer left there, which a get skips), or this handle is
    /// closed, or the queue shut down.
    fn is_ready(&self) -> Result<bool, ConnectionError> {
        // ORDERING: Relaxed: a per-handle flag.
        Ok(self.closed.load(Relaxed) || self.ring.has_work() || self.ring.head_writer_dead())
    }

    /// None: [`wait`](crate::wait) re-checks a queue every millisecond.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
