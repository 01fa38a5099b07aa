//! Adaptive busy-waiting: how long to poll for something another process is
//! about to do before going to sleep in the kernel.
//!
//! On the 2-CPU VMs this project runs on, waking a process that sleeps on
//! another CPU costs 20–30 µs (the host has to reschedule a halted virtual
//! CPU), against well under a microsecond when the waiter is still polling.
//! So a wait first polls for up to a budget. The budget adapts per object:
//! doubled when polling ended the wait, halved when it had to sleep anyway
//! (the other side was not running: a loaded machine, or the same CPU).
//! At the floor, one wait in [`Spin::probe_every`] (per thread) polls for
//! [`Spin::probe_ns`] to find out whether polling pays again.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sys::Deadline;
use crate::sys::imp::futex::{self, FutexWait};

/// The bounds of one kind of adaptive wait, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spin {
    /// The budget of an object that has not waited yet.
    pub start_ns: u32,
    /// The floor.
    pub min_ns: u32,
    /// The ceiling.
    pub max_ns: u32,
    /// The budget of a probe.
    pub probe_ns: u32,
    /// How often (in waits at the floor, per thread) to probe.
    pub probe_every: u32,
}

thread_local! {
    /// Waits at the floor on this thread, to pace the probes.
    static FLOOR_HITS: Cell<u32> = const { Cell::new(0) };
}

/// One wait's polling allowance, from [`Spin::begin`].
#[derive(Debug)]
pub(crate) struct Attempt {
    budget: u32,
    probing: bool,
    limit: Duration,
    start: Instant,
}

impl Attempt {
    /// True while the allowance lasts.
    pub(crate) fn going(&self) -> bool {
        self.start.elapsed() < self.limit
    }

    /// Checks the allowance (call it every few dozen polls): false once it
    /// is spent. Past [`YIELD_AFTER`] it also yields the CPU: when the
    /// thread we wait for is runnable on this very CPU (a machine with more
    /// runnable threads than CPUs), it runs now instead of after our
    /// budget; when nothing else is runnable, the yield returns at once.
    pub(crate) fn keep_polling(&self) -> bool {
        let elapsed = self.start.elapsed();
        if elapsed >= self.limit {
            return false;
        }
        if elapsed >= YIELD_AFTER {
            std::thread::yield_now();
        }
        true
    }
}

/// How [`Spin::wait_word`] polls and sleeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitPlan {
    /// Yield the CPU once before the first poll: the other side is known to
    /// share this CPU, and needs it to answer.
    pub yield_at_once: bool,
    /// The first and the longest sleep between checks of the other side.
    pub slices: (Duration, Duration),
}

/// How long a poll spins on the CPU before it yields between polls.
pub(crate) const YIELD_AFTER: Duration = Duration::from_micros(2);

/// The bounds of a wait for another process's next message (a socket's
/// frame, a manager lane's turn, a request on any lane): it usually comes
/// within microseconds, while waking a sleeper on another CPU costs
/// 20–50 µs on this project's VMs; the budget adapts per object, so a
/// waiter whose peer is slow (or shares its CPU) soon stops polling.
pub(crate) const PEER_SPIN: Spin =
    Spin { start_ns: 10_000, min_ns: 500, max_ns: 50_000, probe_ns: 30_000, probe_every: 64 };

impl Spin {
    /// Starts a wait on the object whose budget is `budget_ns` (0: new).
    pub(crate) fn begin(&self, budget_ns: &AtomicU32) -> Attempt {
        // ORDERING: Relaxed (here and in `end`): the budget is a tuning hint
        // with no bearing on correctness.
        let budget = match budget_ns.load(Ordering::Relaxed) {
            0 => self.start_ns,
            b => b,
        };
        let probing = budget <= self.min_ns
            && FLOOR_HITS.with(|n| {
                n.set(n.get().wrapping_add(1));
                n.get() % self.probe_every == 0
            });
        let limit = Duration::from_nanos(u64::from(if probing { self.probe_ns } else { budget }));
        Attempt { budget, probing, limit, start: Instant::now() }
    }

    /// Adapts the budget after `attempt`: `won` if polling ended the wait.
    pub(crate) fn end(&self, budget_ns: &AtomicU32, attempt: &Attempt, won: bool) {
        let next = if won {
            if attempt.probing { self.probe_ns } else { attempt.budget.saturating_mul(2).min(self.max_ns) }
        } else {
            (attempt.budget / 2).max(self.min_ns)
        };
        if next != attempt.budget || budget_ns.load(Ordering::Relaxed) == 0 {
            budget_ns.store(next, Ordering::Relaxed);
        }
    }
}

