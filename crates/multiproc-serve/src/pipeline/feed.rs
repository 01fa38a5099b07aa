//! The queue between a pipeline's callers and its lanes: requests wait
//! there, encoded, until they are worth a chunk, and a lane takes them
//! (see the parent module); the lanes' sleeping and waking is kept here.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::{Runtime, fail_all};
use crate::error::ServeError;
use crate::gauge::InFlight;
use crate::items::Items;
use crate::pipeline_spec::PipelineItem;
use crate::slot::Slot;

/// How long a lane sleeps without a chunk before it looks whether its
/// process died meanwhile (and replaces it, before a request needs it).
/// An idle lane so wakes once a second; a model's idle supervisor, which
/// sleeps on its worker's exit itself, every ten. (A lane sleeps on a
/// condition variable, which a caller wakes with one futex call; a
/// supervisor's `Bell`, which can wait on the process too, costs a socket
/// write and a read per wake-up, and lanes are woken thousands of times a
/// second under load.)
pub(super) const IDLE_LOOK: Duration = Duration::from_secs(1);

/// How long a lane sleeps at most while answers are streaming out with
/// requests past the queue: a caller may then leave its wake-up to their
/// next release, which may be slow to come after all (see
/// [`Runtime::wake_lane_for`]).
pub(super) const BACKSTOP: Duration = Duration::from_millis(2);

/// What a lane gets from the queue.
pub(super) enum Next {
    /// Requests to preprocess, with their inputs.
    Chunk(Vec<Job>, Items),
    /// Nothing for [`IDLE_LOOK`].
    Idle,
}

/// A request waiting for preprocessing (its input is in [`Feed::inputs`]).
/// It is counted in the pipeline: the queue holds the count for it (see
/// [`Admitted::queued`](crate::gauge::Admitted::queued)) until it leaves
/// as a [`Job`].
pub(super) struct Queued {
    pub(super) slot: Arc<Slot>,
    pub(super) deadline: Option<Instant>,
}

/// A request out of the queue, with its count in the pipeline.
pub(super) struct Job {
    pub(super) slot: Arc<Slot>,
    pub(super) deadline: Option<Instant>,
    pub(super) guard: InFlight,
}

/// Requests waiting for preprocessing, and the lanes waiting for them
/// (whether one may be woken is also in the gauge, written under this lock).
/// Each request's input is encoded by its caller into `inputs` (item `i`
/// is the input of `jobs[i]`), so that a chunk leaves as the buffer it
/// will cross in, and each input is freed by the thread that made it.
pub(super) struct Feed {
    pub(super) jobs: VecDeque<Queued>,
    pub(super) inputs: Items,
    /// Lanes asleep on `changed`.
    pub(super) sleeping: usize,
    /// Of those, lanes woken that have not run yet (each waker wakes one
    /// more than this, so that a burst of requests costs one wake-up).
    pub(super) woken: usize,
    /// Of the sleeping lanes, those that look again within [`BACKSTOP`].
    pub(super) short_sleepers: usize,
}

