//! Where everything lives in the queue's memory file.
//!
//! ```text
//! 0            4 KiB                  4 KiB + frame_len          …      2^40
//! | Header     | frame 0              | frame 1              | …  |  …  | blobs →
//!              | FrameHeader | slots | arena |
//! ```
//!
//! One anonymous memfd holds it all. The file is sparse: frames cost memory
//! only where they are touched, and a retired segment's frame is handed back
//! with a hole punch. Items too large for a slot or the arena (`blobs`) are
//! written at ever-growing offsets from 2^40 and punched out once read.

use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sys::imp::sparse::PAGE;

/// "mpqueue1", little-endian.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"mpqueue1");
/// Layout version; a mismatch is refused at attach.
pub(super) const VERSION: u32 = 5;
/// Bytes of the main header (one page).
pub(super) const HEADER_LEN: usize = PAGE as usize;
/// Bytes of a frame's header (one page: every field a claim is validated
/// against lives on this page, see README.md).
pub(super) const FRAME_HEADER_LEN: u64 = PAGE;
/// Bytes per slot: one cache line.
pub(super) const SLOT_LEN: u64 = 64;
/// Largest item stored in the slot itself.
pub(super) const INLINE_MAX: usize = 48;
/// Largest item stored in a segment's arena; larger ones are blobs. A 1 MiB
/// buffer, encoded with its length, is an arena item (see README.md).
pub(super) const ARENA_ITEM_MAX: usize = (1 << 20) + 4096;
/// File offset where blobs start.
pub(super) const BLOB_BASE: u64 = 1 << 40;
/// Largest item the queue accepts (a blob), 64 GiB.
pub(super) const ITEM_MAX: u64 = 1 << 36;
/// Blobs a queue keeps, read, for later ones (see `Header::kept_blobs`).
pub(super) const KEPT_BLOBS: usize = 2;
/// The largest blob kept (an 8 MiB buffer and its few bytes of encoding):
/// larger ones are freed once read.
pub(super) const KEPT_BLOB_MAX: u64 = (8 << 20) + 4096;

/// Flag: the queue counts unfinished tasks (JoinableQueue).
pub(super) const FLAG_JOINABLE: u32 = 1;
/// Flag: `maxsize` limits the number of items.
pub(super) const FLAG_BOUNDED: u32 = 2;

/// Slot kinds, in the top byte of a slot's `meta` word.
pub(super) const KIND_INLINE: u64 = 0;
pub(super) const KIND_ARENA: u64 = 1;
pub(super) const KIND_BLOB: u64 = 2;

/// Most slots per segment.
pub(super) const MAX_SLOTS: u64 = 1 << 20;
/// Most frames (segments alive at once).
pub(super) const MAX_FRAMES: u64 = 1 << 16;

/// Shape of the queue's memory, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Slots per segment (a power of two).
    pub slots: u64,
    /// Frames (segments that can be alive at once).
    pub frames: u64,
    /// Arena bytes per segment (a multiple of the page size).
    pub arena: u64,
}

impl Geometry {
    /// Checks the numbers (they may come from another process's memory).
    pub(super) fn validate(self) -> io::Result<Geometry> {
        let ok = self.slots.is_power_of_two()
            && (2..=MAX_SLOTS).contains(&self.slots)
            && (2..=MAX_FRAMES).contains(&self.frames)
            && self.arena.is_multiple_of(PAGE)
            && self.arena >= ARENA_ITEM_MAX as u64
            && self.arena <= 1 << 30
            && self.file_len() <= BLOB_BASE;
        if ok { Ok(self) } else { Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid queue geometry")) }
    }

    /// Bytes of one frame.
    pub(super) fn frame_len(self) -> u64 {
        (FRAME_HEADER_LEN + self.slots * SLOT_LEN + self.arena).next_multiple_of(PAGE)
    }

    /// Offset in a frame where its arena starts.
    pub(super) fn arena_offset(self) -> u64 {
        FRAME_HEADER_LEN + self.slots * SLOT_LEN
    }

    /// Offset of the table `frame_of` (one u32 per frame: the frame holding
    /// segment `n`, at `n % frames`).
    pub(super) fn frame_of_offset(self) -> usize {
        HEADER_LEN
    }

    /// Offset of the table `frame_state` (one u64 per frame: segment + 1 of
    /// its occupant, 0 when free).
    pub(super) fn frame_state_offset(self) -> usize {
        HEADER_LEN + (self.frames as usize * 4).next_multiple_of(8)
    }

    /// Bytes of the header and its tables (mapped by every handle).
    pub(super) fn meta_len(self) -> usize {
        (self.frame_state_offset() + self.frames as usize * 8).next_multiple_of(PAGE as usize)
    }

    /// File offset of frame `index`.
    pub(super) fn frame_offset(self, index: u32) -> u64 {
        self.meta_len() as u64 + u64::from(index) * self.frame_len()
    }

    /// Size of the file up to the blobs.
    pub(super) fn file_len(self) -> u64 {
        self.meta_len() as u64 + self.frames * self.frame_len()
    }
}

/// Pads a field to its own cache line, so that producers, consumers and
/// sleepers do not invalidate each other's lines.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(super) struct Line<T>(pub T);

/// Fixed at creation, before the memory is shared; read-only afterwards.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Config {
    pub magic: u64,
    pub version: u32,
    pub flags: u32,
    pub slots: u64,
    pub frames: u64,
    pub arena: u64,
    /// Most items for a bounded queue (0 when unbounded).
    pub maxsize: u64,
    /// Hash of the item type's name, checked at attach.
    pub type_hash: u64,
}

