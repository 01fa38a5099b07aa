//! A slow function of a client's that runs on its connection's thread (a
//! barrier's action; an `update` whose request is too large for the lane,
//! or from a client over TCP) holds back only the calls on its own object:
//! other local clients' calls on other objects are served meanwhile, also
//! while a third client's lane call waits for the object it holds (the
//! dispatcher only tries that object's lock). A panicking `update` is that
//! call's error and the manager goes on. The manager and the clients are
//! processes of their own; every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use multiproc::manager::{Barrier, Dict, Manager, ManagerError, RemoteError};
use multiproc::{Connection, Pipe};
use sync_support::{Kid, LONG, wait_until};

/// How long the slow update runs.
const SLOW: Duration = Duration::from_secs(4);
/// The longest a call on another object may take meanwhile (it takes
/// microseconds, but a loaded machine may stall it; before, the first one
/// waited for the rest of the update, more than 3 s).
const PROMPT: Duration = Duration::from_secs(2);

/// Where the slow function of the test named `what` says it started: a
/// file named after the test process (the manager's parent).
fn started_marker(what: &str, test_pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("multiproc-slow-{what}-started-{test_pid}"))
}

/// In the manager: says the slow function `what` started (see
/// [`started_marker`]).
fn mark_started(what: &str) {
    let test_pid = multiproc::parent_process().expect("runs in the manager process").pid;
    std::fs::write(started_marker(what, test_pid as u32), b"started").unwrap();
}

/// Waits (bounded) until the slow function `what` runs in the manager;
/// removes its marker.
fn wait_started(what: &str) {
    let marker = started_marker(what, std::process::id());
    wait_until("the slow function to start in the manager", || marker.exists());
    std::fs::remove_file(&marker).unwrap();
}

/// Says it started, sleeps `ms` (the first word of `arg`), then counts one.
fn sleep_for(slot: &mut Option<u64>, arg: Vec<u64>) -> u64 {
    mark_started("update");
    std::thread::sleep(Duration::from_millis(arg[0]));
    *slot.get_or_insert(0) += 1;
    arg[0]
}

/// A client process: tells the test it starts a slow update of `d`, then
/// runs it, with an argument too large for the lane (1 MiB), so that the
/// update runs on its connection's thread (a small one runs on the
/// dispatcher, which it would hold back: keep those short).
fn slow_update(d: Dict<u8, u64>, started: Connection<bool>) -> u64 {
    d.insert(0, 0).unwrap(); // connected, with a lane, before the signal
    started.send(&true).unwrap();
    let mut arg = vec![0u64; 128 << 10];
    arg[0] = SLOW.as_millis() as u64;
    d.update_with(&0, arg, sleep_for).unwrap()
}

/// A client process: an update that panics fails with the panic's message;
/// its next call works.
fn panicking_update(d: Dict<u8, u64>, n: u64) -> bool {
    let before = d.get(&1).unwrap();
    let failed = d.update(&1, |v: &mut Option<u64>| -> u64 {
        *v = Some(7);
        panic!("update boom")
    });
    let said_so = matches!(&failed, Err(ManagerError::Remote(RemoteError::Panicked(m))) if m.contains("update boom"));
    said_so && d.get(&1).unwrap() == before && d.insert(1, n).unwrap() == before
}

/// A barrier's action: says it started, and is slow.
fn slow_action() {
    mark_started("action");
    std::thread::sleep(SLOW);
}

/// A client process: tells the test, then passes `b` (one party), which
/// runs its slow action.
fn pass(b: Barrier, started: Connection<bool>) -> u64 {
    b.parties().unwrap(); // connected, with a lane, before the signal
    started.send(&true).unwrap();
    b.wait_timeout(LONG).unwrap() as u64
}

/// Calls `other` until `start` + [`SLOW`] − 0.5 s; panics if one of them
/// takes [`PROMPT`] or more.
fn calls_stay_prompt(other: &Dict<u8, u64>, start: Instant) {
    let mut slowest = Duration::ZERO;
    while start.elapsed() < SLOW - Duration::from_millis(500) {
        let call = Instant::now();
        assert_eq!(other.get(&1).unwrap(), Some(1));
        slowest = slowest.max(call.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(slowest < PROMPT, "a call on another object waited {slowest:?} for a slow function of a client's");
}

#[test]
fn a_slow_update_off_the_lane_holds_back_no_call_on_another_object() {
    let m = Manager::start().unwrap();
    let (slow, other) = (m.dict::<u8, u64>().unwrap(), m.dict::<u8, u64>().unwrap());
    other.insert(1, 1).unwrap();
    let (ours, theirs) = Pipe::<bool>::duplex().unwrap();
    let updater = Kid::spawn(slow_update, (slow.clone(), theirs));
    assert!(ours.recv_timeout(LONG).unwrap(), "the updating client did not get going");
    wait_started("update");
    let start = Instant::now();
    // Another client waits for the object the update holds.
    let waiter = {
        let slow = slow.clone();
        std::thread::spawn(move || slow.get(&0))
    };
    std::thread::sleep(Duration::from_millis(100));
    calls_stay_prompt(&other, start);
    assert_eq!(updater.join(), SLOW.as_millis() as u64);
    assert_eq!(waiter.join().unwrap().unwrap(), Some(1), "the waiting get saw the update's result");
    assert_eq!(slow.get(&0).unwrap(), Some(1));
    m.shutdown().unwrap();
}

#[test]
fn a_panicking_update_fails_its_call_and_the_manager_goes_on() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u64>().unwrap();
    for n in [1, 2] {
        assert!(Kid::spawn(panicking_update, (d.clone(), n)).join(), "the panicking client saw no clean error");
    }
    assert_eq!(d.get(&1).unwrap(), Some(2));
    assert_eq!(d.update(&1, |v: &mut Option<u64>| v.map(|n| n * 10)).unwrap(), Some(20));
    m.shutdown().unwrap();
}

#[test]
fn a_slow_barrier_action_holds_back_no_call_on_another_object() {
    let m = Manager::start().unwrap();
    let (b, other) = (m.barrier_with_action(1, slow_action).unwrap(), m.dict::<u8, u64>().unwrap());
    other.insert(1, 1).unwrap();
    let (ours, theirs) = Pipe::<bool>::duplex().unwrap();
    let passer = Kid::spawn(pass, (b.clone(), theirs));
    assert!(ours.recv_timeout(LONG).unwrap(), "the passing client did not get going");
    wait_started("action");
    let start = Instant::now();
    // Another client asks the barrier, which the action holds.
    let asker = {
        let b = b.clone();
        std::thread::spawn(move || b.n_waiting())
    };
    std::thread::sleep(Duration::from_millis(100));
    calls_stay_prompt(&other, start);
    assert_eq!(passer.join(), 0);
    assert_eq!(asker.join().unwrap().unwrap(), 0);
    m.shutdown().unwrap();
}
