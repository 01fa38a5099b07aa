//! The dead-letter stream: a poisoned task after N deliveries, a task of
//! another build (refused, and the caller told), garbage entries (skipped,
//! logged, kept for inspection).

mod support;

use std::time::Duration;

use multiproc_redis::TaskFailure;
use multiproc_redis::schema::{self, Args, Keys, Outcome, TaskMsg};
use support::{entries, local_worker, pool, raw, server};

fn poison(_: u64) -> u64 {
    std::process::abort()
}

fn square(x: u64) -> u64 {
    x * x
}

fn reason(fields: &[(String, redis::Value)]) -> String {
    String::from_utf8_lossy(schema::bytes_field(fields, schema::field::REASON).unwrap()).into_owned()
}

#[test]
fn a_poisoned_task_is_dead_lettered_after_n_deliveries() {
    let server = server();
    let _w = local_worker(&server, "poison", 2);
    let pool = pool(&server, "poison").retries(2).connect().unwrap();
    let err = pool.apply(poison, (1,)).unwrap_err();
    assert!(matches!(err.task_failure(), Some(TaskFailure::DeadLettered { attempts: 3, .. })), "{err}");
    assert!(err.to_string().contains("SIGABRT"), "{err}");

    let mut con = raw(&server);
    let dead = entries(&mut con, &Keys::new("poison", "default").dead_letters());
    assert_eq!(dead.len(), 1);
    assert!(reason(&dead[0].1).contains("3 deliveries"), "{}", reason(&dead[0].1));
    let m = schema::bytes_field(&dead[0].1, schema::field::MESSAGE).unwrap();
    let msg: TaskMsg = postcard::from_bytes(m).unwrap();
    assert!(msg.function.ends_with("poison"), "{}", msg.function);
    assert_eq!(msg.attempt, 3);
    // The other work goes on, and the task stream is empty.
    assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
    let len: i64 = redis::cmd("XLEN").arg("poison:default:tasks").query(&mut con).unwrap();
    assert_eq!(len, 0);
}

fn poison_large(_: Vec<u8>) -> u64 {
    std::process::abort()
}

#[test]
fn a_dead_lettered_task_with_a_large_argument_keeps_a_bounded_entry() {
    let server = server();
    let _w = local_worker(&server, "poisonlarge", 1);
    let pool = pool(&server, "poisonlarge").connect().unwrap();
    // Under `BLOB_THRESHOLD`: the argument stays in the task entry.
    let large = vec![1u8; 200 << 10];
    let err = pool.with_retries(0).apply(poison_large, (large,)).unwrap_err();
    assert!(matches!(err.task_failure(), Some(TaskFailure::DeadLettered { attempts: 1, .. })), "{err}");

    let mut con = raw(&server);
    let dead = entries(&mut con, &Keys::new("poisonlarge", "default").dead_letters());
    assert_eq!(dead.len(), 1);
    let fields = &dead[0].1;
    assert!(schema::bytes_field(fields, schema::field::MESSAGE).is_err(), "the whole task was kept");
    let head = schema::bytes_field(fields, schema::field::HEAD).unwrap();
    assert_eq!(head.len(), schema::DEAD_LETTER_MESSAGE_MAX);
    // The head names the task (the function's name precedes its arguments).
    assert!(String::from_utf8_lossy(head).contains("poison_large"));
    let size: usize =
        std::str::from_utf8(schema::bytes_field(fields, schema::field::SIZE).unwrap()).unwrap().parse().unwrap();
    assert!(size > 200 << 10, "size {size}");
    let value_len = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => b.len(),
        other => panic!("a field that is not bytes: {other:?}"),
    };
    let stored: usize = fields.iter().map(|(k, v)| k.len() + value_len(v)).sum();
    assert!(stored < 9 << 10, "the dead letter holds {stored} bytes");
}

#[test]
fn a_task_of_another_build_is_refused() {
    let server = server();
    let _w = local_worker(&server, "build", 1);
    let keys = Keys::new("build", "default");
    let mut con = raw(&server);
    let msg = TaskMsg {
        build_id: "0123456789abcdef-another-build".into(),
        function: "their_crate::square".into(),
        remote: multiproc::RemoteFn::of::<_, (u64,), u64>(square),
        caller: "them".into(),
        task: 7,
        attempt: 1,
        max_attempts: 3,
        timeout_ms: None,
        result_ttl_ms: 60_000,
        last_error: None,
        args: Args::Inline(vec![serde_bytes::ByteBuf::from(postcard::to_allocvec(&(3u64,)).unwrap())]),
    };
    let fields = schema::task_fields(&msg, &schema::default_key());
    let _: String = redis::cmd("XADD").arg(keys.tasks()).arg("*").arg(&fields[..]).query(&mut con).unwrap();

    let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(30_000)
        .arg("STREAMS")
        .arg(keys.results("them"))
        .arg("0-0")
        .query(&mut con)
        .unwrap();
    let entry = reply.expect("no result within 30 s").keys.remove(0).ids.remove(0);
    let result = schema::decode_result(&schema::entry_fields(entry.map)).unwrap();
    assert_eq!(result.results.len(), 1);
    assert_eq!(result.results[0].task, 7);
    let Outcome::Failed(TaskFailure::Refused { worker_build, task_build }) = &result.results[0].outcome else {
        panic!("not refused: {:?}", result.results[0].outcome)
    };
    assert_eq!(worker_build, multiproc::build_id());
    assert_eq!(task_build, "0123456789abcdef-another-build");
    let text = TaskFailure::Refused { worker_build: worker_build.clone(), task_build: task_build.clone() }.to_string();
    assert!(text.contains("another build"), "{text}");

    assert!(support::eventually(Duration::from_secs(10), || entries(&mut con, &keys.dead_letters()).len() == 1));
    assert!(reason(&entries(&mut con, &keys.dead_letters())[0].1).contains("another build"));
}

