//! [`OutcomeSlot`]: where a background call's outcome lands, behind
//! [`AsyncResult`](super::AsyncResult) and the handles of pools built on
//! this crate (`multiproc-redis`'s `RedisAsync`).

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::error::PoolError;
use super::wait_while_until;

/// A callback run with the value of a call that succeeded.
pub type OkCallback<T> = Box<dyn FnOnce(&T) + Send>;
/// A callback run with the error of a call that failed.
pub type ErrCallback<E> = Box<dyn FnOnce(&E) + Send>;

/// The errors an [`OutcomeSlot`] answers with itself, beside the call's own.
pub trait OutcomeError: Sized {
    /// Asked before the outcome is known.
    fn not_ready() -> Self;
    /// Asked after the outcome was taken out.
    fn taken() -> Self;
    /// Waited `timeout` in vain.
    fn timeout(timeout: Duration) -> Self;
    /// What the log says when a callback panics (the panic is ignored).
    const CALLBACK_PANICKED: &'static str;
}

impl OutcomeError for PoolError {
    fn not_ready() -> Self {
        PoolError::NotReady
    }

    fn taken() -> Self {
        PoolError::Taken
    }

    fn timeout(timeout: Duration) -> Self {
        PoolError::Timeout(timeout)
    }

    const CALLBACK_PANICKED: &'static str = "a pool result callback panicked; the panic was ignored";
}

/// One outcome of a call running in the background, delivered once:
/// threads wait for it on a condition variable, a polled future leaves its
/// waker (nothing polls in a loop), and exactly one of the callbacks runs.
///
/// The thread that completes the slot runs the callbacks attached by then,
/// before anyone sees the outcome (as in Python, a result is ready only
/// after its callback returned); a callback attached later runs at once on
/// its caller's thread, with the outcome lent out, and not at all once the
/// outcome was taken.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::pool::OutcomeSlot;
/// use multiproc::PoolError;
///
/// let slot = OutcomeSlot::<u32, PoolError>::new();
/// assert!(matches!(slot.successful(), Err(PoolError::NotReady)));
/// slot.complete(Ok(7));
/// slot.complete(Ok(8)); // the first outcome wins
/// assert!(slot.ready());
/// assert_eq!(slot.get_timeout(Duration::from_secs(1)).unwrap(), 7);
/// assert!(matches!(slot.get_timeout(Duration::ZERO), Err(PoolError::Taken)));
/// ```
pub struct OutcomeSlot<T, E> {
    state: Mutex<State<T, E>>,
    cond: Condvar,
}

struct State<T, E> {
    /// The outcome; `None` once done means taken.
    outcome: Option<Result<T, E>>,
    done: bool,
    /// A `complete` call owns the outcome (later ones are ignored), and
    /// callbacks attached from now on run on their caller's thread.
    claimed: bool,
    /// A callback attached late is running with the outcome lent out.
    in_callback: bool,
    waker: Option<Waker>,
    on_ok: Option<OkCallback<T>>,
    on_err: Option<ErrCallback<E>>,
}

impl<T, E> State<T, E> {
    /// The outcome is known and no callback holds it.
    fn settled(&self) -> bool {
        self.done && !self.in_callback
    }
}

impl<T, E: OutcomeError> std::fmt::Debug for OutcomeSlot<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeSlot").field("ready", &self.ready()).finish()
    }
}

