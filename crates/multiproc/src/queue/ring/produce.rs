//! Producers: claim a slot, fill it, commit it; seal a full segment and
//! move the producers to the next one.

use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use super::{Payload, Pushed, Ring, Watch, owner_gone};
use crate::queue::layout::{Frame, KIND_ARENA, KIND_BLOB, KIND_INLINE, Slot};
use crate::queue::states::{FREE, LapOrder, READY, SEALED, Stamp, WRITING};
use crate::queue::waits::Backoff;

impl Ring {
    /// Puts one item into the tail segment. The move of the tail that
    /// includes the item's position is what admits it into a bounded queue
    /// (`Full` if the positions queued would pass `maxsize`, see
    /// [`Ring::positions_with`]) and counts its task in a joinable one: a
    /// producer killed before it holds no room and leaves no task, one killed
    /// after it leaves a position that consumers skip, and the room and the
    /// task go with the position.
    pub(in crate::queue) fn push(&self, payload: Payload<'_>, me: u32) -> io::Result<Pushed> {
        let hdr = self.header();
        let mut backoff = Backoff::new();
        let mut watch = Watch::default();
        loop {
            // ORDERING: Acquire: pairs with the Release CAS that moved seg_tail, so
            // the frame's segment number stored before it is visible.
            let n = hdr.seg_tail.0.load(Acquire);
            let f = self.frame(n)?;
            let fh = f.header();
            // ORDERING: Acquire: pairs with the Release store in `prepare`.
            if fh.seg.0.load(Acquire) != n + 1 {
                backoff.wait(); // seg_tail moved on since it was read
                continue;
            }
            // ORDERING: Acquire: a tail value is only a hint to start from; the
            // stamp CAS below decides. Acquire orders it before the stamp load.
            let t = fh.tail.0.load(Acquire);
            if t & SEALED != 0 {
                self.advance_tail(n, &f)?;
                continue;
            }
            let slot = f.slot(t);
            let lap = f.lap(t);
            // ORDERING: Acquire: pairs with the consumer's release of the previous
            // lap (its reads of the slot happen before we overwrite it).
            let word = slot.stamp.load(Acquire);
            let s = Stamp::unpack(word);
            match s.lap_vs(lap) {
                LapOrder::Newer => continue, // `t` is stale
                LapOrder::Older => {
                    // The slot still holds the previous lap: the segment is full.
                    // Seal it at `t` and move to a new segment.
                    // ORDERING: AcqRel: the seal must be ordered with the claims
                    // that race for `t` (they CAS the same word).
                    if fh.tail.0.compare_exchange(t, t | SEALED, AcqRel, Relaxed).is_ok() {
                        self.advance_tail(n, &f)?;
                    }
                    continue;
                }
                LapOrder::Same if s.state == FREE => {}
                LapOrder::Same => {
                    // Another producer claimed `t` and has not moved the tail yet.
                    // ORDERING: Acquire (tail re-load): the claim is only withdrawn
                    // if it is still not included now that its owner is dead (it
                    // may have moved the tail just before dying: then consumers
                    // skip it instead).
                    if s.state == WRITING
                        && watch.stuck(word)
                        && owner_gone(hdr, s.tid)
                        && fh.tail.0.load(Acquire) & !SEALED == t
                    {
                        // It died between its claim and its tail move: withdraw
                        // the claim (it held no room and no task: both come
                        // with the tail move).
                        // ORDERING: AcqRel: only one thread may withdraw it.
                        let _ = slot.stamp.compare_exchange(word, Stamp::new(lap, FREE).pack(), AcqRel, Relaxed);
                    }
                    backoff.wait();
                    continue;
                }
            }
            let mine = Stamp::owned(lap, WRITING, me).pack();
            // ORDERING: AcqRel: claiming the slot acquires the previous lap's
            // release and makes the claim (our tid) visible to everyone who checks.
            if slot.stamp.compare_exchange(word, mine, AcqRel, Relaxed).is_err() {
                continue;
            }
            // ORDERING: Acquire: the frame must still be segment `n` now that the
            // claim is in place (see README, "stale threads").
            if fh.seg.0.load(Acquire) != n + 1 {
                Self::withdraw(slot, mine, word);
                continue;
            }
            // A bounded queue admits the item by the include below; first
            // check that there is room for it (exact: see `positions_with`).
            if self.bounded() {
                match self.positions_with(n, t) {
                    Ok(held) if held <= self.maxsize() => {}
                    full_or_error => {
                        Self::withdraw(slot, mine, word);
                        return full_or_error.map(|_| Pushed::Full);
                    }
                }
            }
            // An arena item reserves its bytes before its claim is included: if
            // the arena is used up, the claim is withdrawn and the segment sealed
            // at `t`, so that no empty slot is left among the items (`qsize`
            // counts the positions between head and tail).
            let arena = match payload {
                Payload::Arena(bytes) => match Self::reserve_arena(&f, bytes.len()) {
                    Some(offset) => offset,
                    None => {
                        Self::withdraw(slot, mine, word);
                        // ORDERING: AcqRel: as for the seal above.
                        let _ = fh.tail.0.compare_exchange(t, t | SEALED, AcqRel, Relaxed);
                        self.advance_tail(n, &f)?;
                        // As below: our claim may have kept the segment from retiring.
                        // ORDERING: Acquire: a hint; try_retire re-checks under the lock.
                        if hdr.seg_head.0.load(Acquire) > n {
                            self.try_retire(n)?;
                        }
                        continue;
                    }
                },
                Payload::Inline(_) | Payload::Blob { .. } => 0,
            };
            // Include the claim in the segment: only we (or a sealer) can move the
            // tail from `t`. This admits the item (bounded queues: checked above,
            // and no other position appeared if the tail is still `t`) and counts
            // its task (joinable queues).
            // ORDERING: AcqRel: pairs with consumers' Acquire loads of the tail.
            if fh.tail.0.compare_exchange(t, t + 1, AcqRel, Relaxed).is_err() {
                Self::withdraw(slot, mine, word); // sealed at `t` meanwhile
                // Our claim may have been all that kept the segment from being
                // retired (consumers may be done with it already).
                // ORDERING: Acquire: a hint; try_retire re-checks under the lock.
                if hdr.seg_head.0.load(Acquire) > n {
                    self.try_retire(n)?;
                }
                continue;
            }
            Self::fill(&f, slot, payload, arena);
            // ORDERING: SeqCst: the commit publishes the item (Release part) and is
            // ordered before the producer's check for sleeping consumers (Dekker
            // with the consumer's registration, see waits.rs).
            return Ok(match slot.stamp.compare_exchange(mine, Stamp::new(lap, READY).pack(), SeqCst, Relaxed) {
                Ok(_) => Pushed::Done,
                Err(_) => Pushed::Lost,
            });
        }
    }

