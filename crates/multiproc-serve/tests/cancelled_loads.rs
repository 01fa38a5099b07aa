//! A shutdown or an unload that comes while a version still loads does not
//! wait for the load (up to its startup timeout): the load gives up at
//! once with an error that says it was cancelled and why, its worker
//! process is stopped and reaped, and no supervisor thread is left.

mod common;

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, PATIENCE, wait_for};
use multiproc_serve::{ModelSettings, ModelSpec, ServeError, Server, VersionState};
use multiproc_test_support::process_exists;

/// How long the model's load sleeps: far longer than any stop may take.
const LOAD_MS: u64 = 90_000;

/// The longest a stop may take here (a loaded machine included).
const PROMPT: Duration = Duration::from_secs(20);

/// Adds model `name` (eager, its load sleeping [`LOAD_MS`]) on a thread,
/// and waits until its worker process is loading. Returns the thread
/// (whose result is the add's) and the worker's pid.
fn add_loading(server: &Server, name: &'static str) -> (JoinHandle<Result<(), ServeError>>, i32) {
    let adding = {
        let server = server.clone();
        let settings = ModelSettings { startup_timeout: Duration::from_secs(180), ..Default::default() };
        let behaviour = Behaviour { load_ms: LOAD_MS, ..Default::default() };
        std::thread::spawn(move || server.add(ModelSpec::<Doubler>::new(name).version(1, behaviour).settings(settings)))
    };
    let pid = || server.status().model(name).and_then(|m| m.versions[0].workers[0].pid);
    assert!(wait_for(PATIENCE, || pid().is_some()), "no worker started loading '{name}'");
    assert_eq!(server.status().model(name).unwrap().versions[0].state, VersionState::Loading);
    (adding, pid().unwrap())
}

/// Runs `stop` on a thread; fails if it does not return within [`PROMPT`].
fn promptly<T: Send + 'static>(what: &str, stop: impl FnOnce() -> T + Send + 'static) -> T {
    within(PROMPT, what, stop)
}

/// Runs `stop` on a thread; fails if it does not return within `limit`.
fn within<T: Send + 'static>(limit: Duration, what: &str, stop: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, returned) = mpsc::channel();
    let began = Instant::now();
    std::thread::spawn(move || done.send(stop()));
    let out = returned.recv_timeout(limit).unwrap_or_else(|_| panic!("{what} still waits after {limit:?}"));
    eprintln!("{what} took {:?}", began.elapsed());
    out
}

/// The add's result, which must come promptly now.
fn add_result(adding: JoinHandle<Result<(), ServeError>>) -> Result<(), ServeError> {
    promptly("the load", move || adding.join().expect("the add panicked"))
}

/// True while a thread of this process supervises `name`.
fn supervisor_left(name: &str) -> bool {
    supervisors(name) > 0
}

#[test]
fn shutdown_while_a_model_loads_cancels_the_load_at_once() {
    let server = Server::new();
    let (adding, pid) = add_loading(&server, "slowa");
    let stopping = server.clone();
    promptly("shutdown", move || stopping.shutdown());
    let err = add_result(adding).expect_err("a load cancelled by shutdown succeeded");
    let message = err.to_string();
    assert!(message.contains("cancelled") && message.contains("shutting down"), "{message}");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the shutdown");
    assert!(!supervisor_left("slowa"), "a supervisor thread outlived the shutdown");
}

