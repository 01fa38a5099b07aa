//! A version's bounded request queue and the dynamic batcher that cuts it
//! into batches for idle workers.
//!
//! A worker thread that is free asks for the next batch. The batch leaves
//! when it is full, when it reaches a preferred size, when its oldest request
//! has waited `max_queue_delay`, or, with no delay set (0), at once (the
//! asking worker is idle by definition). Requests whose caller is gone or
//! whose deadline passed are dropped before they reach a worker.
//!
//! Sizes count rows, not requests: each request weighs its `rows` (1 for a
//! typed request, the batch dimension of a tensor request), and a batch is
//! cut before the next request would take it past `max_batch_size` rows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bell::Ringer;
use crate::deadline::after;
use crate::gauge::{InFlight, Releases};
use crate::items::Encoded;
use crate::metrics::BatchReason;
use crate::settings::ModelSettings;
use crate::slot::{Answer, Claimed, Slot};

/// What happens after the model answered a pipeline request.
pub(crate) enum Continuation {
    /// The answer goes back to the caller; the pipeline's hold on the
    /// request ends with it (no allocation per request).
    Answer(InFlight),
    /// The answer goes on to postprocessing.
    Post(Box<dyn FnOnce(Answer, Arc<Slot>) + Send>),
}

impl Continuation {
    /// Hands the model's answer on (an answer for the caller is claimed
    /// in `claimed`, to be published after its batch is counted; the
    /// request's place in its pipeline goes to `releases`); false if the
    /// caller already had its answer (its deadline passed).
    pub fn run(self, answer: Answer, slot: Arc<Slot>, claimed: &mut Claimed, releases: &mut Releases) -> bool {
        match self {
            Continuation::Answer(guard) => {
                releases.add(guard);
                claimed.claim(slot, answer)
            }
            // A caller already answered (its deadline passed) gets no
            // postprocessing: nobody would read it.
            Continuation::Post(_) if slot.is_done() => false,
            Continuation::Post(then) => {
                then(answer, slot);
                true
            }
        }
    }
}

/// One queued request.
pub(crate) struct Pending {
    /// The encoded input.
    pub input: Encoded,
    /// Where the answer goes.
    pub slot: Arc<Slot>,
    /// When it entered this queue.
    pub enqueued: Instant,
    /// When it must be answered by.
    pub deadline: Option<Instant>,
    /// For a pipeline request: the next stage.
    pub then: Option<Continuation>,
    /// The rows it adds to a batch (at least 1): what `max_batch_size` and
    /// the preferred sizes count.
    pub rows: usize,
    /// What its caller asked the server to keep while it holds the
    /// request ([`crate::Request::hold`]): dropped with it, whichever way
    /// it leaves (answered, failed, swept, drained), never kept apart.
    pub held: Option<crate::request::Held>,
}

