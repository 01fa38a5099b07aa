//! `wait()` over connections and process handles: SPEC.md, "Pipe and
//! Connection" — returns the ready ones, ≈T and empty when none is ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Connection, ConnectionError, Pipe, Process, Waitable, wait};

mod process_support;
// For `assert_about` (with room for a loaded machine: t + 3 s).
mod sync_support;

use process_support::{JOIN as LONG, join_or_kill as join};
use sync_support::assert_about;

/// On "go" over `control`, sends on the second and third connections, then
/// waits for `control` to close.
fn answer_on_two(control: Connection<u8>, second: Connection<u8>, third: Connection<u8>) {
    control.recv_timeout(LONG).unwrap();
    second.send(&1).unwrap();
    third.send(&2).unwrap();
    while control.recv_timeout(LONG).is_ok() {}
}

#[test]
fn wait_returns_exactly_the_connections_that_are_ready() {
    let (c0, t0) = Pipe::<u8>::duplex().unwrap();
    let (c1, t1) = Pipe::<u8>::duplex().unwrap();
    let (c2, t2) = Pipe::<u8>::duplex().unwrap();
    let child = Process::spawn(answer_on_two, (t0, t1, t2)).unwrap();
    let conns: [&dyn Waitable; 3] = [&c0, &c1, &c2];

    let t = Duration::from_millis(300);
    let start = Instant::now();
    assert_eq!(wait(&conns, Some(t)).unwrap(), Vec::<usize>::new());
    assert_about(start, t);

    c0.send(&0).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ready = wait(&conns, Some(LONG)).unwrap();
        assert!(!ready.is_empty(), "wait timed out with messages on the way");
        assert!(!ready.contains(&0), "connection 0 has nothing to read: {ready:?}");
        for i in ready {
            let conn = [&c0, &c1, &c2][i];
            assert_eq!(conn.recv_timeout(LONG).unwrap(), i as u8);
            seen.push(i);
        }
    }
    seen.sort();
    assert_eq!(seen, [1, 2]);

    // Everything was read: nothing is ready any more.
    let start = Instant::now();
    assert!(wait(&conns, Some(t)).unwrap().is_empty());
    assert_about(start, t);

    drop(c0);
    join(child);
    // The child is gone: its ends are at end of stream, which counts as ready.
    assert_eq!(wait(&[&c1, &c2], Some(LONG)).unwrap(), [0, 1]);
    assert!(c1.recv_timeout(LONG).unwrap_err().is_closed());
}

#[test]
fn a_message_already_buffered_counts_as_ready() {
    let (a, b) = Pipe::<u32>::duplex().unwrap();
    a.send(&1).unwrap();
    a.send(&2).unwrap();
    // Both frames are in the socket; the first receive reads them both into
    // the connection's buffer, so the socket itself is no longer readable.
    assert_eq!(b.recv_timeout(LONG).unwrap(), 1);
    assert_eq!(wait(&[&b], Some(Duration::ZERO)).unwrap(), [0]);
    assert_eq!(wait(&[&b], Some(LONG)).unwrap(), [0]);
    assert_eq!(b.recv_timeout(Duration::ZERO).unwrap(), 2);
    assert!(wait(&[&b], Some(Duration::from_millis(50))).unwrap().is_empty());
}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn exit_when_closed(conn: Connection<u8>) {
    while conn.recv_timeout(LONG).is_ok() {}
}

#[test]
fn wait_returns_the_processes_that_exited() {
    let (keep, theirs) = Pipe::<u8>::duplex().unwrap();
    let slow = Process::spawn(exit_when_closed, (theirs,)).unwrap();
    let fast = Process::spawn(nap, (100u64,)).unwrap();

    assert_eq!(wait(&[&slow, &fast], Some(LONG)).unwrap(), [1]);
    assert!(slow.is_alive());
    assert_eq!(fast.exitcode(), Some(0), "ready means exited");

    let t = Duration::from_millis(300);
    let start = Instant::now();
    assert!(wait(&[&slow], Some(t)).unwrap().is_empty());
    assert_about(start, t);

    drop(keep);
    assert_eq!(wait(&[&slow], Some(LONG)).unwrap(), [0]);
    assert_eq!(wait(&[&slow, &fast], Some(Duration::ZERO)).unwrap(), [0, 1]);
    join(slow);
    join(fast);
}

