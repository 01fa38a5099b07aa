//! External commands that misbehave: binary or endless stderr, garbage on
//! stdout, a model whose `predict` raises or answers the wrong number of
//! results. Each is a clear error (or no error at all), memory stays
//! bounded, and the server keeps serving.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{PATIENCE, block_on};
use multiproc_serve::{CommandConfig, CommandModel, ModelSettings, ModelSpec, Request, ServeError, Server, Tensor};

/// A Python command: the reference worker's `serve` with the given `load`
/// and `predict` (Python source defining both; `mw` is the module).
fn python(source: &str) -> CommandConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python").display().to_string();
    let program = format!(
        "import sys\nsys.path.insert(0, {dir:?})\nimport multiproc_worker as mw\n{source}\nmw.serve(load, predict)\n"
    );
    CommandConfig::new("python3").arg("-c").arg(program)
}

/// A model that returns its inputs, with `extra` Python run in `predict`.
fn echo(extra: &str) -> CommandConfig {
    python(&format!(
        "def load(model, version):\n    return None\n\
         def predict(model, batch):\n    {extra}\n    return [list(inputs.values()) for inputs in batch]\n"
    ))
}

fn one(i: i64) -> Vec<Tensor> {
    vec![Tensor::from_slice("x", vec![1], &[i]).unwrap()]
}

fn ask(server: &Server, model: &str, i: i64) -> Result<i64, ServeError> {
    let f = server.infer_async::<Vec<Tensor>, Vec<Tensor>>(Request::new(model, one(i)));
    block_on(f, PATIENCE).map(|r| r.output[0].to_vec::<i64>().unwrap()[0])
}

/// The high-water mark of a process's resident memory, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_command_writing_bytes_that_are_not_utf8_to_stderr_keeps_serving() {
    let server = Server::new();
    // Each batch writes a line of Latin-1 and 256 KiB more: four times what
    // a stderr pipe holds if nobody reads it.
    let noisy = echo(
        "sys.stderr.buffer.write(b'caf\\xe9 au lait\\n' + (b'x' * 1023 + b'\\n') * 256); sys.stderr.buffer.flush()",
    );
    server.add(ModelSpec::<CommandModel>::new("noisy").version(1, noisy)).unwrap();
    for i in 0..8 {
        assert_eq!(ask(&server, "noisy", i).unwrap(), i);
    }
    server.shutdown();
}

#[test]
fn a_command_writing_an_endless_line_to_stderr_keeps_its_worker_small() {
    let server = Server::new();
    // 64 MiB of stderr without a newline.
    let flood = echo("sys.stderr.buffer.write(b'y' * (64 << 20)); sys.stderr.buffer.flush()");
    server.add(ModelSpec::<CommandModel>::new("flood").version(1, flood)).unwrap();
    let pid = server.status().model("flood").unwrap().versions[0].workers[0].pid.unwrap();
    assert_eq!(ask(&server, "flood", 7).unwrap(), 7);
    assert_eq!(ask(&server, "flood", 8).unwrap(), 8);
    let peak = peak_rss_kib(pid);
    assert!(peak < 32 << 10, "the worker held {peak} KiB for the command's stderr");
    server.shutdown();
}

#[test]
fn a_command_printing_to_stdout_before_ready_fails_its_load_with_a_protocol_error() {
    let server = Server::new();
    let settings = ModelSettings { startup_timeout: PATIENCE, ..Default::default() };
    // A version string printed to stdout, then a good ready frame, then
    // waiting for batches (a command of its own: the reference worker's
    // serve sends what the model prints to stderr).
    let chatty = python(
        "print('0.5'); sys.stdout.flush()\nmw.write_frame(sys.stdout.buffer, {'type': 'ready'})\n\
         import time; time.sleep(3600)\ndef load(m, v): pass\ndef predict(m, b): pass\n",
    );
    let err = server.add(ModelSpec::<CommandModel>::new("chatty").version(1, chatty).settings(settings)).unwrap_err();
    assert!(err.to_string().contains("broke the protocol"), "{err}");
    server.shutdown();
}

#[test]
fn a_python_model_that_prints_to_stdout_keeps_serving() {
    let server = Server::new();
    // print() in load and predict, and a write to descriptor 1 as a native
    // library's printf does: none of it is a frame.
    let printing = python(
        "import os\n\
         def load(model, version):\n    print('loading', model); sys.stdout.flush()\n\
         def predict(model, batch):\n    print('batch of', len(batch), flush=True); os.write(1, b'from C\\n')\n    \
         return [list(inputs.values()) for inputs in batch]\n",
    );
    server.add(ModelSpec::<CommandModel>::new("printing").version(1, printing)).unwrap();
    for i in 0..3 {
        assert_eq!(ask(&server, "printing", i).unwrap(), i);
    }
    assert_eq!(server.status().model("printing").unwrap().versions[0].restarts, 0);
    server.shutdown();
}

