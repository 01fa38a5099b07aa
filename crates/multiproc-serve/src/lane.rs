//! One preprocessing process of a pipeline as its lane (a thread of the
//! server, see `pipeline.rs`) drives it: started, handed a chunk, waited on
//! until it answers, dies or the pipeline stops, and stopped. A lane talks
//! to its process alone, over a pipe of their own: a chunk is a message each way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use multiproc::{Connection, ConnectionError, Pipe, Process, ProcessBuilder};

use crate::items::Items;
use crate::supervisor::{exit_status, kill_and_reap, reap_or_kill};

/// Starts a preprocessing process with its end of the lane's pipe.
pub(crate) type LaneSpawner =
    Arc<dyn Fn(ProcessBuilder, Connection<Items>) -> Result<Process<()>, String> + Send + Sync>;

/// How often a lane waiting for its process's answer looks whether the
/// pipeline stopped (a process that dies closes its pipe at once).
const STOP_LOOK: Duration = Duration::from_millis(20);

/// How long a process whose pipe was closed gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Why a chunk got no outputs.
#[derive(Debug)]
pub(crate) enum ChunkError {
    /// The process died: its pid, how it ended, and whether it had taken
    /// the chunk (a process that died idle could not).
    Lost { pid: i32, status: String, took_chunk: bool },
    /// The pipeline stopped meanwhile; the process was killed.
    Stopped,
    /// The chunk could not be exchanged with a live process (it did not
    /// encode, its outputs did not decode, or the system refused): what
    /// happened. The process was killed, its pipe being out of step.
    Failed(String),
}

/// A live preprocessing process and the lane's end of its pipe; stopped
/// when dropped.
pub(crate) struct LaneProcess {
    process: Process<()>,
    /// Chunks go one way, their outputs the other.
    pipe: Connection<Items>,
    pid: i32,
}

impl LaneProcess {
    /// Starts lane `lane`'s process for pipeline `pipeline`.
    pub fn start(spawner: &LaneSpawner, pipeline: &str, lane: usize) -> Result<LaneProcess, String> {
        let (pipe, theirs) = Pipe::<Items>::duplex().map_err(|e| format!("could not create its pipe: {e}"))?;
        let process = spawner(Process::builder().name(format!("{pipeline}-pre-{lane}")), theirs)?;
        let pid = process.pid().unwrap_or(0);
        Ok(LaneProcess { process, pipe, pid })
    }

    /// Hands `chunk` to the process and waits for its outputs. The process
    /// is gone after an error: reaped if it died, killed if the pipeline
    /// stopped.
    pub fn run(&mut self, chunk: &Items, stopped: &AtomicBool) -> Result<Items, ChunkError> {
        match self.pipe.send(chunk) {
            Ok(()) => {}
            Err(ConnectionError::Closed) => return Err(self.lost(false)),
            Err(e) => return Err(self.failed(format!("could not hand it the chunk: {e}"))),
        }
        loop {
            match self.pipe.recv_timeout(STOP_LOOK) {
                Ok(outputs) => return Ok(outputs),
                Err(ConnectionError::Timeout) if stopped.load(Ordering::Acquire) => {
                    kill_and_reap(&mut self.process, EXIT_GRACE);
                    return Err(ChunkError::Stopped);
                }
                Err(ConnectionError::Timeout) if self.process.is_alive() => {}
                // A process gone without closing the pipe (a child of its
                // own holds it) is seen here; its outputs, sent just
                // before it died, may be in the pipe.
                Err(ConnectionError::Timeout) => {
                    return match self.pipe.recv_timeout(Duration::ZERO) {
                        Ok(outputs) => Ok(outputs),
                        Err(_) => Err(self.lost(true)),
                    };
                }
                Err(ConnectionError::Closed) => return Err(self.lost(true)),
                Err(e) => return Err(self.failed(format!("could not read the chunk's outputs: {e}"))),
            }
        }
    }

    /// The process died: how, once reaped.
    fn lost(&mut self, took_chunk: bool) -> ChunkError {
        ChunkError::Lost { pid: self.pid, status: exit_status(&mut self.process), took_chunk }
    }

    /// The exchange failed with the process alive: it is killed.
    fn failed(&mut self, what: String) -> ChunkError {
        kill_and_reap(&mut self.process, EXIT_GRACE);
        ChunkError::Failed(what)
    }
}

impl Drop for LaneProcess {
    /// Lets the process finish: closes its pipe (its loop ends), waits,
    /// kills it if it does not exit (a process already reaped returns at once).
    fn drop(&mut self) {
        self.pipe.close();
        reap_or_kill(&mut self.process, EXIT_GRACE, EXIT_GRACE);
    }
}
