//! A load that fails for good (`LoadError::permanent`) is not retried: the
//! version fails at once with the reason, and stays failed until loaded
//! again. Real worker processes.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::PATIENCE;
use multiproc_serve::{
    LoadError, Model, ModelSettings, ModelSpec, Request, RestartPolicy, Server, VersionState, WorkerContext,
};

const WHY: &str = "input 'x' is FP32 in the graph; set datatype = \"FP32\" in config.toml";

/// Notes each load in the file of its config, then refuses to load for good.
struct Mismatched;

impl Model for Mismatched {
    type Config = String;
    type Input = u64;
    type Output = u64;

    fn load(tries: String, _: &WorkerContext) -> Result<Self, LoadError> {
        common::note_pid(&tries).map_err(|e| e.to_string())?;
        Err(LoadError::permanent(WHY))
    }

    fn predict(&mut self, batch: Vec<u64>) -> Vec<Result<u64, String>> {
        batch.into_iter().map(Ok).collect()
    }
}

/// A file counting one test's loads, removed when dropped.
struct Tries(PathBuf);

impl Tries {
    fn new(test: &str) -> Tries {
        let path = std::env::temp_dir().join(format!("multiproc-serve-refused-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Tries(path)
    }

    fn count(&self) -> usize {
        std::fs::read_to_string(&self.0).map_or(0, |s| s.lines().count())
    }
}

impl Drop for Tries {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Quick retries and a crash-loop limit far away: a retried load would
/// run again and again within the test.
fn settings(instances: usize) -> ModelSettings {
    ModelSettings {
        instances,
        startup_timeout: PATIENCE,
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            crash_loop_threshold: 1_000,
            crash_window: Duration::from_secs(60),
        },
        ..ModelSettings::default()
    }
}

#[test]
fn a_permanent_load_failure_fails_the_version_at_once_without_retries() {
    let tries = Tries::new("once");
    let server = Server::new();
    let spec = ModelSpec::<Mismatched>::new("m").version(1, tries.0.display().to_string()).settings(settings(2));
    let started = Instant::now();
    let e = server.add(spec).expect_err("a model that never loads was added as ready");
    assert!(started.elapsed() < Duration::from_secs(5), "the add waited {:?}", started.elapsed());
    assert!(e.to_string().contains(WHY), "{e}");
    // No retry: each instance loaded once, and no more later.
    std::thread::sleep(Duration::from_millis(500));
    assert!(tries.count() <= 2, "the load was retried: {} tries", tries.count());
    let version = &server.status().models[0].versions[0];
    assert_eq!(version.state, VersionState::Failed, "{version:?}");
    assert!(version.last_failure.as_deref().is_some_and(|f| f.contains(WHY)), "{version:?}");
    let refused = server.infer::<u64, u64>(Request::new("m", 1).version(1).timeout(PATIENCE)).unwrap_err();
    assert!(refused.to_string().contains(WHY), "{refused}");
    // An explicit load tries again (once per instance), and fails the same way.
    let before = tries.count();
    let again = server.load("m").expect_err("the model loaded");
    assert!(again.to_string().contains(WHY), "{again}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(tries.count() > before && tries.count() <= before + 2, "{before} then {} tries", tries.count());
    server.shutdown();
}

#[test]
fn a_lazy_version_that_refuses_to_load_fails_its_queued_request_with_the_reason() {
    let tries = Tries::new("lazy");
    let server = Server::new();
    let lazy = ModelSettings { start: multiproc_serve::StartMode::Lazy, ..settings(1) };
    server.add(ModelSpec::<Mismatched>::new("m").version(1, tries.0.display().to_string()).settings(lazy)).unwrap();
    let started = Instant::now();
    let e = server.infer::<u64, u64>(Request::new("m", 1).timeout(PATIENCE)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "the request waited {:?}", started.elapsed());
    assert!(e.to_string().contains(WHY), "{e}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tries.count(), 1, "the load was retried");
    server.shutdown();
}

/// A load retried at once after a refused one, while the supervisors of
/// the refused load may still be quitting, fails the same way and never
/// hangs (it once joined those supervisors holding the lock their last
/// step needs). Each retry runs under a watchdog: a hung one fails the
/// test instead of hanging it.
#[test]
fn a_load_retried_at_once_after_a_refused_load_fails_again_and_never_hangs() {
    const RETRIES: usize = 20;
    const WATCHDOG: Duration = Duration::from_secs(10);
    let tries = Tries::new("retried");
    let server = Server::new();
    let spec = ModelSpec::<Mismatched>::new("m").version(1, tries.0.display().to_string()).settings(settings(2));
    let e = server.add(spec).expect_err("a model that never loads was added as ready");
    assert!(e.to_string().contains(WHY), "{e}");
    for i in 0..RETRIES {
        let (tx, rx) = std::sync::mpsc::channel();
        let retry = server.clone();
        std::thread::spawn(move || {
            let outcome = if i % 2 == 0 { retry.load("m") } else { retry.load_version("m", 1) };
            let _ = tx.send(outcome);
        });
        let outcome = rx.recv_timeout(WATCHDOG).unwrap_or_else(|_| panic!("retry {i} hung for {WATCHDOG:?}"));
        let again = outcome.expect_err("the model loaded");
        assert!(again.to_string().contains(WHY), "retry {i}: {again}");
    }
    let version = &server.status().models[0].versions[0];
    assert_eq!(version.state, VersionState::Failed, "{version:?}");
    // Each retry loaded each instance at most once.
    assert!(tries.count() <= 2 * (RETRIES + 1), "{} tries", tries.count());
    server.shutdown();
}
