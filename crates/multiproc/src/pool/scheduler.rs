//! The scheduler: one thread per pool that owns the workers.
//!
//! It hands chunks to workers (several per worker, as many as about
//! [`TARGET_QUEUE`] of work, measured as results come back), batches the
//! records for one worker into one write, never blocks on a socket (its
//! writes are non-blocking with an outbox), and waits on every worker's
//! socket, every worker's exit and the next deadline in one `poll`. So a
//! worker that dies is noticed at once: the chunk it was running (the status
//! page says which item) fails with `WorkerLost` or is retried, the chunks
//! queued behind it are sent elsewhere, and a new worker takes its place.

mod supervision;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{PoolError, TaskError};
use super::job::Chunk;
use super::link::Worker;
use super::protocol::{Batch, RunnerRef};
use super::result::{TASK_CANCELLED, TASK_PENDING, TASK_TAKEN};
use super::ring;
use super::status::{PHASE_CHUNK, PHASE_INIT, PHASE_ITEM, StatusPage};
use super::wait_while_until;
use super::worker::{InitSpec, WorkerConfig, worker_main};
use crate::log::lifecycle;
use crate::process::{Process, StartMethod};
use crate::sys::Deadline;
use crate::sys::imp::{self, Interest, wake::WakeFd};
use crate::wire::{Channel, Outbox, SendFd};

/// Each worker gets about this much queued work (estimated from how fast its
/// chunks come back): enough that it never waits for the next, little enough
/// that the end of a call stays balanced.
pub(super) const TARGET_QUEUE: Duration = Duration::from_millis(2);
/// Chunks per worker in flight, at least, at first (before any chunk came
/// back to measure) and at most.
pub(super) const MIN_DEPTH: usize = 2;
const FIRST_DEPTH: usize = 4;
pub(super) const MAX_DEPTH: usize = 4096;
/// A worker whose socket closed but that did not exit in this time is killed.
const EOF_GRACE: Duration = Duration::from_secs(1);
/// After this many workers in a row failed in their initializer, the pool
/// gives up and fails its tasks instead of starting workers forever.
const INIT_FAILURE_LIMIT: u32 = 3;
/// Workers killed in their initializer by a signal usually sent from outside
/// (SIGKILL, SIGTERM, ...) do not count as the initializer failing: they are
/// replaced, as Python replaces them. Only after this many such deaths in a
/// row per worker slot does the pool give up (an initializer that SIGKILLs
/// its own worker would otherwise have it start workers forever).
const INIT_KILLS_PER_WORKER_LIMIT: u32 = 5;
/// After a worker could not be started, the next attempt comes this much later.
const RESPAWN_DELAY: Duration = Duration::from_millis(100);
/// While the pool is broken because workers could not be started (not
/// through the initializer's fault), it tries again this often, and works
/// again once a worker starts.
const BROKEN_RETRY: Duration = Duration::from_secs(1);

/// How the pool was configured.
#[derive(Debug)]
pub(crate) struct PoolConfig {
    pub processes: usize,
    pub method: StartMethod,
    pub max_tasks_per_child: Option<u64>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub init: Option<InitTemplate>,
}

