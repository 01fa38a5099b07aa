//! `Barrier`: a meeting point for a fixed number of parties.
//!
//! # Algorithm (maintainer's notes)
//!
//! One futex word packs the arrivals of the current round (bits 0–15), the
//! outcomes of the last [`HISTORY_LEN`](word::HISTORY_LEN) rounds (bits 16–22), the round's
//! generation (bits 23–30) and a broken flag (bit 31). An arriving party
//! CASes the count up; the last one sets the count to `parties` (passing),
//! runs the action, then CASes to the next generation with a count of 0 and
//! wakes everyone. Both a pass and a `reset` end the round: the generation
//! goes up by 1 and the outcome (1: passed, 0: reset) is shifted into the
//! history. A waiter that sees the generation move by `k` reads its own
//! round's outcome `k − 1` places back in the history. It cannot rely on
//! seeing only one move: after a `reset` it is no longer a party, so other
//! parties may pass new rounds before it looks (and after its own pass, a
//! `reset` and new rounds may follow). A waiter that slept through more
//! than [`HISTORY_LEN`](word::HISTORY_LEN) rounds asks two counters instead: `reset` counts
//! itself in `resets_begun` before its CAS and in `resets_done` after. A
//! waiter reads `resets_done` before it arrives; if `resets_begun` still
//! equals it when the waiter looks, no reset ended a round since it
//! arrived, so its round passed. Otherwise it cannot tell, and reports the
//! barrier broken. The generation has only 8 bits: a waiter that slept
//! through 256 rounds would find its own generation again, so every round's
//! end is also counted in the 32-bit `rounds_ended` (after its CAS). A
//! waiter reads it before it arrives; once it has moved by more than
//! [`WRAP_SUSPECT`], the waiter's round is surely over (only threads caught
//! between their CAS and their count can make the counter lag), and the
//! waiter goes by the reset counters. A timeout or `abort` sets the broken
//! flag, which fails every wait until `reset`.
//!
//! A pass in progress (count ≥ parties, not broken) has a completer that
//! nobody else can finish for: if it dies, nothing would ever advance or
//! wake the word. So a party that may arrive last (it sees `parties − 1`
//! arrivals) first takes `passing`, a robust mutex ([`RawMutex`], which
//! records its holder's tid and start time), and holds it until its pass is
//! over (advanced, or found broken or reset). Only a holder of `passing`
//! can bring the count to `parties`, and a live holder cannot lose it:
//! while a pass is in progress, its completer holds `passing` or died
//! holding it. Waiters sleep at most [`LOST_WAKE_EVERY`] at a time; after a
//! slice without a change during a pass, a waiter tries to take `passing`
//! without waiting (a free one, or one whose holder is gone, a zombie, or
//! a recycled tid; see `RawMutex`). If it gets it and a pass is still in
//! progress, the completer is dead, and the waiter breaks the barrier. A
//! party killed inside `RawMutex::lock` has not arrived: no pass is in
//! progress, and the next candidate takes `passing` over by the mutex's own
//! rules. Serialising completers also means an action never starts while
//! the action of a reset or aborted round still runs (in Python, too, the
//! action runs under the barrier's lock). What stays unnoticed (a party
//! that dies before it arrives or while it waits for the others) is listed
//! in `Barrier`'s docs.
//!
//! The action is never in shared memory (another process could point it
//! anywhere): each handle carries it in its own process's memory, and it
//! travels to another process inside the handle's message, as a code offset
//! checked against the build, like a task's function.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::LOST_WAKE_EVERY;
use super::error::BarrierError;
use crate::code::{code_address, code_offset};
use crate::memory::raw_mutex::RawMutex;
use crate::memory::segment::{Shared, SharedObject};
use crate::sys::Deadline;
use crate::sys::imp;
use crate::sys::imp::futex::{self, FutexWait};
use crate::wire::de_error;

mod word;

use word::{Arrival, BROKEN, COUNT_MASK, WRAP_SUSPECT, advanced, generation, outcome};

/// The shared part of a [`Barrier`].
#[derive(Debug)]
#[repr(C)]
pub(crate) struct BarrierState {
    tag: AtomicU64,
    word: AtomicU32,
    parties: AtomicU32,
    /// Resets that began (counted before their CAS of `word`).
    resets_begun: AtomicU32,
    /// Resets that ended (counted after their CAS of `word`).
    resets_done: AtomicU32,
    /// Rounds that ended, by a pass or a reset (counted after their CAS).
    rounds_ended: AtomicU32,
    /// Held by the party that may complete the current round, until its
    /// pass is over (see the module notes).
    passing: RawMutex,
}