#[test]
fn unload_while_a_model_loads_cancels_the_load_at_once_and_load_brings_it_back() {
    let server = Server::new();
    let (adding, pid) = add_loading(&server, "slowb");
    let unloading = server.clone();
    promptly("unload", move || unloading.unload("slowb")).unwrap();
    let err = add_result(adding).expect_err("a load cancelled by unload succeeded");
    let message = err.to_string();
    assert!(message.contains("cancelled") && message.contains("unloaded"), "{message}");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the unload");
    assert!(!supervisor_left("slowb"), "a supervisor thread outlived the unload");
    let model = server.status().model("slowb").unwrap().clone();
    assert!(model.unloaded, "{model:?}");
    assert_eq!(model.versions[0].state, VersionState::Stopped, "{model:?}");
    // The model loads again (and that load, cancelled by shutdown, stops too).
    let loading = {
        let server = server.clone();
        std::thread::spawn(move || server.load("slowb"))
    };
    let worker = || server.status().model("slowb").and_then(|m| m.versions[0].workers[0].pid);
    assert!(wait_for(PATIENCE, || worker().is_some_and(|p| p != pid)), "the model did not load again");
    let again = worker().unwrap();
    let stopping = server.clone();
    promptly("shutdown", move || stopping.shutdown());
    let err = promptly("the second load", move || loading.join().unwrap()).unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert!(!process_exists(again), "the loading worker {again} outlived the shutdown");
    assert!(!supervisor_left("slowb"), "a supervisor thread outlived the shutdown");
}

#[test]
fn unload_during_a_switch_cancels_it_and_stops_both_versions() {
    let log = common::capture_log();
    let server = Server::new();
    let slow = Behaviour { load_ms: LOAD_MS, ..Default::default() };
    let spec = ModelSpec::<Doubler>::new("slowc").version(1, Behaviour::default()).version(2, slow);
    let settings = ModelSettings {
        startup_timeout: Duration::from_secs(180),
        version_policy: multiproc_serve::VersionPolicy::Specific(vec![1]),
        ..Default::default()
    };
    server.add(spec.settings(settings)).unwrap();
    let old = server.status().model("slowc").unwrap().versions[0].workers[0].pid.unwrap();
    let switching = {
        let server = server.clone();
        std::thread::spawn(move || server.switch("slowc", 2))
    };
    let new = || server.status().model("slowc").and_then(|m| m.versions[1].workers[0].pid);
    assert!(wait_for(PATIENCE, || new().is_some()), "version 2 did not start loading");
    let new = new().unwrap();
    let unloading = server.clone();
    promptly("unload", move || unloading.unload("slowc")).unwrap();
    let err = promptly("the switch", move || switching.join().unwrap()).unwrap_err();
    assert!(err.to_string().contains("cancelled") && err.to_string().contains("unloaded"), "{err}");
    let model = server.status().model("slowc").unwrap().clone();
    assert!(model.unloaded, "{model:?}");
    for v in &model.versions {
        assert_eq!(v.state, VersionState::Stopped, "{model:?}");
    }
    assert!(!process_exists(old) && !process_exists(new), "a worker outlived the unload");
    assert!(!supervisor_left("slowc"), "a supervisor thread outlived the unload");
    server.shutdown();
    // The log says the switch was cancelled, not that it failed with the old
    // versions serving on (they were unloaded).
    let lines = log.lock().unwrap().clone();
    let switch: Vec<&String> = lines.iter().filter(|l| l.contains("slowc") && l.contains("switch")).collect();
    assert!(!switch.iter().any(|l| l.contains("keep serving")), "{switch:#?}");
    assert!(switch.iter().any(|l| l.contains("switch cancelled") && l.contains("unloaded")), "{switch:#?}");
}

/// Threads of this process that supervise `name` now (threads are named
/// `serve-<model>-v<version>-<instance>`, cut to 15 bytes).
fn supervisors(name: &str) -> usize {
    let prefix: String = format!("serve-{name}-v1").chars().take(15).collect();
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end().starts_with(&prefix)))
        .count()
}

