//! Blocking on top of the lock-free ring: spinning, futex sleeps and wake-ups,
//! bounded-queue room and joinable-queue task counts.
//!
//! Sleeping follows one protocol everywhere (a Dekker handshake through
//! SeqCst operations): a sleeper registers (an entry with its thread id and
//! a bit in `occupied`), reads the futex word, checks its condition, and
//! sleeps only if the condition is false. A waker first makes the condition
//! true, then reads `occupied`, and only if it is non-zero bumps the word and
//! wakes. Either the sleeper sees the new state, or the waker sees the
//! sleeper; the fast path never makes a system call. Entries of sleepers that
//! were killed are freed by wakers that keep waking nobody (see [`Sleepers`]).

use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use super::layout::{Header, SLEEPER_SLOTS, Sleepers};
use super::ring::{Got, LIVENESS_DELAY, Payload, Pushed, Ring, Step, Watch, owner_gone};
use crate::sync::LOST_WAKE_EVERY;
use crate::sys::Deadline;
use crate::sys::imp::futex::{self, FutexWait};
use crate::sys::imp::thread::current_tid;

/// Spin for 1, 2, 4 … 2^SPIN_STEPS iterations, then yield YIELD_STEPS times,
/// then sleep.
const SPIN_STEPS: u32 = 7;
const YIELD_STEPS: u32 = 12;

/// Values of the header's `closed` word: shut down (puts fail, gets drain
/// what is left), and shut down immediately (gets fail too).
const SHUT_DOWN: u32 = 1;
const SHUT_DOWN_NOW: u32 = 2;

/// The nap of [`Backoff::wait`] once spinning and yielding are done.
const NAP: Duration = Duration::from_micros(50);

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

    /// Waits a little: spins and yields first, then naps (for waits on
    /// another thread that has no wake-up to give).
    pub(super) fn wait(&mut self) {
        if !self.snooze() {
            std::thread::sleep(NAP);
        }
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

/// How often a thread in `join` looks for slots of consumers that died
/// holding them (see [`Ring::reclaim_dead_takers`]), and how long a thread
/// waiting for room sleeps before it looks at the room again.
const RECLAIM_EVERY: Duration = Duration::from_millis(20);

/// Paces [`Ring::reclaim_dead_takers`] for all the threads of this process
/// that wait in `join` on one queue: due at the first call, then at most
/// every [`RECLAIM_EVERY`]. The look reads every slot of the head segment
/// (up to thousands of cache lines that consumers are writing): many
/// threads waiting would otherwise pay for it again and again, and slow down
/// the consumers.
#[derive(Debug)]
pub(super) struct ReclaimPacer {
    since: Instant,
    /// Nanoseconds after `since` when the next look is due.
    next: AtomicU64,
}

impl ReclaimPacer {
    pub(super) fn new() -> ReclaimPacer {
        ReclaimPacer { since: Instant::now(), next: AtomicU64::new(0) }
    }

    /// True when this caller should look now (one caller per period).
    fn due(&self) -> bool {
        let now = self.since.elapsed().as_nanos() as u64;
        // ORDERING: Relaxed: a rate limit, no data hangs on it; the CAS picks
        // one caller per period.
        let next = self.next.load(Relaxed);
        now >= next && self.next.compare_exchange(next, now + RECLAIM_EVERY.as_nanos() as u64, Relaxed, Relaxed).is_ok()
    }
}

/// Futile wakes after which a waker looks for dead sleepers.
const FUTILE_SCAN: u32 = 32;
/// How long a consumer waits, once done spinning, for another consumer that
/// holds the head slot (it was descheduled between two instructions).
const CONSUMER_NAP: Duration = Duration::from_micros(50);
/// How often an unregistered sleeper (all entries taken) re-checks.
const POLL: Duration = Duration::from_millis(1);

/// A sleeper's entry in a [`Sleepers`]; unregisters on drop.
struct Registration<'a> {
    sleepers: &'a Sleepers,
    index: usize,
    tid: u32,
}

