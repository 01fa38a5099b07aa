//! Lane tests with a client that breaks the lane's rules: whatever its
//! lane says, a client whose socket closes is gone (its locks freed, its
//! connection's thread ended), also when it dies while the dispatcher runs
//! another client's slow update. The manager is a process of its own, the
//! client a child process killed by the test; every wait is bounded.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::lane::Lane;
use super::protocol::{Op, Owner, Reply, Request, Response};
use super::{AcquireError, Dict, Lock, Manager, Proxy};
use crate::{Client, Connection, Pipe, Process, wire};

const KEY: &[u8] = b"lane test key";
const LONG: Duration = Duration::from_secs(20);
/// The session the forging client names in its hello.
const SESSION: u64 = 0x7A4E;

fn ask(conn: &Connection<()>, request: &Request) -> Response {
    conn.send_bytes(&wire::encode(request).unwrap().bytes).unwrap();
    wire::decode(&conn.recv_bytes_timeout(LONG).unwrap(), Vec::new()).unwrap()
}

/// Connects to the manager at `address` as session [`SESSION`], first
/// running `before_lane` over the socket, then opens a lane.
fn raw_lane_client(address: &str, before_lane: impl FnOnce(&Connection<()>)) -> (Connection<()>, Lane) {
    let conn: Connection<()> = Client::connect(address, Some(KEY)).unwrap();
    let hello = Request::Hello { session: SESSION, pid: std::process::id() as i32, build_id: "forger".into() };
    assert!(ask(&conn, &hello).is_ok());
    before_lane(&conn);
    conn.send_bytes(&wire::encode(&Request::OpenLane).unwrap().bytes).unwrap();
    let (bytes, mut fds) = conn.recv_bytes_with_fds_timeout(LONG).unwrap();
    assert!(matches!(wire::decode::<Response>(&bytes, Vec::new()).unwrap(), Ok(Reply::Lane)));
    let lane = Lane::open(fds.remove(0), fds.remove(0)).unwrap();
    (conn, lane)
}

/// A client process: acquires `lock` over its socket, opens a lane and
/// marks a call "taken" in it, tells the test, and waits to be killed.
fn take_a_lock_then_forge_a_taken_call(address: String, lock: u64, ready: Connection<bool>) {
    let owner = Owner { session: SESSION, thread: 1 };
    let acquire = Request::Call { object: lock, op: Op::Acquire { owner, timeout: Some(Duration::ZERO) } };
    let (_conn, lane) =
        raw_lane_client(&address, |conn| assert!(matches!(ask(conn, &acquire), Ok(Reply::Acquired { .. }))));
    lane.forge_taken();
    ready.send(&true).unwrap();
    std::thread::sleep(LONG);
}

/// A client process: opens a lane, waits for the dispatcher to sleep and
/// leaves its bell as a client killed inside a ring does, tells the test,
/// and waits to be killed.
fn cut_a_ring_short(address: String, ready: Connection<bool>) {
    let (_conn, lane) = raw_lane_client(&address, |_| {});
    ready.send(&lane.cut_a_ring_short(LONG)).unwrap();
    std::thread::sleep(LONG);
}

