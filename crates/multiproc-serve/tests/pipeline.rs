//! Pipelines (seed 004): preprocessing processes → batched model → postprocessing,
//! every result back to its request; a dead preprocessing worker fails only
//! its own requests.

mod common;

use std::time::Duration;

use common::{Behaviour, Doubler, PATIENCE, Tagged, block_on};
use multiproc_serve::{ErrorKind, ModelSettings, ModelSpec, PipelineSpec, Request, ServeError, Server};

fn parse(text: String) -> Result<u64, String> {
    if text == "die" {
        std::process::exit(7);
    }
    text.trim().parse().map_err(|e| format!("{text:?} is not a number: {e}"))
}

fn describe(t: Tagged) -> Result<String, String> {
    Ok(format!("{} (v{})", t.value, t.version))
}

/// A pipeline's error says it is the pipeline's (with its name), not a
/// model's: a pipeline has no versions to name.
fn assert_names_the_pipeline(err: &ServeError, pipeline: &str) {
    let message = err.to_string();
    assert!(message.contains(&format!("pipeline '{pipeline}'")), "{message}");
    assert!(!message.contains("version"), "{message}");
}

fn server_with_pipeline(chunk: usize) -> Server {
    let server = Server::new();
    let settings =
        ModelSettings { max_batch_size: 128, max_queue_delay: Duration::from_millis(5), ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default()).settings(settings)).unwrap();
    let spec = PipelineSpec::new("words", "double", parse, 2).postprocess(describe, 1).chunk(chunk).capacity(1000);
    server.add_pipeline(spec).unwrap();
    server
}

#[test]
fn every_result_reaches_its_request_through_the_stages() {
    let server = server_with_pipeline(64);
    let futures: Vec<_> =
        (0..500u64).map(|i| server.infer_async::<String, String>(Request::new("words", format!(" {i}")))).collect();
    for (i, f) in futures.into_iter().enumerate() {
        assert_eq!(block_on(f, PATIENCE).unwrap().output, format!("{} (v1)", 2 * i));
    }
    // Batches formed in the model; a bad input fails only itself, in preprocessing.
    let metrics = server.metrics();
    assert!(metrics.get("double", 1).unwrap().execution_count < 100);
    let err = server.infer::<String, String>(Request::new("words", "seven".to_string())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelFailed);
    assert!(err.to_string().contains("not a number"), "{err}");
    assert!(err.to_string().contains("preprocessing"), "{err}");
    assert_names_the_pipeline(&err, "words");
    let status = server.status();
    let p = status.model("words").unwrap();
    assert!(p.ready);
    assert_eq!(p.pipeline.as_ref().unwrap().preprocess_processes, 2);
    // The caller's types are checked.
    let err = server.infer::<u64, String>(Request::new("words", 1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput);
    assert_names_the_pipeline(&err, "words");
    // A pipeline has no versions to ask for; the error says so of the pipeline.
    let err = server.infer::<String, String>(Request::new("words", "1".to_string()).version(1)).unwrap_err();
    assert_eq!((err.kind(), err.http_status()), (ErrorKind::BadInput, 400));
    assert!(err.to_string().starts_with("bad input for pipeline 'words'"), "{err}");
    server.shutdown();
}

#[test]
fn a_dead_preprocessing_worker_fails_only_its_own_request() {
    let server = server_with_pipeline(1);
    let mut futures: Vec<_> =
        (0..40u64).map(|i| server.infer_async::<String, String>(Request::new("words", i.to_string()))).collect();
    futures.insert(20, server.infer_async::<String, String>(Request::new("words", "die".to_string())));
    let results: Vec<_> = futures.into_iter().map(|f| block_on(f, PATIENCE)).collect();
    let err = results[20].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    assert!(err.to_string().contains("preprocessing"), "{err}");
    assert_names_the_pipeline(err, "words");
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 40, "{:?}", results.iter().filter(|r| r.is_err()).collect::<Vec<_>>());
    // The pool replaced its worker: the pipeline still serves.
    assert_eq!(server.infer::<String, String>(Request::new("words", "4".to_string())).unwrap().output, "8 (v1)");
    server.shutdown();
}

