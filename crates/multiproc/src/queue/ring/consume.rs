//! Consumers: take the item at the head of the queue, and resolve a slot
//! whose owner (producer or consumer) died holding it.

use std::io;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};

use super::decode::{SlotItem, decode_slot};
use super::{Blocked, Got, HeadSlot, Ring, Step, owner_gone};
use crate::queue::layout::{Frame, Slot};
use crate::queue::states::{FREE, LapOrder, READY, SEALED, SKIP, Stamp, TAKING, WRITING};

impl Ring {
    /// Takes the item at the head, if there is one; its bytes go to `buf`.
    pub(in crate::queue) fn take_once(&self, me: u32, buf: &mut Vec<u8>) -> io::Result<Step> {
        let hdr = self.header();
        loop {
            // ORDERING: Acquire: pairs with the Release CAS that moved seg_head.
            let n = hdr.seg_head.0.load(Acquire);
            let f = self.frame(n)?;
            let fh = f.header();
            // ORDERING: Acquire: pairs with the Release store in `prepare`.
            if fh.seg.0.load(Acquire) != n + 1 {
                // ORDERING: Acquire: as above.
                if hdr.seg_head.0.load(Acquire) != n {
                    continue;
                }
                return Ok(Step::Empty);
            }
            // ORDERING: Acquire: orders the head before the stamp load; the stamp
            // CAS decides.
            let h = fh.head.0.load(Acquire);
            let slot = f.slot(h);
            let lap = f.lap(h);
            // ORDERING: Acquire: pairs with the producer's Release/SeqCst commit,
            // making the item's bytes visible.
            let word = slot.stamp.load(Acquire);
            let s = Stamp::unpack(word);
            match (s.lap_vs(lap), s.state) {
                (LapOrder::Newer, _) => continue, // `h` is stale
                (LapOrder::Same, READY | SKIP) => {
                    let ready = s.state == READY;
                    // A joinable queue's item carries its task in its position
                    // until the head moves past it; from then on the task is
                    // among the taken ones. It is counted there first, so the
                    // unfinished count never dips in between (a consumer killed
                    // in the two steps after its claim may leave it counted).
                    let task = ready && self.joinable();
                    let mine = Stamp { task, ..Stamp::owned(lap, TAKING, me) }.pack();
                    // ORDERING: AcqRel: Acquire re-reads the committed item; Release
                    // publishes our claim.
                    if slot.stamp.compare_exchange(word, mine, AcqRel, Relaxed).is_err() {
                        continue;
                    }
                    if task {
                        self.count_taken_task(1);
                    }
                    // ORDERING: Acquire / SeqCst: validate the frame, then move the
                    // head (only the owner of the head slot moves it). The head
                    // move's Release publishes the task count above to anyone who
                    // sees the head moved (see `Ring::positions`); it is SeqCst
                    // because it makes room in a bounded queue, the state change
                    // of the not_full handshake (`room_freed` below checks for
                    // sleepers).
                    if fh.seg.0.load(Acquire) != n + 1 || fh.head.0.compare_exchange(h, h + 1, SeqCst, Relaxed).is_err()
                    {
                        if task {
                            self.count_taken_task(-1);
                        }
                        Self::withdraw(slot, mine, word);
                        continue;
                    }
                    let got = if ready { Some(self.copy_out(&f, slot, buf)) } else { None };
                    // ORDERING: SeqCst: Release hands the slot to the next lap's
                    // producer after our reads; SeqCst orders it before the seg_head
                    // load below (a retirement scan either sees this release or is
                    // retried by us).
                    slot.stamp.store(Stamp::new(lap + 1, FREE).pack(), SeqCst);
                    // The room was made by the head move; producers are woken
                    // once the slot is free as well (a producer whose position
                    // wraps to it would otherwise find it still taken).
                    self.room_freed();
                    // ORDERING: SeqCst: see the release above.
                    if hdr.seg_head.0.load(SeqCst) != n {
                        self.try_retire(n)?;
                    }
                    match got {
                        Some(got) => return got.map(Step::Item),
                        None => continue,
                    }
                }
                (LapOrder::Same, TAKING) => return Ok(Step::Blocked(Blocked { seg: n, pos: h, word })),
                (LapOrder::Same, WRITING) if fh.tail.0.load(Acquire) & !SEALED > h => {
                    // ORDERING (tail load): Acquire: the claim is included; its
                    // producer is writing.
                    return Ok(Step::Blocked(Blocked { seg: n, pos: h, word }));
                }
                _ => {
                    // Nothing at `h` (free, an unincluded claim, or the slot still
                    // on the previous lap). Is this segment finished? Only look
                    // at the producers' tail line once the segment says it may be.
                    // ORDERING: Acquire: pairs with the Release store in advance_tail.
                    if fh.seg.0.sealed_hint.load(Acquire) == 0 {
                        return Ok(Step::Empty);
                    }
                    // ORDERING: Acquire: pairs with the sealing CAS.
                    let t = fh.tail.0.load(Acquire);
                    if t & SEALED == 0 || h < t & !SEALED {
                        return Ok(Step::Empty);
                    }
                    // ORDERING: Acquire: a hint; advance_tail re-checks.
                    if hdr.seg_tail.0.load(Acquire) == n && self.advance_tail(n, &f).is_err() {
                        return Ok(Step::Empty); // no frame for the next segment yet
                    }
                    // ORDERING: AcqRel: Release publishes the move to consumers.
                    if hdr.seg_head.0.compare_exchange(n, n + 1, AcqRel, Relaxed).is_ok() {
                        self.try_retire(n)?;
                    }
                }
            }
        }
    }

