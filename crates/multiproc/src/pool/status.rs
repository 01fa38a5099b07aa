//! The status page: one page of shared memory a worker writes as it runs
//! (which chunk and item, since when) and the scheduler reads, to enforce
//! the task timeout and to tell which chunk a dead worker was running.
//!
//! # Consistency (maintainer's notes)
//!
//! The page is a seqlock with a single writer (the worker's one thread). An
//! update that changes several words ([`StatusPage::begin_chunk`],
//! [`StatusPage::begin_item`]) makes `seq` odd, writes the words, and makes
//! `seq` even again. The scheduler reads `seq`, the words, and `seq` again;
//! it takes the words only if both reads saw the same even value, so it
//! never pairs one item's start time with another item's index or chunk.
//! Changes of the phase alone ([`StatusPage::end_item`],
//! [`StatusPage::set_idle`]) are single stores and need no bump: whichever
//! phase a reader sees, the other words are those of the same update.
//!
//! The page is written by another process, so nothing here trusts it: a
//! `seq` stuck odd (a worker stopped or killed inside an update) or
//! scribbled over makes [`StatusPage::read`] give up after a bounded number
//! of tries, and any value of a word is a valid `Status` (the scheduler's
//! arithmetic on them saturates).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::sys::imp::shm::Mapping;

/// The worker is starting or running its initializer.
pub(crate) const PHASE_INIT: u32 = 0;
/// The worker waits for work, reads it, or writes results.
pub(crate) const PHASE_IDLE: u32 = 1;
/// The worker decodes a chunk or encodes its results.
pub(crate) const PHASE_CHUNK: u32 = 2;
/// The worker runs one item of a chunk (the user's code).
pub(crate) const PHASE_ITEM: u32 = 3;

/// How many times [`StatusPage::read`] tries for a consistent snapshot. An
/// update takes a few nanoseconds, but a worker running tiny items updates
/// the page every hundred nanoseconds or so, and one descheduled inside an
/// update stays there for a time slice: a live worker can be caught this
/// many times in a row (the scheduler then looks again later, and takes a
/// worker for stuck only when its sequence word stays the same odd value).
const READ_TRIES: u32 = 64;

#[repr(C)]
struct StatusWords {
    /// Odd while the worker updates the words below (see the module notes).
    seq: AtomicU64,
    phase: AtomicU32,
    item: AtomicU32,
    /// Chunks started since the worker started.
    started: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds when the current item started (only kept
    /// when the pool has a task timeout).
    item_started_ns: AtomicU64,
}

/// What the worker was doing, as the scheduler reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub phase: u32,
    pub item: u32,
    pub started: u64,
    pub item_started_ns: u64,
}

/// One page the worker writes and the scheduler reads.
#[derive(Debug)]
pub(crate) struct StatusPage {
    map: Mapping,
}

impl StatusPage {
    /// A new page (phase `INIT`), made by the scheduler.
    pub(crate) fn new() -> io::Result<StatusPage> {
        Ok(StatusPage { map: Mapping::anonymous("multiproc-pool-status", 4096)? })
    }

    /// The page received by a worker.
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<StatusPage> {
        Ok(StatusPage { map: Mapping::from_fd(fd, 4096)? })
    }

    #[inline]
    fn words(&self) -> &StatusWords {
        // SAFETY: the mapping is 4096 bytes, page-aligned and zero-initialised,
        // which is a valid `StatusWords` (atomics of zero); it lives as long as
        // `self`, and other processes touch it only through the same atomics.
        unsafe { &*self.map.as_ptr().cast::<StatusWords>() }
    }

    /// Worker: changes several words as one update (see the module notes).
    /// Only the worker's one thread may call it.
    #[inline]
    fn update(&self, change: impl FnOnce(&StatusWords)) {
        let w = self.words();
        // ORDERING: Relaxed: only this thread writes `seq`. `| 1` keeps the
        // protocol even if the word was scribbled over to an odd value.
        let odd = w.seq.load(Ordering::Relaxed) | 1;
        // ORDERING: Relaxed, then a Release fence: a reader whose loads see
        // any store of `change` (and that then runs its Acquire fence) sees
        // this odd value, or a later one, when it looks at `seq` again.
        w.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        change(w);
        // ORDERING: Release: a reader that Acquire-loads the even value sees
        // every store of `change`.
        w.seq.store(odd.wrapping_add(1), Ordering::Release);
    }

