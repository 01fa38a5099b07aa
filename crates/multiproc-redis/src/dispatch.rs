//! The caller's side of the result stream: one thread per pool reads
//! `P:results:<caller>`, hands each chunk's outcome to the call waiting for
//! it, drops duplicates (a chunk delivered twice has one outcome), deletes
//! what it read, and fails the waiting calls with a clear error when Redis
//! stays away longer than the reconnect timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::streams::StreamReadOptions;

use crate::conn::{self, Conn};
use crate::error::RedisPoolError;
use crate::life::Life;
use crate::schema::{self, Keys, Outcome};
use crate::withdraw::Withdrawal;

/// How long one `XREAD` blocks: also how long a dropped pool's thread may
/// take to notice.
const BLOCK: Duration = Duration::from_millis(200);
/// How long a reply on the result thread's connection may take: its
/// `XREAD` answers within [`BLOCK`], so a server that stopped answering is
/// noticed soon (and a dropped pool's thread ends soon).
const REPLY_TIMEOUT: Duration = Duration::from_millis(BLOCK.as_millis() as u64 + 2000);
/// How long a dropped pool waits for Redis (at most; no longer than its
/// reconnect timeout, but at least [`DROP_TIMEOUT_FLOOR`]) to withdraw the
/// chunks of its calls still in flight and to delete its results stream
/// (it expires).
const DROP_TIMEOUT: Duration = Duration::from_secs(1);
/// The least a dropped pool waits for Redis, however short its reconnect
/// timeout (`Duration::ZERO` too): time enough for a Redis that answers to
/// take the few commands of the drop.
const DROP_TIMEOUT_FLOOR: Duration = Duration::from_millis(250);
/// Entries read per `XREAD`.
const READ_COUNT: usize = 1024;

/// What a waiting call receives for one chunk.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// The chunk's outcome.
    Done { task: u64, outcome: Outcome },
    /// No outcome will come (Redis stayed away, the pool was dropped):
    /// the call's items fail with `error`.
    Lost { task: u64, error: RedisPoolError },
    /// No outcome: the pool was terminated, the call is to look at it.
    Wake,
}

/// A chunk in flight.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Where its outcome goes.
    pub sink: mpsc::Sender<Delivery>,
    /// The key of its arguments, if they are in a key of their own.
    pub blob: Option<String>,
    /// Its entry in the task stream, once Redis confirmed it (to withdraw
    /// it).
    pub entry: Option<String>,
}

/// Options fixed when the pool is built.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub retries: u32,
    pub task_timeout: Option<Duration>,
    pub wait_timeout: Option<Duration>,
    pub result_ttl: Duration,
    pub reconnect_timeout: Duration,
    pub window: usize,
}

/// What the submitting connection's lock guards: the connection, and the
/// state only its holder reads or writes.
#[derive(Debug)]
pub(crate) struct Submitter {
    /// The connection that queues and withdraws chunks.
    conn: Conn,
    /// Keys of batches queued at their script's first try, to be deleted by
    /// the next batch's script (see [`crate::enqueue::enqueue`]).
    spent_batches: Vec<String>,
}

impl Submitter {
    /// The submitting connection `conn`, with no spent batch key yet.
    pub(crate) fn new(conn: Conn) -> Submitter {
        Submitter { conn, spent_batches: Vec::new() }
    }
}

/// The state a pool's calls and its result thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub keys: Keys,
    pub caller: String,
    pub results_key: String,
    pub key: Vec<u8>,
    pub options: Options,
    /// The submitting connection, and what only its holder touches.
    pub submit: Mutex<Submitter>,
    /// What the pool's drop could not do because a call held the submitting
    /// connection (queuing a batch): the chunks to withdraw, and the
    /// results stream to delete. That call does it before it lets the
    /// connection go (see [`Shared::finish_drop`]).
    pub left_by_drop: Mutex<Option<Withdrawal>>,
    pub pending: Mutex<HashMap<u64, Pending>>,
    pub next_task: AtomicU64,
    pub stop: AtomicBool,
    /// Open, closed or terminated, and the calls in flight.
    pub life: Life,
}

impl Shared {
    /// Withdraws what the pool's drop left to the call that held the
    /// connection, if it left anything (see [`Shared::left_by_drop`]);
    /// called with the connection held, once the pool is stopping.
    pub(crate) fn finish_drop(&self, conn: &mut Conn) {
        let Some(withdrawal) = self.left_by_drop.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        self.run_drop(conn, &withdrawal, Instant::now().checked_add(DROP_TIMEOUT));
    }