impl Registration<'_> {
    fn new(sleepers: &Sleepers, tid: u32) -> Option<Registration<'_>> {
        let start = tid as usize % SLEEPER_SLOTS;
        for k in 0..SLEEPER_SLOTS {
            let index = (start + k) % SLEEPER_SLOTS;
            let entry = &sleepers.tids[index];
            // ORDERING: Relaxed load (a hint), AcqRel CAS: claims the entry.
            if entry.load(Relaxed) == 0 && entry.compare_exchange(0, tid, AcqRel, Relaxed).is_ok() {
                // ORDERING: SeqCst: the sleeper's announcement in the handshake.
                sleepers.occupied.fetch_or(1 << index, SeqCst);
                return Some(Registration { sleepers, index, tid });
            }
        }
        None
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // Bit first, entry second: an entry is only reused once its bit is clear.
        // ORDERING: SeqCst: leaves the handshake; Release on the entry hands it on.
        self.sleepers.occupied.fetch_and(!(1 << self.index), SeqCst);
        let _ = self.sleepers.tids[self.index].compare_exchange(self.tid, 0, Release, Relaxed);
    }
}

/// Sleeps on `word` (expected to hold what it held before `ready()` was
/// checked) as a registered sleeper of `s`, until woken, `ready()` holds, or
/// `deadline` passes.
fn sleep_on(s: &Sleepers, word: &AtomicU32, deadline: Deadline, ready: impl Fn() -> bool) {
    let registration = Registration::new(s, current_tid());
    // ORDERING: SeqCst: the sleeper half of the handshake (after registering).
    let seen = word.load(SeqCst);
    if ready() {
        return;
    }
    let until = match &registration {
        Some(_) => deadline,
        // No entry free: nobody will wake us, so poll.
        None => match deadline.remaining() {
            Some(left) if left < POLL => deadline,
            _ => Deadline::after(POLL),
        },
    };
    let _: FutexWait = futex::wait(word, seen, until);
    drop(registration);
}

/// Sleeps on `s.seq`.
fn sleep(s: &Sleepers, deadline: Deadline, ready: impl Fn() -> bool) {
    sleep_on(s, &s.seq, deadline, ready);
}

/// Wakes `count` sleepers of `s`, if any is registered (the waker half of the
/// handshake).
fn wake(hdr: &Header, s: &Sleepers, count: u32) {
    // ORDERING: SeqCst: ordered after the caller's SeqCst change of state.
    if s.occupied.load(SeqCst) != 0 {
        // ORDERING: SeqCst: a sleeper that reads the new value sees the state.
        s.seq.fetch_add(1, SeqCst);
        if futex::wake(&s.seq, count) == 0 {
            futile(hdr, s);
        }
    }
}

/// Counts a wake that woke nobody; every [`FUTILE_SCAN`] of them, frees the
/// entries of sleepers whose threads are gone.
fn futile(hdr: &Header, s: &Sleepers) {
    // ORDERING: Relaxed: a heuristic counter.
    if s.futile.fetch_add(1, Relaxed) + 1 < FUTILE_SCAN {
        return;
    }
    s.futile.store(0, Relaxed);
    for (index, entry) in s.tids.iter().enumerate() {
        // ORDERING: Acquire: the entry's owner, as registered.
        let tid = entry.load(Acquire);
        if tid != 0 && owner_gone(hdr, tid) {
            // Bit first, entry second (as in Registration::drop). The CAS
            // frees the entry once, whoever else tries.
            // ORDERING: SeqCst / AcqRel: as in Registration::drop.
            s.occupied.fetch_and(!(1 << index), SeqCst);
            let _ = entry.compare_exchange(tid, 0, AcqRel, Relaxed);
        }
    }
}

