//! Versions: a zero-downtime switch under load, a failed switch that keeps
//! the old version serving, lazy start, unload and load.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, PATIENCE, Tagged, wait_for};
use multiproc_serve::{ErrorKind, ModelSettings, ModelSpec, Request, Server, StartMode, VersionPolicy, VersionState};

/// Requests to "m" from 4 threads while `change` moves the model from
/// version 1 to version 2: every request succeeds, each reply names the
/// version that produced it, and every request sent after `change` returned
/// went to version 2. Returns how many each version answered.
fn under_load_from_4_threads(server: &Server, change: impl FnOnce()) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let switched_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (server, stop, switched_at) = (server.clone(), Arc::clone(&stop), Arc::clone(&switched_at));
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let x = t * 1_000_000 + i;
                    let asked = Instant::now();
                    let reply = server.infer::<u64, Tagged>(Request::new("m", x).timeout(PATIENCE));
                    let after_switch = switched_at.lock().unwrap().is_some_and(|s| asked > s);
                    seen.push((reply, x, after_switch));
                    i += 1;
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    change();
    *switched_at.lock().unwrap() = Some(Instant::now());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let (mut v1, mut v2) = (0, 0);
    for t in threads {
        for (reply, x, after_switch) in t.join().unwrap() {
            let reply = reply.unwrap_or_else(|e| panic!("request {x} failed during the switch: {e}"));
            // The reply names the version that produced the output.
            assert_eq!(reply.version, reply.output.version);
            assert_eq!(reply.output.value, 2 * x);
            if after_switch {
                assert_eq!(reply.version, 2, "a request sent after the switch went to version 1");
            }
            if reply.version == 1 { v1 += 1 } else { v2 += 1 }
        }
    }
    eprintln!("answered by v1: {v1}, by v2: {v2}");
    (v1, v2)
}

#[test]
fn switch_v1_to_v2_under_load_from_4_threads_loses_nothing() {
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 8,
        version_policy: VersionPolicy::Specific(vec![1]),
        instances: 2,
        ..Default::default()
    };
    let behaviour = Behaviour { batch_ms: 1, load_ms: 200, ..Default::default() };
    let spec = ModelSpec::<Doubler>::new("m").version(1, behaviour.clone()).version(2, behaviour).settings(settings);
    server.add(spec).unwrap();
    let (v1, v2) = under_load_from_4_threads(&server, || server.switch("m", 2).unwrap());
    assert!(v1 > 0 && v2 > 0);
    let status = server.status();
    let m = status.model("m").unwrap();
    assert_eq!(m.default_version, Some(2));
    assert_eq!(m.version(1).unwrap().state, VersionState::Stopped);
    assert_eq!(m.version(2).unwrap().state, VersionState::Ready);
    assert!(server.model_ready("m", Some(2)).unwrap() && !server.model_ready("m", Some(1)).unwrap());
    server.shutdown();
}

/// What a model repository does when a new version appears on disk: the
/// model is added again under its name with both versions, and the new
/// entry replaces the old one. Requests that looked up the old entry just
/// before the swap go to the new one instead of failing as "unloaded".
#[test]
fn re_adding_a_model_with_a_new_version_under_load_loses_nothing() {
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 8,
        version_policy: VersionPolicy::Latest(1),
        instances: 2,
        start: StartMode::Eager,
        ..Default::default()
    };
    let behaviour = Behaviour { batch_ms: 1, load_ms: 200, ..Default::default() };
    let v1 = ModelSpec::<Doubler>::new("m").version(1, behaviour.clone()).settings(settings.clone());
    server.add(v1).unwrap();
    let (v1, v2) = under_load_from_4_threads(&server, || {
        let both =
            ModelSpec::<Doubler>::new("m").version(1, behaviour.clone()).version(2, behaviour).settings(settings);
        server.add(both).unwrap();
    });
    assert!(v1 > 0 && v2 > 0);
    let status = server.status();
    assert_eq!(status.model("m").unwrap().default_version, Some(2));
    server.shutdown();
}

