//! The Pool API: every call, chunk sizes, empty inputs, close/terminate/join.

mod pool_support;

use std::time::Instant;

use multiproc::{Pool, PoolError, TaskError};
use pool_support::{WAIT, add, get, square};

#[test]
fn map_equals_the_sequential_result() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let want: Vec<u64> = (0..10_000u64).map(square).collect();
    assert_eq!(pool.map(square, 0..10_000u64).unwrap(), want);
    for cs in [1, 7, 10_000, 50_000] {
        assert_eq!(pool.with_chunksize(cs).map(square, 0..10_000u64).unwrap(), want, "chunksize {cs}");
    }
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn apply_and_starmap() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(add, (2u64, 3u64)).unwrap(), 5);
    let pairs: Vec<(u64, u64)> = (0..100).map(|i| (i, 2 * i)).collect();
    let want: Vec<u64> = pairs.iter().map(|&(a, b)| a + b).collect();
    assert_eq!(pool.starmap(add, pairs.clone()).unwrap(), want);
    let mut r = pool.starmap_async(add, pairs);
    assert_eq!(r.get_timeout(WAIT).unwrap(), want);
}

#[test]
fn imap_is_ordered_and_unordered_is_the_same_multiset() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let got: Vec<u64> = pool.imap(square, 0..5000u64).map(Result::unwrap).collect();
    assert_eq!(got, (0..5000u64).map(square).collect::<Vec<_>>());
    let mut un: Vec<u64> = pool.with_chunksize(13).imap_unordered(square, 0..5000u64).map(Result::unwrap).collect();
    un.sort_unstable();
    let mut want: Vec<u64> = (0..5000u64).map(square).collect();
    want.sort_unstable();
    assert_eq!(un, want);
}

#[test]
fn a_chunksize_larger_than_any_input_makes_one_chunk() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let want: Vec<u64> = (0..10u64).map(square).collect();
    for chunksize in [usize::MAX, 1 << 62] {
        let got: Vec<u64> = pool.with_chunksize(chunksize).imap(square, 0..10u64).map(Result::unwrap).collect();
        assert_eq!(got, want, "imap, chunksize {chunksize}");
        let mut un: Vec<u64> =
            pool.with_chunksize(chunksize).imap_unordered(square, 0..10u64).map(Result::unwrap).collect();
        un.sort_unstable();
        assert_eq!(un, want, "imap_unordered, chunksize {chunksize}");
        assert_eq!(pool.with_chunksize(chunksize).map(square, 0..10u64).unwrap(), want);
    }
}

#[test]
fn empty_inputs_give_empty_results_at_once() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(1).unwrap();
    let t = Instant::now();
    assert!(pool.map(square, Vec::<u64>::new()).unwrap().is_empty());
    assert!(pool.imap(square, Vec::<u64>::new()).next().is_none());
    assert!(pool.imap_unordered(square, Vec::<u64>::new()).next().is_none());
    assert!(pool.starmap(add, Vec::<(u64, u64)>::new()).unwrap().is_empty());
    assert!(t.elapsed() < pool_support::SLACK);
}

#[test]
fn zero_processes_is_an_error() {
    let _watchdog = pool_support::watchdog();
    assert!(matches!(Pool::new(0), Err(PoolError::NoProcesses)));
}

#[test]
fn close_refuses_new_work_and_join_needs_close() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(1).unwrap();
    assert!(matches!(pool.join_timeout(WAIT), Err(PoolError::NotClosed)));
    let pending = pool.map_async(square, 0..100u64);
    pool.close();
    assert!(matches!(pool.apply(add, (1, 2)), Err(PoolError::Closed)));
    assert!(matches!(pool.map(square, 0..3u64), Err(PoolError::Closed)));
    pool.join_timeout(WAIT).unwrap();
    let mut pending = pending;
    assert_eq!(pending.get_timeout(WAIT).unwrap().len(), 100, "queued work finishes after close");
}

#[test]
fn close_refuses_new_work_even_with_an_empty_input() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(1).unwrap();
    pool.close();
    assert!(matches!(pool.map(square, Vec::<u64>::new()), Err(PoolError::Closed)));
    assert!(matches!(pool.starmap(add, Vec::<(u64, u64)>::new()), Err(PoolError::Closed)));
    assert!(matches!(pool_support::get(pool.map_async(square, Vec::<u64>::new())), Err(PoolError::Closed)));
    for mut results in [pool.imap(square, Vec::<u64>::new()), pool.imap_unordered(square, Vec::<u64>::new())] {
        assert!(matches!(results.next(), Some(Err(PoolError::Closed))));
        assert!(results.next().is_none());
    }
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn a_panic_is_reported_with_message_and_location_and_the_worker_survives() {
    let _watchdog = pool_support::watchdog();
    fn boom(x: u64) -> u64 {
        if x == 3 {
            panic!("bad item {x}");
        }
        x
    }
    let pool = Pool::new(1).unwrap();
    let err = pool.with_chunksize(1).map(boom, 0..6u64).unwrap_err();
    let PoolError::Task { index, error: TaskError::Panicked(p) } = err else { panic!("{err:?}") };
    assert_eq!(index, Some(3));
    assert_eq!(p.message, "bad item 3");
    assert!(p.location.as_deref().unwrap().contains("pool_api.rs"), "{:?}", p.location);
    assert!(!p.backtrace.is_empty());
    assert_eq!(pool.map(square, 0..4u64).unwrap(), vec![0, 1, 4, 9], "pool still usable");
}

