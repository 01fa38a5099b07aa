//! Unix stream sockets that carry bytes and file descriptors.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors one `sendmsg` carries (and one `recvmsg` takes: the
/// kernel hands a stream reader the descriptors of one `sendmsg` at a time).
pub(crate) const MAX_FDS_PER_MSG: usize = 64;

/// A connected pair of close-on-exec Unix stream sockets.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((a, b))
}

/// Sends all of `bufs` on `sock`, with `fds` attached to its first bytes:
/// the first [`MAX_FDS_PER_MSG`] to byte 0, the next ones to byte 1, and so
/// on, so a reader has them all once it has read that many bytes (at most
/// `MAX_FDS_PER_MSG` times the byte count). Blocks until everything is
/// written. Retries on EINTR.
pub(crate) fn send_all(sock: BorrowedFd<'_>, bufs: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if fds.is_empty() && total <= SMALL_SEND {
        return send_small(sock, bufs, total);
    }
    let batches = fds.len().div_ceil(MAX_FDS_PER_MSG);
    if batches > total {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} file descriptors cannot ride on {total} bytes", fds.len()),
        ));
    }
    let mut sent = 0;
    for (i, batch) in fds.chunks(MAX_FDS_PER_MSG).enumerate() {
        let slices = if i + 1 < batches {
            // One byte carries this batch; the next batch rides on the next byte.
            vec![IoSlice::new(&bufs_at(bufs, sent)[..1])]
        } else {
            remaining_slices(bufs, sent)
        };
        sent += sendmsg_with_fds(sock, &slices, batch, 0)?;
    }
    while sent < total {
        sent += sendmsg_plain(sock, &remaining_slices(bufs, sent), 0)?;
    }
    Ok(())
}

/// Largest message [`send_all`] gathers into one buffer on the stack and
/// writes with a plain `send` (when it carries no descriptors): a small
/// copy costs less than the kernel's copying in of a message header and
/// its list of buffers.
const SMALL_SEND: usize = 512;

/// Sends `bufs` (`total` bytes, at most [`SMALL_SEND`]) as one buffer with
/// `send`, blocking until all is written.
fn send_small(sock: BorrowedFd<'_>, bufs: &[&[u8]], total: usize) -> io::Result<()> {
    let mut gathered = [0u8; SMALL_SEND];
    let mut at = 0;
    for buf in bufs {
        gathered[at..at + buf.len()].copy_from_slice(buf);
        at += buf.len();
    }
    let mut sent = 0;
    while sent < total {
        match rustix::net::send(sock, &gathered[sent..total], rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The rest of the buffer holding byte `at` of `bufs`, from that byte on
/// (`at` must be below the total length).
fn bufs_at<'a>(bufs: &[&'a [u8]], mut at: usize) -> &'a [u8] {
    for buf in bufs {
        if at < buf.len() {
            return &buf[at..];
        }
        at -= buf.len();
    }
    &[]
}

/// Sends as much of `buf` as the socket takes without blocking, with `fds`
/// attached to the first byte; returns the bytes written (`WouldBlock` when
/// the socket is full). Retries on EINTR.
pub(crate) fn send_nonblocking(sock: BorrowedFd<'_>, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MSG {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many file descriptors in one message"));
    }
    let slices = [IoSlice::new(buf)];
    if fds.is_empty() {
        sendmsg_plain(sock, &slices, libc::MSG_DONTWAIT)
    } else {
        sendmsg_with_fds(sock, &slices, fds, libc::MSG_DONTWAIT)
    }
}

fn remaining_slices<'a>(bufs: &[&'a [u8]], mut skip: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(bufs.len());
    for buf in bufs {
        if skip >= buf.len() {
            skip -= buf.len();
            continue;
        }
        out.push(IoSlice::new(&buf[skip..]));
        skip = 0;
    }
    out
}

fn sendmsg_plain(sock: BorrowedFd<'_>, slices: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    sendmsg_retry(sock, &msg, flags)
}

fn sendmsg_with_fds(
    sock: BorrowedFd<'_>,
    slices: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: libc::c_int,
) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload_len = std::mem::size_of_val(raw.as_slice()) as u32;
    // SAFETY: CMSG_SPACE is a pure computation on an integer.
    let space = unsafe { libc::CMSG_SPACE(payload_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: a zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len() as _;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `control` is aligned and holds CMSG_SPACE(payload_len) bytes, so the
    // first header and its data fit; we write exactly `raw.len()` descriptors.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(payload_len) as _;
        std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), raw.len());
    }
    sendmsg_retry(sock, &msg, flags)
}

