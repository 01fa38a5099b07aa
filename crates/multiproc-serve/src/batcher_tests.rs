//! The batcher's own tests: batching rules, capacity, and the bells that
//! wake sleeping worker threads.

use super::*;
use crate::bell::Bell;
use multiproc_test_support::Alive;

fn pending() -> Pending {
    rows(1)
}

/// A request of `rows` rows.
fn rows(rows: usize) -> Pending {
    let slot = Slot::new();
    Pending { input: Encoded::default(), slot, enqueued: Instant::now(), deadline: None, then: None, rows, held: None }
}

fn next(q: &BatchQueue, s: &ModelSettings) -> (usize, BatchReason) {
    match q.next_batch(s, Duration::from_secs(5), &mut Vec::new(), false) {
        Next::Batch(b, r) => (b.len(), r),
        other => panic!("no batch: {other:?}"),
    }
}

#[test]
fn batches_are_cut_by_size_preference_idleness_and_delay() {
    let q = BatchQueue::new(100);
    let mut s = ModelSettings { max_batch_size: 8, preferred_batch_sizes: vec![4, 6], ..Default::default() };
    for _ in 0..13 {
        q.push(pending(), false, &mut Vec::new()).unwrap();
    }
    assert_eq!(next(&q, &s), (8, BatchReason::Full));
    assert_eq!(next(&q, &s), (4, BatchReason::Preferred));
    assert_eq!(next(&q, &s), (1, BatchReason::IdleWorker));
    s.preferred_batch_sizes.clear();
    s.max_queue_delay = Duration::from_millis(30);
    // Read before the push: the delay runs from a moment after it.
    let t = Instant::now();
    q.push(pending(), false, &mut Vec::new()).unwrap();
    assert_eq!(next(&q, &s), (1, BatchReason::Delay));
    assert!(t.elapsed() >= Duration::from_millis(29));
    q.close();
    assert!(matches!(q.next_batch(&s, Duration::from_secs(5), &mut Vec::new(), false), Next::Quit));
}

