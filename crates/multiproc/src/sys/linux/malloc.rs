//! Allocator tuning for processes that move large buffers (pool workers,
//! and callers that ask for it with `pool::keep_freed_memory`).

/// Blocks up to this size come from the heap rather than their own mapping.
#[cfg(target_env = "gnu")]
const HEAP_BLOCKS_UP_TO: i32 = 32 << 20;

/// Makes the C allocator keep freed memory for reuse instead of returning it
/// to the kernel: a pool worker allocates buffers of the same sizes chunk
/// after chunk, and each fresh page costs a fault (several µs on a VM) far
/// above the cost of filling it. Blocks up to 32 MiB come from the heap, and
/// up to 64 MiB of free heap is kept. No effect with another allocator.
pub(crate) fn keep_freed_memory() {
    keep_free_heap(64 << 20);
}

/// As [`keep_freed_memory`], for a process that hands a pool a whole batch
/// of large buffers at once: the inputs of one call are freed together as
/// the pool consumes them, and with a 64 MiB limit glibc hands them all back
/// to the kernel in the middle of the call (one `brk` that unmaps hundreds
/// of megabytes) and faults them in again for the next batch. Up to an
/// eighth of the machine's memory (at most 1 GiB) of free heap is kept.
pub(crate) fn keep_freed_batches() {
    // SAFETY: sysconf takes a constant and has no other preconditions.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let eighth = (pages.max(0) as u64).saturating_mul(page.max(0) as u64) / 8;
    keep_free_heap(eighth.clamp(64 << 20, 1 << 30) as i32);
}

fn keep_free_heap(trim_threshold: i32) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts glibc malloc's thresholds, and takes plain
    // integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BLOCKS_UP_TO);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = trim_threshold;
}
