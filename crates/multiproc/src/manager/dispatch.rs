//! The manager's dispatcher: one thread that serves the requests of every
//! lane (see `lane`), so that many local clients are served without a
//! thread switch per call.
//!
//! With a thread per connection, each call wakes that connection's thread:
//! on a machine with fewer CPUs than clients, a context switch per call and
//! side. The dispatcher instead polls every lane and runs what it finds;
//! while clients keep calling it never sleeps, and a client that finds its
//! answer ready (or polls for it, see [`crate::spin`]) never sleeps either.
//!
//! Only calls that cannot block run on the dispatcher. A call that may wait
//! (a `get` on an empty queue, a held lock, a condition) is first tried
//! without waiting when it has a non-waiting form, and otherwise handed to
//! its connection's own thread, which runs it and answers through the lane:
//! it blocks only its caller, as over a socket. So is a user type's method
//! or creation (its own code, which may wait), and a call whose object is
//! held on another thread (by an update from a client over TCP, say: the
//! dispatcher only tries the object's lock, see `Caller::lock`). An
//! `update`'s function runs on the dispatcher, where it costs no hand-off:
//! while it runs, the other local clients' lane calls wait (keep it short).
//! That thread also watches the socket, so a client that dies is noticed at
//! once (and its locks are freed), and it carries the rare message too
//! large for the lane.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lane::{Bell, Lane};
use super::protocol::{self, Gathered, Init, Op, RemoteError, Reply, Request, Response};
use super::server::{Caller, Last, Shared, respond};
use super::waiting::lock;
use crate::Connection;
use crate::spin::Spin;
use crate::sys::Deadline;
use crate::sys::imp::wake::WakeFd;
use crate::sys::imp::{self, Interest};

/// How long the dispatcher polls the lanes before sleeping on its bell.
/// Adapts like every other poll (see [`crate::spin`]).
const IDLE_SPIN: Spin = crate::spin::PEER_SPIN;

/// Longest sleep of an idle dispatcher. Nothing needs the timeout (a
/// request rings the bell, and so does the server's stop); it only bounds
/// the harm of a wake-up lost to a bug, or a client's own lost to its
/// writing garbage into its lane (no client can lose another's: see
/// `Bell`).
const IDLE_SLEEP: Duration = Duration::from_secs(1);

/// How long a connection's thread waits for a hand-off without watching
/// its socket (see [`LaneConn::serve_hand_offs`]): bounds how late the end
/// of a client that dies while its request's bytes wait on the socket is
/// seen.
const SOCKET_RECHECK: Duration = Duration::from_millis(100);

/// Longest wait of [`Dispatcher::close`] for the dispatcher to let go of
/// the lane. It only runs calls that do not wait, but an update runs the
/// client's function, which may be slow: this bounds the harm. Shorter in
/// unit tests, so that a test can outlast it (see `test_lane`).
#[cfg(not(test))]
const CLOSE_WAIT: Duration = Duration::from_secs(10);
#[cfg(test)]
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Lanes checked between clock reads while polling.
const SCANS_PER_CLOCK_READ: u32 = 8;

/// The dispatcher of one server: its bell and the lanes it serves.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    bell: Bell,
    lanes: Mutex<Vec<Arc<LaneConn>>>,
    /// Bumped whenever `lanes` changes.
    generation: AtomicU64,
    /// What the dispatcher's thread serves, for [`Dispatcher::close`].
    serving: Mutex<Serving>,
    /// Signalled when `serving` changes.
    serving_changed: Condvar,
    /// True once the dispatcher's thread was started; false after a failed
    /// start too, so that the next lane tries again.
    started: Mutex<bool>,
}

/// The lanes the dispatcher's thread serves.
#[derive(Debug, Default)]
struct Serving {
    /// The thread runs (it has started, and not ended).
    running: bool,
    /// The `generation` of the list of lanes it serves now: a lane closed
    /// at or before it is no longer touched.
    generation: u64,
}