    /// Worker: a new chunk begins.
    pub(crate) fn begin_chunk(&self) {
        self.update(|w| {
            // ORDERING: Relaxed (single writer), published by `update`. The
            // count goes up before the phase changes: a worker killed in
            // between is read as not yet running the chunk.
            w.started.store(w.started.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            w.phase.store(PHASE_CHUNK, Ordering::Relaxed);
        });
    }

    /// Worker: item `item` of the current chunk begins.
    #[inline]
    pub(crate) fn begin_item(&self, item: u32, now_ns: Option<u64>) {
        self.update(|w| {
            // ORDERING: Relaxed, published by `update`.
            w.item.store(item, Ordering::Relaxed);
            if let Some(ns) = now_ns {
                w.item_started_ns.store(ns, Ordering::Relaxed);
            }
            w.phase.store(PHASE_ITEM, Ordering::Relaxed);
        });
    }

    /// Worker: the current item ended; the chunk goes on.
    #[inline]
    pub(crate) fn end_item(&self) {
        // ORDERING: Release, paired with the reader's Acquire of `seq` (and
        // its fence); a phase-only change needs no `seq` bump (module notes).
        self.words().phase.store(PHASE_CHUNK, Ordering::Release);
    }

    /// Worker: between chunks.
    pub(crate) fn set_idle(&self) {
        // ORDERING: as in `end_item`.
        self.words().phase.store(PHASE_IDLE, Ordering::Release);
    }

    /// The words as they are, consistent or not.
    fn words_now(&self) -> Status {
        let w = self.words();
        // ORDERING: Relaxed: ordering comes from the callers.
        Status {
            phase: w.phase.load(Ordering::Relaxed),
            item: w.item.load(Ordering::Relaxed),
            started: w.started.load(Ordering::Relaxed),
            item_started_ns: w.item_started_ns.load(Ordering::Relaxed),
        }
    }

    /// Scheduler, while the worker runs: what it is doing, as one
    /// consistent snapshot, or `None` if every try caught it inside an
    /// update (it was descheduled or stopped there: look again later).
    pub(crate) fn read(&self) -> Option<Status> {
        let w = self.words();
        for _ in 0..READ_TRIES {
            // ORDERING: Acquire: pairs with the Release store that ended an
            // update, so the words it wrote are visible to the loads below.
            let before = w.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let status = self.words_now();
                // ORDERING: Acquire fence: if a load above saw a store of a
                // later update, that update's odd `seq` (stored before its
                // Release fence) is visible to the load below, which then
                // differs from `before`.
                fence(Ordering::Acquire);
                // ORDERING: Relaxed: ordered by the fence.
                if w.seq.load(Ordering::Relaxed) == before {
                    return Some(status);
                }
            }
            std::hint::spin_loop();
        }
        None
    }

    /// The sequence word as it is now: odd while the worker is inside an
    /// update. A worker caught in the same odd value look after look is
    /// stuck in one update (stopped there); one that changes is alive.
    pub(crate) fn seq(&self) -> u64 {
        // ORDERING: Relaxed: only compared with earlier values of itself.
        self.words().seq.load(Ordering::Relaxed)
    }

    /// Scheduler, once the worker has exited: what it was doing when it
    /// ended. Nothing writes the page any more; a worker killed inside an
    /// update leaves it half done, and its words are taken as they are (an
    /// update writes the chunk count before the phase, so such a worker is
    /// at worst read as not yet running its newest chunk).
    pub(crate) fn read_after_exit(&self) -> Status {
        self.read().unwrap_or_else(|| {
            // ORDERING: Acquire: pairs with the worker's Release stores; it
            // has exited, so these are its last ones.
            self.words().seq.load(Ordering::Acquire);
            self.words_now()
        })
    }
}

impl AsFd for StatusPage {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}

#[cfg(test)]
mod test {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    use super::*;

