//! `Channel`'s large payloads: through this process's arena for the
//! channel, inline when it is full, or in a one-off sealed memfd.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::super::Kind;
use super::super::arena::OutArena;
use super::super::budget::LargeBudget;
use super::super::frame::Header;
use super::Channel;
use crate::sys::Deadline;
use crate::sys::imp;

impl Channel {
    /// Sends a large payload through this process's arena for the channel.
    /// When the arena has no room (the receiver is behind), the payload goes
    /// inline through the socket, so a receiver that stops reading pins at
    /// most one arena and a socket buffer of this process's memory, and the
    /// sender blocks like any writer to a full socket. Only a payload too
    /// large for any arena goes in a one-off sealed memfd, with a ticket
    /// of `budget`, once the budget has room (false: not by `deadline`).
    pub(super) fn send_out_of_band(
        &self,
        kind: Kind,
        payload: Payload<'_>,
        fds: &[OwnedFd],
        budget: &mut LargeBudget,
        deadline: Deadline,
    ) -> io::Result<bool> {
        let mut arena = self.out_arena.lock().unwrap_or_else(|e| e.into_inner());
        if !arena.as_ref().is_some_and(|a| a.fits(payload.len()))
            && let Some(bigger) = OutArena::for_payload(payload.len())?
        {
            *arena = Some(bigger);
        }
        let mut all: Vec<BorrowedFd<'_>> = Vec::with_capacity(fds.len() + 2);
        let mut header = Header::new(kind, fds.len() + 1, payload.len());
        let memfd;
        let timed = deadline.remaining().is_some();
        let written = arena
            .as_mut()
            .filter(|a| a.fits(payload.len()))
            .map(|a| if timed { a.write_until(payload.0, deadline) } else { a.write(payload.0) });
        let body = match written {
            // With a deadline, a full arena is a timeout: inline, the
            // payload could wait for the peer past the deadline.
            Some(None) if timed => return Ok(false),
            Some(None) => return self.send_inline(kind, payload, fds).map(|()| true),
            Some(Some(offset)) => {
                header.arena = true;
                all.push(arena.as_ref().expect("the arena just written").as_fd());
                offset.to_le_bytes()
            }
            None => {
                if !budget.wait_for_room(payload.len(), self.fd.as_fd(), deadline)? {
                    return Ok(false);
                }
                // (Only payloads over 16 MiB come here: a rare copy of parts.)
                memfd = match payload.0 {
                    [one] => imp::memfd::sealed_with("multiproc-payload", one)?,
                    parts => imp::memfd::sealed_with("multiproc-payload", &parts.concat())?,
                };
                let (ring, ticket) = budget.issue(payload.len())?;
                // `ring` borrows `budget`, which `withdraw` needs again if
                // the send fails: the frame goes here, `all` dropped first.
                (header.offloaded, header.arena, header.nfds) = (true, true, fds.len() + 2);
                all.extend([memfd.as_fd(), ring]);
                all.extend(fds.iter().map(AsFd::as_fd));
                let sent = imp::send_all(self.fd.as_fd(), &[&header.encode(), &ticket.to_le_bytes()], &all);
                drop(all);
                if sent.is_err() {
                    budget.withdraw();
                }
                return sent.map(|()| true);
            }
        };
        all.extend(fds.iter().map(AsFd::as_fd));
        imp::send_all(self.fd.as_fd(), &[&header.encode(), &body], &all).map(|()| true)
    }
}

/// A payload held in parts, sent as their concatenation.
#[derive(Clone, Copy)]
pub(super) struct Payload<'a>(pub(super) &'a [&'a [u8]]);

impl Payload<'_> {
    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|p| p.len()).sum()
    }
}