impl<R, O, P> Runtime<R, O, P>
where
    R: PipelineItem,
    O: PipelineItem,
    P: PipelineItem,
{
    /// Waits until a chunk is worth taking and takes it, or [`Next::Idle`]
    /// after [`IDLE_LOOK`] without one; `None` once the pipeline stopped
    /// (the requests still queued are answered with why).
    /// A chunk leaves when the queue is worth one ([`Gauge::worth_a_chunk`](crate::gauge::Gauge::worth_a_chunk))
    /// or full; meanwhile requests gather, so that chunks grow with the load
    /// instead of a round trip through a process for each few requests.
    pub(super) fn next_chunk(&self) -> Option<Next> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // Idle once a whole `IDLE_LOOK` passed without a chunk, whatever
        // woke the lane meanwhile.
        let until = Instant::now() + IDLE_LOOK;
        let mut idle = false;
        loop {
            if self.stopped.load(Ordering::Acquire) {
                let all = q.jobs.len();
                let left = self.take_jobs(&mut q, all);
                q.inputs = Items::default();
                self.gauge.set_queued(0);
                drop(q);
                fail_all(left, &self.stopped_error());
                return None;
            }
            // Says it sleeps before it looks (see `Gauge`): a request
            // leaving meanwhile nudges it.
            self.gauge.set_queued(q.jobs.len());
            q.sleeping += 1;
            self.note_sleepers(&q);
            if self.chunk_ready(&q) {
                q.sleeping -= 1;
                let (jobs, inputs) = self.take_chunk(&mut q);
                self.note_sleepers(&q);
                // A full chunk left behind (a chunk is cut to `chunk`
                // requests) is another lane's at once. (Waking one for any
                // rest worth a chunk made small chunks, and measured no
                // faster: 4 % slower, at the edge of the noise.)
                if q.jobs.len() >= self.chunk {
                    self.wake_lane(q);
                }
                return Some(Next::Chunk(jobs, inputs));
            }
            if idle {
                q.sleeping -= 1;
                self.note_sleepers(&q);
                return Some(Next::Idle);
            }
            let now = Instant::now();
            let mut left = until.saturating_duration_since(now);
            // Short while a caller may leave the wake-up to a release (see
            // `wake_lane_for`); a lane asleep in a pipeline whose answers
            // come slowly, or not at all, is woken by its callers.
            let short = self.gauge.release_will_wake(q.jobs.len(), now);
            if short {
                left = left.min(BACKSTOP);
                q.short_sleepers += 1;
            }
            let (guard, _) = self.changed.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner());
            q = guard;
            q.sleeping -= 1;
            if short {
                q.short_sleepers -= 1;
            }
            // A wait that timed out counts as woken too, in case a wake-up
            // raced the timeout and found no lane waiting: at worst one
            // more lane is woken than needed, never one less.
            q.woken = q.woken.saturating_sub(1);
            self.note_sleepers(&q);
            idle = Instant::now() >= until;
        }
    }

    /// Tells the gauge whether a lane may be woken (under the queue's lock).
    pub(super) fn note_sleepers(&self, q: &Feed) {
        self.gauge.set_lane_sleeps(q.sleeping > q.woken);
    }

    /// Whether the queue should leave as a chunk now (see
    /// [`Runtime::next_chunk`] and [`Gauge::worth_a_chunk`](crate::gauge::Gauge::worth_a_chunk)).
    pub(super) fn chunk_ready(&self, q: &Feed) -> bool {
        let n = q.jobs.len();
        n >= self.chunk || self.gauge.worth_a_chunk(n)
    }

    /// Answers the requests of a chunk whose callers gave up (gone, or past
    /// their deadline) instead of preprocessing them; gives back the others
    /// with their inputs. Costs a clock read per chunk and a look at each
    /// request; the inputs are copied only when one was given up.
    pub(super) fn without_abandoned(&self, jobs: Vec<Job>, inputs: Items) -> (Vec<Job>, Items) {
        let now = Instant::now();
        let expired = |j: &Job| j.deadline.is_some_and(|d| d <= now);
        if !jobs.iter().any(|j| j.slot.is_cancelled() || expired(j)) {
            return (jobs, inputs);
        }
        let mut kept = Vec::with_capacity(jobs.len());
        let mut kept_inputs = Items::with_capacity(jobs.len(), inputs.byte_len());
        for (i, job) in jobs.into_iter().enumerate() {
            if expired(&job) {
                let waited = job.slot.arrived.elapsed();
                job.slot.complete(Err(ServeError::PipelineDeadlineExceeded {
                    pipeline: self.name.clone(),
                    waited,
                    stage: "queued",
                }));
            } else if job.slot.is_cancelled() {
                job.slot.complete(Err(ServeError::PipelineCancelled { pipeline: self.name.clone() }));
            } else {
                match inputs.get(i) {
                    Some(Ok(bytes)) => kept_inputs.push_bytes(bytes),
                    Some(Err(message)) => kept_inputs.push_error(message),
                    None => kept_inputs.push_error("the request's input is missing"),
                }
                kept.push(job);
            }
        }
        (kept, kept_inputs)
    }

    /// Takes the next chunk off the queue, with its inputs.
    pub(super) fn take_chunk(&self, q: &mut Feed) -> (Vec<Job>, Items) {
        let n = self.gauge.chunk_len(q.jobs.len(), self.chunk);
        let chunk = self.take_jobs(q, n);
        let inputs = q.inputs.split_front(n);
        self.gauge.set_queued(q.jobs.len());
        (chunk, inputs)
    }

    /// Takes the first `n` requests off the queue, each with the count the
    /// queue held for it.
    fn take_jobs(&self, q: &mut Feed, n: usize) -> Vec<Job> {
        q.jobs
            .drain(..n)
            .zip(self.gauge.take_queued(n))
            .map(|(Queued { slot, deadline }, guard)| Job { slot, deadline, guard })
            .collect()
    }

    /// After a caller queued a request (which arrived at `arrived`): wakes
    /// a lane as [`Runtime::wake_lane`] does, unless the next release can
    /// do it. That is when answers are streaming out with requests past
    /// the queue (see [`Gauge::release_will_wake`](crate::gauge::Gauge::release_will_wake))
    /// and a lane sleeps that looks again within [`BACKSTOP`] anyway, in
    /// case the stream stopped. A caller's wake-up costs its thread a
    /// system call and, on a VM, an interrupt sent to the other CPU: a
    /// loaded pipeline's callers so leave most wake-ups to the thread
    /// delivering the model's answers, and chunks leave with deliveries.
    pub(super) fn wake_lane_for(&self, q: MutexGuard<'_, Feed>, arrived: Instant) {
        if q.short_sleepers == 0 || !self.gauge.release_will_wake(q.jobs.len(), arrived) {
            self.wake_lane(q);
        }
    }

    /// Wakes a sleeping lane not woken yet if a chunk may leave.
    pub(super) fn wake_lane(&self, mut q: MutexGuard<'_, Feed>) {
        let wake = q.sleeping > q.woken && self.chunk_ready(&q);
        if wake {
            q.woken += 1;
            self.note_sleepers(&q);
        }
        drop(q);
        if wake {
            self.changed.notify_one();
        }
    }
}
