//! Polling for an answer that usually comes soon, instead of sleeping until
//! it is there.
//!
//! An answer comes from another thread (a model's supervisor) or process (a
//! worker), which wakes whoever waits for it. When the waiting thread
//! sleeps on a CPU that went idle, that wake-up costs 20–50 µs on this
//! project's 2-CPU VMs — several times a small model's whole call — and a
//! lone request pays it at every hand-off. A request that is alone in the
//! server has the machine to itself, so its thread may as well poll
//! (yielding between polls, so a thread it waits for still runs on its CPU)
//! for about twice the time recent answers took. Under load nothing polls:
//! other requests keep the threads awake anyway, and they need the CPU.
//!
//! [`LoneWait`] is that rule for callers (the blocking [`Server::infer`]
//! and the HTTP front end's async handlers); a model's supervisor polls its
//! worker's pipe by the same [`AnswerTimes`] and [`poll_for`].
//!
//! [`Server::infer`]: crate::Server::infer

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How soon answers came lately (a moving average), and so whether and how
/// long polling for the next one pays.
#[derive(Debug)]
pub(crate) struct AnswerTimes {
    /// Moving average of the answer time, in ns (0: none yet).
    recent_ns: AtomicU64,
    /// Answers slower than half of this are not polled for.
    limit: Duration,
    /// The shortest polling.
    least: Duration,
}

impl AnswerTimes {
    /// Polls for about twice the recent answer time (at least `least`)
    /// while that is under half of `limit`.
    pub(crate) const fn new(limit: Duration, least: Duration) -> AnswerTimes {
        AnswerTimes { recent_ns: AtomicU64::new(0), limit, least }
    }

    /// How long to poll for the next answer; `None`: answers come too
    /// slowly lately for polling to pay.
    pub(crate) fn budget(&self) -> Option<Duration> {
        // ORDERING: Relaxed throughout: a hint for polling, no data behind it.
        let recent = Duration::from_nanos(self.recent_ns.load(Ordering::Relaxed));
        (recent <= self.limit / 2).then(|| (recent * 2).max(self.least))
    }

    /// Notes how long an answer took.
    pub(crate) fn note(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.recent_ns.load(Ordering::Relaxed);
        let new = if old == 0 { took } else { old.saturating_mul(7).saturating_add(took) / 8 };
        self.recent_ns.store(new, Ordering::Relaxed);
    }
}

