//! The worker host: reads chunks from the task stream with a consumer
//! group, runs their tasks in local multiproc pools, writes the results.
//!
//! Three parts: the intake (a thread: `XREADGROUP`, checks, hands items to
//! the pools), the executors (local pools, see `exec`), and the outlet (a
//! thread: results, acknowledgements, heartbeats, reclaiming dead hosts'
//! entries).

mod exec;
mod holds;
mod intake;
mod outlet;
mod visibility;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::Value;

use crate::conn::Conn;
use crate::endpoint::{Endpoint, endpoint_setters};
use crate::error::{RedisPoolError, TaskFailure, cannot_connect, explain};
use crate::schema::{self, Keys, TaskMsg};
use holds::Holds;
use outlet::Disposal;

/// The longest visibility timeout: the host's arithmetic on it (its
/// milliseconds for `XAUTOCLAIM`, the idle time of gone consumers) stays in
/// range.
const MAX_VISIBILITY: Duration = Duration::from_secs(u32::MAX as u64);

/// Options for a worker host. Created by [`Worker::builder`].
#[derive(Clone)]
pub struct WorkerBuilder {
    endpoint: Endpoint,
    processes: usize,
    visibility: Duration,
    drain: Duration,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("endpoint", &self.endpoint)
            .field("processes", &self.processes)
            .field("visibility", &self.visibility)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    endpoint_setters!();

    /// Worker processes on this host (default: the CPU count).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n.max(1);
        self
    }

    /// How long an entry delivered to a host may go without a heartbeat
    /// before another host takes it over (default 30 s). Heartbeats go out
    /// every quarter of it, so a long task is never taken from a live host.
    /// At least 100 ms; anything over about 136 years (`Duration::MAX`
    /// too) means never.
    ///
    /// Hosts of one queue may set different timeouts: each declares its own
    /// in the queue's `P:Q:visibility` key (see [`crate::schema`]), and a
    /// host takes over entries only after the longest timeout a live host
    /// declared (or its own, if longer). So a host with a short timeout
    /// does not take long tasks from a live host with a long one. A
    /// declaration lapses twice its timeout after its host is gone.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility = timeout.clamp(Duration::from_millis(100), MAX_VISIBILITY);
        self
    }

    /// How long a stopping host waits for the tasks it holds to finish
    /// (default 30 s): see [`Worker::stop`]. Set it under the time the
    /// host's supervisor allows for a stop (Kubernetes' grace period is
    /// 30 s by default, and the stop takes up to 2 s more to write its
    /// results), or longer for tasks that should rather finish than run
    /// again elsewhere. `Duration::ZERO` gives up at once: the tasks in
    /// hand go back to the queue. At most a day.
    ///
    /// While Redis does not answer, the commands the host sent before the
    /// stop (a heartbeat, results) wait for their replies first, up to 10 s
    /// each: such a stop can take longer than the drain timeout + 2 s (with
    /// a drain of 3 s, 10–17 s here; the default drain covers them).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain = timeout.min(MAX_DRAIN);
        self
    }

    /// Starts the host in the background: its local pool and two threads.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::Redis`] if Redis cannot be reached (it may take
    /// 10 s to join the consumer group while Redis restarts or does not
    /// answer), or the group cannot be created; [`RedisPoolError::LocalPool`]
    /// if the local pool of worker processes cannot start;
    /// [`RedisPoolError::Local`] if the host's threads cannot start (or
    /// the OS gives no randomness for its consumer name).
    pub fn start(self) -> Result<Worker, RedisPoolError> {
        let conn = Conn::open(&self.endpoint.url).map_err(cannot_connect)?;
        let keys = self.endpoint.keys();
        let mut id = [0u8; 4];
        // Hosts in containers may share a host name and a pid: the random
        // part keeps their consumer names apart.
        getrandom::fill(&mut id).map_err(|e| RedisPoolError::no_randomness("could not make a consumer name", e))?;
        let consumer = format!("{}-{}-{:08x}", hostname(), std::process::id(), u32::from_ne_bytes(id));
        let mut intake_conn = conn.another().map_err(cannot_connect)?;
        intake::ensure_group(&mut intake_conn, &keys.tasks(), &consumer)?;
        // Declared before the host takes any entry: from then on, no host
        // takes this host's entries before its timeout.
        let declared = Instant::now().checked_add(DECLARE_PATIENCE);
        visibility::declare(&mut intake_conn, &keys.visibility(), self.visibility, declared).map_err(|e| {
            let what = format!("could not declare the visibility timeout in {}", keys.visibility());
            RedisPoolError::Redis(explain(&what, &e, Some(DECLARE_PATIENCE)))
        })?;
        let executors = exec::Executors::new(self.processes).map_err(|e| RedisPoolError::LocalPool(e.to_string()))?;
        let host = Arc::new(HostShared {
            consumer,
            keys,
            key: self.endpoint.key,
            processes: self.processes,
            visibility: self.visibility,
            drain: self.drain,
            stop: AtomicBool::new(false),
            stop_deadline: OnceLock::new(),
            intake_done: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            room: (Mutex::new(()), Condvar::new()),
            done_items: AtomicU64::new(0),
            held: Holds::default(),
        });
        let (tx, rx) = mpsc::channel();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| RedisPoolError::no_thread("could not start a thread of the worker host", e))
        };
        let h = host.clone();
        let outlet = spawn("multiproc-redis outlet", Box::new(move || outlet::run(&h, rx, conn)))?;
        let h = host.clone();
        let intake =
            match spawn("multiproc-redis intake", Box::new(move || intake::run(&h, &executors, tx, intake_conn))) {
                Ok(intake) => intake,
                Err(e) => {
                    // The intake's end of the channel went with it: the outlet
                    // ends at once.
                    let _ = outlet.join();
                    return Err(e);
                }
            };
        tracing::info!("worker host {} serving {} with {} processes", host.consumer, host.keys.tasks(), host.processes);
        Ok(Worker { host, threads: vec![intake, outlet] })
    }

    /// Runs the host on this thread until the process ends: what the
    /// `multiproc worker` command does.
    ///
    /// # Errors
    ///
    /// As for [`WorkerBuilder::start`].
    pub fn run(self) -> Result<(), RedisPoolError> {
        let worker = self.start()?;
        loop {
            std::thread::park();
            if worker.host.stopping() {
                return Ok(());
            }
        }
    }
}

