//! A batch of chunks that Redis refuses halfway is not half queued: the
//! caller's error says nothing was queued, and nothing is.

mod support;

use multiproc_redis::RedisServer;
use support::{pool_at, raw, server, xlen};

fn len(v: Vec<u8>) -> usize {
    v.len()
}

/// Maps `items` one per chunk with no worker running; the call must fail
/// saying nothing was queued, and the task stream must hold nothing (an
/// entry left would run later, for nobody). Returns the error.
fn refused_and_nothing_left(server: &RedisServer, url: &str, prefix: &str, items: Vec<Vec<u8>>) -> String {
    let pool = pool_at(url, prefix).connect().unwrap();
    let err = pool.with_chunksize(1).map(len, items).unwrap_err().to_string();
    assert!(err.contains("none of them was queued"), "{err}");
    let tasks = format!("{prefix}:default:tasks");
    assert_eq!(xlen(&mut raw(server), &tasks), 0, "chunks left queued after the call failed with: {err}");
    err
}

#[test]
fn a_batch_whose_argument_key_is_refused_queues_nothing() {
    let server = server();
    // A user that may write the task stream and read its results, but not
    // the keys of large arguments: the third chunk's argument key is refused.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("noblobs")
        .arg("on")
        .arg(">secret")
        .arg("~half:default:tasks")
        .arg("~half:results:*")
        .arg("+@all")
        .exec(&mut raw(&server))
        .unwrap();
    let url = format!("redis://noblobs:secret@127.0.0.1:{}/", server.port());
    let items = vec![vec![1u8; 10], vec![2u8; 10], vec![3u8; 300 * 1024], vec![4u8; 10]];
    let err = refused_and_nothing_left(&server, &url, "half", items);
    assert!(err.to_lowercase().contains("permission"), "{err}");
}

#[test]
fn a_batch_whose_third_entry_is_refused_queues_nothing() {
    let server = server();
    // A stream two ids short of the last possible one: the third XADD of
    // the batch fails.
    let tasks = "exhausted:default:tasks";
    let mut con = raw(&server);
    let id: String = redis::cmd("XADD").arg(tasks).arg("*").arg("f").arg("v").query(&mut con).unwrap();
    redis::cmd("XDEL").arg(tasks).arg(&id).exec(&mut con).unwrap();
    redis::cmd("XSETID").arg(tasks).arg("18446744073709551615-18446744073709551613").exec(&mut con).unwrap();
    let items = vec![vec![1u8; 10]; 4];
    let err = refused_and_nothing_left(&server, &server.url(), "exhausted", items);
    assert!(err.contains("exhausted"), "{err}");
}

#[test]
fn a_map_larger_than_one_batch_is_queued_in_several_and_comes_back_whole() {
    let server = server();
    let worker = support::local_worker(&server, "several", 2);
    let pool = support::pool(&server, "several").connect().unwrap();
    // 24 MB of arguments kept in the entries (200 KB each): over one batch.
    let items: Vec<Vec<u8>> = (0..120u8).map(|i| vec![i; 200 * 1024 + usize::from(i)]).collect();
    let want: Vec<usize> = items.iter().map(Vec::len).collect();
    assert_eq!(pool.with_chunksize(1).map(len, items).unwrap(), want);
    drop(pool);
    worker.stop();
}
