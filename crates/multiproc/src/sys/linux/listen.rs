//! Listening and connecting stream sockets: Unix paths, Linux abstract names
//! and TCP. Every descriptor is close-on-exec; listeners are non-blocking so
//! that `accept` can honour a deadline, accepted and connected sockets block.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{self as unix, UnixListener};
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::super::Deadline;
use super::fd::wait_readable;

pub(crate) use super::fd::FileId;

/// Listens on a Unix socket at `path`; returns the listener and the identity
/// of the socket file it created.
///
/// The steps are done one by one (not with `UnixListener::bind`, which binds
/// and listens in one call) so that a failure after the bind is known to come
/// after it: then the socket file this call created is removed again (only if
/// the file at `path` is still that one), so a failed bind leaves no file
/// behind to make the next bind fail with "address in use".
pub(crate) fn listen_unix(path: &Path) -> io::Result<(OwnedFd, FileId)> {
    let addr = SocketAddrUnix::new(path)?;
    // Non-blocking from the start (so `accept` can honour a deadline): no
    // step that can fail is left between bind and listen but listen itself.
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &addr).map_err(|e| explain_in_use(e.into(), path))?;
    // The file exists from here on: it is ours.
    let id = file_id(path).ok_or_else(|| io::Error::other("the socket file vanished right after bind"))?;
    // Backlog -1: the kernel's maximum (`somaxconn`), as std's `bind`.
    if let Err(e) = rustix::net::listen(&fd, -1) {
        if file_id(path) == Some(id) {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    Ok((fd, id))
}

/// An "address in use" at a path where nobody listens (a socket file left by
/// a listener that was killed) says so, and what to do. Whether anyone
/// listens is read from `/proc/net/unix` (connecting to find out would hand
/// a live listener a bogus client); a listening socket whose path ends in
/// the same file name counts as someone.
fn explain_in_use(e: io::Error, path: &Path) -> io::Error {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if e.kind() != io::ErrorKind::AddrInUse || !is_socket || someone_may_listen(path).unwrap_or(true) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "{e}: a socket file is there but nobody listens on it (left by a listener that was killed?); remove \
             the file if it is no longer needed, then bind again"
        ),
    )
}

/// True if some listening Unix socket is bound to a path with the file name
/// of `path` (`None` if that cannot be told).
fn someone_may_listen(path: &Path) -> Option<bool> {
    /// `__SO_ACCEPTCON` in the flags column: the socket listens.
    const LISTENING: u32 = 1 << 16;
    let name = path.file_name()?.as_encoded_bytes();
    let table = std::fs::read("/proc/net/unix").ok()?;
    Some(table.split(|b| *b == b'\n').skip(1).any(|line| {
        let fields: Vec<&[u8]> = line.split(|b| *b == b' ').filter(|f| !f.is_empty()).collect();
        let flags = fields.get(3).and_then(|f| u32::from_str_radix(std::str::from_utf8(f).ok()?, 16).ok());
        let bound = fields.get(7).map(|p| p.rsplit(|b| *b == b'/').next().unwrap_or(p));
        flags.is_some_and(|f| f & LISTENING != 0) && bound == Some(name)
    }))
}

/// Listens on the Linux abstract Unix address `name` (no file is created).
pub(crate) fn listen_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let addr = unix::SocketAddr::from_abstract_name(name)?;
    let listener = UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener.into())
}

/// Listens on a TCP address; returns the listener and the address actually
/// bound (port 0 becomes the port the kernel chose).
pub(crate) fn listen_tcp(addr: SocketAddr) -> io::Result<(OwnedFd, SocketAddr)> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    Ok((listener.into(), bound))
}

/// Accepts one connection, waiting until the deadline; `None` on timeout.
/// With `tcp`, Nagle's algorithm is turned off on the new socket (messages
/// are framed, and a delayed small frame costs a round trip).
pub(crate) fn accept(listener: BorrowedFd<'_>, deadline: Deadline, tcp: bool) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => {
                if tcp {
                    nodelay_or_warn(&fd);
                }
                return Ok(Some(fd));
            }
            Err(e) if e == Errno::INTR => continue,
            Err(e) if accept_waits_on(e) => {}
            Err(e) => return Err(e.into()),
        }
        if deadline.expired() || !wait_readable(listener, deadline)? {
            return Ok(None);
        }
    }
}

