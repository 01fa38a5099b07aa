//! The manager server: a [`Listener`] whose connections are each served on
//! a thread of their own, against one [`Store`] of objects.
//!
//! A connection starts with the listener's handshake (on the connection's
//! thread, so a peer that stalls delays nobody; until it succeeds only
//! small messages are read), then a `Hello` naming the client process's
//! session and build (within [`HELLO_TIMEOUT`], as the client waits for the
//! answer: a peer that stays silent is closed; and at most
//! [`MAX_SETTING_UP`] connections are in these first two steps at once: a
//! new one cuts the oldest, so that a flood of silent peers delays a new
//! client by no more than its own handshake),
//! then any number of request/answer exchanges (on the
//! socket or, once the client asked for a lane, through it, served by the
//! dispatcher: the connection's thread then runs only the calls that may
//! wait, see `dispatch`). A
//! request that cannot be decoded is answered with an error and the
//! connection goes on; a broken stream ends that connection only. When a
//! session's last connection ends, the locks it held are freed (see
//! `locks`).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Duration;

use super::code;
use super::dispatch::Dispatcher;
use super::protocol::{self, MAX_REQUEST, RemoteError, Reply, Request, Response};
use super::store::{Object, Store};
use super::waiting::lock;
use crate::connection::Unauthenticated;
use crate::sys::Deadline;
use crate::sys::imp::{self, Interest};
use crate::{Address, Connection, ConnectionError, IntoAddress, Listener, Pipe, WireError};

/// A bound manager server, ready to [`run`](Server::run).
#[derive(Debug)]
pub(crate) struct Server {
    listener: Listener,
    shared: Arc<Shared>,
    wake_rx: Connection<()>,
}

/// What every connection thread of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// This server's id, told to each client in its `Welcome`.
    id: u64,
    /// It listens on TCP (its connections watch their peer's liveness).
    tcp: bool,
    store: Store,
    /// Live connections per client session.
    sessions: Mutex<HashMap<u64, usize>>,
    stopping: AtomicBool,
    /// Calls waiting on an object now (see [`Caller::waiting`]).
    waiting: AtomicUsize,
    wake_tx: Connection<()>,
    /// Every authenticated connection, to cut them when the server stops.
    live: Mutex<HashMap<u64, Connection<()>>>,
    next_conn: AtomicU64,
    /// Connections accepted and not yet past their hello, oldest first,
    /// each with a handle that cuts it.
    setting_up: Mutex<VecDeque<(u64, Connection<()>)>>,
    /// Serves the connections that have a lane.
    pub(crate) dispatcher: Dispatcher,
}

/// Most connections that may be in their handshake or waiting for their
/// hello at once (each costs a thread for up to the handshake timeout,
/// then up to [`HELLO_TIMEOUT`]); one more cuts the oldest.
const MAX_SETTING_UP: usize = 256;

/// How long an authenticated client may take to send its `Hello`: as long
/// as a client waits for the answer to it.
const HELLO_TIMEOUT: Duration = super::client::CONNECT_TIMEOUT;

/// The largest `Hello` read (a session, a pid and a build id).
const MAX_HELLO: u64 = 4 << 10;

/// How long the accept loop waits after a failed accept before it tries
/// again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Tries of [`Caller::lock`] on the dispatcher before it gives a held
/// object up (an object is held for a few microseconds by a plain call,
/// for as long as a user's function runs by an update).
const DISPATCHER_LOCK_TRIES: u32 = 64;

/// The client a request comes from, as the objects see it.
#[derive(Debug)]
pub(crate) struct Caller<'a> {
    conn: &'a Connection<()>,
    shared: &'a Shared,
    client_build: &'a str,
    /// The call runs on the dispatcher, which must not wait for an object.
    on_dispatcher: bool,
    /// On the dispatcher: the call found its object held, and did nothing.
    busy: Cell<bool>,
}