#[test]
fn a_single_task_failure_names_no_index_and_a_map_item_names_its_own() {
    let _watchdog = pool_support::watchdog();
    fn boom(x: u64) -> u64 {
        if x == 3 {
            panic!("bad item {x}");
        }
        x
    }
    let pool = Pool::new(1).unwrap();
    // A single task has no position in an input: its error is the task's.
    let applied = pool.apply(boom, (3u64,)).unwrap_err();
    assert!(matches!(applied, PoolError::Task { index: None, .. }), "{applied:?}");
    let applied = applied.to_string();
    assert!(applied.starts_with("the task panicked: 'bad item 3'"), "{applied}");
    let applied_async = pool.apply_async(boom, (3u64,)).get_timeout(WAIT).unwrap_err().to_string();
    assert!(applied_async.starts_with("the task panicked: 'bad item 3'"), "{applied_async}");
    let cancelled = pool.apply_async(pool_support::sleep_ms, (0,));
    if cancelled.cancel() {
        let text = get(cancelled).unwrap_err().to_string();
        assert_eq!(text, "the task was cancelled before it started");
    }
    // A map item's error says which item it was.
    let mapped = pool.with_chunksize(1).map(boom, 0..6u64).unwrap_err().to_string();
    assert!(mapped.starts_with("task 3 failed: the task panicked: 'bad item 3'"), "{mapped}");
}

#[test]
fn map_of_owned_values_survives_a_failure_among_chunks() {
    let _watchdog = pool_support::watchdog();
    fn text(x: u64) -> String {
        if x == 777 {
            panic!("seven hundred seventy-seven");
        }
        format!("value {x}")
    }
    let pool = Pool::new(2).unwrap();
    let ok = pool.with_chunksize(100).map(text, 0..700u64).unwrap();
    assert_eq!(ok.len(), 700);
    assert!(ok.iter().enumerate().all(|(i, s)| *s == format!("value {i}")));
    for _ in 0..3 {
        let err = pool.with_chunksize(100).map(text, 0..2000u64).unwrap_err();
        assert!(matches!(err, PoolError::Task { index: Some(777), .. }), "{err:?}");
    }
    assert_eq!(pool.map(text, 0..3u64).unwrap(), vec!["value 0", "value 1", "value 2"]);
}

/// An iterator that announces `said` items and yields `has`.
struct Liar {
    said: usize,
    has: u64,
    next: u64,
}

impl Iterator for Liar {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        (self.next < self.has).then(|| {
            self.next += 1;
            self.next
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.said.saturating_sub(self.next as usize);
        (left, Some(left))
    }
}

#[test]
fn an_input_that_misstates_its_length_fails_the_map_instead_of_hanging() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    for (said, has) in [(10, 7), (10, 13), (0, 2)] {
        let mut r = pool.map_async(square, Liar { said, has, next: 0 });
        assert!(matches!(r.get_timeout(WAIT), Err(PoolError::Input { .. })), "said {said}, has {has}");
    }
    assert_eq!(pool.map(square, Liar { said: 4, has: 4, next: 0 }).unwrap(), vec![1, 4, 9, 16]);
    // An input without an exact length is read whole first.
    assert_eq!(pool.map(square, (1..=20u64).filter(|x| x % 5 == 0)).unwrap(), vec![25, 100, 225, 400]);
}

/// Yields 0, 1, … and panics when asked for item `at`.
fn panics_at(at: u64) -> impl Iterator<Item = u64> {
    (0..).map(move |i| if i == at { panic!("input broke at {i}") } else { i })
}

#[test]
fn a_panic_of_the_imap_input_surfaces_where_its_item_would_be() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    for chunksize in [1, 3] {
        for ordered in [true, false] {
            let call = pool.with_chunksize(chunksize);
            let mut results: Box<dyn Iterator<Item = Result<u64, PoolError>>> = if ordered {
                Box::new(call.imap(square, panics_at(5)))
            } else {
                Box::new(call.imap_unordered(square, panics_at(5)))
            };
            // The items before the panic come back first ...
            let mut got: Vec<u64> = (0..5).map(|_| results.next().unwrap().unwrap()).collect();
            got.sort_unstable();
            assert_eq!(got, [0, 1, 4, 9, 16], "chunksize {chunksize}, ordered {ordered}");
            // ... then the panic, with its own message, where item 5 would be.
            let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| results.next())).unwrap_err();
            let message = panic.downcast_ref::<String>().map(String::as_str).unwrap_or("?");
            assert_eq!(message, "input broke at 5");
            assert!(results.next().is_none(), "the iteration ends after the panic");
        }
    }
    assert_eq!(pool.map(square, 0..4u64).unwrap(), vec![0, 1, 4, 9], "pool still usable");
}
