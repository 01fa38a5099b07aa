//! A producer SIGKILLed in the middle of `put` (SPEC.md, queue section,
//! [better]): consumers' `get_timeout` still returns on time, every item they
//! get is whole, and the queue keeps working with items from another
//! producer. Repeated at random moments, with 1 MiB items (the must-show case:
//! the kill lands while the item is being written) and with 60 KiB items
//! (copied inside the slot-claim window, so kills land between claim and
//! commit), on unbounded and bounded queues; and a consumer that only
//! polls with `get_nowait` gets past the killed producer's slot. A consumer
//! SIGKILLed mid-get leaves a bounded(1) queue with room.

mod queue_support;
mod shm_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::{GetError, Process, Queue};
use queue_support::{Child, LONG, SLACK, jitter};
use serde_bytes::ByteBuf;
use shm_support::own_dev_shm_handles;

/// The consumers' timeout.
const T: Duration = Duration::from_millis(300);
/// Kills per scenario.
const ROUNDS: u32 = 4;

/// An item: its sequence number, then that number's low byte repeated.
fn make(seq: u64, size: usize) -> ByteBuf {
    let mut v = vec![seq as u8; size];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    ByteBuf::from(v)
}

/// Panics unless `item` is whole; returns its sequence number.
fn check(item: &[u8], size: usize) -> u64 {
    assert_eq!(item.len(), size, "item of the wrong size");
    let seq = u64::from_le_bytes(item[..8].try_into().unwrap());
    assert!(item[8..].iter().all(|&b| b == seq as u8), "item {seq} is torn");
    seq
}

/// Puts items forever (until killed).
fn flood(q: Queue<ByteBuf>, size: usize, first: u64) {
    let mut seq = first;
    loop {
        q.put(make(seq, size)).unwrap();
        seq += 1;
    }
}

/// Gets with timeout `T` until a timeout; returns how many items it got and
/// how long the final, empty `get_timeout` took (µs).
fn consume_until_timeout(q: Queue<ByteBuf>, size: usize) -> (u64, u64) {
    let mut got = 0;
    loop {
        let start = Instant::now();
        match q.get_timeout(T) {
            Ok(item) => {
                check(&item, size);
                got += 1;
            }
            Err(GetError::Timeout) => return (got, start.elapsed().as_micros() as u64),
            Err(e) => panic!("consumer: {e}"),
        }
    }
}

/// Puts `n` items with sequence numbers from `first` and returns.
fn put_some(q: Queue<ByteBuf>, size: usize, first: u64, n: u64) {
    for seq in first..first + n {
        q.put(make(seq, size)).unwrap();
    }
}

