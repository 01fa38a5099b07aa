//! `QueueBuilder`: the options of a new queue (size limit and geometry).

use std::fmt;
use std::io;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::layout::{FLAG_BOUNDED, FLAG_JOINABLE, Geometry, MAX_FRAMES, MAX_SLOTS, type_hash};
use super::ring::Ring;
use super::{DEFAULT_ARENA, DEFAULT_FRAMES, DEFAULT_SLOTS, JoinableQueue, Queue};

/// Options for a new queue; made by [`Queue::builder`].
///
/// The defaults suit most uses; the geometry knobs trade memory for how many
/// items can wait before the queue reports that it is exhausted.
///
/// # Examples
///
/// ```
/// use multiproc::Queue;
///
/// let q = Queue::<u64>::builder().maxsize(10).segment_slots(16).build().unwrap();
/// assert_eq!(q.maxsize(), Some(10));
/// ```
pub struct QueueBuilder<T> {
    maxsize: Option<u64>,
    slots: Option<u64>,
    frames: u64,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for QueueBuilder<T> {
    fn clone(&self) -> Self {
        QueueBuilder { maxsize: self.maxsize, slots: self.slots, frames: self.frames, _type: PhantomData }
    }
}

impl<T> fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("maxsize", &self.maxsize)
            .field("slots", &self.slots)
            .field("frames", &self.frames)
            .finish()
    }
}

impl<T> QueueBuilder<T> {
    /// The defaults: unbounded, default geometry.
    pub(super) fn new() -> QueueBuilder<T> {
        QueueBuilder { maxsize: None, slots: None, frames: DEFAULT_FRAMES, _type: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// Limits the queue to `maxsize` items (Python's `maxsize`).
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = Some(maxsize as u64);
        self
    }

    /// Slots per ring segment (rounded up to a power of two, at least 2, at
    /// most 2^20). Each slot is 64 bytes of shared memory; a segment that
    /// fills spills into a new one. Default: 4096 (or fewer for a small
    /// `maxsize`).
    pub fn segment_slots(mut self, slots: usize) -> Self {
        self.slots = Some(slots as u64);
        self
    }

    /// How many segments may be alive at once (default 1024, at least 2, at
    /// most 65536). An unbounded queue holds up to `segments × segment_slots`
    /// small items.
    pub fn max_segments(mut self, segments: usize) -> Self {
        self.frames = (segments as u64).max(2);
        self
    }

    fn geometry(&self) -> io::Result<Geometry> {
        let too_large = |what: &str, n: u64, most: u64| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {n} is too large (at most {most})"))
        };
        if self.frames > MAX_FRAMES {
            return Err(too_large("max_segments", self.frames, MAX_FRAMES));
        }
        // Rounded up to a power of two; a number past the largest one stays
        // too large.
        let round = |n: u64| n.max(2).checked_next_power_of_two().unwrap_or(u64::MAX);
        let slots = match (self.slots, self.maxsize) {
            (Some(n), _) if round(n) > MAX_SLOTS => return Err(too_large("segment_slots", n, MAX_SLOTS)),
            (Some(n), _) => round(n),
            (None, Some(max)) => round(max).clamp(64, DEFAULT_SLOTS),
            (None, None) => DEFAULT_SLOTS,
        };
        if let Some(max) = self.maxsize {
            if max == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "maxsize must be at least 1; use Queue::new for an unbounded queue",
                ));
            }
            if max > (self.frames / 2) * slots {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("maxsize {max} is too large for this geometry (at most {})", (self.frames / 2) * slots),
                ));
            }
        }
        Geometry { slots, frames: self.frames, arena: DEFAULT_ARENA }.validate()
    }

    fn ring(&self, joinable: bool) -> io::Result<Ring> {
        let mut flags = if joinable { FLAG_JOINABLE } else { 0 };
        if self.maxsize.is_some() {
            flags |= FLAG_BOUNDED;
        }
        Ring::create(self.geometry()?, flags, self.maxsize.unwrap_or(0), type_hash::<T>())
    }

    /// Creates the queue.
    ///
    /// # Errors
    ///
    /// `maxsize` is 0 or too large for the geometry, or the OS could not
    /// create the shared memory.
    pub fn build(&self) -> io::Result<Queue<T>> {
        Ok(Queue::from_ring(self.ring(false)?))
    }

    /// Creates a [`JoinableQueue`].
    ///
    /// # Errors
    ///
    /// As for [`QueueBuilder::build`].
    pub fn build_joinable(&self) -> io::Result<JoinableQueue<T>> {
        Ok(JoinableQueue::from_queue(Queue::from_ring(self.ring(true)?)))
    }
}
