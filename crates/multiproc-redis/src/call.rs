//! One call's engine: encodes the input into chunks, queues them in
//! batches (each whole or not at all, see `enqueue`) through a bounded
//! window, and yields each item's outcome as its chunk's result arrives.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use multiproc::RemoteFn;
use serde_bytes::ByteBuf;

use crate::conn::{self, Conn};
use crate::dispatch::{Delivery, Pending, Shared};
use crate::enqueue::{BatchKeys, ChunkEntry, NotQueued, Queued, enqueue};
use crate::error::{RedisPoolError, TaskFailure, explain};
use crate::life::CallGuard;
use crate::schema::{self, Args, Outcome, TaskMsg};
use crate::withdraw::Withdrawal;

/// Chunks per batch.
const BATCH: usize = 512;
/// Argument bytes per batch (roughly: the chunk that crosses it is the
/// last): a batch is one command, which Redis holds whole, and its script
/// copies.
const BATCH_BYTES: usize = 16 << 20;
/// The longest a call takes to delete its queued chunks when it ends
/// early (out of wait time, dropped, failed).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(1);

/// The function of a call and how to run it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub remote: RemoteFn,
    pub function: &'static str,
    pub chunksize: usize,
    pub retries: u32,
    pub task_timeout: Option<Duration>,
    pub wait_timeout: Option<Duration>,
}

/// An item's encoded argument tuple, or why it could not be encoded.
pub(crate) type EncodedItem = Result<Vec<u8>, String>;

/// One item's outcome: its index and the encoded result.
pub(crate) type ItemOutcome = (usize, Result<Vec<u8>, RedisPoolError>);