fn slow_parse(text: String) -> Result<u64, String> {
    std::thread::sleep(Duration::from_millis(200));
    parse(text)
}

#[test]
fn a_full_pipeline_rejects_at_once_and_recovers() {
    let server = Server::new();
    server.add(ModelSpec::<Doubler>::new("double").version(1, Behaviour::default())).unwrap();
    let spec = PipelineSpec::<String, u64, Tagged, Tagged>::new("slow", "double", slow_parse, 1).capacity(8);
    server.add_pipeline(spec).unwrap();
    let futures: Vec<_> =
        (0..20u64).map(|i| server.infer_async::<String, Tagged>(Request::new("slow", i.to_string()))).collect();
    let results: Vec<_> = futures.into_iter().map(|f| f.wait_timeout(PATIENCE)).collect();
    let overloaded = results.iter().filter(|r| matches!(r, Err(e) if e.kind() == ErrorKind::Overloaded)).count();
    assert_eq!(overloaded, 12, "the pipeline holds 8 requests; the other 12 are rejected");
    assert!(results[..8].iter().all(|r| r.is_ok()));
    let rejected = results[19].as_ref().unwrap_err();
    assert_names_the_pipeline(rejected, "slow");
    assert_eq!(rejected.http_status(), 503);
    assert!(rejected.retry_after().is_some(), "{rejected}");
    let in_flight = || server.status().model("slow").unwrap().pipeline.as_ref().unwrap().in_flight;
    assert!(common::wait_for(PATIENCE, || in_flight() == 0), "{} requests still counted", in_flight());
    let reply = server.infer::<String, Tagged>(Request::new("slow", "5".to_string())).unwrap();
    assert_eq!(reply.output.value, 10);
    server.shutdown();
}

#[test]
fn a_deadline_that_passes_in_the_model_counts_as_what_the_caller_saw_with_postprocessing() {
    let server = Server::new();
    let slow = Behaviour { batch_ms: 1_000, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("double").version(1, slow)).unwrap();
    server.add_pipeline(PipelineSpec::new("words", "double", parse, 1).postprocess(describe, 1)).unwrap();
    let late =
        server.infer::<String, String>(Request::new("words", "3".to_string()).timeout(Duration::from_millis(300)));
    assert_eq!(late.unwrap_err().kind(), ErrorKind::DeadlineExceeded);
    // The model answers after the deadline; nobody gets that answer.
    let counted = || {
        let m = server.metrics().get("double", 1).cloned().unwrap();
        m.request_success + m.request_failure.values().sum::<u64>() == 1
    };
    assert!(common::wait_for(PATIENCE, counted));
    let metrics = server.metrics();
    let m = metrics.get("double", 1).unwrap();
    assert_eq!(m.request_success, 0, "an answer nobody got counted as a success: {m:?}");
    assert_eq!(m.request_failure.get("deadline_exceeded"), Some(&1), "{m:?}");
    server.shutdown();
}

#[test]
fn requests_a_crash_looping_model_refuses_from_a_pipeline_are_counted() {
    let server = Server::new();
    let broken = Behaviour { panic_on_load: Some("no weights".into()), ..Default::default() };
    let settings = ModelSettings { startup_timeout: PATIENCE, ..Default::default() };
    let err = server.add(ModelSpec::<Doubler>::new("double").version(1, broken).settings(settings)).unwrap_err();
    assert!(err.to_string().contains("no weights"), "{err}");
    server.add_pipeline(PipelineSpec::<String, u64, Tagged, Tagged>::new("words", "double", parse, 1)).unwrap();
    let err = server.infer::<String, Tagged>(Request::new("words", "3".to_string()).timeout(PATIENCE)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CrashLooping, "{err}");
    // As a request sent to the model itself is.
    let err = server.infer::<u64, Tagged>(Request::new("double", 3).timeout(PATIENCE)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CrashLooping, "{err}");
    let metrics = server.metrics();
    let m = metrics.get("double", 1).unwrap();
    assert_eq!(m.request_failure.get("crash_looping"), Some(&2), "a refused request went uncounted: {m:?}");
    server.shutdown();
}