/// Asks for a batch on a thread of its own (a free worker), once it waits
/// in `next_batch` runs `push`, and returns the batch's rows, its reason and
/// how long after the first push it left.
fn batch_for_a_waiting_worker(
    s: ModelSettings,
    push: impl FnOnce(&BatchQueue, &mut Option<Instant>),
) -> (Vec<usize>, BatchReason, Duration) {
    let q = Arc::new(BatchQueue::new(100));
    let worker = {
        let q = Arc::clone(&q);
        std::thread::spawn(move || match q.next_batch(&s, Duration::from_secs(10), &mut Vec::new(), false) {
            Next::Batch(b, r) => (b.iter().map(|p| p.rows).collect::<Vec<_>>(), r, Instant::now()),
            other => panic!("no batch: {other:?}"),
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.lock().waiting == 0 {
        assert!(Instant::now() < deadline, "the worker thread never waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut first = None;
    push(&q, &mut first);
    let (batch, reason, left) = worker.join().unwrap();
    (batch, reason, left.saturating_duration_since(first.expect("nothing was pushed")))
}

#[test]
fn with_a_delay_a_free_worker_waits_for_it_and_without_one_takes_a_lone_request_at_once() {
    // Far longer than the 15 ms the four pushes take, held up or not.
    let delay = Duration::from_secs(1);
    let s = ModelSettings { max_batch_size: 8, max_queue_delay: delay, ..Default::default() };
    let (batch, reason, waited) = batch_for_a_waiting_worker(s, |q, first| {
        for _ in 0..4 {
            // Read before the push: the delay runs from a moment after it.
            first.get_or_insert_with(Instant::now);
            q.push(pending(), false, &mut Vec::new()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert_eq!((batch.len(), reason), (4, BatchReason::Delay), "a free worker did not wait for the delay");
    assert!(waited >= delay - Duration::from_millis(1), "left {waited:?} after the first request");
    let s = ModelSettings { max_batch_size: 8, ..Default::default() };
    let (batch, reason, waited) = batch_for_a_waiting_worker(s, |q, first| {
        q.push(pending(), false, &mut Vec::new()).unwrap();
        *first = Some(Instant::now());
    });
    assert_eq!((batch.len(), reason), (1, BatchReason::IdleWorker));
    // Generous for a loaded machine: the point is that it does not wait.
    assert!(waited < Duration::from_secs(2), "a lone request waited {waited:?} with no delay set");
}

#[test]
fn max_batch_size_and_preferred_sizes_count_rows() {
    let s = ModelSettings { max_batch_size: 8, ..Default::default() };
    let q = BatchQueue::new(100);
    for _ in 0..16 {
        q.push(rows(8), false, &mut Vec::new()).unwrap();
    }
    for _ in 0..16 {
        assert_eq!(next(&q, &s), (1, BatchReason::Full), "a batch of more than 8 rows");
    }
    let sizes =
        |q: &BatchQueue, s: &ModelSettings| match q.next_batch(s, Duration::from_secs(5), &mut Vec::new(), false) {
            Next::Batch(b, r) => (b.iter().map(|p| p.rows).collect::<Vec<_>>(), r),
            other => panic!("no batch: {other:?}"),
        };
    for r in [3, 5, 3, 3, 5, 5] {
        q.push(rows(r), false, &mut Vec::new()).unwrap();
    }
    assert_eq!(sizes(&q, &s), (vec![3, 5], BatchReason::Full));
    assert_eq!(sizes(&q, &s), (vec![3, 3], BatchReason::Full), "the next 5 rows would not fit");
    assert_eq!(sizes(&q, &s), (vec![5], BatchReason::Full));
    assert_eq!(sizes(&q, &s), (vec![5], BatchReason::IdleWorker));
    // Taken ahead for a busy worker: as full as it gets.
    for r in [5, 5] {
        q.push(rows(r), false, &mut Vec::new()).unwrap();
    }
    assert_eq!(q.take_full(&s, &mut Vec::new()).map(|b| b.len()), Some(1));
    assert!(q.take_full(&s, &mut Vec::new()).is_none(), "5 of 8 rows taken ahead");
    q.release(1);
    assert_eq!(sizes(&q, &s), (vec![5], BatchReason::IdleWorker));
    let s = ModelSettings { max_batch_size: 8, preferred_batch_sizes: vec![6], ..Default::default() };
    for r in [2, 2, 2, 1] {
        q.push(rows(r), false, &mut Vec::new()).unwrap();
    }
    assert_eq!(sizes(&q, &s), (vec![2, 2, 2], BatchReason::Preferred));
    assert_eq!(sizes(&q, &s), (vec![1], BatchReason::IdleWorker));
}

#[test]
fn a_full_queue_refuses_and_cancelled_requests_are_dropped() {
    let q = BatchQueue::new(2);
    q.push(pending(), false, &mut Vec::new()).unwrap();
    let gone = pending();
    gone.slot.cancel();
    q.push(gone, false, &mut Vec::new()).unwrap();
    // Full: the cancelled request makes room for a live one.
    let mut dropped = Vec::new();
    q.push(pending(), false, &mut dropped).unwrap();
    assert_eq!(dropped.len(), 1);
    assert!(matches!(q.push(pending(), false, &mut dropped), Err(Refused::Full(_))));
    assert!(q.push(pending(), true, &mut dropped).is_ok(), "a pipeline's push skips the capacity");
    let gone = pending();
    gone.slot.cancel();
    q.push(gone, true, &mut dropped).unwrap();
    let s = ModelSettings { max_batch_size: 8, ..Default::default() };
    let Next::Batch(b, _) = q.next_batch(&s, Duration::from_secs(5), &mut dropped, false) else { panic!("no batch") };
    assert_eq!((b.len(), dropped.len()), (3, 2));
}

#[test]
fn a_batch_taken_ahead_counts_against_the_capacity_until_it_starts() {
    let q = BatchQueue::new(4);
    let s = ModelSettings { max_batch_size: 2, ..Default::default() };
    for _ in 0..3 {
        q.push(pending(), false, &mut Vec::new()).unwrap();
    }
    assert_eq!(q.take_full(&s, &mut Vec::new()).map(|b| b.len()), Some(2));
    assert!(q.take_full(&s, &mut Vec::new()).is_none(), "one request left: no full batch");
    q.push(pending(), false, &mut Vec::new()).unwrap();
    assert!(matches!(q.push(pending(), false, &mut Vec::new()), Err(Refused::Full(_))), "2 queued + 2 held = capacity");
    q.release(2);
    assert!(q.push(pending(), false, &mut Vec::new()).is_ok());
}

#[test]
fn arrivals_count_what_was_queued_not_what_came_back() {
    let q = BatchQueue::new(4);
    let s = ModelSettings { max_batch_size: 2, ..Default::default() };
    assert_eq!(q.arrivals(), 0);
    q.push(pending(), false, &mut Vec::new()).unwrap();
    q.push_many(vec![pending(), pending()]).unwrap();
    assert_eq!(q.arrivals(), 3);
    assert!(matches!(q.push(pending(), false, &mut Vec::new()), Ok(())));
    assert!(
        matches!(q.push(pending(), false, &mut Vec::new()), Err(Refused::Full(_))),
        "a refused request did not arrive"
    );
    assert_eq!(q.arrivals(), 4);
    let Next::Batch(b, _) = q.next_batch(&s, Duration::from_secs(5), &mut Vec::new(), false) else {
        panic!("no batch")
    };
    q.push_front(b);
    assert_eq!((q.arrivals(), q.len()), (4, 4), "a batch put back is not a new arrival");
}

/// Runs `sleep_while_empty` on a thread of its own with a bell of its
/// own; the thread returns whether the sleep ended within 10 s.
fn sleeper(q: &Arc<BatchQueue>) -> std::thread::JoinHandle<bool> {
    let q = Arc::clone(q);
    std::thread::spawn(move || {
        let bell = Bell::new().unwrap();
        let start = Instant::now();
        // Whether it was rung is for the test to act on.
        let _rung = q.sleep_while_empty(&bell, || bell.sleep(&[], Duration::from_secs(10)));
        start.elapsed() < Duration::from_secs(9)
    })
}

#[test]
fn a_push_rings_a_sleeper_and_a_sleeper_that_leaves_it_to_others_passes_it_on() {
    let q = Arc::new(BatchQueue::new(4));
    let sleepers = |q: &BatchQueue| q.lock().sleepers.len();
    let first = sleeper(&q);
    let second = sleeper(&q);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sleepers(&q) < 2 {
        assert!(Instant::now() < deadline, "the sleepers never slept");
        std::thread::sleep(Duration::from_millis(1));
    }
    q.push(pending(), false, &mut Vec::new()).unwrap();
    // One of them is rung; say its worker died: it leaves the request
    // to the other, which must hear of it.
    while sleepers(&q) == 2 {
        assert!(Instant::now() < deadline, "a push rang no sleeper");
        std::thread::sleep(Duration::from_millis(1));
    }
    q.pass_on(true);
    assert!(first.join().unwrap() && second.join().unwrap(), "a sleeper slept on with a request queued");
    let q = BatchQueue::new(4);
    q.close();
    let bell = Bell::new().unwrap();
    assert!(!q.sleep_while_empty(&bell, || panic!("a closed queue let its worker thread sleep")));
}

#[test]
fn no_batch_is_taken_ahead_while_a_rung_worker_thread_is_on_its_way() {
    let q = Arc::new(BatchQueue::new(4));
    let s = ModelSettings { max_batch_size: 1, ..Default::default() };
    let waker = Arc::clone(&q);
    let woken = std::thread::spawn(move || {
        let bell = Bell::new().unwrap();
        waker.sleep_while_empty(&bell, || bell.sleep(&[], Duration::from_secs(20)))
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.lock().sleepers.is_empty() {
        assert!(Instant::now() < deadline, "the worker thread never slept");
        std::thread::sleep(Duration::from_millis(1));
    }
    q.push(pending(), false, &mut Vec::new()).unwrap();
    let rung = woken.join().unwrap();
    assert!(rung, "the request did not ring the sleeping worker thread");
    // Awake, on its way back to the queue (a busy worker of the same
    // version then looks for a batch to take ahead): the request is its.
    assert!(q.take_full(&s, &mut Vec::new()).is_none(), "a busy worker took the request its idle peer was woken for");
    let Next::Batch(b, _) = q.next_batch(&s, Duration::ZERO, &mut Vec::new(), rung) else { panic!("no batch") };
    assert_eq!(b.len(), 1);
    // Back at the queue: a later full batch may be taken ahead again.
    q.push(pending(), false, &mut Vec::new()).unwrap();
    assert!(q.take_full(&s, &mut Vec::new()).is_some(), "taking ahead stayed off");
}

/// True if `bell` rings within a few seconds (false after 50 ms of silence
/// when `expected` is false). A ring expected has come already: the sleep
/// returns at once, and only a thread held up for seconds would miss it.
fn rings(bell: &Bell, expected: bool) -> bool {
    let (wait, within) = if expected {
        (Duration::from_secs(20), Duration::from_secs(10))
    } else {
        (Duration::from_millis(50), Duration::from_millis(45))
    };
    let start = Instant::now();
    bell.sleep(&[], wait);
    start.elapsed() < within
}

#[test]
fn a_watcher_wakes_when_the_queue_closes_stops_or_runs_empty_once_closed_not_for_a_request() {
    let s = ModelSettings { max_batch_size: 1, ..Default::default() };
    let bell = Bell::new().unwrap();
    let q = BatchQueue::new(10);
    q.sleep_unless_closing(&bell, |_| {
        q.push(pending(), false, &mut Vec::new()).unwrap();
        assert!(!rings(&bell, false), "a request woke a thread that waits for none");
        q.push(pending(), false, &mut Vec::new()).unwrap();
        q.close();
        assert!(rings(&bell, true), "closing the queue did not wake its watcher");
    });
    // Closed with two requests left: the last one taken wakes the watcher.
    q.sleep_unless_closing(&bell, |_| {
        assert_eq!(next(&q, &s), (1, BatchReason::Full));
        assert!(!rings(&bell, false), "a request taken with another left woke the watcher");
        assert_eq!(next(&q, &s), (1, BatchReason::Full));
        assert!(rings(&bell, true), "the closed queue ran empty and nobody woke");
    });
    q.sleep_unless_closing(&bell, |_| panic!("a closed empty queue let its watcher sleep"));
    // Emptied by a crash loop's failing of the queue, or stopped.
    let q = BatchQueue::new(10);
    q.push(pending(), false, &mut Vec::new()).unwrap();
    q.close();
    q.sleep_unless_closing(&bell, |_| {
        assert_eq!(q.take_all().len(), 1);
        assert!(rings(&bell, true), "taking every request of a closed queue woke nobody");
    });
    let q = BatchQueue::new(10);
    q.sleep_unless_closing(&bell, |_| {
        q.stop();
        assert!(rings(&bell, true), "stopping the queue did not wake its watcher");
    });
    q.sleep_unless_closing(&bell, |_| panic!("a stopped queue let its watcher sleep"));
}

/// A request holding a guard counted in `alive`.
fn holding_one(alive: &Alive) -> Pending {
    let request = crate::Request::new("m", ()).hold(alive.guard());
    Pending { held: request.held, ..pending() }
}

#[test]
fn a_watcher_is_told_of_requests_that_hold_something_and_rung_by_the_first() {
    let alive = Alive::default();
    let bell = Bell::new().unwrap();
    let q = BatchQueue::new(10);
    q.sleep_unless_closing(&bell, |holding| {
        assert!(!holding);
        q.push(pending(), false, &mut Vec::new()).unwrap();
        assert!(!rings(&bell, false), "a request that holds nothing woke the watcher");
        q.push(holding_one(&alive), false, &mut Vec::new()).unwrap();
        assert!(rings(&bell, true), "the first request that holds something did not wake the watcher");
    });
    // One is queued: told so, and the next does not ring (it sweeps anyway).
    q.sleep_unless_closing(&bell, |holding| {
        assert!(holding);
        q.push(holding_one(&alive), false, &mut Vec::new()).unwrap();
        assert!(!rings(&bell, false), "a watcher told of a request that holds something was woken again");
    });
    drop(q.stop());
    assert_eq!(alive.count(), 0);
}

#[test]
fn what_a_request_holds_stays_queued_with_it_and_goes_when_it_is_swept() {
    let alive = Alive::default();
    let q = BatchQueue::new(4);
    let s = ModelSettings { max_batch_size: 1, ..Default::default() };
    let (gone, expired) = (holding_one(&alive), holding_one(&alive));
    gone.slot.cancel();
    let expired = Pending { deadline: Some(Instant::now()), ..expired };
    q.push(gone, false, &mut Vec::new()).unwrap();
    q.push(expired, false, &mut Vec::new()).unwrap();
    q.push(holding_one(&alive), false, &mut Vec::new()).unwrap();
    // Given up and past its deadline, but queued: still held.
    assert_eq!(alive.count(), 3);
    let mut dropped = Vec::new();
    let Next::Batch(batch, _) = q.next_batch(&s, Duration::from_secs(5), &mut dropped, false) else {
        panic!("no batch")
    };
    assert_eq!((batch.len(), dropped.len()), (1, 2));
    dropped.clear();
    assert_eq!(alive.count(), 1, "the swept requests dropped what they held");
    drop(batch);
    assert_eq!(alive.count(), 0);
    // Drained at a stop: dropped with the requests.
    q.push(holding_one(&alive), false, &mut Vec::new()).unwrap();
    drop(q.stop());
    assert_eq!(alive.count(), 0);
}
