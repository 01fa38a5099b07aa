//! `Event`: set, clear, is_set, wait with and without a timeout, across
//! processes and threads. SPEC.md, "Locks and friends".

mod sync_support;

use std::time::{Duration, Instant};

use multiproc::Event;
use sync_support::{Kid, LONG, assert_about, wait_asleep};

fn wait_forever(e: Event) -> bool {
    e.wait();
    e.is_set()
}

fn wait_with_timeout(e: Event, ms: u64) -> (bool, u64) {
    let start = Instant::now();
    let set = e.wait_timeout(Duration::from_millis(ms));
    (set, start.elapsed().as_millis() as u64)
}

#[test]
fn set_clear_is_set() {
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    e.set();
    e.set();
    assert!(e.is_set());
    assert!(e.wait_timeout(Duration::ZERO));
    e.wait();
    e.clear();
    assert!(!e.is_set());
    let t = Duration::from_millis(200);
    let start = Instant::now();
    assert!(!e.wait_timeout(t));
    assert_about(start, t);
}

#[test]
fn children_wait_with_and_without_timeout_until_the_parent_sets_it() {
    let e = Event::new().unwrap();
    let forever: Vec<Kid<bool>> = (0..2).map(|_| Kid::spawn(wait_forever, (e.clone(),))).collect();
    let timed: Vec<Kid<(bool, u64)>> = (0..2).map(|_| Kid::spawn(wait_with_timeout, (e.clone(), 10_000u64))).collect();
    // A child whose timeout passes before the event is set.
    let short = Kid::spawn(wait_with_timeout, (e.clone(), 100u64));
    let (set, waited) = short.join();
    assert!(!set);
    let slack = sync_support::SLACK.as_millis() as u64;
    assert!((100..100 + slack).contains(&waited), "waited {waited} ms");
    // Threads wait too.
    let t = {
        let e = e.clone();
        std::thread::spawn(move || e.wait_timeout(LONG))
    };
    std::thread::sleep(Duration::from_millis(100));
    e.set();
    for k in forever {
        assert!(k.join());
    }
    for k in timed {
        let (set, waited) = k.join();
        assert!(set);
        assert!(waited < 10_000);
    }
    assert!(t.join().unwrap());
}

#[test]
fn a_set_event_does_not_block_a_new_child() {
    let e = Event::new().unwrap();
    e.set();
    let (set, waited) = Kid::spawn(wait_with_timeout, (e.clone(), 10_000u64)).join();
    assert!(set);
    assert!(waited < sync_support::PROMPT.as_millis() as u64, "waited {waited} ms for a set event");
}

/// Says it is about to wait, then waits for `e` (without, then with a timeout).
fn announce_and_wait(e: Event, waiting: Event, timed: bool) -> bool {
    waiting.set();
    if timed {
        e.wait_timeout(LONG)
    } else {
        e.wait(); // returns: that is the point (the flag may be clear again)
        true
    }
}

#[test]
fn a_set_followed_at_once_by_clear_still_releases_every_waiter() {
    // Python's Event wakes everyone who was waiting when `set` ran, even if
    // `clear` follows at once; a waiter must not sleep through the pulse.
    let e = Event::new().unwrap();
    let mut kids = Vec::new();
    for timed in [false, true] {
        let waiting = Event::new().unwrap();
        let kid = Kid::spawn(announce_and_wait, (e.clone(), waiting.clone(), timed));
        assert!(waiting.wait_timeout(LONG));
        wait_asleep(kid.pid());
        kids.push(kid);
    }
    e.set();
    e.clear();
    for k in kids {
        assert!(k.join(), "a waiter missed the set");
    }
    assert!(!e.is_set());
}