#[test]
fn shutdown_during_a_reload_cancels_the_new_versions_load() {
    let server = Server::new();
    server.add(ModelSpec::<Doubler>::new("slowd").version(1, Behaviour::default())).unwrap();
    let old = server.status().model("slowd").unwrap().versions[0].workers[0].pid.unwrap();
    let reloading = {
        let server = server.clone();
        let settings = ModelSettings { startup_timeout: Duration::from_secs(180), ..Default::default() };
        let behaviour = Behaviour { load_ms: LOAD_MS, ..Default::default() };
        std::thread::spawn(move || {
            server.add(ModelSpec::<Doubler>::new("slowd").version(1, behaviour).settings(settings))
        })
    };
    // The new entry is not listed until it is ready: its supervisor shows it.
    assert!(wait_for(PATIENCE, || supervisors("slowd") == 2), "the reload did not start");
    let stopping = server.clone();
    promptly("shutdown", move || stopping.shutdown());
    let err = promptly("the reload", move || reloading.join().unwrap()).unwrap_err();
    assert!(err.to_string().contains("cancelled") && err.to_string().contains("shutting down"), "{err}");
    assert!(!process_exists(old), "the old worker outlived the shutdown");
    assert_eq!(supervisors("slowd"), 0, "a supervisor thread outlived the shutdown");
}

/// A request queued on a version still loading, then `stop`: the stop
/// returns promptly (not after the drain timeout) and the request fails at
/// once with an error that says the version was stopped before it was
/// ready, and `says` why.
fn queued_request_fails_when_the_load_is_cancelled(name: &'static str, stop: fn(&Server), says: &str) {
    let server = Server::new();
    let (adding, pid) = add_loading(&server, name);
    let queued = server.infer_async::<u64, common::Tagged>(multiproc_serve::Request::new(name, 7));
    assert_eq!(server.status().model(name).unwrap().versions[0].queue_depth, 1);
    let stopping = server.clone();
    promptly("the stop", move || stop(&stopping));
    let err = queued.wait_timeout(PROMPT).expect_err("a request on a cancelled load was answered");
    let message = err.to_string();
    assert!(message.contains("before") && message.contains("ready") && message.contains(says), "{message}");
    assert!(add_result(adding).is_err(), "a cancelled load succeeded");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the stop");
    assert!(!supervisor_left(name), "a supervisor thread outlived the stop");
    server.shutdown();
}

#[test]
fn shutdown_fails_a_request_queued_on_a_loading_version_at_once() {
    queued_request_fails_when_the_load_is_cancelled("slowe", |s| s.shutdown(), "shutting down");
}

#[test]
fn unload_fails_a_request_queued_on_a_loading_version_at_once() {
    queued_request_fails_when_the_load_is_cancelled("slowf", |s| s.unload("slowf").unwrap(), "unloaded");
}

/// Model `name` serving version 1, with version 2 declared, whose load
/// sleeps [`LOAD_MS`]; `load_version(2)` runs on the returned thread,
/// whose worker (the returned pid) is loading.
fn loading_version_two(server: &Server, name: &'static str) -> (JoinHandle<Result<(), ServeError>>, i32) {
    let slow = Behaviour { load_ms: LOAD_MS, ..Default::default() };
    let spec = ModelSpec::<Doubler>::new(name).version(1, Behaviour::default()).version(2, slow);
    let settings = ModelSettings {
        startup_timeout: Duration::from_secs(180),
        version_policy: multiproc_serve::VersionPolicy::Specific(vec![1]),
        ..Default::default()
    };
    server.add(spec.settings(settings)).unwrap();
    let loading = {
        let server = server.clone();
        std::thread::spawn(move || server.load_version(name, 2))
    };
    let pid = || server.status().model(name).and_then(|m| m.versions[1].workers[0].pid);
    assert!(wait_for(PATIENCE, || pid().is_some()), "version 2 did not start loading");
    (loading, pid().unwrap())
}

#[test]
fn unload_version_cancels_that_versions_load_at_once() {
    let server = Server::new();
    let (loading, pid) = loading_version_two(&server, "slowg");
    let unloading = server.clone();
    promptly("unload_version", move || unloading.unload_version("slowg", 2)).unwrap();
    let err = promptly("the load", move || loading.join().unwrap()).unwrap_err();
    assert!(err.to_string().contains("cancelled") && err.to_string().contains("version 2 was unloaded"), "{err}");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the unload");
    let model = server.status().model("slowg").unwrap().clone();
    assert_eq!(model.versions[1].state, VersionState::Stopped, "{model:?}");
    // Version 1 serves on.
    let reply = server.infer::<u64, common::Tagged>(multiproc_serve::Request::new("slowg", 4).timeout(PATIENCE));
    assert_eq!(reply.unwrap().output.version, 1);
    server.shutdown();
    assert!(!supervisor_left("slowg"), "a supervisor thread outlived the shutdown");
}

