//! The robust mutex at the heart of `Lock`, `RLock`, `Condition`, `Value`
//! and `Array`: one futex word in shared memory, owned by a thread id.
//!
//! # Algorithm (maintainer's notes)
//!
//! `word` is 0 when free, otherwise the owner's tid. `sleepers` counts the
//! threads that may be asleep on the futex. `meta` holds the owner's tid and
//! thread start time (written by the owner right after it takes the word),
//! which tells a recycled tid from the original owner.
//!
//! - **Acquire**: CAS `0 → tid`. Contended: busy-wait (an adaptive budget,
//!   see [`SPIN`]), then count
//!   ourselves in `sleepers` and sleep on the futex (while the word still
//!   holds the owner we saw), without a kernel timer unless the caller gave
//!   a deadline.
//! - **Release**: swap to 0; wake one sleeper if `sleepers` is not 0. The
//!   swap and the load of `sleepers` are SeqCst, as are the sleeper's
//!   increment and (in the kernel) its check of the word: either the
//!   releaser sees the sleeper, or the sleeper sees the word change and does
//!   not sleep. A sleeper killed while counted only costs later releases a
//!   needless wake-up call.
//! - **Owner death**: a sleeper registers with the process's
//!   [owner watch](super::owner_watch), which asks `/proc` every [`SLICE`]
//!   whether the owner thread still exists (and is the same thread, by start
//!   time), and wakes the sleeper if not. (Without the watch, or before the
//!   owner has recorded itself, the sleeper sleeps for at most a slice and
//!   asks itself.) The sleeper then CASes the word from the dead owner's
//!   value to its own and returns [`Acquired::OwnerDied`]. The CAS fails if
//!   anything changed meanwhile, so a live owner is never robbed: the only
//!   inputs are "the word still holds that dead thread's id" and the
//!   kernel's word that the thread is gone (or a zombie, or another thread
//!   under a recycled id).
//! - **Owner killed before it recorded itself** (between its CAS and its
//!   store of `meta`): the word names a thread that `meta` does not. A
//!   waiter that sees that state unchanged for [`HALF_TAKEN_GRACE`] (a live
//!   owner records itself a few instructions after its CAS) asks `/proc`
//!   whether the thread exists; if not, it takes the lock as from a dead
//!   owner (if another thread has the tid by then, the lock stays taken and
//!   waits time out, as before). The owner's namespace is not known then, so this is skipped
//!   when the lock's last recorded owner was in another namespace; the one
//!   case it can get wrong is a lock shared across namespaces whose owner,
//!   from another namespace, is stopped for that long between its CAS and
//!   its store.
//! - **Spinning only where it can pay**: a waiter does not busy-wait when
//!   the holder is another thread on its own CPU, or when the last release
//!   happened on its CPU (a hand-over partner sharing the CPU cannot run
//!   while it spins).
//!
//! glibc owns the kernel's robust-futex list, so this does not use it (and
//! a `Lock` may be released by a thread that does not hold it, which that
//! list cannot express); detection is by polling, bounded by [`SLICE`] (a
//! waiter notices a dead owner within about 100 ms).
//!
//! Apart from that half-taken case, an owner is taken for dead only when
//! that is certain: it recorded
//! itself (`meta` names it) in our pid namespace (`pidns`), and the kernel
//! says its thread is gone (a `/proc` that hides it, `hidepid`, or cannot be
//! read counts as alive). A lock shared across pid namespaces still works; a
//! dead holder in another namespace is just never replaced (waits time out).

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::owner_watch;
use crate::spin::Spin;
use crate::sys::Deadline;
use crate::sys::imp::futex::{self, FutexWait};
use crate::sys::imp::thread::{self, ThreadIdentity, ThreadStatus};

/// Longest futex sleep before a waiter checks that the owner lives.
pub(crate) const SLICE: Duration = Duration::from_millis(100);
/// How long a lock must stay taken by a thread that has not recorded
/// itself before a waiter asks whether that thread died (see the module
/// notes).
const HALF_TAKEN_GRACE: Duration = Duration::from_secs(1);
/// The busy-wait of a contended acquire (see [`crate::spin`]).
///
/// A short critical section, or a hand-over from a process running on
/// another core, usually ends within a microsecond, while a futex sleep and
/// a wake-up from another CPU cost far more: 20–30 µs on this project's VMs,
/// which is why the ceiling is that high: a waiter that spins that long once
/// gets both sides of a hand-over back to spinning, where one pass costs
/// 0.05 µs instead of 25 (measured with `lock_handoff` on two CPUs).
///
/// The busy-wait uses plain loads, not `spin_loop` (PAUSE): under KVM a PAUSE
/// loop longer than the pause-loop-exiting window (about 4096 cycles) traps
/// to the hypervisor, which made a lock hand-over between two processes
/// 700 times slower here (35 µs instead of 0.05 µs per pass).
const SPIN: Spin = Spin { start_ns: 1000, min_ns: 64, max_ns: 50_000, probe_ns: 40_000, probe_every: 16 };

