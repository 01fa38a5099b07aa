//! In-process tests of the ring: threads as producers and consumers, and
//! tiny geometries to force sealing, retiring and reuse of frames (stamps
//! forged with dead thread ids, for the dead-owner paths, are in
//! `test_dead`).

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::wire;

pub(super) const LONG: Duration = Duration::from_secs(20);

/// A thread id that no longer exists.
pub(super) fn dead_tid() -> u32 {
    let tid = thread::spawn(crate::sys::imp::thread::current_tid).join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::sys::imp::thread::tid_alive(tid) {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(1));
    }
    tid
}

type Item = (u64, u64, serde_bytes::ByteBuf);

fn item(producer: u64, seq: u64, size: usize) -> Item {
    (producer, seq, serde_bytes::ByteBuf::from(vec![(producer * 31 + seq) as u8; size]))
}

/// Sizes that hit the three paths: inline, arena, blob.
fn size_for(seq: u64) -> usize {
    match seq % 50 {
        0 => 100_000,
        1..=9 => 3000,
        _ => 8,
    }
}

fn stress(q: Queue<Item>, producers: u64, consumers: usize, per_producer: u64) {
    let mut handles = Vec::new();
    for p in 0..producers {
        let q = q.clone();
        handles.push(thread::spawn(move || {
            for s in 0..per_producer {
                q.put_timeout(item(p, s, size_for(s)), LONG).unwrap();
            }
        }));
    }
    let total = producers * per_producer;
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut eaters = Vec::new();
    for _ in 0..consumers {
        let q = q.clone();
        let taken = taken.clone();
        eaters.push(thread::spawn(move || {
            let mut got = Vec::new();
            while taken.load(SeqCst) < total {
                match q.get_timeout(Duration::from_millis(50)) {
                    Ok(it) => {
                        taken.fetch_add(1, SeqCst);
                        got.push(it);
                    }
                    Err(GetError::Timeout) => {}
                    Err(e) => panic!("get failed: {e}"),
                }
            }
            got
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let mut seen: HashMap<(u64, u64), usize> = HashMap::new();
    for e in eaters {
        let got = e.join().unwrap();
        // Per consumer, each producer's items arrive in increasing order.
        let mut last: HashMap<u64, u64> = HashMap::new();
        for (p, s, bytes) in got {
            assert_eq!(bytes, item(p, s, size_for(s)).2, "payload of ({p}, {s})");
            if let Some(prev) = last.insert(p, s) {
                assert!(prev < s, "producer {p}: {s} after {prev}");
            }
            *seen.entry((p, s)).or_default() += 1;
        }
    }
    assert_eq!(seen.len() as u64, total, "items lost");
    assert!(seen.values().all(|&n| n == 1), "items duplicated");
    assert!(q.empty());
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

#[test]
fn fifo_single_thread_all_sizes() {
    let q = Queue::<Vec<u8>>::new().unwrap();
    let sizes = [0usize, 1, 48, 49, 1000, 65_536, 65_537, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        q.put(vec![i as u8; n]).unwrap();
    }
    assert_eq!(q.qsize(), sizes.len());
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(q.get_nowait().unwrap(), vec![i as u8; n]);
    }
    assert!(q.empty());
}

#[test]
fn tiny_segments_spill_and_recycle_frames() {
    // 4 slots per segment and 8 frames: every few items a segment fills,
    // seals, is drained, retired, and its frame reused.
    let q = Queue::<u64>::builder().segment_slots(4).max_segments(8).build().unwrap();
    for round in 0..200u64 {
        for i in 0..20 {
            q.put(round * 100 + i).unwrap();
        }
        for i in 0..20 {
            assert_eq!(q.get_nowait().unwrap(), round * 100 + i);
        }
    }
    assert!(q.ring.header().seg_tail.0.load(Relaxed) > 100);
}

#[test]
fn unbounded_exhaustion_is_an_error_not_a_hang() {
    let q = Queue::<u64>::builder().segment_slots(2).max_segments(4).build().unwrap();
    let mut n = 0;
    let err = loop {
        match q.put(n) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 1000, "never exhausted");
    };
    assert!(matches!(err, PutError::Io(_, _)), "{err:?}");
    assert_eq!(err.into_inner(), n);
    for i in 0..n {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
    q.put(7).unwrap(); // usable again
    assert_eq!(q.get_nowait().unwrap(), 7);
}

#[test]
fn threads_unbounded_exact_multiset() {
    let q = Queue::builder().segment_slots(8).max_segments(4096).build().unwrap();
    stress(q, 4, 3, 600);
}

#[test]
fn threads_bounded_tiny_geometry_exact_multiset() {
    let q = Queue::builder().maxsize(6).segment_slots(4).max_segments(16).build().unwrap();
    stress(q, 3, 3, 1000);
}

/// Bounded queues admit an item by the move of the tail that includes it:
/// producers racing to fill one whose items span several segments (two
/// slots each) get exactly `maxsize` in, round after round, and again after
/// producers and a consumer raced through thousands of items. (`qsize` is
/// not a witness while others put and get: its snapshot of the segments may
/// overshoot.)
#[test]
fn racing_producers_fill_a_bounded_queue_exactly() {
    let q = Queue::<u64>::builder().maxsize(5).segment_slots(2).max_segments(64).build().unwrap();
    let fill = |round: u64| {
        let got: usize = (0..4)
            .map(|_| {
                let q = q.clone();
                thread::spawn(move || (0..20).filter(|_| q.put_nowait(round).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(got, 5, "round {round}: puts that got in");
        assert_eq!(q.qsize(), 5);
        for _ in 0..5 {
            assert_eq!(q.get_nowait().unwrap(), round);
        }
        assert!(q.get_nowait().is_err());
    };
    for round in 0..50 {
        fill(round);
    }
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || (0..2000u64).try_for_each(|i| q.put_timeout(i, LONG).map_err(|e| e.is_full())))
        })
        .collect();
    let mut next = [0u64; 3];
    for _ in 0..6000 {
        // Each producer's items come in its order; the three interleave.
        let v = q.get_timeout(LONG).unwrap();
        let from = next.iter().position(|&n| n == v).expect("an item no producer was about to put");
        next[from] += 1;
    }
    for p in producers {
        p.join().unwrap().unwrap();
    }
    assert_eq!(next, [2000; 3]);
    fill(50);
}

#[test]
fn threads_default_geometry_exact_multiset() {
    stress(Queue::new().unwrap(), 2, 2, 2000);
}

#[test]
fn bounded_full_waits_and_times_out() {
    let q = Queue::<u8>::bounded(2).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert!(q.full());
    assert!(q.put_nowait(3).unwrap_err().is_full());
    let t = Instant::now();
    assert!(q.put_timeout(3, Duration::from_millis(100)).unwrap_err().is_full());
    assert!(t.elapsed() >= Duration::from_millis(100));
    let q2 = q.clone();
    let getter = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        q2.get_timeout(LONG).unwrap()
    });
    q.put_timeout(3, LONG).unwrap();
    assert_eq!(getter.join().unwrap(), 1);
    assert_eq!(q.qsize(), 2);
}

#[test]
fn shutdown_wakes_blocked_getters_and_putters() {
    let q = Queue::<u8>::bounded(1).unwrap();
    q.put(1).unwrap();
    let (a, b) = (q.clone(), q.clone());
    let putter = thread::spawn(move || a.put_timeout(2, LONG));
    let t = Instant::now();
    thread::sleep(Duration::from_millis(50));
    q.shutdown(false);
    assert!(putter.join().unwrap().unwrap_err().is_closed());
    assert_eq!(b.get_timeout(LONG).unwrap(), 1);
    let getter = thread::spawn(move || b.get_timeout(LONG));
    assert!(matches!(getter.join().unwrap(), Err(GetError::Closed)));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn joinable_counts_tasks() {
    let q = JoinableQueue::<u32>::new().unwrap();
    assert!(q.task_done().is_err());
    for i in 0..5 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 5);
    assert_eq!(q.join_timeout(Duration::from_millis(50)), Err(JoinTimeoutError { unfinished: 5 }));
    let worker = {
        let q = q.clone();
        thread::spawn(move || {
            for _ in 0..5 {
                q.get_timeout(LONG).unwrap();
                thread::sleep(Duration::from_millis(5));
                q.task_done().unwrap();
            }
        })
    };
    q.join_timeout(LONG).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    worker.join().unwrap();
    assert_eq!(q.task_done(), Err(TaskDoneError));
}

/// Python's `join` returns once the count reaches zero after it began, even
/// if a put raises it again before the joiner runs: a joiner must not miss
/// the moment under a steady stream of tasks.
#[test]
fn join_returns_when_the_count_touched_zero_though_a_put_followed() {
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put(0).unwrap();
    let joiner = {
        let q = q.clone();
        thread::spawn(move || q.join_timeout(Duration::from_secs(3)))
    };
    // Let the joiner go to sleep on the count of 1.
    let deadline = Instant::now() + LONG;
    while q.ring.header().joiners.0.occupied.load(SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the joiner never slept");
        thread::sleep(Duration::from_millis(1));
    }
    // Zero, then at once one again: the joiner wakes after the put.
    q.get_timeout(LONG).unwrap();
    q.task_done().unwrap();
    q.put(1).unwrap();
    assert_eq!(joiner.join().unwrap(), Ok(()));
    assert_eq!(q.unfinished_tasks(), 1);
}

#[test]
fn unserializable_and_fd_items_fail_put() {
    struct Bad;
    impl Serialize for Bad {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no way"))
        }
    }
    impl<'de> Deserialize<'de> for Bad {
        fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Bad)
        }
    }
    let q = Queue::<Bad>::new().unwrap();
    assert!(matches!(q.put(Bad), Err(PutError::Unserializable(Bad, _))));
    assert!(q.empty());
    let qq = Queue::<Queue<u8>>::new().unwrap();
    let inner = Queue::<u8>::new().unwrap();
    let err = qq.put(inner).unwrap_err();
    assert!(matches!(err, PutError::Unserializable(_, _)), "{err:?}");
}