/// Calls `attempt` until it gives an answer, yielding the CPU between
/// calls, for at most `budget` and while `keep_going` says so; `None` if
/// no answer came meanwhile.
pub(crate) fn poll_for<T>(
    budget: Duration,
    mut attempt: impl FnMut() -> Option<T>,
    mut keep_going: impl FnMut() -> bool,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(answer) = attempt() {
            return Some(answer);
        }
        if start.elapsed() >= budget || !keep_going() {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Polling for the next request after a lone one was answered: a model's
/// supervisor polls its queue, a worker process its pipe, instead of
/// sleeping until the next request wakes it (at low load, each of those
/// wake-ups would land on an idle CPU).
#[derive(Debug)]
pub(crate) struct NextLone {
    /// Time from a lone answer to the next request.
    gaps: AnswerTimes,
    /// When the last lone request was answered (`None`: the last was not lone).
    answered: Option<Instant>,
}

impl NextLone {
    pub(crate) const fn new() -> NextLone {
        NextLone { gaps: AnswerTimes::new(POLL_LIMIT, POLL_LEAST), answered: None }
    }

    /// A request that was alone was just answered.
    pub(crate) fn answered_lone(&mut self) {
        self.answered = Some(Instant::now());
    }

    /// Waits for the next request with `wait`; if the last one was lone and
    /// the next ones came soon after lately, first polls `arrived` for about
    /// twice that time. A pause longer than the limit counts as the limit,
    /// so that an idle spell between bursts does not stop the polling for
    /// long (a steady flow of requests that come too late does).
    pub(crate) fn wait_next<T>(&mut self, mut arrived: impl FnMut() -> bool, wait: impl FnOnce() -> T) -> T {
        let Some(since) = self.answered.take() else { return wait() };
        if let Some(budget) = self.gaps.budget() {
            poll_for(budget, || arrived().then_some(()), || true);
        }
        let out = wait();
        self.gaps.note(since.elapsed().min(self.gaps.limit));
        out
    }
}

/// Longest a lone request polls for its answer.
const POLL_LIMIT: Duration = Duration::from_micros(300);
/// Shortest polling for a lone request's answer.
const POLL_LEAST: Duration = Duration::from_micros(50);

/// Waiting for answers: a request that is alone in flight (among those
/// waited for through this `LoneWait`) polls for its answer, yielding the
/// CPU between polls, for about twice the time recent lone answers took
/// (when that is under 150 µs) before its thread sleeps. A thread woken on
/// an idle CPU costs 20–50 µs on a 2-CPU VM, several times a small model's
/// call; under load nothing polls. [`Server::infer`](crate::Server::infer)
/// waits this way; so does the HTTP front end.
///
/// ```
/// use multiproc_serve::LoneWait;
///
/// let lone = LoneWait::default();
/// assert_eq!(lone.in_flight(), 0);
/// // Any future; an answer already there is taken at the first poll.
/// let answer = lone.wait_blocking(|| Some(7), || unreachable!("no sleep: it was there"));
/// assert_eq!(answer, 7);
/// ```
#[derive(Debug)]
pub struct LoneWait {
    in_flight: AtomicUsize,
    times: AnswerTimes,
}

impl Default for LoneWait {
    fn default() -> Self {
        LoneWait { in_flight: AtomicUsize::new(0), times: AnswerTimes::new(POLL_LIMIT, POLL_LEAST) }
    }
}

/// Counts one more until dropped: a request in flight, or a poller's turn.
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        // ORDERING: Relaxed: a count used as a hint for polling.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LoneWait {
    /// Requests waited for now.
    pub fn in_flight(&self) -> usize {
        // ORDERING: Relaxed: a hint.
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in; the budget to poll for it if it is alone.
    fn enter(&self) -> (Counted<'_>, Option<Duration>) {
        // ORDERING: Relaxed: a hint for polling, no data behind it.
        let alone = self.in_flight.fetch_add(1, Ordering::Relaxed) == 0;
        (Counted(&self.in_flight), if alone { self.times.budget() } else { None })
    }

    fn still_alone(&self) -> bool {
        self.in_flight() == 1
    }

    /// Awaits `answer`; if it is the only request in flight and lone answers
    /// came quickly lately, polls it first (for about twice that time).
    pub async fn wait<F: Future + Unpin>(&self, mut answer: F) -> F::Output {
        let (_counted, budget) = self.enter();
        let start = Instant::now();
        if let Some(budget) = budget {
            let mut cx = Context::from_waker(Waker::noop());
            let polled = poll_for(
                budget,
                || match Pin::new(&mut answer).poll(&mut cx) {
                    Poll::Ready(out) => Some(out),
                    Poll::Pending => None,
                },
                || self.still_alone(),
            );
            if let Some(out) = polled {
                self.times.note(start.elapsed());
                return out;
            }
        }
        let out = answer.await;
        self.times.note(start.elapsed());
        out
    }

    /// The same for a blocking caller: `ready` looks for the answer without
    /// waiting, `sleep` waits for it.
    pub fn wait_blocking<T>(&self, mut ready: impl FnMut() -> Option<T>, sleep: impl FnOnce() -> T) -> T {
        let (_counted, budget) = self.enter();
        let start = Instant::now();
        let out = match budget {
            Some(budget) => poll_for(budget, &mut ready, || self.still_alone()).unwrap_or_else(sleep),
            None => ready().unwrap_or_else(sleep),
        };
        self.times.note(start.elapsed());
        out
    }
}

/// A limit on how many threads poll at once: each poller takes a CPU
/// from the threads that bring the answers it polls for.
#[derive(Debug)]
pub(crate) struct PollerLimit {
    polling: AtomicUsize,
}

impl PollerLimit {
    pub(crate) const fn new() -> PollerLimit {
        PollerLimit { polling: AtomicUsize::new(0) }
    }

    /// A turn to poll, given back when dropped, if fewer than `most`
    /// threads hold one.
    pub(crate) fn enter(&self, most: usize) -> Option<Counted<'_>> {
        // ORDERING: Relaxed: a count that bounds polling, with no data behind it.
        let taken = self.polling.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < most).then_some(n + 1));
        taken.ok().map(|_| Counted(&self.polling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_of_threads_poll_at_once() {
        let limit = PollerLimit::new();
        let first = limit.enter(2).expect("the first of two turns");
        let second = limit.enter(2).expect("the second of two turns");
        assert!(limit.enter(2).is_none(), "a third poller over a limit of two");
        drop(first);
        let third = limit.enter(2).expect("a turn given back is taken again");
        drop((second, third));
        assert!(limit.enter(1).is_some(), "every turn was given back");
    }

    /// Runs a future on this thread (the test needs no runtime).
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            assert!(Instant::now() < deadline, "the future never finished");
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    #[test]
    fn a_lone_request_polls_and_a_slow_answer_stops_the_polling() {
        let lone = LoneWait::default();
        // A quick answer: ready on the third poll.
        let mut polls = 0;
        let quick = std::future::poll_fn(|_| {
            polls += 1;
            if polls >= 3 { Poll::Ready(7) } else { Poll::Pending }
        });
        assert_eq!(block_on(lone.wait(quick)), 7);
        // Slow answers raise the average past the limit...
        for _ in 0..2 {
            let slow = lone.wait_blocking(
                || None,
                || {
                    std::thread::sleep(Duration::from_millis(5));
                    1
                },
            );
            assert_eq!(slow, 1);
        }
        assert_eq!(lone.times.budget(), None);
        // ...so the next lone request sleeps at once: looked at exactly once.
        let mut looks = 0;
        let answer = lone.wait_blocking(
            || {
                looks += 1;
                None
            },
            || 2,
        );
        assert_eq!((answer, looks), (2, 1));
        assert_eq!(lone.in_flight(), 0);
    }

    #[test]
    fn polling_gives_up_after_its_budget_or_when_told_to() {
        let start = Instant::now();
        assert_eq!(poll_for(Duration::from_millis(2), || None::<()>, || true), None);
        assert!(start.elapsed() >= Duration::from_millis(2));
        let mut calls = 0;
        assert_eq!(
            poll_for(
                Duration::from_secs(10),
                || {
                    calls += 1;
                    None::<()>
                },
                || false
            ),
            None
        );
        assert_eq!(calls, 1, "told to stop after the first look");
        let times = AnswerTimes::new(Duration::from_micros(300), Duration::from_micros(50));
        assert_eq!(times.budget(), Some(Duration::from_micros(50)), "no answer yet: the least polling");
        times.note(Duration::from_micros(100));
        assert_eq!(times.budget(), Some(Duration::from_micros(200)));
    }

    #[test]
    fn the_next_request_is_polled_for_only_after_a_lone_one() {
        let mut next = NextLone::new();
        let mut looks = 0;
        assert_eq!(next.wait_next(|| unreachable!("not after a lone answer"), || 1), 1);
        next.answered_lone();
        let got = next.wait_next(
            || {
                looks += 1;
                looks == 3
            },
            || 2,
        );
        // Polled until it arrived (or, on a loaded machine, until the 50 µs
        // budget ran out), never after; then waited as usual.
        assert_eq!(got, 2);
        assert!((1..=3).contains(&looks), "looked {looks} times");
        // Long pauses count as the limit: after quick gaps, polling goes on
        // after one...
        for _ in 0..8 {
            next.gaps.note(Duration::from_micros(10));
        }
        next.answered_lone();
        next.wait_next(|| false, || std::thread::sleep(Duration::from_millis(5)));
        assert!(next.gaps.budget().is_some());
        // ...but not after a steady flow of late requests.
        for _ in 0..8 {
            next.answered_lone();
            next.wait_next(|| false, || std::thread::sleep(Duration::from_millis(1)));
        }
        assert_eq!(next.gaps.budget(), None);
    }
}