impl Pending {
    /// How long its caller waited for a failure known `now`: until now, or
    /// until its deadline if that came first (the caller had its error then).
    pub fn failed_after(&self, now: Instant) -> Duration {
        let until = self.deadline.map_or(now, |d| d.min(now));
        until.saturating_duration_since(self.slot.arrived)
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("bytes", &self.input.as_bytes().len())
            .field("rows", &self.rows)
            .field("enqueued", &self.enqueued)
            .field("held", &self.held.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct State {
    items: VecDeque<Pending>,
    /// False once draining: new requests go elsewhere.
    accepting: bool,
    /// True when the version stops at once (shutdown): workers quit.
    stopped: bool,
    /// Bumped to wake idle workers for a reason other than a new request.
    generation: u64,
    /// Worker threads waiting in `next_batch` (a push wakes one only if any).
    waiting: usize,
    /// The bells of the worker threads asleep in `sleep_while_empty`: a
    /// push with no thread waiting in `next_batch` rings one.
    sleepers: Vec<Ringer>,
    /// The bells of the worker threads asleep in `sleep_unless_closing`
    /// (a worker loading, a crash's backoff): rung when the queue closes or
    /// stops, and when a closed queue runs empty (its version winds down).
    watchers: Vec<Ringer>,
    /// The watchers asleep while no queued request held anything: a push
    /// of one that does rings them (they then sweep the queue as they wait).
    lookouts: Vec<Ringer>,
    /// Sleepers rung and not awake yet: worker threads on their way to
    /// `next_batch` (no batch is taken ahead for a busy worker meanwhile).
    roused: usize,
    /// Requests taken ahead by [`BatchQueue::take_full`] that their worker
    /// has not started: they still count against the capacity, so taking
    /// ahead never lets more requests wait than the queue holds.
    held: usize,
}

/// Why a push was refused; the request is handed back (boxed: a refusal is
/// rare, and a request is a few cache lines long).
#[derive(Debug)]
pub(crate) enum Refused {
    /// The queue is full.
    Full(Box<Pending>),
    /// The version no longer accepts requests (draining or stopped).
    Closed(Box<Pending>),
}

/// A bounded queue of requests with its batching rules.
#[derive(Debug)]
pub(crate) struct BatchQueue {
    state: Mutex<State>,
    changed: Condvar,
    capacity: usize,
    /// Requests queued so far, a count that only grows: a worker thread
    /// compares it across a call to tell a lone request from one among
    /// others (see `crate::lone`).
    arrivals: AtomicU64,
}

/// What a worker thread gets from [`BatchQueue::next_batch`].
#[derive(Debug)]
pub(crate) enum Next {
    /// A batch and why it left.
    Batch(Vec<Pending>, BatchReason),
    /// Nothing for now (the wait timed out); check your worker and ask again.
    Idle,
    /// The queue is closed and empty, or stopped: the worker should quit.
    Quit,
}

impl BatchQueue {
    pub fn new(capacity: usize) -> BatchQueue {
        BatchQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                accepting: true,
                stopped: false,
                generation: 0,
                waiting: 0,
                sleepers: Vec::new(),
                watchers: Vec::new(),
                lookouts: Vec::new(),
                roused: 0,
                held: 0,
            }),
            changed: Condvar::new(),
            capacity,
            arrivals: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request, or hands it back at once if the queue is full or
    /// closed. `force` skips the capacity check (a pipeline bounds its own).
    /// A full queue first drops the requests whose caller is gone or whose
    /// deadline passed into `dropped` (for the caller to fail): they hold
    /// no room a live request is refused for (only then: a queue with room
    /// is swept as its batches leave, or by a supervisor that waits: see
    /// [`BatchQueue::sleep_unless_closing`], whose lookouts it rings).
    pub fn push(&self, p: Pending, force: bool, dropped: &mut Vec<Pending>) -> Result<(), Refused> {
        let mut s = self.lock();
        if !s.accepting || s.stopped {
            return Err(Refused::Closed(Box::new(p)));
        }
        if !force && s.items.len() + s.held >= self.capacity {
            let all = s.items.len();
            sweep(&mut s, all, Instant::now(), dropped);
            if s.items.len() + s.held >= self.capacity {
                return Err(Refused::Full(Box::new(p)));
            }
        }
        let lookouts = (p.held.is_some() && !s.lookouts.is_empty()).then(|| std::mem::take(&mut s.lookouts));
        s.items.push_back(p);
        self.arrived(1);
        self.wake_one(s);
        lookouts.iter().flatten().for_each(Ringer::ring);
        Ok(())
    }

    /// Queues several requests under one lock (a pipeline's chunk), or hands
    /// them all back if the queue is closed. Skips the capacity check: the
    /// pipeline bounds what it holds.
    pub fn push_many(&self, batch: Vec<Pending>) -> Result<(), Vec<Pending>> {
        let mut s = self.lock();
        if !s.accepting || s.stopped {
            return Err(batch);
        }
        let n = batch.len();
        s.items.extend(batch);
        let wake = s.waiting > 0;
        let rung = s.rouse_all();
        drop(s);
        self.arrived(n);
        if wake {
            self.changed.notify_all();
        }
        rung.iter().for_each(Ringer::ring);
        Ok(())
    }

    /// Puts a batch that could not be sent back at the front, in order.
    pub fn push_front(&self, batch: Vec<Pending>) {
        let mut s = self.lock();
        for p in batch.into_iter().rev() {
            s.items.push_front(p);
        }
        let rung = s.rouse_all();
        drop(s);
        self.changed.notify_all();
        rung.iter().for_each(Ringer::ring);
    }

    fn arrived(&self, n: usize) {
        // ORDERING: Relaxed: a hint for polling, nothing is published through it.
        self.arrivals.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Requests queued so far (never decreases).
    pub fn arrivals(&self) -> u64 {
        // ORDERING: Relaxed: see `arrived`.
        self.arrivals.load(Ordering::Relaxed)
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Requests waiting that may still run: those whose caller is gone or
    /// whose deadline passed go to `dropped` first (for the caller to fail).
    pub fn live_len(&self, dropped: &mut Vec<Pending>) -> usize {
        let mut s = self.lock();
        let all = s.items.len();
        sweep(&mut s, all, Instant::now(), dropped);
        s.items.len()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Stops accepting; workers finish what is queued, then quit.
    pub fn close(&self) {
        let mut s = self.lock();
        s.accepting = false;
        s.generation += 1;
        let rung = s.rouse_all_and_watchers();
        drop(s);
        self.changed.notify_all();
        rung.iter().for_each(Ringer::ring);
    }

    /// Accepts again (a drained version loaded anew).
    pub fn reopen(&self) {
        let mut s = self.lock();
        s.accepting = true;
        s.stopped = false;
    }

    /// Stops now: workers quit; returns what was still queued.
    pub fn stop(&self) -> Vec<Pending> {
        let mut s = self.lock();
        s.accepting = false;
        s.stopped = true;
        s.generation += 1;
        let left = s.items.drain(..).collect();
        let rung = s.rouse_all_and_watchers();
        drop(s);
        self.changed.notify_all();
        rung.iter().for_each(Ringer::ring);
        left
    }

    /// Takes every queued request (to fail them: crash-looping).
    pub fn take_all(&self) -> Vec<Pending> {
        let mut s = self.lock();
        let all = s.items.drain(..).collect();
        let rung = s.watchers_if_drained();
        drop(s);
        rung.iter().for_each(Ringer::ring);
        all
    }

    /// A full batch at once, if one is queued and no worker thread waits for
    /// work (an idle worker should have it): lets a busy worker keep its next
    /// batch in its pipe, so the model starts it as soon as it is done with
    /// the current one. Full: `max_batch_size` rows, or as many as fit
    /// before a request that would not. Dropped requests go to `dropped` as
    /// in `next_batch`.
    pub fn take_full(&self, settings: &ModelSettings, dropped: &mut Vec<Pending>) -> Option<Vec<Pending>> {
        let max = settings.max_batch_size;
        let mut s = self.lock();
        if s.stopped || s.waiting > 0 || s.roused > 0 || !s.sleepers.is_empty() || s.items.is_empty() {
            return None;
        }
        if !cut(&s.items, max, &[]).full {
            return None;
        }
        sweep(&mut s, max, Instant::now(), dropped);
        let c = cut(&s.items, max, &[]);
        if !c.full {
            return None;
        }
        s.held += c.take;
        let batch = s.items.drain(..c.take).collect();
        let rung = s.watchers_if_drained();
        drop(s);
        rung.iter().for_each(Ringer::ring);
        Some(batch)
    }

    /// `n` requests taken ahead by [`BatchQueue::take_full`] started (or
    /// went back to the queue): they no longer count as held.
    pub fn release(&self, n: usize) {
        let mut s = self.lock();
        s.held = s.held.saturating_sub(n);
    }

    /// Waits up to `patience` for a batch by the rules of `settings`.
    /// Expired and cancelled requests found on the way are returned in
    /// `dropped` for the caller to fail. `roused`: the caller was rung
    /// awake in [`BatchQueue::sleep_while_empty`] (which said so) and comes
    /// for work now; until then no batch was taken ahead for a busy worker.
    pub fn next_batch(
        &self,
        settings: &ModelSettings,
        patience: Duration,
        dropped: &mut Vec<Pending>,
        roused: bool,
    ) -> Next {
        let give_up = after(Instant::now(), patience);
        let mut s = self.lock();
        if roused {
            s.roused = s.roused.saturating_sub(1);
        }
        let generation = s.generation;
        loop {
            if s.stopped {
                return Next::Quit;
            }
            let now = Instant::now();
            sweep(&mut s, settings.max_batch_size, now, dropped);
            let n = s.items.len();
            if n == 0 && !s.accepting {
                // (Emptied by the sweep, maybe.)
                let rung = s.watchers_if_drained();
                drop(s);
                rung.iter().for_each(Ringer::ring);
                return Next::Quit;
            }
            let mut wait_until = give_up;
            if n > 0 {
                let c = cut(&s.items, settings.max_batch_size, &settings.preferred_batch_sizes);
                let decision = if c.full {
                    Some((c.take, BatchReason::Full))
                } else if !s.accepting {
                    Some((c.take, BatchReason::Drain))
                } else if let Some(p) = c.preferred {
                    Some((p, BatchReason::Preferred))
                } else if settings.max_queue_delay.is_zero() {
                    Some((c.take, BatchReason::IdleWorker))
                } else {
                    let due = after(s.items[0].enqueued, settings.max_queue_delay);
                    if due <= now {
                        Some((c.take, BatchReason::Delay))
                    } else {
                        wait_until = wait_until.min(due);
                        None
                    }
                };
                if let Some((size, reason)) = decision {
                    let batch: Vec<Pending> = s.items.drain(..size).collect();
                    if !s.items.is_empty() {
                        // More work: for another idle worker thread.
                        self.wake_one(s);
                    } else if !s.accepting {
                        // The last request of a draining version.
                        let rung = s.watchers_if_drained();
                        drop(s);
                        rung.iter().for_each(Ringer::ring);
                    }
                    return Next::Batch(batch, reason);
                }
            }
            if s.generation != generation {
                return Next::Idle;
            }
            let now = Instant::now();
            if now >= wait_until && wait_until == give_up {
                return Next::Idle;
            }
            let wait = wait_until.saturating_duration_since(now).max(Duration::from_micros(50));
            s.waiting += 1;
            s = self.changed.wait_timeout(s, wait).unwrap_or_else(|e| e.into_inner()).0;
            s.waiting -= 1;
        }
    }
}

/// How the front of a queue packs into one batch of at most `max` rows.
#[derive(Debug, PartialEq, Eq)]
struct Cut {
    /// The requests the batch takes: those that fit (at least one).
    take: usize,
    /// The batch cannot grow: it holds `max` rows, or the next request
    /// would take it past `max`.
    full: bool,
    /// The most requests whose rows add up to a preferred size, if any do.
    preferred: Option<usize>,
}

/// Packs the front of `items` into a batch of at most `max` rows (a first
/// request over `max` goes alone), noting where its rows meet a size of
/// `preferred`. Walks no further than the batch reaches.
fn cut(items: &VecDeque<Pending>, max: usize, preferred: &[usize]) -> Cut {
    let (mut take, mut rows, mut at_preferred) = (0, 0usize, None);
    for p in items {
        if take > 0 && rows.saturating_add(p.rows) > max {
            return Cut { take, full: true, preferred: at_preferred };
        }
        take += 1;
        rows = rows.saturating_add(p.rows);
        if preferred.contains(&rows) {
            at_preferred = Some(take);
        }
        if rows >= max {
            return Cut { take, full: true, preferred: at_preferred };
        }
    }
    Cut { take, full: false, preferred: at_preferred }
}

/// Drops the requests whose caller is gone or whose deadline passed into
/// `dropped`. Only the requests that could leave now (the first `front`) are
/// looked at, so a deep queue is not walked for every batch; if one of them
/// is gone, the whole queue is swept once. Callers past their deadline get
/// their error from the slot's own deadline meanwhile.
fn sweep(s: &mut State, front: usize, now: Instant, dropped: &mut Vec<Pending>) {
    let gone = |p: &Pending| p.slot.is_cancelled() || p.deadline.is_some_and(|d| d <= now);
    let front = s.items.len().min(front);
    if s.items.range(..front).any(gone) {
        let (gone, keep): (VecDeque<_>, VecDeque<_>) = s.items.drain(..).partition(gone);
        s.items = keep;
        dropped.extend(gone);
    }
}

mod wake;

#[cfg(test)]
#[path = "batcher_tests.rs"]
mod tests;