fn sendmsg_retry(sock: BorrowedFd<'_>, msg: &libc::msghdr, flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `msg` points to live iovecs and control data for this call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), msg, libc::MSG_NOSIGNAL | flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives up to `buf.len()` bytes, appending any descriptors that arrive to
/// `fds`. Returns 0 at end of stream. Blocks unless `nonblocking`; a
/// non-blocking call with nothing to read returns `WouldBlock`.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    nonblocking: bool,
) -> io::Result<usize> {
    const CONTROL_WORDS: usize = (MAX_FDS_PER_MSG * 4 + 64) / 8;
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: a zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let n = loop {
        // SAFETY: `msg` points to `buf` and `control`, both live and writable.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    collect_fds(&msg, fds);
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many file descriptors arrived in one message"));
    }
    Ok(n)
}

/// Receives up to `buf.len()` bytes from a socket that carries no
/// descriptors (TCP): a plain `recv`, without the message header and
/// control buffer of [`recv_with_fds`]. Returns 0 at end of stream. Blocks
/// unless `nonblocking`; a non-blocking call with nothing to read returns
/// `WouldBlock`. Retries on EINTR.
pub(crate) fn recv_plain(sock: BorrowedFd<'_>, buf: &mut [u8], nonblocking: bool) -> io::Result<usize> {
    let flags = if nonblocking { rustix::net::RecvFlags::DONTWAIT } else { rustix::net::RecvFlags::empty() };
    loop {
        match rustix::net::recv(sock, &mut *buf, flags) {
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn collect_fds(msg: &libc::msghdr, fds: &mut Vec<OwnedFd>) {
    // SAFETY: the kernel filled `msg.msg_control` with well-formed cmsg headers up
    // to `msg_controllen`; CMSG_* walk them without reading past that.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    // The kernel installed these descriptors in our table for us to own.
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
}

/// Shuts down both directions of a socket, so the peer sees end of stream even
/// while other processes still hold copies of this end.
pub(crate) fn shutdown(sock: BorrowedFd<'_>) {
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Both);
}

#[cfg(test)]
mod test {
    use std::os::fd::AsFd;

    use super::*;

    /// How long a test read waits for bytes already sent.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

    /// One non-blocking `recv_plain`, retried until it reads (or sees end
    /// of stream) or [`PATIENCE`] runs out.
    fn read_some(sock: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            match recv_plain(sock, buf, true) {
                Ok(n) => return n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("no bytes within {PATIENCE:?}: {e}"),
            }
        }
    }

    /// Reads exactly `n` bytes with `recv_plain`.
    fn read_exactly(sock: BorrowedFd<'_>, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let mut at = 0;
        while at < n {
            let got = read_some(sock, &mut out[at..]);
            assert!(got > 0, "end of stream after {at} of {n} bytes");
            at += got;
        }
        out
    }

    #[test]
    fn messages_on_both_sides_of_the_small_send_size_arrive_whole_and_in_order() {
        let (a, b) = socketpair().unwrap();
        for total in [0, 1, SMALL_SEND - 1, SMALL_SEND, SMALL_SEND + 1, 4 * SMALL_SEND] {
            let bytes: Vec<u8> = (0..total).map(|i| (i * 7 + total) as u8).collect();
            // Three pieces, the middle one empty, as a header and payload may be.
            let (head, tail) = bytes.split_at(total / 3);
            send_all(a.as_fd(), &[head, &[], tail], &[]).unwrap();
            assert_eq!(read_exactly(b.as_fd(), total), bytes, "a message of {total} bytes");
        }
    }

    #[test]
    fn a_plain_receive_reads_tcp_bytes_then_end_of_stream_and_would_block_when_empty() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        let empty = recv_plain(server.as_fd(), &mut buf, true).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        send_all(client.as_fd(), &[b"ping", b"!"], &[]).unwrap();
        assert_eq!(read_exactly(server.as_fd(), 5), b"ping!");
        drop(client);
        assert_eq!(read_some(server.as_fd(), &mut buf), 0);
    }
}
