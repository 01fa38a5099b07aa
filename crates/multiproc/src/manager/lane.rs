//! A shared-memory lane beside a local connection: the request and the
//! answer of each call travel through memory both processes map, and the
//! socket is only the lifeline (its end of stream tells either side that
//! the other died) and the path of messages too large for the lane.
//!
//! Over a socket, every call costs each side a send, a wait and a receive
//! in the kernel (5–6 system calls), and a wake-up whenever the other side
//! sleeps. Through the lane, a side that finds the other still polling
//! (see [`crate::spin`]) makes no system call at all; one that finds it
//! asleep makes one futex wake.
//!
//! Layout: a 64-byte header — the state word, the request's length, the
//! answer's length, 1 + the CPU the last message was written from, the
//! manager's "my dispatcher sleeps" word (see [`Bell`]) — then the request
//! area and the answer area. The state
//! alternates: the client writes a request and sets `REQUEST`; the server
//! reads it, writes the answer and sets `ANSWER`. Whoever sleeps waiting
//! sets the `SLEEPING` bit first. A message too large for its area is
//! announced with the length `ON_SOCKET` and sent as a frame on the
//! socket right after the state changes; so a side that finds the socket
//! readable (or closed) while the state has not changed knows the other
//! side is gone (nothing else is ever sent on it).
//!
//! The server makes the lane (its own memory, sealed against shrinking)
//! and sends it to the client. It trusts nothing in it: lengths are
//! checked before any copy, and the request is copied out before it is
//! decoded.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::connection::ConnectionError;
use crate::spin::{self, Spin, WaitPlan};
use crate::sys::imp;
use crate::sys::imp::shm::Mapping;
use crate::wire::WireError;
use crate::{Address, Connection};

/// State: a request is in the lane (the server's turn).
const REQUEST: u32 = 1;
/// State: an answer is in the lane (the client's turn).
const ANSWER: u32 = 2;
/// State: the manager took the request (it runs or waits for its turn).
const TAKEN: u32 = 3;
/// Bit of the state word: the waiting side sleeps on it.
const SLEEPING: u32 = 1 << 31;
/// A length meaning "the message is the next frame on the socket".
const ON_SOCKET: u32 = u32::MAX;

/// Offset of the header word holding 1 + the CPU the last message was
/// written from (0: unknown).
const WRITER_CPU: usize = 12;
/// Offset of the header word the manager's dispatcher sets (non-zero)
/// while it sleeps on its [`Bell`]: the lane's client then rings the bell
/// after posting a request. Only this lane's client and the manager write
/// it, so another client cannot make this one's rings wake nobody.
const DISPATCHER_ASLEEP: usize = 16;

/// Bytes before the request area.
const HEADER: usize = 64;
/// Bytes of the request area and of the answer area (larger messages go
/// on the socket). Pages are only touched as far as messages reach.
const AREA: usize = 64 << 10;
/// The lane's whole size.
pub(crate) const LANE_LEN: usize = HEADER + 2 * AREA;

/// How long a side sleeps before it first checks that the other is still
/// there, and then at most between checks (the interval doubles): a stale
/// connection (its manager gone) fails a call within a millisecond or two,
/// a killed manager fails a pending call within 100 ms.
const CHECKS: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(100));

/// Most attempts of [`Lane::take_request`] to take a request in one scan.
const TAKE_TRIES: u32 = 64;

/// Waits for the other side (a call's answer, a client's next request);
/// the budget adapts per lane and side.
const LANE_SPIN: Spin = spin::PEER_SPIN;

/// One end's view of a lane.
#[derive(Debug)]
pub(crate) struct Lane {
    map: Mapping,
    /// The client's view of its manager's [`Bell`].
    bell: Option<Bell>,
    /// This side's adaptive polling budget.
    spin_ns: AtomicU32,
    /// Client's side: 1 + the CPU the manager last answered from (0: no
    /// answer yet).
    peer_cpu: AtomicU32,
}

