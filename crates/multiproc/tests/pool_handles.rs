//! Handles as task arguments: a Pipe end, an Event and a Queue passed to a
//! task work in the worker (Python needs a Manager for the queue).

mod pool_support;

use std::time::Duration;

use multiproc::{Connection, Event, Pipe, Pool, Queue};
use pool_support::WAIT;

fn reply_on(conn: Connection<String>, text: String) -> usize {
    conn.send(&text.to_uppercase()).unwrap();
    text.len()
}

fn wait_then_report(ev: Event, conn: Connection<String>) -> bool {
    let ok = ev.wait_timeout(Duration::from_secs(20));
    conn.send(&format!("event seen: {ok}")).unwrap();
    ok
}

#[test]
fn a_pipe_end_passed_to_apply_async_works_in_the_worker() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let mut r = pool.apply_async(reply_on, (theirs, "hello".to_string()));
    assert_eq!(ours.recv_timeout(WAIT).unwrap(), "HELLO");
    assert_eq!(r.get_timeout(WAIT).unwrap(), 5);
    // Many tasks, each with its own pipe end, in one map.
    let mut ends = Vec::new();
    let mut args = Vec::new();
    for i in 0..100 {
        let (a, b) = Pipe::<String>::duplex().unwrap();
        ends.push(a);
        args.push((b, format!("m{i}")));
    }
    let lens = pool.with_chunksize(100).starmap(reply_on, args).unwrap();
    assert_eq!(lens.len(), 100);
    for (i, end) in ends.iter().enumerate() {
        assert_eq!(end.recv_timeout(WAIT).unwrap(), format!("M{i}"));
    }
}

#[test]
fn an_event_passed_to_a_task_is_the_same_event() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(1).unwrap();
    let ev = Event::new().unwrap();
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let mut r = pool.apply_async(wait_then_report, (ev.clone(), theirs));
    std::thread::sleep(Duration::from_millis(100));
    ev.set();
    assert_eq!(ours.recv_timeout(WAIT).unwrap(), "event seen: true");
    assert!(r.get_timeout(WAIT).unwrap());
}

fn produce(q: Queue<(u64, u64)>, who: u64) -> u64 {
    for k in 0..50 {
        q.put((who, k)).unwrap();
    }
    50
}

#[test]
fn pool_workers_share_a_plain_queue() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let q = Queue::<(u64, u64)>::new().unwrap();
    let jobs: Vec<_> = (0..4u64).map(|who| pool.apply_async(produce, (q.clone(), who))).collect();
    let mut got = Vec::new();
    for _ in 0..200 {
        got.push(q.get_timeout(WAIT).unwrap());
    }
    for mut j in jobs {
        assert_eq!(j.get_timeout(WAIT).unwrap(), 50);
    }
    got.sort_unstable();
    let want: Vec<(u64, u64)> = (0..4).flat_map(|w| (0..50).map(move |k| (w, k))).collect();
    assert_eq!(got, want);
}
