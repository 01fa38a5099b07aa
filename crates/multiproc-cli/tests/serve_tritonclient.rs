//! Triton's own Python HTTP client (`tritonclient[http]`) against
//! `multiproc serve`: metadata, inference with JSON and with binary tensors
//! (FP32 and BYTES), gzip and deflate request bodies, the model configuration,
//! statistics, classification, errors; and tensors passed through system
//! shared memory.
//!
//! The client is installed on first use into a virtual environment under
//! `target/py-venvs/tritonclient` (`python3 -m venv`, then `pip install
//! tritonclient[http] numpy` from PyPI); later runs reuse it.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::*;

/// The virtual environment with tritonclient, created if missing.
fn venv() -> PathBuf {
    python_venv("tritonclient", &["tritonclient[http]", "numpy"], "import tritonclient.http, numpy")
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
    for line in [
        "metadata ok",
        "digits json == binary bit for bit",
        "digits deflate request ok",
        "statistics ok",
        "classification ok",
        "text binary=True ok",
        "OK",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn tritons_python_client_passes_tensors_through_system_shared_memory() {
    let python = venv();
    let mut s = Served::start(&["--allow-client-shm"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/triton_shm.py");
    let hostport = s.base.trim_start_matches("http://").to_string();
    let out = run_with_limit(Command::new(python).arg(script).arg(&hostport), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tritonclient script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in ["registered ok", "shared memory == plain bit for bit", "OK"] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert_eq!(s.terminate().code(), Some(0));
}
