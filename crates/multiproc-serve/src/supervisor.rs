//! The thread that keeps one worker process of a version alive: spawn, wait
//! for ready, run batches, and on death fail the batch it held at once,
//! then restart after a capped exponential backoff.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::{ConnectionError, Process, ProcessError, Waitable};

use crate::batcher::{BatchQueue, Next, Pending};
use crate::bell::Bell;
use crate::deadline::after;
use crate::error::ServeError;
use crate::gauge::Releases;
use crate::items::{Encoded, Inputs, Items};
use crate::lone::{AnswerTimes, NextLone, poll_for};
use crate::metrics::{BatchReason, Tally};
use crate::slot::{Answer, Claimed, Wakes};
use crate::startup::{Loaded, load, sleep_unless_stopping};
use crate::version::{Sweeps, VersionGroup};
use crate::worker::{FromWorker, ServerEnds, ToWorker};

/// How often a waiting supervisor looks at its worker and its version; an
/// idle one waits this long for a request before it sleeps (see [`Bell`]).
const TICK: Duration = Duration::from_millis(100);

/// Longest an idle supervisor sleeps: a backstop only, nothing relies on it
/// (what it waits for wakes it).
const IDLE_BACKSTOP: Duration = Duration::from_secs(10);

/// How long a worker process killed is waited for (reaped in milliseconds;
/// only an unkillable process takes longer).
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(2);

/// How long a worker process that is ending anyway (it sent why its load
/// failed, or was seen dead) is given to exit and be reaped.
pub(crate) const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Kills `process` and reaps it, waiting at most `wait`.
pub(crate) fn kill_and_reap(process: &mut Process<()>, wait: Duration) {
    let _ = process.kill();
    let _ = process.join_timeout(wait);
}

/// Gives `process`, told to finish (its pipe closed), `grace` to exit,
/// then kills it and waits at most `wait` more.
pub(crate) fn reap_or_kill(process: &mut Process<()>, grace: Duration, wait: Duration) {
    if process.join_timeout(grace).is_err() && process.is_alive() {
        kill_and_reap(process, wait);
    }
}

/// How a worker process ended, for error messages: "killed by signal 9 (SIGKILL)".
pub(crate) fn exit_status(process: &mut Process<()>) -> String {
    match process.join_timeout(EXIT_WAIT) {
        Ok(()) => "exited without an error".to_string(),
        Err(ProcessError::Panicked(p)) => format!("panicked: {}", p.message),
        Err(ProcessError::Timeout(_)) => {
            kill_and_reap(process, KILL_WAIT);
            "stopped answering and was killed".to_string()
        }
        Err(e) => e.to_string().trim_start_matches("the child was ").to_string(),
    }
}

/// Longest a supervisor polls for a batch's answer before it sleeps (see
/// [`crate::lone`]: waking a thread that sleeps on an idle CPU costs about
/// ten times a small model's call).
const REPLY_POLL_LIMIT: Duration = Duration::from_micros(200);
/// Shortest polling for a batch's answer.
const REPLY_POLL_LEAST: Duration = Duration::from_micros(20);

/// A live worker process and its pipes.
struct Worker {
    process: Process<()>,
    ends: ServerEnds,
    pid: i32,
    /// Recent time from sending a batch to its answer: how long polling
    /// for the next answer may pay.
    reply_times: AnswerTimes,
    /// It answered a batch: it was healthy, whatever ends it.
    answered: bool,
    /// When it was ready.
    ready_at: Instant,
    /// Room for a batch's claimed answers, kept from batch to batch (grown
    /// afresh for each, it cost a handful of reallocations per batch).
    claimed: Claimed,
}

impl Worker {
    /// Polls for the answer to the batch just sent, for about twice the
    /// recent answer time, when that is short and while no other request
    /// waits (under load the CPU belongs to the threads bringing requests).
    fn poll_for_reply(&self, queue: &BatchQueue, arrivals: u64) {
        if let Some(budget) = self.reply_times.budget() {
            let readable = || self.ends.replies.poll(Duration::ZERO).unwrap_or(true).then_some(());
            poll_for(budget, readable, || queue.arrivals() == arrivals);
        }
    }
}

/// Why a worker is gone.
pub(crate) enum Gone {
    /// It crashed or failed to load: restart after backoff.
    Crashed(String),
    /// Its load failed for good ([`crate::LoadError::permanent`]): no
    /// restart; the version fails (see [`VersionGroup::load_refused`]).
    Refused(String),
    /// The version is stopping: do not restart.
    Quit,
}