/// A connection with a lane, shared by the dispatcher and the
/// connection's own thread.
#[derive(Debug)]
pub(crate) struct LaneConn {
    id: u64,
    lane: Lane,
    conn: Connection<()>,
    build: String,
    /// Work handed to the connection's thread.
    job: Mutex<Option<Job>>,
    wake: WakeFd,
    /// Set by [`Dispatcher::close`]: the dispatcher takes no more requests
    /// from this lane, even from an old copy of the list of lanes.
    closed: AtomicBool,
}

/// What the dispatcher hands to a connection's thread.
#[derive(Debug)]
enum Job {
    /// Run this request (it may wait) and answer it.
    Run(Request),
    /// The request taken is the next frame on the socket: read and run it.
    OnSocket,
    /// Send this encoded answer (too large for the lane: it goes on the
    /// socket, which could block).
    Send(Gathered),
}

impl Dispatcher {
    /// A dispatcher whose thread starts with the first lane.
    pub(crate) fn new() -> io::Result<Dispatcher> {
        Ok(Dispatcher {
            bell: Bell::create()?,
            lanes: Mutex::default(),
            generation: AtomicU64::new(0),
            serving: Mutex::default(),
            serving_changed: Condvar::new(),
            started: Mutex::new(false),
        })
    }

    /// Makes a lane for the connection `id` and sends it, with the bell;
    /// returns it, served by the dispatcher from now on.
    pub(crate) fn open(
        &self,
        shared: &Arc<Shared>,
        id: u64,
        conn: &Connection<()>,
        build: &str,
    ) -> Result<Arc<LaneConn>, RemoteError> {
        let cannot = |e: &dyn std::fmt::Display| RemoteError::BadRequest(format!("no lane: {e}"));
        // Started before the lane is sent: a client given a lane that no
        // thread serves would wait for ever (it only checks that the socket
        // is alive). If the start fails, the error is the answer, and the
        // client calls through the socket (its connection's thread serves
        // it); the next lane tries again.
        self.start(shared).map_err(|e| {
            tracing::error!("manager: cannot start the dispatcher: {e}");
            cannot(&format_args!("cannot start the dispatcher: {e}"))
        })?;
        let lane = Lane::create().map_err(|e| cannot(&e))?;
        let wake = WakeFd::new().map_err(|e| cannot(&e))?;
        let memory = [lane.memory(), self.bell.memory()].map(|fd| fd.try_clone_to_owned());
        let [Ok(memory), Ok(bell)] = memory else { return Err(cannot(&"cannot duplicate its memory")) };
        // Over TCP the handles cannot travel: nothing is sent, the error is the answer.
        protocol::with_encoded(&Ok::<_, RemoteError>(Reply::Lane), |m| {
            conn.send_bytes_with_fds(&m.bytes, &[memory, bell])
        })
        .map_err(|e| cannot(&e))?;
        let entry = Arc::new(LaneConn {
            id,
            lane,
            conn: conn.clone(),
            build: build.to_string(),
            job: Mutex::new(None),
            wake,
            closed: AtomicBool::new(false),
        });
        lock(&self.lanes).push(entry.clone());
        // ORDERING: SeqCst: a dispatcher about to sleep sees the new lane,
        // or is woken by the ring below (the new lane does not say yet
        // that it sleeps, so its client's first request may not ring).
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.bell.ring();
        Ok(entry)
    }

    /// Starts the dispatcher's thread, unless it was started before.
    fn start(&self, shared: &Arc<Shared>) -> io::Result<()> {
        let mut started = lock(&self.started);
        if !*started {
            let shared = shared.clone();
            std::thread::Builder::new().name("multiproc-manager-dispatch".into()).spawn(move || run(&shared))?;
            *started = true;
        }
        Ok(())
    }