// SAFETY: repr(C) atomics only (`RawMutex` is atomics too, unlocked when
// all-zero); all-zero is a fresh barrier (its parties are set at creation);
// `tag` is a field.
unsafe impl SharedObject for BarrierState {
    const TAG: u64 = u64::from_le_bytes(*b"mp.Barr\0");
    fn tag(&self) -> &AtomicU64 {
        &self.tag
    }
}

impl BarrierState {
    /// Counts a round that just ended (after the CAS that ended it).
    fn count_round_ended(&self) {
        // ORDERING: SeqCst: see the module notes.
        self.rounds_ended.fetch_add(1, Ordering::SeqCst);
    }
}

fn build_hash() -> u64 {
    crate::code::fnv1a(&[imp::build_id::build_id()])
}

/// A barrier for a fixed number of parties, in any mix of processes and
/// threads (Python's `multiprocessing.Barrier`).
///
/// [`wait`](Barrier::wait) blocks until `parties` parties are waiting, then
/// releases them all; each gets a distinct index in `0..parties`. An
/// optional action (a plain `fn`, since it may run in any process) runs once
/// per pass, in the last party to arrive, before the others are released.
/// A timeout, [`abort`](Barrier::abort) or a panicking action breaks the
/// barrier for every party until [`reset`](Barrier::reset).
///
/// **Robust to a completing party that dies**: if the last party to arrive
/// dies (killed, crashed, or its thread ends) before its pass is over, for
/// instance while it runs the action, the barrier breaks. Every party
/// waiting for that pass, or arriving meanwhile, gets
/// [`BarrierError::Broken`] within about half a second, from
/// [`wait`](Barrier::wait) as from [`wait_timeout`](Barrier::wait_timeout).
/// Actions never overlap: the action of a round that was reset or aborted
/// while it ran delays the next pass until it returns (as in Python).
///
/// **Not promised**: a barrier knows its parties only when they arrive.
/// - A party that dies before it arrives leaves the others waiting (use
///   [`wait_timeout`](Barrier::wait_timeout)).
/// - A party that dies after it arrived, while it waits for the others,
///   still counts as arrived: the round passes when the others arrive,
///   without it (as in Python; a [`manager::Barrier`](crate::manager::Barrier),
///   whose manager sees its client go, breaks instead); the next round
///   then lacks it.
/// - A completer in another pid namespace, or hidden from this process's
///   `/proc` (`hidepid`), is never taken for dead: waits then end only at
///   their timeout.
/// - The action must not wait on its own barrier: that wait would wait for
///   its own pass to end.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Barrier, Process};
///
/// fn party(b: Barrier) -> usize { b.wait_timeout(Duration::from_secs(10)).unwrap() }
///
/// let b = Barrier::new(3).unwrap();
/// let mut kids: Vec<_> = (0..2).map(|_| Process::spawn(party, (b.clone(),)).unwrap()).collect();
/// let mine = b.wait_timeout(Duration::from_secs(10)).unwrap();
/// let mut all: Vec<usize> = kids.iter_mut().map(|k| k.join().unwrap()).collect();
/// all.push(mine);
/// all.sort();
/// assert_eq!(all, [0, 1, 2]);
/// ```
#[derive(Clone)]
pub struct Barrier {
    state: Shared<BarrierState>,
    /// The action, in this process's memory (see the module notes).
    action: Option<fn()>,
}

/// A barrier's action as it travels in a message.
#[derive(Serialize, Deserialize)]
struct ActionRef {
    /// Code offset of the `fn()`.
    offset: i64,
    /// Hash of the build id of the process that sent it.
    build: u64,
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let action = self.action.map(|f| ActionRef { offset: code_offset(f as *const ()), build: build_hash() });
        (&self.state, action).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (state, action) = <(Shared<BarrierState>, Option<ActionRef>)>::deserialize(d)?;
        let action = match action {
            None => None,
            Some(a) if a.build == build_hash() => {
                // SAFETY: the offset was made by `code_offset` of a `fn()` in a
                // process of this same build (checked just above), and it came
                // in a message, as a task's function does, never from shared
                // memory; so it resolves to that function here.
                Some(unsafe { std::mem::transmute::<*const (), fn()>(code_address(a.offset)) })
            }
            Some(_) => {
                return Err(de_error("the barrier's action was set by a different build of this program"));
            }
        };
        Ok(Barrier { state, action })
    }
}

