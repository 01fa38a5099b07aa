//! How worker threads sleep on their queue and are woken: a thread idle
//! for want of a request sleeps on its bell until one comes; a thread
//! that waits for no request (its worker loading, a crash's backoff)
//! until its version winds down, or, while a queued request holds
//! something, a short while (see [`BatchQueue::sleep_unless_closing`]).

use std::sync::MutexGuard;

use super::{BatchQueue, State};
use crate::bell::{Bell, Ringer};

impl BatchQueue {
    /// Sleeps by `sleep` (on `bell` and whatever else the caller watches)
    /// while nothing is queued: a request that comes, or the queue closing
    /// or stopping, rings `bell`. Returns at once if a request is queued or
    /// the queue no longer accepts requests. A ring that comes after the
    /// sleep ended for another reason ends the next sleep early, no more.
    ///
    /// Returns true if the queue rang `bell`: the caller then counts as on
    /// its way to the work that rang it (a busy worker takes no batch ahead
    /// meanwhile, see [`BatchQueue::take_full`]) until it says it came,
    /// with `roused` to [`BatchQueue::next_batch`] or
    /// [`BatchQueue::pass_on`].
    #[must_use = "a rung thread must say it came (next_batch or pass_on)"]
    pub fn sleep_while_empty(&self, bell: &Bell, sleep: impl FnOnce()) -> bool {
        {
            let mut s = self.lock();
            if !s.items.is_empty() || !s.accepting || s.stopped {
                return false;
            }
            s.sleepers.push(bell.ringer());
        }
        sleep();
        let mut s = self.lock();
        let rung = match s.sleepers.iter().position(|r| r.rings(bell)) {
            Some(i) => {
                drop(s.sleepers.swap_remove(i));
                false
            }
            None => true,
        };
        drop(s);
        bell.clear();
        rung
    }

    /// Sleeps by `sleep` (on `bell` and whatever else the caller watches) a
    /// worker thread that waits for no request (its worker loading, or a
    /// crash's backoff) yet must see its version wind down at once: the
    /// queue closing or stopping, or running empty once closed, rings
    /// `bell` (a request coming does not, unless it holds something while
    /// no queued one does). Returns at once if the queue is stopped, or
    /// closed and empty. A ring that comes after the sleep ended for
    /// another reason ends the next sleep early, no more. `sleep` is told
    /// whether a queued request holds something ([`crate::Request::hold`]):
    /// its caller then sleeps a short while and sweeps the queue as it
    /// wakes (what abandoned requests hold goes back though no batch
    /// leaves).
    pub fn sleep_unless_closing(&self, bell: &Bell, sleep: impl FnOnce(bool)) {
        let holding = {
            let mut s = self.lock();
            if s.stopped || (!s.accepting && s.items.is_empty()) {
                return;
            }
            s.watchers.push(bell.ringer());
            let holding = s.items.iter().any(|p| p.held.is_some());
            if !holding {
                s.lookouts.push(bell.ringer());
            }
            holding
        };
        sleep(holding);
        let mut s = self.lock();
        s.watchers.retain(|r| !r.rings(bell));
        s.lookouts.retain(|r| !r.rings(bell));
        drop(s);
        bell.clear();
    }

    /// A worker thread woken for work it will not take (its worker died)
    /// passes the wake-up on to another idle worker thread, if work waits.
    /// `roused`: as for [`BatchQueue::next_batch`].
    pub fn pass_on(&self, roused: bool) {
        let mut s = self.lock();
        if roused {
            s.roused = s.roused.saturating_sub(1);
        }
        if !s.items.is_empty() {
            self.wake_one(s);
        }
    }

    /// Wakes one idle worker thread for queued work, after releasing the
    /// lock `s`: one waiting in `next_batch` if any, else one asleep on its
    /// bell.
    pub(super) fn wake_one(&self, mut s: MutexGuard<'_, State>) {
        if s.waiting > 0 {
            drop(s);
            self.changed.notify_one();
        } else if let Some(ringer) = s.rouse_one() {
            drop(s);
            ringer.ring();
        }
    }
}

impl State {
    /// Takes one sleeper's bell, to ring (after the lock is released).
    pub(super) fn rouse_one(&mut self) -> Option<Ringer> {
        let ringer = self.sleepers.pop()?;
        self.roused += 1;
        Some(ringer)
    }

    /// Takes every sleeper's bell, to ring (after the lock is released).
    pub(super) fn rouse_all(&mut self) -> Vec<Ringer> {
        self.roused += self.sleepers.len();
        std::mem::take(&mut self.sleepers)
    }

    /// Takes every sleeper's and watcher's bell, to ring (the queue closes
    /// or stops).
    pub(super) fn rouse_all_and_watchers(&mut self) -> Vec<Ringer> {
        let mut rung = self.rouse_all();
        rung.append(&mut self.watchers);
        rung
    }

    /// Takes the watchers' bells if the queue is closed and empty (its
    /// version winds down), to ring.
    pub(super) fn watchers_if_drained(&mut self) -> Vec<Ringer> {
        if self.accepting || !self.items.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut self.watchers)
    }
}