/// Registration entries per [`Sleepers`]; more sleepers than this poll.
pub(super) const SLEEPER_SLOTS: usize = 64;

/// A futex word and the threads registered to sleep on it.
///
/// A sleeper claims an entry of `tids` (its thread id) and sets the entry's
/// bit in `occupied`; a waker only makes a system call when `occupied` is
/// non-zero. A sleeper killed while registered leaves its entry behind:
/// wakes that wake nobody are counted in `futile`, and every so often the
/// waker frees the entries of dead threads, so a dead sleeper never makes
/// every later put pay for a system call.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Sleepers {
    /// Bumped before every wake; sleepers wait while it holds the value they read.
    pub seq: AtomicU32,
    /// Wakes that found no sleeper since the last clean-up.
    pub futile: AtomicU32,
    /// Bit `i` set while entry `i` holds a registered sleeper.
    pub occupied: AtomicU64,
    /// Thread ids of registered sleepers (0: free).
    pub tids: [AtomicU32; SLEEPER_SLOTS],
}

/// The main header at offset 0.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Header {
    pub config: Line<Config>,
    /// Segment producers put into.
    pub seg_tail: Line<AtomicU64>,
    /// Segment consumers take from.
    pub seg_head: Line<AtomicU64>,
    /// Non-zero once the queue was shut down (1; 2 for an immediate
    /// shutdown, see `waits.rs`).
    pub closed: Line<AtomicU32>,
    /// Consumers waiting for an item.
    pub not_empty: Line<Sleepers>,
    /// Producers waiting for room (bounded queues).
    pub not_full: Line<Sleepers>,
    /// Joinable queues: tasks of items taken (by `get`) and not yet marked
    /// done, less the `task_done` calls made for items still queued (so it
    /// may be negative, as an `i32`). The tasks of queued items are their
    /// positions in the segments: unfinished tasks = this + queued positions.
    pub taken_tasks: Line<AtomicU32>,
    /// Threads sleeping in `join`; their `seq` is bumped each time the
    /// unfinished tasks reach zero, and is the futex word they sleep on.
    pub joiners: Line<Sleepers>,
    /// Next free blob offset, relative to `BLOB_BASE`.
    pub blob_tail: Line<AtomicU64>,
    /// Blobs read and kept for a later blob of their size, their pages
    /// still in memory (0: none; see `ring::kept_blob`).
    pub kept_blobs: Line<[AtomicU64; KEPT_BLOBS]>,
    /// Thread id holding the frame lock (0: free). Preparing and retiring
    /// frames happen under it.
    pub frame_lock: Line<AtomicU32>,
    /// The pid namespace of every process using the queue, or
    /// [`MIXED_NAMESPACES`] once one from another namespace (or of unknown
    /// namespace) attached: thread ids recorded as owners can then not be
    /// checked, and no owner is ever taken for dead.
    pub pidns: Line<AtomicU32>,
}

/// `Header::pidns` once processes of different pid namespaces share the queue.
pub(super) const MIXED_NAMESPACES: u32 = u32::MAX;

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);

