//! Pipes and connections across real child processes: SPEC.md, "Pipe and
//! Connection" (everything but `wait` and `Listener`/`Client`, which have
//! their own files).

use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use multiproc::{Connection, ConnectionError, Pipe, Process, SendFd};
use serde::{Deserialize, Serialize};

mod process_support;

use process_support::{JOIN as LONG, join_or_kill as join};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Text(String),
    Numbers(Vec<i64>),
    Nothing,
}

fn echo_upper(conn: Connection<String>) -> usize {
    let mut n = 0;
    while let Ok(s) = conn.recv_timeout(LONG) {
        conn.send(&s.to_uppercase()).unwrap();
        n += 1;
    }
    n
}

fn echo_msg(conn: Connection<Msg>) {
    while let Ok(m) = conn.recv_timeout(LONG) {
        conn.send(&m).unwrap();
    }
}

fn echo_bytes(conn: Connection) {
    while let Ok(b) = conn.recv_bytes_timeout(LONG) {
        conn.send_bytes(&b).unwrap();
    }
}

fn echo_typed_bytes(conn: Connection<Vec<u8>>) {
    while let Ok(v) = conn.recv_timeout(LONG) {
        conn.send(&v).unwrap();
    }
}

#[test]
fn duplex_pipe_talks_both_ways_with_a_child() {
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let child = Process::spawn(echo_upper, (theirs,)).unwrap();
    for word in ["ping", "pong", "multiproc"] {
        ours.send(&word.to_string()).unwrap();
        assert_eq!(ours.recv_timeout(LONG).unwrap(), word.to_uppercase());
    }
    drop(ours);
    assert_eq!(join(child), 3);
}

fn send_three(tx: Connection<u32>) {
    for i in 1..=3 {
        tx.send(&i).unwrap();
    }
}

