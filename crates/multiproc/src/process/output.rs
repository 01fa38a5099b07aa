//! Where a child's standard output and error go: inherited (the default),
//! captured into the handle, or copied line by line with the process name in
//! front.
//!
//! A captured or prefixed stream is a pipe: its write end travels to the
//! child with the start message (so every start method treats it alike) and
//! the child puts it in place of descriptor 1 or 2 before its task runs; the
//! parent reads the other end on a thread of its own, so a child that writes
//! a lot never blocks on a full pipe.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::sys::Deadline;
use crate::sys::imp::stdio::{self, StdStream};

/// Where a child's standard output (or error) goes; see
/// [`ProcessBuilder::stdout`](crate::ProcessBuilder::stdout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChildOutput {
    /// The child writes to the parent's own stream (Python's behaviour).
    #[default]
    Inherit,
    /// Kept in the handle: read it with
    /// [`Process::captured_stdout`](crate::Process::captured_stdout) (or
    /// `captured_stderr`).
    Capture,
    /// Copied to the parent's stream line by line, each line starting with
    /// `[process name] `. A line longer than 64 KiB is copied out in pieces
    /// of 64 KiB as it comes, each a line of its own (so a child that never
    /// writes a newline does not fill the parent's memory), and a last line
    /// without a newline gets one.
    Prefix,
}

/// Bits of the start message's `stdio` field: which redirections follow the
/// task's own descriptors, in this order.
pub(crate) const STDOUT_SENT: u8 = 1;
pub(crate) const STDERR_SENT: u8 = 2;

/// How long `join` waits, after the child's exit, for the rest of its output
/// (a grandchild that kept the pipe open could make it wait for ever).
const DRAIN: Duration = Duration::from_secs(2);

/// The parent's side of one redirected stream.
#[derive(Debug)]
struct Reader {
    state: Arc<(Mutex<ReadState>, Condvar)>,
    /// Kept (`Capture`) rather than copied out (`Prefix`).
    capture: bool,
}

#[derive(Debug, Default)]
struct ReadState {
    captured: Vec<u8>,
    done: bool,
}

/// The parent's side of a child's redirected streams.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    stdout: Option<Reader>,
    stderr: Option<Reader>,
}

/// The write ends a child gets, and the start message's `stdio` bits.
#[derive(Debug, Default)]
pub(crate) struct ChildEnds {
    pub fds: Vec<OwnedFd>,
    pub bits: u8,
}

/// In the child: puts the redirected streams (the frame's last descriptors,
/// as `bits` says) in place, and returns the task's own descriptors.
pub(crate) fn take_child_ends(mut fds: Vec<OwnedFd>, bits: u8) -> Vec<OwnedFd> {
    for (bit, stream) in [(STDERR_SENT, StdStream::Stderr), (STDOUT_SENT, StdStream::Stdout)] {
        if bits & bit != 0
            && let Some(fd) = fds.pop()
        {
            // A failure leaves the stream inherited: the output still shows.
            let _ = stdio::redirect(fd, stream);
        }
    }
    fds
}

impl Outputs {
    /// Makes the pipes the two settings ask for, and starts their readers.
    pub(crate) fn open(name: &str, stdout: ChildOutput, stderr: ChildOutput) -> io::Result<(Outputs, ChildEnds)> {
        let mut outputs = Outputs::default();
        let mut ends = ChildEnds::default();
        let opened = (|| {
            if stdout != ChildOutput::Inherit {
                let (read, write) = stdio::pipe()?;
                outputs.stdout = Some(Reader::start(read, stdout, StdStream::Stdout, name)?);
                ends.fds.push(write);
                ends.bits |= STDOUT_SENT;
            }
            if stderr != ChildOutput::Inherit {
                let (read, write) = stdio::pipe()?;
                outputs.stderr = Some(Reader::start(read, stderr, StdStream::Stderr, name)?);
                ends.fds.push(write);
                ends.bits |= STDERR_SENT;
            }
            io::Result::Ok(())
        })();
        match opened {
            Ok(()) => Ok((outputs, ends)),
            Err(e) => {
                drop(ends);
                outputs.close_unused();
                Err(e)
            }
        }
    }

