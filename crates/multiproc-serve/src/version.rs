//! One model version: its queue, its worker threads and its state machine.
//! Every state transition happens in [`VersionGroup::transition`], which
//! logs it once through `tracing`.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batcher::{BatchQueue, Pending, Refused};
use crate::deadline::after;
use crate::error::ServeError;
use crate::metrics::Counters;
use crate::model::Spawner;
use crate::name::ModelName;
use crate::settings::ModelSettings;
use crate::status::{VersionState, WorkerState, WorkerStatus};

mod snapshot;
mod workers;

#[derive(Debug)]
struct Shared {
    state: VersionState,
    workers: Vec<WorkerStatus>,
    backoff_until: Vec<Option<Instant>>,
    crashes: VecDeque<Instant>,
    last_failure: Option<String>,
    threads: Vec<JoinHandle<()>>,
    /// While the version drains: when the drain times out.
    drain_until: Option<Instant>,
}

/// One version of one model.
pub(crate) struct VersionGroup {
    pub model: String,
    /// The model's name as every answer carries it (copied inline: no
    /// reference count shared between the threads answering and reading).
    pub model_name: ModelName,
    pub version: u64,
    pub settings: Arc<ModelSettings>,
    pub spawner: Spawner,
    pub queue: BatchQueue,
    pub counters: Counters,
    /// Requests inside a worker now.
    pub in_flight: AtomicUsize,
    shared: Mutex<Shared>,
    changed: Condvar,
    /// Held through a start (see [`VersionGroup::start_if`]): one start at
    /// a time, so that none starts new supervisors while another still
    /// joins the threads of an earlier life. Taken before `shared`, never
    /// while holding it; supervisor threads never take it.
    starting: Mutex<()>,
}

impl std::fmt::Debug for VersionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionGroup").field("model", &self.model).field("version", &self.version).finish()
    }
}