    /// Stops serving the lane of connection `id`, and returns once the
    /// dispatcher no longer touches it: a call it took from that lane has
    /// run (a lock it acquired for the client is held, to be freed with the
    /// client's session), and no other will.
    ///
    /// After [`CLOSE_WAIT`] it returns anyway (the dispatcher may be running
    /// a slow update, of this client or another); the lane is marked closed
    /// first, so the dispatcher takes no request from it afterwards: a lock
    /// acquired then would belong to a session already gone, and stay held.
    /// Only a call taken before the lane was marked may still run then: in
    /// practice a slow update of this client's, which acquires nothing.
    pub(crate) fn close(&self, id: u64) {
        {
            let mut lanes = lock(&self.lanes);
            if let Some(at) = lanes.iter().position(|l| l.id == id) {
                // ORDERING: SeqCst: set before `generation` is bumped, so a
                // dispatcher that sees the new list, or serves the old one
                // after this, sees the lane closed.
                lanes.remove(at).closed.store(true, Ordering::SeqCst);
            }
        }
        // ORDERING: SeqCst: as in `open`.
        let closed = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        // A sleeping dispatcher lets go of the lane at once, rather than at
        // its next wake-up.
        self.bell.ring();
        let give_up = Instant::now() + CLOSE_WAIT;
        let mut serving = lock(&self.serving);
        while serving.running && serving.generation < closed {
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    "manager: the dispatcher still runs a call after {CLOSE_WAIT:?}; a closed lane is let go"
                );
                return;
            }
            serving = self.serving_changed.wait_timeout(serving, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The dispatcher's thread serves the lanes of `generation` now (or,
    /// with `running` false, none any more).
    fn now_serving(&self, running: bool, generation: u64) {
        *lock(&self.serving) = Serving { running, generation };
        self.serving_changed.notify_all();
    }

    /// Wakes the dispatcher (to see that the server stops).
    pub(crate) fn wake(&self) {
        self.bell.ring();
    }
}

/// Tells [`Dispatcher::close`] that the dispatcher's thread ended (also
/// when it panics): no lane is served any more.
struct Ended<'a>(&'a Dispatcher);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.now_serving(false, u64::MAX);
    }
}

/// The dispatcher's thread: serves lanes until the server stops.
fn run(shared: &Shared) {
    let dispatcher = &shared.dispatcher;
    // Running before it first takes the lanes: a lane closed meanwhile is
    // waited for until this thread has seen the list without it.
    dispatcher.now_serving(true, 0);
    let _ended = Ended(dispatcher);
    let mut lanes: Vec<Arc<LaneConn>> = Vec::new();
    let mut seen = u64::MAX;
    let mut last: Last = None;
    let mut buf = Vec::new();
    let budget = AtomicU32::new(0);
    let generation = || dispatcher.generation.load(Ordering::SeqCst);
    while !shared.stopping() {
        if generation() != seen {
            seen = generation();
            lanes = lock(&dispatcher.lanes).clone();
            // Off the call path: only when a lane opens or closes.
            dispatcher.now_serving(true, seen);
        }
        let mut served = false;
        for entry in &lanes {
            served |= serve(shared, entry, &mut buf, &mut last);
        }
        if served {
            continue;
        }
        let found = IDLE_SPIN
            .poll(&budget, SCANS_PER_CLOCK_READ, || lanes.iter().any(|l| l.lane.has_request()) || generation() != seen);
        if !found {
            // An object removed through another connection goes now.
            if last.as_ref().is_some_and(|(_, object)| object.is_removed()) {
                last = None;
            }
            dispatcher.bell.sleep(IDLE_SLEEP, lanes.iter().map(|l| &l.lane), || {
                shared.stopping() || generation() != seen || lanes.iter().any(|l| l.lane.has_request())
            });
        }
    }
}

