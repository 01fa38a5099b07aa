//! Feeds arbitrary bytes, as the fields of a stream entry, to every decoder
//! of `multiproc_redis::schema` (task, result, argument blob, MAC check).
//! Run with `cargo +nightly fuzz run entry_decode` from
//! `crates/multiproc-redis/fuzz`. The schema's unit tests run the same
//! decoders on stable with pseudo-random inputs.
#![no_main]

use multiproc_redis::schema;
use redis::Value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (version, message) = data.split_at(data.len().min(1));
    let fields = vec![
        ("v".to_string(), Value::BulkString(version.to_vec())),
        ("m".to_string(), Value::BulkString(message.to_vec())),
        ("mac".to_string(), Value::BulkString(data.to_vec())),
    ];
    let _ = schema::decode_task(&fields);
    let _ = schema::decode_result(&fields);
    let _ = schema::decode_blob(data);
    let _ = schema::verify_mac(&fields, b"key");
});
