//! `RLock`: nested by its owner, released by its owner only, across threads
//! and processes. SPEC.md, "Locks and friends".

mod sync_support;

use std::time::{Duration, Instant};

use multiproc::{Event, RLock, ReleaseError, TryLockError};
use sync_support::{Kid, LONG, assert_about};

#[test]
fn the_owner_nests_and_the_last_release_frees_it() {
    let r = RLock::new().unwrap();
    assert_eq!(r.release(), Err(ReleaseError::NotHeld));
    let a = r.acquire().unwrap();
    let b = r.try_acquire().unwrap();
    let c = r.acquire_timeout(Duration::ZERO).unwrap();
    assert_eq!(r.depth(), 3);
    assert!(r.is_owned());
    drop(c);
    drop(b);
    assert!(r.locked());
    assert_eq!(r.depth(), 1);
    drop(a);
    assert!(!r.locked());
    assert_eq!(r.depth(), 0);

    // Python style: acquire/acquire/release/release.
    r.acquire().unwrap().leak();
    r.acquire().unwrap().leak();
    assert_eq!(r.release(), Ok(()));
    assert!(r.locked());
    assert_eq!(r.release(), Ok(()));
    assert_eq!(r.release(), Err(ReleaseError::NotHeld));
}

#[test]
fn another_thread_can_neither_take_nor_release_it() {
    let r = RLock::new().unwrap();
    let _a = r.acquire().unwrap();
    let _b = r.acquire().unwrap();
    let r2 = r.clone();
    let (try_result, release_result, timed) = std::thread::spawn(move || {
        let tried = r2.try_acquire().is_ok();
        let released = r2.release();
        let t = Duration::from_millis(200);
        let start = Instant::now();
        let timed_out = matches!(r2.acquire_timeout(t), Err(TryLockError::Timeout));
        assert_about(start, t);
        (tried, released, timed_out)
    })
    .join()
    .unwrap();
    assert!(!try_result);
    assert_eq!(release_result, Err(ReleaseError::NotOwner));
    assert!(timed);
    assert_eq!(r.depth(), 2, "a failed release by another thread changes nothing");
}

fn child_release(r: RLock) -> Result<(), ReleaseError> {
    r.release()
}

/// Nests three levels in the child, tells the parent, waits, unwinds.
fn child_nest(r: RLock, holding: Event, go: Event) -> u32 {
    let _a = r.acquire().unwrap();
    let _b = r.acquire().unwrap();
    let _c = r.acquire().unwrap();
    let depth = r.depth();
    holding.set();
    assert!(go.wait_timeout(LONG));
    depth
}

#[test]
fn across_processes_only_the_owner_releases() {
    let r = RLock::new().unwrap();
    let guard = r.acquire().unwrap();
    assert_eq!(Kid::spawn(child_release, (r.clone(),)).join(), Err(ReleaseError::NotOwner));
    drop(guard);
    assert_eq!(Kid::spawn(child_release, (r.clone(),)).join(), Err(ReleaseError::NotHeld));

    let (holding, go) = (Event::new().unwrap(), Event::new().unwrap());
    let kid = Kid::spawn(child_nest, (r.clone(), holding.clone(), go.clone()));
    assert!(holding.wait_timeout(LONG));
    assert!(r.try_acquire().is_err());
    assert_eq!(r.release(), Err(ReleaseError::NotOwner));
    go.set();
    let g = r.acquire_timeout(LONG).expect("free once the child unwound all levels");
    assert_eq!(r.depth(), 1);
    drop(g);
    assert_eq!(kid.join(), 3);
}