/// The header of one frame; all fields on the frame's first page.
#[repr(C)]
#[derive(Debug)]
pub(super) struct FrameHeader {
    /// Segment number + 1 of the segment living here (0 when the frame is
    /// free), and the sealed hint. Both change rarely: consumers read them
    /// on every get without disturbing the producers' `tail` line.
    pub seg: Line<FrameIdentity>,
    /// Next position to fill; [`SEALED`](super::states::SEALED) once closed
    /// for new items.
    pub tail: Line<AtomicU64>,
    /// Next position to take.
    pub head: Line<AtomicU64>,
    /// Bytes of the arena handed out (bump allocation).
    pub arena: Line<AtomicU64>,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() as u64 <= FRAME_HEADER_LEN);

/// The read-mostly line of a frame header.
#[repr(C)]
#[derive(Debug)]
pub(super) struct FrameIdentity {
    /// Segment number + 1, or 0.
    pub number: AtomicU64,
    /// Non-zero once the segment's tail may be sealed: consumers that find
    /// nothing at their head only read the producers' `tail` line then.
    pub sealed_hint: AtomicU64,
}

impl std::ops::Deref for FrameIdentity {
    type Target = AtomicU64;

    /// The segment number (+ 1).
    fn deref(&self) -> &AtomicU64 {
        &self.number
    }
}

/// One ring slot: a stamp, the item's kind and length, and 48 bytes of data
/// (the item itself, or the offset of its bytes in the arena or blob area).
#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct Slot {
    pub stamp: AtomicU64,
    /// Kind (top byte) and length (low 56 bits). Written by the owner of the
    /// slot before it publishes the stamp; read after acquiring the stamp.
    pub meta: AtomicU64,
    pub data: UnsafeCell<[u8; INLINE_MAX]>,
}

const _: () = assert!(std::mem::size_of::<Slot>() as u64 == SLOT_LEN);

/// A mapped frame, borrowed from the ring that maps it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame<'a> {
    base: *mut u8,
    slots: u64,
    arena: u64,
    index: u32,
    _ring: PhantomData<&'a ()>,
}

impl<'a> Frame<'a> {
    /// # Safety
    ///
    /// `base` must point to a live, page-aligned mapping of at least
    /// `geometry.frame_len()` bytes that outlives `'a`.
    pub(super) unsafe fn new(base: *mut u8, geometry: Geometry, index: u32) -> Frame<'a> {
        Frame { base, slots: geometry.slots, arena: geometry.arena, index, _ring: PhantomData }
    }

    /// The frame's index in the file.
    pub(super) fn index(&self) -> u32 {
        self.index
    }

    pub(super) fn header(&self) -> &'a FrameHeader {
        // SAFETY: the mapping is page-aligned and at least FRAME_HEADER_LEN long
        // (constructor contract); FrameHeader is all atomics, valid for any bits
        // (all-zero included), and shared access goes through atomics only.
        unsafe { &*self.base.cast::<FrameHeader>() }
    }

    /// The slot of position `pos`.
    pub(super) fn slot(&self, pos: u64) -> &'a Slot {
        let index = pos & (self.slots - 1);
        // SAFETY: index < slots, so the slot lies inside the mapping
        // (FRAME_HEADER_LEN + slots * SLOT_LEN <= frame_len); it is 64-byte
        // aligned; Slot's fields are atomics or an UnsafeCell of bytes, valid for
        // any bits.
        unsafe { &*self.base.add((FRAME_HEADER_LEN + index * SLOT_LEN) as usize).cast::<Slot>() }
    }

    /// The ring lap of position `pos`.
    pub(super) fn lap(&self, pos: u64) -> u64 {
        pos / self.slots
    }

    /// Slots per segment.
    pub(super) fn slots(&self) -> u64 {
        self.slots
    }

    /// Arena bytes.
    pub(super) fn arena_len(&self) -> u64 {
        self.arena
    }

    /// Pointer to arena byte `offset` (< arena length).
    pub(super) fn arena_ptr(&self, offset: u64) -> *mut u8 {
        debug_assert!(offset <= self.arena);
        // SAFETY: offset <= arena length, so the pointer stays inside the mapping
        // (or one past its arena, for an empty range).
        unsafe { self.base.add((FRAME_HEADER_LEN + self.slots * SLOT_LEN + offset) as usize) }
    }
}

/// Hash of a type's name: a cheap check that both ends of a queue agree on
/// the item type.
pub(super) use crate::code::type_hash;
