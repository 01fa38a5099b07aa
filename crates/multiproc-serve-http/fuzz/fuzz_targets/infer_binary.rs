//! Feeds arbitrary bytes to the inference request decoder as a body with
//! Triton's binary tensors (the first 2 bytes give the
//! Inference-Header-Content-Length). Run with `cargo +nightly fuzz run
//! infer_binary` from `crates/multiproc-serve-http/fuzz`. The same entry
//! point runs on stable in the `protocol::fuzz` unit tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    multiproc_serve_http::protocol::fuzz::binary_request(data);
});