/// Serves the request waiting in `entry`'s lane, if any: runs it, tries it
/// without waiting, or hands it to the connection's thread. True if there
/// was one.
fn serve(shared: &Shared, entry: &LaneConn, buf: &mut Vec<u8>, last: &mut Last) -> bool {
    // ORDERING: SeqCst: see `Dispatcher::close`. A closed lane's request
    // is left there: its client is gone.
    if entry.closed.load(Ordering::SeqCst) {
        return false;
    }
    let request = match entry.lane.take_request(buf) {
        None => return false,
        Some(Ok(false)) => {
            entry.hand_off(Job::OnSocket);
            return true;
        }
        Some(Ok(true)) => protocol::decode_request(buf).map_err(RemoteError::BadRequest),
        Some(Err(e)) => Err(RemoteError::BadRequest(e.to_string())),
    };
    let caller = Caller::on_dispatcher(&entry.conn, shared, &entry.build);
    let response = match request.map(plan) {
        Err(e) => Err(e),
        Ok(Plan::Now(request)) => match respond(shared, last, request, &caller) {
            // Its object is held (by an update running on another thread):
            // the call did nothing, and waits for it on its connection's
            // thread.
            _ if caller.busy() => match hand_off_again(entry, buf) {
                Ok(()) => return true,
                Err(e) => Err(e),
            },
            done => done,
        },
        Ok(Plan::HandOff(request)) => {
            entry.hand_off(Job::Run(request));
            return true;
        }
        // `busy` answers `Timeout`, handed off as well.
        Ok(Plan::TryFirst(now)) => match respond(shared, last, now, &caller) {
            Err(RemoteError::Full | RemoteError::Empty | RemoteError::Timeout) => match hand_off_again(entry, buf) {
                Ok(()) => return true,
                Err(e) => Err(e),
            },
            done => done,
        },
    };
    let _ = protocol::with_encoded_answer(&response, |message| {
        if Lane::fits(message.len()) {
            message.with_parts(|parts| entry.lane.answer(&entry.conn, parts))
        } else {
            // Taken, not copied: this thread encodes its next answer into
            // a new buffer (an allocation, against a copy of this one).
            entry.hand_off(Job::Send(std::mem::take(message)));
            Ok(())
        }
    });
    true
}

/// Hands the request whose bytes are in `buf` to its connection's thread,
/// decoded again: the dispatcher's try consumed the decoded one. Only a
/// call that must wait is decoded twice; every other call is spared the
/// copy of its items that a second request, made up front, would take.
fn hand_off_again(entry: &LaneConn, buf: &[u8]) -> Result<(), RemoteError> {
    let request = protocol::decode_request(buf).map_err(RemoteError::BadRequest)?;
    entry.hand_off(Job::Run(request));
    Ok(())
}

/// Where a request runs.
enum Plan {
    /// On the dispatcher: it cannot wait.
    Now(Request),
    /// On the connection's thread: it may wait.
    HandOff(Request),
    /// Its non-waiting form (the request with its timeout cut to zero) on
    /// the dispatcher; the request as sent on the connection's thread if
    /// that found it would have to wait.
    TryFirst(Request),
}

fn plan(mut request: Request) -> Plan {
    let Request::Call { op, .. } = &mut request else {
        // Shutdown stops the server after its answer: the connection's
        // thread does that, as over a socket. A user type's state is
        // decoded by its own `Deserialize`, which may be slow.
        let elsewhere = matches!(request, Request::Shutdown | Request::Create { init: Init::User { .. }, .. });
        return if elsewhere { Plan::HandOff(request) } else { Plan::Now(request) };
    };
    match op {
        Op::Put { timeout, .. }
        | Op::Take { timeout }
        | Op::PutMany { timeout, .. }
        | Op::TakeMany { timeout, .. }
        | Op::Acquire { timeout, .. }
            if *timeout != Some(Duration::ZERO) =>
        {
            *timeout = Some(Duration::ZERO);
            Plan::TryFirst(request)
        }
        // A user type's call runs a method of the client's type, which may
        // wait: on the connection's thread, it holds back only the calls on
        // its object. An `update` runs here: its function is meant to be
        // short (see the module docs of `manager`), and a hand-off per update
        // cost 5× their rate (635 k/s → 114 k/s from 4 processes).
        Op::Join { .. } | Op::Wait { .. } | Op::CondWait { .. } | Op::BarrierWait { .. } | Op::UserCall(_) => {
            Plan::HandOff(request)
        }
        _ => Plan::Now(request),
    }
}

