//! In-process tests of the ring's dead-owner paths: slots, tasks and frame
//! locks claimed with stamps forged with dead thread ids, as a producer or
//! a consumer killed mid-operation leaves them.

use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

use super::states::{READY, SEALED, Stamp, TAKING, WRITING};
use super::test::{LONG, dead_tid};
use super::*;

/// Claims the slot at the tail of the current segment as a producer that
/// then died. With `include`, the claim is included in the segment (it died
/// while writing); without, it died before moving the tail.
fn forge_dead_producer(q: &Queue<u64>, include: bool) {
    let ring = &q.ring;
    let n = ring.header().seg_tail.0.load(SeqCst);
    let f = ring.frame(n).unwrap();
    let t = f.header().tail.0.load(SeqCst);
    assert_eq!(t & SEALED, 0);
    let slot = f.slot(t);
    let word = slot.stamp.load(SeqCst);
    let dead = Stamp::owned(f.lap(t), WRITING, dead_tid()).pack();
    slot.stamp.compare_exchange(word, dead, SeqCst, SeqCst).unwrap();
    // Its room (bounded queues) and its task (joinable queues) are its
    // position, once included.
    if include {
        f.header().tail.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn consumer_skips_a_dead_producers_slot() {
    let q = JoinableQueue::<u64>::bounded(3).unwrap();
    q.put(1).unwrap();
    forge_dead_producer(&q, true);
    q.put(2).unwrap();
    assert_eq!(q.qsize(), 3);
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
    let t = Instant::now();
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    // The dead producer's room and task went with its skipped position.
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.unfinished_tasks(), 2);
    for v in 3..6 {
        q.put_timeout(v, LONG).unwrap();
    }
    assert!(q.full());
}

#[test]
fn get_timeout_is_kept_while_a_dead_producer_blocks_the_head() {
    let q = Queue::<u64>::new().unwrap();
    forge_dead_producer(&q, true);
    let t = Instant::now();
    // The dead slot is skipped, then the queue is truly empty: Timeout at ≈T.
    assert!(matches!(q.get_timeout(Duration::from_millis(200)), Err(GetError::Timeout)));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(1200), "took {took:?}");
    q.put(9).unwrap();
    assert_eq!(q.get_nowait().unwrap(), 9);
}

#[test]
fn get_nowait_and_short_timeouts_skip_a_dead_producers_slot() {
    // Each call is shorter than the liveness delay: it must still see that
    // the owner of the head slot is dead, or the items behind it stay out of
    // reach of every consumer that does not block.
    for short in [None, Some(Duration::ZERO), Some(Duration::from_micros(500))] {
        let q = Queue::<u64>::new().unwrap();
        forge_dead_producer(&q, true);
        q.put(7).unwrap();
        let t = Instant::now();
        let got = loop {
            let r = match short {
                None => q.get_nowait(),
                Some(timeout) => q.get_timeout(timeout),
            };
            match r {
                Ok(v) => break v,
                Err(e) => assert!(e.is_empty(), "{e}"),
            }
            assert!(t.elapsed() < Duration::from_secs(5), "{short:?}: the dead producer's slot was never skipped");
            thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(got, 7);
        assert!(q.get_nowait().unwrap_err().is_empty());
    }
}

#[test]
fn wait_reports_ready_when_a_dead_producer_blocks_the_head() {
    // A get would skip the dead producer's slot and take the item behind it:
    // `wait` must not wait for ever (or for its whole timeout) meanwhile.
    let q = Queue::<u64>::new().unwrap();
    forge_dead_producer(&q, true);
    q.put(7).unwrap();
    let t = Instant::now();
    assert_eq!(crate::connection::wait(&[&q], Some(Duration::from_secs(3))).unwrap(), [0]);
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert_eq!(q.get_nowait().unwrap(), 7);
}

#[test]
fn producer_withdraws_a_dead_unincluded_claim() {
    let q = Queue::<u64>::bounded(4).unwrap();
    forge_dead_producer(&q, false);
    let t = Instant::now();
    q.put_timeout(5, LONG).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get_nowait().unwrap(), 5);
}

/// A producer of a bounded queue that must wait before it can claim a slot
/// (another producer's claim at the tail, or a new segment to prepare)
/// holds no room meanwhile, so a kill there loses none (a permit taken
/// first once leaked so: the queue stayed "full" after enough kills).
#[test]
fn a_producer_waiting_to_claim_holds_no_room() {
    let q = Queue::<u64>::bounded(2).unwrap();
    let ring = &q.ring;
    // A live producer (this thread) has claimed the tail slot and not yet
    // moved the tail.
    let n = ring.header().seg_tail.0.load(SeqCst);
    let f = ring.frame(n).unwrap();
    let t = f.header().tail.0.load(SeqCst);
    let slot = f.slot(t);
    let free = slot.stamp.load(SeqCst);
    let busy = Stamp::owned(f.lap(t), WRITING, crate::sys::imp::thread::current_tid()).pack();
    slot.stamp.compare_exchange(free, busy, SeqCst, SeqCst).unwrap();
    let waiting = {
        let q = q.clone();
        thread::spawn(move || q.put_timeout(7, LONG).is_ok())
    };
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        assert_eq!(q.qsize(), 0, "a producer waiting to claim a slot took room");
        thread::sleep(Duration::from_millis(5));
    }
    slot.stamp.compare_exchange(busy, free, SeqCst, SeqCst).unwrap();
    assert!(waiting.join().unwrap());
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get_timeout(LONG).unwrap(), 7);
    assert_eq!(q.qsize(), 0);
}

