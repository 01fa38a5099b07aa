//! Processes multiproc starts by running the program again keep up to 256
//! freed blocks of each size per thread (glibc's default is 7), unless the
//! program set that size itself or turned allocator tuning off. Checked by
//! what the child's allocator does, not by its environment: after freeing
//! a hundred small blocks, a tuned child holds none of them in glibc's
//! "fast bins" (the per-thread cache holds them all), an untuned one holds
//! most.

mod process_support;

use multiproc::{Process, StartMethod};
use process_support::{join_or_kill, serial};

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

/// Whether this test process's allocator is glibc's, with its defaults:
/// the probe means nothing under a preloaded allocator or tunables set
/// from outside.
fn default_allocator_here() -> bool {
    let outside = ["GLIBC_TUNABLES", "LD_PRELOAD"].iter().find(|v| std::env::var_os(v).is_some());
    if let Some(v) = outside {
        eprintln!("skipped: {v} is set for the tests");
    }
    outside.is_none()
}

/// The tests' turn (they run one at a time), if the probe means something
/// in this process; `None`: the test is skipped.
fn serial_with_default_allocator() -> Option<std::sync::MutexGuard<'static, ()>> {
    let serial = serial();
    default_allocator_here().then_some(serial)
}

/// Turns allocator tuning back on when dropped (even if the test fails).
struct TuningBackOn;

impl Drop for TuningBackOn {
    fn drop(&mut self) {
        multiproc::allow_allocator_tuning(true);
    }
}

fn probe_in(builder: multiproc::ProcessBuilder) -> usize {
    join_or_kill(builder.spawn(fast_bin_bytes_after_freeing, ()).unwrap())
}

/// Almost none of the blocks went to the fast bins (the raised cache took them).
fn tuned(bytes: usize) -> bool {
    bytes < 8 * CHUNK
}

/// Most of the blocks went to the fast bins (glibc's default cache of 7).
fn untuned(bytes: usize) -> bool {
    bytes >= (FREED - 10) * CHUNK
}

#[test]
fn started_children_keep_freed_blocks_in_their_cache() {
    let Some(_serial) = serial_with_default_allocator() else { return };
    // That the probe sees glibc's default in an untuned child is shown by
    // `a_cache_size_the_program_set_is_kept` (not in this process, whose
    // other threads may share the arena and merge its fast bins meanwhile).
    for method in [StartMethod::Spawn, StartMethod::ForkServer] {
        let bytes = probe_in(Process::builder().start_method(method));
        assert!(tuned(bytes), "{method:?}: {bytes} bytes of freed blocks went to the fast bins");
    }
}

#[test]
fn a_cache_size_the_program_set_is_kept() {
    let Some(_serial) = serial_with_default_allocator() else { return };
    let builder =
        Process::builder().start_method(StartMethod::Spawn).env("GLIBC_TUNABLES", "glibc.malloc.tcache_count=7");
    let bytes = probe_in(builder);
    assert!(untuned(bytes), "only {bytes} bytes went to the fast bins: the program's own size was overridden");
}

#[test]
fn no_tuning_leaves_the_childs_allocator_alone() {
    let Some(_serial) = serial_with_default_allocator() else { return };
    let _back_on = TuningBackOn;
    multiproc::allow_allocator_tuning(false);
    let bytes = probe_in(Process::builder().start_method(StartMethod::Spawn));
    assert!(untuned(bytes), "only {bytes} bytes went to the fast bins: the child was tuned");
}

#[test]
fn a_child_whose_environment_removes_the_tunables_gets_none() {
    let Some(_serial) = serial_with_default_allocator() else { return };
    let builder = Process::builder().start_method(StartMethod::Spawn).env_remove("GLIBC_TUNABLES");
    let bytes = probe_in(builder);
    assert!(untuned(bytes), "only {bytes} bytes went to the fast bins: the child was tuned");
}

#[test]
fn a_child_whose_environment_removes_then_sets_the_tunables_is_tuned() {
    let Some(_serial) = serial_with_default_allocator() else { return };
    let builder = Process::builder()
        .start_method(StartMethod::Spawn)
        .env_remove("GLIBC_TUNABLES")
        .env("GLIBC_TUNABLES", "glibc.malloc.check=0");
    let bytes = probe_in(builder);
    assert!(tuned(bytes), "{bytes} bytes went to the fast bins: the last change (a value) was taken for a removal");
}

fn tunables_seen() -> Option<String> {
    std::env::var("GLIBC_TUNABLES").ok()
}

/// A child's environment says what its allocator was given, whichever way
/// it started (a fork-server child with environment changes used to lose
/// the variable its server started with).
#[test]
fn every_started_child_sees_the_tunables_it_runs_with() {
    let Some(_serial) = serial_with_default_allocator() else { return };
    let builders = [
        ("spawn", Process::builder().start_method(StartMethod::Spawn)),
        ("fork server", Process::builder().start_method(StartMethod::ForkServer)),
        (
            "fork server, env changed",
            Process::builder().start_method(StartMethod::ForkServer).env("MP_TUNABLES_TEST", "1"),
        ),
    ];
    for (how, builder) in builders {
        let seen = join_or_kill(builder.spawn(tunables_seen, ()).unwrap());
        assert_eq!(seen.as_deref(), Some("glibc.malloc.tcache_count=256"), "{how}");
    }
}
