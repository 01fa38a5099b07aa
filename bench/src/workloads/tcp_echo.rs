//! The floor of `manager_queue_tcp`: what two processes pay to exchange the
//! same messages over loopback TCP with nothing else in the way — no
//! framing code, no codec, no manager — each polling its socket (yielding
//! the CPU between polls, so a peer on the same CPU still runs) instead of
//! sleeping, which is the fastest way a reply can be seen. A poll asks
//! `poll(2)` whether the socket is readable before it reads (a read
//! attempt takes the socket's lock, which the peer's delivery waits on: the
//! manager's own receive does the same). One put + get
//! pair is two round trips of the sizes the manager's frames have: a put of
//! a `u64` is 26 bytes answered by 14, a get 24 answered by 16 (header and
//! payload, counted with `strace`).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use multiproc::Process;

use crate::{BenchError, ensure};

/// The two round trips of a put + get pair: (request bytes, reply bytes).
const EXCHANGES: [(usize, usize); 2] = [(26, 14), (24, 16)];
/// How long the parent waits for the echo child to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);
/// How long a read polls before it sleeps.
const POLL_LIMIT: Duration = Duration::from_micros(200);

/// A child process answering each request with a reply of the agreed size.
pub(crate) struct TcpEcho {
    stream: TcpStream,
    child: Process<u64>,
    pairs: u64,
}

impl TcpEcho {
    /// Starts the echo child and connects to it over 127.0.0.1.
    pub(crate) fn start() -> Result<TcpEcho, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let child = Process::spawn(echo_child, (port,))?;
        listener.set_nonblocking(true)?;
        let since = Instant::now();
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock && since.elapsed() < CONNECT_LIMIT => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(BenchError::new(format!("the TCP echo child did not connect: {e}"))),
            }
        };
        prepare(&stream)?;
        Ok(TcpEcho { stream, child, pairs: 0 })
    }

    /// Runs `pairs` put + get pairs' worth of round trips; thousands of
    /// pairs per second.
    pub(crate) fn pairs(&mut self, pairs: u64) -> Result<f64, BenchError> {
        let mut buf = [0u8; 32];
        let t = Instant::now();
        for i in 0..pairs {
            for (request, reply) in EXCHANGES {
                buf[0] = i as u8;
                self.stream.write_all(&buf[..request])?;
                read_polling(&mut self.stream, &mut buf[..reply])?;
                ensure(buf[0] == i as u8, || "the TCP echo child answered out of turn".into())?;
            }
        }
        let elapsed = t.elapsed();
        self.pairs += pairs;
        Ok(pairs as f64 / elapsed.as_secs_f64() / 1e3)
    }

    /// Closes the connection and checks the child's count of pairs.
    pub(crate) fn finish(self) -> Result<(), BenchError> {
        let TcpEcho { stream, mut child, pairs } = self;
        drop(stream);
        let answered = child.join()?;
        ensure(answered == pairs, || format!("the TCP echo child answered {answered} pairs, the parent sent {pairs}"))
    }
}

fn prepare(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)
}

/// Reads exactly `buf.len()` bytes, polling; false if the stream ended
/// before the first byte. After [`POLL_LIMIT`] without data the socket is
/// made blocking until the message is in (the child between samples: it
/// must not take a CPU from the other subjects' turns).
fn read_polling(stream: &mut TcpStream, buf: &mut [u8]) -> Result<bool, BenchError> {
    let mut got = 0;
    let mut since = None;
    let mut blocking = false;
    while got < buf.len() {
        if !blocking && !readable(stream)? && since.get_or_insert_with(Instant::now).elapsed() < POLL_LIMIT {
            std::thread::yield_now();
            continue;
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(BenchError::new("the TCP echo stream ended mid-message")),
            Ok(n) => got += n,
            Err(e)
                if e.kind() == ErrorKind::WouldBlock
                    && since.get_or_insert_with(Instant::now).elapsed() < POLL_LIMIT =>
            {
                std::thread::yield_now()
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                stream.set_nonblocking(false)?;
                blocking = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if blocking {
        stream.set_nonblocking(true)?;
    }
    Ok(true)
}

/// Whether the stream has data (or an end) to read now, without taking the
/// socket's lock as a read attempt does.
fn readable(stream: &TcpStream) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd { fd: stream.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `pfd` is one valid pollfd living across the call; its fd is
    // the stream's, open for the call's duration.
    match unsafe { libc::poll(&mut pfd, 1, 0) } {
        -1 if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted => Ok(false),
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(pfd.revents != 0),
    }
}

/// The child: connects to the parent and answers until it hangs up;
/// returns the pairs answered.
fn echo_child(port: u16) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the bench process");
    prepare(&stream).expect("set up the echo socket");
    let mut buf = [0u8; 32];
    let mut pairs = 0;
    'serve: loop {
        for (request, reply) in EXCHANGES {
            match read_polling(&mut stream, &mut buf[..request]) {
                Ok(true) => stream.write_all(&buf[..reply]).expect("answer the bench process"),
                _ => break 'serve,
            }
        }
        pairs += 1;
    }
    pairs
}