/// A call in progress.
pub(crate) struct Engine<'a> {
    shared: Arc<Shared>,
    plan: Plan,
    items: Box<dyn Iterator<Item = EncodedItem> + Send + 'a>,
    next_index: usize,
    exhausted: bool,
    tx: mpsc::Sender<Delivery>,
    rx: mpsc::Receiver<Delivery>,
    /// chunk id → (first index, item count)
    in_flight: HashMap<u64, (usize, usize)>,
    ready: VecDeque<ItemOutcome>,
    /// Items that failed to encode (their outcome is already in `ready`).
    skip: HashSet<usize>,
    deadline: Option<Instant>,
    /// Counts this call for `RedisPool::join` (`None`: refused, closed pool).
    call: Option<CallGuard>,
    /// For an ordered `imap`: the index of the next result its reader
    /// yields. The input is read at most a window of items ahead of it, so
    /// that results held behind a slow item stay bounded.
    yielded: Option<usize>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("function", &self.plan.function)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl<'a> Engine<'a> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        plan: Plan,
        items: impl Iterator<Item = EncodedItem> + Send + 'a,
    ) -> Engine<'a> {
        let (tx, rx) = mpsc::channel();
        let deadline = plan.wait_timeout.and_then(|t| Instant::now().checked_add(t));
        let call = CallGuard::begin(&shared);
        let refused = call.is_none();
        let mut engine = Engine {
            shared,
            plan,
            items: Box::new(items),
            next_index: 0,
            exhausted: false,
            tx,
            rx,
            in_flight: HashMap::new(),
            ready: VecDeque::new(),
            skip: HashSet::new(),
            deadline,
            call,
            yielded: None,
        };
        if refused {
            // A closed pool: the call fails whole, its input unread.
            engine.exhausted = true;
            engine.ready.push_back((0, Err(RedisPoolError::Closed)));
        }
        engine
    }

    /// Notes that an ordered reader's next result is item `index`.
    pub(crate) fn yielded_up_to(&mut self, index: usize) {
        self.yielded = Some(index);
    }

    /// Whether the input may be read further: always, unless an ordered
    /// reader is a window of items behind (its results held in memory).
    fn may_read_ahead(&self) -> bool {
        let ahead = self.shared.options.window.saturating_mul(self.plan.chunksize);
        self.yielded.is_none_or(|y| self.next_index < y.saturating_add(ahead))
    }

    /// Submits chunks until the window is full or the input ends.
    pub(crate) fn top_up(&mut self) -> Result<(), RedisPoolError> {
        while !self.exhausted && self.in_flight.len() < self.shared.options.window && self.may_read_ahead() {
            let room = (self.shared.options.window - self.in_flight.len()).min(BATCH);
            let (mut chunks, mut bytes) = (Vec::new(), 0usize);
            while chunks.len() < room && bytes < BATCH_BYTES && !self.exhausted && self.may_read_ahead() {
                let first = self.next_index;
                let mut args = Vec::new();
                while args.len() < self.plan.chunksize {
                    match self.items.next() {
                        None => {
                            self.exhausted = true;
                            break;
                        }
                        Some(Ok(a)) => args.push(ByteBuf::from(a)),
                        Some(Err(reason)) => {
                            let index = first + args.len();
                            self.ready.push_back((index, Err(RedisPoolError::Encode { index, reason })));
                            self.skip.insert(index);
                            args.push(ByteBuf::new()); // keeps indices aligned; its outcome is ignored
                        }
                    }
                }
                self.next_index += args.len();
                bytes += args.iter().map(|a| a.len()).sum::<usize>();
                if !args.is_empty() {
                    chunks.push((first, args));
                }
            }
            self.submit(chunks)?;
        }
        Ok(())
    }

    fn submit(&mut self, chunks: Vec<(usize, Vec<ByteBuf>)>) -> Result<(), RedisPoolError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        let tasks_key = shared.keys.tasks();
        let ttl_ms = shared.options.result_ttl.as_millis() as u64;
        let mut batch = Vec::with_capacity(chunks.len());
        let mut ids = Vec::with_capacity(chunks.len());
        let dropped = {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            // ORDERING: the pool's drop sets `stop` before it fails the
            // chunks pending (under this lock): a chunk registered after
            // that would wait forever, with no result thread to deliver it.
            let dropped = shared.stop.load(Ordering::Acquire);
            for (first, items) in chunks {
                let task = shared.next_task.fetch_add(1, Ordering::Relaxed);
                let n = items.len();
                let size: usize = items.iter().map(|a| a.len() + 8).sum();
                let (args, blob) = if size > schema::BLOB_THRESHOLD {
                    let key = shared.keys.blob(&shared.caller, task);
                    let blob = schema::encode_blob(&items);
                    (Args::Blob { key: key.clone(), len: blob.len() as u64 }, Some((key, blob)))
                } else {
                    (Args::Inline(items), None)
                };
                let msg = TaskMsg {
                    build_id: multiproc::build_id().to_string(),
                    function: self.plan.function.to_string(),
                    remote: self.plan.remote,
                    caller: shared.caller.clone(),
                    task,
                    attempt: 1,
                    max_attempts: self.plan.retries.saturating_add(1),
                    timeout_ms: self.plan.task_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                    result_ttl_ms: ttl_ms,
                    last_error: None,
                    args,
                };
                let fields = Vec::from(schema::task_fields(&msg, &shared.key));
                if !dropped {
                    let blob_key = blob.as_ref().map(|(key, _)| key.clone());
                    pending.insert(task, Pending { sink: self.tx.clone(), blob: blob_key, entry: None });
                }
                batch.push(ChunkEntry { fields, blob });
                self.in_flight.insert(task, (first, n));
                ids.push(task);
            }
            dropped
        };
        if dropped {
            self.fail_chunks(ids, || RedisPoolError::Dropped);
            self.end_now(|| RedisPoolError::Dropped);
            return Ok(());
        }
        // Redis away or not answering: wait for it no longer than the
        // reconnect timeout, nor past the call's deadline.
        let (patience, deadline) = (shared.options.reconnect_timeout, self.deadline);
        let batch_key = shared.keys.batch(&shared.caller, ids[0]);
        let sent = match shared.submit_conn(deadline) {
            // ORDERING: the pool's drop sets `stop`, then takes this
            // connection to withdraw the chunks pending: a batch queued
            // before it took the connection has its entries noted (below,
            // still under it) and is withdrawn; none may be queued after.
            Some(_) if shared.stop.load(Ordering::Acquire) => None,
            Some(mut conn) => {
                // The spent batch keys are guarded by the connection's lock.
                let (submit, spent) = conn.with_spent();
                let keys = BatchKeys { tasks: &tasks_key, batch: &batch_key, spent, stop: &shared.stop };
                // Letting the connection go at the end of this block does
                // what the drop may have left to this call (see `SubmitConn`).
                match enqueue(submit, keys, ttl_ms, &batch, patience, deadline) {
                    // The pool's drop began while the batch was being
                    // queued, and may have given up waiting for this
                    // connection (its chunks then pending no more, with no
                    // entry to withdraw): withdraw the batch here, as the
                    // drop would have.
                    Ok(entries) if shared.stop.load(Ordering::Acquire) => {
                        if let Err(e) = withdraw_batch(shared, &mut conn, &ids, entries, &batch) {
                            tracing::warn!(
                                "could not withdraw {} chunks queued while their pool was dropped: {e} (they may \
                                 run; their results are dropped)",
                                ids.len()
                            );
                        }
                        None
                    }
                    Ok(entries) => {
                        shared.note_entries(&ids, entries);
                        Some(Ok(()))
                    }
                    Err(NotQueued { error, queued }) => {
                        let fate = match queued {
                            Queued::No => "; none of them was queued".to_string(),
                            Queued::Maybe => ", then start the call again (redis did not confirm the chunks: they \
                                              may run, their results are dropped)"
                                .to_string(),
                            Queued::Yes(entries) => {
                                let lost = "; redis had queued them at an earlier try whose reply was lost";
                                match withdraw_batch(shared, &mut conn, &ids, entries, &batch) {
                                    Ok(()) => format!(
                                        "{lost}, and they were withdrawn (one a worker host took meanwhile runs \
                                         there, its result dropped)"
                                    ),
                                    Err(e) => format!(
                                        "{lost}, and withdrawing them failed ({e}): they may run, their results are \
                                         dropped"
                                    ),
                                }
                            }
                        };
                        // ORDERING: Acquire: as above. Tries stop when the
                        // pool is dropped: the call ends as dropped.
                        if shared.stop.load(Ordering::Acquire) { None } else { Some(Err((error, fate))) }
                    }
                }
            }
            None => Some(Err((conn::deadline_passed(), "; none of them was queued".to_string()))),
        };
        let Some(sent) = sent else {
            self.fail_chunks(ids, || RedisPoolError::Dropped);
            self.end_now(|| RedisPoolError::Dropped);
            return Ok(());
        };
        match sent {
            Ok(()) => Ok(()),
            Err((e, fate)) => {
                // Each item of the chunks not queued fails (one outcome per item).
                let what = explain(&format!("could not queue {} chunks on {tasks_key}", ids.len()), &e, None);
                let reason = format!("{what}{fate}");
                let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
                let wait_timeout = self.plan.wait_timeout;
                let error = || match wait_timeout {
                    Some(t) if timed_out => RedisPoolError::Timeout(t),
                    _ => RedisPoolError::Redis(reason.clone()),
                };
                self.fail_chunks(ids, error);
                Err(error())
            }
        }
    }

    /// Fails each item of the chunks `ids` (one outcome per item); their
    /// call no longer waits for them.
    fn fail_chunks(&mut self, ids: Vec<u64>, error: impl Fn() -> RedisPoolError) {
        for task in ids {
            self.shared.forget(task);
            let Some((first, n)) = self.in_flight.remove(&task) else { continue };
            for index in first..first + n {
                if !self.skip.remove(&index) {
                    self.ready.push_back((index, Err(error())));
                }
            }
        }
    }

    /// Submits the first window at once, so that the tasks run before the
    /// first result is asked for (as `Pool::imap` does, and Python's).
    pub(crate) fn start(&mut self) {
        if !self.shared.life.is_terminated() {
            self.fill();
        }
    }

    /// Submits chunks until the window is full or the input ends; false if
    /// that failed: the input left unread then fails as one more outcome,
    /// after the rest, and the chunks queued before fail with it (nobody
    /// waits for them).
    fn fill(&mut self) -> bool {
        let Err(e) = self.top_up() else { return true };
        let unread = !self.exhausted;
        self.cancel_queued();
        self.fail_in_flight_with(|| e.same());
        if unread {
            self.ready.push_back((self.next_index, Err(e)));
        }
        false
    }

    /// The next item outcome in the order they arrive (`Some(None)` when
    /// the call is done), waiting no later than `until`: `None` when it
    /// passed first (the call goes on).
    pub(crate) fn next_outcome_until(&mut self, until: Option<Instant>) -> Option<Option<ItemOutcome>> {
        loop {
            if let Some(o) = self.ready.pop_front() {
                return Some(Some(o));
            }
            if self.shared.life.is_terminated() && !(self.exhausted && self.in_flight.is_empty()) {
                self.end_terminated();
                continue;
            }
            if !self.fill() {
                continue;
            }
            if !self.ready.is_empty() {
                continue; // chunks failed as they were submitted
            }
            if self.in_flight.is_empty() {
                return Some(None);
            }
            let mut wait = match self.deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left.min(Duration::from_secs(1)),
                    None => {
                        // Nobody waits for them now: a worker must not run them later.
                        self.cancel_queued();
                        let timeout = self.plan.wait_timeout.unwrap_or_default();
                        self.fail_in_flight_with(|| RedisPoolError::Timeout(timeout));
                        continue;
                    }
                },
                None => Duration::from_secs(1),
            };
            if let Some(until) = until {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                wait = wait.min(left);
            }
            match self.rx.recv_timeout(wait) {
                Ok(d) => self.accept(d),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the engine holds a sender"),
            }
        }
    }

    fn accept(&mut self, delivery: Delivery) {
        let (task, outcome) = match delivery {
            Delivery::Done { task, outcome } => (task, Ok(outcome)),
            Delivery::Lost { task, error } => (task, Err(error)),
            Delivery::Wake => return,
        };
        let Some((first, n)) = self.in_flight.remove(&task) else { return };
        let mut push = |index: usize, r: Result<Vec<u8>, RedisPoolError>| {
            if !self.skip.remove(&index) {
                self.ready.push_back((index, r));
            }
        };
        match outcome {
            Ok(Outcome::Items(items)) if items.len() == n => {
                for (k, item) in items.into_iter().enumerate() {
                    let index = first + k;
                    push(index, item.map(ByteBuf::into_vec).map_err(|error| RedisPoolError::Task { index, error }));
                }
            }
            Ok(Outcome::Items(items)) => {
                let error = TaskFailure::Unserializable(format!("result holds {} outcomes for {n} items", items.len()));
                (first..first + n)
                    .for_each(|index| push(index, Err(RedisPoolError::Task { index, error: error.clone() })));
            }
            Ok(Outcome::Failed(error)) => {
                (first..first + n)
                    .for_each(|index| push(index, Err(RedisPoolError::Task { index, error: error.clone() })));
            }
            Err(error) => {
                (first..first + n).for_each(|index| push(index, Err(error.same())));
            }
        }
    }

    /// One more hold on this call for `RedisPool::join`, to keep past the
    /// engine (while a background call runs its callback); `None` for a
    /// call the closed pool refused.
    pub(crate) fn hold(&self) -> Option<CallGuard> {
        self.call.as_ref().map(|_| CallGuard::hold(&self.shared))
    }

    /// The pool was terminated: the chunks still queued are deleted, those
    /// in flight and the input left unread fail with
    /// [`RedisPoolError::Terminated`].
    fn end_terminated(&mut self) {
        self.end_now(|| RedisPoolError::Terminated);
    }

    /// Ends the call now, its input read no further (the pool was
    /// terminated or dropped): the chunks still queued are deleted, and
    /// those in flight and the input left unread (as one more outcome)
    /// fail with `error`.
    fn end_now(&mut self, error: impl Fn() -> RedisPoolError) {
        let unread = !self.exhausted;
        self.cancel_queued();
        self.fail_in_flight_with(&error);
        if unread {
            self.ready.push_back((self.next_index, Err(error())));
        }
    }

    fn fail_in_flight_with(&mut self, error: impl Fn() -> RedisPoolError) {
        self.exhausted = true;
        // Forgotten with their entries: they go on in the workers.
        let mut lost: Vec<(u64, (usize, usize))> = self.in_flight.drain().collect();
        lost.sort_by_key(|(_, (first, _))| *first);
        for (task, (first, n)) in lost {
            self.shared.forget(task);
            for index in first..first + n {
                if !self.skip.remove(&index) {
                    self.ready.push_back((index, Err(error())));
                }
            }
        }
    }
}