/// The initializer, kept to start every new worker with it.
#[derive(Debug)]
pub(crate) struct InitTemplate {
    pub runner: RunnerRef,
    pub args: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// What callers share with the scheduler thread.
#[derive(Debug)]
pub(crate) struct Shared {
    inbox: Mutex<Inbox>,
    wake: WakeFd,
    sleeping: AtomicBool,
    /// What `join` waits for.
    finished: Mutex<Finish>,
    finished_cond: Condvar,
}

/// What `join` waits for: the end of the scheduler thread, or, while an
/// `imap` begun before `close` may still submit, the end of the work
/// submitted so far.
#[derive(Debug, Default)]
struct Finish {
    /// The scheduler thread ended (its workers are all reaped).
    ended: bool,
    /// Closed, and nothing submitted is left to run, but an open `imap`
    /// keeps the workers for the input it has yet to read.
    drained: bool,
}

#[derive(Debug, Default)]
struct Inbox {
    chunks: Vec<Chunk>,
    closed: bool,
    terminate: bool,
    cancel_pending: bool,
    /// `imap` iterations begun before `close` that may submit more.
    open_calls: usize,
    /// The scheduler thread ended: nothing submitted can run.
    ended: bool,
    /// `cancel_pending` was called (`Executor::shutdown(_, true)`): open
    /// calls submit nothing more either.
    cancelled: bool,
    /// A job was abandoned (a dropped `imap`): drop its queued chunks.
    abandoned: bool,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk").field("index", &self.index).field("items", &self.items).finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues chunks.
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after `close` or `terminate`; the chunks are dropped.
    pub(crate) fn submit(&self, chunks: Vec<Chunk>) -> Result<(), PoolError> {
        self.submit_unless(chunks, |inbox| inbox.closed)
    }

    /// Registers an `imap` that will submit as it is read; false after
    /// `close` (the call is refused). Its chunks are accepted after `close`
    /// until it calls [`Shared::close_call`], as Python's `imap` begun before
    /// `close` yields all its results.
    pub(crate) fn open_call(&self) -> bool {
        let mut inbox = self.lock();
        if inbox.closed {
            return false;
        }
        inbox.open_calls += 1;
        true
    }

    /// An open call will submit nothing more.
    pub(crate) fn close_call(&self) {
        {
            let mut inbox = self.lock();
            inbox.open_calls -= 1;
            if inbox.open_calls == 0 {
                // `join` waits for the end of the thread again.
                self.finished.lock().unwrap_or_else(|e| e.into_inner()).drained = false;
            }
        }
        self.kick();
    }

    /// Queues chunks of an open call (see [`Shared::open_call`]).
    ///
    /// # Errors
    ///
    /// [`PoolError::Closed`] after `terminate` or `cancel_pending`; the
    /// chunks are dropped.
    pub(crate) fn submit_open(&self, chunks: Vec<Chunk>) -> Result<(), PoolError> {
        self.submit_unless(chunks, |inbox| inbox.terminate || inbox.ended || inbox.cancelled)
    }

    fn submit_unless(&self, chunks: Vec<Chunk>, refused: impl FnOnce(&Inbox) -> bool) -> Result<(), PoolError> {
        {
            let mut inbox = self.lock();
            if refused(&inbox) {
                return Err(PoolError::Closed);
            }
            inbox.chunks.extend(chunks);
        }
        self.kick();
        Ok(())
    }

    /// No new work; the workers stop once the queued work is done.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.kick();
    }

    /// Stops the workers now; unfinished tasks fail with `Terminated`.
    pub(crate) fn terminate(&self) {
        {
            let mut inbox = self.lock();
            inbox.closed = true;
            inbox.terminate = true;
        }
        self.kick();
    }

    /// Fails every task that no worker has received yet with `Cancelled`.
    pub(crate) fn cancel_pending(&self) {
        {
            let mut inbox = self.lock();
            inbox.cancel_pending = true;
            inbox.cancelled = true;
        }
        self.kick();
    }

    /// A job was abandoned (see
    /// [`Job::abandoned`](super::job::Job::abandoned)): its chunks that no
    /// worker has received yet are not sent.
    pub(crate) fn abandon(&self) {
        self.lock().abandoned = true;
        self.kick();
    }

    /// True after `close` or `terminate`.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until the scheduler thread ended (or, with an open call, the
    /// work submitted so far is done: see [`Finish`]), or the deadline; true
    /// if it did.
    pub(crate) fn wait_finished(&self, deadline: Option<Instant>) -> bool {
        let done = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let done = wait_while_until(&self.finished_cond, done, deadline, |d| !d.ended && !d.drained);
        done.ended || done.drained
    }

