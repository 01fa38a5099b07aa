//! Processes multiproc starts by running the program again keep up to 256
//! freed blocks of each size per thread (glibc's default is 7), unless the
//! program set that size itself or turned allocator tuning off. Checked by
//! what the child's allocator does, not by its environment: after freeing
//! a hundred small blocks, a tuned child holds none of them in glibc's
//! "fast bins" (the per-thread cache holds them all), an untuned one holds
//! most.

mod process_support;

use multiproc::{Process, StartMethod};
use process_support::{JOIN, serial};

/// Blocks freed by the probe; each is a 48-byte chunk, in fast-bin range.
const FREED: usize = 100;
const CHUNK: usize = 48;

/// Bytes that freeing a hundred 40-byte blocks added to this process's fast
/// bins (glibc's `mallinfo2().fsmblks`).
fn fast_bin_bytes_after_freeing() -> usize {
    let blocks: Vec<Box<[u8; 40]>> = (0..FREED).map(|i| Box::new([i as u8; 40])).collect();
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let before = unsafe { libc::mallinfo2() }.fsmblks;
    drop(std::hint::black_box(blocks));
    // SAFETY: as above.
    let after = unsafe { libc::mallinfo2() }.fsmblks;
    after.saturating_sub(before)
}

fn probe_in(builder: multiproc::ProcessBuilder) -> usize {
    let mut child = builder.spawn(fast_bin_bytes_after_freeing, ()).unwrap();
    child.join_timeout(JOIN).unwrap()
}

/// Most of the blocks went to the fast bins (glibc's default cache of 7).
fn untuned(bytes: usize) -> bool {
    bytes >= (FREED - 10) * CHUNK
}

#[test]
fn started_children_keep_freed_blocks_in_their_cache() {
    let _serial = serial();
    // The probe sees the default here: this test process was not tuned.
    assert!(untuned(fast_bin_bytes_after_freeing()), "the probe does not see glibc's default cache here");
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let bytes = probe_in(Process::builder().start_method(method));
        assert!(bytes < 8 * CHUNK, "{method:?}: {bytes} bytes of freed blocks went to the fast bins");
    }
}

#[test]
fn a_cache_size_the_program_set_is_kept() {
    let _serial = serial();
    let builder =
        Process::builder().start_method(StartMethod::Spawn).env("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7");
    let bytes = probe_in(builder);
    assert!(untuned(bytes), "only {bytes} bytes went to the fast bins: the program's own size was overridden");
}

#[test]
fn no_tuning_leaves_the_childs_allocator_alone() {
    let _serial = serial();
    multiproc::allow_allocator_tuning(false);
    let bytes = probe_in(Process::builder().start_method(StartMethod::Spawn));
    multiproc::allow_allocator_tuning(true);
    assert!(untuned(bytes), "only {bytes} bytes went to the fast bins: the child was tuned");
}
