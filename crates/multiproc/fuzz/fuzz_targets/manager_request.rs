//! Feeds arbitrary bytes to the manager's request and response decoders
//! (what an authenticated but broken or hostile client, or manager, could
//! send). Run with `cargo +nightly fuzz run manager_request` from
//! `crates/multiproc/fuzz`. The same entry point runs on stable in the
//! `manager::test` unit tests with pseudo-random inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    multiproc::manager::fuzz_request(data);
});