/// The supervisor loop of instance `instance` of `group`.
pub(crate) fn run(group: Arc<VersionGroup>, instance: usize) {
    let bell = Bell::new()
        .inspect_err(|e| {
            tracing::warn!(model = %group.model, version = group.version, "no bell, an idle supervisor polls: {e}");
        })
        .ok();
    let mut attempt = 0u32;
    loop {
        if group.winding_down() {
            break;
        }
        let gone = match start(&group, instance, bell.as_ref()) {
            Ok(mut worker) => {
                let gone = serve(&group, instance, &mut worker, bell.as_ref());
                // The backoff starts over after a healthy worker (it
                // answered a batch, or lived past the crash window); one
                // that loads and then dies at its first batch, again and
                // again, backs off more each time.
                if worker.answered || worker.ready_at.elapsed() >= group.settings.restart.crash_window {
                    attempt = 0;
                }
                if matches!(gone, Gone::Quit) {
                    stop_worker(worker);
                }
                gone
            }
            Err(gone) => gone,
        };
        match gone {
            Gone::Quit => break,
            Gone::Refused(reason) => {
                group.load_refused(instance, reason);
                break;
            }
            Gone::Crashed(reason) => {
                let backoff = group.worker_crashed(instance, reason, attempt);
                attempt = attempt.saturating_add(1);
                if !sleep_unless_stopping(&group, backoff, bell.as_ref()) {
                    break;
                }
                group.worker_restarting(instance);
            }
        }
    }
    group.worker_stopped(instance);
}

/// Spawns the worker and waits until it loaded its model.
fn start(group: &VersionGroup, instance: usize, bell: Option<&Bell>) -> Result<Worker, Gone> {
    let Loaded { process, ends, pid } = load(group, instance, bell)?;
    Ok(Worker {
        process,
        ends,
        pid,
        reply_times: AnswerTimes::new(REPLY_POLL_LIMIT, REPLY_POLL_LEAST),
        answered: false,
        ready_at: Instant::now(),
        claimed: Claimed::default(),
    })
}

/// Passes on a line a worker logged, prefixed with its model and version
/// (`[m v1] text`): the one place that prefix is added.
pub(crate) fn log_line(group: &VersionGroup, line: &str) {
    tracing::info!(target: "multiproc_serve::worker", "[{} v{}] {line}", group.model, group.version);
}

/// Lets a worker finish: closes its request pipe, waits, kills if needed.
fn stop_worker(worker: Worker) {
    let Worker { mut process, ends, .. } = worker;
    drop(ends);
    reap_or_kill(&mut process, Duration::from_secs(5), KILL_WAIT);
}

/// Most batches a worker holds at once: the one it runs and, under load,
/// the next one waiting in its pipe.
const BATCHES_PER_WORKER: usize = 2;

/// A batch sent to the worker and not answered yet.
struct Sent {
    id: u64,
    batch: Vec<Pending>,
    sent_at: Instant,
    /// When the worker could start it (its predecessor's answer came).
    started: Instant,
    /// The queue's arrivals when it was sent.
    arrivals: u64,
}

impl Sent {
    fn new(id: u64, batch: Vec<Pending>, queue: &BatchQueue) -> Sent {
        let now = Instant::now();
        Sent { id, batch, sent_at: now, started: now, arrivals: queue.arrivals() }
    }

    /// The rows it carries (what `max_batch_size` counts).
    fn rows(&self) -> usize {
        self.batch.iter().map(|p| p.rows).sum()
    }

    /// A single request with no other batch in flight and none arrived
    /// since it was sent: a request alone, for which polling pays. (Among
    /// concurrent callers — max_batch_size 1 under load, say — a batch of
    /// one is common, but others arrive while it runs: there the CPU
    /// belongs to the threads bringing them, and nothing polls.)
    fn alone(&self, in_flight: usize, queue: &BatchQueue) -> bool {
        in_flight == 1 && self.batch.len() == 1 && queue.arrivals() == self.arrivals
    }
}

