//! Removing objects from a manager: the object and its names are gone,
//! later calls through any proxy (any connection, over a lane or TCP) say
//! so, and calls waiting on it end instead of waiting for ever.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use multiproc::manager::{self, AcquireError, Dict, Manager, ManagerError, Queue, RemoteError, Shared};
use serde::{Deserialize, Serialize};
use sync_support::until_calls_wait;

/// Bounds every wait of these tests.
const LONG: Duration = Duration::from_secs(10);

fn no_such_object<T: std::fmt::Debug>(result: Result<T, ManagerError>) -> bool {
    matches!(result, Err(ManagerError::Remote(RemoteError::NoSuchObject(_))))
}

#[test]
fn a_removed_object_and_its_names_are_gone_and_the_others_stay() {
    let manager = Manager::start().unwrap();
    let gone = manager.dict::<String, u32>().unwrap();
    let kept = manager.dict::<String, u32>().unwrap();
    gone.insert("a".into(), 1).unwrap();
    kept.insert("b".into(), 2).unwrap();
    manager.publish("gone", &gone).unwrap();
    manager.publish("also gone", &gone).unwrap();
    manager.publish("kept", &kept).unwrap();
    assert!(manager.remove(&gone).unwrap());

    assert!(no_such_object(gone.len()));
    assert!(no_such_object(gone.clone().insert("c".into(), 3)));
    for name in ["gone", "also gone"] {
        let found = manager.get::<Dict<String, u32>>(name);
        assert!(matches!(found, Err(ManagerError::Remote(RemoteError::NoSuchName(ref n))) if n == name), "{found:?}");
    }
    assert!(!manager.remove(&gone).unwrap(), "a second removal finds nothing");
    // The name is free again, and the other object is untouched.
    let again = manager.dict::<String, u32>().unwrap();
    manager.publish("gone", &again).unwrap();
    assert_eq!(manager.get::<Dict<String, u32>>("kept").unwrap().get("b").unwrap(), Some(2));
    manager.shutdown().unwrap();
}

/// Runs `call` on a thread; its result, or a failure after [`LONG`].
fn on_a_thread<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(call());
    });
    rx
}

