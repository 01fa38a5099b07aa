//! The shared-memory ring: segments of slots in one sparse memfd, claimed and
//! freed with compare-and-swap on per-slot stamps. The design, and why each
//! step is safe, is in `README.md` beside `queue/mod.rs`. This module holds
//! the ring's memory (mapping, frames, blobs) and snapshots of its state;
//! the lock-free protocol is split by job:
//!
//! - [`produce`]: claiming, filling and committing slots, sealing segments;
//! - [`consume`]: taking items, resolving slots whose owner died;
//! - [`frames`]: preparing and retiring the frames segments live in, under
//!   the robust frame lock;
//! - [`decode`]: reading a slot another process wrote (untrusted bytes);
//! - [`liveness`]: when an owner that blocks us is certainly dead.
//!
//! Blocking, wake-ups and accounting are in `waits.rs`.

mod consume;
mod decode;
mod frames;
mod kept_blob;
mod liveness;
mod produce;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::layout::{
    ARENA_ITEM_MAX, BLOB_BASE, Config, FLAG_BOUNDED, FLAG_JOINABLE, Frame, FrameHeader, Geometry, HEADER_LEN, Header,
    INLINE_MAX, ITEM_MAX, Line, MAGIC, MIXED_NAMESPACES, VERSION,
};
use super::states::{LapOrder, READY, SEALED, SKIP, Stamp, TAKING};
use super::waits::ReclaimPacer;
use crate::sys::imp::shm::Mapping;
use crate::sys::imp::sparse::{self, PAGE, Window};
use crate::sys::imp::thread;
use decode::blob_range;
pub use decode::fuzz_slot_decode;
pub(super) use liveness::{LIVENESS_DELAY, Watch, owner_gone};

/// An item's bytes as they go into a slot.
#[derive(Debug, Clone, Copy)]
pub(super) enum Payload<'a> {
    /// Stored in the slot (at most `INLINE_MAX` bytes).
    Inline(&'a [u8]),
    /// Stored in the segment's arena (at most `ARENA_ITEM_MAX` bytes).
    Arena(&'a [u8]),
    /// Already written to the blob area at `BLOB_BASE + offset`, in a
    /// range of `capacity` bytes (whole pages, `len` or more: a kept blob
    /// reused, see `kept_blob`).
    Blob { offset: u64, len: u64, capacity: u64 },
}

impl<'a> Payload<'a> {
    /// The place for `bytes`, unless it is a blob (see [`Ring::write_blob`]).
    pub(super) fn for_bytes(bytes: &'a [u8]) -> Option<Payload<'a>> {
        if bytes.len() <= INLINE_MAX {
            Some(Payload::Inline(bytes))
        } else if bytes.len() <= ARENA_ITEM_MAX {
            Some(Payload::Arena(bytes))
        } else {
            None
        }
    }
}

/// What a consumer got from a slot.
#[derive(Debug)]
pub(super) enum Got {
    /// The item's bytes are in the caller's buffer.
    Bytes,
    /// The item is a blob, still to be read (see [`Ring::read_blob`]).
    Blob { offset: u64, len: u64, capacity: u64 },
}

/// One step of a consumer.
#[derive(Debug)]
pub(super) enum Step {
    /// An item was taken.
    Item(Got),
    /// Nothing to take.
    Empty,
    /// The head slot is owned by a thread that is writing it, or that has
    /// claimed it and not yet moved the head: wait, and check the owner.
    Blocked(Blocked),
}

/// A slot some thread owns, found where the caller wants to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Blocked {
    seg: u64,
    pos: u64,
    word: u64,
}

impl Blocked {
    /// True when the owner is a consumer (between its claim and moving the
    /// head: a few instructions, unless it was descheduled).
    pub(super) fn by_consumer(&self) -> bool {
        Stamp::unpack(self.word).state == TAKING
    }

    /// Identifies this wait (slot, lap, owner) for the liveness timer.
    pub(super) fn key(&self) -> u64 {
        self.word ^ self.pos.rotate_left(32) ^ self.seg.rotate_left(16)
    }
}

/// The head slot as [`Ring::head_slot`] read it.
#[derive(Debug, Clone, Copy)]
struct HeadSlot<'a> {
    /// The head segment's frame header.
    frame: &'a FrameHeader,
    /// The head position.
    pos: u64,
    /// The slot's lap compared with the lap of `pos`.
    lap: LapOrder,
    /// The slot's stamp.
    stamp: Stamp,
}

