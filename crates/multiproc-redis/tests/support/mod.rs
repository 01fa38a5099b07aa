//! Shared by the integration tests: a private redis-server, a prefix per
//! test, worker hosts in their own processes, raw stream reads, task start
//! logs, and a proxy that loses replies ([`proxy`]).

#![allow(dead_code)]

pub mod proxy;

use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};
use multiproc_redis::{RedisPool, RedisPoolBuilder, RedisPoolError, RedisServer, Worker};

/// A private server; fails with the install hint when there is none.
pub fn server() -> RedisServer {
    RedisServer::start().unwrap_or_else(|e| panic!("these tests need redis-server: {e}"))
}

/// A pool on `server` under `prefix`, whose calls give up after 60 s.
pub fn pool(server: &RedisServer, prefix: &str) -> RedisPoolBuilder {
    pool_at(&server.url(), prefix)
}

/// As [`pool`], for the Redis at `url` (a proxy in front of the server).
pub fn pool_at(url: &str, prefix: &str) -> RedisPoolBuilder {
    RedisPool::builder(url).prefix(prefix).wait_timeout(Duration::from_secs(60))
}

/// A worker host in this process.
pub fn local_worker(server: &RedisServer, prefix: &str, processes: usize) -> Worker {
    Worker::builder(&server.url()).prefix(prefix).processes(processes).start().unwrap()
}

/// A worker host in this process whose stop waits at most `drain` for the
/// tasks it holds.
pub fn draining_worker(server: &RedisServer, prefix: &str, processes: usize, drain: Duration) -> Worker {
    Worker::builder(&server.url()).prefix(prefix).processes(processes).drain_timeout(drain).start().unwrap()
}

/// Runs a worker host until killed: the body of a host process.
pub fn host_main(url: String, prefix: String, processes: usize, visibility_ms: u64) {
    Worker::builder(&url)
        .prefix(&prefix)
        .processes(processes)
        .visibility_timeout(Duration::from_millis(visibility_ms))
        .run()
        .unwrap();
}

/// A worker host in a process of its own (a fresh copy of this program,
/// with its own pool processes under it), owned by a guard.
pub fn host_process(server: &RedisServer, prefix: &str, processes: usize, visibility: Duration) -> HostGuard {
    let p = Process::builder()
        .start_method(StartMethod::Spawn)
        .name("worker-host")
        .spawn(host_main, (server.url(), prefix.to_string(), processes, visibility.as_millis() as u64))
        .unwrap();
    HostGuard(Some(p))
}

/// Kills and reaps its host process on drop.
pub struct HostGuard(pub Option<Process<()>>);

impl HostGuard {
    pub fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().pid().unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.0.take() {
            p.kill().unwrap();
            let _ = p.join_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A raw connection to `server`.
pub fn raw(server: &RedisServer) -> redis::Connection {
    let c = redis::Client::open(server.url()).unwrap();
    let con = c.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

/// The entries of a stream, as (id, field map).
pub fn entries(con: &mut redis::Connection, key: &str) -> Vec<(String, Vec<(String, redis::Value)>)> {
    let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(con).unwrap();
    r.ids.into_iter().map(|e| (e.id, multiproc_redis::schema::entry_fields(e.map))).collect()
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A file path removed (if it exists) when dropped, however the test ends.
pub struct RemovedOnDrop(pub std::path::PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The entries pending to the worker host process `host_pid` on queue
/// `default` under `prefix`.
pub fn pending_of(server: &RedisServer, prefix: &str, host_pid: i32) -> u64 {
    let info = multiproc_redis::queue_info(&server.url(), prefix, "default").unwrap();
    info.hosts.iter().filter(|h| h.is_pid(host_pid as u32)).map(|h| h.pending).sum()
}

/// A task that appends a line to `log` when it starts (so that a test can
/// count its runs with [`starts`]), then runs for `ms`.
pub fn logged_run(log: String, ms: u64) -> u64 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&log).unwrap();
    writeln!(f, "started").unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// How many times tasks logging to `log` (see [`logged_run`]) started.
pub fn starts(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map(|s| s.lines().count()).unwrap_or(0)
}

/// A start log for [`logged_run`] in the temporary directory, named after
/// `name` and this process, empty, and removed when dropped.
pub fn start_log(name: &str) -> RemovedOnDrop {
    let log = RemovedOnDrop(std::env::temp_dir().join(format!("multiproc-redis-{name}-{}", std::process::id())));
    let _ = std::fs::remove_file(&log.0);
    log
}

/// The length of stream `key` (0 if there is none).
pub fn xlen(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("XLEN").arg(key).query(con).unwrap()
}

/// The number of members of the sorted set `key` (0 if there is none).
pub fn zcard(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("ZCARD").arg(key).query(con).unwrap()
}

/// Whether `key` exists.
pub fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(con).unwrap() == 1
}

/// Asserts that `outcome` is the failure of a call of a dropped pool.
pub fn assert_dropped(outcome: Result<impl std::fmt::Debug, RedisPoolError>) {
    let err = outcome.expect_err("a dropped pool gives no result");
    assert!(matches!(err, RedisPoolError::Dropped), "{err:?}");
}

/// The memory Redis counts against its `maxmemory` (`used_memory`), in bytes.
pub fn used_memory(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).unwrap();
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}
