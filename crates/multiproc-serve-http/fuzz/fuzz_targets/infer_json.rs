//! Feeds arbitrary bytes to the inference request decoder as a JSON body
//! (and encodes whatever decodes). Run with `cargo +nightly fuzz run
//! infer_json` from `crates/multiproc-serve-http/fuzz`. The same entry point
//! runs on stable in the `protocol::fuzz` unit tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    multiproc_serve_http::protocol::fuzz::json_request(data);
});
