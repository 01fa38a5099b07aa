//! Feeds arbitrary bytes to the queue's slot decoder (a slot's kind, length,
//! data and stamp, as another process may have written them) and to the
//! geometry check. Run with `cargo +nightly fuzz run queue_slot` from
//! `crates/multiproc/fuzz`. The same entry point runs on stable in the
//! `queue::ring` unit tests with pseudo-random inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    multiproc::queue::fuzz_slot_decode(data);
});
