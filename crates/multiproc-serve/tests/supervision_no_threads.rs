//! A version none of whose supervisor threads could start fails at once
//! (state `Failed`, saying why), rather than wait in `Loading` for its
//! startup timeout, and loads again once threads can start. This file has
//! one test: it lowers its process's limit of processes (and, as root,
//! changes its user ids), so it runs in a fresh copy of this test binary.

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, Tagged};
use multiproc_serve::{ErrorKind, ModelSettings, ModelSpec, Request, Server, VersionState};
use multiproc_test_support::{NoRoomForThreads, in_fresh_copy, run_in_fresh_copy};

/// Set in the fresh copy that runs the test's body.
const IN_FRESH_COPY: &str = "MULTIPROC_SERVE_TEST_NO_THREADS";

#[test]
fn a_version_whose_supervisors_cannot_start_fails_at_once() {
    if in_fresh_copy(IN_FRESH_COPY) {
        return no_supervisor_thread_fails_the_version_at_once();
    }
    run_in_fresh_copy(
        "a_version_whose_supervisors_cannot_start_fails_at_once",
        IN_FRESH_COPY,
        Duration::from_secs(120),
    );
}

fn no_supervisor_thread_fails_the_version_at_once() {
    let server = Server::new();
    // Two instances, so neither thread starts; a startup timeout far past
    // the bound below, so a version left waiting in `Loading` fails the test.
    let settings = ModelSettings { instances: 2, startup_timeout: Duration::from_secs(30), ..Default::default() };
    let spec = ModelSpec::<Doubler>::new("m").version(1, Behaviour::default()).settings(settings);

    let limit = NoRoomForThreads::new();
    let asked = Instant::now();
    let added = server.add(spec);
    let took = asked.elapsed();
    drop(limit);

    let err = added.expect_err("no supervisor thread, no ready version");
    assert!(took < Duration::from_secs(5), "the add waited {took:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::NotReady, "{err}");
    assert!(err.to_string().contains("could not start a supervisor thread"), "{err}");
    let v = server.status().model("m").unwrap().versions[0].clone();
    assert_eq!(v.state, VersionState::Failed, "{v:?}");
    let why = v.last_failure.as_deref().unwrap_or_default();
    assert!(why.contains("could not start a supervisor thread") && why.contains("retry later"), "{v:?}");

    // With threads again, a retry loads it and it serves.
    server.load("m").unwrap();
    let reply = server.infer::<u64, Tagged>(Request::new("m", 21)).unwrap();
    assert_eq!(reply.output.value, 42);
    server.shutdown();
}
