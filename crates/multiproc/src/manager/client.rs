//! The client side of the protocol: where a manager is ([`Endpoint`]), and a
//! per-process set of idle connections to it.
//!
//! A call takes an idle connection (or opens one: connect, authenticate,
//! say hello and, to a manager on this machine, open a shared-memory lane:
//! see `lane`), sends one request, waits for the answer and puts the
//! connection back. Threads calling at the same time use different
//! connections, so a call that blocks in the manager (a `get` on an empty
//! queue, a held lock) blocks only its own thread. Connections stay open
//! while the process lives (or until their manager hangs up): the manager
//! counts a client process as alive while it has one, and releases the
//! locks of a process that has none left (the next acquirer is told
//! `OwnerDied`).

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::ManagerError;
use super::lane::{self, Lane};
use super::protocol::{self, MAX_REQUEST, MAX_RESPONSE, Owner, Reply, Request, Response};
use crate::process_local::ProcessLocal;
use crate::sys::imp::listen::TcpLiveness;
use crate::{Address, Client, Connection, ConnectionError, WireError, thread_buffer, wire};

/// How long connecting and authenticating to a manager may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How manager TCP connections (both ends) notice a peer that vanished
/// without a word: probes after 10 s of silence, 5 s apart; the kernel
/// gives up on the peer 30 s after it last heard from it, so a call
/// pending on a dead link fails within about 35 s (see the module docs of
/// `manager`).
pub(crate) const TCP_LIVENESS: TcpLiveness = TcpLiveness {
    idle: Duration::from_secs(10),
    interval: Duration::from_secs(5),
    probes: 4,
    user_timeout: Duration::from_secs(30),
};

/// Where a manager listens and the key it wants. Travels inside every proxy
/// (the key too, as Python's proxies carry theirs: whoever holds a proxy may
/// use the manager).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    /// The address, parsed once; it travels in its `Display` form
    /// (`unix:…`, `abstract:…`, `tcp:…`).
    #[serde(with = "address_text")]
    pub address: Address,
    pub authkey: Option<ByteBuf>,
}

impl Endpoint {
    /// The endpoint of the manager listening on `address`, as proxies carry
    /// it. A manager bound on every interface (`0.0.0.0`, `::`) is reached
    /// through loopback: an unspecified address is one to listen on, not
    /// one to connect to, and a proxy handed to another process must name a
    /// place it can connect to.
    pub(crate) fn new(address: &Address, authkey: Option<&[u8]>) -> Endpoint {
        let address = match address {
            Address::Tcp(at) if at.ip().is_unspecified() => {
                let loopback: IpAddr =
                    if at.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() };
                Address::Tcp(SocketAddr::new(loopback, at.port()))
            }
            other => other.clone(),
        };
        Endpoint { address, authkey: authkey.map(|k| ByteBuf::from(k.to_vec())) }
    }
}

/// An [`Endpoint`]'s address in its `Display` form, as proxies carry it.
mod address_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Address;
    use crate::wire::de_error;

    pub(super) fn serialize<S: Serializer>(address: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(address)
    }

    /// Parses the address back. A TCP address must be an IP address and
    /// port, as `Display` writes it (with or without `tcp:`): a host name
    /// in bytes from another process is refused rather than looked up
    /// while decoding.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let text = String::deserialize(d)?;
        let local = ["unix:", "abstract:", "@", "/", "./", "../"].iter().any(|form| text.starts_with(form));
        let parsed = if local {
            text.parse::<Address>().map_err(|e| format!("{e} (in a proxy)"))
        } else {
            let at = text.strip_prefix("tcp:").unwrap_or(&text);
            at.parse().map(Address::Tcp).map_err(|e| format!("invalid address {text:?} in a proxy: {e}"))
        };
        parsed.map_err(de_error)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Endpoint").field("address", &self.address).field("authkey", &self.authkey.is_some()).finish()
    }
}

/// This process's connections, by manager.
struct Clients {
    /// Identifies this process to managers (fresh in every process).
    session: u64,
    /// Idle connections by manager. A short list searched by equality: a
    /// process talks to one or two managers, and this is every call's path
    /// (twice), where hashing the address and key cost more than comparing.
    idle: Vec<(Endpoint, Vec<Link>)>,
}

impl Clients {
    fn idle_for(&mut self, endpoint: &Endpoint) -> Option<&mut Vec<Link>> {
        self.idle.iter_mut().find(|(e, _)| e == endpoint).map(|(_, conns)| conns)
    }
}

static CLIENTS: ProcessLocal<Option<Clients>> = ProcessLocal::new(|| None);

