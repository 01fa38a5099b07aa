//! A `JoinableQueue` whose producers or consumers are SIGKILLed: a producer
//! killed at any point of `put` leaves no task unfinished once the items it
//! did put are done (its item is in the queue with its task, or neither is),
//! and a consumer killed after `get` but before `task_done` leaves
//! `join_timeout` returning on time with the task it owed counted as
//! unfinished; one killed in the middle of a large `get` owes at most that
//! one task.

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

/// A queue a producer floods, and how often it is killed.
struct Case {
    size: usize,
    bounded: bool,
    /// Slots per segment (`None`: the default).
    segment_slots: Option<usize>,
    rounds: u32,
}

impl Case {
    fn queue(&self) -> JoinableQueue<ByteBuf> {
        let mut b = Queue::<ByteBuf>::builder();
        if self.bounded {
            b = b.maxsize(4);
        }
        if let Some(slots) = self.segment_slots {
            b = b.segment_slots(slots);
        }
        b.build_joinable().unwrap()
    }
}

const CASES: [Case; 5] = [
    // Large items: the kill mostly lands while the blob is written.
    Case { size: 1 << 20, bounded: false, segment_slots: None, rounds: 6 },
    // Arena items: a segment's arena fills every 16 items, then the put
    // seals it and prepares the next one.
    Case { size: 60 << 10, bounded: false, segment_slots: None, rounds: 10 },
    Case { size: 60 << 10, bounded: true, segment_slots: None, rounds: 6 },
    Case { size: 16, bounded: true, segment_slots: None, rounds: 6 },
    // Two slots a segment: nearly every put seals a segment and prepares the
    // next (the frame lock, retiring frames, mapping a new one), the longest
    // stretch of a put between taking its permit and claiming its slot.
    Case { size: 16, bounded: false, segment_slots: Some(2), rounds: 60 },
];

#[test]
fn a_producer_killed_mid_put_leaves_join_nothing_to_wait_for() {
    for case in &CASES {
        let size = case.size;
        for round in 0..case.rounds {
            let what = format!("size {size}, bounded {}, slots {:?}, round {round}", case.bounded, case.segment_slots);
            let q = case.queue();
            let mut producer = Child(Process::spawn(flood, (q.clone(), size)).unwrap());
            // Take items while the producer puts, and kill it at a random point
            // of a put.
            let until = Instant::now() + Duration::from_millis(1) + jitter(round, 3000);
            loop {
                let item = q.get_timeout(LONG).unwrap();
                assert_eq!(item.len(), size, "{what}");
                q.task_done().unwrap();
                if Instant::now() >= until {
                    break;
                }
            }
            producer.0.kill().unwrap();
            let _ = producer.0.join_timeout(LONG);
            loop {
                match q.get_timeout(Duration::from_millis(100)) {
                    Ok(item) => {
                        assert_eq!(item.len(), size, "{what}");
                        q.task_done().unwrap();
                    }
                    Err(GetError::Timeout) => break,
                    Err(e) => panic!("{what}: {e}"),
                }
            }
            // Wherever the kill landed, the killed put either queued its item
            // (got and done above) or left no task.
            let left = q.unfinished_tasks();
            assert_eq!(left, 0, "{what}: {left} tasks unfinished after one killed producer");
            let t = Instant::now();
            assert!(q.join_timeout(SLACK).is_ok(), "{what}: {} tasks unfinished", q.unfinished_tasks());
            assert!(t.elapsed() < SLACK);
            // Still usable; a claim the dead producer left half made is given
            // back by this put.
            q.put(ByteBuf::from(vec![1u8; size])).unwrap();
            assert_eq!(q.get_timeout(LONG).unwrap().len(), size);
            q.task_done().unwrap();
            assert_eq!(q.unfinished_tasks(), 0, "{what}: after a put and its task_done");
            q.join_timeout(SLACK).unwrap();
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
        // An item the consumer died taking (its get not returned) owes no
        // task: a join gives that task back, here one that gives up at once.
        // Only then does the count hold just what is owed (it failed under
        // load: a join that was to find the owed task found the one of an
        // item being taken, given back meanwhile).
        let _ = q.join_timeout(Duration::ZERO);
        let owed = q.unfinished_tasks();
        assert!(owed <= 1, "round {round}: {owed} tasks unfinished after one consumer died");
        if owed == 1 {
            assert_eq!(q.join_timeout(Duration::from_millis(50)).unwrap_err().unfinished, 1);
            q.task_done().unwrap();
        }
        q.join_timeout(SLACK).unwrap();
    }
}
