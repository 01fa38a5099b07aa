//! Nothing grows without bound: a caller's results stream and its argument
//! keys carry an expiry, a batch's key is deleted once it is of no use, a dropped pool deletes its results stream, a
//! caller killed with SIGKILL leaves only keys that expire (besides the
//! queue's task and dead-letter streams), and the dead-letter stream stays
//! capped.

mod support;

use std::time::Duration;

use multiproc::{Process, StartMethod};
use multiproc_redis::RedisPool;
use multiproc_redis::schema::{self, Keys};
use support::{HostGuard, eventually, local_worker, pool, raw, server};

/// The results time to live the tests set (not the default of an hour, so
/// the expiry seen is the one the caller asked for).
const TTL: Duration = Duration::from_secs(600);

/// An argument this size travels in a key of its own (over
/// `schema::BLOB_THRESHOLD`).
const LARGE: usize = 300 << 10;

fn len(v: Vec<u8>) -> usize {
    v.len()
}

/// The remaining time to live of `key` in milliseconds: -2 if there is no
/// such key, -1 if it has no expiry.
fn pttl(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(con).unwrap()
}

/// The keys matching `pattern`.
fn keys(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(pattern).query(con).unwrap()
}

/// Asserts that `key` exists and expires within [`TTL`].
fn assert_expires(con: &mut redis::Connection, key: &str) {
    let ttl = pttl(con, key);
    assert!(ttl > 0 && ttl <= TTL.as_millis() as i64, "{key} has PTTL {ttl}");
}

#[test]
fn a_calls_keys_expire_and_a_dropped_pool_deletes_its_results() {
    let server = server();
    let mut con = raw(&server);
    let pool = pool(&server, "expiry").result_ttl(TTL).connect().unwrap();
    let keys_of = Keys::new("expiry", "default");
    let results = keys_of.results(pool.caller_id());
    // No host runs yet: the argument key waits in Redis.
    let mut call = pool.with_chunksize(1).map_async(len, vec![vec![1u8; LARGE], vec![2u8; 10]]);
    let blob_pattern = format!("expiry:default:blob:{}:*", pool.caller_id());
    assert!(eventually(Duration::from_secs(10), || keys(&mut con, &blob_pattern).len() == 1), "no argument key");
    let blob = keys(&mut con, &blob_pattern).remove(0);
    assert_expires(&mut con, &blob);

    let worker = local_worker(&server, "expiry", 1);
    assert_eq!(call.get_timeout(Duration::from_secs(30)).unwrap(), [LARGE, 10]);
    // The caller read and deleted its results; the stream stays, expiring.
    assert_expires(&mut con, &results);
    // The argument key of a finished chunk is deleted.
    assert!(eventually(Duration::from_secs(10), || pttl(&mut con, &blob) == -2), "{blob} is still there");
    worker.stop();

    drop(pool);
    assert_eq!(pttl(&mut con, &results), -2, "the dropped pool's results stream is still there");
}

fn double(x: u64) -> u64 {
    2 * x
}

#[test]
fn the_key_of_a_batch_answered_at_once_is_deleted_by_the_next_batch() {
    let server = server();
    let mut con = raw(&server);
    let pool = pool(&server, "batches").result_ttl(TTL).connect().unwrap();
    let worker = local_worker(&server, "batches", 1);
    for x in 0..20u64 {
        assert_eq!(pool.apply(double, (x,)).unwrap(), 2 * x);
    }
    // Each call is a batch with a key that makes its script's second run
    // queue nothing; answered at the first try, it is of no more use.
    let left = keys(&mut con, &format!("batches:default:batch:{}:*", pool.caller_id()));
    assert_eq!(left.len(), 1, "the keys of answered batches stay: {left:?}");
    assert_expires(&mut con, &left[0]);
    worker.stop();
}

/// The body of a caller process: queues a chunk with a large argument and
/// one with a small one, then waits to be killed.
fn caller_main(url: String) {
    let pool = RedisPool::builder(&url).prefix("sigkill").result_ttl(TTL).connect().unwrap();
    let _call = pool.with_chunksize(1).map_async(len, vec![vec![1u8; LARGE], vec![2u8; 10]]);
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_caller_leaves_only_keys_that_expire() {
    let server = server();
    let mut con = raw(&server);
    let keys_of = Keys::new("sigkill", "default");
    let child =
        Process::builder().start_method(StartMethod::Spawn).name("caller").spawn(caller_main, (server.url(),)).unwrap();
    let mut caller = HostGuard(Some(child));
    let xlen = |con: &mut redis::Connection| redis::cmd("XLEN").arg(keys_of.tasks()).query::<i64>(con).unwrap();
    assert!(eventually(Duration::from_secs(30), || xlen(&mut con) == 2), "the caller queued nothing");
    caller.kill();

    // A host runs the dead caller's chunks and writes their results.
    let worker = local_worker(&server, "sigkill", 1);
    assert!(eventually(Duration::from_secs(30), || xlen(&mut con) == 0), "the chunks did not run");
    worker.stop();

    let long_lived = [keys_of.tasks(), keys_of.dead_letters()];
    let left = keys(&mut con, "*");
    let results = left.iter().filter(|k| k.starts_with("sigkill:results:")).count();
    let blobs = left.iter().filter(|k| k.starts_with("sigkill:default:blob:")).count();
    assert_eq!((results, blobs), (1, 1), "{left:?}");
    for key in left.iter().filter(|k| !long_lived.contains(k)) {
        assert_expires(&mut con, key);
    }
}

#[test]
fn the_dead_letter_stream_stays_capped() {
    let server = server();
    let mut con = raw(&server);
    let keys_of = Keys::new("capped", "default");
    let cap = schema::DEAD_LETTER_MAXLEN;
    let mut fill = redis::pipe();
    for _ in 0..cap + 500 {
        fill.cmd("XADD").arg(keys_of.dead_letters()).arg("*").arg("reason").arg("filler").ignore();
    }
    fill.exec(&mut con).unwrap();
    let garbage: String =
        redis::cmd("XADD").arg(keys_of.tasks()).arg("*").arg("hello").arg("world").query(&mut con).unwrap();

    let _worker = local_worker(&server, "capped", 1);
    let last_dead_id = |con: &mut redis::Connection| -> Option<Vec<u8>> {
        let r: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(keys_of.dead_letters())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(con)
            .unwrap();
        let fields = schema::entry_fields(r.ids.into_iter().next()?.map);
        schema::bytes_field(&fields, schema::field::ID).ok().map(<[u8]>::to_vec)
    };
    let buried = eventually(Duration::from_secs(30), || last_dead_id(&mut con).as_deref() == Some(garbage.as_bytes()));
    assert!(buried, "the garbage entry was not dead-lettered");
    // `MAXLEN ~` trims whole stream nodes (100 entries by default), never
    // below the cap.
    let len: usize = redis::cmd("XLEN").arg(keys_of.dead_letters()).query(&mut con).unwrap();
    assert!((cap..=cap + 100).contains(&len), "the dead-letter stream holds {len} entries");
}
