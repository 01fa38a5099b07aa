//! Shared-memory buffers for large chunk inputs, written by the caller's
//! thread and read in place by the worker: a large argument is encoded once,
//! straight into memory the worker maps, with no copy through the scheduler
//! or the socket. The worker may write the chunk's results into the same
//! slab, after the input (see [`output_at`]), where the caller decodes them.
//! A slab goes back to the pool's free list when its chunk is done and is
//! reused, the most recently freed first: its pages are faulted in once and
//! are likely still in the CPU cache (a copy between cached buffers runs
//! several times faster than one from memory).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use crate::sys::imp::shm::Mapping;

/// Inputs at least this large go into a slab.
pub(crate) const SLAB_MIN: usize = 64 * 1024;
/// At most this many bytes of slabs exist per pool; beyond, inputs take the
/// ordinary path. (A slab's pages take memory only once written: room for
/// results that never come costs nothing.)
const SLABS_MAX: usize = 128 << 20;

/// The slab capacity for an input of `len` bytes: the input, room for
/// results as large, and a quarter more of each (saturating: a capacity
/// beyond the pool's limit is refused by [`Slabs::take`]).
pub(crate) fn capacity_for(len: usize) -> usize {
    len.saturating_mul(2).saturating_add(len / 2)
}

/// One shared buffer.
#[derive(Debug)]
pub(crate) struct Slab {
    pub id: u32,
    map: Mapping,
}

impl Slab {
    /// Capacity in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.map.len()
    }

    /// The first `len` bytes, for the writer.
    pub(crate) fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.map.len(), "slab overrun");
        // SAFETY: in bounds; a slab is written only by the thread that took it
        // from the free list, before the chunk that names it is sent.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr(), len) }
    }

    /// `len` bytes at `at`, or `None` if out of bounds: results a worker
    /// wrote into the slab.
    pub(crate) fn region(&self, at: usize, len: usize) -> Option<&[u8]> {
        if at.checked_add(len)? > self.map.len() {
            return None;
        }
        // SAFETY: in bounds; the worker wrote the region before it sent the
        // message naming it and does not touch the slab afterwards.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(at), len) })
    }

    /// The first `len` bytes, for the scheduler (a fallback copy).
    pub(crate) fn bytes(&self, len: usize) -> &[u8] {
        assert!(len <= self.map.len(), "slab overrun");
        // SAFETY: in bounds; nobody writes a slab while its chunk exists.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), len) }
    }
}

impl AsFd for Slab {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}

/// The pool's slabs.
#[derive(Debug, Default)]
pub(crate) struct Slabs {
    state: Mutex<SlabState>,
}

#[derive(Debug, Default)]
struct SlabState {
    free: Vec<Slab>,
    next_id: u32,
    total: usize,
}

impl Slabs {
    /// A slab of at least `len` bytes, or `None` when the pool has as many
    /// as it keeps.
    pub(crate) fn take(&self, len: usize) -> Option<Slab> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest that fits; of those, the one given back last.
        let best =
            st.free.iter().enumerate().rev().filter(|(_, s)| s.capacity() >= len).min_by_key(|(_, s)| s.capacity());
        if let Some((i, _)) = best {
            return Some(st.free.remove(i));
        }
        let cap = len.checked_next_multiple_of(SLAB_MIN)?;
        if st.total.checked_add(cap)? > SLABS_MAX {
            return None;
        }
        let map = Mapping::anonymous("multiproc-pool-slab", cap).ok()?;
        st.total += cap;
        st.next_id += 1;
        Some(Slab { id: st.next_id, map })
    }

    /// Puts a slab back for reuse.
    pub(crate) fn give(&self, slab: Slab) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).free.push(slab);
    }
}

/// A slab on loan to one chunk; returned when the chunk is dropped.
#[derive(Debug)]
pub(crate) struct SlabLoan {
    pub slab: Option<Slab>,
    pub len: usize,
    pub home: Arc<Slabs>,
}

impl Drop for SlabLoan {
    fn drop(&mut self) {
        if let Some(slab) = self.slab.take() {
            self.home.give(slab);
        }
    }
}

/// Where in a slab a worker writes the results of the chunk whose input is
/// the slab's first `input_len` bytes: after them, so that the input stays
/// whole (a chunk whose worker dies before its results arrive is sent again).
/// `None` if the offset overflows (`input_len` came in a message: a corrupt
/// one must not wrap around to the start of the slab).
pub(crate) fn output_at(input_len: usize) -> Option<usize> {
    input_len.checked_next_multiple_of(64)
}

/// Splits a slab mapped in a worker into the chunk's input (its first
/// `input_len` bytes) and the room for results after it; `None` if the
/// input is out of bounds (a corrupt message).
pub(crate) fn mapped_split(map: &mut Mapping, input_len: usize) -> Option<(&[u8], &mut [u8])> {
    let at = output_at(input_len)?;
    // `input_len <= at` (rounding up), so this bounds both ranges.
    if at > map.len() {
        return None;
    }
    // SAFETY: both ranges are in bounds and disjoint. The parent wrote the
    // input before sending the chunk that names the slab and does not touch
    // the slab again until the chunk's results arrive; no other worker has
    // the chunk meanwhile; `map` is borrowed mutably for as long as the two
    // slices live.
    unsafe {
        let input = std::slice::from_raw_parts(map.as_ptr(), input_len);
        let room = std::slice::from_raw_parts_mut(map.as_ptr().add(at), map.len() - at);
        Some((input, room))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lengths_from_a_message_never_wrap() {
        let mut map = Mapping::anonymous("t", 4096).unwrap();
        assert!(mapped_split(&mut map, usize::MAX - 10).is_none());
        assert!(mapped_split(&mut map, 4097).is_none());
        assert_eq!(output_at(usize::MAX - 10), None);
        let (input, room) = mapped_split(&mut map, 100).unwrap();
        assert_eq!((input.len(), room.len()), (100, 4096 - 128));
        assert_eq!(capacity_for(usize::MAX), usize::MAX);
        assert!(Slabs::default().take(usize::MAX).is_none());
    }
}