fn with_clients<T>(f: impl FnOnce(&mut Clients) -> T) -> T {
    let mut guard = CLIENTS.lock();
    let clients = guard.get_or_insert_with(|| {
        let mut bytes = [0u8; 8];
        // Without random bytes, the pid and the time still tell processes apart.
        if getrandom::fill(&mut bytes).is_err() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            bytes = (now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(40)).to_le_bytes();
        }
        Clients { session: u64::from_le_bytes(bytes), idle: Vec::new() }
    });
    f(clients)
}

/// The caller's identity as a lock owner: this process and this thread.
pub(crate) fn owner() -> Owner {
    static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        // ORDERING: Relaxed: only uniqueness matters.
        static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    }
    Owner { session: with_clients(|c| c.session), thread: THREAD.with(|t| *t) }
}

/// Sends one request to the manager at `endpoint` and returns its answer.
///
/// # Errors
///
/// [`ManagerError::Connection`] when the manager cannot be reached or the
/// connection breaks (the connection is then dropped, not reused);
/// [`ManagerError::Remote`] with the manager's own error.
pub(crate) fn call(endpoint: &Endpoint, request: &Request) -> Result<Reply, ManagerError> {
    call_naming_server(endpoint, request).map(|(reply, _)| reply)
}

/// As [`call`], also naming the server that answered (its id, from the
/// `Welcome` of the connection the call went on).
pub(crate) fn call_naming_server(endpoint: &Endpoint, request: &Request) -> Result<(Reply, u64), ManagerError> {
    let exchanged = exchange_pooled(endpoint, request);
    if let Err(ManagerError::Connection(ConnectionError::Closed | ConnectionError::Connect { .. })) = &exchanged {
        // The manager is gone (or was replaced at its address): its other
        // idle connections are as stale as this one. (Not on other errors:
        // while the manager lives, closing this process's last connection
        // to it would release the locks the process holds.)
        forget_endpoint(endpoint);
    }
    let (link, response) = exchanged?;
    let server = link.server;
    give_back(endpoint, link);
    Ok((response?, server))
}

fn exchange_pooled(endpoint: &Endpoint, request: &Request) -> Result<(Link, Response), ManagerError> {
    let Some(idle) = with_clients(|c| c.idle_for(endpoint).and_then(Vec::pop)) else {
        return fresh_exchange(endpoint, request);
    };
    if idle.calls_back() {
        return keep_unless_broken(endpoint, idle, Err(ManagerError::CallsItsOwnManager));
    }
    let response = match &idle.lane {
        // Through a lane, a stale connection shows as a failed call, found
        // within a millisecond or two.
        Some(lane) => through_lane(&idle.conn, lane, request),
        None => match send(&idle.conn, request) {
            // The request did not leave: this idle connection went stale
            // (the manager stopped, or was replaced at the same address).
            // Try once with a fresh one.
            Err(e) if !matches!(e, ManagerError::TooLarge { .. }) => return fresh_exchange(endpoint, request),
            sent => sent.and_then(|()| receive(&idle.conn)),
        },
    };
    keep_unless_broken(endpoint, idle, response)
}

fn fresh_exchange(endpoint: &Endpoint, request: &Request) -> Result<(Link, Response), ManagerError> {
    let link = open(endpoint)?;
    let response = if link.calls_back() { Err(ManagerError::CallsItsOwnManager) } else { link.exchange(request) };
    keep_unless_broken(endpoint, link, response)
}

/// The link with its answer. A link whose request was refused before it
/// left is still good, and goes back to the pool: dropping it could close
/// the process's last connection, which frees the locks it holds.
fn keep_unless_broken(
    endpoint: &Endpoint,
    link: Link,
    response: Result<Response, ManagerError>,
) -> Result<(Link, Response), ManagerError> {
    match response {
        Ok(response) => Ok((link, response)),
        Err(e) => {
            if matches!(e, ManagerError::TooLarge { .. } | ManagerError::CallsItsOwnManager) {
                give_back(endpoint, link);
            }
            Err(e)
        }
    }
}

/// Opens a connection to the manager at `endpoint` (checking the address
/// and the key) and keeps it for later calls, unless the process has an
/// idle one already: a process that connects again and again must not
/// gather connections (and closing this one leaves the others, so the
/// manager does not count the process gone).
pub(crate) fn connect(endpoint: &Endpoint) -> Result<(), ManagerError> {
    let link = open(endpoint)?;
    if !with_clients(|c| c.idle_for(endpoint).is_some_and(|idle| !idle.is_empty())) {
        give_back(endpoint, link);
    }
    Ok(())
}

/// Keeps an idle connection for the next call (without cloning the
/// endpoint when it has an entry already: this is every call's path).
fn give_back(endpoint: &Endpoint, link: Link) {
    with_clients(|c| match c.idle_for(endpoint) {
        Some(idle) => idle.push(link),
        None => c.idle.push((endpoint.clone(), vec![link])),
    });
}