impl Barrier {
    /// A barrier for `parties` parties (1 to 65535).
    ///
    /// # Errors
    ///
    /// `parties` out of range, or the OS refused the memory.
    pub fn new(parties: usize) -> io::Result<Barrier> {
        Barrier::create(parties, None)
    }

    /// A barrier whose `action` runs once per pass, in the last party to
    /// arrive (in whatever process that is), before any party is released.
    ///
    /// # Errors
    ///
    /// As [`Barrier::new`].
    pub fn with_action(parties: usize, action: fn()) -> io::Result<Barrier> {
        Barrier::create(parties, Some(action))
    }

    fn create(parties: usize, action: Option<fn()>) -> io::Result<Barrier> {
        if parties == 0 || parties > COUNT_MASK as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a barrier has 1 to 65535 parties"));
        }
        let state = Shared::create("multiproc-barrier", |s: &BarrierState| {
            // ORDERING: Relaxed: published with the tag (see `Shared::place`).
            s.parties.store(parties as u32, Ordering::Relaxed);
        })?;
        Ok(Barrier { state, action })
    }

    /// Waits for the other parties; returns this party's index (the last
    /// to arrive gets `parties − 1`).
    ///
    /// # Errors
    ///
    /// [`BarrierError::Broken`] if the barrier is or becomes broken (also
    /// when the party completing the pass dies before it is over), or this
    /// party's round is [`reset`](Barrier::reset) before it passes (also when the party wakes only after more than 7 later rounds and
    /// resets happened meanwhile: its own round's outcome is then unknown).
    pub fn wait(&self) -> Result<usize, BarrierError> {
        self.wait_until(Deadline::NEVER)
    }

    /// As [`wait`](Barrier::wait), for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`BarrierError::Timeout`] after the timeout (the barrier is then
    /// broken for every party), [`BarrierError::Broken`] as for `wait`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize, BarrierError> {
        self.wait_until(Deadline::after(timeout))
    }

    fn wait_until(&self, deadline: Deadline) -> Result<usize, BarrierError> {
        let s = &*self.state;
        let parties = self.checked_parties()?;
        // `passing`, held while this party may be the last to arrive
        // (released by dropping it).
        let mut held = None;
        loop {
            // ORDERING: Acquire: pairs with the Release of the word changes
            // made by other parties (arrivals, passes, breaks).
            let w = s.word.load(Ordering::Acquire);
            if w & BROKEN != 0 {
                return Err(BarrierError::Broken);
            }
            let count = w & COUNT_MASK;
            if count >= parties {
                held = None;
                // The action of a pass is running; the next pass starts after it.
                if self.sleep(w, parties, deadline) {
                    // Still passing: break it; passed meanwhile: arrive in the next pass.
                    self.break_if_still(generation(w))?;
                }
                continue;
            }
            let last = count + 1 == parties;
            if !last {
                held = None;
            } else if held.is_none() {
                held = self.lock_passing(w, deadline)?;
                continue; // look again, holding it
            }
            // ORDERING: SeqCst, before the arrival: no reset that ends this
            // party's round is counted here (see the module notes).
            let resets_done = s.resets_done.load(Ordering::SeqCst);
            // ORDERING: SeqCst: as above (a count, compared later).
            let rounds_ended = s.rounds_ended.load(Ordering::SeqCst);
            // ORDERING: AcqRel: an arrival publishes what this party did
            // before it (Release) and the last arrival sees what all did
            // (Acquire), so the action and the released parties see it too.
            if s.word.compare_exchange(w, w + 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            if last {
                // `held` is `passing`, released when this returns.
                self.pass(w + 1)?;
                return Ok(count as usize);
            }
            let arrival = Arrival { generation: generation(w), resets_done, rounds_ended };
            return self.await_pass(arrival, parties, deadline).map(|()| count as usize);
        }
    }

    /// The number of parties, as the shared state says; a value that
    /// `create` cannot have written breaks every wait.
    fn checked_parties(&self) -> Result<u32, BarrierError> {
        // ORDERING: Relaxed: set once at creation.
        let parties = self.state.parties.load(Ordering::Relaxed);
        if parties == 0 || parties > COUNT_MASK { Err(BarrierError::Broken) } else { Ok(parties) }
    }

    /// Takes `passing` before arriving last, from the word `w`. `Ok(None)`
    /// if the deadline passed first while the round moved on (the caller
    /// looks again).
    ///
    /// # Errors
    ///
    /// [`BarrierError::Timeout`] (the barrier is then broken) or
    /// [`BarrierError::Broken`], as [`Barrier::break_if_still`].
    fn lock_passing(&self, w: u32, deadline: Deadline) -> Result<Option<PassingHeld<'_>>, BarrierError> {
        let passing = &self.state.passing;
        loop {
            // In slices: an `abort` or a reset wakes the word, not this
            // lock, and must not wait for the holder's action to return.
            match passing.lock(deadline.at_most(LOST_WAKE_EVERY)) {
                // A dead previous holder is no concern here: if its pass is
                // still in progress, the caller sees it and waits like the
                // others, who break the barrier.
                Ok(_) => return Ok(Some(PassingHeld(passing))),
                // Held all along: by the completer of a round reset or
                // aborted while its action runs (or by a dead one the lock
                // cannot tell).
                Err(_) if deadline.expired() => return self.break_if_still(generation(w)).map(|()| None),
                Err(_) => {
                    // ORDERING: Acquire: as the word's loads in `wait_until`.
                    let now = self.state.word.load(Ordering::Acquire);
                    if now & BROKEN != 0 {
                        return Err(BarrierError::Broken);
                    }
                    if now != w {
                        return Ok(None); // the round moved on: look again
                    }
                }
            }
        }
    }

    /// The last arrival (holding `passing`): run the action, open the next
    /// generation, wake all.
    fn pass(&self, full: u32) -> Result<(), BarrierError> {
        let s = &*self.state;
        if let Some(action) = self.action {
            let breaker = BreakOnUnwind(self);
            action();
            std::mem::forget(breaker);
        }
        let mut cur = full;
        loop {
            if cur & BROKEN != 0 || generation(cur) != generation(full) {
                return Err(BarrierError::Broken);
            }
            // ORDERING: Release: the parties released by this change see the
            // action's effects.
            match s.word.compare_exchange(cur, advanced(cur, true), Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        s.count_round_ended();
        futex::wake_all(&s.word);
        Ok(())
    }

    fn await_pass(&self, arrival: Arrival, parties: u32, deadline: Deadline) -> Result<(), BarrierError> {
        let s = &*self.state;
        // ORDERING: SeqCst: a count (see the module notes).
        let long_ago = || s.rounds_ended.load(Ordering::SeqCst).wrapping_sub(arrival.rounds_ended) > WRAP_SUSPECT;
        loop {
            // ORDERING: Acquire: pairs with the Release of `pass`.
            let w = s.word.load(Ordering::Acquire);
            // ORDERING: SeqCst: the Acquire load of `word` above saw the CAS
            // of any reset that ended this round, so its `resets_begun`
            // increment (before that CAS) is visible here.
            let no_reset_since = || s.resets_begun.load(Ordering::SeqCst) == arrival.resets_done;
            if let Some(passed) = outcome(w, arrival, long_ago(), no_reset_since) {
                return if passed { Ok(()) } else { Err(BarrierError::Broken) };
            }
            if w & BROKEN != 0 {
                return Err(BarrierError::Broken);
            }
            if self.sleep(w, parties, deadline) {
                if long_ago() {
                    continue; // not this round any more, whatever its generation
                }
                match self.break_if_still(arrival.generation) {
                    // The pass happened just in time: look again.
                    Ok(()) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Sleeps while the word is `w`, for at most [`LOST_WAKE_EVERY`]: if the
    /// completer of a pass dies, nothing wakes its waiters. After a slice
    /// in which `w`, a pass in progress, did not change, breaks the barrier
    /// if its completer died. Returns true once `deadline` has passed.
    fn sleep(&self, w: u32, parties: u32, deadline: Deadline) -> bool {
        let s = &*self.state;
        if futex::wait(&s.word, w, deadline.at_most(LOST_WAKE_EVERY)) == FutexWait::Retry {
            return false;
        }
        // ORDERING: Relaxed: a hint; `break_if_completer_died` decides.
        if w & COUNT_MASK >= parties && s.word.load(Ordering::Relaxed) == w {
            self.break_if_completer_died(parties);
        }
        deadline.expired()
    }

    /// Breaks the barrier if a pass is in progress and its completer is
    /// dead: then `passing` is free or held by a dead thread (see the
    /// module notes). Never waits for a live holder.
    #[cold]
    fn break_if_completer_died(&self, parties: u32) {
        let s = &*self.state;
        // An expired deadline: `RawMutex::lock` takes a free lock, or one
        // whose holder is dead, and otherwise gives up at once.
        if s.passing.lock(Deadline::after(Duration::ZERO)).is_err() {
            return; // the completer lives (its action runs)
        }
        let _held = PassingHeld(&s.passing);
        // Taking `passing` (Acquire) made a live completer's whole pass,
        // which ends before it releases `passing`, visible: a pass in
        // progress seen now is a dead one's. No pass in progress (any
        // more): the word is left as it is.
        let _ = self.break_unless(|w| w & BROKEN != 0 || w & COUNT_MASK < parties);
    }

    /// On a timeout: breaks the barrier unless generation `g` has passed
    /// (then `Ok`, and the caller looks again).
    fn break_if_still(&self, g: u32) -> Result<(), BarrierError> {
        match self.break_unless(|w| generation(w) != g || w & BROKEN != 0) {
            Ok(()) => Err(BarrierError::Timeout),
            Err(w) if generation(w) != g => Ok(()),
            Err(_) => Err(BarrierError::Broken),
        }
    }

    /// Sets the broken flag and wakes every waiter, unless `leave` says to
    /// leave the word as it is (asked of each value the exchange finds):
    /// `Ok` if it broke the barrier, else `Err` with the word it left.
    fn break_unless(&self, leave: impl Fn(u32) -> bool) -> Result<(), u32> {
        let s = &*self.state;
        // ORDERING: Relaxed: steers the CAS.
        let mut w = s.word.load(Ordering::Relaxed);
        loop {
            if leave(w) {
                return Err(w);
            }
            // ORDERING: Release: pairs with the waiters' Acquire loads.
            match s.word.compare_exchange(w, w | BROKEN, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        futex::wake_all(&s.word);
        Ok(())
    }

    /// Breaks the barrier: every current and future wait fails with
    /// [`BarrierError::Broken`] until [`reset`](Barrier::reset).
    pub fn abort(&self) {
        // ORDERING: Release: pairs with the waiters' Acquire loads.
        self.state.word.fetch_or(BROKEN, Ordering::Release);
        futex::wake_all(&self.state.word);
    }

    /// Returns the barrier to its empty state; parties waiting now get
    /// [`BarrierError::Broken`].
    pub fn reset(&self) {
        let s = &*self.state;
        // ORDERING: SeqCst: see the module notes and `await_pass`.
        s.resets_begun.fetch_add(1, Ordering::SeqCst);
        // ORDERING: Relaxed: steers the CAS.
        let mut w = s.word.load(Ordering::Relaxed);
        loop {
            // ORDERING: SeqCst: Release pairs with the waiters' Acquire
            // loads; SeqCst orders it between the two counters.
            match s.word.compare_exchange_weak(w, advanced(w, false), Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        // ORDERING: SeqCst: see the module notes.
        s.resets_done.fetch_add(1, Ordering::SeqCst);
        s.count_round_ended();
        futex::wake_all(&s.word);
    }

    /// The number of parties needed to pass.
    pub fn parties(&self) -> usize {
        // ORDERING: Relaxed: set once at creation.
        self.state.parties.load(Ordering::Relaxed) as usize
    }

    /// How many parties are waiting now (a snapshot).
    pub fn n_waiting(&self) -> usize {
        // ORDERING: Relaxed: a snapshot.
        let w = self.state.word.load(Ordering::Relaxed);
        ((w & COUNT_MASK) as usize).min(self.parties())
    }

    /// True if the barrier is broken (Python's `broken`).
    pub fn broken(&self) -> bool {
        // ORDERING: Relaxed: a snapshot.
        self.state.word.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// Old name of [`Barrier::broken`].
    #[deprecated(since = "0.1.0", note = "use `broken`, Python's name")]
    pub fn is_broken(&self) -> bool {
        self.broken()
    }
}

/// Holds a barrier's `passing` lock; releases it when dropped (also when
/// the action panics).
struct PassingHeld<'a>(&'a RawMutex);

impl Drop for PassingHeld<'_> {
    fn drop(&mut self) {
        // Only this thread's own hold: a hold taken over meanwhile (which
        // takes this thread's death) is left alone.
        self.0.unlock_if_owned();
    }
}

/// Breaks the barrier if the action panics, so that no party waits for ever.
struct BreakOnUnwind<'a>(&'a Barrier);

impl Drop for BreakOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}
