//! Where one request's answer lands: a slot that a blocking caller waits on
//! (condvar) or an async caller polls (waker). The first completion wins:
//! it claims the slot, then publishes its answer (a batch's answers are all
//! claimed, then counted, then published, so that a caller holding its
//! answer finds it in the counters). A slot whose caller is gone is marked
//! cancelled, and the batcher drops it before it reaches a worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use crate::error::ServeError;
use crate::items::Encoded;
use crate::name::ModelName;

/// How long a caller whose wait ran out waits for an answer that claimed
/// its slot just before (only a preempted deliverer makes this more than
/// microseconds).
const PUBLISH_GRACE: Duration = Duration::from_secs(1);

/// A successful answer, still encoded.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The encoded output.
    pub bytes: Encoded,
    /// The model that answered (for a pipeline, the pipeline's model).
    pub model: ModelName,
    /// When the answer was ready.
    pub answered: Instant,
    /// The version that answered.
    pub version: u64,
    /// Time spent queued for a batch.
    pub queued: Duration,
    /// Size of the batch the request ran in.
    pub batch_size: usize,
}

#[derive(Debug, Default)]
struct State {
    result: Option<Result<Answer, ServeError>>,
    waker: Option<Waker>,
    /// A thread waits in `wait` (a notify costs a system call: only then).
    waiting: bool,
}

impl State {
    /// Takes the answer if it is there (once: the slot stays claimed).
    fn take(&mut self) -> Option<Result<Answer, ServeError>> {
        self.result.take()
    }
}

/// Wake-ups owed to callers whose answers were set with
/// [`Slot::publish_later`]; given by [`Wakes::wake`] (or when dropped).
#[derive(Default)]
pub(crate) struct Wakes {
    threads: Vec<Arc<Slot>>,
    tasks: Vec<Waker>,
}

impl Wakes {
    /// Wakes every caller owed a wake-up.
    pub fn wake(&mut self) {
        for slot in self.threads.drain(..) {
            slot.ready.notify_all();
        }
        for w in self.tasks.drain(..) {
            w.wake();
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake();
    }
}

/// Answers whose slots are claimed, published together once their batch
/// is counted (or when dropped, so that no claimed slot is left empty).
#[derive(Default)]
pub(crate) struct Claimed(Vec<(Arc<Slot>, Answer)>);

impl Claimed {
    /// Claims `slot` for `answer`; false if it was answered or claimed
    /// before (the answer is dropped).
    pub fn claim(&mut self, slot: Arc<Slot>, answer: Answer) -> bool {
        let won = slot.claim();
        if won {
            self.0.push((slot, answer));
        }
        won
    }

