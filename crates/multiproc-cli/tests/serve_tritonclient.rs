//! Triton's own Python HTTP client (`tritonclient[http]`) against
//! `multiproc serve`: metadata, inference with JSON and with binary tensors
//! (FP32 and BYTES), errors.
//!
//! The client is installed on first use into a virtual environment under
//! `target/py-venvs/tritonclient` (`python3 -m venv`, then `pip install
//! tritonclient[http] numpy` from PyPI); later runs reuse it.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn run_with_limit(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} took more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The virtual environment with tritonclient, created if missing.
fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/py-venvs/tritonclient");
    let python = dir.join("bin/python");
    let ok = |p: &PathBuf| {
        Command::new(p).args(["-c", "import tritonclient.http, numpy"]).status().is_ok_and(|s| s.success())
    };
    if !ok(&python) {
        let out = run_with_limit(Command::new("python3").args(["-m", "venv"]).arg(&dir), Duration::from_secs(120));
        assert!(out.status.success(), "python3 -m venv failed: {}", String::from_utf8_lossy(&out.stderr));
        let out = run_with_limit(
            Command::new(dir.join("bin/pip")).args(["install", "-q", "tritonclient[http]", "numpy"]),
            Duration::from_secs(600),
        );
        assert!(out.status.success(), "pip install tritonclient failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(ok(&python), "tritonclient does not import after installing");
    }
    python
}

#[test]
fn tritons_python_client_infers_with_json_and_binary_tensors() {
    let python = venv();
    let test_set = TempDir::new("triton");
    let set_path = test_set.0.join("digits_test.json");
    std::fs::write(&set_path, multiproc_serve_http::demo::DIGITS_TEST_SET).unwrap();
    let mut s = Served::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/triton_client.py");
    let hostport = s.base.trim_start_matches("http://").to_string();
    let out = run_with_limit(Command::new(python).arg(script).arg(&hostport).arg(&set_path), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tritonclient script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in ["metadata ok", "digits json == binary bit for bit", "text binary=True ok", "OK"] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert_eq!(s.terminate().code(), Some(0));
}
