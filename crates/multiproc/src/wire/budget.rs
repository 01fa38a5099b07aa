//! The bound on one-off payload memory a sending channel leaves unread.
//!
//! A payload too large for any arena (about 16 MiB and up) travels in a
//! sealed memfd of its own, which lives until the receiver reads it. With no
//! bound, a sender writing to a peer that does not read pinned as many as
//! the socket took (hundreds: several GiB). So each such frame also carries a
//! *ticket*: a record in a small shared ring of the sender's (a 4 KiB memfd
//! in the arena's record format, see `arena.rs`), which the receiver marks
//! consumed once it has copied the payload out and closed the memfd (with
//! `arena::take` of an empty record). The sender counts the tickets not yet
//! consumed and their bytes; over [`MAX_UNREAD_MESSAGES`] or
//! [`MAX_UNREAD_BYTES`] it sleeps on the oldest ticket's word (a futex)
//! before making the next memfd, until the receiver consumes a ticket, the
//! send's deadline passes, or the socket is closed.
//!
//! The sender cannot see the receiver's descriptors or mappings, so the
//! ticket is the receiver's word for it. Those words are written by the
//! peer and untrusted: the sender only loads them atomically. A peer that
//! never marks its tickets makes sends block (or time out); one that marks
//! them without reading only holds memory it was sent, as a peer that reads
//! and keeps the payloads would.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::arena::{CONSUMED, RECORD_HEADER, SENDER_WAITS, WRITTEN};
use crate::sys::Deadline;
use crate::sys::imp::futex;
use crate::sys::imp::{self, shm::Mapping};

/// Most one-off payloads unread by the peer at once. Two already keep the
/// sender copying the next payload while the receiver copies the last one
/// out; eight absorb a receiver's pauses. With 16 descriptors in flight it
/// stays far from the kernel's limit on descriptors queued in sockets.
pub(crate) const MAX_UNREAD_MESSAGES: usize = 8;
/// Most bytes of one-off payloads unread by the peer at once (a payload is
/// at least 16 MiB, so 8 of the smallest fit). Four times the largest arena:
/// bounded per connection, yet a single payload larger than this still goes
/// (alone: when nothing else is unread).
pub(crate) const MAX_UNREAD_BYTES: usize = 256 << 20;
/// Size of the ticket ring: 64 records of [`RECORD_HEADER`] bytes, far more
/// than [`MAX_UNREAD_MESSAGES`], so a free one is always found.
const RING_LEN: usize = 4096;
const SLOTS: usize = RING_LEN / RECORD_HEADER;
/// How often a sender waiting for the peer checks that the socket is open
/// (a peer that dies does not mark its tickets).
const CLOSED_RECHECK: Duration = Duration::from_millis(100);

/// The tickets of one sending channel.
#[derive(Debug, Default)]
pub(crate) struct LargeBudget {
    /// Made at the first one-off payload.
    ring: Option<Mapping>,
    /// (slot, payload bytes) of tickets not known to be consumed, oldest first.
    unread: VecDeque<(usize, usize)>,
    next_slot: usize,
}

