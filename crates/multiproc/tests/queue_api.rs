//! `Queue`, `JoinableQueue` and `SimpleQueue` across real processes: every
//! behaviour of SPEC.md's queue section (FIFO, bounded and unbounded, Full and
//! Empty after ≈T, close, task_done/join, unserializable items, producers that
//! exit right after `put`, large items), each blocking call with a timeout.

mod queue_support;
mod shm_support;

use std::time::{Duration, Instant};

use multiproc::{GetError, JoinableQueue, Process, PutError, Queue, SimpleQueue, TryPutError, wait};
use queue_support::{Child, LONG, SLACK, blocked_get, count_threads};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shm_support::own_dev_shm_handles;

fn spawn<F, A, R>(f: F, args: A) -> Child<R>
where
    F: multiproc::Task<A, R>,
    A: Serialize + serde::de::DeserializeOwned,
    R: Serialize + serde::de::DeserializeOwned,
{
    Child(Process::spawn(f, args).expect("spawn"))
}

// ---------- FIFO across processes ----------

fn produce(q: Queue<(u32, u32)>, id: u32, n: u32) {
    for seq in 0..n {
        q.put((id, seq)).unwrap();
    }
}

#[test]
fn three_producer_processes_and_the_parent_keep_per_producer_order() {
    let q = Queue::new().unwrap();
    let mut children: Vec<_> = (0..3).map(|id| spawn(produce, (q.clone(), id, 500u32))).collect();
    produce(q.clone(), 3, 500);
    let mut next = [0u32; 4];
    for _ in 0..2000 {
        let (id, seq) = q.get_timeout(LONG).unwrap();
        assert_eq!(seq, next[id as usize], "producer {id} out of order");
        next[id as usize] += 1;
    }
    assert_eq!(next, [500; 4]);
    for c in &mut children {
        c.join();
    }
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

fn drain(q: Queue<u64>, n: usize) -> Vec<u64> {
    (0..n).map(|_| q.get_timeout(LONG).unwrap()).collect()
}

#[test]
fn items_put_before_a_child_started_come_first_in_order() {
    let q = Queue::new().unwrap();
    for i in 0..100u64 {
        q.put(i).unwrap();
    }
    let mut child = spawn(drain, (q.clone(), 150usize));
    for i in 100..150u64 {
        q.put(i).unwrap();
    }
    assert_eq!(child.join(), (0..150).collect::<Vec<_>>());
}

// ---------- bounded and unbounded ----------

fn sum_of(q: Queue<u64>, n: u64) -> u64 {
    (0..n).map(|_| q.get_timeout(LONG).unwrap()).sum()
}

#[test]
fn bounded_queue_blocks_the_producer_until_a_child_consumes() {
    let q = Queue::bounded(4).unwrap();
    let mut child = spawn(sum_of, (q.clone(), 2000u64));
    for i in 0..2000u64 {
        q.put_timeout(i, LONG).unwrap();
        assert!(q.qsize() <= 4);
    }
    assert_eq!(child.join(), 1999 * 2000 / 2);
}

#[test]
fn unbounded_queue_never_blocks_the_producer() {
    // Tiny segments so that 20,000 waiting items spill over many segments.
    let q = Queue::<u64>::builder().segment_slots(64).build().unwrap();
    let start = Instant::now();
    for i in 0..20_000u64 {
        q.put_nowait(i).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(q.qsize(), 20_000);
    assert!(!q.full());
    let mut child = spawn(sum_of, (q.clone(), 20_000u64));
    assert_eq!(child.join(), 19_999 * 20_000 / 2);
    assert!(q.empty());
}

// ---------- Full and Empty after ≈T ----------

/// In a child: how long get_timeout(T) waits on an empty queue, and whether
/// get_nowait fails at once.
fn time_empty(q: Queue<u8>, millis: u64) -> (u64, bool, bool) {
    let t = Instant::now();
    let timed_out = matches!(q.get_timeout(Duration::from_millis(millis)), Err(GetError::Timeout));
    let waited = t.elapsed().as_micros() as u64;
    let t = Instant::now();
    let empty_at_once = matches!(q.get_nowait(), Err(GetError::Empty)) && t.elapsed() < SLACK;
    (waited, timed_out, empty_at_once)
}

#[test]
fn get_timeout_is_empty_after_about_t_and_get_nowait_at_once() {
    let q = Queue::new().unwrap();
    let t = Duration::from_millis(300);
    let (waited, timed_out, at_once) = spawn(time_empty, (q.clone(), 300u64)).join();
    let waited = Duration::from_micros(waited);
    assert!(timed_out && at_once);
    assert!(waited >= t && waited < t + SLACK, "child waited {waited:?}");
    let start = Instant::now();
    let err = q.get_timeout(t).unwrap_err();
    assert!(err.is_empty() && err.is_timeout());
    assert!(start.elapsed() >= t && start.elapsed() < t + SLACK);
}

fn fill_and_time(q: Queue<u8>, millis: u64) -> (u64, bool, bool) {
    q.put(1).unwrap();
    q.put(2).unwrap();
    let t = Instant::now();
    let full = matches!(q.put_timeout(3, Duration::from_millis(millis)), Err(TryPutError::Full(3)));
    let waited = t.elapsed().as_micros() as u64;
    let t = Instant::now();
    let full_at_once = matches!(q.put_nowait(4), Err(TryPutError::Full(4))) && t.elapsed() < SLACK;
    (waited, full, full_at_once)
}

#[test]
fn put_timeout_is_full_after_about_t_and_put_nowait_at_once() {
    let q = Queue::bounded(2).unwrap();
    let (waited, full, at_once) = spawn(fill_and_time, (q.clone(), 300u64)).join();
    let waited = Duration::from_micros(waited);
    assert!(full && at_once);
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_millis(300) + SLACK, "{waited:?}");
    assert!(q.full());
    assert_eq!(q.qsize(), 2);
    assert_eq!(q.get_nowait().unwrap(), 1);
    q.put_nowait(5).unwrap();
    assert_eq!((q.get_nowait().unwrap(), q.get_nowait().unwrap()), (2, 5));
}

thread_local! {
    /// How many `Counted` values this thread serialized.
    static SERIALIZED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// An item that counts its serializations (in the thread that puts it).
#[derive(Debug, PartialEq, Deserialize)]
struct Counted(u32);

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALIZED.with(|n| n.set(n.get() + 1));
        self.0.serialize(s)
    }
}

