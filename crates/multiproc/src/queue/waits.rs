//! Blocking on top of the lock-free ring: spinning, futex sleeps and wake-ups,
//! bounded-queue permits and joinable-queue task counts.
//!
//! Sleeping follows one protocol everywhere (a Dekker handshake through
//! SeqCst operations): a sleeper registers in `waiting`, reads `seq`, checks
//! its condition, and sleeps on `seq` only if the condition is false. A waker
//! first makes the condition true, then reads `waiting`, and only if it is
//! non-zero bumps `seq` and wakes. Either the sleeper sees the new state, or
//! the waker sees the sleeper; the fast path never makes a system call.

use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
use std::time::Duration;

use super::layout::Sleepers;
use super::ring::{Got, LIVENESS_DELAY, Payload, Pushed, Ring, Step, Watch};
use crate::sys::Deadline;
use crate::sys::imp::futex::{self, FutexWait};
use crate::sys::imp::tid::current_tid;

/// Spin for 1, 2, 4 … 2^SPIN_STEPS iterations, then yield YIELD_STEPS times,
/// then sleep.
const SPIN_STEPS: u32 = 7;
const YIELD_STEPS: u32 = 12;

/// Exponential backoff before sleeping (as in crossbeam's `Backoff`).
#[derive(Debug)]
pub(super) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff { step: 0 }
    }

    /// Waits a little; returns false once it is time to sleep instead.
    pub(super) fn snooze(&mut self) -> bool {
        if self.step < SPIN_STEPS {
            for _ in 0..1u32 << self.step {
                std::hint::spin_loop();
            }
        } else if self.step < SPIN_STEPS + YIELD_STEPS {
            std::thread::yield_now();
        } else {
            return false;
        }
        self.step += 1;
        true
    }
}

/// Why a put did not queue its item.
#[derive(Debug)]
pub(super) enum PutFail {
    Full,
    Closed,
    Io(io::Error),
}

/// Why a get returned no item.
#[derive(Debug)]
pub(super) enum GetFail {
    Empty,
    Timeout,
    Closed,
    Io(io::Error),
}

/// Sleeps on `s` until woken, `ready()` holds, or `deadline` passes.
fn sleep(s: &Sleepers, deadline: Deadline, ready: impl Fn() -> bool) {
    // ORDERING: SeqCst (all three): the sleeper half of the handshake described
    // at the top of this file.
    s.waiting.fetch_add(1, SeqCst);
    let seq = s.seq.load(SeqCst);
    if !ready() {
        let _: FutexWait = futex::wait(&s.seq, seq, deadline);
    }
    s.waiting.fetch_sub(1, SeqCst);
}

/// Wakes `count` sleepers of `s`, if any sleep (the waker half of the handshake).
fn wake(s: &Sleepers, count: u32) {
    // ORDERING: SeqCst: ordered after the caller's SeqCst change of state.
    if s.waiting.load(SeqCst) != 0 {
        // ORDERING: SeqCst: a sleeper that reads the new value sees the state.
        s.seq.fetch_add(1, SeqCst);
        futex::wake(&s.seq, count);
    }
}

impl Ring {
    /// Queues one serialized item.
    pub(super) fn put(&self, bytes: &[u8], timeout: Option<Duration>, block: bool) -> Result<(), PutFail> {
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        // A large item is written first, before the permit and the task are
        // taken: a producer killed while writing it then holds nothing that
        // others wait for (only the blob's pages, freed with the queue).
        let payload = match Payload::for_bytes(bytes) {
            Some(payload) => payload,
            None => self.write_blob(bytes).map_err(PutFail::Io)?,
        };
        let discard = || {
            if let Payload::Blob { offset, len } = payload {
                self.discard_blob(offset, len);
            }
        };
        // From here to the slot claim in `push` there are only a few
        // instructions: the window in which a kill would leak the permit.
        if self.bounded()
            && let Err(e) = self.acquire_permit(timeout, block)
        {
            discard();
            return Err(e);
        }
        if self.joinable() && !self.add_task() {
            self.release_permit();
            discard();
            return Err(PutFail::Io(io::Error::other("more than 4 billion unfinished tasks")));
        }
        let me = current_tid();
        loop {
            match self.push(payload, me) {
                Ok(Pushed::Done) => break,
                Ok(Pushed::Lost) => self.retake(),
                Err(e) => {
                    self.give_back(true);
                    discard();
                    return Err(PutFail::Io(e));
                }
            }
        }
        wake(&self.header().not_empty.0, 1);
        Ok(())
    }

