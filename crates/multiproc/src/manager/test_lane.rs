//! Lane tests with a client that breaks the lane's rules: whatever its
//! lane says, a client whose socket closes is gone (its locks freed, its
//! connection's thread ended). The manager is a process of its own, the
//! client a child process killed by the test; every wait is bounded.

use std::time::{Duration, Instant};

use super::lane::Lane;
use super::protocol::{Op, Owner, Reply, Request, Response};
use super::{AcquireError, Manager, Proxy};
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