    /// Publishes every claimed answer, leaving their callers' wake-ups in `wakes`.
    pub fn publish(&mut self, wakes: &mut Wakes) {
        for (slot, answer) in self.0.drain(..) {
            slot.publish_later(Ok(answer), wakes);
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        self.publish(&mut Wakes::default());
    }
}

/// One request's answer, set once.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Mutex<State>,
    ready: Condvar,
    /// An answer is set or about to be (see [`Slot::claim`]).
    claimed: AtomicBool,
    cancelled: AtomicBool,
    /// When the request arrived.
    pub arrived: Instant,
}

impl Slot {
    pub fn new() -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            claimed: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            arrived: Instant::now(),
        })
    }

    /// Sets the answer unless one is already set; true if this one was.
    pub fn complete(self: &Arc<Self>, result: Result<Answer, ServeError>) -> bool {
        let won = self.claim();
        if won {
            self.publish(result);
        }
        won
    }

    /// Makes the caller the one to answer, unless an answer was set or
    /// claimed before; true if it is. Whoever claims the slot must then
    /// [publish](Slot::publish_later) its answer, soon: a caller whose
    /// wait ran out meanwhile waits for it (see [`Slot::after_claimed`]).
    pub fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }

    /// Sets the answer of a slot this caller [claimed](Slot::claim) and
    /// wakes its caller.
    pub fn publish(self: &Arc<Self>, result: Result<Answer, ServeError>) {
        let mut wakes = Wakes::default();
        self.publish_later(result, &mut wakes);
        wakes.wake();
    }

    /// Sets the answer of a slot this caller [claimed](Slot::claim),
    /// leaving its caller's wake-up in `wakes`: a batch's answers are all
    /// set before any caller wakes, so a caller that reads them in order
    /// finds the next one there instead of sleeping again (and being woken
    /// again) per answer.
    pub fn publish_later(self: &Arc<Self>, result: Result<Answer, ServeError>, wakes: &mut Wakes) {
        debug_assert!(self.claimed.load(Ordering::Relaxed), "an answer published without a claim");
        let (waker, waiting) = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.result = Some(result);
            (s.waker.take(), s.waiting)
        };
        if waiting {
            wakes.threads.push(Arc::clone(self));
        }
        if let Some(w) = waker {
            wakes.tasks.push(w);
        }
    }

    /// For a caller whose wait ran out and whose own error could not be
    /// set (`complete` said false): the answer that claimed the slot first,
    /// waited for at most [`PUBLISH_GRACE`] (it is published right after
    /// its batch is counted), or `None`.
    pub fn after_claimed(&self) -> Option<Result<Answer, ServeError>> {
        self.wait_for(PUBLISH_GRACE)
    }

    /// True once answered, or about to be (claimed).
    pub fn is_done(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// The caller is gone: nobody will read the answer.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    /// True if the caller is gone.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The answer if it is there, without waiting.
    pub fn try_take(&self) -> Option<Result<Answer, ServeError>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Waits for the answer at most `timeout`; the clock is read only if
    /// the answer is not there yet (under load it usually is).
    pub fn wait_for(&self, timeout: Duration) -> Option<Result<Answer, ServeError>> {
        self.wait_until(|| Instant::now().checked_add(timeout))
    }

    /// Waits for the answer until `deadline` (`None`: as long as it takes).
    pub fn wait(&self, deadline: Option<Instant>) -> Option<Result<Answer, ServeError>> {
        self.wait_until(|| deadline)
    }

    /// Waits for the answer until the deadline `deadline()` gives, asked
    /// only if the answer is not there yet.
    fn wait_until(&self, deadline: impl FnOnce() -> Option<Instant>) -> Option<Result<Answer, ServeError>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = s.take() {
            return Some(r);
        }
        let deadline = deadline();
        loop {
            s.waiting = true;
            match deadline {
                None => s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        s.waiting = false;
                        return None;
                    }
                    s = self.ready.wait_timeout(s, d - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
            s.waiting = false;
            if let Some(r) = s.take() {
                return Some(r);
            }
        }
    }

    /// Polls for the answer, registering `waker` if there is none yet.
    pub fn poll(&self, waker: &Waker) -> Option<Result<Answer, ServeError>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = s.take() {
            return Some(r);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            s.waker = Some(waker.clone());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(bytes: &[u8]) -> Answer {
        Answer {
            bytes: Encoded::Own(bytes.to_vec()),
            model: ModelName::from("m"),
            answered: Instant::now(),
            version: 1,
            queued: Duration::ZERO,
            batch_size: 1,
        }
    }

    #[test]
    fn a_claimed_slot_takes_no_other_answer_and_its_caller_reads_the_published_one() {
        let slot = Slot::new();
        assert!(slot.claim());
        assert!(slot.is_done(), "a claimed slot is done for the batcher and the deadline watcher");
        assert!(!slot.claim());
        assert!(!slot.complete(Err(ServeError::ShuttingDown)), "a claimed slot took a second answer");
        assert!(slot.try_take().is_none(), "an answer readable before it was published");
        slot.publish(Ok(answer(b"first")));
        let got = slot.try_take().expect("the published answer").expect("an answer, not an error");
        assert_eq!(got.bytes.as_bytes(), b"first");
        assert!(slot.try_take().is_none(), "an answer read twice");
    }

    #[test]
    fn a_caller_whose_wait_ran_out_after_a_claim_waits_for_the_claimed_answer() {
        let slot = Slot::new();
        let mut claimed = Claimed::default();
        assert!(claimed.claim(Arc::clone(&slot), answer(b"late")));
        // The caller's wait ran out: its own error cannot be set.
        assert!(!slot.complete(Err(ServeError::ShuttingDown)));
        let publisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut wakes = Wakes::default();
            claimed.publish(&mut wakes);
            wakes.wake();
        });
        let got = slot.after_claimed().expect("the claimed answer within the grace").expect("an answer");
        assert_eq!(got.bytes.as_bytes(), b"late");
        publisher.join().expect("the publisher thread");
    }

    #[test]
    fn claimed_answers_dropped_unpublished_are_published() {
        let slot = Slot::new();
        let mut claimed = Claimed::default();
        assert!(claimed.claim(Arc::clone(&slot), answer(b"kept")));
        drop(claimed);
        let got = slot.wait_for(Duration::from_secs(5)).expect("the answer").expect("an answer");
        assert_eq!(got.bytes.as_bytes(), b"kept");
    }
}
