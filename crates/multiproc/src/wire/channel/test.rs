//! Receive edge cases of `Channel` over real socket pairs.

use super::super::frame::HEADER_LEN;
use super::*;

#[test]
fn poll_sees_a_frame_completed_after_a_receive_timed_out_in_its_middle() {
    let (a, b) = Channel::pair().unwrap();
    // The header of a 3-byte message, its payload still missing: a
    // receive with a deadline takes the header and gives up.
    imp::send_all(b.as_fd(), &[&Header::new(Kind::Data, 0, 3).encode()], &[]).unwrap();
    let short = Deadline::after(Duration::from_millis(20));
    assert!(matches!(a.recv(short, None), Err(RecvError::Timeout)));
    // The payload arrives: the frame is complete, with fewer bytes
    // buffered than a header.
    imp::send_all(b.as_fd(), &[b"abc"], &[]).unwrap();
    assert!(a.poll(Deadline::after(Duration::from_secs(10))).unwrap());
    assert!(a.poll(Deadline::after(Duration::ZERO)).unwrap());
    assert_eq!(a.recv(Deadline::after(Duration::ZERO), None).unwrap().payload, b"abc");
}

#[test]
fn poll_refuses_a_frame_over_the_limit_from_its_header_without_buffering_it() {
    let (a, b) = Channel::pair().unwrap();
    a.set_recv_limit(Some(100));
    // The header of a 1 MiB message and 128 KiB of it: more than the
    // limit, less than the frame, so the frame never completes.
    let header = Header::new(Kind::Data, 0, 1 << 20).encode();
    let sender = std::thread::spawn(move || {
        let _ = imp::send_all(b.as_fd(), &[&header, &vec![0u8; 128 << 10]], &[]);
        b
    });
    // The frame is refused from its header: poll reports it ready (the
    // receive fails at once) instead of waiting for bytes past the limit.
    assert!(a.poll(Deadline::after(Duration::from_secs(2))).unwrap(), "a refused frame is ready");
    let buffered = a.recv.lock().unwrap().decoder.buffered();
    assert!(buffered <= 64 * 1024 + HEADER_LEN, "{buffered} bytes buffered past a limit of 100");
    match a.recv(Deadline::after(Duration::ZERO), None) {
        Err(RecvError::Wire(WireError::Corrupt(what))) => assert!(what.contains("100 allowed"), "{what}"),
        other => panic!("an oversized frame is an error: {other:?}"),
    }
    drop(a);
    drop(sender.join().unwrap());
}