/// A producer killed at any step of `put` leaves its task counted only with
/// its item's position: before the tail move (a bare claim) no task at all,
/// after it one that goes when consumers skip the position.
#[test]
fn a_dead_producers_task_goes_with_its_position() {
    let q = JoinableQueue::<u64>::bounded(4).unwrap();
    forge_dead_producer(&q, false);
    assert_eq!(q.unfinished_tasks(), 0);
    q.join_timeout(Duration::from_secs(5)).unwrap();
    q.put_timeout(5, LONG).unwrap(); // withdraws the dead claim
    forge_dead_producer(&q, true);
    assert_eq!(q.unfinished_tasks(), 2);
    assert_eq!(q.get_timeout(LONG).unwrap(), 5);
    q.task_done().unwrap();
    assert!(q.get_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
    assert_eq!(q.unfinished_tasks(), 0, "the skipped position took its task");
    q.join_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(q.qsize(), 0, "and its room came back");
}

/// As in Python, `task_done` may come before the `get` of its item, but
/// never once more than items were put.
#[test]
fn task_done_may_precede_the_get() {
    let q = JoinableQueue::<u64>::new().unwrap();
    q.put(1).unwrap();
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.task_done().is_err());
    q.join_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(q.get_nowait().unwrap(), 1);
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.task_done().is_err());
}

#[test]
fn consumer_completes_a_dead_consumers_claim() {
    let q = Queue::<u64>::bounded(4).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    forge_dead_taker(&q, false);
    // Item 1 is lost with the dead consumer; 2 comes next, and its room is back.
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    assert_eq!(q.qsize(), 0);
}

/// Takes the item at the head as a consumer that died before releasing the
/// slot: after it moved the head (while copying the item out) if
/// `moved_head`, else just after its claim.
fn forge_dead_taker<T>(q: &Queue<T>, moved_head: bool) {
    let ring = &q.ring;
    let f = ring.frame(ring.header().seg_head.0.load(SeqCst)).unwrap();
    let h = f.header().head.0.load(SeqCst);
    let slot = f.slot(h);
    let word = slot.stamp.load(SeqCst);
    assert_eq!(Stamp::unpack(word).state, READY);
    // As `take_once` does: the claim, then (joinable queues) the item's task
    // counted among the taken ones, then the head move.
    let task = ring.joinable();
    let dead = Stamp { task, ..Stamp::owned(f.lap(h), TAKING, dead_tid()) }.pack();
    slot.stamp.compare_exchange(word, dead, SeqCst, SeqCst).unwrap();
    if task {
        ring.count_taken_task(1);
    }
    if moved_head {
        f.header().head.0.fetch_add(1, SeqCst);
    }
}

#[test]
fn a_consumer_that_died_mid_copy_leaves_its_room_and_gives_back_its_task() {
    // Its item is lost with it; what the item held must come back, or a
    // bounded(1) queue stays full for ever and `join` never returns.
    let q = Queue::<u64>::bounded(1).unwrap();
    q.put(1).unwrap();
    forge_dead_taker(&q, true);
    q.put_timeout(2, Duration::from_secs(5)).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    let q = JoinableQueue::<u64>::new().unwrap();
    q.put(1).unwrap();
    forge_dead_taker(&q, true);
    q.join_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn put_nowait_finds_the_room_of_dead_consumers_at_once() {
    // A consumer that died copying its item out had moved the head past
    // it: the room is free from then on, with nothing to look for.
    let q = Queue::<u64>::bounded(1).unwrap();
    q.put(1).unwrap();
    forge_dead_taker(&q, true);
    q.put_nowait(2).unwrap();
    forge_dead_taker(&q, true);
    q.put_nowait(3).unwrap();
    assert!(matches!(q.put_nowait(4), Err(TryPutError::Full(4))), "bounded(1) holds one item");
    assert_eq!(q.get_timeout(LONG).unwrap(), 3);
}

#[test]
fn frame_lock_of_a_dead_thread_is_taken_over() {
    let q = Queue::<u64>::builder().segment_slots(2).build().unwrap();
    q.ring.header().frame_lock.0.store(dead_tid(), SeqCst);
    let t = Instant::now();
    for i in 0..10 {
        q.put(i).unwrap(); // segments fill every 2 items and need the lock
    }
    assert!(t.elapsed() < Duration::from_secs(2));
    for i in 0..10 {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
}