/// The id of the server at `endpoint`, from the `Welcome` of one of this
/// process's connections to it: an idle one that is still up, or a new one
/// (then kept for later calls). Not a call's path: for telling whether two
/// addresses reach the same manager.
pub(crate) fn server_id(endpoint: &Endpoint) -> Result<u64, ManagerError> {
    let link = loop {
        match with_clients(|c| c.idle_for(endpoint).and_then(Vec::pop)) {
            // Its manager is gone (maybe replaced at the same address).
            Some(link) if link.hung_up() => drop(link),
            Some(link) => break link,
            None => break open(endpoint)?,
        }
    };
    let server = link.server;
    give_back(endpoint, link);
    Ok(server)
}

/// Runs `f` on each idle connection of this process to `endpoint`.
#[cfg(test)]
pub(crate) fn for_each_idle(endpoint: &Endpoint, mut f: impl FnMut(&Connection<()>)) {
    with_clients(|c| c.idle_for(endpoint).into_iter().flatten().for_each(|link| f(&link.conn)));
}

/// Closes this process's idle connections to a manager that was shut down.
pub(crate) fn forget_endpoint(endpoint: &Endpoint) {
    with_clients(|c| c.idle.retain(|(e, _)| e != endpoint));
}

/// Closes the idle connections (to any manager) whose manager hung up: it
/// was shut down or killed. A process that meets many managers over its
/// life (a pool worker given the proxies of one manager per batch) would
/// otherwise keep a connection (a socket, and a lane's memory) to each for
/// ever. A manager never writes on an idle connection, so one that reads
/// as ready has ended. Runs when a connection is opened, not on every call.
fn close_hung_up() {
    let closed: Vec<Link> = with_clients(|c| {
        let mut closed = Vec::new();
        for (_, links) in &mut c.idle {
            let (gone, live) = std::mem::take(links).into_iter().partition(|l: &Link| l.hung_up());
            *links = live;
            closed.extend(gone);
        }
        c.idle.retain(|(_, links)| !links.is_empty());
        closed
    });
    // Closed outside the process's lock.
    drop(closed);
}

/// Connects, authenticates, says hello and, with a manager on this
/// machine, opens a lane; each step within [`CONNECT_TIMEOUT`] (a peer
/// that passed the handshake but is no manager may never answer).
fn open(endpoint: &Endpoint) -> Result<Link, ManagerError> {
    close_hung_up();
    let conn = connect_socket(endpoint, CONNECT_TIMEOUT)?;
    let server = match ask_within(&conn, &hello(), CONNECT_TIMEOUT)? {
        Reply::Welcome { server } => server,
        other => return Err(ManagerError::Protocol(format!("{other:?} in answer to hello"))),
    };
    let lane = if lane::possible(&endpoint.address) { open_lane(&conn, CONNECT_TIMEOUT)? } else { None };
    Ok(Link { conn, lane, server, in_its_manager: super::server::runs_in_this_process(server) })
}

/// Sends `request` on a connection without a lane and waits at most
/// `timeout` for the answer.
fn ask_within(conn: &Connection<()>, request: &Request, timeout: Duration) -> Result<Reply, ManagerError> {
    send(conn, request)?;
    Ok(wire::decode::<Response>(&conn.recv_bytes_timeout(timeout)?, Vec::new())??)
}

/// Connects and authenticates, within `timeout`.
fn connect_socket(endpoint: &Endpoint, timeout: Duration) -> Result<Connection<()>, ManagerError> {
    let key = endpoint.authkey.as_deref().map(|k| &k[..]);
    let conn: Connection<()> = Client::connect_timeout(&endpoint.address, key, timeout)?;
    conn.set_recv_limit(Some(MAX_RESPONSE));
    if endpoint.address.is_tcp() {
        watch_liveness(&conn);
    }
    Ok(conn)
}

/// Sets [`TCP_LIVENESS`] on a manager TCP connection (either end). Without
/// it the connection still works, only a vanished peer goes unnoticed:
/// logged, not an error.
pub(crate) fn watch_liveness(conn: &Connection<()>) {
    if let Err(e) = crate::sys::imp::listen::set_tcp_liveness(std::os::fd::AsFd::as_fd(conn), TCP_LIVENESS) {
        tracing::warn!("manager: cannot set keepalive on a TCP connection (a vanished peer goes unnoticed): {e}");
    }
}

/// The first request of every connection: this process's session and build.
fn hello() -> Request {
    Request::Hello {
        session: with_clients(|c| c.session),
        pid: std::process::id() as i32,
        build_id: crate::sys::imp::build_id::build_id().to_string(),
    }
}