/// Runs batches on a ready worker until it dies or the version stops.
///
/// The worker is never left idle while this thread routes answers: under
/// load it holds a second full batch in its pipe while it runs one, and
/// when an answer comes with nothing else in its pipe, the next batch (by
/// the batching rules) is sent before the answers are routed.
fn serve(group: &VersionGroup, instance: usize, worker: &mut Worker, bell: Option<&Bell>) -> Gone {
    let mut dropped = Vec::new();
    let mut next_id = 0u64;
    let mut sent: VecDeque<Sent> = VecDeque::with_capacity(BATCHES_PER_WORKER);
    // After a lone request, the next one is polled for a short while (see `crate::lone`).
    let mut lone = NextLone::new();
    // Whether the last batch answered was a request alone: the worker then
    // polls for the next one too.
    let mut last_alone = false;
    // Rung awake for a request, and not yet back at the queue for it.
    let mut roused = false;
    loop {
        if sent.is_empty() {
            let next = lone.wait_next(
                || group.queue.len() > 0,
                || group.queue.next_batch(&group.settings, TICK, &mut dropped, std::mem::take(&mut roused)),
            );
            group.fail_dropped(&mut dropped);
            let (batch, reason) = match next {
                Next::Quit => return Gone::Quit,
                Next::Idle => {
                    if let Err(gone) = look_at_idle(group, worker) {
                        return gone;
                    }
                    if let Some(bell) = bell {
                        let watched: [&dyn Waitable; 2] = [&worker.ends.replies, &worker.process];
                        roused = group.queue.sleep_while_empty(bell, || bell.sleep(&watched, IDLE_BACKSTOP));
                        if let Err(gone) = look_at_idle(group, worker) {
                            // A request that rang as the worker died is
                            // for another idle worker.
                            group.queue.pass_on(roused);
                            return gone;
                        }
                    }
                    continue;
                }
                Next::Batch(batch, reason) => (batch, reason),
            };
            if !worker.process.is_alive() {
                // Died while idle: the batch never reached it; keep it for the next worker.
                group.queue.push_front(batch);
                let status = exit_status(&mut worker.process);
                return Gone::Crashed(format!("worker {} died while idle: {status}", worker.pid));
            }
            next_id += 1;
            let batch = Sent::new(next_id, batch, &group.queue);
            send_batch(group, instance, worker, batch, reason, last_alone, &mut sent);
        }
        if sent.len() < BATCHES_PER_WORKER
            && let Some(batch) = group.queue.take_full(&group.settings, &mut dropped)
        {
            group.fail_dropped(&mut dropped);
            next_id += 1;
            let batch = Sent::new(next_id, batch, &group.queue);
            send_batch(group, instance, worker, batch, BatchReason::Full, false, &mut sent);
        }
        last_alone = match answer_oldest(group, instance, worker, &mut sent, &mut next_id, &mut dropped) {
            Ok(alone) => alone,
            Err(gone) => return gone,
        };
        if last_alone {
            lone.answered_lone();
        }
    }
}

/// Passes on what an idle worker logged; its death if it died.
fn look_at_idle(group: &VersionGroup, worker: &mut Worker) -> Result<(), Gone> {
    forward_logs(group, worker);
    if worker.process.is_alive() {
        return Ok(());
    }
    let status = exit_status(&mut worker.process);
    Err(Gone::Crashed(format!("worker {} died while idle: {status}", worker.pid)))
}

/// Passes on the log lines an idle worker sent (an external command's stderr).
fn forward_logs(group: &VersionGroup, worker: &Worker) {
    while worker.ends.replies.poll(Duration::ZERO).unwrap_or(false) {
        match worker.ends.replies.recv_timeout(Duration::ZERO) {
            Ok(FromWorker::Log(line)) => log_line(group, &line),
            Ok(other) => {
                tracing::warn!(model = %group.model, version = group.version, "unexpected message from an idle worker: {other:?}");
            }
            Err(_) => return,
        }
    }
}

/// Sends a batch to the worker and adds it to `sent`. A batch that could
/// not be sent is added all the same: waiting for the answer finds the
/// worker gone (it is killed if it was not: see below).
fn send_batch(
    group: &VersionGroup,
    instance: usize,
    worker: &Worker,
    mut batch: Sent,
    reason: BatchReason,
    poll_after: bool,
    sent: &mut VecDeque<Sent>,
) {
    let n = batch.batch.len();
    group.counters.batch(batch.rows(), reason);
    group.in_flight.fetch_add(n, Ordering::Relaxed);
    group.worker_busy(instance, true);
    let inputs = batch.batch.iter_mut().map(|p| std::mem::take(&mut p.input)).collect();
    let message = ToWorker::Batch { id: batch.id, items: Inputs::Outgoing(inputs), poll_after: poll_after && n == 1 };
    if let Err(e) = worker.ends.requests.send(&message) {
        if e.is_closed() {
            tracing::debug!(model = %group.model, version = group.version, "could not send a batch: {e}");
        } else {
            // The worker may be alive (the send failed for want of memory
            // or descriptors, perhaps partway through the message): it
            // would never answer, and its stream may be out of step. It is
            // killed, so the wait for the answer fails the batch at once
            // and the worker is restarted.
            tracing::warn!(
                model = %group.model,
                version = group.version,
                "could not send a batch to worker {}: {e}; killing it",
                worker.pid
            );
            let _ = worker.process.kill();
        }
    }
    // The inputs go back to their requests: a batch the worker never
    // started goes back to the queue whole.
    if let ToWorker::Batch { items: Inputs::Outgoing(inputs), .. } = message {
        batch.batch.iter_mut().zip(inputs).for_each(|(p, input)| p.input = input);
    }
    sent.push_back(batch);
}

