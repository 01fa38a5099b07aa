//! Shared memory between the scheduler and one worker: the byte rings that
//! carry large payloads without a copy through the socket or a fresh memory
//! file (whose pages would have to be faulted in every time). The status page
//! the worker writes as it runs is in [`super::status`].

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::slab::SlabLoan;
use crate::sys::imp::shm::Mapping;

/// Offset of the data area in a ring's mapping (the first page holds the
/// consumer's position).
const DATA_OFFSET: usize = 4096;
/// Regions start on this alignment.
const ALIGN: u64 = 64;

/// A single-producer, single-consumer byte ring in shared memory. The
/// producer allocates a region, fills it and sends its position in a message;
/// the consumer reads it and releases it, in the order of allocation.
#[derive(Debug)]
pub(crate) struct Ring {
    map: Mapping,
    cap: u64,
    /// Producer only: the end of the last allocation.
    head: u64,
}

impl Ring {
    /// A new ring with `cap` bytes of data (made by the producer).
    pub(crate) fn new(cap: usize) -> io::Result<Ring> {
        let map = Mapping::anonymous("multiproc-pool-ring", DATA_OFFSET + cap)?;
        Ok(Ring { map, cap: cap as u64, head: 0 })
    }

    /// The consumer's view of a ring received as `fd`.
    pub(crate) fn from_fd(fd: OwnedFd, cap: usize) -> io::Result<Ring> {
        // `cap` came in a message: a size that overflows, or no room at all,
        // is a corrupt message (regions are bounded by `cap`).
        let len = DATA_OFFSET
            .checked_add(cap)
            .filter(|_| cap > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "pool ring of an impossible size"))?;
        Ok(Ring { map: Mapping::from_fd(fd, len)?, cap: cap as u64, head: 0 })
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: the first page of the mapping is zero-initialised, 8-aligned
        // and only ever accessed through this atomic.
        unsafe { &*self.map.as_ptr().cast::<AtomicU64>() }
    }

    /// Producer: reserves `len` contiguous bytes; returns their position, or
    /// `None` while the consumer has not released enough.
    pub(crate) fn alloc(&mut self, len: usize) -> Option<u64> {
        let len = len as u64;
        if len > self.cap {
            return None;
        }
        let mut start = self.head;
        let offset = start % self.cap;
        if offset + len > self.cap {
            start += self.cap - offset; // skip the end, start again at 0
        }
        // ORDERING: Acquire pairs with the consumer's Release in `release`, so
        // its reads of the region are finished before we overwrite it.
        let tail = self.tail().load(Ordering::Acquire);
        if start + len - tail > self.cap {
            return None;
        }
        self.head = (start + len).div_ceil(ALIGN) * ALIGN;
        Some(start)
    }

    /// Producer: gives back the end of the most recent allocation, keeping
    /// its first `len` bytes (0: all of it).
    pub(crate) fn shrink_last(&mut self, at: u64, len: usize) {
        debug_assert!(self.head >= at, "not the last allocation");
        self.head = (at + len as u64).div_ceil(ALIGN) * ALIGN;
    }

    /// Producer: the writable bytes of a region from `alloc`.
    pub(crate) fn region_mut(&mut self, at: u64, len: usize) -> &mut [u8] {
        let offset = (at % self.cap) as usize;
        assert!(offset + len <= self.cap as usize, "ring region out of bounds");
        // SAFETY: in bounds (checked above); the region was reserved by `alloc`
        // and the consumer does not read it before the message naming it
        // arrives, which is after this borrow ends.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(DATA_OFFSET + offset), len) }
    }

    /// Consumer: the bytes of the region at `at`, or `None` if the position is
    /// out of bounds (a corrupt message).
    pub(crate) fn region(&self, at: u64, len: usize) -> Option<&[u8]> {
        let offset = (at % self.cap) as usize;
        if offset.checked_add(len)? > self.cap as usize {
            return None;
        }
        // SAFETY: in bounds; the producer filled the region before sending the
        // message that named it and leaves it alone until `release`.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(DATA_OFFSET + offset), len) })
    }

    /// Consumer: every region up to `at + len` may be reused.
    pub(crate) fn release(&self, at: u64, len: usize) {
        // ORDERING: Release orders our reads of the region before the
        // producer's next writes (it Acquires the tail in `alloc`).
        self.tail().store(at + len as u64, Ordering::Release);
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}