    /// After a start that failed, with the write ends closed: waits (a
    /// little) for the readers to end, so that their read ends are closed
    /// when `start` returns rather than some time later.
    pub(crate) fn close_unused(self) {
        self.drain(Deadline::after(DRAIN));
    }

    /// After the child exited: waits (a little) for the readers to reach the
    /// end of its output.
    pub(crate) fn drain(&self, deadline: Deadline) {
        let until = deadline.at_most(DRAIN);
        for reader in [&self.stdout, &self.stderr].into_iter().flatten() {
            reader.wait_done(until);
        }
    }

    /// What the child wrote to its standard output so far, if captured.
    pub(crate) fn stdout(&self) -> Option<Vec<u8>> {
        self.stdout.as_ref().and_then(Reader::captured)
    }

    /// What the child wrote to its standard error so far, if captured.
    pub(crate) fn stderr(&self) -> Option<Vec<u8>> {
        self.stderr.as_ref().and_then(Reader::captured)
    }
}

impl Reader {
    fn start(read: OwnedFd, how: ChildOutput, stream: StdStream, name: &str) -> io::Result<Reader> {
        let state = Arc::new((Mutex::new(ReadState::default()), Condvar::new()));
        let shared = state.clone();
        let prefix = format!("[{name}] ");
        let capture = how == ChildOutput::Capture;
        std::thread::Builder::new().name("multiproc-output".into()).spawn(move || {
            let file = File::from(read);
            if capture {
                copy_into(file, &shared.0);
            } else {
                copy_prefixed(file, &prefix, stream);
            }
            let (lock, cond) = &*shared;
            lock.lock().unwrap_or_else(|e| e.into_inner()).done = true;
            cond.notify_all();
        })?;
        Ok(Reader { state, capture })
    }

    /// The text read so far, if this stream is captured.
    fn captured(&self) -> Option<Vec<u8>> {
        self.capture.then(|| self.state.0.lock().unwrap_or_else(|e| e.into_inner()).captured.clone())
    }

    fn wait_done(&self, until: Deadline) {
        let (lock, cond) = &*self.state;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !st.done {
            let Some(left) = until.remaining() else {
                st = cond.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            if left.is_zero() {
                return;
            }
            st = cond.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Appends everything read from `file` to the shared buffer, as it comes.
fn copy_into(mut file: File, state: &Mutex<ReadState>) {
    let mut chunk = [0u8; 8192];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => state.lock().unwrap_or_else(|e| e.into_inner()).captured.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The longest piece of a line [`copy_prefixed`] holds: a longer line is
/// copied out in pieces of this size, so a child that never writes a newline
/// cannot grow the parent's memory without bound.
const LONGEST_PIECE: usize = 64 * 1024;

/// Copies `file` to the parent's stream, each line behind `prefix`: a line
/// longer than [`LONGEST_PIECE`] goes out in pieces, each a line of its own,
/// and a last line without a newline gets one.
fn copy_prefixed(mut file: File, prefix: &str, stream: StdStream) {
    let mut chunk = [0u8; 8192];
    // The current line's bytes not yet copied out: at most `LONGEST_PIECE`
    // between reads.
    let mut line = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut rest = &chunk[..n];
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            write_prefixed(&mut out, prefix, &line, stream);
            line.clear();
        }
        line.extend_from_slice(rest);
        // `>`, not `>=`: a line of exactly the size whose newline has not
        // come yet stays whole (no empty line after it).
        while line.len() > LONGEST_PIECE {
            write_prefixed(&mut out, prefix, &line[..LONGEST_PIECE], stream);
            line.drain(..LONGEST_PIECE);
        }
    }
    if !line.is_empty() {
        write_prefixed(&mut out, prefix, &line, stream);
    }
}

/// Writes `prefix`, `text` and a newline to the parent's stream in one
/// write, so the lines of several children do not mix (`out` is scratch
/// space, kept between calls). Without std's lock on the stream: a child
/// forked while this thread held it would inherit it held for ever.
fn write_prefixed(out: &mut Vec<u8>, prefix: &str, text: &[u8], stream: StdStream) {
    out.clear();
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(text);
    out.push(b'\n');
    let _ = stdio::write_unlocked(stream, out);
}
