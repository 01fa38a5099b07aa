//! A lazy model's first requests start it; `unload` or `remove` at the
//! same moment must win cleanly: every request is answered (served or
//! refused), and once the call returns no worker of the model runs or
//! starts.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{PATIENCE, block_on, wait_for};
use multiproc_serve::{
    LoadError, Model, ModelSettings, ModelSpec, Request, Server, StartMode, VersionState, WorkerContext,
};
use multiproc_test_support::process_exists;

/// Requests each round sends from each of its threads.
const REQUESTS: usize = 4;
/// Threads sending requests in each round.
const SENDERS: usize = 2;

/// Doubles; each worker leaves its pid in the directory it is given.
struct Recorded;

impl Model for Recorded {
    type Config = PathBuf;
    type Input = u64;
    type Output = u64;

    fn load(dir: PathBuf, _: &WorkerContext) -> Result<Self, LoadError> {
        std::fs::write(dir.join(std::process::id().to_string()), b"").map_err(|e| e.to_string())?;
        Ok(Recorded)
    }

    fn predict(&mut self, batch: Vec<u64>) -> Vec<Result<u64, String>> {
        batch.into_iter().map(|x| Ok(2 * x)).collect()
    }
}

/// The pids of the workers that loaded, from `dir`.
fn workers(dir: &std::path::Path) -> Vec<i32> {
    let names = std::fs::read_dir(dir).into_iter().flatten().flatten();
    names.filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// One round: `SENDERS` threads send their first requests to a lazy model
/// as `retire` runs; every request gets an answer, and `retire` returns.
fn race(dir: &std::path::Path, retire: impl FnOnce(&Server) + Send + 'static) -> Server {
    let server = Server::new();
    let settings = ModelSettings { start: StartMode::Lazy, ..Default::default() };
    server.add(ModelSpec::<Recorded>::new("m").version(1, dir.to_path_buf()).settings(settings)).unwrap();
    let start = Arc::new(Barrier::new(SENDERS + 1));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (server, start) = (server.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let futures: Vec<_> = (0..REQUESTS as u64)
                    .map(|i| server.infer_async::<u64, u64>(Request::new("m", i).timeout(PATIENCE)))
                    .collect();
                for f in futures {
                    // Served or refused, but answered: `block_on` panics
                    // if not within the patience.
                    let _ = block_on(f, PATIENCE + Duration::from_secs(5));
                }
            })
        })
        .collect();
    start.wait();
    // In a thread of its own, so that a retire that never returns fails
    // the test instead of hanging it.
    let (done_tx, done) = std::sync::mpsc::channel();
    let retiring = server.clone();
    std::thread::spawn(move || {
        retire(&retiring);
        let _ = done_tx.send(());
    });
    done.recv_timeout(PATIENCE).expect("unload or remove did not return");
    for s in senders {
        s.join().expect("a request was not answered");
    }
    server
}

/// Whether every worker recorded in `dir` is gone, within the patience.
fn all_gone(dir: &std::path::Path) -> bool {
    wait_for(PATIENCE, || workers(dir).into_iter().all(|pid| !process_exists(pid)))
}

/// A directory removed when dropped, also when the test fails.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unload_or_remove_racing_a_lazy_start_leaves_no_worker() {
    let root = TempDir(std::env::temp_dir().join(format!("multiproc-lazy-races-{}", std::process::id())));
    let root = &root.0;
    for round in 0..40 {
        let dir = root.join(round.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        // Unload: once it returns, the model's version is stopped and stays so.
        let server = race(&dir, |s| s.unload("m").unwrap());
        // A worker that a racing request started after the unload would
        // be loading or serving now; give it time to show.
        std::thread::sleep(Duration::from_millis(50));
        let status = server.status();
        let v = &status.model("m").unwrap().versions[0];
        assert!(v.state == VersionState::Stopped && v.workers.iter().all(|w| w.pid.is_none()), "round {round}: {v:?}");
        assert!(all_gone(&dir), "round {round}: workers left after unload: {:?}", workers(&dir));
        server.shutdown();
        // Remove: once it returns, the model's workers go and none starts.
        let server = race(&dir, |s| s.remove("m").unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert!(all_gone(&dir), "round {round}: workers left after remove: {:?}", workers(&dir));
        server.shutdown();
    }
}
