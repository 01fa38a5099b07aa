//! Durations at their limit: `Duration::MAX` as a timeout, a delay or a
//! backoff means "no limit", never a panic in the caller or in a thread of
//! the server (which would leave requests unanswered); a zero timeout is
//! refused, naming its field.

mod common;

use std::time::Duration;

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on};
use multiproc_serve::{ModelSettings, ModelSpec, Request, RestartPolicy, Server, VersionState};

#[test]
fn duration_max_everywhere_means_no_limit() {
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 4,
        startup_timeout: Duration::MAX,
        call_timeout: Some(Duration::MAX),
        request_timeout: Some(Duration::MAX),
        drain_timeout: Duration::MAX,
        restart: RestartPolicy { max_backoff: Duration::MAX, ..Default::default() },
        ..Default::default()
    };
    server.add(ModelSpec::<Doubler>::new("m").version(1, Behaviour::default()).settings(settings.clone())).unwrap();
    let reply = server.infer::<u64, Tagged>(Request::new("m", 1)).unwrap();
    assert_eq!(reply.output.value, 2);
    let reply = server.infer::<u64, Tagged>(Request::new("m", 2).timeout(Duration::MAX)).unwrap();
    assert_eq!(reply.output.value, 4);
    let f = server.infer_async::<u64, Tagged>(Request::new("m", 3).timeout(Duration::MAX));
    assert_eq!(block_on(f, PATIENCE).unwrap().output.value, 6);
    // A batch that waits for its delay: the longest delay waits for a full batch.
    let full_batches_only = ModelSettings { max_queue_delay: Duration::MAX, ..settings };
    server.add(ModelSpec::<Doubler>::new("full").version(1, Behaviour::default()).settings(full_batches_only)).unwrap();
    let futures: Vec<_> = (0..4u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("full", i))).collect();
    for (i, f) in futures.into_iter().enumerate() {
        let reply = block_on(f, PATIENCE).unwrap();
        assert_eq!((reply.output.value, reply.output.batch), (2 * i as u64, 4));
    }
    server.unload("m").unwrap();
    assert_eq!(server.status().model("m").unwrap().versions[0].state, VersionState::Stopped);
    server.shutdown();
}

#[test]
fn a_zero_request_timeout_is_refused_as_a_zero_call_timeout_is() {
    // Every request would fail with DeadlineExceeded before it was queued.
    let settings = ModelSettings { request_timeout: Some(Duration::ZERO), ..Default::default() };
    assert_eq!(settings.validate().map_err(|e| e.field), Err("request_timeout"));
    let server = Server::new();
    let spec = ModelSpec::<Doubler>::new("m").version(1, Behaviour::default()).settings(settings);
    let err = server.add(spec).unwrap_err();
    assert!(err.to_string().contains("request_timeout"), "{err}");
    server.shutdown();
}