fn fill_with_counted(q: Queue<Counted>, n: u32) {
    for i in 0..n {
        q.put(Counted(i)).unwrap();
    }
}

#[test]
fn put_nowait_on_a_full_queue_fails_before_serializing_the_item() {
    // A caller retrying put_nowait while the queue is full must not pay for
    // serializing its item (or writing a large one) at every try.
    let q = Queue::<Counted>::bounded(2).unwrap();
    spawn(fill_with_counted, (q.clone(), 2u32)).join();
    let before = SERIALIZED.with(|n| n.get());
    for _ in 0..100 {
        assert!(matches!(q.put_nowait(Counted(9)), Err(TryPutError::Full(Counted(9)))));
    }
    assert_eq!(SERIALIZED.with(|n| n.get()), before, "a put_nowait that found the queue full serialized its item");
    assert_eq!(q.get_nowait().unwrap(), Counted(0));
    q.put_nowait(Counted(9)).unwrap();
    assert_eq!(SERIALIZED.with(|n| n.get()), before + 1);
    assert_eq!((q.get_nowait().unwrap(), q.get_nowait().unwrap()), (Counted(1), Counted(9)));
}

// ---------- shutdown ----------

fn put_three_and_shut_down(q: Queue<String>) {
    for s in ["a", "b", "c"] {
        q.put(s.to_string()).unwrap();
    }
    q.shutdown(false);
    assert!(q.put("d".to_string()).unwrap_err().is_closed());
}

#[test]
fn shutdown_in_a_child_drains_then_reports_closed_everywhere() {
    let q = Queue::new().unwrap();
    spawn(put_three_and_shut_down, (q.clone(),)).join();
    assert!(q.is_shutdown() && q.is_closed());
    match q.put("late".to_string()) {
        Err(PutError::Closed(v)) => assert_eq!(v, "late"),
        other => panic!("{other:?}"),
    }
    let got: Vec<String> = (0..3).map(|_| q.get_timeout(LONG).unwrap()).collect();
    assert_eq!(got, ["a", "b", "c"]);
    let start = Instant::now();
    assert!(q.get_timeout(LONG).unwrap_err().is_closed());
    assert!(start.elapsed() < SLACK, "a get on a closed, empty queue must not wait");
}

#[test]
fn shutdown_wakes_a_child_blocked_in_get() {
    let (q, ready) = (Queue::new().unwrap(), Queue::new().unwrap());
    let mut child = spawn(blocked_get, (q.clone(), ready.clone()));
    ready.get_timeout(LONG).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    q.shutdown(false);
    let (closed, millis) = child.join();
    assert!(closed);
    assert!(millis < 100 + SLACK.as_millis() as u64, "woke after {millis} ms");
}