fn kill_producers_mid_put(q: Queue<ByteBuf>, size: usize) {
    for round in 0..ROUNDS {
        let base = u64::from(round) * 1_000_000;
        let mut producer = Child(Process::spawn(flood, (q.clone(), size, base)).unwrap());
        // The parent consumes all along, so the producer is busy putting (not
        // waiting for room) when the kill lands.
        let got = Arc::new(AtomicU64::new(0));
        let consumer = {
            let (q, got) = (q.clone(), got.clone());
            std::thread::spawn(move || {
                loop {
                    let start = Instant::now();
                    match q.get_timeout(T) {
                        Ok(item) => {
                            check(&item, size);
                            got.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(GetError::Timeout) => {
                            // A timeout before the first items (a slow start) is
                            // fine; after them, it ends the drain.
                            if got.load(Ordering::SeqCst) >= 2 {
                                return start.elapsed();
                            }
                        }
                        Err(e) => panic!("consumer: {e}"),
                    }
                }
            })
        };
        let started = Instant::now();
        while got.load(Ordering::SeqCst) < 2 {
            assert!(started.elapsed() < LONG, "the producer never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(jitter(round, 3000));
        producer.0.kill().unwrap();
        let _ = producer.0.join_timeout(LONG); // reaped: the kill has landed

        // A second consumer, in a child; both must time out on time, whatever
        // state the killed producer left its slot in.
        let mut child = Child(Process::spawn(consume_until_timeout, (q.clone(), size)).unwrap());
        let parent_wait = consumer.join().unwrap();
        let (_, child_wait) = child.join();
        let child_wait = Duration::from_micros(child_wait);
        for (who, waited) in [("parent", parent_wait), ("child", child_wait)] {
            assert!(waited >= T && waited < T + SLACK, "round {round}: {who}'s get_timeout took {waited:?}");
        }

        // The queue goes on: another producer's items all arrive, in order.
        let first = base + 500_000;
        let mut later = Child(Process::spawn(put_some, (q.clone(), size, first, 5u64)).unwrap());
        for seq in first..first + 5 {
            assert_eq!(check(&q.get_timeout(LONG).unwrap(), size), seq, "round {round}");
        }
        later.join();
        assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
    }
}

#[test]
fn sigkill_mid_put_of_1_mib_items_unbounded() {
    kill_producers_mid_put(Queue::new().unwrap(), 1 << 20);
}

#[test]
fn sigkill_mid_put_of_1_mib_items_bounded() {
    kill_producers_mid_put(Queue::bounded(2).unwrap(), 1 << 20);
}

#[test]
fn sigkill_between_claim_and_commit_of_arena_items() {
    // Unbounded, so the producer never waits for room; small segments, so the
    // kills also land around segment changes.
    kill_producers_mid_put(Queue::builder().segment_slots(8).build().unwrap(), 60 * 1024);
}

#[test]
fn sigkill_mid_put_uses_nothing_in_dev_shm() {
    // The queue (with large items in its arena) lives in memfds: the
    // consumer holds nothing in /dev/shm while the producer is killed
    // mid-put, nor after.
    {
        let q = Queue::new().unwrap();
        let mut producer = Child(Process::spawn(flood, (q.clone(), 1usize << 20, 0u64)).unwrap());
        check(&q.get_timeout(LONG).unwrap(), 1 << 20);
        assert_eq!(own_dev_shm_handles(), Vec::<String>::new());
        producer.0.kill().unwrap();
        let _ = producer.0.join_timeout(LONG);
        while q.get_timeout(T).is_ok() {}
        assert_eq!(own_dev_shm_handles(), Vec::<String>::new());
    }
    assert_eq!(own_dev_shm_handles(), Vec::<String>::new());
}

/// Polls `q` with `get_nowait` only, checking every item, until it got the
/// item numbered `last`; the sequence numbers it got from `first` on.
fn poll_until(q: &Queue<ByteBuf>, size: usize, first: u64, last: u64, stop: &AtomicU64) -> Vec<u64> {
    let started = Instant::now();
    let mut got = Vec::new();
    loop {
        match q.get_nowait() {
            Ok(item) => {
                let seq = check(&item, size);
                if seq >= first {
                    got.push(seq);
                }
                if seq == last {
                    return got;
                }
            }
            Err(GetError::Empty) => {
                if stop.load(Ordering::SeqCst) == 1 {
                    return got;
                }
                assert!(started.elapsed() < LONG, "get_nowait never got past the killed producer's slot");
                std::thread::yield_now();
            }
            Err(e) => panic!("consumer: {e}"),
        }
    }
}

#[test]
fn sigkill_mid_put_leaves_the_queue_usable_by_get_nowait() {
    // A consumer that only polls (Python's `get_nowait` loop) must get past a
    // slot left by a producer killed between claim and commit (60 KiB items
    // are copied there), each of its calls being far shorter than the
    // liveness delay.
    let size = 60 * 1024;
    let q = Queue::bounded(2).unwrap();
    for round in 0..2 * ROUNDS {
        let base = u64::from(round) * 1_000_000;
        let mut producer = Child(Process::spawn(flood, (q.clone(), size, base)).unwrap());
        let stop = Arc::new(AtomicU64::new(0));
        let consumer = {
            let (q, stop) = (q.clone(), stop.clone());
            std::thread::spawn(move || poll_until(&q, size, base, u64::MAX, &stop).len())
        };
        std::thread::sleep(Duration::from_millis(20) + jitter(round, 3000));
        producer.0.kill().unwrap();
        let _ = producer.0.join_timeout(LONG);
        stop.store(1, Ordering::SeqCst);
        assert!(consumer.join().unwrap() >= 1, "round {round}: the producer never started");
        // Another producer's items all come through to the poller, in order.
        let first = base + 500_000;
        let mut later = Child(Process::spawn(put_some, (q.clone(), size, first, 5u64)).unwrap());
        let got = poll_until(&q, size, first, first + 4, &AtomicU64::new(0));
        assert_eq!(got, (first..first + 5).collect::<Vec<_>>(), "round {round}");
        later.join();
    }
}

/// Gets items for ever (until killed), as fast as it can: most of its time
/// goes to copying them out of their slots.
fn drink(q: Queue<ByteBuf>) {
    loop {
        let _ = q.get_timeout(LONG);
    }
}

#[test]
fn sigkill_mid_get_leaves_a_bounded_queue_room() {
    // A consumer killed while copying a 60 KiB item out of its slot loses
    // that item; the room the item held must come back, or a bounded(1)
    // queue stays full for ever.
    let size = 60 * 1024;
    let q = Queue::bounded(1).unwrap();
    for round in 0..4 * ROUNDS {
        let mut consumer = Child(Process::spawn(drink, (q.clone(),)).unwrap());
        let stop = Arc::new(AtomicU64::new(0));
        // Two producers keep the queue full: the consumer never waits.
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let (q, stop) = (q.clone(), stop.clone());
                std::thread::spawn(move || {
                    let (item, mut n) = (make(1, size), 0);
                    while stop.load(Ordering::SeqCst) == 0 {
                        if q.put_timeout(item.clone(), Duration::from_millis(50)).is_ok() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20) + jitter(round, 3000));
        consumer.0.kill().unwrap();
        let _ = consumer.0.join_timeout(LONG);
        stop.store(1, Ordering::SeqCst);
        let put: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        assert!(put >= 2, "round {round}: the consumer never started");
        while q.get_timeout(Duration::from_millis(50)).is_ok() {}
        let room = q.put_timeout(make(7, size), SLACK);
        assert!(room.is_ok(), "round {round}: the killed consumer kept the queue full");
        assert_eq!(check(&q.get_timeout(LONG).unwrap(), size), 7);
    }
}
