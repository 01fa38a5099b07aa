//! The owner watch: one thread per process that notices when the owner of a
//! lock that a local thread sleeps on has died, and wakes that sleeper.
//!
//! A waiter on a robust lock must learn that the owner died, but nobody will
//! wake it: the owner is gone. Waking every waiter periodically would arm a
//! kernel timer on every sleep (measured: about 0.3 µs of each hand-over on
//! this VM, enough to make a lock slower than CPython's semaphore). Instead a
//! sleeper writes what it waits for (the futex word's address, the owner and
//! the owner's recorded identity) into its thread's [`Slot`] and sleeps
//! without a timeout; the watch thread looks at every sleeping slot each
//! [`SLICE`], and when the owner is dead it flags the slot and wakes the word.
//!
//! A sleeper can also miss its wake-up when the owner is alive: `unlock`
//! wakes one sleeper, and if that one is killed before it takes the lock,
//! the others sleep on a free lock. So the watch also wakes the word of a
//! slot asleep for [`NUDGE_TICKS`] slices in a row; a sleeper woken for
//! nothing looks at the lock and sleeps again.
//!
//! The watch starts with the first sleep and ends after [`IDLE_TICKS`] slices
//! with nobody asleep; a forked child starts its own. If the thread cannot be
//! started, [`watch`] returns `None` and the caller falls back to timed sleeps.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use super::raw_mutex::{SLICE, owner_is_dead};
use crate::process_local::ProcessLocal;
use crate::sys::imp::futex;

/// Slices with no sleeper after which the watch thread ends.
const IDLE_TICKS: u32 = 10;
/// Slices a slot sleeps in a row before the watch wakes its word anyway
/// (one second): a wake-up lost with a killed waiter costs at most that.
const NUDGE_TICKS: u32 = 10;

/// What one thread is asleep on (`word` is 0 while it is awake).
#[derive(Debug, Default)]
struct Slot {
    /// Address of the futex word, or 0.
    word: AtomicUsize,
    /// The owner tid the sleeper saw in the word.
    owner: AtomicU32,
    /// The owner's recorded identity (tid and start time).
    meta: AtomicU64,
    /// Set by the watch: the owner is dead, try to take the lock over.
    died: AtomicBool,
    /// Slices the watch has seen this sleep go on (reset at each sleep).
    ticks: AtomicU32,
}