    /// Takes one item; its serialized bytes end up in `buf`. `timeout` counts
    /// from the first time the queue is found empty (no clock is read when an
    /// item is there at once).
    pub(super) fn get(&self, buf: &mut Vec<u8>, timeout: Option<Duration>, block: bool) -> Result<(), GetFail> {
        let me = current_tid();
        let hdr = self.header();
        let mut backoff = Backoff::new();
        let mut watch = Watch::default();
        let mut deadline = None;
        loop {
            match self.take_once(me, buf).map_err(GetFail::Io)? {
                Step::Item(Got::Bytes) => return Ok(()),
                Step::Item(Got::Blob { offset, len }) => {
                    *buf = self.read_blob(offset, len).map_err(GetFail::Io)?;
                    return Ok(());
                }
                Step::Empty => {
                    if self.is_closed() {
                        return Err(GetFail::Closed);
                    }
                    if !block {
                        return Err(GetFail::Empty);
                    }
                    let deadline = *deadline.get_or_insert_with(|| Deadline::from_timeout(timeout));
                    if backoff.snooze() {
                        continue;
                    }
                    if deadline.expired() {
                        return Err(GetFail::Timeout);
                    }
                    sleep(&hdr.not_empty.0, deadline, || self.has_work());
                }
                Step::Blocked(blocked) => {
                    // Another thread owns the head slot. If it stays put, check
                    // that it is alive; a dead owner's slot is resolved so that
                    // the queue goes on.
                    if watch.stuck(blocked.key()) && self.resolve_dead(blocked).map_err(GetFail::Io)? {
                        self.wake_all_consumers();
                        continue;
                    }
                    if !block {
                        return Err(GetFail::Empty);
                    }
                    let deadline = *deadline.get_or_insert_with(|| Deadline::from_timeout(timeout));
                    if backoff.snooze() {
                        continue;
                    }
                    if deadline.expired() {
                        return Err(GetFail::Timeout);
                    }
                    // Sleep in short slices: the owner's commit wakes us, and
                    // between slices we check that it is alive.
                    let until = match deadline.remaining() {
                        Some(left) if left < LIVENESS_DELAY => deadline,
                        _ => Deadline::after(LIVENESS_DELAY),
                    };
                    sleep(&hdr.not_empty.0, until, || self.has_work());
                }
            }
        }
    }

    fn acquire_permit(&self, timeout: Option<Duration>, block: bool) -> Result<(), PutFail> {
        let hdr = self.header();
        let max = self.maxsize();
        let mut backoff = Backoff::new();
        let mut deadline = None;
        loop {
            if self.is_closed() {
                return Err(PutFail::Closed);
            }
            // ORDERING: SeqCst: part of the not_full handshake (the sleeper's
            // condition).
            let count = hdr.count.0.load(SeqCst);
            if count < max {
                // ORDERING: AcqRel: permits are a counter; SeqCst is not needed
                // for taking one.
                if hdr.count.0.compare_exchange(count, count + 1, AcqRel, Relaxed).is_ok() {
                    return Ok(());
                }
                continue;
            }
            if !block {
                return Err(PutFail::Full);
            }
            let deadline = *deadline.get_or_insert_with(|| Deadline::from_timeout(timeout));
            if backoff.snooze() {
                continue;
            }
            if deadline.expired() {
                return Err(PutFail::Full);
            }
            // ORDERING: SeqCst: as above.
            sleep(&hdr.not_full.0, deadline, || hdr.count.0.load(SeqCst) < max || self.is_closed());
        }
    }

