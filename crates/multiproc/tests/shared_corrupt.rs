//! Bytes another process writes into shared memory are untrusted input: a
//! child that scribbles over a segment's header, the memory around a
//! barrier's counters, or cuts a segment's file short, must not make the
//! parent misbehave (at worst an error in the parent, never undefined
//! behaviour). Each child here plays the buggy peer: it writes through its
//! own descriptor of the segment, as a stray write or a bad `ftruncate`
//! would.

mod sync_support;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use multiproc::{Array, Barrier, Condition, GetError, Queue, RawArray};
use sync_support::{Kid, LONG, wait_until};

/// Opens this process's memfd named `name` (from `/proc/self/fd`) for
/// writing: a second way into the same memory, as a buggy peer has.
fn open_memfd(name: &str) -> File {
    let wanted = format!("/memfd:{name} (deleted)");
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy() == wanted) {
            return std::fs::OpenOptions::new().read(true).write(true).open(entry.path()).unwrap();
        }
    }
    panic!("no memfd named {name} in this process");
}

/// Offset of the element count in a data segment's header (after the tag,
/// the 32-byte lock and the element type).
const LEN_AT: u64 = 48;

fn grow_the_length(a: RawArray<u64>) {
    assert_eq!(a.len(), 4);
    open_memfd("multiproc-rawarray").write_all_at(&(1u64 << 40).to_le_bytes(), LEN_AT).unwrap();
}

#[test]
fn a_length_rewritten_by_a_child_does_not_move_the_parents_bounds() {
    let a = RawArray::from_slice(&[1u64, 2, 3, 4]).unwrap();
    Kid::spawn(grow_the_length, (a.clone(),)).join();
    // The header now claims 2^40 elements; the parent still knows 4.
    assert_eq!(a.len(), 4);
    assert_eq!(a.get(1 << 20), None);
    assert_eq!(a.to_vec(), [1, 2, 3, 4]);
}

fn grow_the_locked_length(_a: Array<u32>) {
    open_memfd("multiproc-array").write_all_at(&u64::MAX.to_le_bytes(), LEN_AT).unwrap();
}

#[test]
fn a_locked_array_keeps_its_length_too() {
    let a = Array::from_slice(&[7u32; 8]).unwrap();
    Kid::spawn(grow_the_locked_length, (a.clone(),)).join();
    let guard = a.lock().unwrap();
    assert_eq!(guard.len(), 8);
    assert_eq!(guard.iter().sum::<u32>(), 56);
}

/// Cuts the array's file to nothing; returns the OS error text, if refused.
fn truncate_the_file(a: Array<u8>) -> Option<String> {
    assert_eq!(a.len(), 1 << 16);
    open_memfd("multiproc-array").set_len(0).err().map(|e| e.to_string())
}

#[test]
fn a_child_cannot_cut_a_segment_under_the_parent() {
    let a = Array::from_slice(&[5u8; 1 << 16]).unwrap();
    let refused = Kid::spawn(truncate_the_file, (a.clone(),)).join();
    assert!(refused.is_some(), "the segment's file could be shrunk by a peer");
    // Without the seal, this read would raise SIGBUS in the parent.
    assert!(a.to_vec().iter().all(|&b| b == 5));
}

static ACTIONS_RUN: AtomicUsize = AtomicUsize::new(0);

fn count_pass() {
    ACTIONS_RUN.fetch_add(1, Ordering::SeqCst);
}

/// Overwrites the barrier's segment after its counters (tag, word and
/// parties: 16 bytes) with a bogus code offset where an earlier layout kept
/// the action's, keeping the build hash after it; then arrives first.
fn scribble_then_wait(b: Barrier) -> usize {
    let f = open_memfd("multiproc-barrier");
    f.write_all_at(&0x4141_4141_4141_4141u64.to_le_bytes(), 16).unwrap();
    b.wait_timeout(LONG).unwrap()
}

#[test]
fn a_barrier_action_is_never_read_from_shared_memory() {
    let b = Barrier::with_action(2, count_pass).unwrap();
    let kid = Kid::spawn(scribble_then_wait, (b.clone(),));
    // The child arrives first, so the parent is the last party and runs the
    // action: its own `count_pass`, whatever the child wrote.
    wait_until("the child to arrive", || b.n_waiting() == 1);
    let mine = b.wait_timeout(LONG).unwrap();
    let theirs = kid.join();
    assert_eq!((mine, theirs), (1, 0));
    assert_eq!(ACTIONS_RUN.load(Ordering::SeqCst), 1);
    assert!(!b.broken());
}

/// The bytes of the item the child puts (postcard writes a byte array as is).
const MARKER: [u8; 16] = *b"MULTIPROC-MARKER";

/// Puts an item, then rewrites its slot (found by its bytes) to describe a
/// blob at an offset that overflows the file's address space.
fn put_then_point_past_the_end(q: Queue<[u8; 16]>) {
    q.put(MARKER).unwrap();
    let f = open_memfd("multiproc-queue");
    let mut page = vec![0u8; 1 << 20];
    let n = f.read_at(&mut page, 0).unwrap();
    let at = page[..n].windows(16).position(|w| w == MARKER).expect("the item's slot") as u64;
    // The slot: stamp (8 bytes), meta (kind << 56 | length), then the data.
    f.write_all_at(&((2u64 << 56) | 100).to_le_bytes(), at - 8).unwrap();
    f.write_all_at(&(u64::MAX - 10).to_ne_bytes(), at).unwrap();
}

#[test]
fn a_queue_slot_rewritten_by_a_child_is_an_error_for_the_consumer() {
    let q = Queue::<[u8; 16]>::new().unwrap();
    Kid::spawn(put_then_point_past_the_end, (q.clone(),)).join();
    let got = q.get_timeout(LONG);
    assert!(matches!(got, Err(GetError::Io(_))), "{got:?}");
}

/// Offset of a `Condition::new`'s counters (waiters, permits) in its
/// segment: its lock's 64 bytes, then the tag and the futex word.
const COND_COUNTS_AT: u64 = 80;

/// Writes `bogus` over the condition's counters.
fn scribble_condition_counts(_c: Condition, bogus: u64) {
    open_memfd("multiproc-condition").write_all_at(&bogus.to_le_bytes(), COND_COUNTS_AT).unwrap();
}

#[test]
fn condition_counters_rewritten_by_a_child_are_not_a_panic() {
    for bogus in [5u64 << 32, 0xFFFF_FFFF << 32, 0xFFFF_FFFF] {
        let cond = Condition::new().unwrap();
        Kid::spawn(scribble_condition_counts, (cond.clone(), bogus)).join();
        let outcome = std::panic::catch_unwind(|| {
            let g = cond.acquire().unwrap();
            g.notify_all();
            let (g, _) = g.wait_timeout(std::time::Duration::from_millis(10)).unwrap();
            g.notify(1);
            format!("{cond:?}")
        });
        assert!(outcome.is_ok(), "counters {bogus:#x} made the condition panic");
    }
}
