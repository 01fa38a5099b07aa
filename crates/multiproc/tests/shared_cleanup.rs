//! No segment outlives its users: processes holding named and anonymous
//! segments are SIGKILLed (one, or a whole family), or exit without dropping
//! their handles, and `/dev/shm` holds nothing new afterwards. SPEC.md,
//! "Shared state", [better].
//!
//! Its own test binary: the named-segment tracker is per-process state.

mod sync_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use multiproc::{Array, Event, Lock, Process, SharedMemory, Value};
use sync_support::{Kid, LONG, PROMPT, linger};

/// A prefix for every name a test of this binary creates (tests run in
/// parallel: each has its own).
fn prefix(test: &str) -> String {
    format!("multiproc-cleanup-{}-{test}-", std::process::id())
}

/// The entries of /dev/shm that start with `prefix`.
fn ours(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Waits until none of `names` is in /dev/shm; returns how long it took.
fn wait_gone(names: &[String]) -> Duration {
    let start = Instant::now();
    while names.iter().any(|n| exists(n)) {
        assert!(start.elapsed() < LONG, "still in /dev/shm: {names:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// Creates a named segment, an anonymous one and a Value, Array and Lock
/// (all memfd-backed), takes the lock, says so, and waits to be killed.
fn hold_everything(name: String, ready: Event) {
    let named = SharedMemory::create(&name, 1 << 20).unwrap();
    let anonymous = SharedMemory::new(1 << 20).unwrap();
    named.write_at(0, b"alive").unwrap();
    anonymous.write_at(0, b"alive").unwrap();
    let value = Value::new(1u64).unwrap();
    let array = Array::<u8>::zeroed(4096).unwrap();
    let lock = Lock::new().unwrap();
    let _held = lock.acquire().unwrap();
    ready.set();
    linger();
    drop((named, anonymous, value, array));
}

#[test]
fn sigkilled_holders_of_named_and_anonymous_segments_leave_nothing() {
    let prefix = prefix("kill");
    let before = ours(&prefix);
    let names: Vec<String> = (0..2).map(|i| format!("{prefix}{i}")).collect();
    let readies: Vec<Event> = names.iter().map(|_| Event::new().unwrap()).collect();
    let kids: Vec<Kid<()>> =
        names.iter().zip(&readies).map(|(n, r)| Kid::spawn(hold_everything, (n.clone(), r.clone()))).collect();
    for r in &readies {
        assert!(r.wait_timeout(LONG));
    }
    assert!(names.iter().all(|n| exists(n)), "the named segments exist while their creators live");
    for k in &kids {
        k.kill();
    }
    for k in kids {
        assert_eq!(k.reap(), Some(-9));
    }
    let took = wait_gone(&names);
    // Removed when the tracker sees its creator's socket close, not later
    // (e.g. when this test process exits).
    assert!(took < PROMPT, "names removed {took:?} after the kill");
    assert_eq!(ours(&prefix), before, "/dev/shm holds nothing new");
}

fn create_and_forget(name: String) {
    let shm = SharedMemory::create(&name, 100).unwrap();
    // Exit without running the handle's destructor.
    std::mem::forget(shm);
}

fn create_and_exit(name: String) {
    let _shm = SharedMemory::create(&name, 100).unwrap();
    // `exit` skips destructors too.
    std::process::exit(4);
}

#[test]
fn creators_that_exit_without_dropping_leave_nothing() {
    let prefix = prefix("exit");
    let before = ours(&prefix);
    let a = format!("{prefix}forget");
    let b = format!("{prefix}exit");
    Kid::spawn(create_and_forget, (a.clone(),)).join();
    let kid = Kid::<()>::spawn(create_and_exit, (b.clone(),));
    assert_eq!(kid.reap(), Some(4));
    wait_gone(&[a, b]);
    assert_eq!(ours(&prefix), before);
}

/// A grandchild: attaches to its parent's segment by name, creates its own,
/// and waits (it dies with its parent).
fn grandchild(parents: String, own: String, ready: Event) {
    let theirs = SharedMemory::open(&parents).unwrap();
    let mine = SharedMemory::create(&own, 4096).unwrap();
    theirs.write_at(0, b"grandchild was here").unwrap();
    ready.set();
    linger();
    drop((theirs, mine));
}

/// A child that creates a segment and starts a grandchild using it.
fn family(name: String, grandchild_name: String, ready: Event) {
    let _shm = SharedMemory::create(&name, 4096).unwrap();
    let _gc = Process::spawn(grandchild, (name, grandchild_name, ready)).unwrap();
    linger();
}

#[test]
fn killing_a_whole_family_leaves_nothing() {
    let prefix = prefix("family");
    let before = ours(&prefix);
    let name = format!("{prefix}child");
    let gc_name = format!("{prefix}grandchild");
    let ready = Event::new().unwrap();
    let kid = Kid::<()>::spawn(family, (name.clone(), gc_name.clone(), ready.clone()));
    assert!(ready.wait_timeout(LONG));
    assert!(exists(&name) && exists(&gc_name));
    // SIGKILL the child; the grandchild dies with it (parent-death signal).
    kid.kill();
    kid.reap();
    wait_gone(&[name, gc_name]);
    assert_eq!(ours(&prefix), before);
}

/// Creates `name`, unlinks it, creates it again, drops the first handle,
/// says so, and waits to be killed holding the second.
fn unlink_recreate_and_linger(name: String, ready: Event) {
    let first = SharedMemory::create(&name, 100).unwrap();
    first.unlink().unwrap();
    let second = SharedMemory::create(&name, 100).unwrap();
    drop(first);
    assert!(exists(&name), "dropping the unlinked first segment left the second alone");
    ready.set();
    linger();
    drop(second);
}

#[test]
fn a_name_recreated_after_unlink_is_still_removed_when_its_creator_is_killed() {
    let prefix = prefix("recreate");
    let before = ours(&prefix);
    let name = format!("{prefix}again");
    let ready = Event::new().unwrap();
    let kid = Kid::<()>::spawn(unlink_recreate_and_linger, (name.clone(), ready.clone()));
    assert!(ready.wait_timeout(LONG));
    kid.kill();
    assert_eq!(kid.reap(), Some(-9));
    wait_gone(&[name]);
    assert_eq!(ours(&prefix), before);
}

/// Creates `name`, says so, and waits to be killed holding it.
fn create_and_linger(name: String, ready: Event) {
    let _shm = SharedMemory::create(&name, 3 * 4096).unwrap();
    ready.set();
    linger();
}

#[test]
fn a_segment_cut_short_by_another_process_is_still_removed_when_its_creator_is_killed() {
    let prefix = prefix("cut");
    let before = ours(&prefix);
    let name = format!("{prefix}short");
    let ready = Event::new().unwrap();
    let kid = Kid::<()>::spawn(create_and_linger, (name.clone(), ready.clone()));
    assert!(ready.wait_timeout(LONG));
    // Any process that can open the name can cut the file (and its trailer).
    std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/{name}")).unwrap().set_len(0).unwrap();
    kid.kill();
    assert_eq!(kid.reap(), Some(-9));
    let start = Instant::now();
    while exists(&name) && start.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = exists(&name);
    if left {
        // Leave nothing behind, whatever the outcome.
        let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
    }
    assert!(!left, "{name} was left in /dev/shm after its creator was killed");
    assert_eq!(ours(&prefix), before);
}