/// Bits of `meta` that hold the start time.
const START_BITS: u32 = 40;

/// How an acquisition went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Taken from a previous owner that released it.
    Clean,
    /// Taken from an owner that died holding it.
    OwnerDied,
}

/// The deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// Released when not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotHeld;

/// A robust process-shared mutex (32 bytes; all zero = unlocked).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct RawMutex {
    /// 0, or the owner's tid; the futex word.
    word: AtomicU32,
    /// Recursion depth, used only by `RLock`, and only by the owner.
    pub(crate) count: AtomicU32,
    /// Owner's tid and start time.
    meta: AtomicU64,
    /// Threads that may be asleep on `word`.
    sleepers: AtomicU32,
    /// Adaptive busy-wait budget in ns (0: not set yet).
    spin_ns: AtomicU32,
    /// 1 + the CPU the owner took the lock on (0: unknown).
    holder_cpu: AtomicU16,
    /// 1 + the CPU of the last release (0: unknown).
    releaser_cpu: AtomicU16,
    /// The owner's pid namespace (0: unknown), written before `meta`: a tid
    /// means something only in its own namespace, so an owner from another
    /// one is never declared dead.
    pidns: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RawMutex>() == 32, "RawMutex is embedded in 32-byte fields");

/// A CPU hint as stored (saturating; 0 means unknown).
fn cpu_hint() -> u16 {
    u16::try_from(thread::current_cpu()).unwrap_or(0)
}

fn pack(id: ThreadIdentity) -> u64 {
    (u64::from(id.tid) << START_BITS) | (id.start & ((1 << START_BITS) - 1))
}

impl RawMutex {
    /// Takes the lock, waiting until `deadline`. Never gives up early while a
    /// dead owner holds it: that owner is detected and replaced.
    pub(crate) fn lock(&self, deadline: Deadline) -> Result<Acquired, TimedOut> {
        let me = thread::current();
        if self.take_free(me) {
            return Ok(Acquired::Clean);
        }
        self.lock_cold(me, deadline)
    }

