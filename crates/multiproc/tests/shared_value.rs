//! `Value`, `Array`, `RawValue` and `RawArray` across real processes: a
//! child's writes are the parent's reads, new arrays are zeroed, locked
//! updates are exact. SPEC.md, "Shared state".

mod sync_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use multiproc::{Array, Event, Plain, RawArray, RawValue, TryLockError, Value};
use sync_support::{Kid, LONG, linger};

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Sample {
    id: u64,
    score: f64,
    tags: [u16; 4],
}

// SAFETY: u64, f64 and [u16; 4]: 24 bytes, no padding, any bits valid.
unsafe impl Plain for Sample {}

fn write_all_kinds(v: Value<i64>, a: Array<f64>, s: Value<Sample>, rv: RawValue<u32>, ra: RawArray<u8>) {
    v.set(-42);
    for (i, x) in a.lock().unwrap().iter_mut().enumerate() {
        *x = i as f64 * 1.5;
    }
    s.set(Sample { id: 7, score: 0.25, tags: [1, 2, 3, 4] });
    rv.set(0xDEAD_BEEF);
    ra.copy_from_slice(b"child");
}

#[test]
fn a_childs_writes_are_visible_to_the_parent() {
    let v = Value::new(0i64).unwrap();
    let a = Array::<f64>::zeroed(5).unwrap();
    let s = Value::new(Sample { id: 0, score: 0.0, tags: [0; 4] }).unwrap();
    let rv = RawValue::new(0u32).unwrap();
    let ra = RawArray::<u8>::zeroed(5).unwrap();
    Kid::spawn(write_all_kinds, (v.clone(), a.clone(), s.clone(), rv.clone(), ra.clone())).join();
    assert_eq!(v.get(), -42);
    assert_eq!(a.to_vec(), [0.0, 1.5, 3.0, 4.5, 6.0]);
    assert_eq!(s.get(), Sample { id: 7, score: 0.25, tags: [1, 2, 3, 4] });
    assert_eq!(rv.get(), 0xDEAD_BEEF);
    assert_eq!(ra.to_vec(), b"child");
}

#[test]
fn new_arrays_are_zeroed() {
    assert_eq!(Array::<u64>::zeroed(1000).unwrap().to_vec(), vec![0; 1000]);
    assert_eq!(RawArray::<f32>::zeroed(333).unwrap().to_vec(), vec![0.0; 333]);
    assert_eq!(Array::<[u8; 3]>::zeroed(2).unwrap().to_vec(), [[0; 3]; 2]);
    let empty = Array::<u32>::zeroed(0).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.get(0), None);
    let a = Array::from_slice(&[3u16, 1, 2]).unwrap();
    assert_eq!((a.len(), a.get(1), a.get(3)), (3, Some(1), None));
    a.set(2, 9);
    assert_eq!(a.to_vec(), [3, 1, 9]);
}

fn bump_value(v: Value<u64>, a: Array<u32>, n: u32) {
    for _ in 0..n {
        *v.lock().unwrap() += 1;
        a.lock().unwrap()[1] += 2;
    }
}

#[test]
fn locked_updates_from_several_processes_are_exact() {
    let v = Value::new(0u64).unwrap();
    let a = Array::<u32>::zeroed(3).unwrap();
    let kids: Vec<Kid<()>> = (0..3).map(|_| Kid::spawn(bump_value, (v.clone(), a.clone(), 2000u32))).collect();
    bump_value(v.clone(), a.clone(), 2000);
    for k in kids {
        k.join();
    }
    assert_eq!(v.get(), 8000);
    assert_eq!(a.to_vec(), [0, 16000, 0]);
}

fn add_atomically(v: RawValue<u64>, a: RawArray<i32>, n: u32) {
    for _ in 0..n {
        v.as_atomic().fetch_add(1, Ordering::Relaxed);
        a.as_atomic()[0].fetch_sub(1, Ordering::Relaxed);
    }
}

#[test]
fn raw_atomics_are_exact_across_processes() {
    let v = RawValue::new(0u64).unwrap();
    let a = RawArray::<i32>::zeroed(2).unwrap();
    let kids: Vec<Kid<()>> = (0..2).map(|_| Kid::spawn(add_atomically, (v.clone(), a.clone(), 5000u32))).collect();
    for k in kids {
        k.join();
    }
    assert_eq!(v.get(), 10_000);
    assert_eq!(a.to_vec(), [-10_000, 0]);
}

fn hold_value(v: Value<u32>, holding: Event) {
    let mut g = v.lock().unwrap();
    *g = 99;
    std::mem::forget(g);
    holding.set();
    linger();
}

#[test]
fn a_value_whose_holder_is_killed_reports_owner_died() {
    let v = Value::new(1u32).unwrap();
    let holding = Event::new().unwrap();
    let kid = Kid::<()>::spawn(hold_value, (v.clone(), holding.clone()));
    assert!(holding.wait_timeout(LONG));
    assert!(matches!(v.lock_timeout(Duration::from_millis(50)), Err(TryLockError::Timeout)));
    kid.kill();
    kid.reap();
    match v.lock_timeout(LONG) {
        Err(TryLockError::OwnerDied(g)) => assert_eq!(*g.into_inner(), 99),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert_eq!(v.get(), 99);
}

#[test]
fn handles_in_threads_share_the_value() {
    let v = Value::new(0u64).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    *v.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(v.get(), 4000);
    assert_eq!(format!("{v:?}"), "Value(4000)");
}

fn get_while_holding(v: Value<u32>) -> u32 {
    let _held = v.lock().unwrap();
    v.get()
}

fn read_while_holding(a: Array<u32>) -> Option<u32> {
    let _held = a.lock().unwrap();
    a.get(0)
}

/// Taking the lock again on the thread that holds it (Python's `Value` has
/// an RLock, so `get` under `get_lock()` works there) can only wait for
/// ever: it is a panic that says what to do instead.
#[test]
fn taking_the_lock_again_on_the_holding_thread_is_a_panic_not_a_hang() {
    let value = multiproc::Process::spawn(get_while_holding, (Value::new(1u32).unwrap(),)).unwrap();
    expect_reentry_panic(value);
    let array = multiproc::Process::spawn(read_while_holding, (Array::<u32>::zeroed(2).unwrap(),)).unwrap();
    expect_reentry_panic(array);
}

fn expect_reentry_panic<R: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(
    mut kid: multiproc::Process<R>,
) {
    let err = kid.join_timeout(Duration::from_secs(10)).unwrap_err();
    if err.is_timeout() {
        let _ = kid.kill();
        let _ = kid.join_timeout(LONG);
        panic!("the child hung taking the lock it held");
    }
    let panic = err.panic().unwrap_or_else(|| panic!("{err:?}"));
    assert!(panic.message.contains("already holds"), "{panic}");
}