fn send_then_exit_when_closed(conn: Connection<String>) {
    conn.send(&"done".to_string()).unwrap();
    while conn.recv_timeout(LONG).is_ok() {}
}

#[test]
fn connections_and_processes_mix_in_one_wait() {
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let (idle, _idle_peer) = Pipe::<String>::duplex().unwrap();
    let child = Process::spawn(send_then_exit_when_closed, (theirs,)).unwrap();

    assert_eq!(wait(&[&idle as &dyn Waitable, &child, &ours], Some(LONG)).unwrap(), [2]);
    assert_eq!(ours.recv_timeout(LONG).unwrap(), "done");
    assert!(wait(&[&idle as &dyn Waitable, &child, &ours], Some(Duration::from_millis(100))).unwrap().is_empty());

    // Closing our end lets the child exit.
    drop(ours);
    assert_eq!(wait(&[&idle as &dyn Waitable, &child], Some(LONG)).unwrap(), [1]);
    join(child);
}

#[test]
fn a_closed_peer_makes_a_connection_ready_at_once() {
    let (a, b) = Pipe::<u8>::duplex().unwrap();
    drop(a);
    let start = Instant::now();
    assert_eq!(wait(&[&b], Some(LONG)).unwrap(), [0]);
    // At once, not after the timeout (LONG): room for a loaded machine.
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn objects_that_cannot_be_waited_on_are_errors() {
    let (mut a, _b) = Pipe::<u8>::duplex().unwrap();
    a.close();
    assert!(matches!(wait(&[&a], Some(LONG)), Err(ConnectionError::HandleClosed)));

    let (_rx, tx) = Pipe::<u8>::one_way().unwrap();
    assert!(matches!(wait(&[&tx], Some(LONG)), Err(ConnectionError::NotReadable)));

    let unstarted = Process::new(nap, (1u64,)).unwrap();
    assert!(matches!(wait(&[&unstarted], Some(LONG)), Err(ConnectionError::NotWaitable(_))));
}

#[test]
fn an_empty_list_waits_the_timeout_or_returns_at_once() {
    let t = Duration::from_millis(200);
    let start = Instant::now();
    assert!(wait(&[], Some(t)).unwrap().is_empty());
    assert_about(start, t);

    let start = Instant::now();
    assert!(wait(&[], None).unwrap().is_empty());
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

/// A waitable with no descriptor: ready once a flag is set.
struct Flag(Arc<AtomicBool>);

impl Waitable for Flag {
    fn is_ready(&self) -> Result<bool, ConnectionError> {
        Ok(self.0.load(Ordering::SeqCst))
    }

    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

#[test]
fn waitables_without_a_descriptor_are_rechecked() {
    let flag = Arc::new(AtomicBool::new(false));
    let (_a, idle) = Pipe::<u8>::duplex().unwrap();
    let setter = {
        let flag = flag.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::SeqCst);
        })
    };
    let start = Instant::now();
    assert_eq!(wait(&[&idle as &dyn Waitable, &Flag(flag)], Some(LONG)).unwrap(), [1]);
    assert_about(start, Duration::from_millis(200));
    setter.join().unwrap();
}

#[test]
fn wait_and_poll_keep_their_timeout_while_another_thread_is_blocked_receiving() {
    let (a, b) = Pipe::<u32>::duplex().unwrap();
    let receiver = process_support::blocked_receiver(&b, LONG * 3);
    let (tx, rx) = std::sync::mpsc::channel();
    let checker = {
        let b = b.clone();
        std::thread::spawn(move || {
            let polled = b.poll(Duration::from_millis(50)).map_err(|e| e.to_string());
            let waited = wait(&[&b], Some(Duration::from_millis(50))).map_err(|e| e.to_string());
            let _ = tx.send((polled, waited));
        })
    };
    let got = rx.recv_timeout(LONG);
    // Whatever happened, release the receiver (and with it a stuck checker).
    a.send(&7).unwrap();
    assert_eq!(receiver.join().unwrap().unwrap(), 7);
    checker.join().unwrap();
    let (polled, waited) = got.expect("poll and wait returned within their timeouts");
    assert_eq!(polled, Ok(false));
    assert_eq!(waited, Ok(vec![]));
}