    /// Takes the lock for `me` if it is free right now: the fast path.
    #[inline]
    fn take_free(&self, me: ThreadIdentity) -> bool {
        // ORDERING: Acquire on success: everything the previous owner wrote
        // before its Release in `unlock` is visible to us.
        let ok = self.word.compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed).is_ok();
        if ok {
            self.set_meta(me);
        }
        ok
    }

    /// As [`RawMutex::lock`], for a lock that only its holder's guard can
    /// release (a `Value`'s or an `Array`'s): taking it again on the thread
    /// that holds it could only wait for ever, so it panics with `what` to
    /// do instead. The check costs nothing unless the lock is taken.
    pub(crate) fn lock_once(&self, deadline: Deadline, what: &str) -> Result<Acquired, TimedOut> {
        let me = thread::current();
        if self.take_free(me) {
            return Ok(Acquired::Clean);
        }
        assert!(!self.is_owned_by(me), "this thread already holds this lock; {what}");
        self.lock_cold(me, deadline)
    }

    /// Takes the lock if it is free right now (does not look for a dead owner).
    pub(crate) fn try_lock(&self) -> bool {
        self.take_free(thread::current())
    }

    fn set_meta(&self, me: ThreadIdentity) {
        // ORDERING: Relaxed: `meta` is advisory (used to detect recycled
        // tids); a reader that sees a stale value re-checks the word with a
        // CAS before acting, and the owner reads back its own store. The CPU
        // is a hint for spinning.
        self.pidns.store(me.pidns, Ordering::Relaxed);
        // ORDERING: Release pairs with the Acquire load in `take_from_dead`:
        // a `meta` naming the owner comes with that owner's namespace.
        self.meta.store(pack(me), Ordering::Release);
        self.holder_cpu.store(cpu_hint(), Ordering::Relaxed);
    }

    /// False if busy-waiting cannot end the wait: the holder is another
    /// thread on this CPU, or the last release came from this CPU.
    fn worth_spinning(&self, me: ThreadIdentity, owner: u32) -> bool {
        let cpu = cpu_hint();
        // ORDERING: Relaxed: hints.
        let holder_here = owner != me.tid && self.holder_cpu.load(Ordering::Relaxed) == cpu;
        cpu == 0 || !(holder_here || self.releaser_cpu.load(Ordering::Relaxed) == cpu)
    }

    #[cold]
    fn lock_cold(&self, me: ThreadIdentity, deadline: Deadline) -> Result<Acquired, TimedOut> {
        // ORDERING: Relaxed: a hint for spinning.
        if self.worth_spinning(me, self.word.load(Ordering::Relaxed)) && self.spin(me) {
            return Ok(Acquired::Clean);
        }
        let mut half_taken = None;
        loop {
            // ORDERING: Relaxed: the value only steers the CAS below, which
            // carries the ordering.
            let owner = self.word.load(Ordering::Relaxed);
            if owner == 0 {
                if self.take_free(me) {
                    return Ok(Acquired::Clean);
                }
                continue;
            }
            // ORDERING: Relaxed: advisory, see `set_meta`.
            let meta = self.meta.load(Ordering::Relaxed);
            let watched = if (meta >> START_BITS) as u32 == owner && self.same_namespace() {
                owner_watch::watch(&self.word, owner, meta)
            } else {
                None // the owner has not recorded itself yet
            };
            let until = match watched {
                Some(_) => deadline,
                None => Deadline::after(deadline.remaining().map_or(SLICE, |left| left.min(SLICE))),
            };
            // ORDERING: SeqCst, paired with `unlock`: see the module notes.
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let outcome = futex::wait(&self.word, owner, until);
            // ORDERING: Relaxed: leaving only makes later wake-ups optional.
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            let died = watched.is_some_and(|w| w.owner_died());
            if outcome == FutexWait::TimedOut || died {
                if let Some(acquired) = self.take_from_dead(owner, me) {
                    return Ok(acquired);
                }
                if let Some(acquired) = self.take_from_half_taken(owner, meta, me, &mut half_taken) {
                    return Ok(acquired);
                }
                if deadline.expired() {
                    return Err(TimedOut);
                }
            }
        }
    }

    /// Busy-waits for the lock within the adaptive budget; adapts it.
    fn spin(&self, me: ThreadIdentity) -> bool {
        let attempt = SPIN.begin(&self.spin_ns);
        let won = 'spin: loop {
            if !attempt.going() {
                break false;
            }
            for _ in 0..16 {
                // ORDERING: Relaxed: only a hint; the CAS synchronises.
                if self.word.load(Ordering::Relaxed) == 0 {
                    if self.take_free(me) {
                        break 'spin true;
                    }
                    continue 'spin;
                }
            }
        };
        SPIN.end(&self.spin_ns, &attempt, won);
        won
    }

    /// If `owner` is dead and still holds the word, takes the lock from it.
    #[cold]
    fn take_from_dead(&self, owner: u32, me: ThreadIdentity) -> Option<Acquired> {
        // ORDERING: Acquire pairs with the Release store in `set_meta`: the
        // namespace read next is the one of the thread `meta` names.
        let meta = self.meta.load(Ordering::Acquire);
        // Only an owner that recorded itself, in our pid namespace, can be
        // known to be dead (its tid names the same thread here).
        if (meta >> START_BITS) as u32 != owner || !self.same_namespace() {
            return None;
        }
        let dead = owner_is_dead(owner, meta);
        // A new owner that just took the word under the same (recycled) tid
        // rewrites `meta` first thing: if it changed, look again later.
        // ORDERING: Relaxed: as above.
        if !dead || self.meta.load(Ordering::Relaxed) != meta {
            return None;
        }
        // ORDERING: Acquire on success: whatever the dead owner wrote is as
        // visible as it will ever be (its stores before death reached memory
        // through the kernel's exit path).
        self.word.compare_exchange(owner, me.tid, Ordering::Acquire, Ordering::Relaxed).ok()?;
        self.set_meta(me);
        Some(Acquired::OwnerDied)
    }

    /// If `owner` took the word but never recorded itself (`meta`, as read
    /// before the wait, does not name it), and that has not changed for
    /// [`HALF_TAKEN_GRACE`], and `owner` is dead: takes the lock from it.
    /// `since` remembers when this waiter first saw that state.
    #[cold]
    fn take_from_half_taken(
        &self,
        owner: u32,
        meta: u64,
        me: ThreadIdentity,
        since: &mut Option<(u32, u64, Deadline)>,
    ) -> Option<Acquired> {
        if (meta >> START_BITS) as u32 == owner {
            return None; // recorded: `take_from_dead` decides
        }
        match *since {
            Some((o, m, grace_over)) if o == owner && m == meta => {
                if !grace_over.expired() {
                    return None;
                }
            }
            _ => {
                *since = Some((owner, meta, Deadline::after(HALF_TAKEN_GRACE)));
                return None;
            }
        }
        // The owner's namespace is unknown: go by the last recorded owner's
        // (none yet counts as ours), and never act on a lock known to be
        // used from another namespace.
        // ORDERING: Relaxed: advisory, see `set_meta`.
        let recorded_ns = self.pidns.load(Ordering::Relaxed);
        let mine = me.pidns;
        if mine == 0 || (recorded_ns != 0 && recorded_ns != mine) {
            return None;
        }
        // ORDERING: Relaxed: as in `take_from_dead`.
        if thread::status(owner) != ThreadStatus::Dead || self.meta.load(Ordering::Relaxed) != meta {
            return None;
        }
        // ORDERING: Acquire on success, as in `take_from_dead`.
        self.word.compare_exchange(owner, me.tid, Ordering::Acquire, Ordering::Relaxed).ok()?;
        self.set_meta(me);
        Some(Acquired::OwnerDied)
    }

    /// True if the recorded owner lives in our pid namespace (both known).
    fn same_namespace(&self) -> bool {
        let mine = thread::current().pidns;
        // ORDERING: Relaxed: ordered by the caller's Acquire load of `meta`.
        mine != 0 && self.pidns.load(Ordering::Relaxed) == mine
    }

    /// Records the releasing CPU (a hint for spinning waiters).
    fn mark_release(&self) {
        // ORDERING: Relaxed: a hint.
        self.releaser_cpu.store(cpu_hint(), Ordering::Relaxed);
    }

    /// Releases a lock the caller holds.
    pub(crate) fn unlock(&self) {
        self.mark_release();
        // ORDERING: SeqCst: Release publishes the critical section to the
        // next owner's Acquire; SeqCst orders the swap before the load of
        // `sleepers` (see the module notes).
        self.word.swap(0, Ordering::SeqCst);
        self.wake_one_sleeper();
    }

    /// Releases the lock if the calling thread holds it; false (and nothing
    /// changes) if it does not: it was released meanwhile (by
    /// `unlock_any`), and perhaps taken by another thread since.
    pub(crate) fn unlock_if_owned(&self) -> bool {
        let me = thread::current();
        self.mark_release();
        // ORDERING: SeqCst on success, as the swap in `unlock`. The CAS only
        // succeeds while the word holds this thread's id: another owner's
        // lock is never released.
        if self.word.compare_exchange(me.tid, 0, Ordering::SeqCst, Ordering::Relaxed).is_err() {
            return false;
        }
        self.wake_one_sleeper();
        true
    }

    fn wake_one_sleeper(&self) {
        // ORDERING: SeqCst: see `unlock`.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.word, 1);
        }
    }

    /// Releases the lock whoever holds it (Python's `Lock.release`, which any
    /// thread or process may call); an error if it is not held.
    pub(crate) fn unlock_any(&self) -> Result<(), NotHeld> {
        self.mark_release();
        // ORDERING: Relaxed load: steers the CAS.
        let mut owner = self.word.load(Ordering::Relaxed);
        loop {
            if owner == 0 {
                return Err(NotHeld);
            }
            // ORDERING: SeqCst on success, as the swap in `unlock`.
            match self.word.compare_exchange_weak(owner, 0, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => owner = now,
            }
        }
        self.wake_one_sleeper();
        Ok(())
    }

    /// True if held by anyone.
    pub(crate) fn is_locked(&self) -> bool {
        // ORDERING: Relaxed: a snapshot for reporting.
        self.word.load(Ordering::Relaxed) != 0
    }

    /// True if the calling thread holds the lock.
    pub(crate) fn is_owned_by_current(&self) -> bool {
        self.is_owned_by(thread::current())
    }

    /// True if the calling thread, `me`, holds the lock.
    fn is_owned_by(&self, me: ThreadIdentity) -> bool {
        // ORDERING: Relaxed: only the calling thread ever writes its own tid
        // and meta, and it reads back its own latest writes; any other value
        // means "not ours".
        self.word.load(Ordering::Relaxed) == me.tid && self.meta.load(Ordering::Relaxed) == pack(me)
    }
}

