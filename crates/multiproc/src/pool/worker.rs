//! The worker process: builds its state, then runs chunks until the
//! scheduler closes its socket.
//!
//! It reads every task that is already waiting before it writes results, and
//! writes all the results it has in one frame when its input runs dry, so a
//! burst of small tasks costs one read and one write, not one each. A result
//! is not held back behind a slow task: when the previous chunk took long,
//! pending results go out before the next chunk starts.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::chunk::RunCx;
use super::error::TaskError;
use super::protocol::{Batch, FromWorker, Payload, RING_CAPACITY, RING_THRESHOLD, RunnerRef, ToWorker, records};
use super::ring::Ring;
use super::slab;
use super::status::StatusPage;
use crate::process::bootstrap::{install_panic_hook, quiet_panics as in_task, take_panic};
use crate::sys::Deadline;
use crate::sys::imp;
use crate::sys::imp::shm::Mapping;
use crate::wire::{Channel, Frame, Kind, SendFd, WireError};

/// Results wait for more while the last chunk took less than this.
const QUICK_CHUNK: Duration = Duration::from_micros(100);
/// Results never wait longer than this for company.
const MAX_HOLD: Duration = Duration::from_millis(1);
/// Results this large are encoded straight into the output ring (sized from
/// the previous chunk's).
const DIRECT_MIN: usize = 64 * 1024;
/// How long a result waits for room in the output ring before it takes a
/// memory file of its own. The scheduler frees room as soon as it has read
/// a result (microseconds), so a longer wait means a consumer holds results
/// in the ring: an ordered `imap` waiting for a slow item ahead of them.
/// After one such wait runs out, results take memory files at once until
/// the ring has room again ([`Worker::ring_held`]).
const RING_WAIT: Duration = Duration::from_millis(100);

/// Everything a worker needs, sent as its process argument.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerConfig {
    pub socket: SendFd,
    pub status: SendFd,
    pub init: Option<InitSpec>,
    /// The pool has a task timeout: record when each item starts.
    pub timed: bool,
}

/// The initializer and its encoded arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitSpec {
    pub runner: RunnerRef,
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    pub fds: Vec<SendFd>,
}

/// The worker process's function.
pub(crate) fn worker_main(config: WorkerConfig) {
    install_panic_hook();
    imp::malloc::keep_freed_memory();
    let WorkerConfig { socket, status, init, timed } = config;
    let channel = Channel::unix(socket.into_inner());
    let status = match StatusPage::from_fd(status.into_inner()) {
        Ok(s) => s,
        Err(e) => return init_failed(&channel, format!("could not map the status page: {e}")),
    };
    let state: Box<dyn Any> = match init {
        None => Box::new(()),
        Some(spec) => {
            let fds = spec.fds.into_iter().map(SendFd::into_inner).collect();
            // SAFETY: the runner reference was made by `RunnerRef::init` in the
            // parent, which runs the same build (checked at process start).
            let init = unsafe { spec.runner.resolve_init() };
            let outcome = in_task(|| panic::catch_unwind(AssertUnwindSafe(|| init(&spec.args, fds, spec.runner.hash))));
            match outcome {
                Ok(Ok(state)) => state,
                Ok(Err(message)) => return init_failed(&channel, message),
                Err(payload) => return init_failed(&channel, format!("it panicked: {}", take_panic(payload.as_ref()))),
            }
        }
    };
    status.set_idle();
    let mut worker = Worker {
        channel,
        status,
        state,
        timed,
        fds: VecDeque::new(),
        input_ring: None,
        output_ring: None,
        slabs: HashMap::new(),
        out: Vec::new(),
        batch: Batch::default(),
        held_since: None,
        last_chunk: Duration::ZERO,
        last_output: 0,
        unanswered: false,
        ring_held: false,
    };
    // An error here means the parent is gone or sent garbage: exit either way.
    let _ = worker.serve();
}

fn init_failed(channel: &Channel, message: String) {
    let mut batch = Batch::default();
    let _ = batch.add(&FromWorker::InitFailed(message), Vec::new(), &mut |p, f| channel.send(Kind::Control, p, &f));
    let _ = batch.finish(&mut |p, f| channel.send(Kind::Control, p, &f));
}

struct Worker {
    channel: Channel,
    status: StatusPage,
    state: Box<dyn Any>,
    timed: bool,
    /// Descriptors received and not yet claimed by a record.
    fds: VecDeque<OwnedFd>,
    input_ring: Option<Ring>,
    output_ring: Option<Ring>,
    /// The parent's slabs, by id.
    slabs: HashMap<u32, Mapping>,
    /// The current chunk's encoded results.
    out: Vec<u8>,
    batch: Batch,
    held_since: Option<Instant>,
    last_chunk: Duration,
    /// Size of the last chunk's encoded results.
    last_output: usize,
    /// The current chunk began and its answer is not in the batch yet.
    unanswered: bool,
    /// The last wait for room in the output ring ran out, and the ring has
    /// had no room since: results do not wait for it again (each would wait
    /// [`RING_WAIT`] while the consumer holds the ring's results).
    ring_held: bool,
}

