//! Ending a queue the Python 3.13 way (issue 13, item 5): `close` ends one
//! handle, `shutdown(immediate)` ends the queue for every handle in every
//! process.

mod queue_support;

use std::time::{Duration, Instant};

use multiproc::{GetError, JoinableQueue, Process, Queue, SimpleQueue};
use queue_support::{Child, LONG, SLACK, blocked_get, queue_blocks};
use serde_bytes::ByteBuf;

/// Closes its own handle, then reports whether its put and get failed.
fn close_mine(q: Queue<u32>) -> (bool, bool) {
    q.put(1).unwrap();
    q.close();
    (q.put(2).unwrap_err().is_closed(), matches!(q.get_timeout(LONG), Err(GetError::Closed)))
}

#[test]
fn close_in_a_child_ends_only_the_childs_handle() {
    let q = Queue::new().unwrap();
    let mut child = Child(Process::spawn(close_mine, (q.clone(),)).unwrap());
    assert_eq!(child.join(), (true, true));
    // The parent's handle goes on: the item is there, and more can be put.
    assert!(!q.is_closed() && !q.is_shutdown());
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
    q.put(3).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 3);
}

#[test]
fn close_ends_this_handle_and_its_later_clones_only() {
    let q = Queue::<u8>::new().unwrap();
    let earlier = q.clone();
    q.close();
    let later = q.clone();
    assert!(q.is_closed() && later.is_closed() && !earlier.is_closed());
    assert!(later.put(1).unwrap_err().is_closed());
    earlier.put(1).unwrap();
    assert!(matches!(q.get_nowait(), Err(GetError::Closed)));
    assert_eq!(earlier.get_nowait().unwrap(), 1);
    let s = SimpleQueue::<u8>::new().unwrap();
    let other = s.clone();
    s.close();
    other.put(5).unwrap();
    assert_eq!(other.get().unwrap(), 5);
}

/// Reports whether the handles it was sent arrived closed, and whether a
/// put through them failed as closed.
fn use_sent_handles(q: Queue<u32>, j: JoinableQueue<u32>, s: SimpleQueue<u32>) -> [bool; 5] {
    [q.is_closed(), q.put(1).is_err_and(|e| e.is_closed()), j.is_closed(), j.put(2).is_err(), s.put(3).is_err()]
}

#[test]
fn a_closed_handle_sent_to_a_child_arrives_closed() {
    // As a clone of a closed handle is closed, so is the copy a child gets:
    // close() ends a handle wherever it goes.
    let (q, j, s) = (Queue::<u32>::new().unwrap(), JoinableQueue::<u32>::new().unwrap(), SimpleQueue::new().unwrap());
    let (open_q, open_j, open_s) = (q.clone(), j.clone(), s.clone());
    q.close();
    j.close();
    s.close();
    let mut child = Child(Process::spawn(use_sent_handles, (q.clone(), j.clone(), s.clone())).unwrap());
    assert_eq!(child.join(), [true; 5]);
    assert!(open_q.empty() && open_j.empty() && open_s.empty(), "no put went through");
    // An open handle still arrives open.
    let mut child = Child(Process::spawn(use_sent_handles, (open_q.clone(), open_j.clone(), open_s.clone())).unwrap());
    assert_eq!(child.join(), [false; 5]);
    assert_eq!(open_q.get_timeout(LONG).unwrap(), 1);
    assert_eq!(open_j.get_timeout(LONG).unwrap(), 2);
    assert_eq!(open_s.get_timeout(LONG).unwrap(), 3);
}

#[test]
fn immediate_shutdown_discards_items_and_fails_gets_everywhere() {
    let (q, ready) = (Queue::<u8>::new().unwrap(), Queue::new().unwrap());
    let mut child = Child(Process::spawn(blocked_get, (q.clone(), ready.clone())).unwrap());
    ready.get_timeout(LONG).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let other = q.clone();
    q.shutdown(true);
    let (closed, millis) = child.join();
    assert!(closed);
    assert!(millis < 100 + SLACK.as_millis() as u64 * 5, "woke after {millis} ms");
    // Items put before are gone for every handle; puts fail.
    assert!(other.is_shutdown());
    assert!(matches!(other.get_nowait(), Err(GetError::Closed)));
    assert!(other.put(1).unwrap_err().is_closed());
}

