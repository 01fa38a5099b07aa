//! Waiting for an answer: a request that is alone in the server polls for
//! its answer for a short while before it lets its async thread sleep.
//!
//! An answer comes from the model's supervisor thread, which wakes the async
//! task; when the async threads all sleep, that wake-up lands on a halted
//! CPU, which costs 20–50 µs on this project's 2-CPU VMs — several times a
//! small model's whole call. A lone request has the machine to itself, so
//! its thread may as well poll (yielding between polls). Under load nothing
//! polls: other requests keep the async threads awake anyway, and they need
//! the thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Longest a lone request polls for its answer.
const POLL_LIMIT: Duration = Duration::from_micros(300);

/// The requests in flight and how fast lone ones were answered lately.
#[derive(Debug, Default)]
pub(crate) struct LoneWait {
    in_flight: AtomicUsize,
    /// Moving average of a lone request's answer time, in ns.
    recent_ns: AtomicU64,
}

/// Counts a request in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // ORDERING: Relaxed: a count used as a hint for polling.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl LoneWait {
    /// Awaits `answer`; if it is the only request in flight and lone answers
    /// came quickly lately, polls it first (for about twice that time).
    pub(crate) async fn wait<F: Future + Unpin>(&self, mut answer: F) -> F::Output {
        // ORDERING: Relaxed throughout: hints for polling, no data behind them.
        let alone = self.in_flight.fetch_add(1, Ordering::Relaxed) == 0;
        let _counted = InFlight(&self.in_flight);
        if !alone {
            return answer.await;
        }
        let recent = Duration::from_nanos(self.recent_ns.load(Ordering::Relaxed));
        let start = Instant::now();
        if recent <= POLL_LIMIT / 2 {
            let budget = (recent * 2).max(Duration::from_micros(50));
            let mut cx = Context::from_waker(Waker::noop());
            while start.elapsed() < budget && self.in_flight.load(Ordering::Relaxed) == 1 {
                if let Poll::Ready(out) = Pin::new(&mut answer).poll(&mut cx) {
                    self.note(start.elapsed());
                    return out;
                }
                std::thread::yield_now();
            }
        }
        let out = answer.await;
        self.note(start.elapsed());
        out
    }

    fn note(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.recent_ns.load(Ordering::Relaxed);
        let new = if old == 0 { took } else { old.saturating_mul(7).saturating_add(took) / 8 };
        self.recent_ns.store(new, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_request_polls_and_a_slow_answer_stops_the_polling() {
        let lone = LoneWait::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // A quick answer: ready on the third poll (it wakes its waker, in
        // case polling ran out of time first on a loaded machine).
        let mut polls = 0;
        let quick = std::future::poll_fn(|cx| {
            polls += 1;
            if polls >= 3 {
                Poll::Ready(7)
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        });
        assert_eq!(rt.block_on(lone.wait(quick)), 7);
        assert!(lone.recent_ns.load(Ordering::Relaxed) > 0);
        // A slow answer (sleep) raises the average past the limit...
        for _ in 0..2 {
            rt.block_on(async { lone.wait(Box::pin(tokio::time::sleep(Duration::from_millis(5)))).await });
        }
        assert!(Duration::from_nanos(lone.recent_ns.load(Ordering::Relaxed)) > POLL_LIMIT);
        // ...so the next lone request awaits at once: polled exactly once
        // before it is woken.
        let mut polls = 0;
        let counted = std::future::poll_fn(|cx| {
            polls += 1;
            if polls >= 2 {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        });
        rt.block_on(lone.wait(counted));
        assert_eq!(polls, 2);
        assert_eq!(lone.in_flight.load(Ordering::Relaxed), 0);
    }
}
