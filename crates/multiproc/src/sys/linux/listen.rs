//! Listening and connecting stream sockets: Unix paths, Linux abstract names
//! and TCP. Every descriptor is close-on-exec; listeners are non-blocking so
//! that `accept` can honour a deadline, accepted and connected sockets block.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{self as unix, UnixListener, UnixStream};
use std::path::Path;

use super::super::Deadline;
use super::fd::wait_readable;

/// Identity of a file (device and inode), to tell our socket file from one
/// that replaced it.
pub(crate) type FileId = (u64, u64);

/// Listens on a Unix socket at `path`; returns the listener and the identity
/// of the socket file it created.
pub(crate) fn listen_unix(path: &Path) -> io::Result<(OwnedFd, FileId)> {
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let id = file_id(path).ok_or_else(|| io::Error::other("the socket file vanished right after bind"))?;
    Ok((listener.into(), id))
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
        match rustix::net::accept_with(listener, rustix::net::SocketFlags::CLOEXEC) {
            Ok(fd) => {
                if tcp {
                    rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
                }
                return Ok(Some(fd));
            }
            // Another thread took the connection, or it was reset before we got it.
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::CONNABORTED => {}
            Err(e) if e == rustix::io::Errno::INTR => continue,
            Err(e) => return Err(e.into()),
        }
        if deadline.expired() || !wait_readable(listener, deadline)? {
            return Ok(None);
        }
    }
}

/// Connects to the Unix socket at `path`.
pub(crate) fn connect_unix(path: &Path) -> io::Result<OwnedFd> {
    Ok(UnixStream::connect(path)?.into())
}

/// Connects to the Linux abstract Unix address `name`.
pub(crate) fn connect_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let addr = unix::SocketAddr::from_abstract_name(name)?;
    Ok(UnixStream::connect_addr(&addr)?.into())
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

/// Device and inode of the file at `path`, if it exists.
pub(crate) fn file_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