impl<'a> Caller<'a> {
    /// The caller on `conn`, a client of build `client_build`, served by
    /// its connection's own thread.
    pub(crate) fn new(conn: &'a Connection<()>, shared: &'a Shared, client_build: &'a str) -> Caller<'a> {
        Caller { conn, shared, client_build, on_dispatcher: false, busy: Cell::new(false) }
    }

    /// As [`Caller::new`], for a call the dispatcher runs: it takes no
    /// object that another thread holds (see [`Caller::lock`]).
    pub(crate) fn on_dispatcher(conn: &'a Connection<()>, shared: &'a Shared, client_build: &'a str) -> Caller<'a> {
        Caller { on_dispatcher: true, ..Caller::new(conn, shared, client_build) }
    }

    /// Counts the call as waiting on an object until the guard is dropped
    /// (what [`Request::Waiting`] reports).
    pub(crate) fn waiting(&self) -> WaitingCall<'a> {
        // ORDERING: Relaxed: a count read for reports; a waiter counts
        // itself before it sleeps, with its object's mutex held, so a
        // client that saw it counted and then changes the object (taking
        // that mutex) finds it asleep on the object, ready to be woken.
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        WaitingCall(&self.shared.waiting)
    }

    /// Locks the state of an object that a user's function may hold while
    /// it runs (a dict's, list's or value's during an update, a barrier's
    /// during its action), before the call changes anything. On the
    /// dispatcher, an object held by another thread is not waited for: the
    /// call fails at once and is marked [busy](Caller::busy), for the
    /// dispatcher to hand it to the connection's thread, so that one slow
    /// function holds back only the calls on its own object.
    pub(crate) fn lock<'m, T>(&self, m: &'m Mutex<T>) -> Result<MutexGuard<'m, T>, RemoteError> {
        if !self.on_dispatcher {
            return Ok(lock(m));
        }
        for _ in 0..DISPATCHER_LOCK_TRIES {
            match m.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::Poisoned(e)) => return Ok(e.into_inner()),
                Err(TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        self.busy.set(true);
        // Never sent: the dispatcher sees `busy` and hands the call off.
        Err(RemoteError::Timeout)
    }

    /// True when the call found its object held by another thread and did
    /// nothing (only on the dispatcher; see [`Caller::lock`]).
    pub(crate) fn busy(&self) -> bool {
        self.busy.get()
    }

    /// True when the client hung up (or sent something mid-call, which a
    /// client waiting for its answer never does) or the server is stopping.
    pub(crate) fn gone(&self) -> bool {
        // ORDERING: Relaxed: a flag polled by waits.
        self.shared.stopping.load(Ordering::Relaxed) || self.conn.poll(Duration::ZERO).unwrap_or(true)
    }

    /// Functions may be shipped only by a client of this very build.
    pub(crate) fn check_build(&self) -> Result<(), RemoteError> {
        let ours = crate::sys::imp::build_id::build_id();
        if self.client_build == ours {
            Ok(())
        } else {
            Err(RemoteError::BuildMismatch { manager: ours.to_string(), client: self.client_build.to_string() })
        }
    }
}

