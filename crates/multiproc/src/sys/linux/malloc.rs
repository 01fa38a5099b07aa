//! Allocator tuning for processes that move large buffers (pool workers,
//! and callers that ask for it with `pool::keep_freed_memory`), and for the
//! processes multiproc starts, which handle many small blocks at a time.

use std::ffi::{OsStr, OsString};

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

/// The glibc tunable that sizes each thread's cache of freed blocks.
#[cfg(target_env = "gnu")]
const TCACHE_COUNT: &str = "glibc.malloc.tcache_count";

/// Freed blocks of each size that a thread of a started process keeps for
/// reuse: glibc keeps 7, and a worker that frees a batch's hundred-odd
/// inputs of one size sends the rest to its "fast bins", which the batch's
/// next large allocation (any of 1 KiB or more, such as the vector of its
/// outputs) then merges back, block by block, only for the next batch to
/// split them up again. With room for 256, the blocks a batch frees are the
/// ones its successor allocates: `serve_pipeline` ran 2.07 M requests/s
/// against 1.90 (its model and preprocessing processes spent a quarter of
/// their time in malloc). At most 256 blocks of each size up to 1 KiB per
/// thread stay cached.
#[cfg(target_env = "gnu")]
const TCACHE_BLOCKS: u32 = 256;

/// The `GLIBC_TUNABLES` value a re-executed child starts with, given the
/// one it would inherit (`current`): the per-thread cache raised to
/// [`TCACHE_BLOCKS`] blocks per size, unless the program set its own size;
/// `None` to leave the variable as it is.
pub(crate) fn child_tunables(current: Option<&OsStr>) -> Option<OsString> {
    #[cfg(target_env = "gnu")]
    {
        let ours = format!("{TCACHE_COUNT}={TCACHE_BLOCKS}");
        let set_already = |v: &OsStr| {
            v.to_string_lossy()
                .split(':')
                .any(|t| t.strip_prefix(TCACHE_COUNT).is_some_and(|rest| rest.starts_with('=')))
        };
        match current.filter(|v| !v.is_empty()) {
            None => Some(ours.into()),
            Some(v) if set_already(v) => None,
            Some(v) => {
                let mut joined = v.to_os_string();
                joined.push(":");
                joined.push(ours);
                Some(joined)
            }
        }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = current;
        None
    }
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn the_cache_size_is_added_to_what_the_child_inherits() {
        assert_eq!(child_tunables(None).unwrap(), "glibc.malloc.tcache_count=256");
        assert_eq!(child_tunables(Some(OsStr::new(""))).unwrap(), "glibc.malloc.tcache_count=256");
        let joined = child_tunables(Some(OsStr::new("glibc.malloc.check=3"))).unwrap();
        assert_eq!(joined, "glibc.malloc.check=3:glibc.malloc.tcache_count=256");
    }

    #[test]
    fn a_cache_size_the_program_set_is_left_alone() {
        assert_eq!(child_tunables(Some(OsStr::new("glibc.malloc.tcache_count=7"))), None);
        assert_eq!(child_tunables(Some(OsStr::new("glibc.malloc.check=3:glibc.malloc.tcache_count=0"))), None);
        // A tunable whose name only starts like it is another one.
        assert!(child_tunables(Some(OsStr::new("glibc.malloc.tcache_count_x=1"))).is_some());
    }
}