impl Worker {
    fn serve(&mut self) -> Result<(), WireError> {
        loop {
            let frame = match self.channel.recv(Deadline::NEVER, None) {
                Ok(f) => f,
                Err(_) => return Ok(()), // the scheduler closed our socket: done
            };
            self.handle(frame).map_err(|e| self.cannot_go_on(e))?;
            loop {
                match self.channel.try_recv() {
                    Ok(Some(f)) => self.handle(f).map_err(|e| self.cannot_go_on(e))?,
                    Ok(None) => break,
                    Err(_) => {
                        self.flush()?;
                        return Ok(());
                    }
                }
            }
            self.flush()?;
        }
    }

    /// The worker could not take in (or answer) its next chunk — its input
    /// could not be mapped or read, say — and exits. The results it holds go
    /// out first, and the status page names that chunk as the one it was
    /// running, so that the scheduler fails it (or retries it) instead of
    /// handing it to a new worker that fails the same way, for ever.
    fn cannot_go_on(&mut self, e: WireError) -> WireError {
        let _ = self.flush();
        if self.unanswered {
            // It ran and could not be answered: it is the one (phase CHUNK,
            // its number already counted).
            self.status.end_item();
        } else {
            self.status.begin_chunk();
        }
        e
    }

    fn flush(&mut self) -> Result<(), WireError> {
        self.held_since = None;
        let channel = &self.channel;
        self.batch.finish(&mut |p, f| channel.send(Kind::Control, p, &f))
    }

    fn take_fds(&mut self, n: usize) -> Result<Vec<OwnedFd>, WireError> {
        if self.fds.len() < n {
            return Err(WireError::corrupt("a pool record claims descriptors that did not arrive"));
        }
        Ok(self.fds.drain(..n).collect())
    }

