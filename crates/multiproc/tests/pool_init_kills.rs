//! Workers SIGKILLed from outside while their (slow) initializer runs are
//! replaced, as Python's are: the kills are not the initializer's fault, so
//! they do not count towards the "initializer keeps failing" limit, and the
//! pool goes on answering. Its own test binary: it kills workers by pid.

mod pool_support;

use std::time::{Duration, Instant};

use multiproc::{Pool, Queue};
use pool_support::{WAIT, square, watchdog};

/// Initializer: reports this worker's pid, then takes 300 ms.
fn slow_init(pids: Queue<i32>) {
    pids.put(std::process::id() as i32).unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

fn kill(pid: i32) {
    // SAFETY: kill(2) on a pool worker of ours, by the pid it reported.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[test]
fn workers_killed_three_times_in_their_initializer_are_replaced_and_the_pool_answers() {
    let _w = watchdog();
    let pids: Queue<i32> = Queue::new().unwrap();
    let pool = Pool::builder().processes(2).initializer(slow_init, (pids.clone(),)).build().unwrap();
    // Work queued before the kills: it must run once workers get through.
    let mut early = pool.map_async(square, 0..10u64);
    for round in 1..=3 {
        // Both workers of this generation, each killed inside its initializer.
        for _ in 0..2 {
            let pid = pids.get_timeout(WAIT).unwrap_or_else(|e| panic!("round {round}: no new worker started: {e}"));
            kill(pid);
        }
    }
    let t = Instant::now();
    let got = early.get_timeout(WAIT);
    assert_eq!(
        got.map_err(|e| e.to_string()),
        Ok((0..10u64).map(square).collect::<Vec<_>>()),
        "map queued while workers were killed 3 times in their initializer (after {:?})",
        t.elapsed()
    );
    assert_eq!(pool.apply(square, (7,)).map_err(|e| e.to_string()), Ok(49), "apply after the kills");
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}
