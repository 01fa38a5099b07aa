//! What a pipeline holds: its requests in flight (bounded by its capacity)
//! and how many of them still wait for preprocessing, so that its lanes
//! (the threads that feed its preprocessing processes) can cut the queue into chunks of a useful size (see
//! [`Gauge::worth_a_chunk`]) and be told when answers leaving the pipeline
//! make the waiting ones worth a chunk.
//!
//! Who wakes a lane: a caller whose request makes the queue worth a chunk,
//! unless answers are streaming out of the pipeline (see
//! [`Gauge::release_will_wake`]); then the thread releasing the next
//! answers does. A wake-up costs its thread a system call and, on a VM, an
//! interrupt sent to the other CPU: several µs of the caller's thread,
//! which is the busiest of a loaded pipeline, once a chunk.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The part of a pipeline that a gauge can wake: its lanes.
pub(crate) trait Lanes: Send + Sync {
    /// Wakes a sleeping lane if a chunk may leave now.
    fn nudge(&self);
}

/// A pipeline's counts. Every count is read and written with sequentially
/// consistent atomics: a lane announces that it sleeps, then reads the
/// counts; a thread releasing a request writes the count, then reads
/// whether a lane sleeps; so one of the two always sees the other. (The
/// model's batch size and the time answers last left are hints, relaxed.)
///
/// The counts that different threads write each sit on lines of their own
/// (and apart from the `Arc`'s reference counts): a caller admitting a
/// request and the thread answering another then do not take each other's
/// lines for the counts they do not share.
pub(crate) struct Gauge {
    in_flight: OwnLine<AtomicUsize>,
    /// Requests waiting for preprocessing (the lanes' queue length,
    /// written under the queue's lock).
    queued: OwnLine<AtomicUsize>,
    /// A lane sleeps that nobody woke yet (written under
    /// the queue's lock).
    lane_sleeps: OwnLine<AtomicBool>,
    lanes: OnceLock<Weak<dyn Lanes>>,
    /// The model's largest batch (0 until the first chunk reached it).
    model_batch: AtomicUsize,
    /// When answers last left the pipeline, in ns since `epoch` (0: never).
    answered_at: OwnLine<AtomicU64>,
    epoch: Instant,
}

