//! Seed 002, "分布式进程" (distributed processes): the master puts numbers in
//! a task queue, workers on other machines square them and send back
//! `n * n = r`. The seed does it by hand with a `BaseManager` serving two
//! queues; here the queue is a Redis stream, the master is a
//! [`RedisPool`], and each worker "host" is a separate process tree (a
//! worker host process with its own pool processes under it). One host is
//! SIGKILLed in the middle of the run; its tasks are reclaimed by the other
//! after the visibility timeout, and every result arrives exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use multiproc::{Process, StartMethod};
use multiproc_redis::{INSTALL_HINT, RedisPool, RedisServer, Worker, queue_info};

use crate::{Error, PATIENCE, Report};

/// The tasks the master puts in the queue.
pub const TASKS: u64 = 24;
/// How long a worker host may be silent before its tasks are taken over.
pub const VISIBILITY: Duration = Duration::from_millis(1000);

/// What the run showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Distributed {
    /// Each task's number → (its result line, how many times it arrived).
    pub results: BTreeMap<u64, (String, usize)>,
    /// The host that was killed and the host that went on (pids).
    pub killed_host: i32,
    /// The host that survived.
    pub surviving_host: i32,
    /// Results that came from the surviving host.
    pub from_survivor: usize,
}

/// The worker's job in the seed: square `n`, say who did it.
fn square_it(n: u64) -> (String, u32) {
    std::thread::sleep(Duration::from_millis(100));
    (format!("{n} * {n} = {}", n * n), std::os::unix::process::parent_id())
}

/// A worker host: serves the queue until it is killed.
fn worker_host(url: String, prefix: String) {
    let run = Worker::builder(&url).prefix(&prefix).processes(2).visibility_timeout(VISIBILITY).run();
    if let Err(e) = run {
        eprintln!("worker host: {e}");
        std::process::exit(1);
    }
}

fn start_host(url: &str, prefix: &str, name: &str) -> Result<Process<()>, Error> {
    let p = Process::builder()
        .name(name)
        .start_method(StartMethod::Spawn)
        .spawn(worker_host, (url.to_string(), prefix.to_string()))?;
    Ok(p)
}

/// Kills and reaps the hosts still running when dropped.
struct Hosts(Vec<Process<()>>);

impl Drop for Hosts {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.kill();
            let _ = p.join_timeout(PATIENCE);
        }
    }
}

/// The master and two worker hosts on a private redis-server. Without
/// `redis-server` installed it says how to install it and returns no
/// outcome.
///
/// # Errors
///
/// The server or a host could not start, or a result went missing.
pub fn redis_master_worker() -> Result<Report<Option<Distributed>>, Error> {
    if !RedisServer::available() {
        let line = format!("skipped: this example needs redis-server; {INSTALL_HINT}");
        return Ok(Report { lines: vec![line], outcome: None });
    }
    let server = RedisServer::start()?;
    let url = server.url();
    let prefix = "seed002";
    let mut lines = vec![format!("redis-server on {url} (append-only persistence)")];
    let mut hosts = Hosts(vec![start_host(&url, prefix, "host-a")?, start_host(&url, prefix, "host-b")?]);
    let pids: Vec<i32> = hosts.0.iter().map(|p| p.pid().unwrap_or(0)).collect();
    lines.push(format!("worker hosts: host-a (pid {}) and host-b (pid {}), 2 processes each", pids[0], pids[1]));

    // Each host joins the consumer group with its first read.
    let ready = Instant::now();
    while queue_info(&url, prefix, "default")?.hosts.len() < 2 {
        if ready.elapsed() > PATIENCE {
            return Err(Error::Unexpected("the worker hosts did not start".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pool = RedisPool::builder(&url).prefix(prefix).wait_timeout(PATIENCE * 2).connect()?;
    lines.push(format!("master: put {TASKS} tasks"));
    let started = Instant::now();
    let mut results: BTreeMap<u64, (String, usize)> = BTreeMap::new();
    let mut by_host: BTreeMap<u32, usize> = BTreeMap::new();
    let mut killed = false;
    let numbers: Vec<u64> = (0..TASKS).map(|i| (i * 7919 + 13) % 10_000).collect();
    for (k, r) in pool.imap_unordered(square_it, numbers.clone()).enumerate() {
        let (line, host) = r?;
        let n: u64 = line.split(' ').next().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
        results.entry(n).or_insert_with(|| (line.clone(), 0)).1 += 1;
        *by_host.entry(host).or_default() += 1;
        let in_hand = || -> Result<u64, Error> {
            let info = queue_info(&url, prefix, "default")?;
            Ok(info.hosts.iter().filter(|h| h.is_pid(pids[0] as u32)).map(|h| h.pending).sum())
        };
        if k >= 3 && !killed && in_hand()? > 0 {
            let held = in_hand()?;
            hosts.0[0].kill()?;
            let _ = hosts.0[0].join_timeout(PATIENCE); // Err(Signaled { signal: 9 }), as it should
            killed = true;
            lines.push(format!("host-a SIGKILLed when the master had {} results, with {held} task(s) in hand", k + 1));
        }
    }
    if !killed {
        return Err(Error::Unexpected("host-a never held a task, so it was not killed".into()));
    }
    let survivor = pids[1] as u32;
    let from_survivor = by_host.get(&survivor).copied().unwrap_or(0);
    let from_killed = by_host.get(&(pids[0] as u32)).copied().unwrap_or(0);
    for (line, times) in results.values() {
        lines.push(format!("result: {line} (arrived {times}x)"));
    }
    let once = results.len() == numbers.len() && results.values().all(|(_, t)| *t == 1);
    if !once {
        return Err(Error::Unexpected(format!("results not exactly once: {results:?}")));
    }
    lines.push(format!(
        "all {TASKS} results arrived exactly once in {:.1?}; host-a ran {from_killed} before it died, host-b \
         {from_survivor}, including host-a's in hand, reclaimed after the {VISIBILITY:?} visibility timeout",
        started.elapsed()
    ));
    Ok(Report {
        lines,
        outcome: Some(Distributed { results, killed_host: pids[0], surviving_host: pids[1], from_survivor }),
    })
}