/// Asks the manager at `endpoint` to stop, waiting at most about `timeout`
/// for each step. It goes on a connection of its own, without a lane: its
/// connection's thread serves it, whatever the other connections' threads
/// and the dispatcher are doing.
pub(crate) fn shutdown(endpoint: &Endpoint, timeout: Duration) -> Result<(), ManagerError> {
    let conn = connect_socket(endpoint, timeout)?;
    for request in [hello(), Request::Shutdown] {
        match ask_within(&conn, &request, timeout)? {
            Reply::Unit | Reply::Welcome { .. } => {}
            other => return Err(ManagerError::Protocol(format!("{other:?} in answer to {request:?}"))),
        }
    }
    Ok(())
}

/// Asks the manager for a lane, waiting at most `timeout` for the whole of
/// its answer; `None` when it cannot make one (the socket then carries the
/// calls).
fn open_lane(conn: &Connection<()>, timeout: Duration) -> Result<Option<Lane>, ManagerError> {
    send(conn, &Request::OpenLane)?;
    let (bytes, mut fds) = conn.recv_bytes_with_fds_timeout(timeout)?;
    match wire::decode::<Response>(&bytes, Vec::new())? {
        Ok(Reply::Lane) if fds.len() == 2 => {
            let (lane, bell) = (fds.remove(0), fds.remove(0));
            let lane = Lane::open(lane, bell).map_err(|e| ConnectionError::from(WireError::Io(e)))?;
            Ok(Some(lane))
        }
        Ok(other) => Err(ManagerError::Protocol(format!("{other:?} with {} handles in answer to a lane", fds.len()))),
        Err(e) => {
            tracing::debug!("manager: no lane ({e}); calls go through the socket");
            Ok(None)
        }
    }
}

/// One connection to a manager, with its lane when it has one.
struct Link {
    conn: Connection<()>,
    lane: Option<Lane>,
    /// The id of the server at the other end (from its `Welcome`).
    server: u64,
    /// True when this process is that server's manager process.
    in_its_manager: bool,
}

impl Link {
    /// True when a call on this link would come from the manager it
    /// reaches, and could wait for itself (see
    /// [`ManagerError::CallsItsOwnManager`]): this thread runs one of its
    /// requests, or this process is its manager process (whose only
    /// clients are code running in the manager and threads that code
    /// started, which it may be waiting for).
    fn calls_back(&self) -> bool {
        self.in_its_manager || super::server::serving() == Some(self.server)
    }

    /// True when the manager ended this (idle) connection.
    fn hung_up(&self) -> bool {
        self.conn.poll(Duration::ZERO).unwrap_or(true)
    }

    /// One request out, one response in.
    fn exchange(&self, request: &Request) -> Result<Response, ManagerError> {
        match &self.lane {
            Some(lane) => through_lane(&self.conn, lane, request),
            None => {
                send(&self.conn, request)?;
                receive(&self.conn)
            }
        }
    }
}

/// One call through a lane.
fn through_lane(conn: &Connection<()>, lane: &Lane, request: &Request) -> Result<Response, ManagerError> {
    thread_local! {
        static ANSWER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    // A buffer grown past the lane's size held an answer that came on the
    // socket: it is not kept.
    thread_buffer::with_kept(&ANSWER, lane::LANE_LEN, |answer| {
        with_request(request, |parts| lane.call(conn, parts, answer))?;
        crate::allocator::moved(answer.len());
        if answer.len() > lane::LANE_LEN {
            // It came on the socket, in a buffer of its own: a large value
            // in it keeps the buffer rather than being copied out.
            return Ok(decode_response(std::mem::take(answer))?);
        }
        Ok(wire::decode::<Response>(answer, Vec::new())?)
    })
}

fn send(conn: &Connection<()>, request: &Request) -> Result<(), ManagerError> {
    with_request(request, |parts| conn.send_bytes_parts(parts))
}

/// Encodes `request` and runs `f` on its parts (see `Gathered`), unless it
/// is larger than the manager reads ([`ManagerError::TooLarge`]: it would
/// end the connection; nothing is sent).
fn with_request<R>(
    request: &Request,
    f: impl FnOnce(&[&[u8]]) -> Result<R, ConnectionError>,
) -> Result<R, ManagerError> {
    let mut size = 0;
    let done = protocol::with_encoded(request, |message| {
        size = message.len();
        if size as u64 > MAX_REQUEST { Ok(None) } else { message.with_parts(f).map(Some) }
    })?;
    done.ok_or(ManagerError::TooLarge { size, limit: MAX_REQUEST })
}

fn receive(conn: &Connection<()>) -> Result<Response, ManagerError> {
    let bytes = conn.recv_bytes()?;
    crate::allocator::moved(bytes.len());
    Ok(decode_response(bytes)?)
}

/// Decodes an answer frame, which it takes (see `blob`).
fn decode_response(frame: Vec<u8>) -> Result<Response, WireError> {
    super::blob::decode_framed::<Response>(frame)
}
