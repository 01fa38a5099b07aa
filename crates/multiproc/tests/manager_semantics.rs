//! Manager objects behave as the Python objects they stand for, in the
//! corners: a `set` immediately undone by a `clear` still wakes every
//! waiter (Python's `threading.Event`, which `manager.Event()` serves).
//! Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::Duration;

use multiproc::manager::{Event, Manager, Queue};
use sync_support::{Kid, LONG};

/// Long enough that a waiter that missed the pulse is told apart from one
/// that saw it, short enough to fail soon.
const MISSED: Duration = Duration::from_secs(5);

/// Waits for `rounds` pulses of `e`; reports each outcome.
fn pulse_waiter(e: Event, ready: Queue<()>, seen: Queue<bool>, rounds: u32) {
    for _ in 0..rounds {
        ready.put(()).unwrap();
        seen.put(e.wait_timeout(MISSED).unwrap()).unwrap();
    }
}

#[test]
fn a_set_undone_at_once_by_a_clear_still_wakes_every_waiter() {
    const ROUNDS: u32 = 8;
    const WAITERS: usize = 3;
    let m = Manager::start().unwrap();
    let (e, ready, seen) = (m.event().unwrap(), m.queue().unwrap(), m.queue().unwrap());
    let kids: Vec<Kid<()>> =
        (0..WAITERS).map(|_| Kid::spawn(pulse_waiter, (e.clone(), ready.clone(), seen.clone(), ROUNDS))).collect();
    for round in 0..ROUNDS {
        for _ in 0..WAITERS {
            ready.get_timeout(LONG).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100)); // each waits in the manager now
        e.set().unwrap();
        e.clear().unwrap();
        for _ in 0..WAITERS {
            assert!(seen.get_timeout(LONG).unwrap(), "round {round}: a waiter slept through set-then-clear");
        }
    }
    kids.into_iter().for_each(Kid::join);
    m.shutdown().unwrap();
}