    /// True once the scheduler thread ended.
    pub(crate) fn ended(&self) -> bool {
        self.finished.lock().unwrap_or_else(|e| e.into_inner()).ended
    }

    fn kick(&self) {
        // ORDERING: SeqCst pairs with the scheduler's store of `sleeping`
        // before it re-checks the inbox, so one of the two sees the other.
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake.signal();
        }
    }
}

/// Starts the pool's workers (on this thread, so start errors are returned)
/// and its scheduler thread.
pub(crate) fn start(config: PoolConfig) -> Result<(Arc<Shared>, JoinHandle<()>), PoolError> {
    let wake = WakeFd::new().map_err(|e| PoolError::Start(crate::ProcessError::Start(e)))?;
    let shared = Arc::new(Shared {
        inbox: Mutex::new(Inbox::default()),
        wake,
        sleeping: AtomicBool::new(false),
        finished: Mutex::new(Finish::default()),
        finished_cond: Condvar::new(),
    });
    let mut sched = Scheduler {
        workers: Vec::with_capacity(config.processes),
        pending: VecDeque::new(),
        next_id: 1,
        next_number: 1,
        closed: false,
        closing: false,
        drained: false,
        broken: None,
        start_broken: false,
        init_failures: 0,
        init_kills: 0,
        respawn_at: None,
        shared: shared.clone(),
        config,
    };
    for _ in 0..sched.config.processes {
        let w = sched.spawn_worker()?;
        lifecycle!(DEBUG, "pool started {} (pid {})", w.process.name(), w.pid);
        sched.workers.push(w);
    }
    let thread = std::thread::Builder::new()
        .name("multiproc-pool".into())
        .spawn(move || sched.run_guarded())
        .map_err(|e| PoolError::Start(crate::ProcessError::Start(e)))?;
    Ok((shared, thread))
}

/// A scheduler that ends with workers still running (its start failed part
/// way, or its thread could not be started) kills and reaps them: nothing
/// else would, and they would run their initializer, then wait for work
/// that never comes until the program exits. At a normal end none is left.
impl Drop for Scheduler {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if w.process.is_alive() {
                w.kill();
                let _ = w.process.join_timeout(std::time::Duration::from_secs(5));
            }
        }
    }
}

struct Scheduler {
    config: PoolConfig,
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    pending: VecDeque<Chunk>,
    next_id: u64,
    next_number: usize,
    /// Closed, and no open call can submit more: the workers stop when idle.
    closed: bool,
    /// `close` was called (open calls may still submit).
    closing: bool,
    /// What `Finish::drained` was last set to.
    drained: bool,
    broken: Option<String>,
    /// `broken` because workers could not be started (a passing cause: out
    /// of descriptors, a stopped fork server): the pool keeps trying.
    start_broken: bool,
    /// Workers in a row that failed in their initializer (its fault).
    init_failures: u32,
    /// Workers in a row killed in their initializer by a signal usually sent
    /// from outside (see [`INIT_KILLS_PER_WORKER_LIMIT`]).
    init_kills: u32,
    /// A worker could not be started: when to try again (nothing else may
    /// wake the scheduler if no worker is left).
    respawn_at: Option<Instant>,
}