/// The slots of this process's threads and whether the watch runs.
struct Registry {
    /// Tells registries apart, so a thread re-registers in a forked child.
    id: u64,
    slots: Vec<Weak<Slot>>,
    running: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static REGISTRY: ProcessLocal<Registry> = ProcessLocal::new(|| Registry {
    // ORDERING: Relaxed: a unique number is all that is needed.
    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
    slots: Vec::new(),
    running: false,
});

thread_local! {
    /// This thread's slot and the id of the registry that lists it (0: none).
    static SLOT: (Arc<Slot>, std::cell::Cell<u64>) = (Arc::default(), std::cell::Cell::new(0));
}

/// A sleep the watch is looking after; the slot is cleared on drop.
pub(crate) struct Watched {
    slot: Arc<Slot>,
}

impl Watched {
    /// True if the watch found the owner dead (and woke the sleeper).
    pub(crate) fn owner_died(&self) -> bool {
        // ORDERING: Acquire pairs with the watch's Release store before its
        // wake-up; the caller re-checks everything in shared memory anyway.
        self.slot.died.load(Ordering::Acquire)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // ORDERING: Release: the watch must not act on this sleep any more;
        // a wake-up it still sends is harmless (futex sleepers re-check).
        self.slot.word.store(0, Ordering::Release);
    }
}

/// Registers the calling thread as about to sleep on `word` while `owner`
/// (recorded as `meta`) holds it. `None` if the watch thread cannot run, or
/// this thread's slot is gone (a wait from a thread-local destructor as the
/// thread ends): sleep with a timeout instead.
pub(crate) fn watch(word: &AtomicU32, owner: u32, meta: u64) -> Option<Watched> {
    let slot = SLOT.try_with(|(slot, registered_in)| {
        let mut registry = REGISTRY.lock();
        if registered_in.get() != registry.id {
            registry.slots.retain(|s| s.strong_count() > 0);
            registry.slots.push(Arc::downgrade(slot));
            registered_in.set(registry.id);
        }
        // ORDERING: Relaxed for the fields, published by the registry lock
        // (taken by the watch before it reads them) and by the Release store
        // of `word` for scans already under way.
        slot.owner.store(owner, Ordering::Relaxed);
        slot.meta.store(meta, Ordering::Relaxed);
        slot.died.store(false, Ordering::Relaxed);
        slot.ticks.store(0, Ordering::Relaxed);
        slot.word.store(word.as_ptr() as usize, Ordering::Release);
        if !registry.running {
            let started = std::thread::Builder::new().name("multiproc-owner-watch".into()).spawn(run_watch);
            if started.is_err() {
                slot.word.store(0, Ordering::Relaxed);
                return None;
            }
            registry.running = true;
        }
        Some(slot.clone())
    });
    Some(Watched { slot: slot.ok().flatten()? })
}

/// The watch thread's loop.
fn run_watch() {
    let mut idle = 0;
    loop {
        std::thread::sleep(SLICE);
        let slots: Vec<Arc<Slot>> = REGISTRY.lock().slots.iter().filter_map(Weak::upgrade).collect();
        let asleep = slots.iter().filter(|s| check(s)).count();
        drop(slots);
        idle = if asleep == 0 { idle + 1 } else { 0 };
        if idle >= IDLE_TICKS {
            let mut registry = REGISTRY.lock();
            // Under the registry lock no sleeper can register unseen: one that
            // registers after this sees `running == false` and starts a watch.
            // ORDERING: Acquire, as in `check`.
            if registry.slots.iter().filter_map(Weak::upgrade).all(|s| s.word.load(Ordering::Acquire) == 0) {
                registry.running = false;
                return;
            }
            idle = 0;
        }
    }
}

/// Looks at one slot: false if its thread is awake; otherwise wakes it if
/// the owner it waits for is dead, or if it has slept [`NUDGE_TICKS`]
/// slices in a row.
fn check(slot: &Slot) -> bool {
    // ORDERING: Acquire pairs with the Release store in `watch`: the owner
    // and meta written before it are visible.
    let word = slot.word.load(Ordering::Acquire);
    if word == 0 {
        return false;
    }
    // ORDERING: Relaxed: ordered by the Acquire load above.
    let (owner, meta) = (slot.owner.load(Ordering::Relaxed), slot.meta.load(Ordering::Relaxed));
    if owner_is_dead(owner, meta) {
        // ORDERING: Release pairs with `Watched::owner_died`.
        slot.died.store(true, Ordering::Release);
        // The sleeper may have woken and unmapped the word meanwhile: the
        // wake-up goes by address and the kernel checks it (a stale address
        // gets EFAULT or a spurious wake-up, which futex sleepers tolerate).
        futex::wake_address(word, i32::MAX as u32);
    } else if slot.ticks.fetch_add(1, Ordering::Relaxed) + 1 >= NUDGE_TICKS {
        // ORDERING: Relaxed (here and above): a count only this thread's
        // scans keep; the sleeper's reset at its next sleep is published by
        // the Release store of `word`.
        slot.ticks.store(0, Ordering::Relaxed);
        // By address, as above. The lock may be free with the one waiter
        // its release woke killed: every sleeper on the word looks again.
        futex::wake_address(word, i32::MAX as u32);
    }
    true
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn finds_a_dead_owner_and_ends_when_idle() {
        let word = AtomicU32::new(0);
        let gone = std::thread::spawn(crate::sys::imp::thread::current).join().unwrap();
        // Wait until the kernel has let the joined thread go.
        while !owner_is_dead(gone.tid, 0) {
            std::thread::sleep(Duration::from_millis(1));
        }
        word.store(gone.tid, Ordering::Relaxed);
        let watched = watch(&word, gone.tid, 0).expect("the watch starts");
        let start = Instant::now();
        while !watched.owner_died() {
            assert!(start.elapsed() < Duration::from_secs(5), "the watch did not flag the dead owner");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(watched);
        // With nobody asleep the thread ends after IDLE_TICKS slices (other
        // tests of this binary may restart it for a moment; wait it out).
        let start = Instant::now();
        while REGISTRY.lock().running {
            assert!(start.elapsed() < Duration::from_secs(20), "the watch thread did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
