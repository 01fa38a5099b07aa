//! Requests whose caller went away (its future dropped) or whose deadline
//! passed are dropped from their queue, and what they hold
//! (`Request::hold`: a front end's share of its byte budget) given back,
//! within about a second, even while no worker takes batches: while the
//! version's worker loads, while it backs off after a crash, and while it
//! runs a long batch. Live requests stay queued and hold theirs.

mod common;

use std::time::{Duration, Instant};

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on, wait_for};
use multiproc_serve::{
    ErrorKind, ModelSettings, ModelSpec, Request, RestartPolicy, Server, StartMode, VersionState, WorkerState,
};
use multiproc_test_support::Alive;

/// How soon an abandoned request must give back what it holds.
const SOON: Duration = Duration::from_millis(1000);

/// The state of model "m" version 1 and of its worker.
fn states(server: &Server) -> (VersionState, WorkerState) {
    let v = server.status().model("m").expect("model m").versions[0].clone();
    (v.state, v.workers[0].state)
}

/// Sends three requests to "m" holding guards of `held`: one that stays,
/// one whose caller goes away at once, one whose deadline passes after
/// 200 ms. Asserts that the two abandoned ones give their guards back
/// within [`SOON`] of their deadline, while `still` holds of the version,
/// and that the caller past its deadline has its error. Returns the live
/// request's future.
fn two_abandoned_give_back_soon(
    server: &Server,
    held: &Alive,
    still: impl Fn((VersionState, WorkerState)) -> bool,
) -> multiproc_serve::InferFuture<Tagged> {
    let live = server.infer_async::<u64, Tagged>(Request::new("m", 1).hold(held.guard()));
    drop(server.infer_async::<u64, Tagged>(Request::new("m", 2).hold(held.guard())));
    let deadline = Duration::from_millis(200);
    let sent = Instant::now();
    let late = server.infer_async::<u64, Tagged>(Request::new("m", 3).timeout(deadline).hold(held.guard()));
    assert_eq!(block_on(late, PATIENCE).unwrap_err().kind(), ErrorKind::DeadlineExceeded);
    assert!(
        wait_for(deadline + SOON, || held.count() == 1),
        "{} guards alive {:?} after the deadline; {:?}",
        held.count(),
        sent.elapsed().saturating_sub(deadline),
        states(server)
    );
    assert!(still(states(server)), "the version moved on meanwhile: {:?}", states(server));
    assert_eq!(server.status().model("m").unwrap().versions[0].queue_depth, 1, "the live request stays queued");
    live
}

#[test]
fn abandoned_requests_give_back_what_they_hold_while_their_worker_loads() {
    let server = Server::new();
    let settings = ModelSettings { start: StartMode::Lazy, ..Default::default() };
    let behaviour = Behaviour { load_ms: 20_000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    let held = Alive::default();
    let live =
        two_abandoned_give_back_soon(&server, &held, |(v, w)| v == VersionState::Loading && w == WorkerState::Starting);
    drop(live);
    // The load is cancelled, the live request fails with it.
    server.shutdown();
    assert_eq!(held.count(), 0);
}

#[test]
fn abandoned_requests_give_back_what_they_hold_while_their_worker_backs_off() {
    let server = Server::new();
    let restart = RestartPolicy {
        initial_backoff: Duration::from_secs(30),
        max_backoff: Duration::from_secs(30),
        crash_loop_threshold: 10,
        ..Default::default()
    };
    let settings = ModelSettings { start: StartMode::Lazy, restart, ..Default::default() };
    let behaviour = Behaviour { panic_on_load: Some("a load that fails".into()), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    // A first request starts the version; its load fails: the worker backs off.
    let first = server.infer_async::<u64, Tagged>(Request::new("m", 0));
    assert!(wait_for(PATIENCE, || states(&server).1 == WorkerState::BackingOff), "{:?}", states(&server));
    drop(first);
    let held = Alive::default();
    let live = two_abandoned_give_back_soon(&server, &held, |(_, w)| w == WorkerState::BackingOff);
    drop(live);
    server.shutdown();
    assert_eq!(held.count(), 0);
}

#[test]
fn abandoned_requests_give_back_what_they_hold_while_their_worker_runs_a_long_batch() {
    let server = Server::new();
    // Batches of up to 4: two queued requests are no full batch, so none
    // is taken ahead into the busy worker's pipe.
    let settings = ModelSettings { max_batch_size: 4, start: StartMode::Eager, ..Default::default() };
    let behaviour = Behaviour { batch_ms: 3000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    let running = server.infer_async::<u64, Tagged>(Request::new("m", 0));
    assert!(
        wait_for(PATIENCE, || server.status().model("m").unwrap().versions[0].in_flight == 1),
        "the first request never ran"
    );
    let held = Alive::default();
    let live = two_abandoned_give_back_soon(&server, &held, |(_, w)| w == WorkerState::Busy);
    assert_eq!(block_on(running, PATIENCE).unwrap().output.value, 0);
    assert_eq!(block_on(live, PATIENCE).unwrap().output.value, 2);
    assert_eq!(held.count(), 0);
    server.shutdown();
}