#[test]
fn descriptors_that_no_frame_announces_are_an_error_not_handed_to_a_later_frame() {
    let (a, b) = Channel::pair().unwrap();
    let stray: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    // A frame that announces no descriptor but carries one, then two
    // plain frames in one write (so a read takes both).
    let header = Header::new(Kind::Data, 0, 3).encode();
    imp::send_all(b.as_fd(), &[&header, b"abc"], &[stray.as_fd()]).unwrap();
    imp::send_all(b.as_fd(), &[&header, b"def", &header, b"ghi"], &[]).unwrap();
    let long = || Deadline::after(Duration::from_secs(10));
    match a.recv(long(), None) {
        Err(RecvError::Wire(WireError::Corrupt(what))) => {
            assert!(what.contains("no frame announced"), "{what}");
            // The stream stays failed: the next frame would get the stray.
            match a.recv(long(), None) {
                Err(RecvError::Wire(WireError::Corrupt(again))) => assert_eq!(again, what),
                other => panic!("the stream went on after the error: {:?}", other.map(|f| f.fds)),
            }
        }
        Ok(frame) => {
            let next = a.recv(long(), None).map(|f| f.fds);
            panic!("a stray descriptor was kept: first frame {:?}, then {next:?}", frame.payload)
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn a_peer_gone_right_after_a_header_cut_a_message_short_not_the_stream() {
    let (a, b) = Channel::pair().unwrap();
    // A whole message, then the header of a 3-byte one, and the peer dies.
    b.send(Kind::Data, b"whole", &[]).unwrap();
    imp::send_all(b.as_fd(), &[&Header::new(Kind::Data, 0, 3).encode()], &[]).unwrap();
    drop(b);
    let long = || Deadline::after(Duration::from_secs(10));
    assert_eq!(a.recv(long(), None).unwrap().payload, b"whole");
    match a.recv(long(), None) {
        Err(RecvError::Wire(WireError::Corrupt(what))) => assert!(what.contains("middle of a frame"), "{what}"),
        other => panic!("a cut message is not a clean end of stream: {other:?}"),
    }
}

#[test]
fn a_receive_that_finds_its_message_taken_by_another_reader_waits_on_until_its_deadline() {
    // Two receivers on one socket (as processes sharing a pipe end are):
    // both wake for one message, one takes it, the other finds nothing.
    let (a, b) = Channel::pair().unwrap();
    let a = std::sync::Arc::new(a);
    let a2 = std::sync::Arc::new(Channel::unix(a.fd.try_clone().unwrap()));
    for round in 0..20u8 {
        let receivers: Vec<_> = [a.clone(), a2.clone()]
            .into_iter()
            .map(|end| std::thread::spawn(move || end.recv(Deadline::after(Duration::from_secs(20)), None)))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        b.send(Kind::Data, &[round], &[]).unwrap();
        // Long enough for the loser of the race to give up, if it did.
        std::thread::sleep(Duration::from_millis(100));
        b.send(Kind::Data, &[round], &[]).unwrap();
        for receiver in receivers {
            match receiver.join().unwrap() {
                Ok(frame) => assert_eq!(frame.payload, [round]),
                Err(e) => panic!("round {round}: a receive with 20 s left gave up: {e}"),
            }
        }
    }
}

#[test]
fn a_receiver_that_does_not_read_pins_one_arena_not_a_megabyte_per_message() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    const MESSAGES: usize = 100;
    let (a, b) = Channel::pair().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                b.send(Kind::Data, &vec![i as u8; 1 << 20], &[]).unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
            b
        })
    };
    // Nobody reads. A sender that offloaded each message to a fresh memfd
    // got through all of them (100 MiB pinned by the socket); now it blocks
    // once the arena (8 MiB for 1 MiB messages) and the socket buffer are full.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) && sent.load(Ordering::Relaxed) < MESSAGES {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pinned = sent.load(Ordering::Relaxed);
    assert!(pinned < 16, "{pinned} messages of 1 MiB went out to a receiver that reads nothing");
    // Once the receiver reads, everything arrives, in order.
    for i in 0..MESSAGES {
        let frame = a.recv(Deadline::after(Duration::from_secs(20)), None).unwrap();
        assert_eq!(frame.payload.len(), 1 << 20, "message {i}");
        assert!(frame.payload.iter().all(|b| *b == i as u8), "message {i}");
    }
    drop(sender.join().unwrap());
}

#[test]
fn a_forged_ticket_is_an_error_not_a_panic() {
    let (a, b) = Channel::pair().unwrap();
    let ring = imp::shm::Mapping::anonymous("t", 4096).unwrap();
    let mut header = Header::new(Kind::Data, 2, 5);
    (header.offloaded, header.arena) = (true, true);
    // Misaligned, out of the ring, and never issued.
    for offset in [12_345u64, 1 << 40, 64] {
        let memfd = imp::memfd::sealed_with("t", b"hello").unwrap();
        let fds = [memfd.as_fd(), ring.as_fd()];
        imp::send_all(b.as_fd(), &[&header.encode(), &offset.to_le_bytes()], &fds).unwrap();
        match a.recv(Deadline::after(Duration::from_secs(10)), None) {
            Err(RecvError::Wire(WireError::Corrupt(what))) => assert!(what.contains("arena record"), "{what}"),
            other => panic!("offset {offset}: {:?}", other.map(|f| f.payload)),
        }
    }
}

#[test]
fn a_payload_in_parts_arrives_as_their_concatenation_on_every_path() {
    let long = || Deadline::after(Duration::from_secs(10));
    let in_parts = |size: usize| {
        let whole: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let cut = [size / 3, size / 2];
        (
            whole.clone(),
            [whole[..cut[0]].to_vec(), Vec::new(), whole[cut[0]..cut[1]].to_vec(), whole[cut[1]..].to_vec()],
        )
    };
    // Inline (small), through the arena (1 MiB), in a one-off memfd (past
    // the largest arena's share).
    let (a, b) = Channel::pair().unwrap();
    for size in [10, 1 << 20, 17 << 20] {
        let (whole, parts) = in_parts(size);
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        b.send_parts_until(Kind::Data, &parts, &[], Deadline::NEVER).unwrap();
        assert!(a.recv(long(), None).unwrap().payload == whole, "{size} bytes");
    }
    // Over TCP, a large payload goes inline, read while it is written.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let (a, b) = (Channel::stream(OwnedFd::from(server)), Channel::stream(OwnedFd::from(client)));
    let (whole, parts) = in_parts(1 << 20);
    let sender = std::thread::spawn(move || {
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        b.send_parts_until(Kind::Data, &parts, &[], long()).map_err(|e| format!("{e:?}"))
    });
    assert!(a.recv(long(), None).unwrap().payload == whole, "over TCP");
    sender.join().unwrap().unwrap();
}