/// Withdraws the chunks `ids` of `batch`, queued under `entries` (by a try
/// of its script whose reply was lost before a later try failed, see
/// [`Queued::Yes`], or while the pool was being dropped), on the
/// submitting connection `conn`.
fn withdraw_batch(
    shared: &Shared,
    conn: &mut Conn,
    ids: &[u64],
    entries: Vec<String>,
    batch: &[ChunkEntry],
) -> redis::RedisResult<()> {
    let mut withdrawal = Withdrawal::default();
    for ((task, entry), chunk) in ids.iter().zip(entries).zip(batch) {
        shared.forget(*task);
        withdrawal.add_parts(*task, Some(entry), chunk.blob.as_ref().map(|(key, _)| key.clone()));
    }
    withdrawal.run(conn, shared, Some(Instant::now() + CANCEL_TIMEOUT))
}

/// A call dropped before it finished (an `imap` abandoned, a `map` that
/// stopped at its first failure) cancels its chunks still in the task
/// stream: their entries and argument keys are deleted, and the chunks are
/// marked withdrawn, so that a host drops unrun a chunk delivered again
/// under an entry id the call does not know. A chunk already running
/// finishes, and its result is dropped.
impl Drop for Engine<'_> {
    fn drop(&mut self) {
        self.cancel_queued();
    }
}

impl Engine<'_> {
    /// Forgets the chunks in flight, deletes those still in the task
    /// stream with their argument keys, and adds them all to the caller's
    /// withdrawn set (see [`crate::withdraw`]).
    fn cancel_queued(&mut self) {
        let mut withdrawal = Withdrawal::default();
        for task in self.in_flight.keys() {
            if let Some(p) = self.shared.forget(*task) {
                withdrawal.add(*task, &p);
            }
        }
        if withdrawal.entries() == 0 {
            return;
        }
        // A call out of time still withdraws its tasks, but briefly: one
        // deadline for all the commands.
        let deadline = Some(Instant::now() + CANCEL_TIMEOUT);
        let Some(mut conn) = self.shared.submit_conn(deadline) else {
            tracing::warn!("could not cancel {} queued chunks: the connection stayed busy", withdrawal.entries());
            return;
        };
        if let Err(e) = withdrawal.run(&mut conn, &self.shared, deadline) {
            tracing::warn!("could not cancel {} queued chunks: {e}", withdrawal.entries());
        }
    }
}