/// Turns Nagle's algorithm off on an accepted TCP socket. A failure is the
/// connection's business, not the listener's: the connection is kept (it
/// works, small frames may just wait for a round trip) and a warning is
/// logged. (On Linux this does not fail even for a peer that reset the
/// connection before the accept; a dead peer shows up in the handshake.)
fn nodelay_or_warn(fd: &OwnedFd) {
    if let Err(e) = rustix::net::sockopt::set_tcp_nodelay(fd, true) {
        tracing::warn!("cannot turn off Nagle's algorithm on an accepted TCP connection (kept, may be slower): {e}");
    }
}

/// True when `accept` failing with `e` leaves the listener fine, so the
/// caller's accept waits for the next connection (until its deadline):
/// nothing is pending (another thread took the connection), or the pending
/// connection failed before it was taken. Linux reports a connection that
/// was reset (`ECONNABORTED`) or met a network error while it waited
/// (accept(2), "Error handling": for TCP/IP `ENETDOWN`, `EPROTO`,
/// `ENOPROTOOPT`, `EHOSTDOWN`, `ENONET`, `EHOSTUNREACH`, `EOPNOTSUPP`,
/// `ENETUNREACH`) as accept's error; the listener is not at fault.
fn accept_waits_on(e: Errno) -> bool {
    [
        Errno::AGAIN,
        Errno::CONNABORTED,
        Errno::NETDOWN,
        Errno::PROTO,
        Errno::NOPROTOOPT,
        Errno::HOSTDOWN,
        Errno::NONET,
        Errno::HOSTUNREACH,
        Errno::OPNOTSUPP,
        Errno::NETUNREACH,
    ]
    .contains(&e)
}

/// Connects to the Unix socket at `path`, giving up at the deadline
/// (`TimedOut`).
pub(crate) fn connect_unix(path: &Path, deadline: Deadline) -> io::Result<OwnedFd> {
    connect_local(&SocketAddrUnix::new(path)?, deadline)
}

/// Connects to the Linux abstract Unix address `name`, giving up at the
/// deadline (`TimedOut`).
pub(crate) fn connect_abstract(name: &[u8], deadline: Deadline) -> io::Result<OwnedFd> {
    connect_local(&SocketAddrUnix::new_abstract_name(name)?, deadline)
}

fn connect_local(addr: &SocketAddrUnix, deadline: Deadline) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    // A Unix connect waits while the listener's backlog is full; the send
    // timeout bounds that wait (the kernel then fails it with EAGAIN).
    let bounded = deadline.remaining().is_some();
    if let Some(left) = deadline.remaining() {
        set_socket_timeout(&fd, Timeout::Send, Some(left.max(Duration::from_millis(1))))?;
    }
    match rustix::net::connect(&fd, addr) {
        Ok(()) => {}
        Err(e) if e == Errno::AGAIN => return Err(io::ErrorKind::TimedOut.into()),
        Err(e) => return Err(e.into()),
    }
    if bounded {
        set_socket_timeout(&fd, Timeout::Send, None)?;
    }
    Ok(fd)
}

/// Connects to a TCP address, giving up at the deadline (`TimedOut`).
pub(crate) fn connect_tcp(addr: SocketAddr, deadline: Deadline) -> io::Result<OwnedFd> {
    let stream = match deadline.remaining() {
        None => TcpStream::connect(addr)?,
        Some(left) if left.is_zero() => return Err(io::ErrorKind::TimedOut.into()),
        Some(left) => TcpStream::connect_timeout(&addr, left)?,
    };
    stream.set_nodelay(true)?;
    Ok(stream.into())
}

/// How a TCP connection notices a peer that vanished without a word (its
/// machine lost power, the network between went away): keepalive probes
/// after `idle` of silence, `interval` apart, `probes` of them; and data
/// left unacknowledged for `user_timeout` ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpLiveness {
    pub idle: Duration,
    pub interval: Duration,
    pub probes: u32,
    pub user_timeout: Duration,
}

