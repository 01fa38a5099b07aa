//! The shared-memory ring: segments of slots in one sparse memfd, claimed and
//! freed with compare-and-swap on per-slot stamps. This file holds the lock-free
//! protocol; blocking, wake-ups and accounting are in `waits.rs`. The design,
//! and why each step is safe, is in `README.md` beside this file.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use super::layout::{
    ARENA_ITEM_MAX, BLOB_BASE, Config, FLAG_BOUNDED, FLAG_JOINABLE, Frame, Geometry, HEADER_LEN, Header, INLINE_MAX,
    ITEM_MAX, KIND_ARENA, KIND_BLOB, KIND_INLINE, Line, MAGIC, MIXED_NAMESPACES, Slot, VERSION,
};
use super::states::{FREE, LapOrder, READY, SEALED, SKIP, Stamp, TAKING, WRITING};
use super::waits::Backoff;
use crate::sys::imp::shm::Mapping;
use crate::sys::imp::sparse::{self, PAGE, Window};
use crate::sys::imp::thread::{self, tid_alive};

/// How long an owner may sit on a slot or the frame lock before its thread
/// is checked for life (and then how often it is re-checked).
pub(super) const LIVENESS_DELAY: Duration = Duration::from_millis(2);
/// How long preparing a frame waits for the last readers of its previous
/// segment before reporting the queue as exhausted.
const FRAME_WAIT: Duration = Duration::from_millis(200);
/// Frames with a lower index are retired warm (see `retire_locked`).
const WARM_FRAMES: u32 = 4;