// ---------- JoinableQueue ----------

fn work(tasks: JoinableQueue<Option<u32>>, results: Queue<u32>) -> u32 {
    let mut done = 0;
    loop {
        match tasks.get_timeout(LONG).unwrap() {
            Some(n) => {
                results.put(n * n).unwrap();
                tasks.task_done().unwrap();
                done += 1;
            }
            None => {
                tasks.task_done().unwrap();
                return done;
            }
        }
    }
}

#[test]
fn joinable_queue_join_returns_when_children_marked_every_task_done() {
    let tasks = JoinableQueue::new().unwrap();
    let results = Queue::new().unwrap();
    let mut workers: Vec<_> = (0..2).map(|_| spawn(work, (tasks.clone(), results.clone()))).collect();
    for n in 0..50u32 {
        tasks.put(Some(n)).unwrap();
    }
    for _ in &workers {
        tasks.put(None).unwrap();
    }
    tasks.join_timeout(LONG).unwrap();
    assert_eq!(tasks.unfinished_tasks(), 0);
    assert_eq!(workers.iter_mut().map(|w| w.join()).sum::<u32>(), 50);
    let mut squares: Vec<u32> = (0..50).map(|_| results.get_timeout(LONG).unwrap()).collect();
    squares.sort();
    assert_eq!(squares, (0..50).map(|n| n * n).collect::<Vec<_>>());
    assert!(tasks.task_done().is_err(), "one too many task_done is an error");
}

#[test]
fn joinable_join_timeout_reports_unfinished_tasks_after_about_t() {
    let q = JoinableQueue::new().unwrap();
    q.put(1u8).unwrap();
    q.put(2u8).unwrap();
    q.get_timeout(LONG).unwrap();
    q.task_done().unwrap();
    let start = Instant::now();
    let err = q.join_timeout(Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.unfinished, 1);
    assert!(start.elapsed() >= Duration::from_millis(200) && start.elapsed() < Duration::from_millis(200) + SLACK);
}

// ---------- items that cannot be queued ----------

#[derive(Debug, PartialEq)]
struct NotSerializable(u32);

impl Serialize for NotSerializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this type refuses to be serialized"))
    }
}

impl<'de> Deserialize<'de> for NotSerializable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(NotSerializable)
    }
}

