//! An external command's stderr: passed to the server's log line by line,
//! and its last line kept, so that the error of a command that failed can
//! say why (a Python traceback ends with the exception).

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest piece of a stderr line passed to the log at once: a longer line
/// goes in pieces, so a command that never writes a newline cannot make
/// the worker hold its whole output.
const MAX_LOG_LINE: usize = 8 << 10;

/// The last line a command wrote to its stderr, and whether stderr closed.
#[derive(Debug, Default)]
pub(crate) struct StderrTail {
    state: Mutex<Tail>,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct Tail {
    last: Option<String>,
    closed: bool,
}

impl StderrTail {
    /// Starts the thread that forwards `stderr` to the log, line by line
    /// (the server prefixes each line with the model and version, see
    /// `supervisor::log_line`).
    pub fn forward(stderr: impl Read + Send + 'static) -> Arc<StderrTail> {
        let tail = Arc::new(StderrTail::default());
        let forwarding = Arc::clone(&tail);
        std::thread::spawn(move || {
            forward_lines(stderr, |line| {
                crate::worker::log_to_server(line);
                forwarding.lock().last = Some(line.to_string());
            });
            forwarding.lock().closed = true;
            forwarding.closed.notify_all();
        });
        tail
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// "; its last stderr line: …" for an error message, after waiting up
    /// to `grace` for the command's stderr to close (a command that died
    /// may still have lines in the pipe); empty if it wrote none.
    pub fn explain(&self, grace: Duration) -> String {
        let until = Instant::now() + grace;
        let mut tail = self.lock();
        while !tail.closed {
            let now = Instant::now();
            if now >= until {
                break;
            }
            tail = self.closed.wait_timeout(tail, until - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        tail.last.as_ref().map(|l| format!("; its last stderr line: {l}")).unwrap_or_default()
    }
}

/// Calls `line` with each line of `input` until it closes. Bytes that are
/// not UTF-8 are shown as U+FFFD and reading goes on: a command whose
/// stderr nobody reads blocks once the pipe is full.
fn forward_lines(input: impl Read, mut line: impl FnMut(&str)) {
    let mut input = BufReader::new(input);
    let mut buf = Vec::new();
    loop {
        let room = (MAX_LOG_LINE - buf.len()) as u64;
        let n = match input.by_ref().take(room).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 || buf.ends_with(b"\n") || buf.len() >= MAX_LOG_LINE {
            let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if !buf.is_empty() {
                line(&String::from_utf8_lossy(text));
            }
            buf.clear();
        }
        if n == 0 {
            return;
        }
    }
}