impl Ring {
    /// Queues one serialized item.
    pub(super) fn put(&self, bytes: &[u8], timeout: Option<Duration>, block: bool) -> Result<(), PutFail> {
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        // A large item is written first, before it takes room: a producer
        // killed while writing it then holds nothing that others wait for
        // (only the blob's pages, freed with the queue). Its room (bounded
        // queues) and its task (joinable queues) are taken by `push` in the
        // step that includes the item in the queue, so no kill leaves room
        // or a task without an item.
        let payload = match Payload::for_bytes(bytes) {
            Some(payload) => payload,
            None => self.write_blob(bytes).map_err(PutFail::Io)?,
        };
        let discard = || {
            if let Payload::Blob { offset, capacity, .. } = payload {
                self.discard_blob(offset, capacity);
            }
        };
        let me = current_tid();
        let mut deadline = None;
        loop {
            // A bounded queue's room is taken in `push`, by the include of
            // the item's position. Here we only wait until there is room.
            if self.bounded()
                && let Err(e) = self.wait_for_room(&mut deadline, timeout, block)
            {
                discard();
                return Err(e);
            }
            // A shutdown while the blob was written ends this put too: after
            // an immediate one, nobody could take the item (or finish its task).
            if self.is_closed() {
                discard();
                return Err(PutFail::Closed);
            }
            match self.push(payload, me) {
                Ok(Pushed::Done) => break,
                // Taken for dead and skipped (its room went with the skip), or
                // the room was taken by another producer: wait for room again.
                Ok(Pushed::Lost | Pushed::Full) => {}
                Err(e) => {
                    discard();
                    return Err(PutFail::Io(e));
                }
            }
        }
        wake(self.header(), &self.header().not_empty.0, 1);
        // An immediate shutdown since the check above may have drained the
        // queue before the item was in: discard it as the shutdown would have.
        if self.is_shut_down_now() {
            self.drain();
        }
        Ok(())
    }

    /// Takes one item; its serialized bytes end up in `buf`. `timeout` counts
    /// from the first time the queue is found empty (no clock is read when an
    /// item is there at once). After an immediate shutdown: `Closed` at once.
    pub(super) fn get(&self, buf: &mut Vec<u8>, timeout: Option<Duration>, block: bool) -> Result<(), GetFail> {
        self.take(buf, timeout, block, false)
    }

    /// Takes the items left after an immediate shutdown and discards them,
    /// marking each one's task done (as Python's `shutdown(immediate=True)`
    /// does); returns how many.
    pub(super) fn drain(&self) -> usize {
        let mut buf = Vec::new();
        let mut n = 0;
        while self.take(&mut buf, None, false, true).is_ok() {
            if self.joinable() {
                let _ = self.task_done();
            }
            n += 1;
        }
        n
    }

