//! Helpers shared by the pool tests.
#![allow(dead_code)]

use std::time::Duration;

/// Generous bound for waits that should finish quickly (loaded 2-core machine).
pub const WAIT: Duration = Duration::from_secs(30);

/// Slack on top of a promised time ("within 100 ms", "≈T"): generous, so a
/// loaded 2-core machine does not fail the tests. The tight figures belong
/// in the benchmark.
pub const SLACK: Duration = Duration::from_secs(5);

/// How long any one pool or executor test may run before the watchdog ends
/// the test binary (the pool calls without a timed form — `map`, `apply`,
/// iterating `imap` — are bounded this way).
pub const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Ends the test binary with a message if the test that made it is still
/// running after [`TEST_LIMIT`]; dropping it (at the end of the test) calls
/// it off. No test can hang.
#[must_use = "the watchdog is called off when dropped"]
pub struct Watchdog {
    done: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

/// Starts a [`Watchdog`] for the calling test.
pub fn watchdog() -> Watchdog {
    let done = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let shared = done.clone();
    let test = std::thread::current().name().unwrap_or("a pool test").to_string();
    std::thread::spawn(move || {
        let (lock, cond) = &*shared;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cond.wait_timeout_while(guard, TEST_LIMIT, |done| !*done).unwrap_or_else(|e| e.into_inner());
        if !*guard {
            eprintln!("{test} still runs after {TEST_LIMIT:?}: a wait that never ends; stopping the test binary");
            std::process::exit(101);
        }
    });
    Watchdog { done }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, cond) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cond.notify_all();
    }
}

/// `get` with the generous bound: the result, or a timeout error.
pub fn get<T>(mut r: multiproc::AsyncResult<T>) -> Result<T, multiproc::PoolError> {
    r.get_timeout(WAIT)
}

pub fn square(x: u64) -> u64 {
    x * x
}

pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

pub fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Pids of this process's live children (from /proc), for leak checks.
pub fn child_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut fields = rest.split_whitespace();
        let _state = fields.next();
        if fields.next().and_then(|p| p.parse::<i32>().ok()) == Some(me)
            && let Ok(pid) = entry.file_name().to_string_lossy().parse()
        {
            out.push(pid);
        }
    }
    out
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}
