//! A peer that does not read pins a bounded number of large messages (those
//! of about 16 MiB and more, each in memory of its own): sends wait, or time
//! out, until it reads, then go on. Real child processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::process::Task;
use multiproc::{Connection, Pipe, Process};

mod process_support;

use process_support::{JOIN as LONG, join_or_kill};

/// A payload too large for the shared arena: it travels in a memfd of its own.
const LARGE: usize = 17 << 20;
/// Large messages a peer may leave unread (8 of 17 MiB are under 256 MiB).
const UNREAD: usize = 8;

/// Kills and reaps the child when a test fails before joining it.
struct Child(Option<Process>);

impl Child {
    fn join(mut self) {
        join_or_kill(self.0.take().expect("joined once"));
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut p) = self.0.take() {
            let _ = p.kill();
            let _ = p.join_timeout(LONG);
        }
    }
}

/// Serializes the tests: each sends hundreds of MiB.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads nothing until told how many messages to read (on `ctl`), reads
/// them, checks that message `i` is all `i`, answers how many it has read
/// in all; ends when `ctl` closes.
fn read_when_told(data: Connection, ctl: Connection<usize>) {
    let mut read = 0;
    while let Ok(n) = ctl.recv_timeout(LONG) {
        for _ in 0..n {
            let message = data.recv_bytes_timeout(LONG).unwrap();
            assert_eq!(message.len(), LARGE, "message {read}");
            assert!(message.iter().all(|b| *b == read as u8), "message {read}");
            read += 1;
        }
        ctl.send(&read).unwrap();
    }
}

fn payload(i: usize) -> Vec<u8> {
    vec![i as u8; LARGE]
}

/// A child running `peer` on the far ends of a data and a control
/// connection: our ends, and the child.
fn with_peer<F: Task<(Connection, Connection<usize>), ()>>(peer: F) -> (Connection, Connection<usize>, Child) {
    let (data, their_data) = Pipe::duplex().unwrap();
    let (ctl, their_ctl) = Pipe::<usize>::duplex().unwrap();
    let child = Child(Some(Process::spawn(peer, (their_data.clone(), their_ctl)).unwrap()));
    drop(their_data);
    (data, ctl, child)
}

/// Sends the [`UNREAD`] large messages a peer may leave unread (message `i`
/// is all `i`).
fn send_the_unread(data: &Connection) {
    for i in 0..UNREAD {
        data.send_bytes_timeout(&payload(i), LONG).unwrap();
    }
}

#[test]
fn a_peer_that_does_not_read_pins_a_bounded_number_of_large_messages() {
    let _serial = serial();
    let (data, ctl, child) = with_peer(read_when_told);
    // A sender thread with plain blocking sends. Before the bound, each
    // send went out at once, pinning 17 MiB more (until the socket held
    // 278 of them): capped here at 24, so the test stays within memory.
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (data, sent) = (data.clone(), sent.clone());
        std::thread::spawn(move || {
            for i in 0..24 {
                if data.send_bytes(&payload(i)).is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Watch for 3 s, and at least until the peer holds its share and 1 s
    // after that (the sends may be slow on a loaded machine).
    let start = Instant::now();
    let mut full_at = None;
    loop {
        let n = sent.load(Ordering::SeqCst);
        if n >= 24 {
            break;
        }
        if n >= UNREAD {
            let at = *full_at.get_or_insert_with(Instant::now);
            if start.elapsed() >= Duration::from_secs(3) && at.elapsed() >= Duration::from_secs(1) {
                break;
            }
        }
        assert!(start.elapsed() < LONG, "only {n} large messages went to a peer that reads nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pinned = sent.load(Ordering::SeqCst);
    assert_eq!(pinned, UNREAD, "large messages sent to a peer that reads nothing");
    // The blocked send has not even made its memory file yet.
    assert_eq!(payload_memfds(), 0, "payload memory files open in the sender");
    // Once the peer reads, the sends resume, and all arrive in order.
    ctl.send(&24).unwrap();
    assert_eq!(ctl.recv_timeout(LONG).unwrap(), 24);
    let start = Instant::now();
    while !sender.is_finished() {
        assert!(start.elapsed() < LONG, "the sender is still blocked after the peer read everything");
        std::thread::sleep(Duration::from_millis(10));
    }
    sender.join().unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 24);
    drop((data, ctl));
    child.join();
}

/// The sender's open descriptors that are payload memory files.
fn payload_memfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("multiproc-payload")))
        .count()
}

#[test]
fn a_send_with_a_timeout_gives_up_while_the_peer_does_not_read_and_resumes_when_it_does() {
    let _serial = serial();
    let (data, ctl, child) = with_peer(read_when_told);
    send_the_unread(&data);
    // The peer has read none of them: no room, at once or after a wait.
    let start = Instant::now();
    assert!(data.send_bytes_timeout(&payload(UNREAD), Duration::ZERO).unwrap_err().is_timeout());
    assert!(start.elapsed() < Duration::from_secs(5), "a send with no time to wait took {:?}", start.elapsed());
    let start = Instant::now();
    let err = data.send_bytes_timeout(&payload(UNREAD), Duration::from_millis(300)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("is the peer reading"), "{err}");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "took {took:?}");
    // The peer reads one: one more large message goes.
    ctl.send(&1).unwrap();
    assert_eq!(ctl.recv_timeout(LONG).unwrap(), 1);
    data.send_bytes_timeout(&payload(UNREAD), LONG).unwrap();
    assert!(data.send_bytes_timeout(&payload(UNREAD + 1), Duration::ZERO).unwrap_err().is_timeout());
    // It reads the rest, all intact and in order (the timed-out sends sent nothing).
    ctl.send(&UNREAD).unwrap();
    assert_eq!(ctl.recv_timeout(LONG).unwrap(), UNREAD + 1);
    data.send_bytes_timeout(&payload(UNREAD + 1), LONG).unwrap();
    ctl.send(&1).unwrap();
    assert_eq!(ctl.recv_timeout(LONG).unwrap(), UNREAD + 2);
    drop((data, ctl));
    child.join();
}

