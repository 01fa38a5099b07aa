//! `Event`: set, clear, is_set, wait with and without a timeout, across
//! processes and threads. SPEC.md, "Locks and friends".

mod sync_support;

use std::time::{Duration, Instant};

use multiproc::Event;
use sync_support::{Kid, LONG, assert_about};

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
    assert!((100..1100).contains(&waited), "waited {waited} ms");
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
    assert!(waited < 1000);
}