/// Unloading version 1 while version 2 loads neither cancels that load
/// nor waits for it: version 1 stops at once, version 2 goes on loading.
#[test]
fn unload_version_neither_cancels_nor_waits_for_another_versions_load() {
    let server = Server::new();
    let (loading, pid) = loading_version_two(&server, "slowh");
    let old = server.status().model("slowh").unwrap().versions[0].workers[0].pid.unwrap();
    let unloading = server.clone();
    promptly("unload_version", move || unloading.unload_version("slowh", 1)).unwrap();
    assert!(!process_exists(old), "version 1's worker {old} outlived its unload");
    // A cancel would come at once; a second is plenty to see none came.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!loading.is_finished(), "unloading version 1 cancelled the load of version 2");
    let model = server.status().model("slowh").unwrap().clone();
    assert_eq!(model.versions[0].state, VersionState::Stopped, "{model:?}");
    assert_eq!(model.versions[1].state, VersionState::Loading, "{model:?}");
    let stopping = server.clone();
    promptly("shutdown", move || stopping.shutdown());
    let err = promptly("the load", move || loading.join().unwrap()).unwrap_err();
    assert!(err.to_string().contains("shutting down"), "{err}");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the shutdown");
    assert!(!supervisor_left("slowh"), "a supervisor thread outlived the shutdown");
}

/// `unload_version(1)` while a load of the whole model waits for versions
/// 1 and 2: it returns at once (not when version 2 is ready), version 1's
/// load is cancelled and its worker stopped, version 2 goes on loading, and
/// the load succeeds once version 2 is ready, which then serves alone.
#[test]
fn unload_version_during_a_model_load_leaves_that_version_out_at_once() {
    /// Version 2's load: longer than the unload may take.
    const SECOND_LOAD_MS: u64 = 12_000;
    let server = Server::new();
    let spec = ModelSpec::<Doubler>::new("slowk")
        .version(1, Behaviour { load_ms: LOAD_MS, ..Default::default() })
        .version(2, Behaviour { load_ms: SECOND_LOAD_MS, ..Default::default() });
    let settings = ModelSettings {
        startup_timeout: Duration::from_secs(180),
        version_policy: multiproc_serve::VersionPolicy::Specific(vec![1, 2]),
        ..Default::default()
    };
    let adding = {
        let server = server.clone();
        std::thread::spawn(move || server.add(spec.settings(settings)))
    };
    let pids = || {
        let model = server.status().model("slowk")?.clone();
        Some((model.versions[0].workers[0].pid?, model.versions[1].workers[0].pid?))
    };
    assert!(wait_for(PATIENCE, || pids().is_some()), "the versions did not start loading");
    let (first, second) = pids().unwrap();
    let unloading = server.clone();
    within(Duration::from_secs(5), "unload_version", move || unloading.unload_version("slowk", 1)).unwrap();
    assert!(!process_exists(first), "version 1's loading worker {first} outlived its unload");
    let model = server.status().model("slowk").unwrap().clone();
    assert_eq!(model.versions[0].state, VersionState::Stopped, "{model:?}");
    assert!(process_exists(second), "version 2's load was stopped too: {model:?}");
    let loaded = within(PATIENCE + Duration::from_millis(SECOND_LOAD_MS), "the load", move || adding.join().unwrap());
    loaded.expect("the load of the versions left failed");
    let reply = server.infer::<u64, common::Tagged>(multiproc_serve::Request::new("slowk", 4).timeout(PATIENCE));
    assert_eq!(reply.unwrap().output.version, 2);
    server.shutdown();
    assert!(!supervisor_left("slowk"), "a supervisor thread outlived the shutdown");
}

