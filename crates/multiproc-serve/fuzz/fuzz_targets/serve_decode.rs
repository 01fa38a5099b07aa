//! Feeds arbitrary bytes to the external-command frame decoder and the
//! tensor decoders. Run with `cargo +nightly fuzz run serve_decode` from
//! `crates/multiproc-serve/fuzz`. The same entry point runs on stable in the
//! crate's `fuzz_tests` unit test with mutated inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    multiproc_serve::fuzz_decode(data);
});
