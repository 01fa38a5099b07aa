//! The scheduler's link to one worker: its process, socket, outbox, shared
//! memory and the chunks it holds, in the order it runs them.

use std::collections::{HashSet, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::job::{Chunk, ChunkResult};
use super::protocol::{Batch, FromWorker, Payload, RING_CAPACITY, RING_THRESHOLD, ToWorker, records};
use super::ring::{Lease, Ring, RingReader};
use super::scheduler::{MAX_DEPTH, MIN_DEPTH, TARGET_QUEUE};
use super::slab;
use super::status::StatusPage;
use crate::process::Process;
use crate::sys::imp;
use crate::wire::{Channel, Frame, Kind, Outbox, WireError};

pub(super) struct Worker {
    pub(super) process: Process<()>,
    pub(super) pid: i32,
    pub(super) channel: Channel,
    pub(super) outbox: Outbox,
    pub(super) batch: Batch,
    pub(super) status: StatusPage,
    pub(super) input_ring: Option<Ring>,
    pub(super) output_ring: Option<Arc<RingReader>>,
    /// Slabs this worker has mapped.
    pub(super) known_slabs: HashSet<u32>,
    pub(super) fds_in: VecDeque<OwnedFd>,
    pub(super) inflight: VecDeque<Inflight>,
    /// Results received (so `inflight[i]` is the worker's chunk number
    /// `received + i`, counting from 0).
    pub(super) received: u64,
    pub(super) assigned: u64,
    /// Takes no more work (its task allowance is used up).
    pub(super) retiring: bool,
    /// We closed its socket: it exits when it sees that.
    pub(super) stopping: bool,
    /// Its socket closed or failed.
    pub(super) eof_at: Option<Instant>,
    pub(super) killed: bool,
    /// Set when we killed it for a task over the timeout: (chunk number, item).
    pub(super) timed_out: Option<(u64, u32)>,
    /// The odd sequence word of its status page seen at every look since
    /// the instant given, none of which could read the page (it is inside
    /// that one update; see `Scheduler::check_timeouts`).
    pub(super) status_stuck: Option<(u64, Instant)>,
    pub(super) init_message: Option<String>,
    /// Estimated time per chunk, nanoseconds.
    pub(super) per_chunk_ns: f64,
    pub(super) depth: usize,
    pub(super) last_arrival: Instant,
}

pub(super) struct Inflight {
    pub(super) chunk: Chunk,
    pub(super) id: u64,
    pub(super) sent: Instant,
}

impl Worker {
    pub(super) fn can_take(&self) -> bool {
        !self.retiring && !self.stopping && !self.killed && self.eof_at.is_none() && self.inflight.len() < self.depth
    }

    pub(super) fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        self.process.exit_fd()
    }

    /// Sends a chunk (into the batch); gives it back when the input ring is
    /// full for now.
    #[allow(clippy::result_large_err, reason = "the chunk comes back by value to be sent again")]
    pub(super) fn send(&mut self, chunk: Chunk, id: u64, now: Instant) -> Result<(), (Chunk, Option<WireError>)> {
        let len = chunk.input.len();
        let mut fds = Vec::with_capacity(chunk.input.fds.len() + 1);
        for fd in &chunk.input.fds {
            match fd.try_clone() {
                Ok(d) => fds.push(d),
                Err(e) => return Err((chunk, Some(WireError::Io(e)))),
            }
        }
        let nfds = fds.len() as u32;
        let Worker { batch, outbox, input_ring, known_slabs, .. } = self;
        let emit = &mut |p: &[u8], f: Vec<OwnedFd>| outbox.push(Kind::Control, p, f);
        let input = if let Some(slab) = chunk.input.slab.as_ref().and_then(|l| l.slab.as_ref()) {
            if !known_slabs.contains(&slab.id) {
                let fd = match slab.as_fd().try_clone_to_owned() {
                    Ok(fd) => fd,
                    Err(e) => return Err((chunk, Some(WireError::Io(e)))),
                };
                let announce = ToWorker::Slab { id: slab.id, cap: slab.capacity() as u64 };
                if let Err(e) = batch.add(&announce, vec![fd], emit) {
                    return Err((chunk, Some(e)));
                }
                known_slabs.insert(slab.id);
            }
            Payload::Slab { id: slab.id, len: len as u64 }
        } else if len <= RING_THRESHOLD {
            Payload::Inline(&chunk.input.bytes)
        } else if len <= RING_CAPACITY / 2 {
            if input_ring.is_none() {
                let ring = match Ring::new(RING_CAPACITY) {
                    Ok(r) => r,
                    Err(e) => return Err((chunk, Some(WireError::Io(e)))),
                };
                let fd = match ring.as_fd().try_clone_to_owned() {
                    Ok(fd) => fd,
                    Err(e) => return Err((chunk, Some(WireError::Io(e)))),
                };
                if let Err(e) = batch.add(&ToWorker::InputRing { cap: RING_CAPACITY as u64 }, vec![fd], emit) {
                    return Err((chunk, Some(e)));
                }
                *input_ring = Some(ring);
            }
            let ring = input_ring.as_mut().expect("made above");
            let Some(at) = ring.alloc(len) else {
                return Err((chunk, None));
            };
            ring.region_mut(at, len).copy_from_slice(chunk.input.data());
            Payload::Ring { at, len: len as u64 }
        } else {
            match imp::memfd::sealed_with("multiproc-pool-task", chunk.input.data()) {
                Ok(memfd) => fds.insert(0, memfd),
                Err(e) => return Err((chunk, Some(WireError::Io(e)))),
            }
            Payload::Memfd { len: len as u64 }
        };
        let record = ToWorker::Chunk {
            id,
            runner: chunk.runner,
            items: chunk.items,
            framed: chunk.input.framed,
            skip: chunk.skip.clone(),
            input,
            nfds,
        };
        if let Err(e) = batch.add(&record, fds, emit) {
            return Err((chunk, Some(e)));
        }
        self.inflight.push_back(Inflight { chunk, id, sent: now });
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<(), WireError> {
        let Worker { batch, outbox, channel, .. } = self;
        batch.finish(&mut |p, f| outbox.push(Kind::Control, p, f))?;
        if !outbox.is_empty() {
            channel.flush_nonblocking(outbox)?;
        }
        Ok(())
    }

    fn take_fds(&mut self, n: usize) -> Result<Vec<OwnedFd>, WireError> {
        if self.fds_in.len() < n {
            return Err(WireError::corrupt("a worker's record claims descriptors that did not arrive"));
        }
        Ok(self.fds_in.drain(..n).collect())
    }

    /// Handles one frame of results.
    fn handle(&mut self, frame: Frame) -> Result<(), WireError> {
        self.fds_in.extend(frame.fds);
        for record in records::<FromWorker<'_>>(&frame.payload) {
            match record.map_err(WireError::Corrupt)? {
                FromWorker::Done { id, format, output, nfds } => {
                    let memfd =
                        if matches!(output, Payload::Memfd { .. }) { Some(self.take_fds(1)?.remove(0)) } else { None };
                    let fds = self.take_fds(nfds as usize)?;
                    if self.inflight.front().is_none_or(|f| f.id != id) {
                        return Err(WireError::corrupt("a worker answered a chunk it was not running"));
                    }
                    // The answer is checked before its chunk leaves
                    // `inflight`: after a bad one (the worker is killed for
                    // it) the chunk is still there, and the worker's exit
                    // decides its fate as for any answer that never came.
                    let owned;
                    let result = match output {
                        Payload::Inline(bytes) => ChunkResult::Encoded { format, bytes, fds },
                        Payload::Ring { at, len } => {
                            let ring =
                                self.output_ring.as_ref().ok_or_else(|| WireError::corrupt("ring before ring"))?;
                            let lease = ring
                                .lease(at, len as usize)
                                .ok_or_else(|| WireError::corrupt("ring region out of bounds"))?;
                            ChunkResult::Leased { format, lease, fds }
                        }
                        Payload::Slab { id, len } => {
                            let input = &mut self.inflight.front_mut().expect("checked above").chunk.input;
                            let at = input
                                .slab
                                .as_ref()
                                .and_then(|loan| {
                                    let slab = loan.slab.as_ref().filter(|s| s.id == id)?;
                                    let at = slab::output_at(loan.len)?;
                                    slab.region(at, len as usize).map(|_| at)
                                })
                                .ok_or_else(|| WireError::corrupt("a worker answered in a slab it was not given"))?;
                            let loan = input.slab.take().expect("checked above");
                            let lease = Lease::in_slab(loan, at, len as usize).expect("checked above");
                            ChunkResult::Leased { format, lease, fds }
                        }
                        Payload::Memfd { len } => {
                            owned = imp::memfd::read_sealed(memfd.as_ref().expect("taken").as_fd(), len as usize)?;
                            ChunkResult::Encoded { format, bytes: &owned, fds }
                        }
                    };
                    let chunk = self.inflight.pop_front().expect("checked above").chunk;
                    self.received += 1;
                    chunk.deliver(result);
                }
                FromWorker::OutputRing { cap } => {
                    let fd = self.take_fds(1)?.remove(0);
                    self.output_ring = Some(RingReader::new(Ring::from_fd(fd, cap as usize)?));
                }
                FromWorker::InitFailed(message) => self.init_message = Some(message),
            }
        }
        Ok(())
    }

    /// Reads every frame waiting on the socket; notes end of stream.
    pub(super) fn read_all(&mut self, now: Instant) {
        let before = self.received;
        let first_sent = self.inflight.front().map(|f| f.sent);
        loop {
            match self.channel.try_recv() {
                Ok(Some(frame)) => {
                    if let Err(e) = self.handle(frame) {
                        tracing::warn!(pid = self.pid, "pool worker sent a bad message ({e}); killing it");
                        self.kill();
                        self.eof_at.get_or_insert(now);
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.eof_at.get_or_insert(now);
                    break;
                }
            }
        }
        let n = self.received - before;
        if n > 0 {
            let since = first_sent.map_or(self.last_arrival, |s| s.max(self.last_arrival));
            let per = now.saturating_duration_since(since).as_nanos() as f64 / n as f64;
            self.per_chunk_ns = if self.per_chunk_ns == 0.0 { per } else { 0.7 * self.per_chunk_ns + 0.3 * per };
            let depth = TARGET_QUEUE.as_nanos() as f64 / self.per_chunk_ns.max(1.0);
            self.depth = (depth as usize).clamp(MIN_DEPTH, MAX_DEPTH);
            self.last_arrival = now;
        }
    }

    pub(super) fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            let _ = self.process.kill();
        }
    }
}