/// How a push ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// The item is in the queue.
    Done,
    /// A consumer took this producer for dead and skipped its slot (its
    /// position, and its task, went with the skip): the caller retries.
    Lost,
    /// A bounded queue had no room for the claim when it was to be included:
    /// the claim was withdrawn; the caller waits for room and retries.
    Full,
}

/// The queue's shared memory as seen from one process.
#[derive(Debug)]
pub(super) struct Ring {
    /// The main header page; owns the memfd.
    header: Mapping,
    /// The frame tables after the header (`frame_of`, `frame_state`).
    tables: Window,
    /// Frame windows by frame index, mapped on first use.
    windows: Box<[OnceLock<Window>]>,
    geometry: Geometry,
    flags: u32,
    maxsize: u64,
    /// Paces this process's looks for room and tasks held by dead consumers.
    reclaim_pacer: ReclaimPacer,
}

impl Ring {
    /// Creates the memory of a new queue.
    pub(super) fn create(geometry: Geometry, flags: u32, maxsize: u64, type_hash: u64) -> io::Result<Ring> {
        let geometry = geometry.validate()?;
        let header = Mapping::anonymous("multiproc-queue", HEADER_LEN)?;
        sparse::set_len(header.as_fd(), geometry.file_len())?;
        let config = Config {
            magic: MAGIC,
            version: VERSION,
            flags,
            slots: geometry.slots,
            frames: geometry.frames,
            arena: geometry.arena,
            maxsize,
            type_hash,
        };
        // SAFETY: the mapping is page-aligned, HEADER_LEN long and zeroed; nobody
        // else can see it yet, so this plain write races with nothing. The
        // atomics after the config start at zero, which is their initial state.
        unsafe { header.as_ptr().cast::<Line<Config>>().write(Line(config)) };
        let ring = Ring::from_parts(header, geometry, flags, maxsize)?;
        // Segment 0 lives in frame 0 from the start (frame_of[0] is already 0).
        // ORDERING: Relaxed/Release: no other process can see the queue yet;
        // the pattern of `prepare` is kept.
        ring.frame_state(0).store(1, Relaxed);
        ring.frame_at(0)?.header().seg.0.store(1, Release);
        ring.header().pidns.0.store(thread::current().pidns, Relaxed);
        Ok(ring)
    }

    /// Maps a queue received from another process, checking that it is a
    /// queue of this layout, flavour and item type. A `Queue` handle may refer
    /// to a joinable queue (it is one, with task counting); a `JoinableQueue`
    /// handle requires one.
    pub(super) fn attach(fd: OwnedFd, require_joinable: bool, type_hash: u64) -> io::Result<Ring> {
        let header = Mapping::from_fd(fd, HEADER_LEN)?;
        // SAFETY: the mapping is at least HEADER_LEN long and page-aligned; the
        // config was written before the descriptor was ever shared and is never
        // written again, so reading it races with nothing.
        let config = unsafe { &(*header.as_ptr().cast::<Line<Config>>()).0 };
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a matching queue: {what}"));
        if config.magic != MAGIC || config.version != VERSION {
            return Err(bad("unknown layout (another multiproc build?)"));
        }
        if require_joinable && config.flags & FLAG_JOINABLE == 0 {
            return Err(bad("a plain Queue cannot be received as a JoinableQueue"));
        }
        if config.type_hash != type_hash {
            return Err(bad("the queue carries another item type"));
        }
        let geometry = Geometry { slots: config.slots, frames: config.frames, arena: config.arena }.validate()?;
        if sparse::file_len(header.as_fd())? < geometry.file_len() {
            return Err(bad("memory file too short"));
        }
        let (flags, maxsize) = (config.flags, config.maxsize);
        let ring = Ring::from_parts(header, geometry, flags, maxsize)?;
        let mine = thread::current().pidns;
        // ORDERING: Relaxed: a process from another namespace marks the queue
        // before it records any owner (its first claim follows with a stronger
        // ordering).
        if mine == 0 || ring.header().pidns.0.load(Relaxed) != mine {
            ring.header().pidns.0.store(MIXED_NAMESPACES, SeqCst);
        }
        Ok(ring)
    }