    /// Copies an item out of a slot we own (TAKING).
    fn copy_out(&self, f: &Frame<'_>, slot: &Slot, buf: &mut Vec<u8>) -> io::Result<Got> {
        // ORDERING: Relaxed: published by the stamp, acquired by our claim.
        let meta = slot.meta.load(Relaxed);
        // SAFETY: we own the slot (TAKING); its data was written before the
        // stamp we acquired, and nobody writes it while we own it.
        let data = unsafe { &*slot.data.get() };
        buf.clear();
        match decode_slot(meta, data, f.arena_len())? {
            SlotItem::Inline(bytes) => buf.extend_from_slice(bytes),
            SlotItem::Arena { offset, len } => {
                // SAFETY: the range lies in the arena (checked by decode_slot)
                // and was written by the producer before its commit, which our
                // claim acquired; no one writes it again before the segment is
                // retired.
                buf.extend_from_slice(unsafe { std::slice::from_raw_parts(f.arena_ptr(offset), len) });
            }
            SlotItem::Blob { offset, len, capacity } => return Ok(Got::Blob { offset, len, capacity }),
        }
        Ok(Got::Bytes)
    }

    /// Frees the slots behind the head of the head segment that consumers
    /// claimed and died holding: they had moved the head but not released
    /// the slot (they were copying the item out). Their items are lost with
    /// them; a task they held is given back (their room went with the head
    /// move). Otherwise only the segment's retirement frees them, which may
    /// never come (a joinable queue's `join` would wait for the task).
    /// For threads in `join`; true if it freed any.
    pub(in crate::queue) fn reclaim_dead_takers(&self) -> io::Result<bool> {
        let hdr = self.header();
        // ORDERING: Acquire: as in take_once.
        let n = hdr.seg_head.0.load(Acquire);
        let f = self.frame(n)?;
        let fh = f.header();
        // ORDERING: Acquire (both): validation as in take_once; every position
        // before the head was claimed by the consumer that moved past it.
        if fh.seg.0.load(Acquire) != n + 1 {
            return Ok(false);
        }
        let head = fh.head.0.load(Acquire);
        let (lap, at) = (f.lap(head), head & (f.slots() - 1));
        let mut freed = false;
        for index in 0..f.slots() {
            let slot = f.slot(index);
            // ORDERING: Acquire: the claim as its owner published it; the CAS decides.
            let word = slot.stamp.load(Acquire);
            let s = Stamp::unpack(word);
            let behind = match s.lap_vs(lap) {
                LapOrder::Older => true,
                LapOrder::Same => index < at,
                LapOrder::Newer => false,
            };
            if s.state != TAKING || s.tid == 0 || !behind || !owner_gone(hdr, s.tid) {
                continue;
            }
            freed |= self.free_dead_claim(slot, word, Stamp::new(s.lap + 1, FREE).pack());
        }
        Ok(freed)
    }