/// A value alone on its cache lines: 128 bytes, as x86 processors fetch
/// lines in adjacent pairs.
#[repr(align(128))]
struct OwnLine<T>(T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Waiting requests leave as a chunk once they are this share (1/N) of all
/// the requests in the pipeline: half, so that under a steady load the
/// preprocessing processes prepare one half while the model answers the
/// other (a third measured 15 % slower).
const SHARE: usize = 2;

/// Answers that left the pipeline at most this long before a moment (a
/// request's arrival, or a lane going to sleep) are taken to be streaming
/// out then (a loaded pipeline delivers a model batch every 50–100 µs on
/// the 2-CPU VM): the next release is near, and a caller leaves the lanes'
/// wake-up to it. A pipeline whose answers come slower wakes its lanes
/// from the caller, as when it is idle. Only answers delivered by the
/// model's supervisor count (see [`Releases`]): a pipeline with
/// postprocessing releases its requests from the pool's callbacks, one at
/// a time, and its callers wake the lanes as before.
const STREAMING: Duration = Duration::from_micros(500);

impl Gauge {
    pub fn new() -> Arc<Gauge> {
        Arc::new(Gauge {
            in_flight: OwnLine(AtomicUsize::new(0)),
            queued: OwnLine(AtomicUsize::new(0)),
            lane_sleeps: OwnLine(AtomicBool::new(false)),
            lanes: OnceLock::new(),
            model_batch: AtomicUsize::new(0),
            answered_at: OwnLine(AtomicU64::new(0)),
            epoch: Instant::now(),
        })
    }

    /// Sets the lanes that releases nudge.
    pub fn set_lanes(&self, lanes: Weak<dyn Lanes>) {
        let _ = self.lanes.set(lanes);
    }

    /// Requests in the pipeline.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts one more request in, unless `capacity` are in already;
    /// gives the count before it (0: the pipeline was empty).
    pub fn admit(&self, capacity: usize) -> Option<(usize, Admitted<'_>)> {
        // One add, taken back if it went past the capacity (a compare-and-
        // swap loop retried under the answers' releases): concurrent callers
        // each see their own count before, so no more than `capacity` are
        // ever admitted. Taking it back is a release like an answer's, so
        // a lane that saw the passing count is still nudged.
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if before >= capacity {
            self.release(1);
            return None;
        }
        Some((before, Admitted(Some(self))))
    }

    /// The counts of `n` queued requests leaving the queue (see
    /// [`Admitted::queued`]), one per request, sharing one hold on the gauge.
    pub fn take_queued(self: &Arc<Self>, n: usize) -> impl Iterator<Item = InFlight> {
        let hold = Arc::new(Hold(Arc::clone(self)));
        (0..n).map(move |_| InFlight(Some(Arc::clone(&hold))))
    }

    /// Notes the queue's length (under the queue's lock).
    pub fn set_queued(&self, n: usize) {
        self.queued.store(n, Ordering::SeqCst);
    }

    /// Notes whether a lane sleeps that nobody woke yet (under the queue's lock).
    pub fn set_lane_sleeps(&self, sleeps: bool) {
        self.lane_sleeps.store(sleeps, Ordering::SeqCst);
    }

    /// Whether a lane sleeps that nobody woke yet.
    pub fn lane_sleeps(&self) -> bool {
        self.lane_sleeps.load(Ordering::SeqCst)
    }

    /// Whether `queued` waiting requests are worth a chunk of their own
    /// while a preprocessing process has none: when they are a good share of
    /// everything in the pipeline (at least half; all of it when the rest
    /// is done). Under load, answers come back a model batch at a time and
    /// their callers send the next requests a batch at a time: a chunk per
    /// such group would cost a round trip through a process, and a model
    /// batch cut short, per group; half of what is in flight keeps the processes
    /// and the model busy side by side, in few, full steps.
    pub fn worth_a_chunk(&self, queued: usize) -> bool {
        queued > 0 && queued.saturating_mul(SHARE) >= self.in_flight()
    }

    /// Whether, at `at`, with `queued` requests waiting, the next release
    /// may be left to wake a lane: true when requests are past the queue
    /// (so a release will come, and it nudges a sleeping lane if the queue
    /// is worth a chunk then, see `release`; or the count is a request on
    /// its way into the queue, whose caller looks again once it is in) and
    /// answers are streaming out (so it comes soon). A caller that just
    /// queued a request asks with the request's arrival; it also needs a
    /// lane that looks again soon, in case the stream stopped: a lane that
    /// goes to sleep while this holds does (see `Runtime::wake_lane_for`).
    ///
    /// Under load this moved the wake-ups off the callers' thread and made
    /// chunks leave with the model's deliveries. Measured against the code
    /// before, in alternated runs: 4–5 % less CPU per request in the
    /// pipeline example (771 against 802 ns), and 2.26–2.52 against
    /// 2.03–2.20 M requests/s in the bench's `serve_pipeline` (4 pairs).
    /// The latency of a request under that load moved the other way: its
    /// median from about 170 to 340 µs, its p99 little (1,024 in flight).
    pub fn release_will_wake(&self, queued: usize, at: Instant) -> bool {
        if self.in_flight() <= queued {
            return false;
        }
        // ORDERING: Relaxed: a hint; that a release comes at all rests on
        // the in-flight count, read above in the gauge's order.
        let answered = self.answered_at.load(Ordering::Relaxed);
        answered != 0 && self.since_epoch(at) <= answered.saturating_add(nanos(STREAMING))
    }

    /// `at` in ns since the gauge was made (at least 1, so that 0 can mean never).
    fn since_epoch(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.epoch)).max(1)
    }

    /// Notes the model's largest batch.
    pub fn set_model_batch(&self, n: usize) {
        // ORDERING: Relaxed: a size hint with no bearing on correctness.
        self.model_batch.store(n, Ordering::Relaxed);
    }

    /// How many of `queued` waiting requests go in the next chunk, at most
    /// `max`: a whole number of model batches when there is more than one
    /// batch's worth, so that the chunk reaches the model as full batches
    /// (a chunk of 300 for batches of 128 made two full batches and one of
    /// 44, which cost the model's worker as much as a full one); the rest
    /// waits for the next chunk.
    pub fn chunk_len(&self, queued: usize, max: usize) -> usize {
        let n = queued.min(max);
        // ORDERING: as in `set_model_batch`.
        match self.model_batch.load(Ordering::Relaxed) {
            batch if batch > 0 && n > batch => n - n % batch,
            _ => n,
        }
    }

    /// `n` answers left the pipeline now: notes when, then releases them.
    fn answered(&self, n: usize) {
        // ORDERING: as in `release_will_wake`.
        self.answered_at.store(self.since_epoch(Instant::now()), Ordering::Relaxed);
        self.release(n);
    }

    /// `n` requests left the pipeline: nudges a lane if the waiting
    /// requests just became worth a chunk.
    fn release(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::SeqCst);
        if self.lane_sleeps()
            && self.worth_a_chunk(self.queued.load(Ordering::SeqCst))
            && let Some(lanes) = self.lanes.get().and_then(Weak::upgrade)
        {
            lanes.nudge();
        }
    }
}