impl LaneConn {
    fn hand_off(&self, job: Job) {
        *lock(&self.job) = Some(job);
        self.wake.signal();
    }

    /// The connection's thread: runs what the dispatcher hands it, until
    /// the client hangs up or the server stops.
    pub(crate) fn serve_hand_offs(&self, shared: &Shared) {
        let wake_only = [(self.wake.as_fd(), Interest::Read)];
        let both = [(self.conn.as_fd(), Interest::Read), (self.wake.as_fd(), Interest::Read)];
        let mut fds: &[(BorrowedFd<'_>, Interest)] = &both;
        loop {
            // Without the socket, only for a while: see below.
            let deadline = if fds.len() == 1 { Deadline::after(SOCKET_RECHECK) } else { Deadline::NEVER };
            let Ok(ready) = imp::poll_fds(fds, deadline) else { break };
            if shared.stopping() {
                break;
            }
            let (socket, woken) = (fds.len() == 2 && ready[0], *ready.last().expect("polled the wake-up"));
            if woken {
                self.wake.drain();
                fds = &both;
                let job = lock(&self.job).take();
                if let Some(job) = job
                    && !self.run(shared, job)
                {
                    break;
                }
            } else if fds.len() == 1 {
                // No hand-off came: look at the socket again.
                fds = &both;
            } else if !socket {
                // Nothing ready after all (an interrupted poll).
            } else if self.lane.request_pending() && !self.client_hung_up() {
                // The socket holds a request's bytes, and the dispatcher
                // hands it over in a moment: the socket is looked at again
                // soon (to see its end should the client die meanwhile).
                fds = &wake_only;
            } else {
                // The client hung up (whatever its lane says: a call the
                // dispatcher runs for it ends before `Dispatcher::close`
                // returns, one not taken yet is dropped), or, no call being
                // pending, the socket is readable, and nothing else is ever
                // sent on it: its end.
                break;
            }
        }
    }

    /// True when the client closed its socket (or died): bytes it sent may
    /// still wait there, but nothing more comes.
    fn client_hung_up(&self) -> bool {
        imp::peer_hung_up(self.conn.as_fd()).unwrap_or(true)
    }

    /// Runs one job; false when the connection broke. Handed-off calls are
    /// rare and slow beside a lookup: no object is cached between them (an
    /// idle connection would keep a removed one's memory).
    fn run(&self, shared: &Shared, job: Job) -> bool {
        let request = match job {
            Job::Send(answer) => return answer.with_parts(|parts| self.lane.answer(&self.conn, parts)).is_ok(),
            Job::Run(request) => request,
            Job::OnSocket => match self.conn.recv_bytes() {
                Ok(bytes) => match protocol::decode_request_frame(bytes) {
                    Ok(request) => request,
                    Err(e) => return self.answer(&Err(RemoteError::BadRequest(e))),
                },
                Err(_) => return false,
            },
        };
        if let Request::Shutdown = request {
            let answered = self.answer(&Ok(Reply::Unit));
            shared.stop();
            return answered;
        }
        let response = respond(shared, &mut None, request, &Caller::new(&self.conn, shared, &self.build));
        if shared.stopping() {
            // A wait the stop ended says "timeout": the client must see the
            // connection end instead, as the server cuts it.
            return false;
        }
        self.answer(&response)
    }

    fn answer(&self, response: &Response) -> bool {
        protocol::with_encoded_answer(response, |m| m.with_parts(|parts| self.lane.answer(&self.conn, parts))).is_ok()
    }
}
