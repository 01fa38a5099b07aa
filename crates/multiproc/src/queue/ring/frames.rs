//! Frames: finding a frame for the next segment (a free one, or one whose
//! segment every consumer has finished) and retiring finished segments, all
//! under the robust frame lock.

use std::io;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::{Duration, Instant};

use super::{Ring, Watch, owner_gone};
use crate::queue::states::{FREE, SEALED, Stamp, TAKING, WRITING};
use crate::queue::waits::Backoff;
use crate::sys::imp::sparse::{self, PAGE};
use crate::sys::imp::thread;

/// How long preparing a frame waits for the last readers of its previous
/// segment before reporting the queue as exhausted.
const FRAME_WAIT: Duration = Duration::from_millis(200);
/// Frames with a lower index are retired warm (see `retire_locked`).
const WARM_FRAMES: u32 = 4;
/// Frames with a lower index keep their arena too (see `retire_locked`).
const WARM_ARENAS: u32 = 2;

impl Ring {
    /// Finds a frame for segment `next` (reusing a free one, lowest index
    /// first, or retiring a finished segment to free one) and publishes it in
    /// `frame_of`.
    pub(super) fn prepare(&self, next: u64) -> io::Result<()> {
        let hdr = self.header();
        let started = Instant::now();
        loop {
            {
                let _lock = self.lock_frames();
                // ORDERING: Acquire (loads under the lock): the frame lock orders
                // all preparations and retirements; the loads re-check state.
                if hdr.seg_tail.0.load(Acquire) != next - 1 {
                    return Ok(());
                }
                // Prepared already by a thread that died before moving seg_tail?
                let prepared = self.frame_of(next).load(Acquire);
                if u64::from(prepared) < self.geometry.frames && self.frame_state(prepared).load(Acquire) == next + 1 {
                    return Ok(());
                }
                let head = hdr.seg_head.0.load(SeqCst);
                let (mut free, mut waiting) = (None, false);
                for index in 0..self.geometry.frames as u32 {
                    let state = self.frame_state(index).load(Acquire);
                    if state == 0 {
                        free = Some(index);
                        break;
                    }
                    if state - 1 < head {
                        // A segment consumers have left: retire it if it is done.
                        if self.retire_locked(index, state - 1)? {
                            free = Some(index);
                            break;
                        }
                        waiting = true;
                    }
                }
                if let Some(index) = free {
                    return self.init_frame(index, next);
                }
                if !waiting {
                    return Err(self.exhausted());
                }
            }
            // A segment that consumers have left still has readers copying
            // items out: wait for them a little.
            if started.elapsed() > FRAME_WAIT {
                return Err(self.exhausted());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// With the frame lock held: makes free frame `index` hold segment `next`.
    /// A frame is free when it is all zeros (never used, or punched) or when it
    /// was retired warm: then its positions go on from where its last segment
    /// ended (every slot is free for exactly that lap), and only its header is
    /// reset here.
    fn init_frame(&self, index: u32, next: u64) -> io::Result<()> {
        let f = self.frame_at(index)?;
        let fh = f.header();
        // The table entry first: if we die before the end, the next holder of
        // the lock finds this frame through it and initialises it again. (The
        // entry's previous segment, `next - frames`, is no longer live.)
        // ORDERING: Release: table entries are read with Acquire.
        self.frame_of(next).store(index, Release);
        // ORDERING: Relaxed (resets): published by the Release store of the
        // segment number below; nobody uses a frame before validating it.
        fh.arena.0.store(0, Relaxed);
        fh.seg.0.sealed_hint.store(0, Relaxed);
        let tail = fh.tail.0.load(Relaxed) & !SEALED;
        fh.tail.0.store(tail, Relaxed);
        // ORDERING: Release: pairs with the Acquire validation loads of `seg`.
        fh.seg.0.number.store(next + 1, Release);
        // ORDERING: Release: table entries are read with Acquire.
        self.frame_state(index).store(next + 1, Release);
        Ok(())
    }

    /// Retires segment `seg` if every consumer is done with it.
    pub(in crate::queue) fn try_retire(&self, seg: u64) -> io::Result<()> {
        let f = self.frame(seg)?;
        // ORDERING: Acquire: a hint; re-checked under the lock.
        if f.header().seg.0.load(Acquire) != seg + 1 {
            return Ok(());
        }
        let _lock = self.lock_frames();
        self.retire_locked(f.index(), seg)?;
        Ok(())
    }

    /// With the frame lock held: if segment `seg` (in frame `index`) is
    /// finished — consumers moved past it, and every slot is free for the lap
    /// after its last position — frees the frame and returns true. Frames
    /// below [`WARM_FRAMES`] keep their slots (no page faults when reused) and
    /// give back only their arena, and those below [`WARM_ARENAS`] keep that
    /// too; the others are punched out whole. Slots owned by dead threads are
    /// freed on the way.
    fn retire_locked(&self, index: u32, seg: u64) -> io::Result<bool> {
        let hdr = self.header();
        let f = self.frame_at(index)?;
        let fh = f.header();
        // ORDERING: Acquire (here and below): these loads decide whether the
        // segment is finished; the SeqCst release of every slot (take_once) and
        // the SeqCst load of seg_head there make a consumer that finishes after
        // this scan retry the retirement itself.
        let number = fh.seg.0.load(Acquire);
        if number != seg + 1 {
            if number == 0 {
                // Freed already by a holder of the lock that died before
                // updating the table.
                // ORDERING: Release: as in `init_frame`.
                self.frame_state(index).store(0, Release);
                return Ok(true);
            }
            return Ok(false);
        }
        if hdr.seg_head.0.load(SeqCst) <= seg {
            return Ok(false);
        }
        let tail = fh.tail.0.load(Acquire);
        if tail & SEALED == 0 {
            return Ok(false);
        }
        let count = tail & !SEALED;
        if fh.head.0.load(Acquire) < count {
            return Ok(false);
        }
        let slots = f.slots();
        for slot_index in 0..slots {
            // The first position at or after `count` that maps to this slot:
            // its lap is the lap a finished slot is free for.
            let pos = count + (slot_index.wrapping_sub(count) & (slots - 1));
            let expected = Stamp::new(f.lap(pos), FREE).pack();
            let slot = f.slot(slot_index);
            loop {
                let word = slot.stamp.load(SeqCst);
                if word == expected {
                    break;
                }
                let s = Stamp::unpack(word);
                let dead_owner = matches!(s.state, TAKING | WRITING) && s.tid != 0 && owner_gone(hdr, s.tid);
                if !dead_owner {
                    return Ok(false); // a live reader (or a claim being withdrawn)
                }
                self.free_dead_claim(slot, word, expected);
            }
        }
        let offset = self.geometry.frame_offset(index);
        if index < WARM_FRAMES {
            if index >= WARM_ARENAS {
                // ORDERING: Relaxed: a snapshot of the bump allocator, which no
                // one moves any more (the segment is sealed and finished).
                let used = fh.arena.0.load(Relaxed).min(f.arena_len());
                let arena = offset + self.geometry.arena_offset();
                sparse::punch_hole(self.fd(), arena, used.next_multiple_of(PAGE))?;
            }
            // ORDERING: Release: validation loads see the frame is no longer `seg`.
            fh.seg.0.number.store(0, Release);
        } else {
            sparse::punch_hole(self.fd(), offset, self.geometry.frame_len())?;
        }
        // ORDERING: Release: as in `init_frame`.
        self.frame_state(index).store(0, Release);
        Ok(true)
    }

    /// The error when every frame holds a live segment.
    fn exhausted(&self) -> io::Error {
        // How many items that is depends on their sizes (an arena fills up
        // long before the slots do for larger items): say what is there.
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("the queue holds too many items (about {} waiting); get some out first", self.len()),
        )
    }

    /// Takes the frame lock (robust: a dead holder's lock is taken over).
    fn lock_frames(&self) -> FrameLock<'_> {
        let word = &self.header().frame_lock.0;
        let me = thread::current_tid();
        let mut backoff = Backoff::new();
        let mut watch = Watch::default();
        loop {
            // ORDERING: Acquire: pairs with the Release unlock; the holder's frame
            // changes are visible to the next holder.
            match word.compare_exchange(0, me, Acquire, Relaxed) {
                Ok(_) => return FrameLock { word },
                Err(owner) => {
                    // ORDERING: Acquire: as above, when taking over.
                    if watch.stuck(u64::from(owner))
                        && owner_gone(self.header(), owner)
                        && word.compare_exchange(owner, me, Acquire, Relaxed).is_ok()
                    {
                        return FrameLock { word };
                    }
                    backoff.wait();
                }
            }
        }
    }
}

/// Holds the frame lock; releases it on drop.
struct FrameLock<'a> {
    word: &'a std::sync::atomic::AtomicU32,
}

impl Drop for FrameLock<'_> {
    fn drop(&mut self) {
        // ORDERING: Release: publishes the frame changes made under the lock.
        self.word.store(0, Release);
    }
}