impl Server {
    /// Listens on `address` with `authkey`.
    pub(crate) fn bind(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Server, ConnectionError> {
        let listener = Listener::bind(address, authkey)?;
        let (wake_rx, wake_tx) = Pipe::<()>::one_way()?;
        let shared = Arc::new(Shared {
            id: fresh_server_id(),
            tcp: matches!(listener.address(), Address::Tcp(_)),
            store: Store::new(),
            sessions: Mutex::default(),
            stopping: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            wake_tx,
            live: Mutex::default(),
            next_conn: AtomicU64::new(0),
            setting_up: Mutex::default(),
            dispatcher: Dispatcher::new().map_err(|e| ConnectionError::from(WireError::Io(e)))?,
        });
        Ok(Server { listener, shared, wake_rx })
    }

    /// The address clients connect to.
    pub(crate) fn address(&self) -> &Address {
        self.listener.address()
    }

    /// Marks this process as one that exists to run this server (a manager
    /// process): every client in it is code that runs in the manager, or a
    /// thread such code started (see [`runs_in_this_process`]).
    pub(crate) fn dedicate_process(&self) {
        let _ = DEDICATED.set((std::process::id(), self.shared.id));
    }

    /// A handle that stops the server from another thread.
    pub(crate) fn stopper(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Accepts and serves clients until the server is stopped (a `Shutdown`
    /// request or [`Shared::stop`]); then cuts every connection, also those
    /// still in their handshake.
    pub(crate) fn run(self) {
        loop {
            let fds = [(self.listener.as_fd(), Interest::Read), (self.wake_rx.as_fd(), Interest::Read)];
            let ready = imp::poll_fds(&fds, Deadline::NEVER).unwrap_or_else(|_| vec![false, true]);
            if self.shared.stopping() {
                break;
            }
            if !ready[0] {
                continue;
            }
            match self.listener.accept_unauthenticated(Deadline::after(Duration::ZERO)) {
                Ok(pending) => {
                    // ORDERING: Relaxed: ids only need to be unique.
                    let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
                    self.shared.enter_setup(id, pending.cutter());
                    let shared = self.shared.clone();
                    let spawned = std::thread::Builder::new()
                        .name("multiproc-manager-conn".into())
                        .spawn(move || serve_connection(&shared, id, pending));
                    if let Err(e) = spawned {
                        self.shared.leave_setup(id);
                        tracing::warn!("manager: cannot start a thread for a client: {e}");
                    }
                }
                Err(ConnectionError::Timeout) => {}
                Err(e) => {
                    // Out of descriptors, say: the client stays in the
                    // backlog and the listener readable. Wait a moment (or
                    // for the stop) rather than spin on it.
                    tracing::debug!("manager: accept failed: {e}");
                    let _ = imp::poll_fds(&fds[1..], Deadline::after(ACCEPT_BACKOFF));
                }
            }
        }
        for (_, conn) in lock(&self.shared.setting_up).iter() {
            conn.shutdown();
        }
        for conn in lock(&self.shared.live).values() {
            conn.shutdown();
        }
    }
}

impl Shared {
    /// True once the server is stopping.
    pub(crate) fn stopping(&self) -> bool {
        // ORDERING: Relaxed: the wake-up message orders the rest.
        self.stopping.load(Ordering::Relaxed)
    }

    /// Runs `f` on each authenticated connection.
    #[cfg(test)]
    pub(crate) fn for_each_live(&self, f: impl FnMut(&Connection<()>)) {
        lock(&self.live).values().for_each(f);
    }

    /// Counts connection `id` as setting up (see [`MAX_SETTING_UP`]),
    /// cutting the oldest such connection if there are that many already:
    /// a flood of peers that stall then costs a bounded number of threads,
    /// and cannot shut out a client that completes its setup in time.
    fn enter_setup(&self, id: u64, cutter: Connection<()>) {
        let mut setting_up = lock(&self.setting_up);
        if setting_up.len() >= MAX_SETTING_UP
            && let Some((_, oldest)) = setting_up.pop_front()
        {
            tracing::warn!("manager: {MAX_SETTING_UP} connections not past their hello; cutting the oldest");
            oldest.shutdown();
        }
        setting_up.push_back((id, cutter));
    }

    /// Connection `id` is past its hello (or gone).
    fn leave_setup(&self, id: u64) {
        lock(&self.setting_up).retain(|(pending, _)| *pending != id);
    }

    /// Stops the server: its accept loop ends and every connection is cut.
    pub(crate) fn stop(&self) {
        // ORDERING: Relaxed: see `stopping`.
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.wake_tx.send_bytes(b"");
        self.dispatcher.wake();
    }
}

/// A new server's id: random, and never 0 (`SERVING`'s "none"). Without
/// random bytes, the pid and a count still tell this process's servers
/// apart from each other, which is where it matters most.
fn fresh_server_id() -> u64 {
    static SERVERS: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // ORDERING: Relaxed: only uniqueness matters.
        let count = SERVERS.fetch_add(1, Ordering::Relaxed);
        bytes = (u64::from(std::process::id()) << 32 | count).to_le_bytes();
    }
    u64::from_le_bytes(bytes) | 1
}

thread_local! {
    /// The id of the server whose request this thread runs (0: none).
    static SERVING: Cell<u64> = const { Cell::new(0) };
}

/// The server a manager process runs, with that process's pid (a process
/// forked from it inherits this, and is told apart by its pid).
static DEDICATED: OnceLock<(u32, u64)> = OnceLock::new();

/// True when this process is the manager process of `server`: a call to it
/// from here comes from code running in the manager (or a thread that code
/// started, which it may be waiting for), and would wait for itself. Asks
/// the OS for the pid: for opening a connection, not for every call.
pub(crate) fn runs_in_this_process(server: u64) -> bool {
    DEDICATED.get().is_some_and(|&(pid, id)| id == server && pid == std::process::id())
}

/// The id of the server whose request the calling thread runs, if any: a
/// proxy call to that server from here (a user's function calling back)
/// would wait for itself.
pub(crate) fn serving() -> Option<u64> {
    Some(SERVING.get()).filter(|&id| id != 0)
}

/// A connection counted as setting up until this is dropped (also when
/// its thread panics).
struct SettingUp<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for SettingUp<'_> {
    fn drop(&mut self) {
        self.shared.leave_setup(self.id);
    }
}

/// Serves connection `id` from its handshake to its last request.
fn serve_connection(shared: &Arc<Shared>, id: u64, pending: Unauthenticated) {
    let setting_up = SettingUp { shared, id };
    let conn: Connection<()> = match pending.authenticate() {
        Ok(conn) => conn,
        Err(e) => {
            tracing::info!("manager: refused a client: {e}");
            return;
        }
    };
    if shared.tcp {
        super::client::watch_liveness(&conn);
    }
    lock(&shared.live).insert(id, conn.clone());
    if shared.stopping() {
        conn.shutdown();
    }
    let greeted = read_hello(&conn);
    // From here on the connection is not cut to make room: if it was cut
    // meanwhile, the welcome fails.
    drop(setting_up);
    if let Some((session, build)) = greeted
        && answer(&conn, &Ok(Reply::Welcome { server: shared.id })).is_ok()
    {
        conn.set_recv_limit(Some(MAX_REQUEST));
        *lock(&shared.sessions).entry(session).or_default() += 1;
        serve_requests(shared, &conn, id, &build);
        let last = {
            let mut sessions = lock(&shared.sessions);
            let count = sessions.entry(session).or_default();
            *count -= 1;
            *count == 0 && sessions.remove(&session).is_some()
        };
        if last {
            shared.store.session_gone(session);
        }
    }
    lock(&shared.live).remove(&id);
}

/// Reads the client's `Hello`: its session and build id. `None` (the
/// connection is to be closed) for anything else, including silence for
/// [`HELLO_TIMEOUT`].
fn read_hello(conn: &Connection<()>) -> Option<(u64, String)> {
    conn.set_recv_limit(Some(MAX_HELLO));
    let bytes = match conn.recv_bytes_timeout(HELLO_TIMEOUT) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::info!("manager: closing a client that sent no hello: {e}");
            return None;
        }
    };
    match protocol::decode_request(&bytes) {
        Ok(Request::Hello { session, build_id, .. }) => Some((session, build_id)),
        Ok(_) => {
            let _ = answer(conn, &Err(RemoteError::BadRequest("the first request must be a hello".into())));
            None
        }
        Err(e) => {
            let _ = answer(conn, &Err(RemoteError::BadRequest(e)));
            None
        }
    }
}

