//! A framed, thread-safe message channel over one stream socket.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use super::arena::{self, OutArena};
use super::budget::LargeBudget;
use super::frame::{FrameDecoder, Header};
use super::{Frame, Kind, MAX_FDS_PER_FRAME, OFFLOAD_THRESHOLD, WireError};
use crate::spin::{PEER_SPIN, Spin};
use crate::sys::Deadline;
use crate::sys::imp::{self, Interest};

mod offload;
mod outbox;
use offload::Payload;
pub(crate) use outbox::Outbox;

/// Why a receive returned without a frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecvError {
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The extra descriptor being watched became ready first.
    #[error("watched descriptor ready")]
    WatchReady,
    /// The stream failed or ended.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Why a send returned without sending.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The deadline passed before anything was sent: the peer did not read
    /// enough (large payloads) or the socket stayed full.
    #[error("timed out")]
    Timeout,
    /// Nothing could be sent, or the stream failed.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// First and largest size of the receive buffer. It starts small — a fresh
/// child faults in every page of it (it is zeroed), and its first message,
/// the task, is usually a few hundred bytes: 2 KiB instead of 8 saved a page
/// fault or two per fork-server child — and doubles whenever a read fills it.
const FIRST_READ_CHUNK: usize = 2 * 1024;
const MAX_READ_CHUNK: usize = 64 * 1024;

/// How often a receive or [`Channel::poll`] with a deadline tries again for
/// the receive state while another thread holds it.
const CONTENDED_RECHECK: Duration = Duration::from_millis(1);

/// One end of a framed stream: a Unix socket (which can carry descriptors and
/// offload large payloads) or a TCP socket (which cannot).
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
    can_pass_fds: bool,
    /// Held while a frame is written; the bound on one-off payloads the
    /// peer has not read (used only for those).
    send_lock: Mutex<LargeBudget>,
    /// Where this process puts this channel's large payloads.
    out_arena: Mutex<Option<OutArena>>,
    recv: Mutex<RecvState>,
    /// 1 + the CPU the last received frame was sent from (0: unknown).
    peer_cpu: AtomicU32,
    /// Adaptive polling budget of blocking receives (see [`RECV_SPIN`]).
    spin_ns: AtomicU32,
}

/// A blocking receive polls the socket for a while before it sleeps, when
/// the peer last sent from another CPU (see [`PEER_SPIN`]; with the peer on
/// the same CPU, polling only keeps it from running: 14 → 21 µs per round
/// trip, measured). The budget adapts per channel.
const RECV_SPIN: Spin = PEER_SPIN;

#[derive(Debug)]
struct RecvState {
    decoder: FrameDecoder,
    scratch: Vec<u8>,
    closed: bool,
}

impl Channel {
    /// Wraps a connected Unix stream socket.
    pub(crate) fn unix(fd: OwnedFd) -> Channel {
        Channel::new(fd, true)
    }

    /// Wraps a connected socket that cannot carry descriptors (TCP).
    pub(crate) fn stream(fd: OwnedFd) -> Channel {
        Channel::new(fd, false)
    }

    fn new(fd: OwnedFd, can_pass_fds: bool) -> Channel {
        let recv = RecvState { decoder: FrameDecoder::default(), scratch: Vec::new(), closed: false };
        Channel {
            fd,
            can_pass_fds,
            send_lock: Mutex::new(LargeBudget::default()),
            out_arena: Mutex::new(None),
            recv: Mutex::new(recv),
            peer_cpu: AtomicU32::new(0),
            spin_ns: AtomicU32::new(0),
        }
    }