    /// The pool's drop on Redis: withdraws the chunks of `withdrawal` and
    /// deletes the results stream, waiting no later than `deadline`.
    fn run_drop(&self, conn: &mut Conn, withdrawal: &Withdrawal, deadline: Option<Instant>) {
        if let Err(e) = withdrawal.run(conn, self, deadline) {
            tracing::warn!(
                "dropping the pool: could not withdraw {} queued chunks ({e}); they may run, their results expire \
                 unread",
                withdrawal.entries()
            );
        }
        let key = &self.results_key;
        if let Err(e) = conn.run_until(deadline, |c| redis::cmd("DEL").arg(key).exec(c)) {
            tracing::warn!("dropping the pool: could not delete the results stream {key} ({e}); it expires");
        }
    }

    /// The submitting connection, waited for no later than `deadline`
    /// (`None` when another call held it until then).
    pub(crate) fn submit_conn(&self, deadline: Option<Instant>) -> Option<SubmitConn<'_>> {
        let held = |held| Some(SubmitConn { shared: self, held });
        let Some(deadline) = deadline else { return held(self.submit.lock().unwrap_or_else(|e| e.into_inner())) };
        loop {
            match self.submit.try_lock() {
                Ok(conn) => return held(conn),
                Err(TryLockError::Poisoned(e)) => return held(e.into_inner()),
                Err(TryLockError::WouldBlock) if Instant::now() >= deadline => return None,
                Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Forgets chunk `task` (its call no longer waits for it).
    pub(crate) fn forget(&self, task: u64) -> Option<Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&task)
    }

    /// Notes the entries of the chunks `tasks` (in order), queued, of
    /// those still pending.
    pub(crate) fn note_entries(&self, tasks: &[u64], entries: Vec<String>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (task, entry) in tasks.iter().zip(entries) {
            if let Some(p) = pending.get_mut(task) {
                p.entry = Some(entry);
            }
        }
    }

    /// Wakes every call waiting for a chunk (after `terminate`).
    pub(crate) fn wake_all(&self) {
        for p in self.pending.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let _ = p.sink.send(Delivery::Wake);
        }
    }

    /// Fails every chunk in flight with `reason`; gives back their records.
    fn fail_all(&self, error: impl Fn() -> RedisPoolError) -> Vec<(u64, Pending)> {
        let lost: Vec<(u64, Pending)> = self.pending.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for (task, p) in &lost {
            let _ = p.sink.send(Delivery::Lost { task: *task, error: error() });
        }
        lost
    }
}

/// The submitting connection, held ([`Shared::submit_conn`]). Once the
/// pool is stopping, letting it go first does what the pool's drop left to
/// its holder ([`Shared::finish_drop`]): whoever held the connection while
/// the drop waited for it.
pub(crate) struct SubmitConn<'a> {
    shared: &'a Shared,
    held: MutexGuard<'a, Submitter>,
}

impl SubmitConn<'_> {
    /// The connection and the keys of the spent batches (see
    /// [`Submitter`]), both under the one lock held.
    pub(crate) fn with_spent(&mut self) -> (&mut Conn, &mut Vec<String>) {
        let held = &mut *self.held;
        (&mut held.conn, &mut held.spent_batches)
    }
}

impl std::ops::Deref for SubmitConn<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.held.conn
    }
}

impl std::ops::DerefMut for SubmitConn<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.held.conn
    }
}

impl Drop for SubmitConn<'_> {
    fn drop(&mut self) {
        // ORDERING: Acquire: pairs with the drop's Release store of `stop`.
        if self.shared.stop.load(Ordering::Acquire) {
            self.shared.finish_drop(&mut self.held.conn);
        }
    }
}

/// The result thread; stopped and joined on drop, which also fails the
/// calls in flight with [`RedisPoolError::Dropped`], withdraws their chunks
/// (see [`crate::withdraw`]) and deletes the caller's result stream.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Dispatcher {
    pub(crate) fn start(shared: Arc<Shared>, conn: Conn) -> std::io::Result<Dispatcher> {
        let s = shared.clone();
        let conn = conn.with_reply_timeout(REPLY_TIMEOUT);
        let thread = std::thread::Builder::new().name("multiproc-redis results".into()).spawn(move || run(&s, conn))?;
        Ok(Dispatcher { shared, thread: Some(thread) })
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Nobody will read the results of the calls still in flight (their
        // background threads, or iterators that outlive the pool): their
        // chunks are withdrawn as a terminated call's, and they fail.
        let budget = DROP_TIMEOUT.min(shared.options.reconnect_timeout).max(DROP_TIMEOUT_FLOOR);
        let deadline = Instant::now().checked_add(budget);
        // ORDERING: `stop` is set first: a call that takes the connection
        // after this queues nothing more, and one that queued a batch
        // before has noted its entries under it (see `Engine::submit`).
        let conn = shared.submit_conn(deadline);
        let mut withdrawal = Withdrawal::default();
        for (task, p) in shared.fail_all(|| RedisPoolError::Dropped) {
            withdrawal.add(task, &p);
        }
        let Some(mut conn) = conn else {
            // A call holds the connection, queuing a batch: it withdraws
            // these chunks (and its own batch) when it lets the connection
            // go. Unless it let it go meanwhile: then it is free now, and
            // taking it and letting it go does the same.
            *shared.left_by_drop.lock().unwrap_or_else(|e| e.into_inner()) = Some(withdrawal);
            drop(shared.submit_conn(Some(Instant::now())));
            return;
        };
        shared.run_drop(&mut conn, &withdrawal, deadline);
    }
}

