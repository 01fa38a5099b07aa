//! Allocator tuning for processes that move large buffers (pool workers,
//! and callers that ask for it with `pool::keep_freed_memory`).

/// Makes the C allocator keep freed memory for reuse instead of returning it
/// to the kernel: a pool worker allocates buffers of the same sizes chunk
/// after chunk, and each fresh page costs a fault (several µs on a VM) far
/// above the cost of filling it. Blocks up to 32 MiB come from the heap, and
/// up to 64 MiB of free heap is kept. No effect with another allocator.
pub(crate) fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only adjusts glibc malloc's thresholds; it is called
    // before the worker runs any task, and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
