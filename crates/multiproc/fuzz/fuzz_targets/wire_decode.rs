//! Feeds arbitrary bytes to the frame decoder and to every internal message
//! decoder. Run with `cargo +nightly fuzz run wire_decode` from
//! `crates/multiproc/fuzz`. The same entry point runs on stable in the
//! `wire::frame` unit tests with pseudo-random inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    multiproc::wire::fuzz_decode(data);
});