#[test]
fn a_python_predict_that_raises_fails_its_batch_and_keeps_its_model() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, ..Default::default() };
    let raising = echo(
        "if any(t.values()[0] < 0 for inputs in batch for t in inputs.values()): raise ValueError('negative input')",
    );
    server.add(ModelSpec::<CommandModel>::new("raising").version(1, raising).settings(settings)).unwrap();
    let pid = server.status().model("raising").unwrap().versions[0].workers[0].pid.unwrap();
    let err = ask(&server, "raising", -1).unwrap_err();
    assert!(matches!(&err, ServeError::ModelFailed { message, .. } if message.contains("negative input")), "{err}");
    assert_eq!(ask(&server, "raising", 3).unwrap(), 3);
    let v = server.status().model("raising").unwrap().versions[0].clone();
    assert_eq!((v.restarts, v.workers[0].pid), (0, Some(pid)), "the command was restarted: {v:?}");
    server.shutdown();
}

#[test]
fn a_python_predict_returning_too_few_results_fails_its_batch_and_keeps_its_model() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, ..Default::default() };
    let short = python(
        "def load(model, version):\n    return None\n\
         def predict(model, batch):\n    return [] if list(batch[0].values())[0].values()[0] < 0 else [list(i.values()) for i in batch]\n",
    );
    server.add(ModelSpec::<CommandModel>::new("short").version(1, short).settings(settings)).unwrap();
    let err = ask(&server, "short", -1).unwrap_err();
    assert!(err.to_string().contains("0 results for a batch of 1"), "{err}");
    assert_eq!(ask(&server, "short", 3).unwrap(), 3);
    assert_eq!(server.status().model("short").unwrap().versions[0].restarts, 0);
    server.shutdown();
}

/// A command that speaks the protocol itself: it echoes, except that an
/// input of -1 gets a result with no response, -2 gets text on stdout and
/// -3 ends it with a traceback.
fn unruly() -> CommandConfig {
    python(
        "out = sys.stdout.buffer\n\
         mw.write_frame(out, {'type': 'ready'})\n\
         while True:\n    \
             frame = mw.read_frame(sys.stdin.buffer)\n    \
             if frame is None: break\n    \
             header, blob = frame\n    \
             x = mw._tensors(header['requests'][0]['inputs'], blob)['x'].values()[0]\n    \
             if x == -2:\n        out.write(b'oops, a print\\n'); out.flush(); continue\n    \
             if x == -3: 1 / 0\n    \
             refs = [] if x == -1 else [{'outputs': header['requests'][0]['inputs']}]\n    \
             mw.write_frame(out, {'type': 'result', 'id': header['id'], 'responses': refs}, blob)\n\
         def load(m, v): pass\n\
         def predict(m, b): pass\n",
    )
}

#[test]
fn a_command_breaking_the_protocol_fails_its_batch_with_the_reason_and_is_replaced() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, ..Default::default() };
    server.add(ModelSpec::<CommandModel>::new("unruly").version(1, unruly()).settings(settings)).unwrap();
    assert_eq!(ask(&server, "unruly", 5).unwrap(), 5);
    // A whole frame with the wrong number of responses: the batch fails, the command stays.
    let err = ask(&server, "unruly", -1).unwrap_err();
    assert!(
        matches!(&err, ServeError::ModelFailed { message, .. } if message.contains("0 responses for a batch of 1")),
        "{err}"
    );
    assert_eq!(ask(&server, "unruly", 6).unwrap(), 6);
    assert_eq!(server.status().model("unruly").unwrap().versions[0].restarts, 0);
    // Bytes that are not a frame: the stream is lost, the worker goes and says why.
    let err = ask(&server, "unruly", -2).unwrap_err();
    assert!(matches!(&err, ServeError::WorkerLost { .. }), "{err}");
    assert!(err.to_string().contains("frame of"), "the error does not say why: {err}");
    assert_eq!(ask(&server, "unruly", 7).unwrap(), 7);
    assert_eq!(server.status().model("unruly").unwrap().versions[0].restarts, 1);
    server.shutdown();
}

#[test]
fn a_command_that_reports_a_load_error_and_stays_alive_fails_its_load_with_that_error() {
    let server = Server::new();
    let settings = ModelSettings { startup_timeout: PATIENCE, ..Default::default() };
    // The error frame, then a thread that keeps the command running.
    let lingering = python(
        "import threading, time\n\
         threading.Thread(target=time.sleep, args=(3600,)).start()\n\
         def load(model, version):\n    raise RuntimeError('no GPU found')\n\
         def predict(model, batch):\n    return []\n",
    );
    let spec = ModelSpec::<CommandModel>::new("lingering").version(1, lingering).settings(settings);
    let err = server.add(spec).unwrap_err();
    assert!(err.to_string().contains("no GPU found"), "{err}");
    server.shutdown();
}

