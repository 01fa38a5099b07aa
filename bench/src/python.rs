//! Running the CPython side: the scripts in `bench/python/`, one per
//! subsystem. A script runs as a small server driven over its stdin/stdout,
//! so its samples interleave with multiproc's (see `measure.rs`):
//!
//! ```text
//! harness → python3 pipe.py pipe_rtt --mode bytes …
//! script  → {"ready": true, "python": "3.11.7"}       (after its setup)
//! harness → sample            script → {"sample": 41.2}   (timed inside Python)
//! harness → done              script → {"done": true, "checked": 12000}
//! ```
//!
//! The protocol helpers on the Python side are in `bench/python/common.py`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::BenchError;
use crate::measure::Subject;

/// The interpreter that runs the scripts.
#[derive(Debug, Clone)]
pub struct Python {
    /// The command (`python3` unless `--python` says otherwise).
    pub command: String,
    /// `platform.python_version()` of that interpreter.
    pub version: String,
    /// `sys.executable` of that interpreter.
    pub executable: String,
}

/// Where the scripts live. They are read from the source tree, so editing a
/// script needs no rebuild.
pub fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

impl Python {
    /// Finds out which Python `command` is.
    ///
    /// # Errors
    ///
    /// The interpreter cannot be run.
    pub fn probe(command: &str) -> Result<Python, BenchError> {
        let out = Command::new(command)
            .args(["-c", "import platform, sys; print(platform.python_version()); print(sys.executable)"])
            .output()
            .map_err(|e| {
                BenchError::new(format!("cannot run {command:?} ({e}); install CPython 3.11 or pass --python"))
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        match (out.status.success(), lines.next(), lines.next()) {
            (true, Some(version), Some(executable)) => Ok(Python {
                command: command.to_string(),
                version: version.trim().to_string(),
                executable: executable.trim().to_string(),
            }),
            _ => Err(BenchError::new(format!("{command:?} did not report its version: {}", out.status))),
        }
    }

    /// Starts `script workload args…` and waits until it is ready. A watchdog
    /// kills it if it is still running after `limit`.
    ///
    /// # Errors
    ///
    /// The script could not start or failed during its setup.
    pub fn start(
        &self,
        script: &str,
        workload: &str,
        args: &[String],
        limit: Duration,
    ) -> Result<PyScript, BenchError> {
        let path = script_dir().join(script);
        let what = format!("{script} {workload} {}", args.join(" ")).trim_end().to_string();
        let mut child = Command::new(&self.command)
            .arg(&path)
            .arg(workload)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BenchError::new(format!("cannot start {}: {e}", path.display())))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        // The watchdog is told to stand down before the child is reaped, so
        // it never signals a recycled pid.
        let pid = child.id() as libc::pid_t;
        let (stand_down, rx) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if rx.recv_timeout(limit).is_err() {
                // SAFETY: kill only sends a signal; `pid` is our unreaped child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            false
        });
        let mut script = PyScript {
            what,
            child: Some(child),
            stdin,
            stdout,
            stderr: Some(stderr),
            watchdog: Some((stand_down, watchdog)),
            limit,
        };
        let ready = script.reply()?;
        if ready["ready"] != Value::Bool(true) {
            return Err(script.fail(&format!("expected a ready line, got {ready}")));
        }
        Ok(script)
    }
}

/// A running benchmark script: a [`Subject`] whose samples are timed inside
/// Python.
#[derive(Debug)]
pub struct PyScript {
    what: String,
    child: Option<Child>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Option<JoinHandle<String>>,
    watchdog: Option<(mpsc::Sender<()>, JoinHandle<bool>)>,
    limit: Duration,
}

impl PyScript {
    fn send(&mut self, command: &str) -> Result<(), BenchError> {
        let sent = self.stdin.write_all(format!("{command}\n").as_bytes()).and_then(|()| self.stdin.flush());
        sent.map_err(|e| self.fail(&format!("cannot send {command:?}: {e}")))
    }

    /// Reads the next JSON line.
    fn reply(&mut self) -> Result<Value, BenchError> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.stdout.read_line(&mut line) {
                Ok(0) => return Err(self.fail("it ended without a result")),
                Ok(_) if line.trim_start().starts_with('{') => break,
                Ok(_) => continue, // stray output from the script; not protocol
                Err(e) => return Err(self.fail(&format!("cannot read its output: {e}"))),
            }
        }
        serde_json::from_str(&line).map_err(|e| self.fail(&format!("bad result line {line:?}: {e}")))
    }

    /// Ends the script: it tears down its children and reports how many
    /// results it checked.
    ///
    /// # Errors
    ///
    /// The script failed a check or did not finish cleanly.
    pub fn finish(mut self) -> Result<u64, BenchError> {
        self.send("done")?;
        let done = self.reply()?;
        let checked = done["checked"].as_u64().unwrap_or(0);
        let (status, _) = self.reap(Duration::from_secs(30));
        match status {
            Some(s) if s.success() && checked > 0 => Ok(checked),
            Some(s) if s.success() => {
                Err(BenchError::new(format!("python {}: reported no checked results", self.what)))
            }
            other => Err(BenchError::new(format!("python {}: exited with {other:?}", self.what))),
        }
    }

    /// Reaps the script, killing it if it has not exited within `grace`;
    /// returns its status and stderr.
    fn reap(&mut self, grace: Duration) -> (Option<ExitStatus>, String) {
        let Some(mut child) = self.child.take() else { return (None, String::new()) };
        if let Some((stand_down, watchdog)) = self.watchdog.take() {
            // Stop the watchdog before reaping, so it never signals a recycled pid.
            let _ = stand_down.send(());
            let _ = watchdog.join();
        }
        let deadline = Instant::now() + grace;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
            }
        };
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        (status, stderr)
    }

    /// Builds an error from `why` plus the end of the script's stderr.
    fn fail(&mut self, why: &str) -> BenchError {
        let (status, stderr) = self.reap(Duration::from_secs(2));
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        let status = status.map_or("unknown status".to_string(), |s| s.to_string());
        BenchError::new(format!("python {}: {why} ({status}; limit {:?})\n{tail}", self.what, self.limit))
    }
}

impl Subject for PyScript {
    fn sample(&mut self) -> Result<f64, BenchError> {
        self.send("sample")?;
        let reply = self.reply()?;
        match reply["sample"].as_f64() {
            Some(x) => Ok(x),
            None => Err(self.fail(&format!("expected a sample, got {reply}"))),
        }
    }
}

impl Drop for PyScript {
    fn drop(&mut self) {
        self.reap(Duration::ZERO);
    }
}