/// What the intake and the outlet of a host share.
#[derive(Debug)]
pub(crate) struct HostShared {
    pub consumer: String,
    pub keys: Keys,
    pub key: Vec<u8>,
    pub processes: usize,
    pub visibility: Duration,
    /// How long a stop waits for the tasks in hand.
    drain: Duration,
    stop: AtomicBool,
    /// Set when the host is told to stop: until when the tasks in hand may
    /// run (the drain timeout after the stop).
    stop_deadline: OnceLock<Instant>,
    /// Set by the intake once it has stopped reading and handed over its
    /// last chunks: the outlet may end after that, not before.
    intake_done: AtomicBool,
    /// Items handed to the pools and not finished.
    pub in_flight: AtomicUsize,
    /// Notified when items finish, for an intake waiting for room.
    pub room: (Mutex<()>, Condvar),
    /// Items finished since the start.
    pub done_items: AtomicU64,
    /// The entries this host holds (see [`Holds`]).
    pub held: Holds,
}

/// How long a starting host waits for Redis to take its visibility timeout.
const DECLARE_PATIENCE: Duration = Duration::from_secs(10);
/// How long a stopping host waits for the tasks in hand to finish, unless
/// told otherwise ([`WorkerBuilder::drain_timeout`]).
const DRAIN: Duration = Duration::from_secs(30);
/// The longest drain timeout (a deadline computed from it stays in range).
const MAX_DRAIN: Duration = Duration::from_secs(24 * 3600);
/// How long after the drain timeout a stopping host may take to write what
/// it has (results, tasks to deliver again): Redis may not answer.
const LAST_WRITES: Duration = Duration::from_secs(2);

impl HostShared {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Tells the host to stop, keeping the tasks in hand for the drain timeout.
    fn request_stop(&self) {
        let _ = self.stop_deadline.set(Instant::now() + self.drain);
        // ORDERING: Release pairs with the Acquire of `stopping`: a thread
        // that sees the stop sees its deadline.
        self.stop.store(true, Ordering::Release);
    }

