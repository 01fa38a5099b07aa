//! Deadlines of async requests: one timer thread per server (started on
//! first use) fails a request whose deadline passes before its answer.
//! Blocking calls time their own wait and need none of this.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::name::Target;
use crate::slot::Slot;

/// The instant `d` after `from`. A duration past what an `Instant` can
/// hold (`Duration::MAX`, meant as "no limit") gives an instant a century
/// away instead of a panic.
pub(crate) fn after(from: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(d).or_else(|| from.checked_add(CENTURY)).unwrap_or(from)
}

struct Entry {
    at: Instant,
    seq: u64,
    slot: Weak<Slot>,
    target: Target,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stopped: bool,
    thread: Option<JoinHandle<()>>,
    /// The heap's size at which the entries of requests already answered
    /// are swept out (they leave the heap only when their time comes, and
    /// a busy server answers most requests long before their deadline).
    sweep_at: usize,
}

/// The smallest heap that is swept.
const SWEEP_LEAST: usize = 1024;

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The timer of one server.
#[derive(Default)]
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

impl Deadlines {
    pub fn new() -> Deadlines {
        Deadlines::default()
    }

    /// Fails `slot` with `DeadlineExceeded` at `at` unless answered first.
    pub fn watch(&self, at: Instant, slot: &Arc<Slot>, target: Target) {
        let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.stopped {
            return;
        }
        s.seq += 1;
        let seq = s.seq;
        if s.heap.len() >= s.sweep_at.max(SWEEP_LEAST) {
            // Amortized: the next sweep waits until the heap doubles.
            s.heap.retain(|Reverse(e)| e.slot.upgrade().is_some_and(|slot| !slot.is_done()));
            s.sweep_at = s.heap.len().saturating_mul(2);
        }
        s.heap.push(Reverse(Entry { at, seq, slot: Arc::downgrade(slot), target }));
        if s.thread.is_none() {
            let shared = Arc::clone(&self.shared);
            s.thread = std::thread::Builder::new().name("serve-deadlines".into()).spawn(move || run(&shared)).ok();
        }
        drop(s);
        self.shared.changed.notify_one();
    }

    /// Stops the timer thread.
    pub fn stop(&self) {
        let thread = {
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.stopped = true;
            s.heap.clear();
            s.thread.take()
        };
        self.shared.changed.notify_all();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn run(shared: &Shared) {
    let mut s = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    while !s.stopped {
        let now = Instant::now();
        match s.heap.peek().map(|Reverse(e)| e.at) {
            Some(at) if at <= now => {
                let Some(Reverse(e)) = s.heap.pop() else { continue };
                if let Some(slot) = e.slot.upgrade()
                    && !slot.is_done()
                {
                    slot.cancel();
                    let waited = slot.arrived.elapsed();
                    slot.complete(Err(e.target.deadline_exceeded(waited, "waiting")));
                }
            }
            Some(at) => s = shared.changed.wait_timeout(s, at - now).unwrap_or_else(|e| e.into_inner()).0,
            None => s = shared.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadlines_of_answered_requests_do_not_pile_up() {
        let deadlines = Deadlines::new();
        let later = after(Instant::now(), Duration::from_secs(3600));
        let waiting: Vec<Arc<Slot>> = (0..10).map(|_| Slot::new()).collect();
        let m = || Target::model("m".into());
        waiting.iter().for_each(|slot| deadlines.watch(later, slot, m()));
        for _ in 0..100_000 {
            // A request answered (and its slot gone) long before its deadline.
            deadlines.watch(later, &Slot::new(), m());
        }
        let len = deadlines.shared.state.lock().unwrap().heap.len();
        assert!(len <= 2 * SWEEP_LEAST, "{len} deadlines kept for 10 waiting requests");
        // The requests still waiting keep theirs.
        let soon = after(Instant::now(), Duration::from_millis(50));
        let late = Slot::new();
        deadlines.watch(soon, &late, m());
        assert!(late.wait_for(Duration::from_secs(30)).is_some_and(|r| r.is_err()));
        let s = deadlines.shared.state.lock().unwrap();
        assert!(s.heap.iter().filter(|Reverse(e)| e.slot.upgrade().is_some()).count() == 10);
        drop(s);
        deadlines.stop();
    }
}