/// The scheduler's side of a worker's output ring: regions are lent out as
/// [`Lease`]s (to the job, or on to the caller that decodes them) and the
/// ring's tail moves past a region only when it and every region before it
/// were given back, whatever order the leases end in.
#[derive(Debug)]
pub(crate) struct RingReader {
    ring: Ring,
    /// Regions lent, in ring order: (position, length, given back).
    lent: Mutex<VecDeque<(u64, usize, bool)>>,
}

impl RingReader {
    pub(crate) fn new(ring: Ring) -> Arc<RingReader> {
        Arc::new(RingReader { ring, lent: Mutex::new(VecDeque::new()) })
    }

    /// Lends the region at `at`, or `None` if it is out of bounds.
    pub(crate) fn lease(self: &Arc<Self>, at: u64, len: usize) -> Option<Lease> {
        self.ring.region(at, len)?;
        self.lent.lock().unwrap_or_else(|e| e.into_inner()).push_back((at, len, false));
        Some(Lease(Held::Ring { reader: self.clone(), at, len }))
    }

    fn give_back(&self, at: u64) {
        let mut lent = self.lent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = lent.iter_mut().find(|e| e.0 == at && !e.2) {
            entry.2 = true;
        }
        let mut freed = None;
        while let Some(&(a, l, true)) = lent.front() {
            freed = Some((a, l));
            lent.pop_front();
        }
        if let Some((a, l)) = freed {
            self.ring.release(a, l);
        }
    }
}

/// Results a worker wrote into shared memory, readable until dropped.
#[derive(Debug)]
pub(crate) struct Lease(Held);

#[derive(Debug)]
enum Held {
    /// A region of a worker's output ring.
    Ring { reader: Arc<RingReader>, at: u64, len: usize },
    /// Results a worker wrote into its chunk's input slab; the slab goes
    /// back to the pool when the lease ends.
    Slab { loan: SlabLoan, at: usize, len: usize },
}

impl Lease {
    /// Lends `len` bytes at `at` of the slab on `loan`, or `None` if out of
    /// bounds (a corrupt message).
    pub(crate) fn in_slab(loan: SlabLoan, at: usize, len: usize) -> Option<Lease> {
        loan.slab.as_ref()?.region(at, len)?;
        Some(Lease(Held::Slab { loan, at, len }))
    }

    /// The region's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.0 {
            Held::Ring { reader, at, len } => reader.ring.region(*at, *len).expect("checked when lent"),
            Held::Slab { loan, at, len } => {
                loan.slab.as_ref().and_then(|s| s.region(*at, *len)).expect("checked when lent")
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Held::Ring { reader, at, .. } = &self.0 {
            reader.give_back(*at);
        }
    }
}

pub(crate) use crate::sys::imp::wake::monotonic_ns;

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn ring_wraps_and_respects_the_consumer() {
        let mut p = Ring::new(1024).unwrap();
        let c = Ring::from_fd(p.as_fd().try_clone_to_owned().unwrap(), 1024).unwrap();
        let a = p.alloc(600).unwrap();
        p.region_mut(a, 600).fill(1);
        assert!(p.alloc(600).is_none(), "full until released");
        assert_eq!(c.region(a, 600).unwrap()[599], 1);
        c.release(a, 600);
        let b = p.alloc(600).unwrap();
        assert_eq!(b % 1024, 0, "wrapped to the start");
        p.region_mut(b, 600).fill(2);
        assert_eq!(c.region(b, 600).unwrap()[0], 2);
        assert!(c.region(1000, 100).is_none());
    }

    #[test]
    fn leases_given_back_out_of_order_free_the_ring_in_order() {
        let mut producer = Ring::new(1024).unwrap();
        let reader = RingReader::new(Ring::from_fd(producer.as_fd().try_clone_to_owned().unwrap(), 1024).unwrap());
        let a = producer.alloc(300).unwrap();
        let b = producer.alloc(300).unwrap();
        let (la, lb) = (reader.lease(a, 300).unwrap(), reader.lease(b, 300).unwrap());
        assert!(producer.alloc(500).is_none());
        drop(lb);
        assert!(producer.alloc(500).is_none(), "b is free but a is not: nothing can be reused");
        drop(la);
        assert!(producer.alloc(500).is_some(), "both free now");
        assert!(reader.lease(900, 300).is_none(), "out of bounds");
    }
}
