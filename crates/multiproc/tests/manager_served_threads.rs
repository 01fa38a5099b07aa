//! A manager served on threads of this process leaves none of them behind
//! once shut down, even with calls blocked in it. (Its own test binary: it
//! counts this process's threads.) Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::time::Duration;

use multiproc::manager;
use sync_support::{LONG, wait_until};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn a_served_manager_shut_down_leaves_no_threads_behind() {
    let before = threads();
    for address in ["tcp:127.0.0.1:0".to_string(), format!("abstract:multiproc-served-threads-{}", std::process::id())]
    {
        let server = manager::serve(address.as_str(), Some(b"threads")).unwrap();
        let (q, d) = (server.queue::<u8>().unwrap(), server.dict::<u8, u8>().unwrap());
        d.insert(1, 1).unwrap();
        let blocked: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || q.get_timeout(LONG).is_err())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200)); // each waits in the manager now
        server.shutdown().unwrap();
        for b in blocked {
            assert!(b.join().unwrap());
        }
        wait_until("the served manager's threads to end", || threads() == before);
    }
}