#[test]
fn a_switch_to_a_version_that_cannot_load_keeps_the_old_one_serving() {
    let server = Server::new();
    let settings = ModelSettings {
        version_policy: VersionPolicy::Specific(vec![1]),
        startup_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let broken = Behaviour { panic_on_load: Some("v2 needs a GPU".into()), ..Default::default() };
    let spec = ModelSpec::<Doubler>::new("m").version(1, Behaviour::default()).version(2, broken).settings(settings);
    server.add(spec).unwrap();
    let err = server.switch("m", 2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReady);
    assert!(err.to_string().contains("v2 needs a GPU"), "{err}");
    let reply = server.infer::<u64, Tagged>(Request::new("m", 5)).unwrap();
    assert_eq!((reply.version, reply.output.value), (1, 10));
    let status = server.status();
    let m = status.model("m").unwrap();
    assert_eq!(m.version(2).unwrap().state, VersionState::Failed);
    assert!(m.version(2).unwrap().last_failure.as_deref().unwrap().contains("v2 needs a GPU"));
    assert_eq!(m.version(1).unwrap().state, VersionState::Ready);
    server.shutdown();
}

#[test]
fn lazy_start_unload_and_load() {
    let server = Server::new();
    let settings = ModelSettings { start: StartMode::Lazy, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("lazy").version(1, Behaviour::default()).settings(settings)).unwrap();
    let status = server.status();
    let v = &status.model("lazy").unwrap().versions[0];
    assert_eq!(v.state, VersionState::NotStarted);
    assert!(v.workers[0].pid.is_none());
    assert!(server.is_ready(), "a lazy model does not hold the server's readiness");
    // The first request starts the worker and waits for it.
    let reply = server.infer::<u64, Tagged>(Request::new("lazy", 21)).unwrap();
    assert_eq!(reply.output.value, 42);
    assert_eq!(server.status().model("lazy").unwrap().versions[0].state, VersionState::Ready);

    server.unload("lazy").unwrap();
    let m = server.status().model("lazy").unwrap().clone();
    assert!(m.unloaded && !m.ready);
    assert_eq!(m.versions[0].state, VersionState::Stopped);
    // The unload returned once its workers were gone.
    assert!(m.versions[0].workers.iter().all(|w| w.pid.is_none()), "{m:?}");
    let err = server.infer::<u64, Tagged>(Request::new("lazy", 1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotReady);
    server.load("lazy").unwrap();
    assert_eq!(server.infer::<u64, Tagged>(Request::new("lazy", 2)).unwrap().output.value, 4);
    server.remove("lazy").unwrap();
    assert_eq!(server.infer::<u64, Tagged>(Request::new("lazy", 2)).unwrap_err().kind(), ErrorKind::UnknownModel);
    server.shutdown();
}

#[test]
fn a_new_version_killed_while_it_loads_for_a_switch_comes_back_and_the_switch_loses_nothing() {
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 8,
        version_policy: VersionPolicy::Specific(vec![1]),
        restart: multiproc_serve::RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    let quick = Behaviour { batch_ms: 1, ..Default::default() };
    let slow_load = Behaviour { batch_ms: 1, load_ms: 600, ..Default::default() };
    let spec = ModelSpec::<Doubler>::new("m").version(1, quick).version(2, slow_load).settings(settings);
    server.add(spec).unwrap();
    let (v1, v2) = under_load_from_4_threads(&server, || {
        let switching = {
            let server = server.clone();
            std::thread::spawn(move || server.switch("m", 2))
        };
        let loading = || server.status().model("m").unwrap().version(2).unwrap().workers[0].pid;
        assert!(wait_for(PATIENCE, || loading().is_some()));
        common::kill(loading().unwrap());
        switching.join().unwrap().unwrap();
    });
    assert!(v1 > 0 && v2 > 0);
    let v = server.status().model("m").unwrap().version(2).unwrap().clone();
    assert_eq!((v.state, v.restarts), (VersionState::Ready, 1), "{v:?}");
    server.shutdown();
}

/// A model whose load fails, after noting its attempt in a file.
struct NeverLoads;

impl multiproc_serve::Model for NeverLoads {
    type Config = String;
    type Input = u64;
    type Output = Tagged;

    fn load(attempts: String, _: &multiproc_serve::WorkerContext) -> Result<Self, multiproc_serve::LoadError> {
        common::note_pid(&attempts).unwrap();
        Err("the weights are missing".into())
    }

    fn predict(&mut self, _: Vec<u64>) -> Vec<Result<Tagged, String>> {
        Vec::new()
    }
}

#[test]
fn a_reload_that_fails_stops_the_new_workers_and_keeps_the_old_ones_serving() {
    let server = Server::new();
    server.add(ModelSpec::<Doubler>::new("m").version(1, Behaviour::default())).unwrap();
    let attempts = std::env::temp_dir().join(format!("multiproc-serve-reload-{}", std::process::id()));
    let _ = std::fs::remove_file(&attempts);
    let settings = ModelSettings {
        restart: multiproc_serve::RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    let broken = ModelSpec::<NeverLoads>::new("m").version(2, attempts.display().to_string()).settings(settings);
    let err = server.add(broken).unwrap_err();
    assert!(err.to_string().contains("the weights are missing"), "{err}");
    let reply = server.infer::<u64, Tagged>(Request::new("m", 4)).unwrap();
    assert_eq!((reply.version, reply.output.value), (1, 8));
    // The failed version does not go on loading behind the server's back.
    let count = || std::fs::read_to_string(&attempts).map_or(0, |s| s.lines().count());
    let after_the_error = count();
    std::thread::sleep(Duration::from_millis(1_500));
    let later = count();
    let _ = std::fs::remove_file(&attempts);
    assert_eq!(later, after_the_error, "the failed reload kept restarting its workers");
    server.shutdown();
}

#[test]
fn a_version_loaded_after_an_unload_serves() {
    let server = Server::new();
    let settings = ModelSettings { version_policy: VersionPolicy::Specific(vec![1]), ..Default::default() };
    let spec = ModelSpec::<Doubler>::new("m")
        .version(1, Behaviour::default())
        .version(2, Behaviour::default())
        .settings(settings);
    server.add(spec).unwrap();
    server.unload("m").unwrap();
    server.load_version("m", 2).unwrap();
    let reply = server.infer::<u64, Tagged>(Request::new("m", 3).timeout(PATIENCE));
    assert_eq!(reply.map(|r| (r.version, r.output.value)), Ok((2, 6)), "the version just loaded refused requests");
    assert!(server.model_ready("m", Some(2)).unwrap());
    let m = server.status().model("m").unwrap().clone();
    assert_eq!((m.unloaded, m.default_version), (false, Some(2)), "{m:?}");
    assert_eq!(m.version(1).unwrap().state, VersionState::Stopped);
    server.shutdown();
}