/// Waits for the answer to the oldest batch sent and routes it, after
/// sending the worker its next batch if it has none; on the worker's death
/// or a call timeout fails that batch at once and puts the batches queued
/// behind it (which the worker never started) back in the queue for the
/// next worker. True if the batch answered was a request alone (see
/// [`Sent::alone`]) and still is: nothing arrived since, and no other
/// batch is in flight.
fn answer_oldest(
    group: &VersionGroup,
    instance: usize,
    worker: &mut Worker,
    sent: &mut VecDeque<Sent>,
    next_id: &mut u64,
    dropped: &mut Vec<Pending>,
) -> Result<bool, Gone> {
    let Some(oldest) = sent.front() else { return Ok(false) };
    let (n, rows) = (oldest.batch.len(), oldest.rows());
    // A lone request polls; a batch's wait leaves the CPU to the threads
    // bringing the next requests.
    let alone = oldest.alone(sent.len(), &group.queue).then_some(oldest.arrivals);
    if let Some(arrivals) = alone {
        worker.poll_for_reply(&group.queue, arrivals);
    }
    let outcome = await_reply(group, worker, oldest.id, oldest.started);
    let Some(Sent { batch, sent_at, started, .. }) = sent.pop_front() else { return Ok(false) };
    group.in_flight.fetch_sub(n, Ordering::Relaxed);
    match outcome {
        Ok((answers, timing)) => {
            let now = Instant::now();
            if let Some(next) = sent.front_mut() {
                next.started = now;
                group.queue.release(next.batch.len());
            }
            worker.reply_times.note(now.saturating_duration_since(started));
            worker.answered = true;
            group.counters.executed(n, rows, timing.input_us, timing.infer_us, timing.output_us);
            group.worker_busy(instance, false);
            if !sent.is_empty() {
                group.worker_busy(instance, true);
            } else if let Next::Batch(batch, reason) =
                group.queue.next_batch(&group.settings, Duration::ZERO, dropped, false)
            {
                *next_id += 1;
                send_batch(group, instance, worker, Sent::new(*next_id, batch, &group.queue), reason, false, sent);
            }
            group.fail_dropped(dropped);
            let answers = Arc::new(answers);
            let mut delivery = Delivery {
                sent_at,
                now,
                batch_size: n,
                wakes: Wakes::default(),
                claimed: std::mem::take(&mut worker.claimed),
                releases: Releases::default(),
                tally: Tally::default(),
            };
            for (i, p) in batch.into_iter().enumerate() {
                deliver(group, p, Encoded::item(&answers, i), &mut delivery);
            }
            // Counted before any caller can read its answer.
            group.counters.success(&delivery.tally);
            delivery.claimed.publish(&mut delivery.wakes);
            worker.claimed = std::mem::take(&mut delivery.claimed);
            delivery.releases.flush();
            delivery.wakes.wake();
            Ok(sent.is_empty() && alone.is_some_and(|a| group.queue.arrivals() == a))
        }
        Err(lost) => {
            for unstarted in sent.drain(..).rev() {
                group.in_flight.fetch_sub(unstarted.batch.len(), Ordering::Relaxed);
                group.queue.release(unstarted.batch.len());
                group.queue.push_front(unstarted.batch);
            }
            Err(fail_batch(group, worker, batch, lost))
        }
    }
}

/// Fails the batch a worker held when it died or overran the call timeout.
fn fail_batch(group: &VersionGroup, worker: &mut Worker, batch: Vec<Pending>, lost: Lost) -> Gone {
    let n = batch.len();
    let (error, reason) = match lost {
        Lost::Died(detail) => {
            let status = exit_status(&mut worker.process);
            let status = if detail.is_empty() { status } else { format!("{status}; {detail}") };
            let reason = format!("worker {} died running a batch of {n}: {status}", worker.pid);
            let e =
                ServeError::WorkerLost { model: group.model.clone(), version: group.version, pid: worker.pid, status };
            (e, reason)
        }
        Lost::Timeout(timeout) => {
            kill_and_reap(&mut worker.process, KILL_WAIT);
            let reason = format!("worker {} exceeded the call timeout of {timeout:?}; killed", worker.pid);
            let e = ServeError::CallTimeout {
                model: group.model.clone(),
                version: group.version,
                pid: worker.pid,
                timeout,
            };
            (e, reason)
        }
    };
    group.fail_requests(batch, &error);
    Gone::Crashed(reason)
}

