//! A `JoinableQueue` whose producers or consumers are SIGKILLed: a producer
//! killed in the middle of `put` leaves at most its one task unfinished (only
//! a kill in the narrow window between counting the task and claiming the
//! item's place leaves it; otherwise it is given back with its slot), and a
//! consumer killed
//! after `get` but before `task_done` leaves `join_timeout` returning on
//! time with the task it owed counted as unfinished; one killed in the middle
//! of a large `get` owes at most that one task.

mod queue_support;

use std::time::{Duration, Instant};

use multiproc::{GetError, JoinableQueue, Process, Queue};
use queue_support::{Child, LONG, SLACK, jitter};
use serde_bytes::ByteBuf;

/// Puts items of `size` bytes for ever (until killed).
fn flood(q: JoinableQueue<ByteBuf>, size: usize) {
    loop {
        q.put(ByteBuf::from(vec![7u8; size])).unwrap();
    }
}

#[test]
fn a_producer_killed_mid_put_leaves_join_nothing_to_wait_for() {
    for (size, bounded) in [(1 << 20, false), (60 << 10, false), (60 << 10, true), (16, true)] {
        for round in 0..6 {
            let q = if bounded { JoinableQueue::bounded(4).unwrap() } else { JoinableQueue::new().unwrap() };
            let mut producer = Child(Process::spawn(flood, (q.clone(), size)).unwrap());
            // Take the first item, so the producer is well into its puts.
            let first = q.get_timeout(LONG).unwrap();
            assert_eq!(first.len(), size);
            q.task_done().unwrap();
            std::thread::sleep(jitter(round, 2000));
            producer.0.kill().unwrap();
            let _ = producer.0.join_timeout(LONG);
            loop {
                match q.get_timeout(Duration::from_millis(100)) {
                    Ok(item) => {
                        assert_eq!(item.len(), size);
                        q.task_done().unwrap();
                    }
                    Err(GetError::Timeout) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            // The kill may land in the put's window between counting the task
            // and claiming the item's place (documented on `JoinableQueue`):
            // that one task stays, never more.
            let left = q.unfinished_tasks();
            let what = format!("size {size}, bounded {bounded}, round {round}");
            assert!(left <= 1, "{what}: {left} tasks unfinished after one killed producer");
            // Still usable; a claim the dead producer left half made is given
            // back by this put.
            q.put(ByteBuf::from(vec![1u8; size])).unwrap();
            assert_eq!(q.get_timeout(LONG).unwrap().len(), size);
            q.task_done().unwrap();
            let after = q.unfinished_tasks();
            assert!(after <= left, "{what}: {after} tasks unfinished after a put and its task_done ({left} before)");
            if after == 0 {
                let t = Instant::now();
                assert!(q.join_timeout(SLACK).is_ok(), "{what}: {} tasks unfinished", q.unfinished_tasks());
                assert!(t.elapsed() < SLACK);
            }
        }
    }
}

/// Gets one item, says so, and never marks it done.
fn get_and_hang(q: JoinableQueue<u32>, said: Queue<u32>) {
    let item = q.get_timeout(LONG).unwrap();
    said.put(item).unwrap();
    std::thread::sleep(LONG);
}

#[test]
fn a_consumer_killed_before_task_done_leaves_join_timeout_on_time() {
    let q = JoinableQueue::new().unwrap();
    let said = Queue::new().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let mut consumer = Child(Process::spawn(get_and_hang, (q.clone(), said.clone())).unwrap());
    assert_eq!(said.get_timeout(LONG).unwrap(), 1);
    consumer.0.kill().unwrap();
    let _ = consumer.0.join_timeout(LONG);
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    q.task_done().unwrap();
    let limit = Duration::from_millis(300);
    let t = Instant::now();
    let err = q.join_timeout(limit).unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.unfinished, 1, "the dead consumer's task");
    assert!(took >= limit && took < limit + SLACK, "join_timeout took {took:?}");
    // Whoever takes over the dead consumer's work marks it done.
    q.task_done().unwrap();
    q.join_timeout(SLACK).unwrap();
}

/// Gets items and marks each done, for ever (until killed).
fn drink(q: JoinableQueue<ByteBuf>) {
    loop {
        if q.get_timeout(LONG).is_ok() {
            q.task_done().unwrap();
        }
    }
}

/// A consumer killed while it gets (and copies out) 1 MiB items takes at most
/// the one item it held with it: the others arrive whole, and `join` waits
/// for that one task only (as in Python, where a taken item is the taker's
/// to mark done), which whoever takes over its work can mark done.
#[test]
fn a_consumer_killed_mid_get_owes_at_most_its_one_task() {
    let size = 1 << 20;
    let q = JoinableQueue::new().unwrap();
    for round in 0..8 {
        for _ in 0..20 {
            q.put(ByteBuf::from(vec![3u8; size])).unwrap();
        }
        let mut consumer = Child(Process::spawn(drink, (q.clone(),)).unwrap());
        std::thread::sleep(Duration::from_millis(5) + jitter(round, 5000));
        consumer.0.kill().unwrap();
        let _ = consumer.0.join_timeout(LONG);
        while let Ok(item) = q.get_timeout(Duration::from_millis(50)) {
            assert_eq!(item.len(), size);
            q.task_done().unwrap();
        }
        let owed = q.unfinished_tasks();
        assert!(owed <= 1, "round {round}: {owed} tasks unfinished after one consumer died");
        if owed == 1 {
            assert_eq!(q.join_timeout(Duration::from_millis(50)).unwrap_err().unfinished, 1);
            q.task_done().unwrap();
        }
        q.join_timeout(SLACK).unwrap();
    }
}
