//! `Semaphore` and `BoundedSemaphore` across processes: values, timeouts,
//! over-release of a bounded one. SPEC.md, "Locks and friends".

mod sync_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::{Barrier, BoundedSemaphore, RawValue, ReleaseError, Semaphore};
use sync_support::{Kid, LONG, assert_about};

#[test]
fn values_go_down_and_up() {
    let s = Semaphore::new(3).unwrap();
    assert_eq!(s.value(), 3);
    s.acquire();
    assert!(s.try_acquire());
    assert!(s.acquire_timeout(Duration::from_millis(10)));
    assert_eq!(s.value(), 0);
    assert!(!s.try_acquire());
    s.release();
    s.release();
    assert_eq!(s.value(), 2);
    // An unbounded semaphore may go above its start.
    for _ in 0..5 {
        s.release();
    }
    assert_eq!(s.value(), 7);
}

#[test]
fn acquire_timeout_takes_about_t_when_empty() {
    let s = Semaphore::new(0).unwrap();
    let t = Duration::from_millis(250);
    let start = Instant::now();
    assert!(!s.acquire_timeout(t));
    assert_about(start, t);
    let b = BoundedSemaphore::new(1).unwrap();
    b.acquire();
    let start = Instant::now();
    assert!(!b.acquire_timeout(t));
    assert_about(start, t);
}

#[test]
fn bounded_over_release_is_an_error() {
    let b = BoundedSemaphore::new(2).unwrap();
    assert_eq!(b.max_value(), 2);
    assert_eq!(b.release(), Err(ReleaseError::TooManyReleases));
    b.acquire();
    b.acquire();
    assert_eq!(b.value(), 0);
    assert_eq!(b.release(), Ok(()));
    assert_eq!(b.release(), Ok(()));
    assert_eq!(b.release(), Err(ReleaseError::TooManyReleases));
    assert_eq!(b.value(), 2);
    assert_eq!(ReleaseError::TooManyReleases.to_string(), "semaphore released too many times");
    assert!(BoundedSemaphore::new(0).is_err());
}

fn release_bounded(b: BoundedSemaphore) -> Result<(), ReleaseError> {
    b.release()
}

fn give(s: Semaphore, n: u32) {
    for _ in 0..n {
        s.release();
    }
}

#[test]
fn a_child_releases_what_the_parent_waits_for() {
    let s = Semaphore::new(0).unwrap();
    let kid = Kid::spawn(give, (s.clone(), 3u32));
    for _ in 0..3 {
        assert!(s.acquire_timeout(LONG), "a unit from the child");
    }
    kid.join();
    assert_eq!(s.value(), 0);

    let b = BoundedSemaphore::new(1).unwrap();
    assert_eq!(Kid::spawn(release_bounded, (b.clone(),)).join(), Err(ReleaseError::TooManyReleases));
    b.acquire();
    assert_eq!(Kid::spawn(release_bounded, (b.clone(),)).join(), Ok(()));
    assert_eq!(b.value(), 1);
}

/// Once every crowd process has started (`start`), enters the
/// semaphore-guarded section `rounds` times, tracking how many processes
/// are inside at once.
fn crowd(s: Semaphore, inside: RawValue<u32>, most: RawValue<u32>, rounds: u32, start: Barrier) {
    // Without this, a slow spawn on a loaded machine could start each
    // process after the previous one finished: never two inside at once.
    start.wait_timeout(LONG).expect("every crowd process starts");
    for _ in 0..rounds {
        assert!(s.acquire_timeout(LONG));
        let now = inside.as_atomic().fetch_add(1, Ordering::SeqCst) + 1;
        most.as_atomic().fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(2));
        inside.as_atomic().fetch_sub(1, Ordering::SeqCst);
        s.release();
    }
}

#[test]
fn at_most_value_holders_at_once_across_processes() {
    let s = Semaphore::new(2).unwrap();
    let inside = RawValue::new(0u32).unwrap();
    let most = RawValue::new(0u32).unwrap();
    let start = Barrier::new(4).unwrap();
    let kids: Vec<Kid<()>> =
        (0..4).map(|_| Kid::spawn(crowd, (s.clone(), inside.clone(), most.clone(), 40u32, start.clone()))).collect();
    for k in kids {
        k.join();
    }
    assert_eq!(most.get(), 2, "two holders at once, never three");
    assert_eq!(s.value(), 2);
}
