//! External-command models: the reference Python worker (standard library
//! only) serves tensors under the same supervision, batching and versions.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{PATIENCE, block_on, wait_for};
use multiproc_serve::{
    CommandConfig, CommandModel, DataType, ErrorKind, ModelSettings, ModelSpec, Request, Server, Tensor, VersionPolicy,
    VersionState,
};

fn worker_script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/multiproc_worker.py").display().to_string()
}

fn python() -> CommandConfig {
    CommandConfig::new("python3").arg(worker_script())
}

#[test]
fn the_python_reference_worker_serves_tensors_in_batches() {
    let log = common::capture_log();
    let server = Server::new();
    let settings = ModelSettings {
        max_batch_size: 8,
        max_queue_delay: Duration::from_millis(20),
        version_policy: VersionPolicy::Specific(vec![3]),
        ..Default::default()
    };
    let spec = ModelSpec::<CommandModel>::new("py").version(3, python()).version(5, python()).settings(settings);
    server.add(spec).unwrap();

    let x = Tensor::from_slice("x", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.5]).unwrap();
    let words = Tensor::from_items("words", vec![2], [b"hello".as_slice(), b"multiproc"]).unwrap();
    let reply = server.infer_tensors("py", None, vec![x, words]).unwrap();
    assert_eq!(reply.version, 3);
    let out = multiproc_serve::tensor::find(&reply.output, "output_x").unwrap();
    assert_eq!((out.datatype(), out.shape()), (DataType::Fp32, [2usize, 2].as_slice()));
    assert_eq!(out.to_vec::<f32>().unwrap(), [3.0, 6.0, 9.0, 13.5]);
    let w = multiproc_serve::tensor::find(&reply.output, "output_words").unwrap();
    assert_eq!(w.items().unwrap(), [b"HELLO".as_slice(), b"MULTIPROC"]);

    // Many requests at once travel in batches, each answer to its request.
    let futures: Vec<_> = (0..40i64)
        .map(|i| {
            let t = Tensor::from_slice("n", vec![1], &[i]).unwrap();
            server.infer_async::<Vec<Tensor>, Vec<Tensor>>(Request::new("py", vec![t]))
        })
        .collect();
    for (i, f) in futures.into_iter().enumerate() {
        let reply = block_on(f, PATIENCE).unwrap();
        assert_eq!(reply.output[0].to_vec::<i64>().unwrap(), [3 * i as i64]);
    }
    let metrics = server.metrics();
    let m = metrics.get("py", 3).unwrap();
    assert!(m.execution_count < 41, "{} batches for 41 requests", m.execution_count);

    // An input the model refuses fails only that request.
    let bad = Tensor::from_bools("flags", vec![1], &[true]).unwrap();
    let err = server.infer_tensors("py", None, vec![bad]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ModelFailed);
    assert!(err.to_string().contains("does not take BOOL"), "{err}");

    // The command's stderr reached the log, prefixed with model and version
    // exactly once; load, ready and the version's state changes are logged too.
    let lines = log.lock().unwrap().clone();
    let loaded: Vec<&String> = lines.iter().filter(|l| l.contains("demo model py loaded version 3")).collect();
    assert!(!loaded.is_empty(), "{lines:#?}");
    for line in loaded {
        assert_eq!(line.matches("[py v3]").count(), 1, "{line}");
        assert!(line.contains("[py v3] demo model py loaded version 3"), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("worker ready") && l.contains("model=py")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("to=ready") && l.contains("version=3")), "{lines:#?}");

    // Versions and switch work the same: version 5 multiplies by 5.
    server.switch("py", 5).unwrap();
    let t = Tensor::from_slice("x", vec![1], &[2.0f64]).unwrap();
    let reply = server.infer_tensors("py", None, vec![t]).unwrap();
    assert_eq!((reply.version, reply.output[0].to_vec::<f64>().unwrap()), (5, vec![10.0]));
    let lines = log.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("switch: traffic moved")), "{lines:#?}");
    server.shutdown();
}