/// The object of a connection's last call: a client usually works on one
/// object call after call, so this skips the store's lock and map on most
/// calls. It is dropped as soon as it is seen removed, so that it does not
/// keep a removed object's memory.
pub(crate) type Last = Option<(u64, Arc<Object>)>;

fn serve_requests(shared: &Arc<Shared>, conn: &Connection<()>, id: u64, build: &str) {
    let caller = Caller::new(conn, shared, build);
    let mut last: Last = None;
    while let Ok(bytes) = conn.recv_bytes() {
        let (response, stop) = match protocol::decode_request_frame(bytes) {
            Err(e) => (Err(RemoteError::BadRequest(e)), false),
            Ok(Request::Shutdown) => (Ok(Reply::Unit), true),
            Ok(Request::OpenLane) => match shared.dispatcher.open(shared, id, conn, build) {
                Ok(lane) => {
                    // From now on the dispatcher serves this client; this
                    // thread runs what may wait and watches the socket.
                    lane.serve_hand_offs(shared);
                    shared.dispatcher.close(id);
                    return;
                }
                Err(e) => (Err(e), false),
            },
            Ok(request) => (respond(shared, &mut last, request, &caller), false),
        };
        if !stop && shared.stopping() {
            // As in `LaneConn::run`: no answer once the server stops.
            break;
        }
        if answer(conn, &response).is_err() {
            break;
        }
        if stop {
            shared.stop();
        }
    }
}

/// Runs one request (not `Shutdown`, which stops the server after its
/// answer). A panic anywhere in a call (a user type's `Deserialize`, say)
/// is that call's error; the connection and the manager go on.
pub(crate) fn respond(shared: &Shared, last: &mut Last, request: Request, caller: &Caller<'_>) -> Response {
    let outer = SERVING.replace(shared.id);
    let response = code::guarded(|| handle(&shared.store, last, request, caller)).and_then(|r| r);
    SERVING.set(outer);
    response
}

fn handle(store: &Store, last: &mut Last, request: Request, caller: &Caller<'_>) -> Response {
    match request {
        Request::Call { object: id, op } => {
            let object = match last {
                Some((cached, object)) if *cached == id && !object.is_removed() => object,
                _ => {
                    *last = None;
                    &last.insert((id, store.get(id)?)).1
                }
            };
            object.call(op, caller)
        }
        Request::Create { init, type_name, type_hash } => store.create(init, type_name, type_hash, caller),
        Request::Publish { name, object } => store.publish(name, object),
        Request::Lookup { name } => store.lookup(&name),
        Request::Remove { object } => {
            if last.as_ref().is_some_and(|(cached, _)| *cached == object) {
                *last = None;
            }
            store.remove(object)
        }
        Request::Hello { .. } => Err(RemoteError::BadRequest("hello twice".into())),
        Request::OpenLane => Err(RemoteError::BadRequest("this connection has a lane already".into())),
        Request::Shutdown => Err(RemoteError::BadRequest("shutdown is not a call".into())),
        // ORDERING: Relaxed: see `Caller::waiting`.
        Request::Waiting => Ok(Reply::Count(caller.shared.waiting.load(Ordering::Relaxed) as u64)),
    }
}

/// A call counted as waiting (see [`Caller::waiting`]).
pub(crate) struct WaitingCall<'a>(&'a AtomicUsize);

impl Drop for WaitingCall<'_> {
    fn drop(&mut self) {
        // ORDERING: Relaxed: see `Caller::waiting`.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn answer(conn: &Connection<()>, response: &Response) -> Result<(), ConnectionError> {
    protocol::with_encoded_answer(response, |m| m.with_parts(|parts| conn.send_bytes_parts(parts)))
}
