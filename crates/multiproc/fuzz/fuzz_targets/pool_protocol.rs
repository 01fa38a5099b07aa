//! Feeds arbitrary bytes to the pool protocol's record decoders (both
//! directions) and looks up every slab and ring position they name, as a
//! worker or the scheduler would. Run with `cargo +nightly fuzz run
//! pool_protocol` from `crates/multiproc/fuzz`. The same entry point runs on
//! stable in the `pool::protocol` unit tests with pseudo-random inputs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    multiproc::pool::fuzz_protocol(data);
});