/// A client process: opens a lane, tells the test, and writes garbage over
/// its lane and the manager's bell every millisecond until killed.
fn scribble(address: String, ready: Connection<bool>) {
    let (_conn, lane) = raw_lane_client(&address, |_| {});
    ready.send(&true).unwrap();
    let start = Instant::now();
    let mut seed = u64::from(std::process::id());
    while start.elapsed() < LONG {
        lane.scribble(seed);
        seed += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(Iterator::count).unwrap_or(0)
}

#[test]
fn a_client_that_dies_with_a_call_marked_taken_in_its_lane_is_counted_gone() {
    let m = Manager::builder().authkey(KEY).start().unwrap();
    let lock = m.lock().unwrap();
    let manager_pid = m.pid().unwrap();
    let before = threads_of(manager_pid);
    let (ours, theirs) = Pipe::<bool>::duplex().unwrap();
    let address = m.address().to_string();
    let mut client = Process::builder()
        .spawn(take_a_lock_then_forge_a_taken_call, (address, lock.object_ref().id(), theirs))
        .unwrap();
    assert!(ours.recv_timeout(LONG).unwrap(), "the client did not get going");
    assert!(lock.try_acquire().is_err_and(|e| e.is_timeout()), "the client does not hold the lock");
    client.kill().unwrap();
    let _ = client.join_timeout(LONG);

    let start = Instant::now();
    match lock.acquire_timeout(Duration::from_secs(10)) {
        Ok(guard) => drop(guard),
        Err(AcquireError::OwnerDied(died)) => drop(died.into_inner()),
        Err(e) => panic!("the dead client's lock was not freed within {:?}: {e:?}", start.elapsed()),
    }
    while threads_of(manager_pid) != before {
        assert!(start.elapsed() < LONG, "the dead client's connection thread is still there");
        std::thread::sleep(Duration::from_millis(5));
    }
    m.shutdown().unwrap();
}

#[test]
fn a_client_killed_inside_a_ring_stalls_no_other_client() {
    let m = Manager::builder().authkey(KEY).start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    // Without a wake-up, the dispatcher sleeps on until its own timeout
    // (a second): the quickest of three rounds must take far less.
    let mut quickest = Duration::MAX;
    for _ in 0..3 {
        let (ours, theirs) = Pipe::<bool>::duplex().unwrap();
        let mut client = Process::builder().spawn(cut_a_ring_short, (m.address().to_string(), theirs)).unwrap();
        assert!(ours.recv_timeout(LONG).unwrap(), "the dispatcher was never seen asleep");
        client.kill().unwrap();
        let start = Instant::now();
        assert_eq!(d.len().unwrap(), 0);
        quickest = quickest.min(start.elapsed());
        let _ = client.join_timeout(LONG);
    }
    assert!(quickest < Duration::from_millis(400), "a call waited {quickest:?} for a dispatcher left asleep");
    m.shutdown().unwrap();
}

/// Kills and reaps its process when dropped (also when the test fails).
struct KillOnDrop(Process<()>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.join_timeout(LONG);
    }
}

#[test]
fn a_client_scribbling_over_its_lane_and_the_bell_holds_back_no_other_client() {
    let m = Manager::builder().authkey(KEY).start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    let (ours, theirs) = Pipe::<bool>::duplex().unwrap();
    let scribbler = KillOnDrop(Process::builder().spawn(scribble, (m.address().to_string(), theirs)).unwrap());
    assert!(ours.recv_timeout(LONG).unwrap(), "the scribbler did not get going");
    // Calls spaced so that the dispatcher goes to sleep between them: with
    // a bell cleared under it, it slept on for up to a second.
    for i in 0..30u8 {
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        assert_eq!(d.insert(2, i).unwrap(), i.checked_sub(1));
        assert_eq!(d.get(&1).unwrap(), Some(1));
        let took = start.elapsed();
        assert!(took < Duration::from_millis(400), "two calls took {took:?} beside a scribbling client");
    }
    assert!(scribbler.0.exitcode().is_none(), "the scribbler ended early");
    drop(scribbler);
    assert_eq!(d.len().unwrap(), 2);
    m.shutdown().unwrap();
}

/// Where the slow update run for the test process `test_pid` says it
/// started (`what` = "started"), or learns it may end ("release").
fn marker(what: &str, test_pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("multiproc-lane-close-{what}-{test_pid}"))
}

/// Removes both markers when dropped (also when the test fails).
struct Markers;

impl Drop for Markers {
    fn drop(&mut self) {
        for what in ["started", "release"] {
            let _ = std::fs::remove_file(marker(what, std::process::id()));
        }
    }
}

/// An update, run on the dispatcher: says it started, then holds the
/// dispatcher until the test releases it (at most [`LONG`]).
fn hold_the_dispatcher(slot: &mut Option<u64>) -> u64 {
    let test_pid = crate::parent_process().expect("runs in the manager process").pid as u32;
    std::fs::write(marker("started", test_pid), b"").unwrap();
    let start = Instant::now();
    while !marker("release", test_pid).exists() && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(5));
    }
    *slot.get_or_insert(0) += 1;
    start.elapsed().as_millis() as u64
}