/// A request counted in its pipeline on its way to the queue: given back
/// when dropped, unless the queue took it ([`Admitted::queued`]). It holds
/// no reference count: a caller sends a request as often as a million
/// times a second, and a count changed by every caller and by the thread
/// answering them moves its line between their CPUs twice per request.
pub(crate) struct Admitted<'a>(Option<&'a Gauge>);

impl Admitted<'_> {
    /// The request is in the queue, which keeps its count: the queue holds
    /// one per request, taken out with them by [`Gauge::take_queued`].
    pub fn queued(mut self) {
        self.0 = None;
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if let Some(gauge) = self.0.take() {
            gauge.release(1);
        }
    }
}

/// The gauge, held by the requests of one chunk ([`Gauge::take_queued`]):
/// their holds are changed by the lane that makes them, then by the thread
/// that answers them, not by every caller.
struct Hold(Arc<Gauge>);

/// Counts a request as inside its pipeline until dropped (or handed to
/// [`Releases`]).
pub(crate) struct InFlight(Option<Arc<Hold>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(hold) = self.0.take() {
            hold.0.release(1);
        }
    }
}

/// The requests of one batch's delivery leaving their pipeline, released
/// together when dropped or flushed: one change of the count and one look
/// at the lanes, instead of one of each per request on a line the
/// pipeline's callers write too. (Requests of another pipeline in the same
/// batch flush the ones gathered before them.)
#[derive(Default)]
pub(crate) struct Releases(Option<(Arc<Hold>, usize)>);

impl Releases {
    /// Takes over `guard`'s request, to be released with the others.
    pub fn add(&mut self, mut guard: InFlight) {
        let Some(hold) = guard.0.take() else { return };
        match &mut self.0 {
            Some((same, n)) if Arc::ptr_eq(&same.0, &hold.0) => *n += 1,
            _ => {
                self.flush();
                self.0 = Some((hold, 1));
            }
        }
    }

    /// Releases the requests gathered so far.
    pub fn flush(&mut self) {
        if let Some((hold, n)) = self.0.take() {
            hold.0.answered(n);
        }
    }
}