enum Lost {
    Died(String),
    Timeout(Duration),
}

type Answers = (Items, crate::worker::BatchTiming);

/// Most messages read from a worker past its call timeout, looking for an
/// answer that came in time.
const LATE_READS: usize = 1024;

/// Waits for the answer to batch `id` (which the worker could start at
/// `started`), noticing the worker's death at once.
fn await_reply(group: &VersionGroup, worker: &mut Worker, id: u64, started: Instant) -> Result<Answers, Lost> {
    let deadline = group.settings.call_timeout.map(|t| (after(started, t), t));
    // The last line the worker logged while running this batch: a worker
    // that gives up (an external command that broke the protocol) says why
    // there, and the error of the requests it fails repeats it.
    let mut last_line = None;
    let died = |last_line: Option<String>| {
        Lost::Died(last_line.map(|l| format!("its last log line: {l}")).unwrap_or_default())
    };
    let mut late_reads = 0;
    let mut seen_dead = false;
    // A long batch: nothing takes batches from the queue meanwhile (unless
    // another worker does), so its abandoned requests are dropped here.
    let mut sweeps = Sweeps::new();
    loop {
        let slice = match deadline {
            _ if seen_dead => Duration::ZERO,
            Some((at, timeout)) => {
                let now = Instant::now();
                if now >= at {
                    // This thread may read late (descheduled, a slow log):
                    // what the worker sent meanwhile is read before the
                    // timeout is declared, a bounded number of messages
                    // (a stuck worker that keeps logging still times out).
                    late_reads += 1;
                    if late_reads > LATE_READS || !worker.ends.replies.poll(Duration::ZERO).unwrap_or(false) {
                        return Err(Lost::Timeout(timeout));
                    }
                    Duration::ZERO
                } else {
                    (at - now).min(TICK)
                }
            }
            None => TICK,
        };
        match worker.ends.replies.recv_timeout(slice) {
            Ok(FromWorker::Batch { id: got, items, timing }) if got == id => return Ok((items, timing)),
            Ok(FromWorker::Log(line)) => {
                log_line(group, &line);
                last_line = Some(line);
            }
            Ok(other) => return Err(Lost::Died(format!("unexpected message from the worker: {other:?}"))),
            Err(ConnectionError::Timeout) => {
                sweeps.due(group);
                // Seen dead: what it sent before dying is in the pipe now
                // (an answer sent just after this wait timed out); one
                // more read without waiting takes it before the verdict.
                if seen_dead {
                    return Err(died(last_line));
                }
                seen_dead = !worker.process.is_alive();
            }
            Err(e) if e.is_closed() => return Err(died(last_line)),
            Err(e) => return Err(Lost::Died(format!("bad reply: {e}"))),
        }
    }
}

/// A batch's answers on their way to their requests: what they share, and
/// what is done once for the whole batch when they all are delivered.
struct Delivery {
    sent_at: Instant,
    now: Instant,
    batch_size: usize,
    wakes: Wakes,
    /// The answers for callers, published once the batch is counted.
    claimed: Claimed,
    /// The pipeline places of the requests answered (released before the
    /// wake-ups, so a woken caller finds room).
    releases: Releases,
    tally: Tally,
}

/// Hands one answer to its request (or to the pipeline's next stage).
fn deliver(group: &VersionGroup, p: Pending, answer: Result<Encoded, String>, d: &mut Delivery) {
    let queued = d.sent_at.saturating_duration_since(p.enqueued);
    match answer {
        Ok(bytes) => {
            let total = d.now.saturating_duration_since(p.slot.arrived);
            let p_failed_after = p.failed_after(d.now);
            let answer = Answer {
                bytes,
                model: group.model_name.clone(),
                answered: d.now,
                version: group.version,
                queued,
                batch_size: d.batch_size,
            };
            let delivered = match p.then {
                Some(then) => then.run(answer, p.slot, &mut d.claimed, &mut d.releases),
                None => d.claimed.claim(p.slot, answer),
            };
            // An answer that comes after its request's deadline answered
            // the caller goes nowhere: the caller saw a failure.
            if delivered {
                d.tally.add(total, queued);
            } else {
                group.counters.failure(crate::ErrorKind::DeadlineExceeded, p_failed_after);
            }
        }
        Err(message) => {
            let e = ServeError::ModelFailed { model: group.model.clone(), version: group.version, message };
            group.fail_counted(&p, e, d.now);
        }
    }
}