/// A client process: opens its lane (with a first call), tells the test,
/// and on its word runs the slow update.
fn update_slowly(d: Dict<u8, u64>, go: Connection<bool>) {
    d.insert(0, 0).unwrap();
    go.send(&true).unwrap();
    assert!(go.recv_timeout(LONG).unwrap());
    d.update(&0, hold_the_dispatcher).unwrap();
}

/// A client process: opens its lane (with a first call), tells the test,
/// and on its word acquires `lock` through its lane (the request waits
/// there while the dispatcher is held).
fn acquire_through_the_lane(lock: Lock, go: Connection<bool>) {
    assert!(!lock.is_locked().unwrap());
    go.send(&true).unwrap();
    assert!(go.recv_timeout(LONG).unwrap());
    let _ = lock.acquire_timeout(LONG);
}

/// True when the main thread of process `pid` sleeps on a futex (as a
/// client waiting for its lane's answer does).
fn asleep_on_a_futex(pid: u32) -> bool {
    let task = format!("/proc/{pid}/task/{pid}");
    let stat = std::fs::read_to_string(format!("{task}/stat")).unwrap_or_default();
    let sleeping = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
    sleeping && std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default().contains("futex")
}

/// Polls `done` every 5 ms; panics after [`LONG`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_lock_request_left_in_a_dead_clients_lane_is_never_granted() {
    let _markers = Markers;
    let m = Manager::builder().authkey(KEY).start().unwrap();
    let (d, lock) = (m.dict::<u8, u64>().unwrap(), m.lock().unwrap());
    let manager_pid = m.pid().unwrap();
    // Both clients open their lanes first, in this order: the dispatcher
    // serves the acquirer's lane after the updater's, from the copy of the
    // list it took before the update.
    let (to_updater, theirs) = Pipe::<bool>::duplex().unwrap();
    let mut updater = KillOnDrop(Process::builder().spawn(update_slowly, (d.clone(), theirs)).unwrap());
    assert!(to_updater.recv_timeout(LONG).unwrap(), "the updating client did not get going");
    let before = threads_of(manager_pid);
    let (to_acquirer, theirs) = Pipe::<bool>::duplex().unwrap();
    let acquirer = KillOnDrop(Process::builder().spawn(acquire_through_the_lane, (lock.clone(), theirs)).unwrap());
    assert!(to_acquirer.recv_timeout(LONG).unwrap(), "the acquiring client did not get going");
    assert!(threads_of(manager_pid) > before, "the acquiring client has no connection thread");
    to_updater.send(&true).unwrap();
    wait_until("the slow update to start", || marker("started", std::process::id()).exists());
    to_acquirer.send(&true).unwrap();
    let acquirer_pid = acquirer.0.pid().expect("started") as u32;
    wait_until("the acquiring client to wait in its lane", || asleep_on_a_futex(acquirer_pid));
    std::thread::sleep(Duration::from_millis(200));
    drop(acquirer);
    // Its connection's thread ends once `close` gave up waiting for the
    // dispatcher (after `CLOSE_WAIT`) and its session is gone.
    wait_until("the dead client's connection thread to end", || threads_of(manager_pid) <= before);
    std::fs::write(marker("release", std::process::id()), b"").unwrap();
    updater.0.join_timeout(LONG).unwrap();
    assert_eq!(updater.0.exitcode(), Some(0), "the slow update failed");
    // Before, the dispatcher went on to the dead client's request after
    // the update, and granted it the lock, which stayed held.
    match lock.acquire_timeout(Duration::from_secs(2)) {
        Ok(guard) => drop(guard),
        Err(e) => panic!("the lock was granted to the dead client: {e:?}"),
    }
    assert_eq!(d.get(&0).unwrap(), Some(1));
    m.shutdown().unwrap();
}