/// Fails the calls in flight if Redis came back from a restart without
/// its data (no append-only file): their tasks are gone.
fn check_restart(shared: &Shared, conn: &mut Conn, run_id: &mut String) {
    let Ok((now, aof)) = conn.server_identity() else { return };
    if now == *run_id || run_id.is_empty() {
        *run_id = now;
        return;
    }
    *run_id = now;
    if aof {
        tracing::info!("redis restarted with its append-only file; the calls go on");
    } else {
        let reason = "redis restarted without append-only persistence (appendonly no), so the queued tasks and \
                      their results are gone; run redis with appendonly yes, and start the call again";
        tracing::error!("{reason}");
        shared.fail_all(|| RedisPoolError::Redis(reason.into()));
    }
}

fn run(shared: &Shared, mut conn: Conn) {
    let mut last_id = "0-0".to_string();
    let mut run_id = conn.server_identity().map(|(id, _)| id).unwrap_or_default();
    let mut connects = conn.connects();
    let opts = StreamReadOptions::default().count(READ_COUNT).block(BLOCK.as_millis() as usize);
    while !shared.stop.load(Ordering::Acquire) {
        let key = &shared.results_key;
        let stopping = || shared.stop.load(Ordering::Acquire);
        let reply = conn.retry_while(
            shared.options.reconnect_timeout,
            None,
            || !stopping(),
            |c| redis::cmd("XREAD").arg(&opts).arg("STREAMS").arg(key).arg(&last_id).query::<redis::Value>(c),
        );
        let reply = match reply.map(schema::read_reply) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!("reading {key}: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            Err(_) if stopping() => break, // the pool was dropped
            Err(e) => {
                let reason = if conn::is_transient(&e) {
                    let (state, until) = if conn::is_refusal(&e) {
                        ("refused every command", "answers")
                    } else {
                        ("unreachable", "is back")
                    };
                    format!(
                        "redis {state} for over {:?} ({e}); the tasks may still run, start the call again once redis {until}",
                        shared.options.reconnect_timeout
                    )
                } else {
                    format!(
                        "could not read the results stream {key}: {e}; the tasks may still run, but their results \
                         cannot be read (another client may have written this key: delete it)"
                    )
                };
                tracing::error!("{reason}");
                shared.fail_all(|| RedisPoolError::Redis(reason.clone()));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if stopping() {
            // The pool is being dropped: it fails the calls in flight and
            // deletes the stream, so what was read is neither delivered nor
            // deleted, and no more command (`INFO`, `XDEL`) delays the drop.
            break;
        }
        // After a reconnect the stream is read again from its start, once:
        // a Redis that restarted may number new entries below `last_id`
        // (its clock behind the old one's), which reading on from it would
        // skip. Entries read are deleted, and a result read twice is
        // dropped as a duplicate.
        let reconnected = conn.connects() != connects;
        if reconnected {
            connects = conn.connects();
            check_restart(shared, &mut conn, &mut run_id);
        }
        let mut read = Vec::new();
        let mut blobs = Vec::new();
        for entry in reply {
            last_id.clone_from(&entry.id);
            match schema::decode_result(&entry.fields) {
                Ok(msg) => deliver(shared, msg, &mut blobs),
                Err(e) => tracing::error!("skipping result entry {} of {key}: {e}", entry.id),
            }
            read.push(entry.id);
        }
        if stopping() {
            break; // as above (the argument keys of what was read expire)
        }
        if !read.is_empty() {
            let mut pipe = redis::pipe();
            pipe.cmd("XDEL").arg(key).arg(&read).ignore();
            if !blobs.is_empty() {
                pipe.cmd("DEL").arg(&blobs).ignore();
            }
            if let Err(e) = conn.run(|c| c.exec_pipeline(&pipe)) {
                tracing::warn!("could not delete read results from {key}: {e} (they expire)");
            }
        }
        if reconnected {
            last_id = "0-0".to_string();
        }
    }
}

fn deliver(shared: &Shared, msg: schema::ResultMsg, blobs: &mut Vec<String>) {
    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
    for r in msg.results {
        match pending.remove(&r.task) {
            Some(p) => {
                blobs.extend(p.blob);
                let _ = p.sink.send(Delivery::Done { task: r.task, outcome: r.outcome });
            }
            None => tracing::debug!("dropping a duplicate (or unwanted) result of chunk {}", r.task),
        }
    }
}
