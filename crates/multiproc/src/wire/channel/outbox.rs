//! Frames queued by a writer that must never block on a full socket (the
//! pool's scheduler), and the non-blocking flush that writes them.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::super::frame::Header;
use super::super::{Kind, WireError};
use super::Channel;
use crate::sys::imp;

impl Channel {
    /// Writes as much of `outbox` as the socket takes without blocking; true
    /// once the outbox is empty. Each frame's descriptors go with its first byte.
    pub(crate) fn flush_nonblocking(&self, outbox: &mut Outbox) -> Result<bool, WireError> {
        let _guard = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        while outbox.written < outbox.bytes.len() {
            let (end, attach) = match outbox.marks.front() {
                Some((at, _)) if *at == outbox.written => {
                    (outbox.marks.get(1).map_or(outbox.bytes.len(), |m| m.0), true)
                }
                Some((at, _)) => (*at, false),
                None => (outbox.bytes.len(), false),
            };
            let chunk = &outbox.bytes[outbox.written..end];
            let result = if attach {
                let fds: Vec<BorrowedFd<'_>> = outbox.marks[0].1.iter().map(AsFd::as_fd).collect();
                imp::send_nonblocking(self.fd.as_fd(), chunk, &fds)
            } else {
                imp::send_nonblocking(self.fd.as_fd(), chunk, &[])
            };
            match result {
                Ok(n) => {
                    outbox.written += n;
                    if attach {
                        outbox.marks.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
                    return Err(WireError::Closed);
                }
                Err(e) => return Err(WireError::Io(e)),
            }
        }
        outbox.compact();
        Ok(outbox.is_empty())
    }
}

/// Frames queued for [`Channel::flush_nonblocking`], for a writer that must
/// never block on a full socket (the pool's scheduler).
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    bytes: Vec<u8>,
    written: usize,
    /// Byte offset of each frame that carries descriptors, with them.
    marks: VecDeque<(usize, Vec<OwnedFd>)>,
}

impl Outbox {
    /// Queues one frame (payloads are never offloaded here: keep them small).
    pub(crate) fn push(&mut self, kind: Kind, payload: &[u8], fds: Vec<OwnedFd>) -> Result<(), WireError> {
        if fds.len() > imp::MAX_FDS_PER_MSG {
            return Err(WireError::Encode(format!(
                "a frame may carry at most {} descriptors, not {}",
                imp::MAX_FDS_PER_MSG,
                fds.len()
            )));
        }
        Header::check_len(payload.len(), false)?;
        let header = Header::new(kind, fds.len(), payload.len());
        if !fds.is_empty() {
            self.marks.push_back((self.bytes.len(), fds));
        }
        self.bytes.extend_from_slice(&header.encode());
        self.bytes.extend_from_slice(payload);
        Ok(())
    }

    /// True when everything queued has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.written == self.bytes.len()
    }

    fn compact(&mut self) {
        if self.written == self.bytes.len() {
            self.bytes.clear();
            self.written = 0;
        } else if self.written > 1 << 20 {
            self.bytes.drain(..self.written);
            for mark in &mut self.marks {
                mark.0 -= self.written;
            }
            self.written = 0;
        }
    }
}