/// Which way a message goes, and so which area and length word it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Request,
    Answer,
}

impl Way {
    fn area(self) -> usize {
        match self {
            Way::Request => HEADER,
            Way::Answer => HEADER + AREA,
        }
    }

    fn len_word(self) -> usize {
        match self {
            Way::Request => 4,
            Way::Answer => 8,
        }
    }

    fn state(self) -> u32 {
        match self {
            Way::Request => REQUEST,
            Way::Answer => ANSWER,
        }
    }
}

/// True when lanes can be used with a manager at `address` (one on this
/// machine, reached through a Unix socket, which carries the lane).
pub(crate) fn possible(address: &Address) -> bool {
    !address.is_tcp()
}

impl Lane {
    /// A new lane (the server's side).
    pub(crate) fn create() -> io::Result<Lane> {
        let map = Mapping::anonymous("multiproc-manager-lane", LANE_LEN)?;
        Ok(Lane { map, bell: None, spin_ns: AtomicU32::new(0), peer_cpu: AtomicU32::new(0) })
    }

    /// The client's side of the lane the server sent, and of its bell.
    pub(crate) fn open(lane: OwnedFd, bell: OwnedFd) -> io::Result<Lane> {
        let map = Mapping::from_fd(lane, LANE_LEN)?;
        Ok(Lane {
            map,
            bell: Some(Bell(Mapping::from_fd(bell, BELL_LEN)?)),
            spin_ns: AtomicU32::new(0),
            peer_cpu: AtomicU32::new(0),
        })
    }