/// An item's bytes as they go into a slot.
#[derive(Debug, Clone, Copy)]
pub(super) enum Payload<'a> {
    /// Stored in the slot (at most `INLINE_MAX` bytes).
    Inline(&'a [u8]),
    /// Stored in the segment's arena (at most `ARENA_ITEM_MAX` bytes).
    Arena(&'a [u8]),
    /// Already written to the blob area at `BLOB_BASE + offset`.
    Blob { offset: u64, len: u64 },
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
    Blob { offset: u64, len: u64 },
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

/// How a push ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// The item is in the queue.
    Done,
    /// A consumer took this producer for dead and skipped its slot, giving
    /// back its permit and task: the caller takes them again and retries.
    Lost,
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
        Ok(Ring { header, tables, windows, geometry, flags, maxsize })
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
        let offset = self.header().blob_tail.0.fetch_add(len.next_multiple_of(PAGE), Relaxed);
        sparse::write_all_at(self.fd(), bytes, BLOB_BASE + offset)?;
        Ok(Payload::Blob { offset, len })
    }

    /// Reads a blob and frees its memory. `offset` and `len` come from a
    /// slot another process wrote: a range outside the blob area is an error.
    pub(super) fn read_blob(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let start = blob_range(offset, len)?.0;
        let bytes = sparse::read_exact_at(self.fd(), len as usize, start);
        self.discard_blob(offset, len);
        bytes
    }

    /// Frees a blob's memory without reading it.
    pub(super) fn discard_blob(&self, offset: u64, len: u64) {
        if let Ok((start, pages)) = blob_range(offset, len) {
            let _ = sparse::punch_hole(self.fd(), start, pages);
        }
    }

    // ---------------------------------------------------------------- producers

    /// Puts one item into the tail segment. The caller holds the item's permit
    /// and task (when the queue counts them).
    pub(super) fn push(&self, payload: Payload<'_>, me: u32) -> io::Result<Pushed> {
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
                        // the claim and give back what it held.
                        // ORDERING: AcqRel: only one thread may withdraw it.
                        if slot.stamp.compare_exchange(word, Stamp::new(lap, FREE).pack(), AcqRel, Relaxed).is_ok() {
                            self.give_back(true);
                        }
                    }
                    backoff.wait();
                    continue;
                }
            }
            let mine = Stamp::owned(lap, WRITING, me, true).pack();
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
            // Include the claim in the segment: only we (or a sealer) can move the
            // tail from `t`.
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
            if !self.fill(&f, slot, payload) {
                // The arena is used up: leave an empty slot behind, seal this
                // segment and go on in the next one.
                // ORDERING: Release: publishes the (unused) slot to consumers.
                let _ = slot.stamp.compare_exchange(mine, Stamp::new(lap, SKIP).pack(), Release, Relaxed);
                self.seal(&f);
                self.advance_tail(n, &f)?;
                continue;
            }
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
    fn withdraw(slot: &Slot, mine: u64, before: u64) {
        // ORDERING: Release: hands the slot back as it was. The CAS fails
        // harmlessly if the claim landed in a frame that has since been reset.
        let _ = slot.stamp.compare_exchange(mine, before, Release, Relaxed);
    }

    /// Writes the item into a claimed slot; false if the arena has no room.
    fn fill(&self, f: &Frame<'_>, slot: &Slot, payload: Payload<'_>) -> bool {
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
                let need = (bytes.len() as u64).next_multiple_of(8);
                // ORDERING: Relaxed: a unique range is all that is needed; the bytes
                // are published by the stamp (Release) of the slot that refers to them.
                let offset = f.header().arena.0.fetch_add(need, Relaxed);
                if offset + need > f.arena_len() {
                    return false;
                }
                // SAFETY: [offset, offset + len) is ours alone (bump allocation) and
                // inside the arena (checked above); the slot's first 8 data bytes are
                // ours as above.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), f.arena_ptr(offset), bytes.len());
                    data.cast::<u64>().write_unaligned(offset);
                }
                (KIND_ARENA, bytes.len() as u64)
            }
            Payload::Blob { offset, len } => {
                // SAFETY: the slot is ours as above.
                unsafe { data.cast::<u64>().write_unaligned(offset) };
                (KIND_BLOB, len)
            }
        };
        // ORDERING: Relaxed: published by the stamp's Release.
        slot.meta.store(kind << 56 | len, Relaxed);
        true
    }

    /// Seals segment `f` at its current tail.
    fn seal(&self, f: &Frame<'_>) {
        let tail = &f.header().tail.0;
        // ORDERING: AcqRel: as for the seal in `push`.
        let _ = tail.fetch_update(AcqRel, Acquire, |t| (t & SEALED == 0).then_some(t | SEALED));
    }

    /// Segment `n` is sealed: make sure segment `n + 1` exists and producers go there.
    fn advance_tail(&self, n: u64, f: &Frame<'_>) -> io::Result<()> {
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

    /// Finds a frame for segment `next` (reusing a free one, lowest index
    /// first, or retiring a finished segment to free one) and publishes it in
    /// `frame_of`.
    fn prepare(&self, next: u64) -> io::Result<()> {
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
                    return Err(exhausted(&self.geometry));
                }
            }
            // A segment that consumers have left still has readers copying
            // items out: wait for them a little.
            if started.elapsed() > FRAME_WAIT {
                return Err(exhausted(&self.geometry));
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
    pub(super) fn try_retire(&self, seg: u64) -> io::Result<()> {
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
    /// give back only their arena; the others are punched out whole. Slots
    /// owned by dead threads are freed on the way.
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
                // ORDERING: AcqRel: only one thread frees a dead owner's slot.
                if slot.stamp.compare_exchange(word, expected, AcqRel, Relaxed).is_ok() {
                    self.give_back(s.owed);
                }
            }
        }
        let offset = self.geometry.frame_offset(index);
        if index < WARM_FRAMES {
            // ORDERING: Relaxed: a snapshot of the bump allocator, which no one
            // moves any more (the segment is sealed and finished).
            let used = fh.arena.0.load(Relaxed).min(f.arena_len());
            let arena = offset + self.geometry.arena_offset();
            sparse::punch_hole(self.fd(), arena, used.next_multiple_of(PAGE))?;
            // ORDERING: Release: validation loads see the frame is no longer `seg`.
            fh.seg.0.number.store(0, Release);
        } else {
            sparse::punch_hole(self.fd(), offset, self.geometry.frame_len())?;
        }
        // ORDERING: Release: as in `init_frame`.
        self.frame_state(index).store(0, Release);
        Ok(true)
    }

    // ---------------------------------------------------------------- consumers

    /// Takes the item at the head, if there is one; its bytes go to `buf`.
    pub(super) fn take_once(&self, me: u32, buf: &mut Vec<u8>) -> io::Result<Step> {
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
                    let owed = ready || s.owed;
                    let mine = Stamp::owned(lap, TAKING, me, owed).pack();
                    // ORDERING: AcqRel: Acquire re-reads the committed item; Release
                    // publishes our claim.
                    if slot.stamp.compare_exchange(word, mine, AcqRel, Relaxed).is_err() {
                        continue;
                    }
                    // ORDERING: Acquire / AcqRel: validate the frame, then move the
                    // head (only the owner of the head slot moves it).
                    if fh.seg.0.load(Acquire) != n + 1 || fh.head.0.compare_exchange(h, h + 1, AcqRel, Relaxed).is_err()
                    {
                        Self::withdraw(slot, mine, word);
                        continue;
                    }
                    let got = if ready { Some(self.copy_out(&f, slot, buf)) } else { None };
                    // ORDERING: SeqCst: Release hands the slot to the next lap's
                    // producer after our reads; SeqCst orders it before the seg_head
                    // load below (a retirement scan either sees this release or is
                    // retried by us).
                    slot.stamp.store(Stamp::new(lap + 1, FREE).pack(), SeqCst);
                    if ready {
                        self.release_permit();
                    } else if owed {
                        self.give_back(true);
                    }
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
            SlotItem::Blob { offset, len } => return Ok(Got::Blob { offset, len }),
        }
        Ok(Got::Bytes)
    }

    /// Resolves a [`Blocked`] slot whose owner is dead: a producer's slot is
    /// skipped, a consumer's claim is completed for it (the item it was taking
    /// is lost with it). Returns true if anything changed.
    pub(super) fn resolve_dead(&self, blocked: Blocked) -> io::Result<bool> {
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
                // ORDERING: AcqRel: the head moves past the dead claim once.
                let _ = fh.head.0.compare_exchange(blocked.pos, blocked.pos + 1, AcqRel, Relaxed);
                let free = Stamp::new(s.lap + 1, FREE).pack();
                // ORDERING: AcqRel: only one thread frees the slot and gives back
                // what the dead consumer held.
                if slot.stamp.compare_exchange(blocked.word, free, AcqRel, Relaxed).is_ok() {
                    self.give_back(s.owed);
                    return Ok(true);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// True when a consumer would find something to do now (an item, a slot to
    /// skip, a segment to move past) or the queue is closed. Never blocks.
    pub(super) fn has_work(&self) -> bool {
        let hdr = self.header();
        // ORDERING: SeqCst (closed and stamp loads): part of the sleeper protocol
        // in waits.rs; the others are Acquire hints.
        if hdr.closed.0.load(SeqCst) != 0 {
            return true;
        }
        let n = hdr.seg_head.0.load(Acquire);
        let Ok(f) = self.frame(n) else { return true };
        let fh = f.header();
        if fh.seg.0.load(Acquire) != n + 1 {
            return true;
        }
        let h = fh.head.0.load(Acquire);
        let s = Stamp::unpack(f.slot(h).stamp.load(SeqCst));
        match (s.lap_vs(f.lap(h)), s.state) {
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

    /// Items in the queue (approximate while others put and get).
    pub(super) fn len(&self) -> u64 {
        let hdr = self.header();
        if self.bounded() {
            // ORDERING: Relaxed: a snapshot.
            return hdr.count.0.load(Relaxed);
        }
        // ORDERING: Acquire: a snapshot of the segments, each re-validated.
        let (first, last) = (hdr.seg_head.0.load(Acquire), hdr.seg_tail.0.load(Acquire));
        let mut total = 0u64;
        for seg in first..=last.max(first).min(first + self.geometry.frames) {
            let Ok(f) = self.frame(seg) else { continue };
            let fh = f.header();
            if fh.seg.0.load(Acquire) != seg + 1 {
                continue;
            }
            let tail = fh.tail.0.load(Acquire) & !SEALED;
            total += tail.saturating_sub(fh.head.0.load(Acquire));
        }
        total
    }

    // ------------------------------------------------------------------ locking

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

/// Where a slot's item is, as its owner described it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SlotItem<'a> {
    /// In the slot itself.
    Inline(&'a [u8]),
    /// `len` bytes at `offset` in the segment's arena (in bounds).
    Arena { offset: u64, len: usize },
    /// A blob, to be read with [`Ring::read_blob`] (which checks its range).
    Blob { offset: u64, len: u64 },
}

/// Decodes a slot's `meta` word and data (written by another process): an
/// error for a kind or length that does not fit, never an out-of-bounds
/// range. `arena_len` is the segment's arena size.
pub(super) fn decode_slot(meta: u64, data: &[u8; INLINE_MAX], arena_len: u64) -> io::Result<SlotItem<'_>> {
    let (kind, len) = (meta >> 56, meta & ((1 << 56) - 1));
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt queue slot");
    let offset = || u64::from_ne_bytes(data[..8].try_into().expect("8 bytes"));
    match kind {
        KIND_INLINE if len as usize <= INLINE_MAX => Ok(SlotItem::Inline(&data[..len as usize])),
        KIND_ARENA if len as usize <= ARENA_ITEM_MAX => {
            let offset = offset();
            if offset.checked_add(len).is_none_or(|end| end > arena_len) {
                return Err(corrupt());
            }
            Ok(SlotItem::Arena { offset, len: len as usize })
        }
        KIND_BLOB if len <= ITEM_MAX => Ok(SlotItem::Blob { offset: offset(), len }),
        _ => Err(corrupt()),
    }
}

/// The file offset and page-rounded length of the blob at `offset` (relative
/// to `BLOB_BASE`) of `len` bytes; an error if the numbers (read from shared
/// memory) overflow or exceed the largest item.
fn blob_range(offset: u64, len: u64) -> io::Result<(u64, u64)> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "corrupt queue slot: blob out of range");
    if len > ITEM_MAX {
        return Err(corrupt());
    }
    let pages = len.next_multiple_of(PAGE);
    let start = BLOB_BASE.checked_add(offset).ok_or_else(corrupt)?;
    start.checked_add(pages).filter(|&end| end <= i64::MAX as u64).ok_or_else(corrupt)?;
    Ok((start, pages))
}

/// True when thread `tid`, recorded in the queue as the owner of a slot, a
/// sleeper entry or the frame lock, is certainly gone: every user of the
/// queue is in our pid namespace (so the tid names the same thread here) and
/// the kernel says the thread no longer exists.
pub(super) fn owner_gone(hdr: &Header, tid: u32) -> bool {
    let mine = thread::current().pidns;
    // ORDERING: Relaxed: the namespace mark is written before the marking
    // process records any owner.
    mine != 0 && hdr.pidns.0.load(Relaxed) == mine && !tid_alive(tid)
}

/// The error when every frame holds a live segment.
fn exhausted(g: &Geometry) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!("the queue holds too many items (about {} waiting); get some out first", g.frames * g.slots),
    )
}