/// Asserts that each call (named, with its result to come) ended with
/// `Removed`, within [`LONG`].
fn all_ended_with_removed(waits: impl IntoIterator<Item = (&'static str, mpsc::Receiver<String>)>) {
    for (what, rx) in waits {
        let result = rx.recv_timeout(LONG).unwrap_or_else(|_| panic!("{what} still waits {LONG:?} after the removal"));
        assert_eq!(result, "Err(Remote(Removed))", "{what}");
    }
}

#[test]
fn calls_waiting_on_a_removed_object_end_with_removed() {
    let manager = Manager::start().unwrap();
    let queue = manager.queue::<u32>().unwrap();
    let lock = manager.lock().unwrap();
    let event = manager.event().unwrap();
    let semaphore = manager.semaphore(0).unwrap();
    let barrier = manager.barrier(2).unwrap();
    let condition = manager.condition().unwrap();
    let held = lock.acquire().map_err(|_| "acquire").unwrap();

    let waits = [
        ("queue get", {
            let q = queue.clone();
            on_a_thread(move || format!("{:?}", q.get()))
        }),
        ("lock acquire", {
            let l = lock.clone();
            on_a_thread(move || match l.acquire() {
                Err(AcquireError::Manager(e)) => format!("{:?}", Err::<(), _>(e)),
                other => format!("acquired: {}", other.is_ok()),
            })
        }),
        ("event wait", {
            let e = event.clone();
            on_a_thread(move || format!("{:?}", e.wait()))
        }),
        ("semaphore acquire", {
            let s = semaphore.clone();
            on_a_thread(move || format!("{:?}", s.acquire()))
        }),
        ("barrier wait", {
            let b = barrier.clone();
            on_a_thread(move || format!("{:?}", b.wait()))
        }),
        ("condition wait", {
            let c = condition.clone();
            on_a_thread(move || match c.acquire() {
                Ok(mut guard) => {
                    let waited = format!("{:?}", guard.wait());
                    // The object is gone: nothing to release.
                    guard.leak();
                    waited
                }
                Err(_) => "the condition's lock was not acquired".to_string(),
            })
        }),
    ];
    until_calls_wait(&manager, 6);
    assert!(manager.remove(&queue).unwrap());
    assert!(manager.remove(&lock).unwrap());
    assert!(manager.remove(&event).unwrap());
    assert!(manager.remove(&semaphore).unwrap());
    assert!(manager.remove(&barrier).unwrap());
    assert!(manager.remove(&condition).unwrap());
    all_ended_with_removed(waits);
    held.leak();
    manager.shutdown().unwrap();
}

#[test]
fn over_tcp_a_removal_reaches_every_connection() {
    const KEY: &[u8] = b"removal key";
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let q = server.queue::<u64>().unwrap();
    server.publish("q", &q).unwrap();

    let remote = Manager::connect(server.address(), Some(KEY)).unwrap();
    let theirs: Queue<u64> = remote.get("q").unwrap();
    // These calls leave the object cached on the connection's thread in the
    // manager: the calls after the removal must not find it there.
    theirs.put(1).unwrap();
    assert_eq!(theirs.get().unwrap(), 1);
    // A connected client may remove too; the owner's proxy sees it.
    assert!(remote.remove(&theirs).unwrap());
    assert!(no_such_object(theirs.put(2)));
    assert!(no_such_object(q.qsize()));
    let found = remote.get::<Queue<u64>>("q");
    assert!(matches!(found, Err(ManagerError::Remote(RemoteError::NoSuchName(_)))), "{found:?}");
    server.shutdown().unwrap();
}

#[test]
fn puts_joins_and_condition_retakes_waiting_on_a_removed_object_end_with_removed() {
    let manager = Manager::start().unwrap();
    let full = manager.bounded_queue::<u32>(1).unwrap();
    full.put(1).unwrap();
    let joinable = manager.joinable_queue::<u32>().unwrap();
    joinable.put(1).unwrap();
    let condition = manager.condition().unwrap();
    // A waiter notified while the lock is held: it waits to take it back.
    let (c, (tx, rx)) = (condition.clone(), mpsc::channel());
    let retake = on_a_thread(move || {
        let mut guard = c.acquire().map_err(|_| "acquire").unwrap();
        tx.send(()).unwrap();
        let waited = format!("{:?}", guard.wait());
        guard.leak();
        waited
    });
    rx.recv_timeout(LONG).unwrap();
    let held = condition.acquire_timeout(LONG).map_err(|_| "acquire").unwrap(); // the waiter waits
    assert_eq!(condition.notify(1).unwrap(), 1);
    let waits = [
        ("bounded put", {
            let q = full.clone();
            on_a_thread(move || format!("{:?}", q.put(2)))
        }),
        ("join", {
            let q = joinable.clone();
            on_a_thread(move || format!("{:?}", q.join()))
        }),
    ];
    until_calls_wait(&manager, 3);
    assert!(manager.remove(&full).unwrap());
    assert!(manager.remove(&joinable).unwrap());
    assert!(manager.remove(&condition).unwrap());
    all_ended_with_removed(waits.into_iter().chain([("condition retake", retake)]));
    held.leak();
    manager.shutdown().unwrap();
}

/// A user object that leaves a file when the manager process drops it.
#[derive(Serialize, Deserialize)]
struct Tracked {
    dropped_at: std::path::PathBuf,
    manager_pid: i32,
}

impl Shared for Tracked {
    type Request = ();
    type Response = u8;

    fn call(&mut self, (): ()) -> u8 {
        1
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Not the client's copy, which `create` drops once it is sent.
        if std::process::id() as i32 == self.manager_pid {
            let _ = std::fs::write(&self.dropped_at, b"dropped");
        }
    }
}

#[test]
fn a_removed_object_is_dropped_even_when_its_connection_called_it_last() {
    for (how, manager) in [("tcp", Manager::builder().address("tcp:127.0.0.1:0").start()), ("lane", Manager::start())] {
        let manager = manager.unwrap();
        let dropped_at = std::env::temp_dir().join(format!("multiproc-removed-{}-{how}", std::process::id()));
        let _ = std::fs::remove_file(&dropped_at);
        let tracked = Tracked { dropped_at: dropped_at.clone(), manager_pid: manager.pid().unwrap() };
        let object = manager.create(tracked).unwrap();
        assert_eq!(object.call(()).unwrap(), 1);
        assert!(manager.remove(&object).unwrap());
        let t = std::time::Instant::now();
        while !dropped_at.exists() && t.elapsed() < Duration::from_secs(3) {
            thread::sleep(Duration::from_millis(10));
        }
        let dropped = dropped_at.exists();
        manager.shutdown().unwrap(); // drops it if nothing did
        let _ = std::fs::remove_file(&dropped_at);
        assert!(dropped, "{how}: the removed object is still in the manager's memory");
    }
}
