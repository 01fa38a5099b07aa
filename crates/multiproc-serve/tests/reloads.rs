//! Reloads (`add` under a taken name) racing other management calls: every
//! entry that loaded is either serving or stopped, and no worker process
//! outlives the server.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{PATIENCE, wait_for};
use multiproc_serve::{LoadError, Model, ModelSettings, ModelSpec, Request, Server, VersionPolicy, WorkerContext};
use multiproc_test_support::process_exists;

/// Doubles its inputs; its load notes the worker's pid in the file of its
/// config, then takes the config's milliseconds.
struct NotesItsPid;

impl Model for NotesItsPid {
    type Config = (String, u64);
    type Input = u64;
    type Output = u64;

    fn load((pids, load_ms): (String, u64), _: &WorkerContext) -> Result<Self, LoadError> {
        common::note_pid(&pids).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(load_ms));
        Ok(NotesItsPid)
    }

    fn predict(&mut self, batch: Vec<u64>) -> Vec<Result<u64, String>> {
        batch.into_iter().map(|x| Ok(2 * x)).collect()
    }
}

/// A file for the pids of one test's workers, removed when dropped.
struct Pids(PathBuf);

impl Pids {
    fn new(test: &str) -> Pids {
        let path = std::env::temp_dir().join(format!("multiproc-serve-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Pids(path)
    }

    fn spec(&self, name: &str, version: u64, load_ms: u64) -> ModelSpec<NotesItsPid> {
        ModelSpec::<NotesItsPid>::new(name).version(version, (self.0.display().to_string(), load_ms))
    }

    /// Every pid noted so far.
    fn all(&self) -> Vec<i32> {
        read_pids(&self.0)
    }
}

impl Drop for Pids {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path).map_or(Vec::new(), |s| s.lines().filter_map(|l| l.parse().ok()).collect())
}

/// Waits (bounded) for every noted worker to be gone; the ones left.
fn left_behind(pids: &Pids) -> Vec<i32> {
    wait_for(Duration::from_secs(10), || pids.all().iter().all(|p| !process_exists(*p)));
    pids.all().into_iter().filter(|p| process_exists(*p)).collect()
}

#[test]
fn two_reloads_at_once_leave_no_worker_behind() {
    let pids = Pids::new("two-reloads");
    let server = Server::new();
    server.add(pids.spec("m", 1, 0)).unwrap();
    // Two repository loads of the same model at once: both load while the
    // other does, then each swaps its entry in.
    let reloads: Vec<_> = [2, 3]
        .map(|v| {
            let (server, spec) = (server.clone(), pids.spec("m", v, 500));
            std::thread::spawn(move || server.add(spec))
        })
        .into_iter()
        .collect();
    for r in reloads {
        r.join().unwrap().unwrap();
    }
    let reply = server.infer::<u64, u64>(Request::new("m", 4).timeout(PATIENCE)).unwrap();
    assert!(reply.version == 2 || reply.version == 3, "{reply:?}");
    assert_eq!(pids.all().len(), 3, "one worker per version");
    server.shutdown();
    assert_eq!(left_behind(&pids), Vec::<i32>::new(), "workers outlived the server's shutdown");
}

#[test]
fn a_reload_that_ends_after_shutdown_leaves_no_worker_behind() {
    let pids = Pids::new("reload-shutdown");
    let server = Server::new();
    server.add(pids.spec("m", 1, 0)).unwrap();
    let reload = {
        let (server, spec) = (server.clone(), pids.spec("m", 2, 1_000));
        std::thread::spawn(move || server.add(spec))
    };
    assert!(wait_for(PATIENCE, || pids.all().len() == 2), "the new version's worker never started");
    server.shutdown();
    let _ = reload.join().unwrap();
    assert_eq!(left_behind(&pids), Vec::<i32>::new(), "the reloaded entry's worker outlived the shutdown");
    assert!(server.status().models.is_empty(), "{:?}", server.status());
}

/// Starts a reload of "m" (`spec`) and waits until its new worker loads
/// (the `noted`-th pid), so an unload lands while the reload is under way.
fn reload_under_way(
    server: &Server,
    pids: &Pids,
    spec: ModelSpec<NotesItsPid>,
    noted: usize,
) -> std::thread::JoinHandle<Result<(), multiproc_serve::ServeError>> {
    let reload = {
        let server = server.clone();
        std::thread::spawn(move || server.add(spec))
    };
    assert!(wait_for(PATIENCE, || pids.all().len() >= noted), "the reload's worker never started");
    reload
}

#[test]
fn an_unload_during_a_reload_cancels_the_reload() {
    let pids = Pids::new("unload-reload");
    let server = Server::new();
    server.add(pids.spec("m", 1, 0)).unwrap();
    // The same version again: a fresh entry loading beside the served one.
    let reload = reload_under_way(&server, &pids, pids.spec("m", 1, 1_500), 2);
    server.unload("m").unwrap();
    let reloaded = reload.join().unwrap();
    let e = reloaded.expect_err("the reload went on after the model was unloaded");
    assert!(e.to_string().contains("unloaded"), "{e}");
    let served = server.infer::<u64, u64>(Request::new("m", 4).timeout(PATIENCE));
    assert!(served.is_err(), "the model serves after an unload that returned Ok: {served:?}");
    assert!(server.status().models[0].unloaded, "{:?}", server.status());
    server.shutdown();
    assert_eq!(left_behind(&pids), Vec::<i32>::new(), "workers outlived the server's shutdown");
}

#[test]
fn an_unload_of_the_version_during_a_reload_cancels_the_reload() {
    let pids = Pids::new("unload-version-reload");
    let server = Server::new();
    server.add(pids.spec("m", 1, 0)).unwrap();
    let reload = reload_under_way(&server, &pids, pids.spec("m", 1, 1_500), 2);
    server.unload_version("m", 1).unwrap();
    let reloaded = reload.join().unwrap();
    let e = reloaded.expect_err("the reload went on after its version was unloaded");
    assert!(e.to_string().contains("unloaded"), "{e}");
    let served = server.infer::<u64, u64>(Request::new("m", 4).version(1).timeout(PATIENCE));
    assert!(served.is_err(), "version 1 serves after an unload that returned Ok: {served:?}");
    server.shutdown();
    assert_eq!(left_behind(&pids), Vec::<i32>::new(), "workers outlived the server's shutdown");
}

#[test]
fn a_reload_leaves_out_a_version_unloaded_meanwhile() {
    let pids = Pids::new("unload-one-of-reload");
    let server = Server::new();
    let all = ModelSettings { version_policy: VersionPolicy::All, ..ModelSettings::default() };
    server.add(pids.spec("m", 1, 0).settings(all.clone())).unwrap();
    let spec = pids.spec("m", 1, 1_500).version(2, (pids.0.display().to_string(), 1_500)).settings(all);
    let reload = reload_under_way(&server, &pids, spec, 3);
    server.unload_version("m", 1).unwrap();
    reload.join().unwrap().expect("the reload's other version loads");
    let served = server.infer::<u64, u64>(Request::new("m", 4).version(1).timeout(PATIENCE));
    assert!(served.is_err(), "version 1 serves after an unload that returned Ok: {served:?}");
    let reply = server.infer::<u64, u64>(Request::new("m", 4).timeout(PATIENCE)).unwrap();
    assert_eq!((reply.version, reply.output), (2, 8));
    server.shutdown();
    assert_eq!(left_behind(&pids), Vec::<i32>::new(), "workers outlived the server's shutdown");
}

#[test]
fn a_remove_during_a_reload_cancels_the_reload() {
    let pids = Pids::new("remove-reload");
    let server = Server::new();
    server.add(pids.spec("m", 1, 0)).unwrap();
    let reload = reload_under_way(&server, &pids, pids.spec("m", 1, 1_500), 2);
    server.remove("m").unwrap();
    let e = reload.join().unwrap().expect_err("the reload brought a removed model back");
    assert!(e.to_string().contains("removed"), "{e}");
    assert!(server.status().models.is_empty(), "{:?}", server.status());
    server.shutdown();
    assert_eq!(left_behind(&pids), Vec::<i32>::new(), "workers outlived the server's shutdown");
}
