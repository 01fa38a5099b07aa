//! KServe's own Python REST client (`kserve.InferenceRESTClient`, protocol
//! v2) against `multiproc serve`: health and readiness, inference with JSON
//! and with binary tensors (FP32 and BYTES), errors.
//!
//! The client is installed on first use into the virtual environment the
//! bench's KServe peer uses, `target/py-venvs/kserve` (`python3 -m venv`,
//! then `pip install kserve==0.21.*` from PyPI); later runs reuse it.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn kserves_python_client_infers_with_json_and_binary_tensors() {
    let python = python_venv("kserve", &["kserve==0.21.*"], "import kserve, numpy");
    let test_set = TempDir::new("kserve");
    let set_path = test_set.0.join("digits_test.json");
    std::fs::write(&set_path, multiproc_serve_http::demo::DIGITS_TEST_SET).unwrap();
    let mut s = Served::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/kserve_client.py");
    let out = run_with_limit(Command::new(python).arg(script).arg(&s.base).arg(&set_path), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kserve client script failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in ["health ok", "digits json == binary bit for bit", "text binary=True ok", "error surfaced", "OK"] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert_eq!(s.terminate().code(), Some(0));
}