    fn handle(&mut self, frame: Frame) -> Result<(), WireError> {
        if frame.kind != Kind::Control {
            return Err(WireError::corrupt(format!("unexpected {:?} frame on a pool socket", frame.kind)));
        }
        self.fds.extend(frame.fds);
        for record in records::<ToWorker<'_>>(&frame.payload) {
            match record.map_err(WireError::Corrupt)? {
                ToWorker::InputRing { cap } => {
                    let fd = self.take_fds(1)?.remove(0);
                    self.input_ring = Some(Ring::from_fd(fd, cap as usize)?);
                }
                ToWorker::Slab { id, cap } => {
                    let fd = self.take_fds(1)?.remove(0);
                    self.slabs.insert(id, Mapping::from_fd(fd, cap as usize)?);
                }
                ToWorker::Chunk { id, runner, items, framed, skip, input, nfds } => {
                    self.run_chunk(id, runner, items, framed, &skip, input, nfds as usize)?;
                    self.unanswered = false;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_chunk(
        &mut self,
        id: u64,
        runner: RunnerRef,
        items: u32,
        framed: bool,
        skip: &[(u32, TaskError)],
        input: Payload<'_>,
        nfds: usize,
    ) -> Result<(), WireError> {
        if let Some(since) = self.held_since
            && (self.last_chunk > QUICK_CHUNK || since.elapsed() > MAX_HOLD)
        {
            self.flush()?;
        }
        // Large results last time: encode this chunk's straight into shared
        // memory: after the input in its slab if there is room (the parent
        // reads them there and reuses the slab at once, while it is still in
        // the cache), else in a region reserved in the output ring.
        let want = self.last_output + self.last_output / 4;
        let direct_wanted = self.last_output >= DIRECT_MIN;
        let in_slab = match input {
            Payload::Slab { id, len } if direct_wanted => self
                .slabs
                .get(&id)
                .is_some_and(|m| slab::output_at(len as usize).is_some_and(|at| m.len().saturating_sub(at) >= want))
                .then_some(id),
            _ => None,
        };
        let reserved = if in_slab.is_none() && direct_wanted && self.last_output <= RING_CAPACITY / 4 {
            self.ring_space(want)?.map(|at| (at, want))
        } else {
            None
        };
        let memfd = if matches!(input, Payload::Memfd { .. }) { Some(self.take_fds(1)?.remove(0)) } else { None };
        let fds = self.take_fds(nfds)?;
        let owned;
        let mut ring_region = None;
        let mut slab_room = None;
        let bytes: &[u8] = match input {
            Payload::Inline(b) => b,
            Payload::Ring { at, len } => {
                let ring =
                    self.input_ring.as_ref().ok_or_else(|| WireError::corrupt("ring payload before the ring"))?;
                ring_region = Some((at, len as usize));
                ring.region(at, len as usize).ok_or_else(|| WireError::corrupt("ring payload out of bounds"))?
            }
            Payload::Slab { id, len } => {
                let map = self.slabs.get_mut(&id).ok_or_else(|| WireError::corrupt("a chunk names an unknown slab"))?;
                let (input, room) = slab::mapped_split(map, len as usize)
                    .ok_or_else(|| WireError::corrupt("slab payload out of bounds"))?;
                slab_room = in_slab.map(|_| room);
                input
            }
            Payload::Memfd { len } => {
                let fd = memfd.as_ref().expect("taken above");
                owned = imp::memfd::read_sealed(fd.as_fd(), len as usize)?;
                &owned
            }
        };
        let started = Instant::now();
        self.status.begin_chunk();
        self.unanswered = true;
        // SAFETY: the reference was made by `RunnerRef::{map, star, with_state}`
        // in the parent, which runs the same build (checked at process start).
        let run = unsafe { runner.resolve() };
        let direct = match (slab_room, reserved, self.output_ring.as_mut()) {
            (Some(room), _, _) => Some(room),
            (None, Some((at, want)), Some(ring)) => Some(ring.region_mut(at, want)),
            _ => None,
        };
        let mut cx = RunCx {
            state: &mut *self.state,
            status: &self.status,
            timed: self.timed,
            skip,
            items,
            out: &mut self.out,
            direct,
            placed: None,
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| run(&mut cx, bytes, fds, framed, runner.hash)));
        let placed = if outcome.is_ok() { cx.placed } else { None };
        if let (Some((at, _)), Some(ring)) = (reserved, self.output_ring.as_mut()) {
            ring.shrink_last(at, placed.unwrap_or(0));
        }
        if let (Some((at, len)), Some(ring)) = (ring_region, &self.input_ring) {
            ring.release(at, len);
        }
        let (format, mut fds) = match outcome {
            Ok(done) => done,
            Err(payload) => {
                // A panic outside the items (in a Serialize impl): every item fails with it.
                let err = TaskError::Panicked(take_panic(payload.as_ref()));
                let all: Vec<Result<(), TaskError>> = vec![Err(err); items as usize];
                self.out.clear();
                (super::protocol::Format::Mixed, crate::wire::encode_into(&all, &mut self.out).unwrap_or_default())
            }
        };
        self.status.set_idle();
        self.last_chunk = started.elapsed();
        self.held_since.get_or_insert(started);
        let nfds = fds.len() as u32;
        let placed_at = match (placed, in_slab, reserved) {
            (Some(len), Some(slab), _) => Some((Payload::Slab { id: slab, len: len as u64 }, len)),
            (Some(len), None, Some((at, _))) => Some((Payload::Ring { at, len: len as u64 }, len)),
            _ => None,
        };
        if let Some((output, len)) = placed_at {
            self.last_output = len;
            let channel = &self.channel;
            let emit = &mut |p: &[u8], f: Vec<OwnedFd>| channel.send(Kind::Control, p, &f);
            let record = FromWorker::Done { id, format, output, nfds };
            return self.batch.add(&record, fds, emit);
        }
        let len = self.out.len();
        self.last_output = len;
        let mut ring_at = None;
        if len > RING_THRESHOLD && len <= RING_CAPACITY / 2 {
            ring_at = self.ring_space(len)?;
        }
        let channel = &self.channel;
        let emit = &mut |p: &[u8], f: Vec<OwnedFd>| channel.send(Kind::Control, p, &f);
        let out = &self.out;
        if out.len() <= RING_THRESHOLD {
            let record = FromWorker::Done { id, format, output: Payload::Inline(out), nfds };
            return self.batch.add(&record, fds, emit);
        }
        if let (Some(ring), Some(at)) = (self.output_ring.as_mut(), ring_at) {
            ring.region_mut(at, out.len()).copy_from_slice(out);
            let record = FromWorker::Done { id, format, output: Payload::Ring { at, len: out.len() as u64 }, nfds };
            return self.batch.add(&record, fds, emit);
        }
        let memfd = imp::memfd::sealed_with("multiproc-pool-result", out)?;
        fds.insert(0, memfd);
        let record = FromWorker::Done { id, format, output: Payload::Memfd { len: out.len() as u64 }, nfds };
        self.batch.add(&record, fds, emit)
    }
}

impl Worker {
    /// A region of `len` bytes in the output ring (made on first use). When
    /// the ring is full, sends what is pending (so the scheduler can release
    /// space) and waits up to [`RING_WAIT`], unless the last wait ran out
    /// and the ring has had no room since; `None` if no space came.
    fn ring_space(&mut self, len: usize) -> Result<Option<u64>, WireError> {
        if self.output_ring.is_none() {
            let ring = Ring::new(RING_CAPACITY)?;
            let fd = ring.as_fd().try_clone_to_owned()?;
            let channel = &self.channel;
            let emit = &mut |p: &[u8], f: Vec<OwnedFd>| channel.send(Kind::Control, p, &f);
            self.batch.add(&FromWorker::OutputRing { cap: RING_CAPACITY as u64 }, vec![fd], emit)?;
            self.output_ring = Some(ring);
        }
        if let Some(at) = self.output_ring.as_mut().and_then(|r| r.alloc(len)) {
            self.ring_held = false;
            return Ok(Some(at));
        }
        if self.ring_held {
            return Ok(None);
        }
        self.flush()?;
        let give_up = Instant::now() + RING_WAIT;
        let mut nap = Duration::from_micros(20);
        while Instant::now() < give_up {
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
            if let Some(at) = self.output_ring.as_mut().and_then(|r| r.alloc(len)) {
                return Ok(Some(at));
            }
        }
        self.ring_held = true;
        Ok(None)
    }
}