    /// Frees a slot whose owner died holding it (its stamp read as `word`)
    /// by stamping it `free`, and marks done the taken task its claim held
    /// (`task`); true if this thread did it (another may have first).
    pub(in crate::queue) fn free_dead_claim(&self, slot: &Slot, word: u64, free: u64) -> bool {
        // ORDERING: AcqRel: only one thread frees the slot and gives back what
        // the dead owner held; Release hands the slot to the next lap's producer.
        let won = slot.stamp.compare_exchange(word, free, AcqRel, Relaxed).is_ok();
        if won {
            if Stamp::unpack(word).task {
                let _ = self.task_done();
            }
            self.room_freed();
        }
        won
    }

    /// True when the head slot is an item whose producer died writing it: a
    /// `get` would skip it and go on, so the queue is ready for `wait`
    /// ([`Ring::has_work`] leaves writing slots to their producer's wake-up,
    /// which a dead producer never gives).
    pub(in crate::queue) fn head_writer_dead(&self) -> bool {
        // ORDERING: Acquire (stamp and tail): a snapshot, not part of any
        // handshake (has_work carries the sleeper protocol); the get that
        // follows decides. A head that cannot be read is not this case (false):
        // the caller asks has_work too, which reports it as work.
        let Some(HeadSlot { frame: fh, pos: h, lap, stamp: s }) = self.head_slot(Acquire) else { return false };
        lap == LapOrder::Same
            && s.state == WRITING
            && fh.tail.0.load(Acquire) & !SEALED > h
            && owner_gone(self.header(), s.tid)
    }

    /// Resolves a [`Blocked`] slot whose owner is dead: a producer's slot is
    /// skipped, a consumer's claim is completed for it (the item it was taking
    /// is lost with it). Returns true if anything changed.
    pub(in crate::queue) fn resolve_dead(&self, blocked: Blocked) -> io::Result<bool> {
        let f = self.frame(blocked.seg)?;
        let fh = f.header();
        let s = Stamp::unpack(blocked.word);
        let slot = f.slot(blocked.pos);
        // ORDERING: Acquire: validation as in take_once.
        if fh.seg.0.load(Acquire) != blocked.seg + 1 || !owner_gone(self.header(), s.tid) {
            return Ok(false);
        }
        match s.state {
            WRITING => {
                // ORDERING: AcqRel: only one thread abandons the slot; Release
                // publishes the SKIP to consumers.
                let skip = Stamp { state: SKIP, tid: 0, ..s }.pack();
                Ok(slot.stamp.compare_exchange(blocked.word, skip, AcqRel, Relaxed).is_ok())
            }
            TAKING => {
                // It died before moving the head, maybe before counting its
                // task among the taken ones: that task stays counted if it
                // was (at most one, as for a consumer killed after its get).
                // The claim forgets it first, so that nobody gives it back
                // once the head has moved past the slot.
                let mut word = blocked.word;
                if s.task {
                    let kept = Stamp { task: false, ..s }.pack();
                    // ORDERING: AcqRel: as below, the CAS decides who resolves it.
                    if slot.stamp.compare_exchange(word, kept, AcqRel, Relaxed).is_err() {
                        return Ok(false);
                    }
                    word = kept;
                }
                // ORDERING: SeqCst: the head moves past the dead claim once; as
                // in take_once, the move makes room (free_dead_claim wakes).
                let _ = fh.head.0.compare_exchange(blocked.pos, blocked.pos + 1, SeqCst, Relaxed);
                Ok(self.free_dead_claim(slot, word, Stamp::new(s.lap + 1, FREE).pack()))
            }
            _ => Ok(false),
        }
    }
}
