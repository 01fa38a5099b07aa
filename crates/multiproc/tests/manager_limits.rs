//! Requests larger than a manager reads (64 MiB): refused with a clear
//! error in the caller, and nothing else of the caller's changes (its
//! connections and the locks it holds stay). Every wait is bounded.

use std::time::Duration;

use multiproc::manager::{AcquireError, Manager, ManagerError};

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
        assert!(lock.is_locked().unwrap(), "the caller's lock was freed");
        let other = std::thread::spawn({
            let lock = lock.clone();
            move || match lock.acquire_timeout(Duration::from_millis(300)) {
                Err(AcquireError::Timeout) => "held".to_string(),
                Ok(_) => "free".to_string(),
                Err(e) => e.to_string(),
            }
        });
        assert_eq!(other.join().unwrap(), "held");
        // And the manager goes on.
        d.insert(2, vec![1; 1 << 20]).unwrap();
        assert_eq!(d.len().unwrap(), 1);
        assert!(matches!(d.get(&1), Ok(None)), "{:?}", d.get(&1).map(|v| v.map(|v| v.len())));
        let _: Result<(), ManagerError> = lock.release();
        m.shutdown().unwrap();
    }
}