#[test]
fn immediate_shutdown_fails_gets_even_with_items_left() {
    let q = Queue::<u32>::bounded(8).unwrap();
    for i in 0..5 {
        q.put(i).unwrap();
    }
    let plain = Queue::<u32>::new().unwrap();
    plain.put(7).unwrap();
    plain.shutdown(false);
    assert_eq!(plain.get_nowait().unwrap(), 7, "a plain shutdown keeps the items");
    q.shutdown(true);
    assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(GetError::Closed)));
    assert_eq!(q.qsize(), 0, "the items left were discarded");
    q.shutdown(false); // a later plain shutdown does not undo `immediate`
    assert!(matches!(q.get_nowait(), Err(GetError::Closed)));
}

#[test]
fn immediate_shutdown_lets_join_return() {
    let q = JoinableQueue::<u32>::new().unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    let taken = q.get_timeout(LONG).unwrap();
    assert_eq!(taken, 0);
    q.shutdown(true);
    // The nine left were discarded as done; the one taken still counts.
    assert_eq!(q.unfinished_tasks(), 1);
    assert!(q.join_timeout(Duration::from_millis(20)).is_err());
    q.task_done().unwrap();
    q.join_timeout(LONG).unwrap();
}

/// In a child: a thread puts a 256 MiB item; while the item is being
/// written, the child shuts the queue down immediately. Returns whether the
/// put failed with Closed, and the tasks left once `join` gave up or returned.
fn shut_down_during_a_large_put(q: JoinableQueue<ByteBuf>) -> (bool, u32) {
    let putter = q.clone();
    let before = queue_blocks();
    let t = std::thread::spawn(move || putter.put(ByteBuf::from(vec![7u8; 256 << 20])).is_err());
    let start = Instant::now();
    while queue_blocks() < before + (16 << 20) && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_micros(200));
    }
    q.shutdown(true);
    let closed = t.join().unwrap();
    let unfinished = q.join_timeout(Duration::from_secs(2)).map_or_else(|e| e.unfinished, |()| 0);
    (closed, unfinished)
}

#[test]
fn a_put_under_way_during_an_immediate_shutdown_leaves_nothing_for_join() {
    let q = JoinableQueue::<ByteBuf>::new().unwrap();
    let mut child = Child(Process::spawn(shut_down_during_a_large_put, (q.clone(),)).unwrap());
    let (closed, unfinished) = child.join();
    // Either the put failed, or its item was discarded as done: no task that
    // no get can ever take (gets fail after an immediate shutdown).
    assert_eq!(unfinished, 0, "put failed with Closed: {closed}");
    assert_eq!(q.qsize(), 0);
}

/// In a child: queues a 64 MiB item and a small one, then limits its
/// address space so that it could not hold the large item again (as under
/// memory pressure), and shuts the queue down immediately. Returns the
/// tasks left once `join` gave up or returned.
fn shut_down_under_memory_pressure(q: JoinableQueue<ByteBuf>) -> u32 {
    q.put(ByteBuf::from(vec![7u8; 64 << 20])).unwrap();
    q.put(ByteBuf::from(vec![1u8; 8])).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmSize:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    // SAFETY: setrlimit reads a valid rlimit; it limits only this process.
    unsafe {
        let limit = libc::rlimit { rlim_cur: (kib << 10) + (32 << 20), rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &limit), 0);
    }
    q.shutdown(true);
    q.join_timeout(Duration::from_secs(2)).map_or_else(|e| e.unfinished, |()| 0)
}

#[test]
fn an_immediate_shutdown_discards_large_items_without_reading_them() {
    let q = JoinableQueue::<ByteBuf>::new().unwrap();
    let mut child = Child(Process::spawn(shut_down_under_memory_pressure, (q.clone(),)).unwrap());
    assert_eq!(child.join(), 0, "tasks left after the immediate shutdown");
    assert_eq!(q.qsize(), 0);
}