#[test]
fn a_command_that_dies_says_why_in_the_error() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, ..Default::default() };
    server.add(ModelSpec::<CommandModel>::new("unruly").version(1, unruly()).settings(settings.clone())).unwrap();
    // A traceback in the middle of a batch.
    let err = ask(&server, "unruly", -3).unwrap_err();
    assert!(matches!(&err, ServeError::WorkerLost { .. }), "{err}");
    assert!(err.to_string().contains("ZeroDivisionError"), "the error does not say why: {err}");
    assert_eq!(ask(&server, "unruly", 7).unwrap(), 7);
    // A traceback before ready.
    let missing = CommandConfig::new("python3").arg("-c").arg("import no_such_module_for_multiproc_tests");
    let settings = ModelSettings { startup_timeout: PATIENCE, ..settings };
    let err = server.add(ModelSpec::<CommandModel>::new("missing").version(1, missing).settings(settings)).unwrap_err();
    assert!(err.to_string().contains("ModuleNotFoundError"), "the error does not say why: {err}");
    server.shutdown();
}

#[test]
fn a_command_logging_without_pause_while_idle_still_serves() {
    let server = Server::new();
    // After loading, a thread writes stderr lines as fast as it can, for ever.
    let chatty = python(
        "import threading\n\
         def spam():\n    while True: sys.stderr.write('still here\\n')\n\
         def load(model, version):\n    threading.Thread(target=spam, daemon=True).start()\n\
         def predict(model, batch):\n    return [list(inputs.values()) for inputs in batch]\n",
    );
    server.add(ModelSpec::<CommandModel>::new("chatty").version(1, chatty)).unwrap();
    // Idle long enough for the supervisor to look at the worker's log.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..3 {
        assert_eq!(ask(&server, "chatty", i).unwrap(), i);
    }
    server.shutdown();
}

#[test]
fn a_python_predict_returning_something_else_than_tensors_fails_only_that_request() {
    let server = Server::new();
    let settings = ModelSettings { max_batch_size: 1, ..Default::default() };
    // For a negative input, predict answers None instead of a list of tensors.
    let sloppy = python(
        "def load(model, version):\n    return None\n\
         def predict(model, batch):\n    return [None if list(i.values())[0].values()[0] < 0 else list(i.values()) for i in batch]\n",
    );
    server.add(ModelSpec::<CommandModel>::new("sloppy").version(1, sloppy).settings(settings)).unwrap();
    let err = ask(&server, "sloppy", -1).unwrap_err();
    assert!(
        matches!(&err, ServeError::ModelFailed { message, .. } if message.contains("not a list of tensors")),
        "{err}"
    );
    assert_eq!(ask(&server, "sloppy", 3).unwrap(), 3);
    assert_eq!(server.status().model("sloppy").unwrap().versions[0].restarts, 0);
    server.shutdown();
}

#[test]
fn shutdown_with_a_batch_in_a_command_leaves_no_process() {
    let server = Server::new();
    let slow = echo("import time; time.sleep(0.5)");
    server.add(ModelSpec::<CommandModel>::new("slow").version(1, slow)).unwrap();
    let pid = server.status().model("slow").unwrap().versions[0].workers[0].pid.unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let command: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let running = server.infer_async::<Vec<Tensor>, Vec<Tensor>>(Request::new("slow", one(4)));
    assert!(common::wait_for(PATIENCE, || server.status().model("slow").unwrap().versions[0].in_flight == 1));
    server.shutdown();
    // The drain let the batch finish, then the worker and its command went.
    assert_eq!(block_on(running, PATIENCE).unwrap().output[0].to_vec::<i64>().unwrap(), [4]);
    let gone = |p: i32| std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| s.contains(") Z "));
    assert!(common::wait_for(PATIENCE, || gone(pid) && gone(command)), "a process outlived the server");
}

#[test]
fn a_command_that_closes_its_stdout_before_ready_and_lives_on_fails_its_load_at_once() {
    let server = Server::new();
    let startup_timeout = Duration::from_secs(10);
    let settings = ModelSettings { startup_timeout, ..Default::default() };
    // A wrapper that sends the model's output elsewhere: no ready frame ever comes.
    let elsewhere =
        CommandConfig::new("sh").arg("-c").arg("exec >/dev/null; echo 'writing to a file' >&2; exec sleep 3600");
    let started = std::time::Instant::now();
    let err = server.add(ModelSpec::<CommandModel>::new("elsewhere").version(1, elsewhere).settings(settings));
    let err = err.unwrap_err();
    assert!(started.elapsed() < startup_timeout / 2, "the load failed only after {:?}: {err}", started.elapsed());
    assert!(err.to_string().contains("closed its stdout before it was ready"), "{err}");
    assert!(err.to_string().contains("writing to a file"), "the error does not say why: {err}");
    server.shutdown();
}