/// True if thread `owner`, recorded in a lock's `meta` as `meta`, is gone
/// (or is a zombie, or its tid now names a thread that started later).
pub(crate) fn owner_is_dead(owner: u32, meta: u64) -> bool {
    match thread::status(owner) {
        ThreadStatus::Dead => true,
        ThreadStatus::Alive { start } => {
            let recorded_start = meta & ((1 << START_BITS) - 1);
            (meta >> START_BITS) as u32 == owner
                && recorded_start != 0
                && start != 0
                && recorded_start != start & ((1 << START_BITS) - 1)
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::sync::Arc;

    fn fresh() -> RawMutex {
        RawMutex {
            word: AtomicU32::new(0),
            count: AtomicU32::new(0),
            meta: AtomicU64::new(0),
            sleepers: AtomicU32::new(0),
            spin_ns: AtomicU32::new(0),
            holder_cpu: AtomicU16::new(0),
            releaser_cpu: AtomicU16::new(0),
            pidns: AtomicU32::new(0),
        }
    }

    #[test]
    fn lock_unlock_and_timeout() {
        let m = Arc::new(fresh());
        assert_eq!(m.lock(Deadline::NEVER), Ok(Acquired::Clean));
        assert!(m.is_owned_by_current());
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let r = m2.lock(Deadline::after(Duration::from_millis(150)));
            (r, start.elapsed())
        });
        let (r, waited) = t.join().unwrap();
        assert_eq!(r, Err(TimedOut));
        assert!(waited >= Duration::from_millis(150));
        m.unlock();
        assert_eq!(m.unlock_any(), Err(NotHeld));
    }

    #[test]
    fn a_thread_that_exits_holding_it_is_detected() {
        let m = Arc::new(fresh());
        let m2 = m.clone();
        std::thread::spawn(move || assert_eq!(m2.lock(Deadline::NEVER), Ok(Acquired::Clean))).join().unwrap();
        let start = std::time::Instant::now();
        assert_eq!(m.lock(Deadline::after(Duration::from_secs(5))), Ok(Acquired::OwnerDied));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(m.is_owned_by_current());
        m.unlock();
        assert_eq!(m.lock(Deadline::NEVER), Ok(Acquired::Clean));
        m.unlock();
    }

    /// The identity of a thread that has exited (its tid gone from `/proc`).
    fn dead_thread() -> ThreadIdentity {
        let dead = std::thread::spawn(thread::current).join().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while thread::status(dead.tid) != ThreadStatus::Dead {
            assert!(std::time::Instant::now() < deadline, "the exited thread's tid stays in /proc");
            std::thread::sleep(Duration::from_millis(5));
        }
        dead
    }

    /// Forges a holder that took the word and died before `set_meta`:
    /// the word holds its tid, `meta` still names the previous owner.
    fn half_taken_by(m: &RawMutex, holder: u32) {
        assert_eq!(m.lock(Deadline::NEVER), Ok(Acquired::Clean));
        m.unlock();
        m.word.store(holder, Ordering::SeqCst);
    }

    #[test]
    fn a_holder_killed_before_recording_itself_is_replaced() {
        let m = fresh();
        half_taken_by(&m, dead_thread().tid);
        let start = std::time::Instant::now();
        assert_eq!(m.lock(Deadline::after(Duration::from_secs(10))), Ok(Acquired::OwnerDied));
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        assert!(m.is_owned_by_current());
        m.unlock();
    }

    #[test]
    fn the_first_holder_of_a_fresh_lock_killed_before_recording_itself_is_replaced() {
        let m = fresh();
        m.word.store(dead_thread().tid, Ordering::SeqCst);
        assert_eq!(m.lock(Deadline::after(Duration::from_secs(10))), Ok(Acquired::OwnerDied));
        m.unlock();
    }

    #[test]
    fn a_live_holder_that_has_not_recorded_itself_yet_is_not_robbed() {
        let m = fresh();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let live = std::thread::spawn(move || {
            tx.send(thread::current()).unwrap();
            let _ = stop_rx.recv_timeout(Duration::from_secs(30));
        });
        half_taken_by(&m, rx.recv().unwrap().tid);
        let wait = HALF_TAKEN_GRACE + Duration::from_millis(500);
        assert_eq!(m.lock(Deadline::after(wait)), Err(TimedOut));
        stop_tx.send(()).unwrap();
        live.join().unwrap();
    }

    #[test]
    fn threads_count_exactly() {
        struct Counter(RawMutex, std::cell::UnsafeCell<u64>);
        // SAFETY: the cell is only touched while the mutex is held.
        unsafe impl Sync for Counter {}
        let c = Arc::new(Counter(fresh(), std::cell::UnsafeCell::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        c.0.lock(Deadline::NEVER).unwrap();
                        // SAFETY: guarded by the mutex.
                        unsafe { *c.1.get() += 1 };
                        c.0.unlock();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: all threads joined.
        assert_eq!(unsafe { *c.1.get() }, 80_000);
    }
}