impl Drop for Releases {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A duration in whole ns (saturating: 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Bell(Mutex<usize>);

    impl Lanes for Bell {
        fn nudge(&self) {
            *self.0.lock().unwrap() += 1;
        }
    }

    #[test]
    fn answers_leaving_nudge_a_sleeping_lane_once_the_queue_is_worth_a_chunk() {
        let gauge = Gauge::new();
        let bell = Arc::new(Bell(Mutex::new(0)));
        let weak: Weak<dyn Lanes> = Arc::downgrade(&(Arc::clone(&bell) as Arc<dyn Lanes>));
        gauge.set_lanes(weak);
        for _ in 0..9 {
            gauge.admit(100).unwrap().1.queued();
        }
        assert!(gauge.admit(9).is_none(), "a full pipeline admits no more");
        let mut held: Vec<InFlight> = gauge.take_queued(9).collect();
        gauge.set_queued(4);
        assert!(!gauge.worth_a_chunk(4), "4 waiting of 9 is less than half");
        gauge.set_lane_sleeps(true);
        held.truncate(8);
        assert_eq!(*bell.0.lock().unwrap(), 1, "4 of 8: worth a chunk, a lane is nudged");
        gauge.set_lane_sleeps(false);
        held.clear();
        assert_eq!(*bell.0.lock().unwrap(), 1, "awake lanes are not nudged");
        assert_eq!(gauge.in_flight(), 0);
    }

    #[test]
    fn a_request_not_queued_gives_its_count_back_and_a_queued_one_keeps_it_until_its_guard_goes() {
        let gauge = Gauge::new();
        let (before, admitted) = gauge.admit(10).unwrap();
        assert_eq!(before, 0);
        drop(admitted);
        assert_eq!(gauge.in_flight(), 0, "a request the queue did not take is not counted");
        for _ in 0..4 {
            gauge.admit(10).unwrap().1.queued();
        }
        assert_eq!(gauge.in_flight(), 4, "the queue holds the counts");
        let first: Vec<InFlight> = gauge.take_queued(2).collect();
        let second: Vec<InFlight> = gauge.take_queued(2).collect();
        assert_eq!(Arc::strong_count(&gauge), 3, "one hold per chunk, not one per request");
        let mut releases = Releases::default();
        for guard in first.into_iter().chain(second) {
            releases.add(guard);
        }
        assert_eq!(gauge.in_flight(), 4, "gathered, not released yet");
        releases.flush();
        assert_eq!(gauge.in_flight(), 0, "two chunks of one pipeline released together");
        assert_eq!(Arc::strong_count(&gauge), 1, "no hold left");
    }

    #[test]
    fn a_caller_leaves_the_wake_up_to_a_release_only_with_requests_past_the_queue_and_answers_streaming() {
        let gauge = Gauge::new();
        let queue = |n: usize| {
            for _ in 0..n {
                gauge.admit(100).unwrap().1.queued();
            }
        };
        queue(3);
        let now = Instant::now();
        assert!(!gauge.release_will_wake(3, now), "all three are queued: no release is coming");
        let past: Vec<InFlight> = gauge.take_queued(2).collect();
        assert!(!gauge.release_will_wake(1, now), "two past the queue, but no answer has left yet");
        // One answer leaves: answers are streaming for a request that
        // arrived just before (a moment before the answer, so that no
        // preemption of this test can make it old).
        queue(1);
        let mut releases = Releases::default();
        gauge.take_queued(1).for_each(|g| releases.add(g));
        let arrived = Instant::now();
        releases.flush();
        assert!(gauge.release_will_wake(1, arrived), "two past the queue and an answer just left");
        assert!(!gauge.release_will_wake(3, arrived), "nothing past a queue of three");
        let later = Instant::now() + STREAMING * 3;
        assert!(!gauge.release_will_wake(1, later), "the last answer is too old to count as a stream");
        drop(past);
        assert_eq!(gauge.in_flight(), 1);
    }

    #[test]
    fn chunks_are_whole_model_batches_when_more_than_one_is_waiting() {
        let gauge = Gauge::new();
        assert_eq!(gauge.chunk_len(300, 1024), 300, "the model's batch is not known yet");
        gauge.set_model_batch(128);
        assert_eq!(gauge.chunk_len(300, 1024), 256);
        assert_eq!(gauge.chunk_len(100, 1024), 100, "less than a batch goes whole");
        assert_eq!(gauge.chunk_len(300, 200), 128, "at most the chunk size");
        assert_eq!(gauge.chunk_len(300, 100), 100);
    }
}