impl VersionGroup {
    pub fn new(model: &str, version: u64, settings: Arc<ModelSettings>, spawner: Spawner) -> Arc<VersionGroup> {
        let n = settings.instances;
        let workers = (0..n)
            .map(|instance| WorkerStatus {
                instance,
                pid: None,
                state: WorkerState::Stopped,
                restarts: 0,
                batches: 0,
                backoff: None,
                last_failure: None,
            })
            .collect();
        Arc::new(VersionGroup {
            model: model.to_string(),
            model_name: ModelName::from(model),
            version,
            queue: BatchQueue::new(settings.queue_capacity),
            settings,
            spawner,
            counters: Counters::default(),
            in_flight: AtomicUsize::new(0),
            shared: Mutex::new(Shared {
                state: VersionState::NotStarted,
                workers,
                backoff_until: vec![None; n],
                crashes: VecDeque::new(),
                last_failure: None,
                threads: Vec::new(),
                drain_until: None,
            }),
            changed: Condvar::new(),
            starting: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The one place a version changes state.
    fn transition(&self, s: &mut Shared, to: VersionState, why: &str) {
        let from = s.state;
        if from == to {
            return;
        }
        s.state = to;
        match to {
            VersionState::CrashLooping | VersionState::Failed => tracing::warn!(
                model = %self.model, version = self.version, from = from.as_str(), to = to.as_str(), "{why}"
            ),
            _ => tracing::info!(
                model = %self.model, version = self.version, from = from.as_str(), to = to.as_str(), "{why}"
            ),
        }
        self.changed.notify_all();
    }

    /// The current state.
    pub fn state(&self) -> VersionState {
        self.lock().state
    }

    /// True when a worker is loaded and ready.
    pub fn is_ready(&self) -> bool {
        let s = self.lock();
        matches!(s.state, VersionState::Ready)
            && s.workers.iter().any(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy))
    }

    /// Starts the workers (load, or a reload after unload or a failure).
    pub fn start(self: &Arc<Self>) {
        self.start_if(|state| matches!(state, VersionState::NotStarted | VersionState::Stopped | VersionState::Failed));
    }

    /// Starts the workers of a version never started (the lazy start by a
    /// first request). Decided under the lock: a request that saw the
    /// version not started just before an unload, a remove or a failure
    /// stopped it does not bring it back (its workers would serve a model
    /// unloaded, or removed and out of reach, and the queue reopened under
    /// a drain would keep the drained workers from ever quitting).
    fn start_lazily(self: &Arc<Self>) {
        self.start_if(|state| state == VersionState::NotStarted);
    }

    /// Starts the workers if the state now allows it.
    fn start_if(self: &Arc<Self>, may_start: impl Fn(VersionState) -> bool) {
        let _starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = self.lock();
        if !may_start(s.state) {
            return;
        }
        // Threads of an earlier life may still be quitting (after a load
        // refused for good, the version fails before they end), and the
        // last thing each does, `worker_stopped`, takes the lock: they are
        // joined without it. Then the state is looked at again, as it may
        // have changed meanwhile.
        while !s.threads.is_empty() {
            let earlier: Vec<JoinHandle<()>> = s.threads.drain(..).collect();
            drop(s);
            for t in earlier {
                let _ = t.join();
            }
            s = self.lock();
            if !may_start(s.state) {
                return;
            }
        }
        self.queue.reopen();
        s.crashes.clear();
        s.drain_until = None;
        self.transition(&mut s, VersionState::Loading, "load: starting workers");
        for instance in 0..self.settings.instances {
            let group = Arc::clone(self);
            let name = format!("serve-{}-v{}-{instance}", self.model, self.version);
            match std::thread::Builder::new().name(name).spawn(move || crate::supervisor::run(group, instance)) {
                Ok(t) => s.threads.push(t),
                Err(e) => s.last_failure = Some(format!("could not start a supervisor thread: {e}")),
            }
        }
        // With no supervisor, nothing would ever load it: a wait for it
        // (a load, a queued request) fails now, not at its timeout.
        if s.threads.is_empty() {
            let why = s.last_failure.clone().unwrap_or_default();
            drop(s);
            self.stop_hard(VersionState::Failed, &format!("{why}; the version cannot load: retry later"));
        }
    }

    /// Queues a request, starting the version if it is lazy and not started.
    pub fn admit(self: &Arc<Self>, p: Pending, force: bool) -> Result<(), Box<(Pending, ServeError)>> {
        match self.state() {
            VersionState::NotStarted => self.start_lazily(),
            VersionState::CrashLooping => {
                let e = self.crash_looping_error();
                return Err(Box::new((p, e)));
            }
            _ => {}
        }
        let mut dropped = Vec::new();
        let pushed = self.queue.push(p, force, &mut dropped);
        self.fail_dropped(&mut dropped);
        match pushed {
            Ok(()) => Ok(()),
            Err(Refused::Full(p)) => Err(Box::new((
                *p,
                ServeError::Overloaded {
                    model: self.model.clone(),
                    version: self.version,
                    capacity: self.queue.capacity(),
                },
            ))),
            Err(Refused::Closed(p)) => Err(Box::new((*p, self.closed_error()))),
        }
    }

    /// Queues a pipeline's chunk at once (no capacity check: the pipeline
    /// bounds what it holds).
    pub fn admit_many(self: &Arc<Self>, batch: Vec<Pending>) -> Result<(), (Vec<Pending>, ServeError)> {
        match self.state() {
            VersionState::NotStarted => self.start_lazily(),
            VersionState::CrashLooping => return Err((batch, self.crash_looping_error())),
            _ => {}
        }
        self.queue.push_many(batch).map_err(|b| (b, self.not_ready("the version no longer takes requests")))
    }

    /// Why the closed queue takes no request: the version's state, and
    /// why it failed if it did.
    fn closed_error(&self) -> ServeError {
        let s = self.lock();
        match (&s.last_failure, s.state) {
            (Some(why), VersionState::Failed) => self.not_ready(&format!("version is failed: {why}")),
            (_, state) => self.not_ready(&format!("version is {}", state.as_str())),
        }
    }

    pub fn not_ready(&self, reason: &str) -> ServeError {
        ServeError::NotReady { model: self.model.clone(), version: Some(self.version), reason: reason.to_string() }
    }

    fn crash_looping_error(&self) -> ServeError {
        let s = self.lock();
        let now = Instant::now();
        let retry_in =
            s.backoff_until.iter().flatten().map(|t| t.saturating_duration_since(now)).min().unwrap_or_default();
        ServeError::CrashLooping {
            model: self.model.clone(),
            version: self.version,
            crashes: s.crashes.len() as u32,
            last_failure: s.last_failure.clone().unwrap_or_default(),
            retry_in,
        }
    }

    /// Waits until the version is ready, or fails, up to `timeout`; gives
    /// up at once when `cancelled` says why (looked at each time the
    /// version changes and on [`VersionGroup::wake_waiters`]).
    pub fn wait_ready(&self, timeout: Duration, cancelled: impl Fn() -> Option<String>) -> Result<(), ServeError> {
        let deadline = after(Instant::now(), timeout);
        let mut s = self.lock();
        loop {
            // Looked at under the lock that `wake_waiters` takes: a
            // cancel that comes after this look wakes the wait below.
            if let Some(why) = cancelled() {
                return Err(self.not_ready(&format!("the load was cancelled: {why}")));
            }
            let live = s.workers.iter().any(|w| matches!(w.state, WorkerState::Idle | WorkerState::Busy));
            match s.state {
                VersionState::Ready if live => return Ok(()),
                VersionState::CrashLooping | VersionState::Failed => {
                    let why = s.last_failure.clone().unwrap_or_default();
                    return Err(self.not_ready(&format!("{}: {why}", s.state.as_str())));
                }
                VersionState::Draining | VersionState::Stopped | VersionState::NotStarted => {
                    return Err(self.not_ready(&format!("version is {}", s.state.as_str())));
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                let why = s.last_failure.clone().map(|f| format!("; last failure: {f}")).unwrap_or_default();
                return Err(self.not_ready(&format!("not ready within {timeout:?}{why}")));
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Wakes whoever waits in [`VersionGroup::wait_ready`] to look again
    /// whether its wait is cancelled.
    pub fn wake_waiters(&self) {
        let _s = self.lock();
        self.changed.notify_all();
    }

    /// Stops the version (an unload, a shutdown, or a switch to another
    /// version), saying `why`. A version that serves stops taking requests
    /// and finishes the queued and running ones, up to the drain timeout,
    /// then stops hard. Its queued requests fail at once, saying why, as
    /// soon as every worker has crashed (before or during the drain) and
    /// none is back from its backoff before that timeout. One still
    /// loading (never ready since it started) has its load cancelled and
    /// its queued requests fail at once, saying `why`: they could run only
    /// after that load, which nothing waits for now (rather than keep the
    /// caller waiting up to the drain timeout). Blocks until the workers
    /// are gone.
    pub fn unload(&self, why: &str) {
        let deadline = after(Instant::now(), self.settings.drain_timeout);
        let loading = {
            let mut s = self.lock();
            match s.state {
                VersionState::NotStarted | VersionState::Stopped | VersionState::Failed => {
                    self.queue.close();
                    self.transition(&mut s, VersionState::Stopped, "drained: no worker was running");
                    return;
                }
                state => {
                    self.transition(&mut s, VersionState::Draining, "draining");
                    s.drain_until = Some(deadline);
                    state == VersionState::Loading
                }
            }
        };
        self.queue.close();
        if loading {
            // A worker that became ready meanwhile may have taken some:
            // it answers those. The empty queue lets the loading ones quit.
            let why = format!("the load was cancelled before the version was ready ({why}); the request did not run");
            self.fail_requests(self.queue.take_all(), &self.not_ready(&why));
        }
        // Every worker crashed and backs off past the drain timeout.
        let none_back = self.none_back_before_the_drain_ends(&self.lock());
        if let Some(e) = none_back {
            self.fail_requests(self.queue.take_all(), &e);
        }
        let mut s = self.lock();
        while !s.workers.iter().all(|w| w.state == WorkerState::Stopped) {
            let now = Instant::now();
            if now >= deadline {
                drop(s);
                tracing::warn!(model = %self.model, version = self.version, "drain timed out; stopping hard");
                self.stop_hard(VersionState::Stopped, "drain timed out");
                return;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        let threads: Vec<_> = s.threads.drain(..).collect();
        self.transition(&mut s, VersionState::Stopped, "drained");
        drop(s);
        for t in threads {
            let _ = t.join();
        }
    }

    /// Stops now: fails what is queued, kills the workers, waits for the
    /// threads; ends in state `to`.
    pub fn stop_hard(&self, to: VersionState, why: &str) {
        // The state goes first: supervisors see it and stop restarting.
        let (threads, pids) = {
            let mut s = self.lock();
            if to == VersionState::Failed {
                s.last_failure = Some(why.to_string());
            }
            self.transition(&mut s, to, why);
            let pids: Vec<i32> = s.workers.iter().filter_map(|w| w.pid).collect();
            (s.threads.drain(..).collect::<Vec<_>>(), pids)
        };
        let left = self.queue.stop();
        self.fail_requests(left, &self.not_ready(why));
        for pid in pids {
            let _ = multiproc::process::kill_pid(pid);
        }
        for t in threads {
            let _ = t.join();
        }
    }

    /// Fails requests (taken off the queue, or a lost worker's batch) with
    /// `e`, counting each as what its caller saw (a request whose deadline
    /// already answered it counts as a deadline).
    pub fn fail_requests(&self, items: Vec<Pending>, e: &ServeError) {
        for p in items {
            self.fail_counted(&p, e.clone(), Instant::now());
        }
    }

    /// Fails requests the batcher dropped (deadline passed or caller gone).
    pub fn fail_dropped(&self, dropped: &mut Vec<Pending>) {
        if dropped.is_empty() {
            return;
        }
        let now = Instant::now();
        for p in dropped.drain(..) {
            // A caller whose deadline passed gave up (cancelled) as it got its
            // error: it counts as a deadline, not as a cancel.
            let e = if p.deadline.is_some_and(|d| d <= now) || !p.slot.is_cancelled() {
                ServeError::DeadlineExceeded {
                    model: self.model.clone(),
                    waited: p.slot.arrived.elapsed(),
                    stage: "queued",
                }
            } else {
                ServeError::Cancelled { model: self.model.clone() }
            };
            self.fail_counted(&p, e, now);
        }
    }

    /// Fails `p` with `e` (known `now`), counted before its caller can see
    /// it; a caller that already had its error (its deadline passed, or
    /// its wait timed out) saw a deadline, and it counts as one.
    pub(crate) fn fail_counted(&self, p: &Pending, e: ServeError, now: Instant) {
        let won = p.slot.claim();
        let seen = if won { e.kind() } else { crate::ErrorKind::DeadlineExceeded };
        self.counters.failure(seen, p.failed_after(now));
        if won {
            p.slot.publish(Err(e));
        }
    }

    /// True once the version should not (re)start workers: it stopped, or
    /// it drains and nothing is left queued that may still run (a worker
    /// lost while its version drains is replaced, to finish the requests it
    /// never started; those past their deadline or given up fail now, and
    /// keep nothing waiting for a restart).
    pub fn winding_down(&self) -> bool {
        let state = self.lock().state;
        match state {
            VersionState::Stopped | VersionState::Failed => true,
            VersionState::Draining => self.sweep_abandoned() == 0,
            _ => false,
        }
    }

    /// How long a supervisor that waits (a backoff, a worker loading) may
    /// sleep before it looks at [`VersionGroup::winding_down`] again: `d`,
    /// or, while the version drains, a short while (a request left queued
    /// may pass its deadline meanwhile, and nothing else wakes it then).
    /// (While a queued request holds something, it sleeps at most
    /// [`SWEEP_EVERY`]: see `startup::sleep_on`.)
    pub fn nap(&self, d: Duration) -> Duration {
        const DRAINING_LOOK: Duration = Duration::from_millis(50);
        if self.state() == VersionState::Draining { d.min(DRAINING_LOOK) } else { d }
    }

    /// Fails and drops the queued requests whose caller is gone or whose
    /// deadline passed, wherever they are in the queue: what they hold
    /// ([`crate::Request::hold`]) is given back now, not when a batch
    /// next leaves. For a supervisor that waits without taking batches
    /// (its worker loads, backs off after a crash, or runs a long batch),
    /// every [`SWEEP_EVERY`] at most (see [`Sweeps`]); it walks the queue.
    /// Returns how many requests are left queued.
    pub fn sweep_abandoned(&self) -> usize {
        let mut dropped = Vec::new();
        let live = self.queue.live_len(&mut dropped);
        self.fail_dropped(&mut dropped);
        live
    }
}

/// How often a supervisor that takes no batches sweeps its version's queue
/// ([`VersionGroup::sweep_abandoned`]).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The sweeps of one wait without batches: [`Sweeps::due`] sweeps the
/// queue when [`SWEEP_EVERY`] has passed since the last, however often the
/// wait wakes (a worker that logs as it loads, say).
pub(crate) struct Sweeps {
    next: Instant,
}

impl Sweeps {
    /// The first sweep is due [`SWEEP_EVERY`] from now.
    pub fn new() -> Sweeps {
        Sweeps { next: after(Instant::now(), SWEEP_EVERY) }
    }

    /// Sweeps `group`'s queue if it is time.
    pub fn due(&mut self, group: &VersionGroup) {
        let now = Instant::now();
        if now >= self.next {
            group.sweep_abandoned();
            self.next = after(now, SWEEP_EVERY);
        }
    }
}