    /// Until when a stopping host waits for the tasks in hand (`None`
    /// while it runs).
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        if self.stopping() { self.stop_deadline.get().copied() } else { None }
    }

    /// The deadline of a command sent now: none while the host runs; once
    /// it stops, [`LAST_WRITES`] after its drain deadline, so that a Redis
    /// that does not answer cannot hold the stop longer.
    pub(crate) fn command_deadline(&self) -> Option<Instant> {
        self.drain_deadline().map(|d| d + LAST_WRITES)
    }

    /// `XCLAIM … 0 <ids> JUSTID`: claims `ids` for this host again with
    /// their idle time reset (heartbeats, and taking back recovered entries);
    /// its reply names the entries claimed.
    pub(crate) fn claim_again(&self, ids: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(self.keys.tasks()).arg(schema::GROUP).arg(&self.consumer).arg(0).arg(ids).arg("JUSTID");
        cmd
    }

    pub(crate) fn set_intake_done(&self) {
        // ORDERING: Release pairs with the outlet's Acquire: the events the
        // intake sent before are in the channel by then.
        self.intake_done.store(true, Ordering::Release);
    }

    pub(crate) fn intake_done(&self) -> bool {
        self.intake_done.load(Ordering::Acquire)
    }

    /// Marks `n` items finished and wakes the intake.
    pub(crate) fn finished(&self, n: usize) {
        // ORDERING: AcqRel pairs with the intake's Acquire load of the count.
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        let _guard = self.room.0.lock().unwrap_or_else(|e| e.into_inner());
        self.room.1.notify_all();
    }

    /// Waits until fewer than `limit` items are in flight, at most `timeout`.
    pub(crate) fn wait_for_room(&self, limit: usize, timeout: Duration) {
        let guard = self.room.0.lock().unwrap_or_else(|e| e.into_inner());
        // ORDERING: Acquire pairs with `finished`; the count is read under
        // the lock `finished` notifies under, so no wake-up is missed.
        if self.in_flight.load(Ordering::Acquire) >= limit {
            let _ = self.room.1.wait_timeout(guard, timeout);
        }
    }
}

/// A running worker host. Dropping it (or [`Worker::stop`]) stops taking
/// new entries, finishes and writes the ones in flight, and stops the
/// local pool.
pub struct Worker {
    host: Arc<HostShared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("consumer", &self.host.consumer).field("queue", &self.host.keys).finish()
    }
}

impl Worker {
    /// Options for a worker host on the Redis server at `url`.
    pub fn builder(url: &str) -> WorkerBuilder {
        WorkerBuilder {
            endpoint: Endpoint::new(url),
            processes: multiproc::cpu_count(),
            visibility: Duration::from_secs(30),
            drain: DRAIN,
        }
    }

    /// This host's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.host.consumer
    }

    /// Stops the host and waits for its threads: it reads no more tasks,
    /// waits up to its drain timeout (30 s unless set with
    /// [`WorkerBuilder::drain_timeout`]) for those it holds to finish, and
    /// up to 2 s more for their results to be written (also when Redis does
    /// not answer; but see [`WorkerBuilder::drain_timeout`] for a short one).
    /// A task still running then is killed, and its entry goes back to the
    /// queue for another host (one more of its deliveries): at once if
    /// Redis answers, else after the visibility timeout.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.host.request_stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The lookup of whether the caller of chunk `msg` withdrew it (see
/// [`crate::schema::Keys::withdrawn`]), to run on a connection; `None` for
/// a first delivery, which is never looked up: the caller deletes a first
/// delivery's entry itself, by the id it knows, so it costs no command.
pub(crate) fn withdrawn_lookup<'m>(
    host: &HostShared,
    msg: &'m TaskMsg,
) -> Option<impl Fn(&mut crate::conn::Link) -> redis::RedisResult<bool> + 'm> {
    (msg.attempt > 1).then(|| {
        let key = host.keys.withdrawn(&msg.caller);
        move |c: &mut crate::conn::Link| {
            redis::cmd("ZSCORE").arg(&key).arg(msg.task).query::<Option<f64>>(c).map(|score| score.is_some())
        }
    })
}

/// Checks a task entry: schema, build, MAC. A task that fails a check
/// becomes a [`Disposal`].
pub(crate) fn admit(host: &HostShared, fields: &[(String, Value)]) -> Result<TaskMsg, Disposal> {
    let garbage = |reason: String| Disposal::Garbage {
        reason,
        message: schema::bytes_field(fields, schema::field::MESSAGE).ok().map(schema::DeadMessage::of),
    };
    let msg = schema::decode_task(fields).map_err(|e| garbage(e.to_string()))?;
    let own = multiproc::build_id();
    if msg.build_id != own {
        let failure = TaskFailure::Refused { worker_build: own.to_string(), task_build: msg.build_id.clone() };
        return Err(Disposal::Fail { msg: Box::new(msg), failure });
    }
    if schema::verify_mac(fields, &host.key).is_err() {
        // Well-formed but not ours: tell its caller, who would wait otherwise.
        return Err(Disposal::Fail { msg: Box::new(msg), failure: TaskFailure::WrongKey });
    }
    Ok(msg)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod test;
