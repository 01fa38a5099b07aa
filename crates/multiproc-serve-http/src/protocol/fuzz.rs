//! Entry points for the fuzz targets in `crates/multiproc-serve-http/fuzz`
//! (cargo-fuzz, nightly), also run on stable by the unit tests below with
//! pseudo-random mutations of valid requests.

use super::{ProtocolError, SharedMemoryRef, classify, decode_request, decode_request_with, encode_response};

/// Decodes `data` as a JSON inference request body; if it decodes, encodes
/// its inputs back as a response (JSON and binary). Must never panic.
pub fn json_request(data: &[u8]) {
    check(data, None);
}

/// Decodes `data` as a binary-extension body: the first 2 bytes (LE) are
/// the `Inference-Header-Content-Length`, the rest is the body. Must never
/// panic.
pub fn binary_request(data: &[u8]) {
    if let Some((len, body)) = data.split_first_chunk::<2>() {
        check(body, Some(u64::from(u16::from_le_bytes(*len))));
    }
}

fn check(body: &[u8], header_length: Option<u64>) {
    if let Ok(req) = decode_request(body, header_length) {
        for binary in [false, true] {
            let encoded = encode_response("m", "1", req.id.clone(), req.inputs.clone(), None, binary);
            assert!(encoded.is_ok(), "decoded inputs always encode");
        }
    }
    // With shared memory on (a region of zeros, up to 1 MiB), the inputs
    // classified, and the outputs asked for encoded as asked: errors at
    // most, never a panic.
    let zeros = |at: &SharedMemoryRef| match at.byte_size <= 1 << 20 {
        true => Ok(vec![0; at.byte_size]),
        false => Err(ProtocolError::new("no such region")),
    };
    if let Ok(req) = decode_request_with(body, header_length, Some(&zeros)) {
        for t in &req.inputs {
            for batched in [false, true] {
                let _ = classify(t, 3, batched, &["a".to_string()]);
            }
        }
        let _ = encode_response("m", "1", req.id, req.inputs, req.outputs.as_deref(), req.binary_output_default);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: &[&str] = &[
        r#"{"id":"1","inputs":[{"name":"x","shape":[2,2],"datatype":"FP16","data":[[1,2],[3,4]]}],"outputs":[{"name":"x"}]}"#,
        r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["a","bc"]},{"name":"b","shape":[1],"datatype":"BOOL","data":[true]}]}"#,
        r#"{"parameters":{"binary_data_output":true},"inputs":[{"name":"u","shape":[3],"datatype":"UINT64","data":[0,1,18446744073709551615]}]}"#,
        r#"{"inputs":[{"name":"p","shape":[2,2],"datatype":"FP32","parameters":{"shared_memory_region":"r","shared_memory_byte_size":16,"shared_memory_offset":4}}],"outputs":[{"name":"p","parameters":{"classification":2,"shared_memory_region":"o","shared_memory_byte_size":64}}]}"#,
    ];

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn mutate(seed: &[u8], rng: &mut u64) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + xorshift(rng) % 4 {
            let i = (xorshift(rng) as usize) % v.len().max(1);
            match xorshift(rng) % 4 {
                0 if !v.is_empty() => v[i] = xorshift(rng) as u8,
                1 if !v.is_empty() => {
                    v.remove(i);
                }
                2 => v.insert(i.min(v.len()), b"[]{}\",:0-9e"[(xorshift(rng) % 11) as usize]),
                _ => v.truncate(i),
            }
        }
        v
    }

    #[test]
    fn json_decoder_survives_mutations() {
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let seed = SEEDS[(xorshift(&mut rng) % SEEDS.len() as u64) as usize];
            json_request(&mutate(seed.as_bytes(), &mut rng));
        }
    }

    #[test]
    fn the_shared_memory_seed_reaches_the_shared_memory_and_classification_paths() {
        let zeros = |at: &SharedMemoryRef| Ok(vec![0; at.byte_size]);
        let req = decode_request_with(SEEDS[3].as_bytes(), None, Some(&zeros)).unwrap();
        assert_eq!(req.inputs[0].data(), [0; 16]);
        let out = &req.outputs.unwrap()[0];
        assert_eq!((out.classification, out.shared_memory.as_ref().map(|m| m.byte_size)), (Some(2), Some(64)));
        assert!(decode_request(SEEDS[3].as_bytes(), None).unwrap_err().0.contains("not supported"), "off: refused");
    }

    #[test]
    fn binary_decoder_survives_mutations() {
        let head = r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}},{"name":"f","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let mut valid = (head.len() as u16).to_le_bytes().to_vec();
        valid.extend_from_slice(head.as_bytes());
        valid.extend_from_slice(&[2, 0, 0, 0, b'h', b'i', 1, 0, 0, 0, b'x', 0, 0, 128, 63]);
        let mut rng = 0x2545_f491_4f6c_dd1d;
        binary_request(&valid);
        for _ in 0..20_000 {
            binary_request(&mutate(&valid, &mut rng));
        }
    }

    #[test]
    fn header_lengths_past_what_two_bytes_hold_are_errors_not_panics() {
        let body = br#"{"inputs":[{"name":"f","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
        let n = body.len() as u64;
        for length in [n + 1, u64::from(u16::MAX) + 1, u64::from(u32::MAX) + 1, u64::MAX / 2, u64::MAX] {
            check(body, Some(length));
        }
    }
}