    /// The lane's memory, to send to the client.
    pub(crate) fn memory(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.map)
    }

    fn word(&self, at: usize) -> &AtomicU32 {
        // `at` is 0, 4, 8, 12 or 16: a 4-byte aligned word inside the
        // mapping's header, whose words are only accessed atomically.
        self.map.atomic_u32_at(at).expect("a word of the lane's header")
    }

    fn state(&self) -> &AtomicU32 {
        self.word(0)
    }

    /// Client: sends `request` and waits for the answer, put in `answer`.
    ///
    /// # Errors
    ///
    /// [`ConnectionError::Closed`] when the manager is gone (found within
    /// 100 ms of its death), or a socket error.
    pub(crate) fn call(
        &self,
        conn: &Connection<()>,
        request: &[&[u8]],
        answer: &mut Vec<u8>,
    ) -> Result<(), ConnectionError> {
        let here = self.put(conn, Way::Request, request)?;
        if let Some(bell) = &self.bell {
            // ORDERING: SeqCst fence, then SeqCst load: either the
            // dispatcher's check of the lanes (after it set this word and
            // fenced, see `Bell::sleep`) sees our request, or we see the
            // word set and ring (a store-load pair on both sides).
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.word(DISPATCHER_ASLEEP).load(Ordering::SeqCst) != 0 {
                bell.ring();
            }
        }
        self.wait_for(conn, Way::Answer, here)?;
        self.take(conn, Way::Answer, answer)
    }

    /// Test only: writes "the manager took a call" into the state word, as
    /// a broken or hostile client can (the memory is writable from both
    /// sides).
    #[cfg(test)]
    pub(crate) fn forge_taken(&self) {
        // ORDERING: SeqCst: a test's write, seen by the server's next look.
        self.state().store(TAKEN, Ordering::SeqCst);
    }

    /// Test only: waits (at most `timeout`) until the manager's dispatcher
    /// sleeps on the bell, then changes the bell's word as a ring does,
    /// without its wake-up: what a client killed between the two leaves.
    /// False if the dispatcher was not seen asleep.
    #[cfg(test)]
    pub(crate) fn cut_a_ring_short(&self, timeout: Duration) -> bool {
        let Some(bell) = &self.bell else { return false };
        let deadline = crate::sys::Deadline::after(timeout);
        // ORDERING: SeqCst, as in `call`.
        while self.word(DISPATCHER_ASLEEP).load(Ordering::SeqCst) == 0 {
            if deadline.expired() {
                return false;
            }
            std::thread::yield_now();
        }
        bell.word().fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Test only: writes pseudo-random garbage (from `seed`) over the whole
    /// lane, header included, and over the bell's word (0, most times: a
    /// bell cleared), as a broken or hostile client can.
    #[cfg(test)]
    pub(crate) fn scribble(&self, seed: u64) {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for at in (0..HEADER).step_by(4) {
            // ORDERING: Relaxed: garbage.
            self.word(at).store(next() as u32, Ordering::Relaxed);
        }
        // Now and then a request the manager takes: a length in the area,
        // past it, or "on the socket" (where nothing comes).
        if seed.is_multiple_of(3) {
            let len = [next() as u32 % (AREA as u32 + 1), AREA as u32 + 1, ON_SOCKET][(seed / 3 % 3) as usize];
            self.word(Way::Request.len_word()).store(len, Ordering::Relaxed);
            self.state().store(REQUEST, Ordering::Release);
        }
        for at in (HEADER..LANE_LEN).step_by(8 * 64) {
            let mut bytes = next().to_ne_bytes();
            // Garbage that reads as a shutdown request is one, and any client
            // may stop its manager: the request area never starts with one.
            if at == Way::Request.area()
                && matches!(super::protocol::decode_request(&bytes), Ok(super::protocol::Request::Shutdown))
            {
                bytes[0] = u8::MAX;
            }
            // The manager reads these bytes only as untrusted.
            self.map.write_volatile_at(at, &bytes).expect("inside the lane's mapping");
        }
        if let Some(bell) = &self.bell {
            let garbage = next() as u32;
            // ORDERING: Relaxed: garbage.
            bell.word().store(if seed.is_multiple_of(8) { garbage } else { 0 }, Ordering::Relaxed);
        }
    }

    /// True when a message of `len` bytes travels in the lane (larger ones
    /// go on the socket).
    pub(crate) fn fits(len: usize) -> bool {
        len <= AREA
    }

    /// Server: true when a request waits to be taken.
    pub(crate) fn has_request(&self) -> bool {
        // ORDERING: Relaxed: a hint; `take_request` acquires.
        self.state().load(Ordering::Relaxed) & !SLEEPING == REQUEST
    }

    /// Server: true from the moment a request is announced until it is
    /// answered (its bytes may be on the socket meanwhile).
    pub(crate) fn request_pending(&self) -> bool {
        // ORDERING: Acquire: after seeing the socket readable, the state the
        // client set before sending is seen.
        matches!(self.state().load(Ordering::Acquire) & !SLEEPING, REQUEST | TAKEN)
    }

    /// Server: takes the waiting request, if any, so no one else does: its
    /// bytes go in `request` (`Ok(true)`), or they are the next frame on
    /// the socket (`Ok(false)`, still taken). `None`: no request.
    ///
    /// # Errors
    ///
    /// A request announced with a bad length ([`WireError::Corrupt`]);
    /// it is taken, and must be answered.
    pub(crate) fn take_request(&self, request: &mut Vec<u8>) -> Option<Result<bool, ConnectionError>> {
        let state = self.state();
        // ORDERING: Acquire pairs with the client's release of REQUEST.
        let mut seen = state.load(Ordering::Acquire);
        // A client flipping its state word as fast as it can could fail
        // every exchange: after a few, the request waits for the next scan.
        for tries in 0.. {
            if seen & !SLEEPING != REQUEST || tries == TAKE_TRIES {
                return None;
            }
            // ORDERING: AcqRel: the client may set SLEEPING meanwhile (kept).
            match state.compare_exchange(seen, TAKEN | (seen & SLEEPING), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        // ORDERING: Relaxed: ordered by the state's acquire above.
        if self.word(Way::Request.len_word()).load(Ordering::Relaxed) == ON_SOCKET {
            return Some(Ok(false));
        }
        Some(self.copy_out(Way::Request, request).map(|()| true))
    }

    /// Server: sends the answer to the request last taken.
    ///
    /// # Errors
    ///
    /// The socket failed (for an answer too large for the lane).
    pub(crate) fn answer(&self, conn: &Connection<()>, answer: &[&[u8]]) -> Result<(), ConnectionError> {
        self.put(conn, Way::Answer, answer).map(drop)
    }

    /// Writes a message (or announces it on the socket), hands the turn over
    /// and wakes the other side if it sleeps.
    fn put(&self, conn: &Connection<()>, way: Way, message: &[&[u8]]) -> Result<u32, ConnectionError> {
        let total: usize = message.iter().map(|p| p.len()).sum();
        let fits = Lane::fits(total);
        if fits {
            // Volatile: the area is ours until the state changes below, but a
            // misbehaving peer may write it meanwhile (that only garbles bytes
            // decoded as untrusted anyway). The parts lie inside the mapping
            // (together ≤ AREA).
            let mut at = way.area();
            for part in message {
                self.map.write_volatile_at(at, part).expect("the lane's area lies inside its mapping");
                at += part.len();
            }
        }
        let len = if fits { total as u32 } else { ON_SOCKET };
        // ORDERING: Relaxed: published by the state's release in `wake_word`
        // (the CPU is a hint).
        self.word(way.len_word()).store(len, Ordering::Relaxed);
        let cpu = imp::thread::current_cpu();
        self.word(WRITER_CPU).store(cpu, Ordering::Relaxed);
        spin::wake_word(self.state(), way.state(), SLEEPING);
        if !fits {
            conn.send_bytes_parts(message)?;
        }
        Ok(cpu)
    }

    /// Waits until it is `way`'s turn to be read, checking the other side's
    /// liveness whenever the wait slept a while. `here` is 1 + the CPU this
    /// side wrote its message from.
    fn wait_for(&self, conn: &Connection<()>, way: Way, here: u32) -> Result<(), ConnectionError> {
        let ready = |state: u32| state & !SLEEPING == way.state();
        // Polling yields the CPU after its first microseconds: the manager's
        // dispatcher, or another client, may be waiting for this one. If the
        // dispatcher last answered from this very CPU, the wait yields at
        // once: the dispatcher needs the CPU to serve the request, and every
        // microsecond polled first delays it (4 client processes on 2 CPUs:
        // medians of 459–629 k set + get pairs/s against 216–585 without,
        // in 8 alternated runs; one client alone unchanged).
        // ORDERING: Relaxed: a hint.
        let peer = self.peer_cpu.load(Ordering::Relaxed);
        let how = WaitPlan { yield_at_once: peer != 0 && peer == here, slices: CHECKS };
        LANE_SPIN.wait_word(&self.spin_ns, self.state(), ready, SLEEPING, how, || {
            // Nothing is sent on the socket before the turn changes, so a
            // readable socket here is its end (`wait_word` re-checks the turn).
            if conn.poll(Duration::ZERO)? { Err(ConnectionError::Closed) } else { Ok(()) }
        })?;
        // ORDERING: Relaxed: written before the turn changed (a hint), so seen
        // after the acquire of the turn.
        self.peer_cpu.store(self.word(WRITER_CPU).load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(())
    }

    /// Copies the message of `way` out (from the lane or the socket).
    fn take(&self, conn: &Connection<()>, way: Way, out: &mut Vec<u8>) -> Result<(), ConnectionError> {
        // ORDERING: Relaxed: ordered by the state's acquire in `wait_for`.
        if self.word(way.len_word()).load(Ordering::Relaxed) == ON_SOCKET {
            *out = conn.recv_bytes()?;
            return Ok(());
        }
        self.copy_out(way, out)
    }

    /// Copies the message of `way` out of the lane.
    fn copy_out(&self, way: Way, out: &mut Vec<u8>) -> Result<(), ConnectionError> {
        // ORDERING: Relaxed: ordered by the state's acquire of the caller.
        let len = self.word(way.len_word()).load(Ordering::Relaxed) as usize;
        if len > AREA {
            return Err(WireError::corrupt(format!("a lane message of {len} bytes (at most {AREA})")).into());
        }
        // Volatile: the other side does not write the area until we hand the
        // turn back, but a misbehaving one may (it only garbles its own
        // message, decoded as untrusted). The area lies inside the mapping
        // (len ≤ AREA, checked).
        self.map.read_volatile_into(way.area(), len, out).expect("the lane's area lies inside its mapping");
        Ok(())
    }
}

/// Bytes of a bell's memory.
const BELL_LEN: usize = 64;

/// The manager's doorbell, shared by every lane's client: the manager's
/// dispatcher sleeps on it when no lane has a request, and a client that
/// posts a request rings it if (and only if) the dispatcher sleeps.
///
/// Every client can write the bell's word, so nothing a ringer decides
/// rests on it: the dispatcher says it sleeps in each lane (a word only
/// that lane's client and the manager write, `DISPATCHER_ASLEEP`), and
/// the word is a counter a ring bumps before its futex wake, so that a
/// sleep that has not begun yet finds it changed. A client that writes
/// garbage into it wakes the dispatcher early, or not at all for its own
/// calls; another client's ring still wakes it.
#[derive(Debug)]
pub(crate) struct Bell(Mapping);

impl Bell {
    /// A new bell (the server's side).
    pub(crate) fn create() -> io::Result<Bell> {
        Ok(Bell(Mapping::anonymous("multiproc-manager-bell", BELL_LEN)?))
    }

    /// The bell's memory, to send to clients.
    pub(crate) fn memory(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.0)
    }

    fn word(&self) -> &AtomicU32 {
        // The first word of the mapping, only ever accessed atomically.
        self.0.atomic_u32_at(0).expect("the bell's word")
    }

    /// Wakes the dispatcher if it sleeps, or ends its next sleep before it
    /// begins: a system call. A client rings after posting a request when
    /// its lane says the dispatcher sleeps; the server rings for its rare
    /// events (a lane opened or closed, its stop).
    pub(crate) fn ring(&self) {
        // ORDERING: SeqCst: a sleep that read the word before this bump
        // finds it changed (see `sleep`).
        self.word().fetch_add(1, Ordering::SeqCst);
        crate::sys::imp::futex::wake(self.word(), 1);
    }

    /// Dispatcher: sleeps until rung or `timeout` passes, unless `work()`
    /// finds something to do once the bell is armed. `lanes` are the lanes
    /// served: each is told the dispatcher sleeps, for the time it does.
    pub(crate) fn sleep<'l>(
        &self,
        timeout: Duration,
        lanes: impl Iterator<Item = &'l Lane> + Clone,
        work: impl Fn() -> bool,
    ) {
        let word = self.word();
        // ORDERING: SeqCst load, SeqCst stores, fence: a client that sees
        // its lane's word set bumps the bell after this load (its load of
        // the word follows our store in the single order), so the futex
        // wait below finds the bell changed, or is woken; a client that
        // does not see it set posted its request before our check.
        let seen = word.load(Ordering::SeqCst);
        lanes.clone().for_each(|l| l.word(DISPATCHER_ASLEEP).store(1, Ordering::SeqCst));
        std::sync::atomic::fence(Ordering::SeqCst);
        if !work() {
            crate::sys::imp::futex::wait(word, seen, crate::sys::Deadline::after(timeout));
        }
        // ORDERING: Relaxed: a stale "asleep" only costs a client a ring.
        lanes.for_each(|l| l.word(DISPATCHER_ASLEEP).store(0, Ordering::Relaxed));
    }
}
