use redis::Value;

use super::*;

fn fields(pairs: &[(&str, &[u8])]) -> Vec<(String, Value)> {
    pairs.iter().map(|(k, v)| (k.to_string(), Value::BulkString(v.to_vec()))).collect()
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    for len in 0..400usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let f = fields(&[("v", b"1"), ("m", &bytes), ("mac", &bytes)]);
        let _ = decode_task(&f);
        let _ = decode_result(&f);
        let _ = decode_blob(&bytes);
        assert!(verify_mac(&f, b"k").is_err());
    }
}

#[test]
fn wrong_version_and_missing_fields_are_errors() {
    assert_eq!(decode_task(&fields(&[("v", b"9"), ("m", b"")])), Err(EntryError::Version { found: "9".into() }));
    assert_eq!(decode_task(&fields(&[("m", b"")])), Err(EntryError::MissingField("v")));
    assert_eq!(decode_result(&fields(&[("v", b"1")])), Err(EntryError::MissingField("m")));
}

#[test]
fn a_result_entry_decodes_as_a_result_message() {
    let results = vec![
        ChunkResult {
            task: 3,
            outcome: Outcome::Items(vec![
                Ok(ByteBuf::from(vec![1, 2])),
                Err(TaskFailure::Timeout(std::time::Duration::from_millis(5))),
            ]),
        },
        ChunkResult { task: 4, outcome: Outcome::Failed(TaskFailure::ArgumentsLost("k".into())) },
    ];
    let fields: Vec<(String, Value)> =
        result_fields(&results).into_iter().map(|(k, v)| (k.to_string(), Value::BulkString(v))).collect();
    assert_eq!(decode_result(&fields).unwrap(), ResultMsg { results });
}

#[test]
fn stream_replies_of_both_protocols_read_with_any_field_names() {
    let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
    let entry = Value::Array(vec![bulk(b"1-0"), Value::Array(vec![bulk(b"\xff"), bulk(b"x"), bulk(b"v"), bulk(b"1")])]);
    let want =
        vec![StreamEntry { id: "1-0".into(), fields: vec![("\u{fffd}".into(), bulk(b"x")), ("v".into(), bulk(b"1"))] }];
    let resp2 = Value::Array(vec![Value::Array(vec![bulk(b"s"), Value::Array(vec![entry.clone()])])]);
    assert_eq!(read_reply(resp2).unwrap(), want);
    let resp3 = Value::Map(vec![(bulk(b"s"), Value::Array(vec![entry.clone()]))]);
    assert_eq!(read_reply(resp3).unwrap(), want);
    assert_eq!(read_reply(Value::Nil).unwrap(), vec![]);
    let cursor = "5-0".to_string();
    let claimed = Value::Array(vec![bulk(b"5-0"), Value::Array(vec![entry]), Value::Array(vec![bulk(b"2-0")])]);
    assert_eq!(autoclaim_reply(claimed).unwrap(), Autoclaim { cursor, claimed: want, deleted: vec!["2-0".into()] });
    assert!(autoclaim_reply(Value::Array(vec![])).is_err());
    assert!(read_reply(Value::Int(3)).is_err());
    assert!(autoclaim_reply(Value::Array(vec![bulk(b"0-0"), Value::Int(1)])).is_err());
}

#[test]
fn a_dead_letter_reason_is_cut_at_a_character_boundary() {
    assert_eq!(dead_letter_reason("short"), "short");
    // Two-byte characters: the cut cannot fall inside one.
    let long = "é".repeat(DEAD_LETTER_REASON_MAX);
    let cut = dead_letter_reason(&long);
    assert_eq!(cut.len(), DEAD_LETTER_REASON_MAX);
    let odd = format!("x{long}");
    assert_eq!(dead_letter_reason(&odd).len(), DEAD_LETTER_REASON_MAX - 1);
}