/// Tracks how long the same owner has blocked us, to decide when to check
/// whether it is alive.
#[derive(Debug, Default)]
pub(super) struct Watch {
    seen: Option<(u64, Instant)>,
}

impl Watch {
    /// True once `word` has been seen unchanged for [`LIVENESS_DELAY`] (then
    /// again every `LIVENESS_DELAY`).
    pub(super) fn stuck(&mut self, word: u64) -> bool {
        let now = Instant::now();
        match self.seen {
            Some((w, since)) if w == word => {
                if now.duration_since(since) >= LIVENESS_DELAY {
                    self.seen = Some((word, now));
                    true
                } else {
                    false
                }
            }
            _ => {
                self.seen = Some((word, now));
                false
            }
        }
    }
}

/// Feeds arbitrary bytes to the queue's slot decoder, as if another process
/// had written them into a slot and its stamp: the first 8 bytes are the
/// `meta` word, the next 48 the slot's data, the next 8 the stamp, the next
/// 8 the arena size. Used by the fuzz target and the robustness tests;
/// never panics and never yields a range outside the arena or blob area.
#[doc(hidden)]
pub fn fuzz_slot_decode(data: &[u8]) {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = data.get(at + i).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    let mut slot = [0u8; INLINE_MAX];
    for (i, byte) in slot.iter_mut().enumerate() {
        *byte = data.get(8 + i).copied().unwrap_or(0);
    }
    let stamp = Stamp::unpack(word(8 + INLINE_MAX));
    assert_eq!(Stamp::unpack(stamp.pack()), stamp, "a stamp survives a round trip");
    let arena_len = word(16 + INLINE_MAX) % (1 << 31);
    match decode_slot(word(0), &slot, arena_len) {
        Ok(SlotItem::Inline(bytes)) => assert!(bytes.len() <= INLINE_MAX),
        Ok(SlotItem::Arena { offset, len }) => assert!(offset + len as u64 <= arena_len),
        Ok(SlotItem::Blob { offset, len }) => {
            if let Ok((start, pages)) = blob_range(offset, len) {
                assert!(start >= BLOB_BASE && start.checked_add(pages).is_some());
            }
        }
        Err(_) => {}
    }
    let geometry = Geometry { slots: word(24 + INLINE_MAX), frames: word(32 + INLINE_MAX), arena: arena_len };
    if let Ok(g) = geometry.validate() {
        assert!(g.file_len() <= BLOB_BASE);
    }
}

#[cfg(test)]
mod fuzz_test {
    use super::*;

    #[test]
    fn slot_decoder_survives_pseudo_random_bytes() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let mut data = vec![0u8; 16 + INLINE_MAX + 24];
            for b in &mut data {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Bias some rounds toward valid kinds and small lengths.
            data[7] = (round % 4) as u8;
            fuzz_slot_decode(&data);
        }
        let mut meta = (KIND_ARENA << 56 | 100).to_le_bytes().to_vec();
        meta.extend_from_slice(&u64::MAX.to_ne_bytes());
        let slot: [u8; INLINE_MAX] = meta[8..].iter().copied().chain([0; 40]).collect::<Vec<_>>().try_into().unwrap();
        assert!(decode_slot(KIND_ARENA << 56 | 100, &slot, 1 << 20).is_err(), "an arena offset that wraps");
    }
}