    fn from_parts(header: Mapping, geometry: Geometry, flags: u32, maxsize: u64) -> io::Result<Ring> {
        let tables = Window::map(header.as_fd(), HEADER_LEN as u64, geometry.meta_len() - HEADER_LEN)?;
        let windows = (0..geometry.frames).map(|_| OnceLock::new()).collect();
        Ok(Ring { header, tables, windows, geometry, flags, maxsize, reclaim_pacer: ReclaimPacer::new() })
    }

    /// The memory file (sent to other processes).
    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.header.as_fd()
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and HEADER_LEN >= size_of::<Header>();
        // every shared field is an atomic, and the config is read-only.
        unsafe { &*self.header.as_ptr().cast::<Header>() }
    }

    pub(super) fn bounded(&self) -> bool {
        self.flags & FLAG_BOUNDED != 0
    }

    pub(super) fn joinable(&self) -> bool {
        self.flags & FLAG_JOINABLE != 0
    }

    pub(super) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    pub(super) fn reclaim_pacer(&self) -> &ReclaimPacer {
        &self.reclaim_pacer
    }

    /// The entry of `frame_of` for segment `seg`: the index of its frame.
    fn frame_of(&self, seg: u64) -> &AtomicU32 {
        let offset = self.geometry.frame_of_offset() - HEADER_LEN + (seg % self.geometry.frames) as usize * 4;
        // SAFETY: the tables window covers frame_of (frames u32 entries, 4-byte
        // aligned in a page-aligned mapping); shared access is atomic.
        unsafe { &*self.tables.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The entry of `frame_state` for frame `index`: segment + 1 of its
    /// occupant, or 0 when free.
    fn frame_state(&self, index: u32) -> &AtomicU64 {
        let offset = self.geometry.frame_state_offset() - HEADER_LEN + index as usize * 8;
        // SAFETY: index < frames (callers), so the entry lies in the tables
        // window, 8-byte aligned; shared access is atomic.
        unsafe { &*self.tables.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The frame of segment `seg`. The caller validates that the frame still
    /// holds `seg` (`frame.header().seg == seg + 1`).
    pub(super) fn frame(&self, seg: u64) -> io::Result<Frame<'_>> {
        // ORDERING: Acquire: pairs with the Release store in `prepare`, which
        // follows the frame's initialisation.
        self.frame_at(self.frame_of(seg).load(Acquire))
    }

    /// Frame `index`, mapped on first use and kept mapped.
    fn frame_at(&self, index: u32) -> io::Result<Frame<'_>> {
        let Some(cell) = self.windows.get(index as usize) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt queue frame table"));
        };
        let window = match cell.get() {
            Some(w) => w,
            None => self.map_frame(cell, index)?,
        };
        // SAFETY: the window maps frame_len bytes at a page-aligned address and
        // lives as long as `self` (windows are never unmapped before the ring).
        Ok(unsafe { Frame::new(window.as_ptr(), self.geometry, index) })
    }

    #[cold]
    fn map_frame<'s>(&'s self, cell: &'s OnceLock<Window>, index: u32) -> io::Result<&'s Window> {
        let len = self.geometry.frame_len() as usize;
        let window = Window::map(self.header.as_fd(), self.geometry.frame_offset(index), len)?;
        // If another thread won the race, its window is used and ours unmapped.
        let _ = cell.set(window);
        Ok(cell.get().expect("window was just set"))
    }

    /// Writes a large item to the blob area; returns where it went.
    pub(super) fn write_blob(&self, bytes: &[u8]) -> io::Result<Payload<'static>> {
        let len = bytes.len() as u64;
        if len > ITEM_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "item larger than 64 GiB"));
        }
        // ORDERING: Relaxed: a unique offset is all that is needed; the bytes are
        // published by the slot's stamp (Release) that refers to them.
        let (offset, capacity) = self.take_kept_blob(len).unwrap_or_else(|| {
            let capacity = len.next_multiple_of(PAGE);
            (self.header().blob_tail.0.fetch_add(capacity, Relaxed), capacity)
        });
        // Checked: the offset comes from shared memory (blob_tail), which any
        // process with the queue can write.
        let at = BLOB_BASE
            .checked_add(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the queue's blob area is corrupt"))?;
        if let Err(e) = sparse::write_all_at(self.fd(), bytes, at) {
            // Whatever was written before the failure (memory running out
            // mid-write) would stay until the queue is dropped.
            self.discard_blob(offset, capacity);
            return Err(e);
        }
        Ok(Payload::Blob { offset, len, capacity })
    }

    /// Reads a blob (`len` bytes in a range of `capacity`), then keeps it
    /// for a later blob or frees its memory (see `kept_blob`). The numbers
    /// come from a slot another process wrote: a range outside the blob
    /// area is an error.
    pub(super) fn read_blob(&self, offset: u64, len: u64, capacity: u64) -> io::Result<Vec<u8>> {
        let start = blob_range(offset, capacity)?.0;
        let bytes = sparse::read_exact_at(self.fd(), len as usize, start);
        if bytes.is_ok() {
            self.keep_or_free_blob(offset, capacity);
        } else {
            self.discard_blob(offset, capacity);
        }
        bytes
    }

    /// Frees the memory of a blob's range (`capacity` bytes) without
    /// reading it.
    pub(super) fn discard_blob(&self, offset: u64, capacity: u64) {
        if let Ok((start, pages)) = blob_range(offset, capacity) {
            let _ = sparse::punch_hole(self.fd(), start, pages);
        }
    }

    /// True when a consumer would find something to do now (an item, a slot to
    /// skip, a segment to move past) or the queue is closed. Never blocks.
    pub(super) fn has_work(&self) -> bool {
        let hdr = self.header();
        // ORDERING: SeqCst (closed and stamp loads): this is the sleeper's
        // re-check in the handshake of waits.rs, after it registered; the
        // producer's SeqCst commit and its check for sleepers are the other
        // half, so either we see the item or the producer sees us. The others
        // are Acquire hints.
        if hdr.closed.0.load(SeqCst) != 0 {
            return true;
        }
        // A head we cannot read is work (true): the get that follows finds out
        // what it is (an error, or a head that moved on), where a sleep could
        // wait for a wake-up that never comes.
        let Some(HeadSlot { frame: fh, pos: h, lap, stamp: s }) = self.head_slot(SeqCst) else { return true };
        match (lap, s.state) {
            (LapOrder::Newer, _) | (LapOrder::Same, READY | SKIP | TAKING) => true,
            // Writing (its producer's commit will wake us) or nothing at the
            // head: only a finished segment is work.
            _ => {
                if fh.seg.0.sealed_hint.load(Acquire) == 0 {
                    return false;
                }
                let t = fh.tail.0.load(SeqCst);
                t & SEALED != 0 && h >= t & !SEALED
            }
        }
    }

    /// A snapshot of the head slot: the head segment's frame (validated to
    /// still hold the segment `seg_head` named), the head position, how the
    /// slot's lap compares with that position's lap, and its stamp, loaded
    /// with `stamp_order`; `None` when the head segment could not be read
    /// (its frame not mappable, or reused since `seg_head` was read). Callers
    /// decide what that means for them. The get that follows a snapshot
    /// decides; the snapshot is only a hint.
    #[inline(always)]
    fn head_slot(&self, stamp_order: Ordering) -> Option<HeadSlot<'_>> {
        // ORDERING: Acquire (all but the stamp): validated as in take_once.
        let n = self.header().seg_head.0.load(Acquire);
        let f = self.frame(n).ok()?;
        let frame = f.header();
        if frame.seg.0.load(Acquire) != n + 1 {
            return None;
        }
        let pos = frame.head.0.load(Acquire);
        // ORDERING: the caller's (see each caller).
        let stamp = Stamp::unpack(f.slot(pos).stamp.load(stamp_order));
        Some(HeadSlot { frame, pos, lap: stamp.lap_vs(f.lap(pos)), stamp })
    }

    /// Items in the queue (approximate while others put and get).
    pub(super) fn len(&self) -> u64 {
        self.positions()
    }

    /// Positions between head and tail over the live segments: items queued
    /// (including ones being written, or whose producer died writing them,
    /// until consumers skip them). Never less than the positions queued when
    /// the call began that no consumer has taken since: `seg_head` and each
    /// segment's head are read before the tails (which only grow), and a
    /// consumer counts a taken item's task before it moves the head past it,
    /// so `taken_tasks` read after this covers the items it missed (the
    /// unfinished-task count relies on it, see `waits.rs`). A bounded
    /// queue's room is `maxsize` minus this (see [`Ring::positions_with`]).
    pub(super) fn positions(&self) -> u64 {
        let hdr = self.header();
        // ORDERING: SeqCst (seg_head here, the heads in `positions_in`): the
        // condition of a producer waiting for room re-checks it after it
        // registers as a sleeper, and a consumer's head move (SeqCst) is
        // followed by its check for sleepers (the not_full handshake of
        // waits.rs). Acquire (seg_tail): a snapshot, pairing with the Release
        // CAS that moved it.
        let first = hdr.seg_head.0.load(SeqCst);
        let last = hdr.seg_tail.0.load(Acquire);
        let mut total = 0u64;
        for seg in first..=last.max(first).min(first.saturating_add(self.geometry.frames)) {
            // A frame this process cannot map is left out: a snapshot.
            total = total.saturating_add(self.positions_in(seg, None).unwrap_or(0));
        }
        total
    }

    /// The positions a bounded queue holds once the claim at position `t` of
    /// segment `n` is included: those of the live segments before `n`, those
    /// of `n` up to `t`, and one. `n` must be the tail segment and `t` its
    /// tail as the caller read it; the caller then moves the tail from `t`
    /// (the include CAS), which fails if any producer included or sealed
    /// anything since. So no other position can appear meanwhile, and since
    /// heads only grow and the tails before `n` are sealed, a stale read only
    /// overstates the count: admitting an item when this is at most
    /// `maxsize` never lets the queue hold more. The admission and the
    /// include are then one atomic step, with nothing to leak if the
    /// producer dies (README, "Accounting").
    pub(super) fn positions_with(&self, n: u64, t: u64) -> io::Result<u64> {
        // ORDERING: SeqCst: as in `positions`.
        let first = self.header().seg_head.0.load(SeqCst);
        if first > n {
            // Consumers left `n`: it is sealed, and the include CAS fails.
            return Ok(1);
        }
        let mut total = 1u64;
        // A frame that cannot be mapped is an error here: leaving it out
        // could admit an item too many.
        for seg in first..n.min(first.saturating_add(self.geometry.frames)) {
            total = total.saturating_add(self.positions_in(seg, None)?);
        }
        Ok(total.saturating_add(self.positions_in(n, Some(t))?))
    }

    /// Tail − head of segment `seg`, with `tail` standing for its tail if
    /// given; 0 once its frame no longer holds it (it was retired).
    fn positions_in(&self, seg: u64, tail: Option<u64>) -> io::Result<u64> {
        let f = self.frame(seg)?;
        let fh = f.header();
        // ORDERING: Acquire: validation, pairing with the Release store in
        // `prepare`.
        if fh.seg.0.load(Acquire) != seg + 1 {
            return Ok(0);
        }
        // ORDERING: SeqCst: see `positions`.
        let head = fh.head.0.load(SeqCst);
        // ORDERING: Acquire: tails only grow, and sealed ones are final.
        let tail = tail.unwrap_or_else(|| fh.tail.0.load(Acquire) & !SEALED);
        Ok(tail.saturating_sub(head))
    }
}
