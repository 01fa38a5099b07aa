//! Buffers a pool keeps in the calling process for encoding arguments, and
//! the allocator tuning it applies the first time they are large.

use std::sync::{Arc, Mutex};

use super::slab::{SLAB_MIN, Slabs};

/// Large encoding buffers kept for reuse: a fresh megabyte costs 256 page
/// faults, far more than the copy into it.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    free: Mutex<Vec<Vec<u8>>>,
    /// Shared buffers for inputs large enough to skip every copy.
    pub slabs: Arc<Slabs>,
    /// Tune this process's allocator on the first large input (see
    /// `PoolBuilder::keep_freed_memory`).
    tune_allocator: bool,
}

/// Buffers smaller than this are left to the allocator.
const RECYCLE_MIN: usize = 64 * 1024;
/// At most this many bytes of buffers are kept.
const RECYCLE_MAX: usize = 64 << 20;

impl Buffers {
    pub(crate) fn new(tune_allocator: bool) -> Buffers {
        Buffers { tune_allocator, ..Buffers::default() }
    }

    /// Called with the size of each encoded chunk: the first large one tunes
    /// the allocator, if the pool may.
    pub(super) fn saw_encoded(&self, len: usize) {
        if self.tune_allocator && len >= SLAB_MIN && crate::allocator::tuning_allowed() {
            static TUNED: std::sync::Once = std::sync::Once::new();
            TUNED.call_once(crate::sys::imp::malloc::keep_freed_batches);
        }
    }

    pub(super) fn take(&self) -> Vec<u8> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    pub(super) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < RECYCLE_MIN {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.iter().map(Vec::capacity).sum::<usize>() + buf.capacity() <= RECYCLE_MAX {
            free.push(buf);
        }
    }
}
