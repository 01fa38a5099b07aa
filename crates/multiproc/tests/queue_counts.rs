//! What a queue says about itself when nobody is putting or getting —
//! `qsize`, `empty`, `wait` readiness — must be exact, whatever the items'
//! sizes and whichever process put them. Every blocking call has a timeout.

mod queue_support;

use std::time::{Duration, Instant};

use multiproc::{Process, Queue};
use queue_support::{Child, LONG, SLACK};
use serde_bytes::ByteBuf;

/// Puts `n` items of `size` bytes each.
fn put_sized(q: Queue<ByteBuf>, n: usize, size: usize) {
    for i in 0..n {
        q.put(ByteBuf::from(vec![i as u8; size])).unwrap();
    }
}

#[test]
fn qsize_counts_medium_items_exactly_across_full_arenas() {
    // 10 KiB items go to a segment's 1 MiB arena, which fills after about a
    // hundred of them: 300 items span several segments.
    let (n, size) = (300, 10_000);
    let q = Queue::new().unwrap();
    let mut child = Child(Process::spawn(put_sized, (q.clone(), n, size)).unwrap());
    child.join();
    assert_eq!(q.qsize(), n, "after {n} puts");
    for left in (0..n).rev() {
        let item = q.get_timeout(LONG).unwrap();
        assert_eq!(item.len(), size);
        assert_eq!(q.qsize(), left, "after {} gets", n - left);
        assert_eq!(q.empty(), left == 0);
    }
}

/// In a child: closes its handle, then asks `wait` about it.
fn wait_on_closed(q: Queue<u8>) -> Vec<usize> {
    q.close();
    multiproc::wait(&[&q], Some(Duration::from_secs(3))).unwrap()
}

#[test]
fn wait_reports_a_closed_handle_ready_at_once() {
    // A get on a closed handle does not wait (it fails with Closed), so
    // `wait` must not wait for it either.
    let q = Queue::new().unwrap();
    let mut child = Child(Process::spawn(wait_on_closed, (q.clone(),)).unwrap());
    assert_eq!(child.join(), [0]);
    q.close();
    let start = Instant::now();
    assert_eq!(multiproc::wait(&[&q], Some(LONG)).unwrap(), [0]);
    assert!(start.elapsed() < SLACK);
}

/// In a child: puts items of `size` bytes until the queue refuses one;
/// returns how many went in and the error's message.
fn put_until_refused(q: Queue<ByteBuf>, size: usize) -> (usize, String) {
    for n in 0..100_000 {
        if let Err(e) = q.put(ByteBuf::from(vec![0; size])) {
            return (n, e.to_string());
        }
    }
    panic!("never refused");
}

#[test]
fn a_queue_out_of_room_says_how_many_items_wait() {
    // 60 KB items: a segment's arena takes 17 of them, far fewer than its
    // 4096 slots, so the queue is out of room after 2 × 17 items.
    let q = Queue::<ByteBuf>::builder().max_segments(2).build().unwrap();
    let mut child = Child(Process::spawn(put_until_refused, (q.clone(), 60_000)).unwrap());
    let (n, message) = child.join();
    assert_eq!(q.qsize(), n);
    assert!(message.contains(&format!("about {n} waiting")), "{n} items waiting, but: {message}");
}

#[test]
fn sizes_too_large_for_a_queue_are_errors_that_say_what_is_wrong() {
    let err = Queue::<u8>::bounded(usize::MAX).unwrap_err();
    assert!(err.to_string().contains("maxsize"), "{err}");
    let err = Queue::<u8>::builder().segment_slots(usize::MAX).build().unwrap_err();
    assert!(err.to_string().contains("segment_slots"), "{err}");
    let err = Queue::<u8>::builder().max_segments(100_000).build().unwrap_err();
    assert!(err.to_string().contains("max_segments"), "{err}");
}
