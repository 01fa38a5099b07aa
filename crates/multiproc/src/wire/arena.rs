//! Reusable shared-memory arenas for large payloads.
//!
//! A fresh memfd per large message costs the kernel a page allocation, a
//! zeroing and a free for every page: ~570 µs per MiB on a 2-core VM, against
//! ~16 µs for a warm `memcpy`. So each sending channel keeps one arena — a
//! memfd mapped by the sender and by every process that receives from it —
//! and a large payload is copied in, announced by a small frame that carries
//! the arena's descriptor and the record's offset, and copied out by the
//! receiver. The receiver marks the record consumed; the sender reuses the
//! space. When the arena is full the sender waits a little for the receiver,
//! then sends the payload inline through the socket (see `Channel`), so a
//! receiver that is not reading pins no more than the arena.
//!
//! Layout: records are 64-byte aligned; each starts with a 64-byte header
//! whose first word is the record state (`WRITTEN`, `CONSUMED`, plus the
//! `SENDER_WAITS` bit), followed by the payload. Receivers map arenas by
//! file identity (device and inode: an inode number alone can name files on
//! two file systems) and keep a few mappings, so several receivers of one socket end and
//! several senders (each with its own arena) all work.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::WireError;
use crate::process_local::ProcessLocal;
use crate::sys::Deadline;
use crate::sys::imp::FileId;
use crate::sys::imp::futex::{self, FutexWait};
use crate::sys::imp::shm::Mapping;

/// Record state: the payload is written and announced.
pub(super) const WRITTEN: u32 = 1;
/// Record state: a receiver copied the payload out; the space is free.
pub(super) const CONSUMED: u32 = 2;
/// Bit set by a sender that sleeps until this record is consumed.
pub(super) const SENDER_WAITS: u32 = 1 << 31;
/// Bytes before each payload (keeps payloads cache-line aligned).
pub(super) const RECORD_HEADER: usize = 64;
/// Smallest and largest arena.
const MIN_ARENA: usize = 8 << 20;
const MAX_ARENA: usize = 64 << 20;
/// How long a sender waits for space before sending a payload inline.
const SPACE_WAIT: Duration = Duration::from_millis(50);
/// Receiver-side mappings kept per channel.
const RECEIVER_CACHE: usize = 16;

/// The sending side: one arena and the records still in flight, in order.
#[derive(Debug)]
pub(crate) struct OutArena {
    map: Mapping,
    /// (offset, total size) of records not yet known to be consumed.
    in_flight: VecDeque<(usize, usize)>,
    head: usize,
    /// Set when a wait for space timed out: later writes do not wait again
    /// until space frees up, so a receiver that stopped reading costs the
    /// sender one short wait, not one per message.
    starved: bool,
}

impl OutArena {
    /// An arena big enough for several payloads of `len` bytes, or `None` if
    /// such payloads are too large for any arena.
    pub(crate) fn for_payload(len: usize) -> io::Result<Option<OutArena>> {
        let Some(cap) = arena_size(len) else { return Ok(None) };
        let map = Mapping::anonymous("multiproc-arena", cap)?;
        Ok(Some(OutArena { map, in_flight: VecDeque::new(), head: 0, starved: false }))
    }

    /// True if a payload of `len` bytes can ever fit.
    pub(crate) fn fits(&self, len: usize) -> bool {
        record_size(len) * 2 <= self.map.len()
    }

    /// Copies `payload` (the concatenation of its parts) into the arena and
    /// returns the payload's offset, or `None` if no space freed up within
    /// a short wait.
    pub(crate) fn write(&mut self, payload: &[&[u8]]) -> Option<u64> {
        let wait = if self.starved { Duration::ZERO } else { SPACE_WAIT };
        let at = self.write_until(payload, Deadline::after(wait));
        self.starved = at.is_none();
        at
    }

    /// As [`Self::write`], waiting for space until `deadline` (for a send
    /// with a deadline, which times out rather than go through the socket).
    pub(crate) fn write_until(&mut self, payload: &[&[u8]], deadline: Deadline) -> Option<u64> {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let need = record_size(len);
        let at = loop {
            self.reclaim();
            if let Some(at) = self.allocate(need) {
                break at;
            }
            if deadline.expired() || !self.wait_for_oldest(deadline) {
                return None;
            }
        };
        // [at, at + need) lies inside the mapping (`allocate`) and belongs to
        // no in-flight record, so no honest receiver reads it meanwhile.
        let mut to = at + RECORD_HEADER;
        for part in payload {
            self.map.write_at(to, part).expect("`allocate` keeps records inside the arena");
            to += part.len();
        }
        // ORDERING: Release publishes the payload bytes to the receiver that
        // loads the state with Acquire (the socket also orders them).
        self.state(at).store(WRITTEN, Ordering::Release);
        self.in_flight.push_back((at, need));
        self.head = at + need;
        Some((at + RECORD_HEADER) as u64)
    }

    fn state(&self, at: usize) -> &AtomicU32 {
        self.map.atomic_u32_at(at).expect("record offsets are 64-byte aligned and inside the arena")
    }