    /// Gives back the permit of an item that left the queue.
    pub(super) fn release_permit(&self) {
        if self.bounded() {
            let hdr = self.header();
            // ORDERING: SeqCst: the waker half of the not_full handshake.
            let _ = hdr.count.0.fetch_update(SeqCst, SeqCst, |c| c.checked_sub(1));
            wake(&hdr.not_full.0, 1);
        }
    }

    /// Gives back what an item that will never be delivered held: its permit
    /// and its task.
    pub(super) fn give_back(&self, owed: bool) {
        if owed {
            self.release_permit();
            if self.joinable() {
                let _ = self.task_done();
            }
        }
    }

    /// Takes a permit and a task again for an item that is put once more
    /// (see [`Pushed::Lost`]).
    fn retake(&self) {
        let hdr = self.header();
        if self.bounded() {
            // ORDERING: Relaxed: a counter; the put that follows publishes the item.
            hdr.count.0.fetch_add(1, Relaxed);
        }
        if self.joinable() {
            // ORDERING: Relaxed: as above.
            hdr.unfinished.0.fetch_add(1, Relaxed);
        }
    }

    fn add_task(&self) -> bool {
        // ORDERING: SeqCst: the unfinished count is the join handshake's state.
        self.header().unfinished.0.fetch_update(SeqCst, SeqCst, |u| u.checked_add(1)).is_ok()
    }

    /// Marks one task done; false if none was unfinished.
    pub(super) fn task_done(&self) -> bool {
        let hdr = self.header();
        // ORDERING: SeqCst: the waker half of the join handshake.
        match hdr.unfinished.0.fetch_update(SeqCst, SeqCst, |u| u.checked_sub(1)) {
            Ok(1) => {
                // ORDERING: SeqCst: see above.
                if hdr.joiners.0.load(SeqCst) != 0 {
                    futex::wake_all(&hdr.unfinished.0);
                }
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Unfinished tasks.
    pub(super) fn unfinished(&self) -> u32 {
        // ORDERING: Acquire: a snapshot.
        self.header().unfinished.0.load(Acquire)
    }

    /// Waits until every task is done; false if `deadline` passed first.
    pub(super) fn join(&self, deadline: Deadline) -> bool {
        let hdr = self.header();
        loop {
            // ORDERING: SeqCst (all): the sleeper half of the join handshake; the
            // futex word is the count itself.
            if hdr.unfinished.0.load(SeqCst) == 0 {
                return true;
            }
            if deadline.expired() {
                return false;
            }
            hdr.joiners.0.fetch_add(1, SeqCst);
            let left = hdr.unfinished.0.load(SeqCst);
            if left != 0 {
                let _: FutexWait = futex::wait(&hdr.unfinished.0, left, deadline);
            }
            hdr.joiners.0.fetch_sub(1, SeqCst);
        }
    }

    /// True once `close()` was called on any handle.
    pub(super) fn is_closed(&self) -> bool {
        // ORDERING: SeqCst: close() stores with SeqCst before waking; sleepers
        // check it as part of their condition.
        self.header().closed.0.load(SeqCst) != 0
    }

    /// Closes the queue for every handle and wakes everyone who waits.
    pub(super) fn close(&self) {
        let hdr = self.header();
        // ORDERING: SeqCst: the state change of the handshake, before the wakes.
        hdr.closed.0.store(1, SeqCst);
        for s in [&hdr.not_empty.0, &hdr.not_full.0] {
            // ORDERING: SeqCst: as in `wake`.
            s.seq.fetch_add(1, SeqCst);
            futex::wake_all(&s.seq);
        }
    }

    /// Wakes every sleeping consumer (after a slot was skipped, items behind it
    /// may be waiting).
    pub(super) fn wake_all_consumers(&self) {
        wake(&self.header().not_empty.0, i32::MAX as u32);
    }
}