#[test]
fn shutdown_does_not_wait_for_a_pipeline_request_on_a_model_still_loading() {
    let server = Server::new();
    let settings = ModelSettings {
        start: multiproc_serve::StartMode::Lazy,
        startup_timeout: Duration::from_secs(180),
        ..Default::default()
    };
    let behaviour = Behaviour { load_ms: LOAD_MS, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("slowi").version(1, behaviour).settings(settings)).unwrap();
    let parse = |text: String| text.trim().parse::<u64>().map_err(|e| e.to_string());
    let spec = multiproc_serve::PipelineSpec::new("slowi-words", "slowi", parse, 1)
        .postprocess(|t: common::Tagged| Ok::<u64, String>(t.value), 1);
    server.add_pipeline(spec).unwrap();
    let queued = server.infer_async::<String, u64>(multiproc_serve::Request::new("slowi-words", "3".to_string()));
    let pid = || server.status().model("slowi").and_then(|m| m.versions[0].workers[0].pid);
    assert!(wait_for(PATIENCE, || pid().is_some()), "the request did not start the model's load");
    let pid = pid().unwrap();
    let stopping = server.clone();
    promptly("shutdown", move || stopping.shutdown());
    let err = queued.wait_timeout(PROMPT).expect_err("a request on a cancelled load was answered");
    assert!(err.to_string().contains("shutting down"), "{err}");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the shutdown");
    assert!(!supervisor_left("slowi"), "a supervisor thread outlived the shutdown");
}

/// A switch away from a version still loading (never ready) that has a
/// request queued: the switch returns once the new version is ready, not
/// after the old one's drain timeout, and the request fails at once, saying
/// the model switched to the new version and to send it again.
#[test]
fn switch_away_from_a_loading_version_fails_its_queued_requests_at_once() {
    let server = Server::new();
    let slow = Behaviour { load_ms: LOAD_MS, ..Default::default() };
    let spec = ModelSpec::<Doubler>::new("slowj").version(1, slow).version(2, Behaviour::default());
    let settings = ModelSettings {
        start: multiproc_serve::StartMode::Lazy,
        startup_timeout: Duration::from_secs(180),
        drain_timeout: Duration::from_secs(180),
        version_policy: multiproc_serve::VersionPolicy::Specific(vec![1]),
        ..Default::default()
    };
    server.add(spec.settings(settings)).unwrap();
    let queued = server.infer_async::<u64, common::Tagged>(multiproc_serve::Request::new("slowj", 7));
    let pid = || server.status().model("slowj").and_then(|m| m.versions[0].workers[0].pid);
    assert!(wait_for(PATIENCE, || pid().is_some()), "the request did not start version 1's load");
    let pid = pid().unwrap();
    let switching = server.clone();
    promptly("the switch", move || switching.switch("slowj", 2)).unwrap();
    let err = queued.wait_timeout(PROMPT).expect_err("a request on a version never ready was answered");
    let message = err.to_string();
    assert!(message.contains("switched to version 2") && message.contains("again"), "{message}");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the switch");
    assert!(!supervisor_left("slowj"), "version 1's supervisor outlived the switch");
    let reply = server.infer::<u64, common::Tagged>(multiproc_serve::Request::new("slowj", 4).timeout(PATIENCE));
    assert_eq!(reply.unwrap().output.version, 2);
    server.shutdown();
}

/// `unload_version` of the one version a load of the model waits for: the
/// load fails at once, saying every version it loaded was unloaded.
#[test]
fn unload_version_of_every_version_a_model_load_waits_for_fails_it() {
    let server = Server::new();
    let (adding, pid) = add_loading(&server, "slowl");
    let unloading = server.clone();
    promptly("unload_version", move || unloading.unload_version("slowl", 1)).unwrap();
    let err = add_result(adding).expect_err("a load of a version unloaded succeeded");
    let message = err.to_string();
    assert!(message.contains("cancelled") && message.contains("every version it loaded was unloaded"), "{message}");
    assert!(!process_exists(pid), "the loading worker {pid} outlived the unload");
    assert!(!supervisor_left("slowl"), "a supervisor thread outlived the unload");
    server.shutdown();
}