    /// Drops consumed records from the front of the in-flight list.
    fn reclaim(&mut self) {
        while let Some(&(at, _)) = self.in_flight.front() {
            // ORDERING: Acquire pairs with the receiver's Release after its copy,
            // so the receiver is done reading before the space is reused.
            if self.state(at).load(Ordering::Acquire) & !SENDER_WAITS != CONSUMED {
                break;
            }
            self.in_flight.pop_front();
        }
        if self.in_flight.is_empty() {
            self.head = 0;
        }
    }

    /// Finds `need` contiguous bytes after the newest record, wrapping to
    /// the start when the end is too short. In-flight records occupy either
    /// `[oldest, head)` or, once wrapped, `[oldest, cap) + [0, head)`; which
    /// one is told by where the newest record starts (comparing `head` with
    /// `oldest` cannot tell a full ring from an empty one).
    fn allocate(&self, need: usize) -> Option<usize> {
        let cap = self.map.len();
        let (Some(&(oldest, _)), Some(&(newest, _))) = (self.in_flight.front(), self.in_flight.back()) else {
            return (need <= cap).then_some(0);
        };
        let wrapped = newest < oldest;
        if !wrapped && self.head + need <= cap {
            Some(self.head)
        } else if !wrapped && need <= oldest {
            Some(0)
        } else if wrapped && self.head + need <= oldest {
            Some(self.head)
        } else {
            None
        }
    }

    /// Sleeps until the oldest record is consumed; false once the deadline passed.
    fn wait_for_oldest(&self, deadline: Deadline) -> bool {
        let Some(&(at, _)) = self.in_flight.front() else { return true };
        let state = self.state(at);
        // ORDERING: AcqRel on the flag so the receiver's swap sees it (and we
        // see its CONSUMED) in one total order on this word.
        let seen = state.fetch_or(SENDER_WAITS, Ordering::AcqRel) | SENDER_WAITS;
        if seen & !SENDER_WAITS == CONSUMED {
            return true;
        }
        futex::wait(state, seen, deadline) != FutexWait::TimedOut || !deadline.expired()
    }
}

impl AsFd for OutArena {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}

/// Size of an arena for payloads of `len` bytes; `None` when they are too
/// large for any (they go in one-off memfds).
fn arena_size(len: usize) -> Option<usize> {
    let cap = len.saturating_add(RECORD_HEADER).saturating_mul(4).checked_next_power_of_two()?.max(MIN_ARENA);
    (cap <= MAX_ARENA).then_some(cap)
}

/// True when payloads of `len` bytes go through an arena, false when they
/// are too large for any.
pub(crate) fn fits_an_arena(len: usize) -> bool {
    arena_size(len).is_some()
}

fn record_size(len: usize) -> usize {
    (RECORD_HEADER + len).div_ceil(RECORD_HEADER) * RECORD_HEADER
}

/// The receiving side: mappings of the arenas seen recently, by file identity.
#[derive(Debug, Default)]
pub(crate) struct InArenas {
    maps: VecDeque<(FileId, Mapping)>,
}

/// The arenas this process has received from, shared by all its channels (a
/// child made by `fork`, whose descriptor table was cleared, forgets them
/// without unmapping or closing them: see `ProcessLocal`).
static RECEIVED: ProcessLocal<InArenas> = ProcessLocal::new(InArenas::default);

/// Copies a payload out of a sender's arena; see [`InArenas::take`].
pub(crate) fn take(fd: OwnedFd, offset: u64, len: u64) -> Result<Vec<u8>, WireError> {
    RECEIVED.lock().take(fd, offset, len)
}

/// Marks the ticket of a one-off payload consumed (see `budget.rs`): its
/// ring, mapped for this call only. Kept with the arenas, each sending
/// channel's ring would hold a descriptor and a mapping here after its
/// sender is gone (until pushed out of the cache); a one-off payload is
/// 16 MiB or more, next to which a map and unmap of 4 KiB costs nothing.
pub(crate) fn consume_ticket(ring: OwnedFd, offset: u64) -> Result<(), WireError> {
    InArenas::default().take(ring, offset, 0).map(drop)
}

impl InArenas {
    /// Copies the `len`-byte payload at `offset` out of the arena `fd` and
    /// marks its record consumed. Validates everything the sender claimed.
    pub(crate) fn take(&mut self, fd: OwnedFd, offset: u64, len: u64) -> Result<Vec<u8>, WireError> {
        let map = self.mapping(fd)?;
        let out_of_bounds = || WireError::corrupt("arena record out of bounds");
        let offset = usize::try_from(offset).map_err(|_| out_of_bounds())?;
        let len = usize::try_from(len).map_err(|_| out_of_bounds())?;
        let header_at = offset.checked_sub(RECORD_HEADER).filter(|at| at % RECORD_HEADER == 0);
        let state = header_at.and_then(|at| map.atomic_u32_at(at)).ok_or_else(out_of_bounds)?;
        // ORDERING: Acquire pairs with the sender's Release of WRITTEN.
        if state.load(Ordering::Acquire) & !SENDER_WAITS != WRITTEN {
            return Err(WireError::corrupt("arena record is not in the written state"));
        }
        // An honest sender does not touch a WRITTEN record until we mark it
        // CONSUMED below; `read_at` checks the bounds the sender claimed.
        let out = map.read_at(offset, len).ok_or_else(out_of_bounds)?;
        // ORDERING: Release orders our reads of the payload before the sender's
        // reuse (it loads with Acquire).
        if state.swap(CONSUMED, Ordering::AcqRel) & SENDER_WAITS != 0 {
            futex::wake_all(state);
        }
        Ok(out)
    }