#[test]
fn garbage_entries_are_skipped_and_logged() {
    let server = server();
    let keys = Keys::new("junk", "default");
    let mut con = raw(&server);
    let _w = local_worker(&server, "junk", 1);
    let xadd = |con: &mut redis::Connection, fields: &[(&str, &[u8])]| {
        let _: String = redis::cmd("XADD").arg(keys.tasks()).arg("*").arg(fields).query(con).unwrap();
    };
    xadd(&mut con, &[("hello", b"world")]);
    xadd(&mut con, &[("v", b"1"), ("m", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage"), ("mac", b"x")]);
    xadd(&mut con, &[("v", b"999"), ("m", b"")]);
    // A well-formed task signed with the wrong key.
    let msg = TaskMsg {
        build_id: multiproc::build_id().into(),
        function: "square".into(),
        remote: multiproc::RemoteFn::of::<_, (u64,), u64>(square),
        caller: "c".into(),
        task: 1,
        attempt: 1,
        max_attempts: 1,
        timeout_ms: None,
        result_ttl_ms: 60_000,
        last_error: None,
        args: Args::Inline(vec![]),
    };
    let forged = schema::task_fields(&msg, b"not the key");
    let forged: Vec<(&str, &[u8])> = forged.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    xadd(&mut con, &forged);

    // Real work still runs.
    let pool = pool(&server, "junk").connect().unwrap();
    assert_eq!(pool.map(square, 0..20u64).unwrap(), (0..20u64).map(square).collect::<Vec<_>>());

    assert!(support::eventually(Duration::from_secs(10), || entries(&mut con, &keys.dead_letters()).len() == 4));
    let reasons: Vec<String> = entries(&mut con, &keys.dead_letters()).iter().map(|(_, f)| reason(f)).collect();
    assert!(reasons[0].contains("no byte field \"v\""), "{reasons:?}");
    assert!(reasons[1].contains("does not decode"), "{reasons:?}");
    assert!(reasons[2].contains("schema version"), "{reasons:?}");
    assert!(reasons[3].contains("MAC does not match") && reasons[3].contains("same auth key"), "{reasons:?}");
    // None of them ran or stayed: the task stream is empty, nothing pending.
    let len: i64 = redis::cmd("XLEN").arg(keys.tasks()).query(&mut con).unwrap();
    assert_eq!(len, 0);
    // The caller of the task with the wrong key is told (it would wait
    // otherwise); the garbage has no caller to tell.
    let told = entries(&mut con, &keys.results("c"));
    assert_eq!(told.len(), 1);
    let result = schema::decode_result(&told[0].1).unwrap();
    assert_eq!(result.results[0].outcome, Outcome::Failed(TaskFailure::WrongKey));
}

/// An entry with a field name that is not UTF-8 (any client may write one).
fn xadd_non_utf8(con: &mut redis::Connection, key: &str) {
    let _: String = redis::cmd("XADD").arg(key).arg("*").arg(&b"\xff\xfe"[..]).arg("x").query(con).unwrap();
}

#[test]
fn a_task_entry_with_a_non_utf8_field_name_is_dead_lettered_and_blocks_nothing() {
    let server = server();
    let keys = Keys::new("bytes", "default");
    let mut con = raw(&server);
    xadd_non_utf8(&mut con, &keys.tasks());
    let pool = pool(&server, "bytes").wait_timeout(Duration::from_secs(20)).connect().unwrap();
    let call = pool.with_chunksize(1).map_async(square, 0..8u64);
    let xlen = |con: &mut redis::Connection, key: &str| redis::cmd("XLEN").arg(key).query::<i64>(con).unwrap();
    assert!(support::eventually(Duration::from_secs(10), || xlen(&mut con, &keys.tasks()) == 9));
    // The host's first read holds the garbage and real tasks together.
    let _w = local_worker(&server, "bytes", 1);
    assert_eq!(call.get().unwrap(), (0..8u64).map(square).collect::<Vec<_>>());
    assert!(support::eventually(Duration::from_secs(10), || entries(&mut con, &keys.dead_letters()).len() == 1));
    assert!(reason(&entries(&mut con, &keys.dead_letters())[0].1).contains("no byte field"));
    assert!(support::eventually(Duration::from_secs(10), || xlen(&mut con, &keys.tasks()) == 0));
}

#[test]
fn a_result_entry_with_a_non_utf8_field_name_is_skipped() {
    let server = server();
    let _w = local_worker(&server, "rbytes", 1);
    let pool = pool(&server, "rbytes").wait_timeout(Duration::from_secs(20)).connect().unwrap();
    let mut con = raw(&server);
    xadd_non_utf8(&mut con, &Keys::new("rbytes", "default").results(pool.caller_id()));
    assert_eq!(pool.map(square, 0..8u64).unwrap(), (0..8u64).map(square).collect::<Vec<_>>());
    assert_eq!(pool.apply(square, (5,)).unwrap(), 25);
}
