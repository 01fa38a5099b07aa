//! `multiproc serve` against the letter of the Open Inference Protocol
//! (KServe v2 REST), Triton's binary tensor and repository extensions, and
//! what the standard clients (tritonclient, KServe's `InferenceRESTClient`,
//! curl) send and expect: each test here is a case the server once got
//! wrong.

mod support;

use serde_json::json;
use support::*;

/// A repository with `digits` (the demo ONNX model, batching) and
/// `echo_int8` (an echo of one variable-length INT8 input).
fn small_repository(dir: &std::path::Path) {
    let demo =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../multiproc-serve-http/demo/repository/digits");
    write(&dir.join("digits/config.toml"), &std::fs::read(demo.join("config.toml")).unwrap());
    write(&dir.join("digits/1/model.onnx"), &std::fs::read(demo.join("1/model.onnx")).unwrap());
    write(&dir.join("echo_int8/config.toml"), echo_config_for(0.0, &["INT8"]).as_bytes());
    std::fs::create_dir_all(dir.join("echo_int8/1")).unwrap();
}

#[test]
fn a_request_naming_its_model_in_the_body_is_accepted_as_kserve_s_client_sends_it() {
    let repo = TempDir::new("model-name");
    small_repository(&repo.0);
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    // KServe's InferRequest.to_rest() always writes "model_name"; Triton's
    // binary-data example request carries it too. The path names the model.
    let body = json!({
        "id": "k-1",
        "model_name": "echo_int8",
        "inputs": [{"name": "in_INT8", "shape": [2], "datatype": "INT8", "data": [3, -4]}],
    });
    let (st, r) = post_json(&s.url("/v2/models/echo_int8/infer"), &body);
    assert_eq!(st, 200, "{r}");
    assert_eq!((&r["id"], &r["outputs"][0]["data"]), (&json!("k-1"), &json!([3, -4])), "{r}");
    let mut versioned = body.clone();
    versioned["model_version"] = json!("1");
    let (st, r) = post_json(&s.url("/v2/models/echo_int8/versions/1/infer"), &versioned);
    assert_eq!(st, 200, "{r}");
    // Fields that are not the protocol's are still refused, with their name.
    let mut typo = body.clone();
    typo["output"] = json!([{"name": "out_INT8"}]);
    let (st, r) = post_json(&s.url("/v2/models/echo_int8/infer"), &typo);
    assert_eq!(st, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("unknown field `output`"), "{r}");
}