    /// Undoes a claim that was not included in a segment.
    pub(super) fn withdraw(slot: &Slot, mine: u64, before: u64) {
        // ORDERING: Release: hands the slot back as it was. The CAS fails
        // harmlessly if the claim landed in a frame that has since been reset.
        let _ = slot.stamp.compare_exchange(mine, before, Release, Relaxed);
    }

    /// Reserves `len` bytes of the segment's arena; their offset, or `None`
    /// when the arena has no room left.
    fn reserve_arena(f: &Frame<'_>, len: usize) -> Option<u64> {
        let need = (len as u64).next_multiple_of(8);
        // ORDERING: Relaxed: a unique range is all that is needed; the bytes are
        // published by the stamp (Release) of the slot that refers to them.
        let offset = f.header().arena.0.fetch_add(need, Relaxed);
        // Checked: the counter is in shared memory, which any process with
        // the queue can write; a wrapped sum would pass a plain comparison.
        offset.checked_add(need).is_some_and(|end| end <= f.arena_len()).then_some(offset)
    }

    /// Writes the item into a claimed slot; an arena item goes to `arena`,
    /// the range [`Ring::reserve_arena`] gave it.
    fn fill(f: &Frame<'_>, slot: &Slot, payload: Payload<'_>, arena: u64) {
        let data = slot.data.get().cast::<u8>();
        let (kind, len) = match payload {
            Payload::Inline(bytes) => {
                // SAFETY: we own the slot (WRITING claim included in the segment):
                // no one else reads or writes its data until we publish the stamp;
                // bytes.len() <= INLINE_MAX, the data field's size.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len()) };
                (KIND_INLINE, bytes.len() as u64)
            }
            Payload::Arena(bytes) => {
                // SAFETY: [arena, arena + len) is ours alone (reserved by bump
                // allocation) and inside the arena (checked by reserve_arena); the
                // slot's first 8 data bytes are ours as above.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), f.arena_ptr(arena), bytes.len());
                    data.cast::<u64>().write_unaligned(arena);
                }
                (KIND_ARENA, bytes.len() as u64)
            }
            Payload::Blob { offset, len, capacity } => {
                // SAFETY: the slot is ours as above, and holds 16 bytes and more.
                unsafe {
                    data.cast::<u64>().write_unaligned(offset);
                    data.add(8).cast::<u64>().write_unaligned(capacity);
                }
                (KIND_BLOB, len)
            }
        };
        // ORDERING: Relaxed: published by the stamp's Release.
        slot.meta.store(kind << 56 | len, Relaxed);
    }

    /// Segment `n` is sealed: make sure segment `n + 1` exists and producers go there.
    pub(super) fn advance_tail(&self, n: u64, f: &Frame<'_>) -> io::Result<()> {
        let hdr = self.header();
        // ORDERING: Acquire (all three): re-checks that the move is still needed;
        // the decisive step is the CAS at the end.
        if f.header().seg.0.load(Acquire) != n + 1 || f.header().tail.0.load(Acquire) & SEALED == 0 {
            return Ok(());
        }
        // Tell consumers to look at the tail (before any item can exist in the
        // next segment). Set on a stale frame by a slow thread, the hint only
        // costs readers a load.
        // ORDERING: Release: pairs with consumers' Acquire load of the hint; the
        // seal it announces is already visible (we read it above).
        f.header().seg.0.sealed_hint.store(1, Release);
        if hdr.seg_tail.0.load(Acquire) != n {
            return Ok(());
        }
        self.prepare(n + 1)?;
        // ORDERING: AcqRel: Release publishes the prepared frame (its segment
        // number) to threads that Acquire-load seg_tail.
        let _ = hdr.seg_tail.0.compare_exchange(n, n + 1, AcqRel, Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Duration;

    use serde_bytes::ByteBuf;

    use crate::queue::Queue;

    #[test]
    fn an_arena_counter_near_the_top_of_u64_costs_no_item() {
        let q = Queue::<ByteBuf>::new().unwrap();
        q.put(ByteBuf::from(vec![1u8; 1000])).unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap().len(), 1000);
        // Another process may write anything in the shared frame header: a
        // counter whose sum with the next item's size wraps past zero.
        let tail = q.ring.header().seg_tail.0.load(SeqCst);
        q.ring.frame(tail).unwrap().header().arena.0.store(u64::MAX - 7, SeqCst);
        for seed in 0..3u8 {
            let item = ByteBuf::from(vec![seed; 1000]);
            q.put(item.clone()).unwrap();
            assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), item);
        }
        assert!(q.empty());
    }
}
