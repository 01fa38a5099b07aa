//! Requests larger than a manager reads (64 MiB) and answers larger than a
//! client reads (256 MiB): refused with a clear error in the caller, and
//! nothing else of the caller's changes (its connections and the locks it
//! holds stay). Every wait is bounded.

use std::time::Duration;

use multiproc::manager::{AcquireError, Lock, Manager, ManagerError, RemoteError};

/// More than the manager reads in one request.
const TOO_BIG: usize = 65 << 20;

#[test]
fn a_request_too_large_is_refused_and_the_callers_locks_stay_held() {
    for m in [Manager::start().unwrap(), Manager::builder().address("tcp:127.0.0.1:0").start().unwrap()] {
        let (d, lock) = (m.dict::<u8, Vec<u8>>().unwrap(), m.lock().unwrap());
        lock.acquire().unwrap().leak();
        let err = d.insert(1, vec![7; TOO_BIG]).unwrap_err();
        assert!(!err.is_connection(), "a request too large broke the connection: {err}");
        assert!(err.to_string().contains("too large"), "{err}");
        // The caller is still the holder: nobody else may take the lock.
        assert!(held_by_someone(&lock), "the caller's lock was freed");
        // And the manager goes on.
        d.insert(2, vec![1; 1 << 20]).unwrap();
        assert_eq!(d.len().unwrap(), 1);
        assert!(matches!(d.get(&1), Ok(None)), "{:?}", d.get(&1).map(|v| v.map(|v| v.len())));
        let _: Result<(), ManagerError> = lock.release();
        m.shutdown().unwrap();
    }
}

/// True if another thread (on a connection of its own) cannot take `lock`
/// within a moment.
fn held_by_someone(lock: &Lock) -> bool {
    let lock = lock.clone();
    let other = std::thread::spawn(move || match lock.acquire_timeout(Duration::from_millis(300)) {
        Err(AcquireError::Timeout) => true,
        Ok(g) => {
            g.leak();
            false
        }
        Err(_) => false,
    });
    other.join().unwrap()
}

#[test]
fn an_answer_too_large_is_an_error_and_the_callers_locks_stay_held() {
    let m = Manager::start().unwrap();
    let (l, lock) = (m.list::<Vec<u8>>().unwrap(), m.lock().unwrap());
    // Five items of 55 MiB: each fits a request, all together do not fit an answer.
    for i in 0..5 {
        l.push(vec![i; 55 << 20]).unwrap();
    }
    lock.acquire().unwrap().leak();
    match l.to_vec() {
        Err(ManagerError::Remote(RemoteError::AnswerTooLarge { size, limit })) => assert!(size > limit),
        Err(e) => panic!("{e}"),
        Ok(v) => panic!("{} items read", v.len()),
    }
    assert!(held_by_someone(&lock), "the caller's lock was freed");
    // The items are there, one at a time.
    assert_eq!(l.get(4).unwrap()[0], 4);
    m.shutdown().unwrap();
}