#[test]
fn a_program_that_does_not_exist_fails_the_version_at_once_without_retries() {
    let server = Server::new();
    // Quick retries: a retried load would be seen crash-looping well within the bound.
    let restart = multiproc_serve::RestartPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        crash_loop_threshold: 3,
        crash_window: Duration::from_secs(60),
    };
    let settings = ModelSettings { startup_timeout: Duration::from_secs(20), restart, ..Default::default() };
    let missing = CommandConfig::new("/nonexistent/multiproc-model-program");
    let started = std::time::Instant::now();
    let err = server.add(ModelSpec::<CommandModel>::new("gone").version(1, missing).settings(settings)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "the add took {:?}", started.elapsed());
    assert!(err.to_string().contains("set the program to an executable file"), "{err}");
    let status = server.status();
    let version = &status.model("gone").unwrap().versions[0];
    assert_eq!(version.state, VersionState::Failed, "{version:?}");
    assert_eq!(version.restarts, 0, "the load was retried: {version:?}");
    server.shutdown();
}

#[test]
fn a_python_worker_that_cannot_load_or_dies_is_supervised() {
    let server = Server::new();
    let settings = ModelSettings { startup_timeout: Duration::from_secs(20), ..Default::default() };
    let failing = python().env("DEMO_FAIL_LOAD", "model.pt is missing");
    let err = server.add(ModelSpec::<CommandModel>::new("nofile").version(1, failing).settings(settings)).unwrap_err();
    assert!(err.to_string().contains("model.pt is missing"), "{err}");
    assert_eq!(server.status().model("nofile").unwrap().versions[0].state, VersionState::CrashLooping);

    // Killing the worker process takes the Python child with it; both come back.
    server.add(ModelSpec::<CommandModel>::new("py").version(1, python())).unwrap();
    let pid = server.status().model("py").unwrap().versions[0].workers[0].pid.unwrap();
    let t = Tensor::from_slice("x", vec![1], &[1.0f32]).unwrap();
    server.infer_tensors("py", None, vec![t.clone()]).unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let children: Vec<i32> = children.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(children.len(), 1, "the worker runs one python child");
    // SAFETY: kill(2) on the pid of our own worker process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let gone = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| s.contains(") Z ") || !s.contains("python"))
    };
    assert!(wait_for(PATIENCE, || gone(children[0])), "the python child outlived its worker");
    assert!(wait_for(PATIENCE, || {
        let v = server.status().model("py").unwrap().versions[0].clone();
        v.ready && v.restarts == 1
    }));
    assert_eq!(server.infer_tensors("py", None, vec![t]).unwrap().output[0].to_vec::<f32>().unwrap(), [1.0]);
    server.shutdown();
}

#[test]
fn a_command_that_dies_while_idle_is_replaced_before_the_next_request() {
    let server = Server::new();
    let settings = ModelSettings {
        restart: multiproc_serve::RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    server.add(ModelSpec::<CommandModel>::new("py").version(1, python()).settings(settings)).unwrap();
    let pid = server.status().model("py").unwrap().versions[0].workers[0].pid.unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let command: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // The command alone dies (out of memory, say) while no request runs.
    common::kill(command);
    let back = || {
        let v = server.status().model("py").unwrap().versions[0].clone();
        v.ready && v.restarts == 1
    };
    let replaced = wait_for(Duration::from_secs(5), back);
    // No request was running: none fails.
    let t = Tensor::from_slice("x", vec![1], &[2.0f32]).unwrap();
    let reply = server.infer_tensors("py", None, vec![t]);
    assert_eq!(reply.map(|r| r.output[0].to_vec::<f32>().unwrap()), Ok(vec![2.0]));
    assert!(replaced, "the worker of a dead command was not replaced while idle");
    server.shutdown();
}
