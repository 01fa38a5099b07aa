//! Helpers shared by the `process_*` integration tests: leak counters read from
//! `/proc` (the library's own are crate-private) and "is this pid gone" checks.

#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;
use std::time::{Duration, Instant};

use multiproc::StartMethod;

/// Upper bound for any join in these tests: far above the real time, so a
/// slow machine does not fail them, but a hang still ends.
pub const JOIN: Duration = Duration::from_secs(20);

/// The `fork` start method, for tests that run alone in their binary or
/// hold [`serial`] while they fork.
// SAFETY: every test that forks is the only one of its binary or holds
// `serial()`, so no other test thread is in the library or holds a lock the
// child needs when the launcher thread forks.
pub const FORK: StartMethod = unsafe { StartMethod::fork() };

/// All start methods, for tests that check the basics under each (they hold
/// [`serial`]).
pub const METHODS: [StartMethod; 3] = [StartMethod::Spawn, StartMethod::ForkServer, FORK];

/// Serializes the tests of one test binary. The `Fork` start method is only
/// safe while no other thread of the parent is inside the library (libtest runs
/// tests on parallel threads), so every test that forks holds this guard.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Open descriptors of this process (without the one `read_dir` uses).
pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count() - 1
}

/// Threads of this process.
pub fn count_threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("read /proc/self/task").count()
}

/// State letter and parent pid of `pid` from `/proc/<pid>/stat`; `None` once
/// the process is gone (reaped).
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = text.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Processes whose state letter and parent pid (from [`stat`]) pass `keep`.
fn processes_where(keep: impl Fn(char, i32) -> bool) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, ppid)| keep(state, ppid)))
        .collect()
}

/// Live processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    processes_where(|state, ppid| ppid == pid && state != 'Z')
}

/// The pid of the process that loaded this program image (ran its
/// constructors): a spawned child itself, the fork server for the children
/// it forks, the parent for children of the `fork` start method. It tells how
/// a child was started, now that every child's parent is the program.
pub fn image_loader() -> i32 {
    IMAGE_LOADER.load(std::sync::atomic::Ordering::Relaxed)
}

static IMAGE_LOADER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Runs before the library's own hook (prioritised constructors come first),
/// which never returns in a child or the fork server.
#[used]
#[unsafe(link_section = ".init_array.00100")]
static RECORD_IMAGE_LOADER: extern "C" fn() = record_image_loader;

extern "C" fn record_image_loader() {
    IMAGE_LOADER.store(std::process::id() as i32, std::sync::atomic::Ordering::Relaxed);
}

/// The parent pid of a live process.
fn pid_and_loader() -> (i32, i32) {
    (std::process::id() as i32, image_loader())
}

/// The fork server that forks our children (it loaded their program image).
pub fn fork_server_pid() -> i32 {
    let mut p = multiproc::Process::builder().start_method(StartMethod::ForkServer).spawn(pid_and_loader, ()).unwrap();
    let (pid, loader) = p.join_timeout(JOIN).unwrap();
    assert_eq!(Some(pid), p.pid());
    loader
}

pub fn ppid_of(pid: i32) -> i32 {
    stat(pid).unwrap_or_else(|| panic!("process {pid} is gone")).1
}

/// True when `pid` no longer runs: reaped, or a zombie waiting for its reaper.
pub fn is_dead(pid: i32) -> bool {
    matches!(stat(pid), None | Some(('Z' | 'X', _)))
}

/// Zombie children of this process.
pub fn count_zombie_children() -> usize {
    let me = std::process::id() as i32;
    processes_where(|state, ppid| ppid == me && state == 'Z').len()
}

/// Polls `done` every millisecond until it is true or `limit` passes; returns
/// the time it took, or `None` if it never became true.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A fresh empty directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `<tmp>/multiproc-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("multiproc-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends SIGKILL to `pid` if it still runs (cleanup after a failed assertion).
pub fn kill_quietly(pid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Joins a child within [`JOIN`] and returns its value; a child that fails or
/// hangs fails the test, and is killed first so nothing is left behind.
pub fn join_or_kill<R: serde::Serialize + serde::de::DeserializeOwned>(mut p: multiproc::Process<R>) -> R {
    match p.join_timeout(JOIN) {
        Ok(r) => r,
        Err(e) => {
            let _ = p.kill();
            let _ = p.join_timeout(JOIN);
            panic!("child failed: {e}");
        }
    }
}

/// A thread receiving on a clone of `conn` for at most `limit`, given
/// 100 ms to block in its receive before this returns.
pub fn blocked_receiver(
    conn: &multiproc::Connection<u32>,
    limit: Duration,
) -> std::thread::JoinHandle<Result<u32, multiproc::ConnectionError>> {
    let conn = conn.clone();
    let receiver = std::thread::spawn(move || conn.recv_timeout(limit));
    std::thread::sleep(Duration::from_millis(100));
    receiver
}