    fn mapping(&mut self, fd: OwnedFd) -> Result<&Mapping, WireError> {
        let (key, size) = crate::sys::imp::shm::file_identity(fd.as_fd())?;
        if let Some(i) = self.maps.iter().position(|(id, _)| *id == key) {
            return Ok(&self.maps[i].1);
        }
        let len = usize::try_from(size).map_err(|_| WireError::corrupt("arena too large"))?;
        if len > MAX_ARENA {
            return Err(WireError::corrupt("arena larger than allowed"));
        }
        let map = Mapping::from_fd(fd, len)?;
        if self.maps.len() == RECEIVER_CACHE {
            self.maps.pop_front();
        }
        self.maps.push_back((key, map));
        Ok(&self.maps.back().expect("just pushed").1)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn records_are_reused_after_consumption() {
        let mut out = OutArena::for_payload(1 << 20).unwrap().unwrap();
        let mut inn = InArenas::default();
        for round in 0..64u8 {
            let payload: Vec<u8> = (0..1 << 20).map(|i: usize| (i as u8).wrapping_add(round)).collect();
            // In parts (the last one empty): written as their concatenation.
            let (a, rest) = payload.split_at(1000);
            let (b, c) = rest.split_at(500_000);
            let at = out.write(&[a, b, c, &[]]).expect("space");
            let fd = out.as_fd().try_clone_to_owned().unwrap();
            assert_eq!(inn.take(fd, at, payload.len() as u64).unwrap(), payload);
        }
        assert!(out.in_flight.len() <= 1);
    }

    #[test]
    fn full_arena_falls_back_instead_of_blocking() {
        let mut out = OutArena::for_payload(1 << 20).unwrap().unwrap();
        let payload = vec![1u8; 1 << 20];
        let mut written = 0;
        while out.write(&[&payload]).is_some() {
            written += 1;
            assert!(written < 100);
        }
        assert!(written >= 4, "{written}");
    }

    #[test]
    fn an_arena_is_not_mistaken_for_a_cached_one_with_the_same_inode_elsewhere() {
        // Two files on different file systems can share an inode number. A
        // real collision cannot be made on demand, so arena A's cache entry
        // is relabelled as a file with B's inode number on another device.
        let mut a = OutArena::for_payload(1000).unwrap().unwrap();
        let mut b = OutArena::for_payload(1000).unwrap().unwrap();
        let mut inn = InArenas::default();
        let at = a.write(&[&[1; 100]]).unwrap();
        assert_eq!(inn.take(a.as_fd().try_clone_to_owned().unwrap(), at, 100).unwrap(), [1; 100]);
        let (b_id, _) = crate::sys::imp::shm::file_identity(b.as_fd()).unwrap();
        inn.maps[0].0 = FileId { dev: b_id.dev.wrapping_add(1), ino: b_id.ino };
        let at = b.write(&[&[2; 100]]).unwrap();
        assert_eq!(inn.take(b.as_fd().try_clone_to_owned().unwrap(), at, 100).unwrap(), [2; 100]);
    }

    #[test]
    fn forged_offsets_are_errors() {
        let out = OutArena::for_payload(1000).unwrap().unwrap();
        let mut inn = InArenas::default();
        let fd = || out.as_fd().try_clone_to_owned().unwrap();
        assert!(inn.take(fd(), 0, 10).is_err());
        assert!(inn.take(fd(), 64, u64::MAX).is_err());
        assert!(inn.take(fd(), 64, 10).is_err(), "never written");
    }
}

#[cfg(test)]
mod concurrent_test {
    use super::*;

    #[test]
    fn lagging_receiver_sees_every_record_intact() {
        let (tx, rx) = std::sync::mpsc::channel::<(OwnedFd, Option<u64>, u8)>();
        let receiver = std::thread::spawn(move || {
            let mut inn = InArenas::default();
            let mut count = 0;
            for (fd, offset, round) in rx {
                if let Some(offset) = offset {
                    let got = inn.take(fd, offset, 1 << 20).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    assert!(got.iter().all(|b| *b == round), "round {round}");
                }
                count += 1;
                if count % 7 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            count
        });
        let mut out = OutArena::for_payload(1 << 20).unwrap().unwrap();
        for round in 0..200u32 {
            let payload = vec![round as u8; 1 << 20];
            let offset = out.write(&[&payload]);
            tx.send((out.as_fd().try_clone_to_owned().unwrap(), offset, round as u8)).unwrap();
        }
        drop(tx);
        assert_eq!(receiver.join().unwrap(), 200);
    }
}