    /// The worker's and the scheduler's views of one page, as in a pool.
    fn pair() -> (StatusPage, StatusPage) {
        let scheduler = StatusPage::new().unwrap();
        let worker = StatusPage::from_fd(scheduler.as_fd().try_clone_to_owned().unwrap()).unwrap();
        (worker, scheduler)
    }

    #[test]
    fn updates_are_read_back() {
        let (worker, scheduler) = pair();
        let st = scheduler.read().unwrap();
        assert_eq!((st.phase, st.started), (PHASE_INIT, 0));
        worker.set_idle();
        worker.begin_chunk();
        worker.begin_item(7, Some(1234));
        assert_eq!(scheduler.read(), Some(Status { phase: PHASE_ITEM, item: 7, started: 1, item_started_ns: 1234 }));
        worker.end_item();
        assert_eq!(scheduler.read().unwrap().phase, PHASE_CHUNK);
        worker.set_idle();
        assert_eq!(scheduler.read().unwrap().phase, PHASE_IDLE);
        assert_eq!(scheduler.read_after_exit(), scheduler.read().unwrap());
    }

    #[test]
    fn a_page_caught_inside_an_update_is_not_read_as_a_status() {
        let (worker, scheduler) = pair();
        worker.begin_chunk();
        worker.begin_item(0, Some(100));
        // A worker stopped halfway through `begin_item(1, ..)`: the new item
        // with the old item's start time, which must never be taken for the
        // state of item 1.
        let w = worker.words();
        let even = w.seq.load(Ordering::Relaxed);
        w.seq.store(even + 1, Ordering::Relaxed);
        w.item.store(1, Ordering::Relaxed);
        let start = Instant::now();
        assert_eq!(scheduler.read(), None, "a half-written update was read as consistent");
        assert!(start.elapsed() < Duration::from_secs(1), "the read gives up, it does not wait");
        // Once it exited, the last words are all there is.
        assert_eq!(scheduler.read_after_exit().item, 1);
        // A seq scribbled over to an odd value does not break the protocol.
        w.seq.store(u64::MAX, Ordering::Relaxed);
        worker.begin_item(2, Some(300));
        assert_eq!(scheduler.read().map(|s| (s.item, s.item_started_ns)), Some((2, 300)));
    }

    #[test]
    fn a_snapshot_never_mixes_two_updates() {
        // The worker writes items whose start "time" encodes (chunk, item);
        // every snapshot of an item in progress must decode to itself.
        let (worker, scheduler) = pair();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut chunk = 0u64;
            // ORDERING: Relaxed: a flag that ends the loop.
            while !stop2.load(Ordering::Relaxed) {
                chunk += 1;
                worker.begin_chunk();
                for item in 0..4u32 {
                    worker.begin_item(item, Some(chunk * 16 + u64::from(item)));
                    worker.end_item();
                }
                worker.set_idle();
            }
        });
        let (mut seen, mut mixed) = (0u64, Vec::new());
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) && mixed.len() < 5 {
            let Some(st) = scheduler.read() else { continue };
            if st.phase == PHASE_ITEM {
                seen += 1;
                if st.item_started_ns != st.started * 16 + u64::from(st.item) {
                    mixed.push(st);
                }
            }
        }
        // ORDERING: Relaxed: see the writer.
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(mixed.is_empty(), "snapshots mixing two updates (of {seen}): {mixed:?}");
        assert!(seen > 0, "the reader never saw an item in progress");
    }

    #[test]
    fn any_words_are_a_status() {
        // Another process may write anything: reads neither panic nor hang.
        let (worker, scheduler) = pair();
        let w = worker.words();
        for (i, v) in [0u64, 1, u64::MAX, u64::MAX - 1, 0x5555_5555_5555_5555].into_iter().enumerate() {
            w.seq.store(v, Ordering::Relaxed);
            w.phase.store(v as u32, Ordering::Relaxed);
            w.item.store(!(v as u32), Ordering::Relaxed);
            w.started.store(v.rotate_left(i as u32), Ordering::Relaxed);
            assert_eq!(scheduler.read().is_some(), v & 1 == 0);
            assert_eq!(scheduler.read_after_exit().phase, v as u32);
        }
    }
}