#[test]
fn handles_round_trip_through_the_codec() {
    let q = JoinableQueue::<String>::new().unwrap();
    let e = wire::encode(&q).unwrap();
    let back: JoinableQueue<String> = wire::decode(&e.bytes, e.fds).unwrap();
    back.put("x".into()).unwrap();
    assert_eq!(q.get_nowait().unwrap(), "x");
    // A plain Queue view of a joinable queue is fine; the reverse is refused,
    // and so is another item type.
    let e = wire::encode(&q).unwrap();
    let plain: Queue<String> = wire::decode(&e.bytes, e.fds).unwrap();
    plain.put("y".into()).unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    let e = wire::encode(&plain).unwrap();
    assert!(wire::decode::<Queue<u64>>(&e.bytes, e.fds).is_err());
    let p = Queue::<String>::new().unwrap();
    let e = wire::encode(&p).unwrap();
    assert!(wire::decode::<JoinableQueue<String>>(&e.bytes, e.fds).is_err());
}

#[test]
fn a_dead_registered_sleeper_is_cleared_by_futile_wakes() {
    let q = Queue::<u64>::new().unwrap();
    let sleepers = &q.ring.header().not_empty.0;
    sleepers.tids[5].store(dead_tid(), SeqCst);
    sleepers.occupied.fetch_or(1 << 5, SeqCst);
    for i in 0..100 {
        q.put(i).unwrap(); // each put wakes, and wakes nobody
        assert_eq!(q.get_nowait().unwrap(), i);
    }
    assert_eq!(sleepers.occupied.load(SeqCst), 0, "the dead sleeper's entry is freed");
    assert_eq!(sleepers.tids[5].load(SeqCst), 0);
}

#[test]
fn a_live_sleeper_is_woken_by_put() {
    let q = Queue::<u64>::new().unwrap();
    let q2 = q.clone();
    let getter = thread::spawn(move || q2.get_timeout(LONG));
    // Wait until the getter is registered as a sleeper.
    let start = Instant::now();
    while q.ring.header().not_empty.0.occupied.load(SeqCst) == 0 {
        assert!(start.elapsed() < LONG);
        thread::sleep(Duration::from_millis(1));
    }
    let t = Instant::now();
    q.put(42).unwrap();
    assert_eq!(getter.join().unwrap().unwrap(), 42);
    assert!(t.elapsed() < Duration::from_secs(1), "woken late: {:?}", t.elapsed());
}
