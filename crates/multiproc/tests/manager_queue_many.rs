//! Many items per call on a manager queue: `put_many` puts a batch whole or
//! not at all, in order, with no other client's item between; `get_many`
//! waits for the first item and takes what is there, up to its maximum and
//! to what one answer carries; both locally and over TCP with an auth key.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::{Duration, Instant};

use multiproc::manager::{self, JoinableQueue, Manager, ManagerError, Queue, RemoteError};
use sync_support::{Kid, LONG, PROMPT, until_calls_wait};

const KEY: &[u8] = b"queue many key";

fn remote(e: Result<impl std::fmt::Debug, ManagerError>) -> RemoteError {
    match e {
        Err(ManagerError::Remote(r)) => r,
        other => panic!("expected an error from the manager, got {other:?}"),
    }
}

/// In a child that knows only the address and key: takes batches of at
/// most `max` until it has `n` items; returns them and the batch sizes.
fn take_batches(address: String, key: Vec<u8>, n: usize, max: usize) -> (Vec<u32>, Vec<usize>) {
    let m = Manager::connect(&address, Some(&key)).unwrap();
    let q: Queue<u32> = m.get("q").unwrap();
    let (mut got, mut sizes) = (Vec::new(), Vec::new());
    while got.len() < n {
        let batch = q.get_many_timeout(max, LONG).unwrap();
        sizes.push(batch.len());
        got.extend(batch);
    }
    (got, sizes)
}

#[test]
fn batches_keep_their_order_over_tcp_and_take_at_most_their_maximum() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let q = server.queue::<u32>().unwrap();
    server.publish("q", &q).unwrap();
    q.put_many(0..1000).unwrap();
    assert_eq!(q.qsize().unwrap(), 1000);
    let kid = Kid::spawn(take_batches, (server.address().to_string(), KEY.to_vec(), 1000usize, 300usize));
    let (got, sizes) = kid.join();
    assert_eq!(got, (0..1000).collect::<Vec<_>>(), "every item once, in order");
    assert_eq!(sizes, [300, 300, 300, 100], "all there: full batches, then the rest");
    assert_eq!(remote(q.get_many_nowait(10)), RemoteError::Empty);
    server.shutdown().unwrap();
}

#[test]
fn a_batch_goes_in_whole_or_not_at_all() {
    let m = Manager::start().unwrap();
    let q = m.bounded_queue::<char>(4).unwrap();
    q.put_many_nowait(['a', 'b']).unwrap();
    assert_eq!(remote(q.put_many_nowait(['c', 'd', 'e'])), RemoteError::Full);
    let t = Instant::now();
    assert_eq!(remote(q.put_many_timeout(['c', 'd', 'e'], Duration::from_millis(50))), RemoteError::Timeout);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(
        matches!(remote(q.put_many_timeout(['1', '2', '3', '4', '5'], LONG)), RemoteError::BadRequest(why) if why.contains("never fit"))
    );
    assert_eq!(q.qsize().unwrap(), 2, "nothing of the refused batches went in");

    // A batch waits until there is room for all of it.
    let waiting = {
        let q = q.clone();
        std::thread::spawn(move || q.put_many_timeout(['c', 'd', 'e'], LONG))
    };
    until_calls_wait(&m, 1);
    assert_eq!(q.get_many_nowait(1).unwrap(), ['a']);
    waiting.join().unwrap().unwrap();
    assert_eq!(q.get_many_nowait(10).unwrap(), ['b', 'c', 'd', 'e']);
    m.shutdown().unwrap();
}

/// In a child: waits, then puts a batch.
fn put_later(address: String, key: Vec<u8>) {
    let m = Manager::connect(&address, Some(&key)).unwrap();
    let q: Queue<u32> = m.get("q").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    q.put_many([7, 8, 9]).unwrap();
}

#[test]
fn a_get_many_waits_for_the_first_item_and_takes_what_is_there() {
    let m = Manager::builder().address("tcp:127.0.0.1:0").authkey(KEY).start().unwrap();
    let q = m.queue::<u32>().unwrap();
    m.publish("q", &q).unwrap();
    let t = Instant::now();
    assert_eq!(remote(q.get_many_timeout(5, Duration::from_millis(50))), RemoteError::Timeout);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.get_many_timeout(0, LONG).unwrap(), Vec::<u32>::new(), "a maximum of 0 takes nothing, at once");

    let kid = Kid::spawn(put_later, (m.address().to_string(), KEY.to_vec()));
    let t = Instant::now();
    assert_eq!(q.get_many_timeout(5, LONG).unwrap(), [7, 8, 9], "the whole batch arrives at once");
    assert!(t.elapsed() < PROMPT);
    kid.join();
    m.shutdown().unwrap();
}

#[test]
fn a_closed_queue_gives_what_is_left_then_says_closed() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>().unwrap();
    q.put_many([1, 2]).unwrap();
    q.close().unwrap();
    assert_eq!(remote(q.put_many([3])), RemoteError::Closed);
    assert_eq!(q.get_many_timeout(10, LONG).unwrap(), [1, 2]);
    assert_eq!(remote(q.get_many_timeout(10, LONG)), RemoteError::Closed);
    m.shutdown().unwrap();
}

#[test]
fn a_joinable_queue_counts_every_item_of_a_batch() {
    let m = Manager::start().unwrap();
    let q: JoinableQueue<u32> = m.joinable_queue().unwrap();
    q.put_many([1, 2, 3]).unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 3);
    assert_eq!(q.get_many_nowait(10).unwrap(), [1, 2, 3]);
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert!(q.join_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    q.task_done().unwrap();
    q.join_timeout(LONG).unwrap();
    m.shutdown().unwrap();
}

#[test]
fn a_get_many_takes_only_what_fits_one_answer_and_leaves_the_rest_queued() {
    let m = Manager::start().unwrap();
    let q = m.queue::<serde_bytes::ByteBuf>().unwrap();
    // Five items of 60 MiB (a request carries at most 64): 300 MiB, more
    // than one answer (256 MiB) carries.
    for i in 0..5u8 {
        q.put(serde_bytes::ByteBuf::from(vec![i; 60 << 20])).unwrap();
    }
    let first = q.get_many_nowait(10).unwrap();
    assert_eq!(first.len(), 4, "four fit one answer");
    let rest = q.get_many_nowait(10).unwrap();
    assert_eq!(rest.len(), 1, "the fifth waited for the next call");
    for (i, item) in first.iter().chain(&rest).enumerate() {
        assert!(item.len() == 60 << 20 && item.iter().all(|&b| b == i as u8), "item {i} whole");
    }
    m.shutdown().unwrap();
}
