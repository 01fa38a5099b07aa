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

    /// The process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How the process ended, if it did (it is reaped); `None` while it runs.
    pub fn ended(&mut self) -> Option<String> {
        (!self.process.is_alive()).then(|| exit_status(&mut self.process))
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

#[cfg(test)]
mod tests {
    use super::*;
    use multiproc_test_support::process_exists;

    /// A process that takes a chunk and answers with bytes that are not
    /// outputs, then waits (bounded) for the lane to kill it.
    fn answers_garbage(lane: Connection<Items>) {
        let _ = lane.recv_timeout(Duration::from_secs(30));
        let _ = lane.send_bytes(&[0xff; 4]);
        let _ = lane.recv_timeout(Duration::from_secs(30));
    }

    /// A process that takes a chunk and never answers (for 30 s).
    fn never_answers(lane: Connection<Items>) {
        let _ = lane.recv_timeout(Duration::from_secs(30));
        let _ = lane.recv_timeout(Duration::from_secs(30));
    }

    fn spawner<F: multiproc::Task<(Connection<Items>,), ()> + Send + Sync + 'static>(body: F) -> LaneSpawner {
        Arc::new(move |builder: ProcessBuilder, lane: Connection<Items>| {
            builder.spawn(body, (lane,)).map_err(|e| e.to_string())
        })
    }

    fn chunk() -> Items {
        let mut chunk = Items::default();
        chunk.push_output(Ok(&"request".to_string()));
        chunk
    }

    #[test]
    fn outputs_that_do_not_decode_fail_the_chunk_and_the_live_process_is_killed() {
        let mut lane = LaneProcess::start(&spawner(answers_garbage), "garbled", 0).unwrap();
        let pid = lane.pid;
        let started = std::time::Instant::now();
        match lane.run(&chunk(), &AtomicBool::new(false)) {
            Err(ChunkError::Failed(what)) => assert!(what.contains("could not read the chunk's outputs"), "{what}"),
            other => panic!("expected a failed exchange, got {other:?}"),
        }
        // Killed at once, not waited on as a process that might answer.
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(!process_exists(pid), "the process whose pipe is out of step still runs");
    }

    #[test]
    fn a_process_that_died_idle_is_found_lost_before_it_took_the_chunk() {
        let mut lane = LaneProcess::start(&spawner(never_answers), "died", 0).unwrap();
        let pid = lane.pid;
        assert!(lane.process.kill().is_ok());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while lane.process.is_alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        match lane.run(&chunk(), &AtomicBool::new(false)) {
            Err(ChunkError::Lost { pid: lost, took_chunk: false, status }) => {
                assert_eq!(lost, pid);
                assert!(status.contains("signal") || status.contains('9'), "{status}");
            }
            other => panic!("expected the process lost before the chunk, got {other:?}"),
        }
        assert!(!process_exists(pid), "the dead process was not reaped");
    }

    #[test]
    fn a_lane_waiting_on_its_process_when_the_pipeline_stops_kills_it() {
        let mut lane = LaneProcess::start(&spawner(never_answers), "stopping", 0).unwrap();
        let pid = lane.pid;
        let started = std::time::Instant::now();
        let result = lane.run(&chunk(), &AtomicBool::new(true));
        assert!(matches!(result, Err(ChunkError::Stopped)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        assert!(!process_exists(pid), "the process outlived its stopped pipeline");
    }
}