/// Spins between clock reads in [`Spin::wait_word`] (a read costs more
/// than a load of the word).
const LOADS_PER_CLOCK_READ: u32 = 32;

impl Spin {
    /// Polls until `found()` within the adaptive budget kept in `budget_ns`,
    /// reading the clock once every `per_clock_read` polls (yielding the CPU
    /// between polls after the first microseconds, see
    /// [`Attempt::keep_polling`]), and adapts the budget. True if `found()`
    /// came true.
    pub(crate) fn poll(&self, budget_ns: &AtomicU32, per_clock_read: u32, mut found: impl FnMut() -> bool) -> bool {
        let attempt = self.begin(budget_ns);
        let mut polls = 0u32;
        let won = loop {
            if found() {
                break true;
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(per_clock_read) && !attempt.keep_polling() {
                break false;
            }
            std::hint::spin_loop();
        };
        self.end(budget_ns, &attempt, won);
        won
    }

    /// Waits until `ready(word)`: polls the word within the adaptive budget
    /// kept in `budget_ns` (yielding the CPU between polls after the first
    /// microseconds, see [`Attempt::keep_polling`], and once before the first
    /// poll if `how.yield_at_once`), then sleeps on it as a futex. Before
    /// sleeping it sets `sleeping` (a bit `ready` ignores) in the word, so the
    /// other side, which makes the word ready with [`wake_word`], knows to
    /// wake it.
    /// The sleep is cut into slices, from `how.slices.0` doubling up to
    /// `how.slices.1`; after each one, `between` may end the wait with an error
    /// (the other side died, say) — unless the word became ready meanwhile.
    /// Returns the word's ready value.
    pub(crate) fn wait_word<E>(
        &self,
        budget_ns: &AtomicU32,
        word: &AtomicU32,
        ready: impl Fn(u32) -> bool,
        sleeping: u32,
        how: WaitPlan,
        mut between: impl FnMut() -> Result<(), E>,
    ) -> Result<u32, E> {
        let mut value = 0;
        if how.yield_at_once {
            std::thread::yield_now();
        }
        let polled = self.poll(budget_ns, LOADS_PER_CLOCK_READ, || {
            // ORDERING: Acquire pairs with the waker's release in
            // `wake_word`: what it wrote before is visible after.
            value = word.load(Ordering::Acquire);
            ready(value)
        });
        if polled {
            return Ok(value);
        }
        let mut slice = how.slices.0;
        loop {
            // ORDERING: as above.
            let value = word.load(Ordering::Acquire);
            if ready(value) {
                return Ok(value);
            }
            // ORDERING: Acquire on failure to re-read the word; AcqRel on
            // success so the waker's swap sees the bit (one order on the word).
            let flagged = value | sleeping;
            if value != flagged && word.compare_exchange(value, flagged, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            if futex::wait(word, flagged, Deadline::after(slice)) == FutexWait::TimedOut {
                slice = (slice * 2).min(how.slices.1);
                if let Err(e) = between() {
                    // ORDERING: as above.
                    let value = word.load(Ordering::Acquire);
                    return if ready(value) { Ok(value) } else { Err(e) };
                }
            }
        }
    }
}

/// Sets `word` to `value` (publishing what was written before) and wakes
/// the other side if it sleeps in [`Spin::wait_word`] with `sleeping` set.
pub(crate) fn wake_word(word: &AtomicU32, value: u32, sleeping: u32) {
    // ORDERING: AcqRel: Release publishes our writes to the waiter's
    // Acquire load; Acquire orders us after its setting of the bit.
    if word.swap(value, Ordering::AcqRel) & sleeping != 0 {
        futex::wake(word, 1);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const SPIN: Spin = Spin { start_ns: 1000, min_ns: 64, max_ns: 4000, probe_ns: 2000, probe_every: 4 };

    #[test]
    fn the_budget_grows_on_success_and_shrinks_on_failure() {
        let budget = AtomicU32::new(0);
        let a = SPIN.begin(&budget);
        assert_eq!(a.limit, Duration::from_nanos(1000));
        SPIN.end(&budget, &a, true);
        assert_eq!(budget.load(Ordering::Relaxed), 2000);
        for _ in 0..10 {
            let a = SPIN.begin(&budget);
            SPIN.end(&budget, &a, true);
        }
        assert_eq!(budget.load(Ordering::Relaxed), 4000);
        for _ in 0..10 {
            let a = SPIN.begin(&budget);
            SPIN.end(&budget, &a, false);
        }
        assert_eq!(budget.load(Ordering::Relaxed), 64);
        // At the floor, one wait in four probes.
        let probes = (0..8).filter(|_| SPIN.begin(&budget).probing).count();
        assert_eq!(probes, 2);
    }
}