fn sum_until_closed(rx: Connection<u32>) -> u32 {
    let mut sum = 0;
    loop {
        match rx.recv_timeout(LONG) {
            Ok(x) => sum += x,
            Err(e) if e.is_closed() => return sum,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn one_way_pipe_works_in_both_directions_across_a_child() {
    // The child writes, the parent reads.
    let (rx, tx) = Pipe::<u32>::one_way().unwrap();
    assert!(rx.readable() && !rx.writable() && tx.writable() && !tx.readable());
    let child = Process::spawn(send_three, (tx,)).unwrap();
    let got: Vec<u32> = (0..3).map(|_| rx.recv_timeout(LONG).unwrap()).collect();
    assert_eq!(got, [1, 2, 3]);
    join(child);
    assert!(rx.recv_timeout(LONG).unwrap_err().is_closed());

    // The parent writes, the child reads.
    let (rx, tx) = Pipe::<u32>::one_way().unwrap();
    let child = Process::spawn(sum_until_closed, (rx,)).unwrap();
    for x in [10, 20, 30] {
        tx.send(&x).unwrap();
    }
    drop(tx);
    assert_eq!(join(child), 60);
}

#[test]
fn typed_messages_round_trip_through_a_child() {
    let (ours, theirs) = Pipe::<Msg>::duplex().unwrap();
    let child = Process::spawn(echo_msg, (theirs,)).unwrap();
    let messages = [Msg::Text("héllo".into()), Msg::Numbers(vec![-1, 0, i64::MAX]), Msg::Nothing];
    for m in &messages {
        ours.send(m).unwrap();
    }
    for m in &messages {
        assert_eq!(&ours.recv_timeout(LONG).unwrap(), m);
    }
    drop(ours);
    join(child);
}

#[test]
fn raw_bytes_keep_message_boundaries_through_a_child() {
    let (ours, theirs) = Pipe::<Vec<u8>>::duplex().unwrap();
    let child = Process::spawn(echo_bytes, (theirs,)).unwrap();
    // An empty message is a message; three sends are three receives.
    let sent: [&[u8]; 5] = [b"one", b"", b"three", &[0, 255, 0], b""];
    for m in sent {
        ours.send_bytes(m).unwrap();
    }
    for m in sent {
        assert_eq!(ours.recv_bytes_timeout(LONG).unwrap(), m);
    }
    assert!(!ours.poll(Duration::from_millis(100)).unwrap(), "no more messages than were sent");
    drop(ours);
    join(child);
}

#[test]
fn empty_typed_messages_are_messages() {
    let (a, b) = Pipe::<()>::duplex().unwrap();
    for _ in 0..3 {
        a.send(&()).unwrap();
    }
    for _ in 0..3 {
        b.recv_timeout(LONG).unwrap();
    }
    assert!(b.recv_timeout(Duration::from_millis(50)).unwrap_err().is_timeout());
}

fn send_for_into(tx: Connection) {
    tx.send_bytes(b"hello").unwrap();
    tx.send_bytes(b"this message is longer than the buffer").unwrap();
    tx.send_bytes(b"after").unwrap();
}

#[test]
fn recv_bytes_into_honours_the_offset_and_returns_a_too_long_message_whole() {
    let (rx, tx) = Pipe::<Vec<u8>>::one_way().unwrap();
    let child = Process::spawn(send_for_into, (tx,)).unwrap();
    let mut buf = [b'.'; 10];

    // An offset past the end is refused before anything is received.
    match rx.recv_bytes_into_timeout(&mut buf, 11, LONG) {
        Err(ConnectionError::OffsetOutOfBounds { offset: 11, len: 10 }) => {}
        other => panic!("expected OffsetOutOfBounds, got {other:?}"),
    }

    assert_eq!(rx.recv_bytes_into_timeout(&mut buf, 3, LONG).unwrap(), 5);
    assert_eq!(&buf, b"...hello..");

    match rx.recv_bytes_into_timeout(&mut buf, 0, LONG) {
        Err(ConnectionError::BufferTooShort(message)) => {
            assert_eq!(message, b"this message is longer than the buffer");
        }
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    assert_eq!(&buf, b"...hello..", "the buffer is untouched when the message does not fit");

    // The next message is intact, and fits exactly at the end.
    assert_eq!(rx.recv_bytes_into(&mut buf, 5).unwrap(), 5);
    assert_eq!(&buf, b"...heafter");
    join(child);
}

fn reply_when_asked(conn: Connection<String>) {
    let question = conn.recv_timeout(LONG).unwrap();
    conn.send(&format!("answer to {question}")).unwrap();
}

#[test]
fn poll_waits_about_the_timeout_then_sees_the_message() {
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let child = Process::spawn(reply_when_asked, (theirs,)).unwrap();

    let t = Duration::from_millis(300);
    let start = Instant::now();
    assert!(!ours.poll(t).unwrap());
    let took = start.elapsed();
    assert!(took >= t && took < t + Duration::from_secs(3), "poll({t:?}) took {took:?}");

    ours.send(&"q".to_string()).unwrap();
    assert!(ours.poll(LONG).unwrap());
    assert!(ours.poll(Duration::ZERO).unwrap(), "polling does not consume the message");
    assert_eq!(ours.recv_timeout(Duration::ZERO).unwrap(), "answer to q");
    join(child);
}

#[test]
fn recv_timeout_waits_about_the_timeout() {
    let (_a, b) = Pipe::<u8>::duplex().unwrap();
    let t = Duration::from_millis(300);
    let start = Instant::now();
    assert!(b.recv_timeout(t).unwrap_err().is_timeout());
    let took = start.elapsed();
    assert!(took >= t && took < t + Duration::from_secs(3), "recv_timeout({t:?}) took {took:?}");
}

/// A 16 MiB pattern that reveals any lost, duplicated or reordered chunk.
fn big_pattern() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..16 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn sixteen_mib_messages_round_trip_as_bytes_and_typed() {
    let data = big_pattern();

    let (ours, theirs) = Pipe::<Vec<u8>>::duplex().unwrap();
    let child = Process::spawn(echo_bytes, (theirs,)).unwrap();
    ours.send_bytes(&data).unwrap();
    let back = ours.recv_bytes_timeout(LONG).unwrap();
    assert!(back == data, "raw 16 MiB message came back different ({} bytes)", back.len());
    drop(ours);
    join(child);

    let (ours, theirs) = Pipe::<Vec<u8>>::duplex().unwrap();
    let child = Process::spawn(echo_typed_bytes, (theirs,)).unwrap();
    ours.send(&data).unwrap();
    let back = ours.recv_timeout(LONG).unwrap();
    assert!(back == data, "typed 16 MiB Vec<u8> came back different ({} bytes)", back.len());
    drop(ours);
    join(child);
}

fn say_bye_and_exit(conn: Connection<String>) {
    conn.send(&"bye".to_string()).unwrap();
}

#[test]
fn after_the_peer_exits_recv_is_end_of_stream_and_poll_is_true() {
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let child = Process::spawn(say_bye_and_exit, (theirs,)).unwrap();
    join(child);
    // What the child sent before it exited is still delivered.
    assert!(ours.poll(Duration::ZERO).unwrap());
    assert_eq!(ours.recv_timeout(LONG).unwrap(), "bye");
    // Then end of stream, at once and every time.
    assert!(ours.poll(Duration::ZERO).unwrap());
    let start = Instant::now();
    assert!(ours.recv_timeout(LONG).unwrap_err().is_closed());
    assert!(ours.recv_bytes_timeout(LONG).unwrap_err().is_closed());
    assert!(ours.recv().unwrap_err().is_closed());
    // At once, not after a timeout (LONG): room for a loaded machine.
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(ours.poll(LONG).unwrap());
    // Sending to a peer that is gone is an error too.
    assert!(matches!(ours.send(&"hello?".to_string()), Err(ConnectionError::Closed)));
}

fn read_forever(conn: Connection<String>) {
    loop {
        let _ = conn.recv_timeout(LONG);
    }
}

#[test]
fn a_killed_peer_is_end_of_stream_not_a_hang() {
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let mut child = Process::spawn(read_forever, (theirs,)).unwrap();
    child.kill().unwrap();
    assert!(child.join_timeout(LONG).is_err());
    assert_eq!(child.exitcode(), Some(-9));
    assert!(ours.poll(LONG).unwrap());
    assert!(ours.recv_timeout(LONG).unwrap_err().is_closed());
}

fn recv_one(conn: Connection<String>) -> Result<String, String> {
    conn.recv_timeout(Duration::from_secs(2)).map_err(|e| e.to_string())
}

#[test]
fn a_message_that_poll_already_took_in_is_not_lost_when_the_end_is_handed_on() {
    let (a, b) = Pipe::<String>::duplex().unwrap();
    a.send(&"first".to_string()).unwrap();
    // poll (and wait) read the message into this process's buffer.
    assert!(b.poll(LONG).unwrap());
    match Process::spawn(recv_one, (b,)) {
        // Handed on, the end must bring the message along...
        Ok(child) => assert_eq!(join(child), Ok("first".to_string())),
        // ...or refuse to go, saying why.
        Err(e) => assert!(e.to_string().contains("already received"), "{e}"),
    }
}

fn never_read(_conn: Connection<String>) {
    std::thread::sleep(LONG);
}

#[test]
fn a_send_blocked_on_a_full_pipe_fails_when_the_reader_is_killed() {
    let (ours, theirs) = Pipe::<String>::duplex().unwrap();
    let mut child = Process::spawn(never_read, (theirs,)).unwrap();
    // Messages just under the size that travels through shared memory, so
    // that they fill the socket.
    let (progress, sends) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let chunk = vec![7u8; 60 * 1024];
        loop {
            if let Err(e) = ours.send_bytes(&chunk) {
                return e;
            }
            let _ = progress.send(());
        }
    });
    // Blocked: no send has finished for a while.
    while sends.recv_timeout(Duration::from_millis(300)).is_ok() {}
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
    let start = Instant::now();
    while !sender.is_finished() {
        assert!(start.elapsed() < LONG, "the send is still blocked after the reader was killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sender.join().unwrap().is_closed());
}

#[test]
fn a_closed_end_or_the_wrong_direction_is_an_error() {
    let (mut a, b) = Pipe::<u8>::duplex().unwrap();
    a.close();
    assert!(a.closed());
    let mut buf = [0u8; 4];
    assert!(matches!(a.send(&1), Err(ConnectionError::HandleClosed)));
    assert!(matches!(a.send_bytes(b"x"), Err(ConnectionError::HandleClosed)));
    assert!(matches!(a.recv_timeout(LONG), Err(ConnectionError::HandleClosed)));
    assert!(matches!(a.recv_bytes_timeout(LONG), Err(ConnectionError::HandleClosed)));
    assert!(matches!(a.recv_bytes_into_timeout(&mut buf, 0, LONG), Err(ConnectionError::HandleClosed)));
    assert!(matches!(a.poll(LONG), Err(ConnectionError::HandleClosed)));
    // The other end sees end of stream.
    assert!(b.recv_timeout(LONG).unwrap_err().is_closed());
    // A closed end cannot be given to a child.
    assert!(Process::spawn(send_three_u8, (a,)).is_err());

    let (rx, tx) = Pipe::<u8>::one_way().unwrap();
    assert!(matches!(rx.send(&1), Err(ConnectionError::NotWritable)));
    assert!(matches!(rx.send_bytes(b"x"), Err(ConnectionError::NotWritable)));
    assert!(matches!(tx.recv_timeout(LONG), Err(ConnectionError::NotReadable)));
    assert!(matches!(tx.recv_bytes_timeout(LONG), Err(ConnectionError::NotReadable)));
    assert!(matches!(tx.recv_bytes_into_timeout(&mut buf, 0, LONG), Err(ConnectionError::NotReadable)));
    assert!(matches!(tx.poll(Duration::ZERO), Err(ConnectionError::NotReadable)));

    // The direction travels with the end: a child given the receive end cannot send.
    let child = Process::spawn(try_to_send_on, (rx,)).unwrap();
    assert_eq!(join(child), "this end of a one-way pipe can only receive");
}

fn send_three_u8(conn: Connection<u8>) {
    for i in 0..3 {
        conn.send(&i).unwrap();
    }
}

fn try_to_send_on(rx: Connection<u8>) -> String {
    rx.send(&1).unwrap_err().to_string()
}

fn write_into_fd(conn: Connection<SendFd>) -> u32 {
    let mut count = 0;
    while let Ok(fd) = conn.recv_timeout(LONG) {
        let mut file = std::fs::File::from(fd.into_inner());
        write!(file, "written by child {}", std::process::id()).unwrap();
        count += 1;
    }
    count
}

#[test]
fn file_descriptors_can_be_sent_to_a_child() {
    let (ours, theirs) = Pipe::<SendFd>::duplex().unwrap();
    let child = Process::spawn(write_into_fd, (theirs,)).unwrap();
    let pid = child.pid().unwrap();

    // A file: the child writes into the very file the parent opened.
    let path = std::env::temp_dir().join(format!("multiproc-test-sendfd-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    ours.send(&SendFd::from(file.try_clone().unwrap())).unwrap();

    // A pipe: the parent keeps the read end, the child gets the write end.
    let (mut reader, writer) = std::io::pipe().unwrap();
    ours.send(&SendFd::from(writer)).unwrap(); // our copy of the write end is dropped here

    drop(ours);
    assert_eq!(join(child), 2);

    let expected = format!("written by child {pid}");
    let mut text = String::new();
    file.rewind().unwrap();
    file.read_to_string(&mut text).unwrap();
    assert_eq!(text, expected);
    // Every write end is closed now, so reading ends.
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, expected);
}

fn hand_back_a_new_pipe(conn: Connection<Connection<String>>) {
    let (mine, yours) = Pipe::<String>::duplex().unwrap();
    conn.send(&yours).unwrap();
    drop(yours);
    let question = mine.recv_timeout(LONG).unwrap();
    mine.send(&format!("{question} (via a pipe made by the child)")).unwrap();
}

#[test]
fn connections_travel_inside_messages_both_ways() {
    let (ours, theirs) = Pipe::<Connection<String>>::duplex().unwrap();
    let child = Process::spawn(hand_back_a_new_pipe, (theirs,)).unwrap();
    let made_by_child = ours.recv_timeout(LONG).unwrap();
    made_by_child.send(&"hi".to_string()).unwrap();
    assert_eq!(made_by_child.recv_timeout(LONG).unwrap(), "hi (via a pipe made by the child)");
    join(child);
    assert!(made_by_child.recv_timeout(LONG).unwrap_err().is_closed());
}

#[test]
fn recv_timeout_keeps_its_timeout_while_another_thread_is_blocked_receiving() {
    let (a, b) = Pipe::<u32>::duplex().unwrap();
    let receiver = process_support::blocked_receiver(&b, LONG * 3);
    let (tx, rx) = std::sync::mpsc::channel();
    let second = {
        let b = b.clone();
        std::thread::spawn(move || {
            let _ = tx.send(b.recv_timeout(Duration::from_millis(50)).map_err(|e| e.is_timeout()));
        })
    };
    let got = rx.recv_timeout(LONG);
    // Whatever happened, release the receiver (and with it a stuck second one).
    a.send(&7).unwrap();
    a.send(&8).unwrap();
    let first = receiver.join().unwrap().unwrap();
    second.join().unwrap();
    assert_eq!(got.expect("the second receive returned within its timeout"), Err(true));
    assert_eq!(first, 7);
}

// ---------- sends from a thread-local destructor ----------

thread_local! {
    /// A connection to send a last message on when the thread ends.
    static ON_EXIT: std::cell::RefCell<Option<SendOnExit>> = const { std::cell::RefCell::new(None) };
}

struct SendOnExit(Connection<String>, Connection<Connection<String>>);

impl Drop for SendOnExit {
    fn drop(&mut self) {
        // By now the thread's other thread-locals (those first used after
        // this one was set) are gone.
        self.0.send(&"from the destructor".to_string()).unwrap();
        let handle_sent = self.1.send(&self.0).is_ok();
        self.0.send(&format!("handle sent: {handle_sent}")).unwrap();
    }
}

/// In a child: a thread that sends once, and more from a thread-local
/// destructor as it ends: a plain message, then a handle.
fn send_from_a_thread_local_destructor(conn: Connection<String>, handles: Connection<Connection<String>>) {
    std::thread::spawn(move || {
        ON_EXIT.with(|g| *g.borrow_mut() = Some(SendOnExit(conn.clone(), handles.clone())));
        conn.send(&"from the thread".to_string()).unwrap();
        handles.send(&conn).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn a_send_from_a_thread_local_destructor_works_or_fails_cleanly() {
    let (rx, tx) = Pipe::<String>::one_way().unwrap();
    let (handles_rx, handles_tx) = Pipe::<Connection<String>>::one_way().unwrap();
    let child = Process::spawn(send_from_a_thread_local_destructor, (tx, handles_tx)).unwrap();
    join(child); // panics if the child aborted
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "from the thread");
    let _first_handle = handles_rx.recv_timeout(LONG).unwrap();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "from the destructor");
    let last = rx.recv_timeout(LONG).unwrap();
    assert!(last.starts_with("handle sent: "), "{last}");
}
