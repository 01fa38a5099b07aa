//! Shutting down a manager whose dispatcher is stuck in a user's `update`
//! (an endless loop, a deadlock) still stops it, promptly and with exit
//! code 0, as Python's shutdown does: the program's exit drops the handle,
//! and so waits for it. Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc::manager::{Dict, Event, Manager};
use sync_support::{Kid, LONG};

fn stuck_update(d: Dict<u32, u32>, started: Event) {
    started.set().unwrap();
    // Ends with a connection error once the manager is gone.
    let _ = d.update(&0, |_: &mut Option<u32>| std::thread::sleep(Duration::from_secs(3600)));
}

#[test]
fn shutdown_stops_a_manager_stuck_in_an_update() {
    let m = Manager::start().unwrap();
    let pid = m.pid().unwrap();
    let (d, started) = (m.dict().unwrap(), m.event().unwrap());
    let kid = Kid::<()>::spawn(stuck_update, (d, started.clone()));
    assert!(started.wait_timeout(LONG).unwrap());
    std::thread::sleep(Duration::from_millis(300)); // the update runs in the manager now
    let (tx, rx) = mpsc::channel();
    let t = Instant::now();
    let stopper = std::thread::spawn(move || tx.send(m.shutdown().map_err(|e| e.to_string())).unwrap());
    let stopped = rx.recv_timeout(Duration::from_secs(15));
    if stopped.is_err() {
        // Unstick the test: the shutdown waits for a manager that is gone.
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    stopper.join().unwrap();
    kid.join();
    assert!(matches!(stopped, Ok(Ok(()))), "shutdown: {stopped:?} after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t.elapsed());
}