    fn take(&self, buf: &mut Vec<u8>, timeout: Option<Duration>, block: bool, drain: bool) -> Result<(), GetFail> {
        let me = current_tid();
        let hdr = self.header();
        let mut backoff = Backoff::new();
        let mut watch = Watch::default();
        let mut deadline = None;
        loop {
            if !drain && self.is_shut_down_now() {
                return Err(GetFail::Closed);
            }
            match self.take_once(me, buf).map_err(GetFail::Io)? {
                Step::Item(Got::Bytes) => return Ok(()),
                // Drained items are thrown away: a large one is not read
                // (which could fail for want of memory and end the drain).
                Step::Item(Got::Blob { offset, capacity, .. }) if drain => {
                    self.discard_blob(offset, capacity);
                    return Ok(());
                }
                Step::Item(Got::Blob { offset, len, capacity }) => {
                    *buf = self.read_blob(offset, len, capacity).map_err(GetFail::Io)?;
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
                    // Bounded: `put` wakes one consumer, and if that one is
                    // killed before it takes the item, nobody else would wake
                    // this one.
                    sleep(&hdr.not_empty.0, deadline.at_most(LOST_WAKE_EVERY), || self.has_work());
                }
                Step::Blocked(blocked) => {
                    // Another thread owns the head slot. If it stays put, check
                    // that it is alive; a dead owner's slot is resolved so that
                    // the queue goes on.
                    if watch.stuck(blocked.key()) && self.resolve_dead(blocked).map_err(GetFail::Io)? {
                        self.wake_all_consumers();
                        continue;
                    }
                    let deadline = *deadline.get_or_insert_with(|| Deadline::from_timeout(timeout));
                    // A live owner is done in a few instructions: even a
                    // non-blocking get waits that long for its item.
                    if backoff.snooze() {
                        continue;
                    }
                    if !block || deadline.expired() {
                        // Giving up: first make sure the owner is alive. The
                        // watch above needs LIVENESS_DELAY within one call, so
                        // without this a dead owner would block `get_nowait`
                        // (and timeouts under that delay) for ever.
                        if self.resolve_dead(blocked).map_err(GetFail::Io)? {
                            self.wake_all_consumers();
                            continue;
                        }
                        return Err(if block { GetFail::Timeout } else { GetFail::Empty });
                    }
                    if blocked.by_consumer() {
                        // It wakes nobody when it is done: nap briefly.
                        std::thread::sleep(CONSUMER_NAP);
                        continue;
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

    /// For a put that does not wait, before its item is serialized (or a
    /// large one written): false when a bounded queue is full now. A hint:
    /// the include in `push` decides.
    pub(super) fn room_now(&self) -> bool {
        !self.bounded() || self.has_room()
    }

    /// True when a bounded queue holds fewer positions than `maxsize` (see
    /// [`Ring::positions`]; its loads are part of the not_full handshake).
    fn has_room(&self) -> bool {
        self.positions() < self.maxsize()
    }

    /// Waits until a bounded queue has room, without taking it: `push` takes
    /// it when it includes the item. `deadline` is set the first time the
    /// queue is found full and kept across calls of one put.
    fn wait_for_room(
        &self,
        deadline: &mut Option<Deadline>,
        timeout: Option<Duration>,
        block: bool,
    ) -> Result<(), PutFail> {
        let hdr = self.header();
        let mut backoff = Backoff::new();
        loop {
            if self.is_closed() {
                return Err(PutFail::Closed);
            }
            if self.has_room() {
                return Ok(());
            }
            let deadline = *deadline.get_or_insert_with(|| Deadline::from_timeout(timeout));
            if block && backoff.snooze() {
                continue;
            }
            // Room held by a consumer that died comes back without help: a
            // consumer's room goes with its head move, before which it holds
            // the item's position (and the next get resolves its claim).
            if !block || deadline.expired() {
                return Err(PutFail::Full);
            }
            // In slices: a consumer killed between its head move and its
            // wake-up wakes nobody.
            sleep(&hdr.not_full.0, deadline.at_most(RECLAIM_EVERY), || self.has_room() || self.is_closed());
        }
    }

    /// A consumer's head move made room in the queue (or it freed a slot
    /// behind the head): wakes a producer waiting for room, if any. The
    /// waker half of the not_full handshake, after the SeqCst head move.
    pub(super) fn room_freed(&self) {
        if self.bounded() {
            let hdr = self.header();
            wake(hdr, &hdr.not_full.0, 1);
        }
    }

    /// Adds `delta` to the tasks of taken items (`Header::taken_tasks`, an
    /// `i32`): +1 by a consumer that claimed an item, before it moves the head
    /// past it; -1 when that claim is withdrawn.
    pub(super) fn count_taken_task(&self, delta: i32) {
        // ORDERING: AcqRel: the consumer's head move that follows (Release)
        // publishes it to whoever sees the head moved (`Ring::positions`); a
        // rise of the count never completes a join, so it wakes nobody.
        self.header().taken_tasks.0.fetch_add(delta as u32, AcqRel);
    }

    /// Marks one task done; false if none was unfinished.
    pub(super) fn task_done(&self) -> bool {
        let hdr = self.header();
        let taken = &hdr.taken_tasks.0;
        // ORDERING: SeqCst (load and CAS): the waker half of the join handshake.
        let mut was = taken.load(SeqCst) as i32;
        loop {
            // The task of a taken item, or else of one still queued (Python
            // lets `task_done` come before the `get`); none: too many calls.
            if was <= 0 && i64::from(was) + self.positions() as i64 <= 0 {
                return false;
            }
            match taken.compare_exchange_weak(was as u32, was.wrapping_sub(1) as u32, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => was = now as i32,
            }
        }
        if was <= 1 && self.unfinished() == 0 {
            // The count reached zero: a new epoch for the joiners, always
            // (one that has read the old epoch and not yet registered
            // returns when it sees the new one, even if a put raised
            // the count again meanwhile, as Python's `join` does).
            let joiners = &hdr.joiners.0;
            // ORDERING: SeqCst: the waker half of the join handshake.
            joiners.seq.fetch_add(1, SeqCst);
            if joiners.occupied.load(SeqCst) != 0 && futex::wake_all(&joiners.seq) == 0 {
                futile(hdr, joiners);
            }
        }
        true
    }

    /// Unfinished tasks: those of the items queued (their positions, see
    /// [`Ring::positions`]; read first, so that an item a consumer takes
    /// meanwhile is found in the taken count) and of the items taken and not
    /// yet marked done.
    pub(super) fn unfinished(&self) -> u32 {
        let queued = self.positions();
        // ORDERING: SeqCst: part of the join handshake's condition.
        let taken = self.header().taken_tasks.0.load(SeqCst) as i32;
        (i64::from(taken) + queued as i64).clamp(0, i64::from(u32::MAX)) as u32
    }

    /// Waits until every task is done, or the count reached zero once since
    /// the call began; false if `deadline` passed first.
    pub(super) fn join(&self, deadline: Deadline) -> bool {
        let hdr = self.header();
        let joiners = &hdr.joiners.0;
        // ORDERING: SeqCst: the sleeper half of the join handshake: the
        // epoch (bumped by each task_done that reaches zero) is read before
        // the count, and is the futex word.
        let epoch = joiners.seq.load(SeqCst);
        let done = || self.unfinished() == 0 || joiners.seq.load(SeqCst) != epoch;
        loop {
            if done() {
                return true;
            }
            // Now and then, and before giving up: tasks held by consumers
            // that died mid-get are given back.
            let expired = deadline.expired();
            if (expired || self.reclaim_pacer().due()) && self.reclaim_dead_takers().unwrap_or(false) {
                continue;
            }
            if expired {
                return false;
            }
            // Sleep in slices: the count may also reach zero without a
            // task_done (a consumer moving past the position of an item
            // whose producer died writing it), which wakes nobody.
            let until = deadline.at_most(RECLAIM_EVERY);
            sleep_on(joiners, &joiners.seq, until, done);
        }
    }

    /// True once the queue was shut down (by any handle).
    pub(super) fn is_closed(&self) -> bool {
        // ORDERING: SeqCst: shutdown() stores with SeqCst before waking;
        // sleepers check it as part of their condition.
        self.header().closed.0.load(SeqCst) != 0
    }

    /// True once the queue was shut down with `immediate`: gets fail at once.
    fn is_shut_down_now(&self) -> bool {
        // ORDERING: SeqCst: as in `is_closed`.
        self.header().closed.0.load(SeqCst) >= SHUT_DOWN_NOW
    }

    /// Shuts the queue down for every handle and wakes everyone who waits;
    /// with `immediate`, gets fail from now on even while items remain.
    pub(super) fn shutdown(&self, immediate: bool) {
        let hdr = self.header();
        // ORDERING: SeqCst: the state change of the handshake, before the
        // wakes. `fetch_max`: an immediate shutdown is never undone by a
        // later plain one.
        hdr.closed.0.fetch_max(if immediate { SHUT_DOWN_NOW } else { SHUT_DOWN }, SeqCst);
        for s in [&hdr.not_empty.0, &hdr.not_full.0] {
            // ORDERING: SeqCst: as in `wake`.
            s.seq.fetch_add(1, SeqCst);
            futex::wake_all(&s.seq);
        }
    }

    /// Wakes every sleeping consumer (after a slot was skipped, items behind it
    /// may be waiting).
    pub(super) fn wake_all_consumers(&self) {
        wake(self.header(), &self.header().not_empty.0, i32::MAX as u32);
    }
}