impl LargeBudget {
    /// Waits until a payload of `len` bytes fits the budget: true when it
    /// does, false once `deadline` passed first. Returns true at once when
    /// `sock` is closed (the send then fails as on any closed socket).
    pub(crate) fn wait_for_room(&mut self, len: usize, sock: BorrowedFd<'_>, deadline: Deadline) -> io::Result<bool> {
        loop {
            self.reclaim();
            if self.has_room(len) || imp::closed_both_ways(sock)? {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            self.wait_for_oldest(deadline.at_most(CLOSED_RECHECK));
        }
    }

    /// Issues a ticket for a payload of `len` bytes (call after
    /// [`Self::wait_for_room`]): the ring to send and the ticket's offset.
    pub(crate) fn issue(&mut self, len: usize) -> io::Result<(BorrowedFd<'_>, u64)> {
        if self.ring.is_none() {
            self.ring = Some(Mapping::anonymous("multiproc-tickets", RING_LEN)?);
        }
        let slot = (0..SLOTS)
            .map(|i| (self.next_slot + i) % SLOTS)
            .find(|s| self.unread.iter().all(|(u, _)| u != s))
            .expect("the ring has more slots than tickets may be unread");
        self.next_slot = (slot + 1) % SLOTS;
        // ORDERING: Release, as for an arena record; there is no payload here,
        // the receiver only checks the state.
        self.state(slot).store(WRITTEN, Ordering::Release);
        self.unread.push_back((slot, len));
        let ring = self.ring.as_ref().expect("made above");
        Ok((ring.as_fd(), (slot * RECORD_HEADER + RECORD_HEADER) as u64))
    }

    /// Forgets the newest ticket: its frame was not sent.
    pub(crate) fn withdraw(&mut self) {
        self.unread.pop_back();
    }

    /// Tickets (payloads) the peer has not read yet.
    #[cfg(test)]
    fn unread(&mut self) -> usize {
        self.reclaim();
        self.unread.len()
    }

    fn has_room(&self, len: usize) -> bool {
        let bytes: usize = self.unread.iter().map(|(_, n)| n).sum();
        self.unread.is_empty() || (self.unread.len() < MAX_UNREAD_MESSAGES && bytes + len <= MAX_UNREAD_BYTES)
    }

    fn state(&self, slot: usize) -> &AtomicU32 {
        let ring = self.ring.as_ref().expect("tickets live in the ring");
        ring.atomic_u32_at(slot * RECORD_HEADER).expect("slots are aligned and inside the ring")
    }

    /// Drops the tickets the peer marked consumed, in any order (several
    /// processes may receive from one socket).
    fn reclaim(&mut self) {
        if self.unread.is_empty() {
            return;
        }
        let ring = self.ring.as_ref().expect("tickets live in the ring");
        self.unread.retain(|(slot, _)| {
            let state = ring.atomic_u32_at(slot * RECORD_HEADER).expect("slots are aligned and inside the ring");
            // ORDERING: Acquire pairs with the receiver's release of CONSUMED,
            // after it closed the payload's memfd.
            state.load(Ordering::Acquire) & !SENDER_WAITS != CONSUMED
        });
    }

    /// Sleeps until the oldest ticket may have been consumed, or `deadline`.
    fn wait_for_oldest(&self, deadline: Deadline) {
        let Some(&(slot, _)) = self.unread.front() else { return };
        let state = self.state(slot);
        // ORDERING: AcqRel, as in `OutArena::wait_for_oldest`: the receiver's
        // swap to CONSUMED sees the flag (and wakes us) or we see CONSUMED.
        let seen = state.fetch_or(SENDER_WAITS, Ordering::AcqRel) | SENDER_WAITS;
        if seen & !SENDER_WAITS != CONSUMED {
            futex::wait(state, seen, deadline);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::arena;

    const MIB: usize = 1 << 20;

    /// What a receiver does with a ticket.
    fn take(ticket_offset: u64, ring: std::os::fd::OwnedFd) {
        assert!(arena::take(ring, ticket_offset, 0).unwrap().is_empty());
    }

    #[test]
    fn the_budget_holds_eight_messages_or_256_mib_and_a_read_frees_room() {
        let (sock, _peer) = imp::socketpair().unwrap();
        let mut budget = LargeBudget::default();
        let mut tickets = Vec::new();
        for _ in 0..MAX_UNREAD_MESSAGES {
            assert!(budget.wait_for_room(17 * MIB, sock.as_fd(), Deadline::after(Duration::ZERO)).unwrap());
            let (fd, at) = budget.issue(17 * MIB).unwrap();
            tickets.push((fd.try_clone_to_owned().unwrap(), at));
        }
        assert!(!budget.wait_for_room(17 * MIB, sock.as_fd(), Deadline::after(Duration::from_millis(20))).unwrap());
        let (fd, at) = tickets.remove(3);
        take(at, fd);
        assert!(budget.wait_for_room(17 * MIB, sock.as_fd(), Deadline::after(Duration::ZERO)).unwrap());
        assert_eq!(budget.unread(), MAX_UNREAD_MESSAGES - 1);
        // By bytes: one 200 MiB payload leaves no room for 100 MiB more, but
        // a payload over the whole budget goes alone.
        let mut budget = LargeBudget::default();
        budget.issue(200 * MIB).unwrap();
        assert!(!budget.wait_for_room(100 * MIB, sock.as_fd(), Deadline::after(Duration::ZERO)).unwrap());
        let mut budget = LargeBudget::default();
        assert!(budget.wait_for_room(1 << 30, sock.as_fd(), Deadline::after(Duration::ZERO)).unwrap());
    }

    #[test]
    fn a_peer_that_writes_garbage_into_the_ring_only_keeps_its_tickets_unread() {
        let (sock, _peer) = imp::socketpair().unwrap();
        let mut budget = LargeBudget::default();
        for _ in 0..MAX_UNREAD_MESSAGES {
            budget.issue(17 * MIB).unwrap();
        }
        let ring = budget.ring.as_ref().unwrap();
        for at in (0..RING_LEN).step_by(4) {
            ring.atomic_u32_at(at).unwrap().store(0xdead_beef, Ordering::Relaxed);
        }
        assert!(!budget.wait_for_room(17 * MIB, sock.as_fd(), Deadline::after(Duration::from_millis(20))).unwrap());
        assert_eq!(budget.unread(), MAX_UNREAD_MESSAGES);
    }

    #[test]
    fn a_closed_socket_ends_the_wait() {
        let (sock, peer) = imp::socketpair().unwrap();
        let mut budget = LargeBudget::default();
        for _ in 0..MAX_UNREAD_MESSAGES {
            budget.issue(17 * MIB).unwrap();
        }
        drop(peer);
        assert!(budget.wait_for_room(17 * MIB, sock.as_fd(), Deadline::after(Duration::from_secs(30))).unwrap());
    }
}
