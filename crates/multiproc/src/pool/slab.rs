//! Shared-memory buffers for large chunk inputs, written by the caller's
//! thread and read in place by the worker: a large argument is encoded once,
//! straight into memory the worker maps, with no copy through the scheduler
//! or the socket. A slab goes back to the pool's free list when its chunk is
//! done (the worker decoded it before it answered) and is reused, so its
//! pages are faulted in once.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use crate::sys::imp::shm::Mapping;

/// Inputs at least this large go into a slab.
pub(crate) const SLAB_MIN: usize = 64 * 1024;
/// At most this many bytes of slabs exist per pool; beyond, inputs take the
/// ordinary path.
const SLABS_MAX: usize = 64 << 20;

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
        let best = st.free.iter().enumerate().filter(|(_, s)| s.capacity() >= len).min_by_key(|(_, s)| s.capacity());
        if let Some((i, _)) = best {
            return Some(st.free.swap_remove(i));
        }
        let cap = len.next_power_of_two().max(SLAB_MIN);
        if st.total + cap > SLABS_MAX {
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

/// The first `len` bytes of a slab mapped in a worker, or `None` if out of
/// bounds (a corrupt message).
pub(crate) fn mapped(map: &Mapping, len: usize) -> Option<&[u8]> {
    if len > map.len() {
        return None;
    }
    // SAFETY: in bounds; the parent wrote the slab before sending the chunk
    // that names it and does not reuse it until the chunk's results arrive.
    Some(unsafe { std::slice::from_raw_parts(map.as_ptr(), len) })
}
