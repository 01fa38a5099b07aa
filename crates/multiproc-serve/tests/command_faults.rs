//! External commands that misbehave: binary or endless stderr, garbage on
//! stdout, a model whose `predict` raises or answers the wrong number of
//! results. Each is a clear error (or no error at all), memory stays
//! bounded, and the server keeps serving.

mod common;

use std::path::PathBuf;

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
    // A version string printed to stdout, then a good ready frame, then waiting for batches.
    let chatty = python(
        "def load(model, version):\n    print('0.5'); sys.stdout.flush()\n\ndef predict(model, batch):\n    return []\n",
    );
    let err = server.add(ModelSpec::<CommandModel>::new("chatty").version(1, chatty).settings(settings)).unwrap_err();
    assert!(err.to_string().contains("broke the protocol"), "{err}");
    server.shutdown();
}