/// Reads nothing from `data`; exits when told on `ctl` (or when it closes).
fn exit_when_told(_data: Connection, ctl: Connection<usize>) {
    let _ = ctl.recv_timeout(LONG);
}

#[test]
fn a_send_waiting_for_a_peer_that_dies_unread_fails_instead_of_hanging() {
    let _serial = serial();
    let (data, ctl, child) = with_peer(exit_when_told);
    for i in 0..UNREAD {
        data.send_bytes(&payload(i)).unwrap();
    }
    // The peer exits with all eight unread while the next send waits (if
    // it is slow to start waiting, it finds the peer gone: the same error).
    let teller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        ctl.send(&0).unwrap();
        ctl
    });
    let start = Instant::now();
    assert!(data.send_bytes(&payload(UNREAD)).unwrap_err().is_closed());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    drop(teller.join().unwrap());
    child.join();
}

fn never_read(_data: Connection, ctl: Connection<usize>) {
    let _ = ctl.recv_timeout(LONG);
}

#[test]
fn a_mid_size_send_with_a_timeout_gives_up_when_the_shared_memory_is_full() {
    let _serial = serial();
    let (data, ctl, child) = with_peer(never_read);
    // 1 MiB messages go through the connection's 8 MiB of shared memory;
    // once it is full, a send without a timeout goes through the socket
    // (and blocks there for good), one with a timeout gives up.
    let sender = std::thread::spawn(move || {
        let message = vec![1u8; 1 << 20];
        for sent in 0..64 {
            match data.send_bytes_timeout(&message, Duration::from_millis(200)) {
                Ok(()) => {}
                Err(e) => return Ok((sent, e.is_timeout())),
            }
        }
        Err(data)
    });
    let start = Instant::now();
    while !sender.is_finished() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The child exits: a sender still blocked in the socket fails then.
    drop(ctl);
    child.join();
    match sender.join().unwrap() {
        Ok((sent, timed_out)) => assert!(timed_out && (4..16).contains(&sent), "{sent} sent, then {timed_out}"),
        Err(_) => panic!("64 messages of 1 MiB went to a peer that reads nothing"),
    }
    assert!(start.elapsed() < Duration::from_secs(10), "the timed send blocked for {:?}", start.elapsed());
}

#[test]
fn a_timed_send_behind_another_threads_blocked_send_gives_up_on_time() {
    let _serial = serial();
    let (data, ctl, child) = with_peer(read_when_told);
    send_the_unread(&data);
    // Another thread's send waits for the peer to read, holding the
    // connection's send side meanwhile.
    let data = Arc::new(data);
    let blocked = {
        let data = Arc::clone(&data);
        std::thread::spawn(move || data.send_bytes_timeout(&payload(UNREAD), LONG))
    };
    std::thread::sleep(Duration::from_millis(300));
    // A timed send waits for it only until its own deadline (whichever of
    // the two got there first, the peer reads nothing: a timeout either way).
    let (tx, rx) = std::sync::mpsc::channel();
    let timed = {
        let data = Arc::clone(&data);
        std::thread::spawn(move || {
            let start = Instant::now();
            let outcome = data.send_bytes_timeout(&payload(UNREAD), Duration::from_millis(200));
            let _ = tx.send((outcome.map_err(|e| e.is_timeout()), start.elapsed()));
        })
    };
    let seen = rx.recv_timeout(Duration::from_secs(10));
    // The peer reads the nine messages: the blocked send goes, and so would
    // a timed send still waiting behind it.
    ctl.send(&(UNREAD + 1)).unwrap();
    assert_eq!(ctl.recv_timeout(LONG).unwrap(), UNREAD + 1);
    blocked.join().unwrap().unwrap();
    timed.join().unwrap();
    let (outcome, took) = seen.expect("the timed send waited past its deadline for the other thread's send");
    assert_eq!(outcome, Err(true), "the timed send did not time out");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop((data, ctl));
    child.join();
}