/// Sets `liveness` on the TCP socket `fd`: a blocked read or write on it
/// then fails (`ETIMEDOUT`) once the peer is found gone.
pub(crate) fn set_tcp_liveness(fd: BorrowedFd<'_>, liveness: TcpLiveness) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(fd, true)?;
    sockopt::set_tcp_keepidle(fd, liveness.idle)?;
    sockopt::set_tcp_keepintvl(fd, liveness.interval)?;
    sockopt::set_tcp_keepcnt(fd, liveness.probes)?;
    let millis = u32::try_from(liveness.user_timeout.as_millis()).unwrap_or(u32::MAX);
    sockopt::set_tcp_user_timeout(fd, millis)?;
    Ok(())
}

/// The liveness settings of the TCP socket `fd`; `None` when keepalive is off.
#[cfg(test)]
pub(crate) fn tcp_liveness(fd: BorrowedFd<'_>) -> io::Result<Option<TcpLiveness>> {
    use rustix::net::sockopt;
    if !sockopt::socket_keepalive(fd)? {
        return Ok(None);
    }
    Ok(Some(TcpLiveness {
        idle: sockopt::tcp_keepidle(fd)?,
        interval: sockopt::tcp_keepintvl(fd)?,
        probes: sockopt::tcp_keepcnt(fd)?,
        user_timeout: Duration::from_millis(u64::from(sockopt::tcp_user_timeout(fd)?)),
    }))
}

/// Identity of the file at `path` (to tell our socket file from one that
/// replaced it), if it exists.
pub(crate) fn file_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path).ok().map(|m| FileId { dev: m.dev(), ino: m.ino() })
}

#[cfg(test)]
mod test {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn network_errors_pending_on_a_connection_do_not_end_an_accept() {
        for e in [Errno::CONNABORTED, Errno::NETDOWN, Errno::PROTO, Errno::HOSTUNREACH, Errno::NETUNREACH] {
            assert!(accept_waits_on(e), "{e}");
        }
        for e in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::BADF, Errno::INVAL] {
            assert!(!accept_waits_on(e), "{e}");
        }
    }

    #[test]
    fn a_tcp_peer_that_resets_before_the_accept_does_not_fail_the_accept() {
        let (listener, addr) = listen_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let deadline = || Deadline::after(Duration::from_secs(5));
        let rude = connect_tcp(addr, deadline()).unwrap();
        // SO_LINGER 0: closing sends a reset instead of a FIN.
        rustix::net::sockopt::set_socket_linger(&rude, Some(Duration::ZERO)).unwrap();
        drop(rude);
        std::thread::sleep(Duration::from_millis(50));
        // Linux still hands out the reset connection (setting TCP_NODELAY on
        // it succeeds); what matters is that accept does not fail.
        let reset = accept(listener.as_fd(), deadline(), true).unwrap().expect("the reset connection");
        assert_eq!(rustix::net::sockopt::socket_error(&reset).unwrap(), Err(Errno::CONNRESET));
        let honest = connect_tcp(addr, deadline()).unwrap();
        let accepted = accept(listener.as_fd(), deadline(), true).unwrap().expect("the next connection");
        assert!(rustix::net::sockopt::tcp_nodelay(&accepted).unwrap());
        drop(honest);
    }

    #[test]
    fn a_connect_to_a_full_backlog_gives_up_at_the_deadline() {
        let name = format!("multiproc-unit-backlog-{}", std::process::id());
        let listener =
            rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap();
        rustix::net::bind(&listener, &SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap()).unwrap();
        rustix::net::listen(&listener, 0).unwrap();
        // Fill the backlog (never accepted).
        let mut pending = Vec::new();
        loop {
            match connect_abstract(name.as_bytes(), Deadline::after(Duration::from_millis(50))) {
                Ok(fd) => pending.push(fd),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                Err(e) => panic!("{e}"),
            }
            assert!(pending.len() < 64, "the backlog never filled");
        }
        let start = Instant::now();
        let err = connect_abstract(name.as_bytes(), Deadline::after(Duration::from_millis(200))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(190), "{:?}", start.elapsed());
        // Once a pending connection is accepted, there is room again.
        drop(rustix::net::accept(&listener).unwrap());
        connect_abstract(name.as_bytes(), Deadline::after(Duration::from_secs(5))).unwrap();
    }
}