impl Scheduler {
    /// Runs the loop; if it panics (a bug), fails every task it holds and
    /// kills the workers, so that no caller waits forever.
    fn run_guarded(mut self) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        if outcome.is_err() {
            tracing::error!("the pool scheduler panicked; failing its tasks");
            self.shared.lock().closed = true;
            self.terminate_all();
        }
        // Work submitted after the end cannot run.
        {
            let mut inbox = self.shared.lock();
            inbox.closed = true;
            inbox.ended = true;
        }
        self.fail_inbox(TaskError::Terminated);
        self.shared.finished.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
        self.shared.finished_cond.notify_all();
    }

    fn run(&mut self) {
        loop {
            if self.take_inbox() {
                self.terminate_all();
                return;
            }
            self.replenish();
            self.assign();
            self.stop_idle();
            self.tell_drained();
            if self.closed && self.pending.is_empty() && self.workers.is_empty() {
                self.fail_inbox(TaskError::Terminated);
                return;
            }
            self.wait_and_handle();
        }
    }

    /// Moves new work to the queue; true when the pool is to terminate.
    fn take_inbox(&mut self) -> bool {
        let mut inbox = self.shared.lock();
        self.pending.extend(inbox.chunks.drain(..));
        self.closing |= inbox.closed;
        self.closed |= inbox.closed && inbox.open_calls == 0;
        let cancel = std::mem::take(&mut inbox.cancel_pending);
        let abandoned = std::mem::take(&mut inbox.abandoned);
        let terminate = inbox.terminate;
        drop(inbox);
        if abandoned {
            self.pending.retain(|chunk| !chunk.job.abandoned());
        }
        if cancel {
            for chunk in self.pending.drain(..) {
                if let Some(state) = &chunk.cancel {
                    // ORDERING: the caller's `cancel` CASes the same word.
                    if state
                        .compare_exchange(TASK_PENDING, TASK_CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                        && state.load(Ordering::Acquire) == TASK_CANCELLED
                    {
                        continue; // already cancelled and completed by the caller
                    }
                }
                chunk.fail(TaskError::Cancelled);
            }
        }
        terminate
    }

    fn fail_inbox(&mut self, error: TaskError) {
        let chunks = std::mem::take(&mut self.shared.lock().chunks);
        for chunk in chunks {
            chunk.fail(error.clone());
        }
    }

    /// Hands queued chunks to workers with room, then writes the batches.
    fn assign(&mut self) {
        if let Some(message) = &self.broken {
            let error = TaskError::NoWorkers(message.clone());
            for chunk in self.pending.drain(..) {
                chunk.fail(error.clone());
            }
            return;
        }
        let now = Instant::now();
        let mut full = vec![false; self.workers.len()];
        while let Some(chunk) = self.pending.front() {
            if let Some(state) = &chunk.cancel
                && state.load(Ordering::Acquire) == TASK_CANCELLED
            {
                self.pending.pop_front();
                continue;
            }
            if chunk.all_skipped() {
                self.pending.pop_front().expect("front exists").fail_skipped();
                continue;
            }
            let pick = (0..self.workers.len())
                .filter(|&i| !full[i] && self.workers[i].can_take())
                .min_by_key(|&i| self.workers[i].inflight.len());
            let Some(i) = pick else { break };
            let chunk = self.pending.pop_front().expect("front exists");
            if let Some(state) = &chunk.cancel {
                // ORDERING: whoever wins the CAS owns the task (see `AsyncResult::cancel`).
                let taken = state.compare_exchange(TASK_PENDING, TASK_TAKEN, Ordering::AcqRel, Ordering::Acquire);
                if taken == Err(TASK_CANCELLED) {
                    continue;
                }
            }
            let id = self.next_id;
            self.next_id += 1;
            let w = &mut self.workers[i];
            match w.send(chunk, id, now) {
                Ok(()) => {
                    w.assigned += 1;
                    if self.config.max_tasks_per_child.is_some_and(|max| w.assigned >= max) {
                        w.retiring = true;
                    }
                }
                Err((chunk, None)) => {
                    full[i] = true;
                    self.pending.push_front(chunk);
                }
                Err((chunk, Some(e))) => {
                    tracing::warn!(pid = w.pid, "could not send a chunk to a pool worker ({e})");
                    full[i] = true;
                    self.pending.push_front(chunk);
                    w.kill();
                }
            }
        }
        for w in &mut self.workers {
            if w.flush().is_err() {
                w.eof_at.get_or_insert(now);
            }
        }
    }

    /// Closed with open calls: lets `join` return while nothing submitted
    /// is left to run (the workers stay for what the open calls submit).
    fn tell_drained(&mut self) {
        if !self.closing || self.closed {
            return;
        }
        let drained = self.pending.is_empty() && self.workers.iter().all(|w| w.inflight.is_empty());
        if drained != self.drained {
            self.drained = drained;
            // Under the inbox lock: once the last open call is gone (it
            // cleared the flag), `join` waits for the end of the thread.
            let inbox = self.shared.lock();
            self.shared.finished.lock().unwrap_or_else(|e| e.into_inner()).drained = drained && inbox.open_calls > 0;
            drop(inbox);
            self.shared.finished_cond.notify_all();
        }
    }

    /// Closes the sockets of workers that are done (they exit on seeing it).
    fn stop_idle(&mut self) {
        for w in &mut self.workers {
            let done = w.retiring || (self.closed && self.pending.is_empty());
            if done && w.inflight.is_empty() && !w.stopping && w.outbox.is_empty() {
                w.stopping = true;
                w.channel.shutdown();
            }
        }
    }

    /// Waits for the next event (work, results, room to write, an exit, a
    /// deadline) and handles it.
    fn wait_and_handle(&mut self) {
        let mut deadline = self.check_timeouts();
        if let Some(at) = self.respawn_at {
            deadline = Some(deadline.map_or(at, |d: Instant| d.min(at)));
        }
        let now = Instant::now();
        for w in &mut self.workers {
            if let Some(at) = w.eof_at {
                let kill_at = at + EOF_GRACE;
                if now >= kill_at {
                    w.kill();
                } else {
                    deadline = Some(deadline.map_or(kill_at, |d: Instant| d.min(kill_at)));
                }
            }
        }
        // ORDERING: SeqCst store, then re-check the inbox: a submitter either
        // sees `sleeping` (and kicks) or we see its chunks.
        self.shared.sleeping.store(true, Ordering::SeqCst);
        let busy = {
            let inbox = self.shared.lock();
            !inbox.chunks.is_empty()
                || inbox.terminate
                || inbox.cancel_pending
                || inbox.abandoned
                || (inbox.closed && !self.closed && (!self.closing || inbox.open_calls == 0))
        };
        let deadline = if busy {
            Deadline::after(Duration::ZERO)
        } else {
            deadline.map_or(Deadline::NEVER, |d| Deadline::after(d.saturating_duration_since(Instant::now())))
        };
        let mut fds: Vec<(BorrowedFd<'_>, Interest)> = vec![(self.shared.wake.as_fd(), Interest::Read)];
        let mut index = Vec::with_capacity(self.workers.len() * 3);
        for (i, w) in self.workers.iter().enumerate() {
            if w.eof_at.is_none() {
                fds.push((w.channel.as_fd(), Interest::Read));
                index.push((i, 0));
                if !w.outbox.is_empty() {
                    fds.push((w.channel.as_fd(), Interest::Write));
                    index.push((i, 1));
                }
            }
            if let Some(fd) = w.exit_fd() {
                fds.push((fd, Interest::Read));
                index.push((i, 2));
            }
        }
        let ready = imp::poll_fds(&fds, deadline).unwrap_or_else(|_| vec![false; fds.len()]);
        drop(fds);
        self.shared.sleeping.store(false, Ordering::SeqCst);
        if ready[0] {
            self.shared.wake.drain();
        }
        let now = Instant::now();
        let mut exited = Vec::new();
        for (&(i, what), &is_ready) in index.iter().zip(&ready[1..]) {
            if !is_ready {
                continue;
            }
            let w = &mut self.workers[i];
            match what {
                0 => w.read_all(now),
                1 => {
                    if w.channel.flush_nonblocking(&mut w.outbox).is_err() {
                        w.eof_at.get_or_insert(now);
                    }
                }
                _ => exited.push(i),
            }
        }
        for i in exited.into_iter().rev() {
            self.on_exit(i);
        }
    }
}