    /// A pair of connected Unix channels.
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = imp::socketpair()?;
        Ok((Channel::unix(a), Channel::unix(b)))
    }

    /// Refuses received frames announcing more than `limit` payload bytes
    /// (`None`: the protocol's limits): a peer that has not authenticated
    /// yet cannot make this process buffer more than that.
    pub(crate) fn set_recv_limit(&self, limit: Option<u64>) {
        self.recv.lock().unwrap_or_else(|e| e.into_inner()).decoder.set_limit(limit);
    }

    /// Refuses received frames that carry descriptors or shared memory (an
    /// unauthenticated peer's cannot make this process hold its files or
    /// map its memory), or accepts them again.
    pub(crate) fn set_refuse_fds(&self, refuse: bool) {
        self.recv.lock().unwrap_or_else(|e| e.into_inner()).decoder.set_refuse_fds(refuse);
    }

    /// True when bytes of a message (or all of one) have been read from the
    /// socket into this process's buffer and not yet received, as `poll`
    /// does; false when another thread is receiving (it takes them).
    pub(crate) fn holds_received_bytes(&self) -> bool {
        self.try_recv_state().is_some_and(|state| state.decoder.mid_frame())
    }

    /// True when this channel can carry descriptors.
    pub(crate) fn can_pass_fds(&self) -> bool {
        self.can_pass_fds
    }

    /// Sends one frame. Large payloads go through the arena (or a sealed memfd).
    pub(crate) fn send(&self, kind: Kind, payload: &[u8], fds: &[OwnedFd]) -> Result<(), WireError> {
        self.send_until(kind, payload, fds, Deadline::NEVER).map_err(|e| match e {
            SendError::Wire(e) => e,
            SendError::Timeout => WireError::Io(io::ErrorKind::TimedOut.into()),
        })
    }

    /// Sends one frame, waiting until `deadline` for room before anything
    /// is sent: for the peer to read one-off payloads (see `budget.rs`), and
    /// (with a deadline) for room in the arena or for the socket to take
    /// bytes. A frame once begun is written whole (under 64 KiB, a socket
    /// that takes bytes normally takes all of it: `poll` reports it
    /// writable with three quarters of its buffer free).
    pub(crate) fn send_until(
        &self,
        kind: Kind,
        payload: &[u8],
        fds: &[OwnedFd],
        deadline: Deadline,
    ) -> Result<(), SendError> {
        self.send_parts_until(kind, &[payload], fds, deadline)
    }

    /// As [`Channel::send_until`], for a payload held in parts (sent as
    /// their concatenation, each copied once on its way: into the arena or
    /// the socket).
    pub(crate) fn send_parts_until(
        &self,
        kind: Kind,
        parts: &[&[u8]],
        fds: &[OwnedFd],
        deadline: Deadline,
    ) -> Result<(), SendError> {
        let payload = Payload(parts);
        if !fds.is_empty() && !self.can_pass_fds {
            return Err(WireError::Encode(
                "this message carries handles (file descriptors), which cannot travel over a TCP connection".into(),
            )
            .into());
        }
        let out_of_band = self.can_pass_fds && payload.len() > OFFLOAD_THRESHOLD;
        Header::check_len(payload.len(), out_of_band)?;
        // An out-of-band payload takes one descriptor of its own, a one-off
        // memfd one more (its ticket ring, see `budget.rs`).
        let one_off = out_of_band && !arena::fits_an_arena(payload.len());
        let max_fds = MAX_FDS_PER_FRAME - usize::from(out_of_band) - usize::from(one_off);
        if fds.len() > max_fds {
            return Err(WireError::Encode(format!(
                "this message carries {} handles (file descriptors: shared objects, connections, SendFds), \
                 more than the {max_fds} one message can carry; send them in several messages",
                fds.len()
            ))
            .into());
        }
        // Another thread's send may hold the send side for a long time (its
        // peer not reading): a timed send waits for it only until its deadline.
        let Some(mut budget) = lock_until(&self.send_lock, deadline) else {
            return Err(SendError::Timeout);
        };
        let closed = |e: io::Error| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => WireError::Closed,
            _ => WireError::Io(e),
        };
        if deadline.remaining().is_some()
            && !imp::poll_fds(&[(self.fd.as_fd(), Interest::Write)], deadline).map_err(closed)?[0]
        {
            return Err(SendError::Timeout);
        }
        let result = if out_of_band {
            self.send_out_of_band(kind, payload, fds, &mut budget, deadline)
        } else {
            self.send_inline(kind, payload, fds).map(|()| true)
        };
        match result {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendError::Timeout),
            Err(e) => Err(closed(e).into()),
        }
    }

    /// Sends a frame with its payload in the socket's byte stream.
    fn send_inline(&self, kind: Kind, payload: Payload<'_>, fds: &[OwnedFd]) -> io::Result<()> {
        let header = Header::new(kind, fds.len(), payload.len()).encode();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        match payload.0 {
            [one] => imp::send_all(self.fd.as_fd(), &[&header, one], &borrowed),
            parts => {
                let bufs: Vec<&[u8]> = std::iter::once(&header[..]).chain(parts.iter().copied()).collect();
                imp::send_all(self.fd.as_fd(), &bufs, &borrowed)
            }
        }
    }

    /// Receives one frame, waiting until the deadline. When `watch` becomes
    /// readable before a frame is complete, returns [`RecvError::WatchReady`].
    pub(crate) fn recv(&self, deadline: Deadline, watch: Option<BorrowedFd<'_>>) -> Result<Frame, RecvError> {
        let mut state = self.recv_state_until(deadline)?;
        loop {
            if let Some((header, payload, fds)) = state.decoder.next_frame()? {
                return Ok(self.resolve(header, payload, fds)?);
            }
            if state.closed {
                return Err(closed_error(&state.decoder).into());
            }
            let blocking = watch.is_none() && deadline.remaining().is_none();
            if blocking && self.peer_elsewhere() && self.poll_for_data(&mut state)? {
                continue;
            }
            if !blocking {
                self.wait_readable(deadline, watch)?;
            } else if self.can_pass_fds {
                // A Unix socket: sleep in poll, not in a blocking read (see
                // `wait_for_data`), then read what came without blocking.
                self.wait_for_data()?;
                match self.read_into(&mut state, true) {
                    Ok(()) | Err(RecvError::Timeout) => continue,
                    Err(e) => return Err(e),
                }
            }
            match self.read_into(&mut state, !blocking) {
                // Readable a moment ago, nothing now: another reader of the
                // socket (a process sharing this end) took it. Wait again,
                // until the deadline.
                Ok(()) | Err(RecvError::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The receive state, if no other thread holds it.
    fn try_recv_state(&self) -> Option<MutexGuard<'_, RecvState>> {
        try_lock(&self.recv)
    }

    /// The receive state, waiting for another thread's receive (which may
    /// sleep until a message comes) only until `deadline`.
    fn recv_state_until(&self, deadline: Deadline) -> Result<MutexGuard<'_, RecvState>, RecvError> {
        lock_until(&self.recv, deadline).ok_or(RecvError::Timeout)
    }

    /// Sleeps until the Unix socket is readable. A read blocked in the
    /// kernel on a Unix stream socket is also woken each time the peer
    /// takes a message this end sent (the kernel signals "writable" on the
    /// same wait queue, and a blocked read does not filter that out), so in
    /// a request/answer exchange every receive slept twice, two wake-ups
    /// and context switches for one message. A `poll` for readable
    /// ignores those signals.
    fn wait_for_data(&self) -> Result<(), RecvError> {
        imp::wait_readable(self.fd.as_fd(), Deadline::NEVER).map_err(WireError::Io)?;
        Ok(())
    }

    /// Resolves a received frame, noting the CPU it was sent from.
    fn resolve(&self, header: Header, payload: Vec<u8>, fds: Vec<OwnedFd>) -> Result<Frame, WireError> {
        // ORDERING: Relaxed: a hint for polling.
        self.peer_cpu.store(u32::from(header.cpu), Ordering::Relaxed);
        resolve(header, payload, fds)
    }

    /// True if the peer last sent from another CPU than the caller's.
    fn peer_elsewhere(&self) -> bool {
        // ORDERING: Relaxed: a hint.
        let peer = self.peer_cpu.load(Ordering::Relaxed);
        peer != 0 && peer != imp::thread::current_cpu()
    }

    /// One read from this channel's socket into `state`: with room for
    /// descriptors on a socket that can carry them (see [`RecvState::read_some`]).
    fn read_into(&self, state: &mut RecvState, nonblocking: bool) -> Result<(), RecvError> {
        state.read_some(self.fd.as_fd(), self.can_pass_fds, nonblocking)
    }

    /// Polls the socket within the adaptive budget; true if data came.
    /// On TCP it asks whether the socket is readable before it reads: a TCP
    /// read attempt takes the socket's lock, which the peer's delivery then
    /// waits on (on loopback, 4 % of both sides' time went to spinning on
    /// it; asking first made a manager's round trips 4 % faster). A Unix
    /// socket's read is lighter, and there the extra call cost more than
    /// it saved (an 8-byte pipe round trip went from 3.7 to 4.4 µs).
    fn poll_for_data(&self, state: &mut RecvState) -> Result<bool, RecvError> {
        let attempt = RECV_SPIN.begin(&self.spin_ns);
        let ask_first = !self.can_pass_fds;
        let won = loop {
            if !attempt.going() {
                break false;
            }
            if ask_first && !imp::is_readable(self.fd.as_fd()).map_err(WireError::Io)? {
                continue;
            }
            match self.read_into(state, true) {
                Ok(()) => break true,
                Err(RecvError::Timeout) => {}
                Err(e) => return Err(e),
            }
        };
        RECV_SPIN.end(&self.spin_ns, &attempt, won);
        Ok(won)
    }

    fn wait_readable(&self, deadline: Deadline, watch: Option<BorrowedFd<'_>>) -> Result<(), RecvError> {
        let mut fds = vec![(self.fd.as_fd(), Interest::Read)];
        fds.extend(watch.map(|w| (w, Interest::Read)));
        let ready = imp::poll_fds(&fds, deadline).map_err(WireError::Io)?;
        if ready[0] {
            Ok(())
        } else if ready.get(1) == Some(&true) {
            Err(RecvError::WatchReady)
        } else {
            Err(RecvError::Timeout)
        }
    }

    /// True when a frame can be received without blocking (or the peer has
    /// closed, so a receive would fail at once). Waits up to the deadline.
    pub(crate) fn poll(&self, deadline: Deadline) -> Result<bool, WireError> {
        let mut state = loop {
            if let Some(state) = self.try_recv_state() {
                break state;
            }
            // Another thread is receiving, perhaps blocked until a message
            // comes (it takes what arrives): waiting for its lock would
            // ignore the deadline. A readable socket is the answer meanwhile
            // (as Python's `wait` sees it); the lock is tried again every
            // millisecond.
            if imp::wait_readable(self.fd.as_fd(), deadline.at_most(CONTENDED_RECHECK))? {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
        };
        loop {
            // Not "a header's worth is buffered": a frame whose header a
            // timed-out receive already took may be complete with less.
            if state.closed || state.has_complete_frame() {
                return Ok(true);
            }
            if !imp::wait_readable(self.fd.as_fd(), deadline)? {
                return Ok(false);
            }
            match self.read_into(&mut state, true) {
                Ok(()) => {}
                Err(RecvError::Timeout) => {}
                Err(RecvError::Wire(WireError::Closed)) => return Ok(true),
                Err(RecvError::Wire(e)) => return Err(e),
                Err(RecvError::WatchReady) => unreachable!("no watch in poll"),
            }
            if deadline.expired() && !state.closed && !state.has_complete_frame() {
                return Ok(false);
            }
        }
    }

    /// Returns a frame that is already buffered or arrives with one
    /// non-blocking read; `None` when nothing is waiting.
    pub(crate) fn try_recv(&self) -> Result<Option<Frame>, WireError> {
        let mut state = self.recv.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((header, payload, fds)) = state.decoder.next_frame()? {
                return Ok(Some(self.resolve(header, payload, fds)?));
            }
            if state.closed {
                return Err(closed_error(&state.decoder));
            }
            match self.read_into(&mut state, true) {
                Ok(()) => {}
                Err(RecvError::Timeout) => return Ok(None),
                Err(RecvError::Wire(e)) => return Err(e),
                Err(RecvError::WatchReady) => unreachable!("no watch in try_recv"),
            }
        }
    }

    /// Shuts the socket down so the peer sees end of stream, even if copies of
    /// this end live in other processes.
    pub(crate) fn shutdown(&self) {
        imp::shutdown(self.fd.as_fd());
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl RecvState {
    /// One read from the socket into the decoder; `with_fds` on a socket
    /// that can carry descriptors (a TCP socket reads with a plain `recv`).
    fn read_some(&mut self, fd: BorrowedFd<'_>, with_fds: bool, nonblocking: bool) -> Result<(), RecvError> {
        if self.scratch.is_empty() {
            self.scratch.resize(FIRST_READ_CHUNK, 0);
        }
        let mut fds = Vec::new();
        let read = if with_fds {
            imp::recv_with_fds(fd, &mut self.scratch, &mut fds, nonblocking)
        } else {
            imp::recv_plain(fd, &mut self.scratch, nonblocking)
        };
        match read {
            Ok(0) => {
                self.closed = true;
                self.decoder.push(&[], fds);
                Ok(())
            }
            Ok(n) => {
                self.decoder.push(&self.scratch[..n], fds);
                if n == self.scratch.len() && n < MAX_READ_CHUNK {
                    self.scratch.resize(n * 2, 0);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(RecvError::Timeout),
            // The kernel dropped descriptors (MSG_CTRUNC) and with them the
            // bytes read: the stream cannot be framed any more.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(self.decoder.fail(descriptors_lost()).into()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(WireError::Io(e).into()),
        }
    }

    fn has_complete_frame(&self) -> bool {
        // Peeking needs the header; a cheap re-parse without consuming.
        self.decoder.peek_complete()
    }
}

/// Why a read that lost descriptors ends the stream, and what to do.
fn descriptors_lost() -> WireError {
    WireError::Io(io::Error::other(
        "descriptors that came with a message were lost on arrival: this process has too many open files (raise \
         its limit, `ulimit -n`, or close some), or the peer sent more than 64 with one write; the connection can \
         no longer be used",
    ))
}

fn closed_error(decoder: &FrameDecoder) -> WireError {
    if decoder.mid_frame() {
        WireError::corrupt("the peer closed the connection in the middle of a frame")
    } else {
        WireError::Closed
    }
}

/// Turns a decoded frame into its payload, reading out-of-band payloads.
fn resolve(header: Header, payload: Vec<u8>, mut fds: Vec<OwnedFd>) -> Result<Frame, WireError> {
    if !header.offloaded && !header.arena {
        return Ok(Frame { kind: header.kind, payload, fds });
    }
    let memory = fds.remove(0);
    let offset = || -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(payload.as_slice().try_into().map_err(|_| WireError::corrupt("bad arena reference"))?))
    };
    let payload = if header.offloaded {
        let read = imp::memfd::read_sealed(memory.as_fd(), header.len as usize)
            .map_err(|e| WireError::corrupt(format!("offloaded payload unreadable: {e}")));
        // The memory goes before the ticket does: once the ticket is
        // consumed, the sender may make the next memfd.
        drop(memory);
        if header.arena {
            let ring = fds.remove(0);
            arena::consume_ticket(ring, offset()?)?;
        }
        read?
    } else {
        arena::take(memory, offset()?, header.len)?
    };
    Ok(Frame { kind: header.kind, payload, fds })
}

/// `lock`, if no other thread holds it (a poisoned one is taken as it is,
/// as everywhere in this file).
fn try_lock<T>(lock: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match lock.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// `lock`, waiting for the thread that holds it (which may be blocked until
/// the peer reads or writes) only until `deadline`: `None` then. Without a
/// deadline, an ordinary lock; with one, the wait rechecks every
/// [`CONTENDED_RECHECK`] (only contended timed calls pay for it).
fn lock_until<T>(lock: &Mutex<T>, deadline: Deadline) -> Option<MutexGuard<'_, T>> {
    if deadline.remaining().is_none() {
        return Some(lock.lock().unwrap_or_else(|e| e.into_inner()));
    }
    loop {
        if let Some(guard) = try_lock(lock) {
            return Some(guard);
        }
        match deadline.remaining() {
            Some(left) if !left.is_zero() => std::thread::sleep(left.min(CONTENDED_RECHECK)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod test;