#[test]
fn an_unserializable_item_fails_put_itself_and_comes_back() {
    let q = Queue::<NotSerializable>::new().unwrap();
    match q.put(NotSerializable(7)) {
        Err(PutError::Unserializable(v, e)) => {
            assert_eq!(v, NotSerializable(7));
            assert!(e.to_string().contains("serialize"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(q.empty());
    assert!(matches!(q.put_nowait(NotSerializable(8)), Err(TryPutError::Unserializable(NotSerializable(8), _))));
}

#[test]
fn an_item_carrying_a_handle_is_refused_at_put() {
    let q = Queue::<multiproc::Connection<u8>>::new().unwrap();
    let (a, _b) = multiproc::Pipe::<u8>::duplex().unwrap();
    let err = q.put(a).unwrap_err();
    assert!(err.to_string().contains("Pipe"), "{err}");
    assert!(q.empty());
}

// ---------- producers that exit right after put ----------

fn put_and_exit(q: Queue<ByteBuf>, abrupt: bool) {
    for size in [8usize, 3000, 200_000, 1 << 20] {
        q.put(ByteBuf::from(vec![size as u8; size])).unwrap();
    }
    if abrupt {
        // No destructors, no atexit handlers: the items must already be queued.
        // SAFETY: _exit ends the process at once; nothing runs after it.
        unsafe { libc::_exit(0) };
    }
}

#[test]
fn nothing_is_lost_when_a_producer_exits_right_after_put() {
    let q = Queue::new().unwrap();
    for abrupt in [false, true] {
        let mut child = spawn(put_and_exit, (q.clone(), abrupt));
        let _ = child.0.join_timeout(LONG); // gone before anything is read
        assert!(child.0.exitcode().is_some());
        for size in [8usize, 3000, 200_000, 1 << 20] {
            let got = q.get_timeout(LONG).unwrap();
            assert_eq!(got.len(), size);
            assert!(got.iter().all(|&b| b == size as u8));
        }
    }
    assert!(q.empty());
}

// ---------- large items ----------

fn echo_big(input: Queue<ByteBuf>, output: Queue<ByteBuf>) {
    let item = input.get_timeout(LONG).unwrap();
    output.put(item).unwrap();
}

#[test]
fn a_100_mib_item_round_trips_through_small_rings() {
    let small = || Queue::<ByteBuf>::builder().segment_slots(4).build().unwrap();
    let (input, output) = (small(), small());
    let mut child = spawn(echo_big, (input.clone(), output.clone()));
    let pattern: Vec<u8> = (0..251u8).collect();
    let mut big = Vec::with_capacity(100 << 20);
    while big.len() < 100 << 20 {
        let n = pattern.len().min((100 << 20) - big.len());
        big.extend_from_slice(&pattern[..n]);
    }
    input.put(ByteBuf::from(big.clone())).unwrap();
    let back = output.get_timeout(LONG).unwrap();
    assert!(back.as_slice() == big.as_slice(), "100 MiB item changed on the way");
    child.join();
}

// ---------- puts from a thread-local destructor ----------

thread_local! {
    /// A queue to put a last item into when the thread ends.
    static ON_EXIT: std::cell::RefCell<Option<PutOnExit>> = const { std::cell::RefCell::new(None) };
}

struct PutOnExit(Queue<u8>);

impl Drop for PutOnExit {
    fn drop(&mut self) {
        self.0.put(2).unwrap();
    }
}

/// In a child: a thread that puts once, and once more from a thread-local
/// destructor as it ends (one registered before the queue was first used,
/// so it runs after the queue's own thread-locals are gone).
fn put_from_a_thread_local_destructor(q: Queue<u8>) {
    std::thread::spawn(move || {
        ON_EXIT.with(|g| *g.borrow_mut() = Some(PutOnExit(q.clone())));
        q.put(1).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn a_put_from_a_thread_local_destructor_works() {
    let q = Queue::new().unwrap();
    let mut child = Child(Process::spawn(put_from_a_thread_local_destructor, (q.clone(),)).unwrap());
    child.join();
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
}

// ---------- SimpleQueue, wait(), no feeder thread, /dev/shm ----------

fn simple_echo(q: SimpleQueue<String>, back: SimpleQueue<String>) {
    let s = q.get_timeout(LONG).unwrap();
    back.put(s.to_uppercase()).unwrap();
}

#[test]
fn simple_queue_across_processes() {
    let (q, back) = (SimpleQueue::new().unwrap(), SimpleQueue::new().unwrap());
    let mut child = spawn(simple_echo, (q.clone(), back.clone()));
    q.put("ping".to_string()).unwrap();
    assert_eq!(back.get_timeout(LONG).unwrap(), "PING");
    child.join();
    assert!(q.empty() && back.empty());
    back.close();
    assert!(back.get().unwrap_err().is_closed());
}

fn put_later(q: Queue<u8>) {
    std::thread::sleep(Duration::from_millis(100));
    q.put(1).unwrap();
}

#[test]
fn wait_reports_a_queue_ready_when_an_item_arrives() {
    let q = Queue::new().unwrap();
    let start = Instant::now();
    assert!(wait(&[&q], Some(Duration::from_millis(100))).unwrap().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(100));
    let mut child = spawn(put_later, (q.clone(),));
    assert_eq!(wait(&[&q], Some(LONG)).unwrap(), [0]);
    assert_eq!(q.get_nowait().unwrap(), 1);
    child.join();
}

/// In a fresh child (the test binary's other tests start threads of their
/// own, and the first spawn starts multiproc's launcher thread): the thread
/// count before and after the puts, and this process's `/dev/shm` handles
/// after the puts and after the queue is dropped.
fn threads_and_dev_shm_around_puts() -> (usize, usize, Vec<String>, Vec<String>) {
    let threads = count_threads();
    let q = JoinableQueue::<ByteBuf>::bounded(8).unwrap();
    for size in [1usize, 100, 10_000, 1 << 20] {
        q.put(ByteBuf::from(vec![0; size])).unwrap();
    }
    let after_puts = count_threads();
    // The queue lives in memfds: nothing this process holds is in /dev/shm.
    let shm_while_open = own_dev_shm_handles();
    for _ in 0..4 {
        q.get_nowait().unwrap();
        q.task_done().unwrap();
    }
    drop(q);
    (threads, after_puts, shm_while_open, own_dev_shm_handles())
}

#[test]
fn puts_and_gets_start_no_thread_and_use_nothing_in_dev_shm() {
    let (before, after, shm_open, shm_dropped) = spawn(threads_and_dev_shm_around_puts, ()).join();
    assert_eq!(after, before, "put must not start a feeder thread");
    assert_eq!(shm_open, Vec::<String>::new());
    assert_eq!(shm_dropped, Vec::<String>::new());
}