impl<T, E: OutcomeError> Default for OutcomeSlot<T, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, E: OutcomeError> OutcomeSlot<T, E> {
    /// An empty slot.
    pub fn new() -> Self {
        OutcomeSlot {
            state: Mutex::new(State {
                outcome: None,
                done: false,
                claimed: false,
                in_callback: false,
                waker: None,
                on_ok: None,
                on_err: None,
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the outcome (the first one wins), runs the matching callback,
    /// then wakes every waiter and the future.
    pub fn complete(&self, outcome: Result<T, E>) {
        let (on_ok, on_err) = {
            let mut st = self.lock();
            if st.claimed {
                return;
            }
            st.claimed = true;
            (st.on_ok.take(), st.on_err.take())
        };
        run_callback(&outcome, on_ok, on_err);
        self.publish(outcome);
    }

    /// Puts the outcome in (first from `complete`, or back from a late
    /// callback) and wakes every waiter and the future.
    fn publish(&self, outcome: Result<T, E>) {
        let waker = {
            let mut st = self.lock();
            st.outcome = Some(outcome);
            st.done = true;
            st.in_callback = false;
            st.waker.take()
        };
        self.cond.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// True once the outcome is known (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.lock().settled()
    }

    /// Whether the call succeeded (Python's `successful()`).
    ///
    /// # Errors
    ///
    /// [`OutcomeError::not_ready`] before the outcome is known, or
    /// [`OutcomeError::taken`] after it was taken out.
    pub fn successful(&self) -> Result<bool, E> {
        let st = self.lock();
        if !st.settled() {
            return Err(E::not_ready());
        }
        st.outcome.as_ref().map(Result::is_ok).ok_or_else(E::taken)
    }

    /// Waits until the outcome is known or `deadline` (none: for ever);
    /// the guard when known.
    fn wait_until(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, State<T, E>>> {
        let st = wait_while_until(&self.cond, self.lock(), deadline, |s| !s.settled());
        st.settled().then_some(st)
    }

    /// Waits until the outcome is known.
    pub fn wait(&self) {
        let _known = self.wait_until(None);
    }

    /// Waits at most `timeout`; true when the outcome is known.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout)).is_some()
    }

    /// Waits for the outcome and takes it out.
    ///
    /// # Errors
    ///
    /// The call's error, or [`OutcomeError::taken`] if it was taken out before.
    pub fn get(&self) -> Result<T, E> {
        self.wait_until(None).and_then(|mut st| st.outcome.take()).unwrap_or_else(|| Err(E::taken()))
    }

    /// Waits at most `timeout` for the outcome and takes it out. On timeout
    /// it can be asked again.
    ///
    /// # Errors
    ///
    /// [`OutcomeError::timeout`] after ≈`timeout`, or as for [`OutcomeSlot::get`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, E> {
        match self.wait_until(Instant::now().checked_add(timeout)) {
            Some(mut st) => st.outcome.take().unwrap_or_else(|| Err(E::taken())),
            None => Err(E::timeout(timeout)),
        }
    }

    /// The outcome, taken out, if it is known; else leaves `waker` to be
    /// woken when it is (a future's `poll`). After the outcome was taken:
    /// [`OutcomeError::taken`].
    pub fn poll_take(&self, waker: &Waker) -> Poll<Result<T, E>> {
        let mut st = self.lock();
        if st.settled() {
            return Poll::Ready(st.outcome.take().unwrap_or_else(|| Err(E::taken())));
        }
        match &mut st.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        Poll::Pending
    }

    /// Attaches callbacks: kept for [`OutcomeSlot::complete`] if it has not
    /// run yet, else run here at once with the outcome lent out (not at all
    /// when the outcome was taken).
    pub fn attach(&self, on_ok: Option<OkCallback<T>>, on_err: Option<ErrCallback<E>>) {
        let mut st = self.lock();
        if !st.claimed {
            if on_ok.is_some() {
                st.on_ok = on_ok;
            }
            if on_err.is_some() {
                st.on_err = on_err;
            }
            return;
        }
        drop(st);
        // Done or finishing: wait for it, then lend the outcome out.
        let Some(outcome) = self.wait_until(None).and_then(|mut st| {
            let outcome = st.outcome.take();
            st.in_callback = outcome.is_some();
            outcome
        }) else {
            return;
        };
        run_callback(&outcome, on_ok, on_err);
        self.publish(outcome);
    }
}

/// Runs the callback that matches the outcome; a panicking callback is
/// logged and otherwise ignored (it must not stop the thread that runs it,
/// and the outcome still arrives).
fn run_callback<T, E: OutcomeError>(
    outcome: &Result<T, E>,
    on_ok: Option<OkCallback<T>>,
    on_err: Option<ErrCallback<E>>,
) {
    let run = || match (outcome, on_ok, on_err) {
        (Ok(v), Some(cb), _) => cb(v),
        (Err(e), _, Some(cb)) => cb(e),
        _ => {}
    };
    if panic::catch_unwind(AssertUnwindSafe(run)).is_err() {
        tracing::error!("{}", E::CALLBACK_PANICKED);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    type Slot = OutcomeSlot<u32, PoolError>;

    /// Counts its wake-ups.
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_first_outcome_wins_and_is_taken_once() {
        let slot = Slot::new();
        assert!(matches!(slot.successful(), Err(PoolError::NotReady)));
        assert!(matches!(slot.get_timeout(Duration::from_millis(10)), Err(PoolError::Timeout(_))));
        slot.complete(Err(PoolError::Closed));
        slot.complete(Ok(1));
        assert!(slot.ready());
        assert!(!slot.successful().unwrap());
        assert!(matches!(slot.get_timeout(Duration::ZERO), Err(PoolError::Closed)));
        assert!(matches!(slot.successful(), Err(PoolError::Taken)));
        assert!(matches!(slot.get(), Err(PoolError::Taken)));
    }

    #[test]
    fn callbacks_run_before_the_outcome_is_ready_and_once() {
        let slot = Arc::new(Slot::new());
        // A callback's panic is caught and logged: what must not happen is
        // counted instead.
        let (runs, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, s, w) = (runs.clone(), slot.clone(), wrong.clone());
        // Runs on the completing thread, before anyone can see the outcome.
        slot.attach(
            Some(Box::new(move |v| {
                // Not ready before its callback returned.
                r.fetch_add(*v as usize + usize::from(s.ready()) * 100, Ordering::SeqCst);
            })),
            Some(Box::new(move |_| _ = w.fetch_add(1, Ordering::SeqCst))),
        );
        let s = slot.clone();
        let t = std::thread::spawn(move || s.complete(Ok(5)));
        assert!(slot.wait_timeout(Duration::from_secs(10)));
        assert_eq!(runs.load(Ordering::SeqCst), 5);
        t.join().unwrap();
        // Attached late: runs at once with the outcome lent out, which stays.
        let r = runs.clone();
        slot.attach(Some(Box::new(move |v| _ = r.fetch_add(*v as usize, Ordering::SeqCst))), None);
        assert_eq!(runs.load(Ordering::SeqCst), 10);
        assert_eq!(slot.get_timeout(Duration::ZERO).unwrap(), 5);
        // Attached after the outcome was taken: nothing to give it.
        let w = wrong.clone();
        slot.attach(Some(Box::new(move |_| _ = w.fetch_add(1, Ordering::SeqCst))), None);
        assert_eq!(wrong.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_panicking_callback_does_not_keep_the_outcome() {
        let slot = Slot::new();
        slot.attach(None, Some(Box::new(|_| panic!("a callback that panics"))));
        slot.complete(Err(PoolError::Closed));
        assert!(matches!(slot.get_timeout(Duration::ZERO), Err(PoolError::Closed)));
    }

    #[test]
    fn a_polled_future_is_woken_once_the_outcome_is_in() {
        let slot = Slot::new();
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        assert!(slot.poll_take(&waker).is_pending());
        assert!(slot.poll_take(&waker).is_pending(), "the same waker is kept, not stacked");
        slot.complete(Ok(3));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(matches!(slot.poll_take(&waker), Poll::Ready(Ok(3))));
        assert!(matches!(slot.poll_take(&waker), Poll::Ready(Err(PoolError::Taken))));
    }
}
