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
    echo_model(dir, "echo_int8", 0.0, &["INT8"]);
}

/// An echo model `name` in `repo` (one variable-length input and output
/// per datatype, `delay` seconds per batch), version 1.
fn echo_model(repo: &std::path::Path, name: &str, delay: f64, datatypes: &[&str]) {
    write(&repo.join(name).join("config.toml"), echo_config_for(delay, datatypes).as_bytes());
    std::fs::create_dir_all(repo.join(name).join("1")).unwrap();
}

/// `multiproc serve` on a [`small_repository`] with `args` more; the
/// repository lives as long as what is returned (the server drops first).
fn serve_small(tag: &str, args: &[&str]) -> (Served, TempDir) {
    let repo = TempDir::new(tag);
    small_repository(&repo.0);
    let mut all = vec!["--model-repository", repo.0.to_str().unwrap()];
    all.extend_from_slice(args);
    let served = Served::start(&all);
    (served, repo)
}

#[test]
fn a_request_naming_its_model_in_the_body_is_accepted_as_kserve_s_client_sends_it() {
    let (s, _repo) = serve_small("model-name", &[]);
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

/// GET `path`: status, `Content-Type` and the body as JSON (Null if it is not).
fn get_typed(url: &str) -> (u16, Option<String>, serde_json::Value) {
    let r = match agent().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let (status, kind) = (r.status(), r.header("content-type").map(str::to_string));
    let body = r.into_string().unwrap_or_default();
    (status, kind, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

#[test]
fn health_and_readiness_answer_with_the_json_objects_of_the_protocol() {
    let (s, _repo) = serve_small("health", &[]);
    // The OIP's $live_server_response, $ready_server_response and
    // $ready_model_response: KServe's client reads `live` and `ready` from
    // them (an empty body fails its JSON decoding); Triton's reads only the status.
    let json = Some("application/json".to_string());
    assert_eq!(get_typed(&s.url("/v2/health/live")), (200, json.clone(), json!({"live": true})));
    assert_eq!(get_typed(&s.url("/v2/health/ready")), (200, json.clone(), json!({"ready": true})));
    assert_eq!(
        get_typed(&s.url("/v2/models/digits/ready")),
        (200, json.clone(), json!({"name": "digits", "ready": true}))
    );
    assert_eq!(
        get_typed(&s.url("/v2/models/digits/versions/1/ready")),
        (200, json.clone(), json!({"name": "digits", "ready": true}))
    );
    // Not ready: 503 and the error object, as every other failure.
    assert_eq!(post_json(&s.url("/v2/repository/models/digits/unload"), &json!({})).0, 200);
    let (st, kind, body) = get_typed(&s.url("/v2/models/digits/ready"));
    assert_eq!((st, kind), (503, json.clone()));
    assert!(body["error"].as_str().unwrap().contains("'digits' is not ready"), "{body}");
}

#[test]
fn readiness_of_a_version_the_model_does_not_have_is_404_as_its_metadata_is() {
    let (s, _repo) = serve_small("ready-version", &[]);
    let (st, _, meta) = get_typed(&s.url("/v2/models/digits/versions/7"));
    assert_eq!(st, 404, "{meta}");
    let (st, _, ready) = get_typed(&s.url("/v2/models/digits/versions/7/ready"));
    assert_eq!(st, 404, "an unknown version is not a version that is loading: {ready}");
    assert!(ready["error"].as_str().unwrap().contains("has no version 7"), "{ready}");
}

/// POSTs raw bytes with these headers: status, body and
/// `Inference-Header-Content-Length`.
fn post_raw(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>, Option<String>) {
    let req = headers.iter().fold(agent().post(url), |r, (k, v)| r.set(k, v));
    call(req, Some(body))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, bytes).unwrap();
    e.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn a_gzip_or_deflate_request_body_is_decompressed_as_tritonclient_sends_it() {
    let (s, _repo) = serve_small("encoding", &["--max-body-bytes", "100000"]);
    let url = s.url("/v2/models/echo_int8/infer");
    // tritonclient's request_compression_algorithm="gzip" / "deflate" (zlib):
    // the whole body compressed, Inference-Header-Content-Length counting
    // the JSON before compression.
    let json = br#"{"id":"z","inputs":[{"name":"in_INT8","shape":[3],"datatype":"INT8","data":[1,-2,3]}]}"#;
    let (st, body, _) = post_raw(&url, &[("content-encoding", "gzip")], &gzip(json));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let r: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((&r["id"], &r["outputs"][0]["data"]), (&json!("z"), &json!([1, -2, 3])), "{r}");
    let head = r#"{"inputs":[{"name":"in_INT8","shape":[2],"datatype":"INT8","parameters":{"binary_data_size":2}}],"parameters":{"binary_data_output":true}}"#;
    let mut plain = head.as_bytes().to_vec();
    plain.extend_from_slice(&[7, 0xf9]);
    let length = head.len().to_string();
    let (st, body, h) =
        post_raw(&url, &[("content-encoding", "deflate"), ("inference-header-content-length", &length)], &zlib(&plain));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let n: usize = h.unwrap().parse().unwrap();
    assert_eq!(&body[n..], &[7, 0xf9]);
    // An encoding the server cannot read: 415, said plainly.
    let (st, body, _) = post_raw(&url, &[("content-encoding", "br")], json);
    assert_eq!(st, 415, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("Content-Encoding 'br'"), "{}", String::from_utf8_lossy(&body));
    // A body that inflates past the limit: 413 (a 1 MB run of zeros is ~1 kB gzipped).
    let (st, body, _) = post_raw(&url, &[("content-encoding", "gzip")], &gzip(&vec![b' '; 1 << 20]));
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&body));
    // A body that is not what it claims: 400.
    let (st, body, _) = post_raw(&url, &[("content-encoding", "gzip")], json);
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("gzip"), "{}", String::from_utf8_lossy(&body));
}

#[test]
fn a_load_asking_for_a_config_override_is_refused_not_silently_ignored() {
    let (s, _repo) = serve_small("load-config", &[]);
    let load = s.url("/v2/repository/models/echo_int8/load");
    // Triton's load takes {"parameters": {"config": "<JSON>", "file:<path>": …}}
    // (tritonclient's load_model(name, config=…, files=…)) and loads with
    // that configuration instead of the directory's; this server cannot, so
    // it must say so rather than answer 200 having loaded something else.
    let (st, b) = post_json(&load, &json!({"parameters": {"config": "{\"max_batch_size\": 8}"}}));
    assert_eq!(st, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("'config'"), "{b}");
    let (st, b) = post_json(&load, &json!({"parameters": {"file:1/model.onnx": "AAAA"}}));
    assert_eq!(st, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("'file:1/model.onnx'"), "{b}");
    let (st, body, _) = call(agent().post(&load), Some(b"{\"parameters\": "));
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    // An empty body, an empty object, and the parameters Triton's unload
    // takes, are fine.
    assert_eq!(call(agent().post(&load), Some(b"")).0, 200);
    assert_eq!(post_json(&load, &json!({})).0, 200);
    let unload = s.url("/v2/repository/models/echo_int8/unload");
    assert_eq!(post_json(&unload, &json!({"parameters": {"unload_dependents": true}})).0, 200);
}

#[test]
fn a_raw_binary_request_with_header_length_0_is_one_input_deduced_from_its_size() {
    let repo = TempDir::new("raw");
    small_repository(&repo.0);
    echo_model(&repo.0, "echo_two", 0.0, &["INT8", "INT16"]);
    echo_model(&repo.0, "echo_bytes", 0.0, &["BYTES"]);
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    // Triton's binary tensor extension, "Raw Binary Request": the body is
    // the one input's bytes alone, Inference-Header-Content-Length is 0, the
    // shape follows from the size (batch 1 for a batching model), and every
    // output comes back binary.
    let pixels: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    let raw: Vec<u8> = pixels.iter().flat_map(|p| p.to_le_bytes()).collect();
    let zero = [("inference-header-content-length", "0"), ("content-type", "application/octet-stream")];
    let (st, body, h) = post_raw(&s.url("/v2/models/digits/infer"), &zero, &raw);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let n: usize = h.expect("outputs are binary").parse().unwrap();
    let head: serde_json::Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!(head["outputs"][0]["shape"], json!([1, 10]), "{head}");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], json!(40), "{head}");
    // The same pixels through JSON give the same bits.
    let request = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": pixels}],
        "parameters": {"binary_data_output": true}});
    let (st, again, h) = post_raw(&s.url("/v2/models/digits/infer"), &[], request.to_string().as_bytes());
    assert_eq!(st, 200);
    assert_eq!(&again[h.unwrap().parse::<usize>().unwrap()..], &body[n..]);
    // A variable dimension takes the size: 5 INT8 bytes are shape [5].
    let (st, body, h) = post_raw(&s.url("/v2/models/echo_int8/infer"), &zero, &[1, 2, 3, 4, 0xff]);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let n: usize = h.unwrap().parse().unwrap();
    let head: serde_json::Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!((&head["outputs"][0]["shape"], &body[n..]), (&json!([5]), &[1u8, 2, 3, 4, 0xff][..]), "{head}");
    // A BYTES input is one element: the whole body.
    let (st, body, h) = post_raw(&s.url("/v2/models/echo_bytes/infer"), &zero, b"h\xc3\xa9llo");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let n: usize = h.unwrap().parse().unwrap();
    let head: serde_json::Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!((&head["outputs"][0]["shape"], &body[n..]), (&json!([1]), &b"\x06\0\0\0h\xc3\xa9llo"[..]), "{head}");
    // What cannot be deduced is a 400 that says why.
    let (st, body, _) = post_raw(&s.url("/v2/models/digits/infer"), &zero, &raw[..100]);
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&body).contains("100 bytes"), "{}", String::from_utf8_lossy(&body));
    let (st, body, _) = post_raw(&s.url("/v2/models/echo_two/infer"), &zero, &[1, 2]);
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&body).contains("one input"), "{}", String::from_utf8_lossy(&body));
}

#[test]
fn the_request_timeout_parameter_of_tritonclient_bounds_the_wait() {
    let repo = TempDir::new("timeout");
    // The one worker is busy for 4 s: a bound of 2 s on the wait tells a
    // request cut off at its timeout from one that waited for the worker,
    // with room for a loaded machine.
    echo_model(&repo.0, "slow", 4.0, &["INT8"]);
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let url = s.url("/v2/models/slow/infer");
    let body = |timeout_us: u64| {
        json!({"parameters": {"timeout": timeout_us},
            "inputs": [{"name": "in_INT8", "shape": [1], "datatype": "INT8", "data": [1]}]})
    };
    // tritonclient's infer(..., timeout=µs) sends {"parameters": {"timeout": µs}}:
    // the request is not to wait longer.
    let busy = {
        let (url, b) = (url.clone(), body(0));
        std::thread::spawn(move || post_json(&url, &b))
    };
    std::thread::sleep(std::time::Duration::from_millis(150));
    let t = std::time::Instant::now();
    let (st, r) = post_json(&url, &body(100_000));
    let waited = t.elapsed();
    assert_eq!(st, 504, "{r}");
    assert!(waited < std::time::Duration::from_secs(2), "a 100 ms timeout waited {waited:?}");
    assert_eq!(busy.join().unwrap().0, 200, "timeout 0 is no timeout");
    let mut bad = body(0);
    bad["parameters"]["timeout"] = json!("soon");
    let (st, r) = post_json(&url, &bad);
    assert_eq!(st, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("'timeout'"), "{r}");
}

#[test]
fn parameters_of_triton_extensions_not_offered_are_refused_not_silently_ignored() {
    let (s, _repo) = serve_small("extensions", &[]);
    let url = s.url("/v2/models/echo_int8/infer");
    let input = json!({"name": "in_INT8", "shape": [2], "datatype": "INT8", "data": [1, 2]});
    let (_, meta) = get_json(&s.url("/v2"));
    let offered = meta["extensions"].as_array().unwrap();
    // What tritonclient sends for Triton extensions GET /v2 does not list:
    // set_shared_memory on an input or output (system/CUDA shared memory),
    // infer(sequence_id=…) (sequence). Ignoring them answers something else
    // than asked.
    for (extension, body, names) in [
        (
            "system_shared_memory",
            json!({"inputs": [input], "outputs": [{"name": "out_INT8",
                "parameters": {"shared_memory_region": "out0", "shared_memory_byte_size": 2}}]}),
            "'shared_memory_region'",
        ),
        (
            "system_shared_memory",
            json!({"inputs": [{"name": "in_INT8", "shape": [2], "datatype": "INT8",
                "parameters": {"shared_memory_region": "in0", "shared_memory_byte_size": 2}}]}),
            "'shared_memory_region'",
        ),
        (
            "sequence",
            json!({"parameters": {"sequence_id": 42, "sequence_start": true, "sequence_end": false}, "inputs": [input]}),
            "'sequence_id'",
        ),
    ] {
        assert!(!offered.contains(&json!(extension)), "{meta}");
        let (st, r) = post_json(&url, &body);
        assert_eq!(st, 400, "{extension}: {r}");
        let message = r["error"].as_str().unwrap();
        assert!(message.contains(names) && message.contains("not supported"), "{extension}: {message}");
    }
    // Their neutral values, as tritonclient sends them by default, are fine.
    let body = json!({"parameters": {"sequence_id": 0, "priority": 0}, "inputs": [input],
        "outputs": [{"name": "out_INT8", "parameters": {"classification": 0, "binary_data": false}}]});
    let (st, r) = post_json(&url, &body);
    assert_eq!((st, &r["outputs"][0]["data"]), (200, &json!([1, 2])), "{r}");
}

#[test]
fn nan_and_infinity_in_json_data_are_read_as_tritonclient_writes_them() {
    let repo = TempDir::new("nan");
    echo_model(&repo.0, "echo_fp", 0.0, &["FP16", "FP32", "FP64"]);
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    // tritonclient writes its JSON with python-rapidjson, which spells
    // non-finite floats NaN, Infinity and -Infinity (and Triton reads them):
    // InferInput.set_data_from_numpy(np.array([nan, inf, -inf, 1]), binary_data=False).
    let body = r#"{"inputs":[
        {"name":"in_FP16","shape":[4],"datatype":"FP16","data":[NaN,Infinity,-Infinity,1.0]},
        {"name":"in_FP32","shape":[4],"datatype":"FP32","data":[NaN,Infinity,-Infinity,1.0]},
        {"name":"in_FP64","shape":[4],"datatype":"FP64","data":[[NaN,Infinity],[-Infinity,1.0]]}],
        "parameters":{"binary_data_output":true}}"#;
    let (st, out, h) = post_raw(&s.url("/v2/models/echo_fp/infer"), &[], body.as_bytes());
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&out));
    let n: usize = h.unwrap().parse().unwrap();
    let head: serde_json::Value = serde_json::from_slice(&out[..n]).unwrap();
    let mut at = n;
    for o in head["outputs"].as_array().unwrap() {
        let size = o["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        let bytes = &out[at..at + size];
        at += size;
        let values: Vec<f64> = match o["datatype"].as_str().unwrap() {
            "FP16" => bytes.chunks(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
            "FP32" => bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            _ => bytes.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        };
        assert!(values[0].is_nan(), "{o}: {values:?}");
        assert_eq!(&values[1..], &[f64::INFINITY, f64::NEG_INFINITY, 1.0], "{o}");
    }
    // Outside 'data', or misspelt, they are what they were: errors.
    let bad = r#"{"inputs":[{"name":"in_FP32","shape":[NaN],"datatype":"FP32","data":[1.0]}]}"#;
    let (st, out, _) = post_raw(&s.url("/v2/models/echo_fp/infer"), &[], bad.as_bytes());
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&out));
    let bad = r#"{"inputs":[{"name":"in_FP32","shape":[2],"datatype":"FP32","data":[1.0, Nan]}]}"#;
    let (st, out, _) = post_raw(&s.url("/v2/models/echo_fp/infer"), &[], bad.as_bytes());
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&out));
}

#[test]
fn a_path_that_cannot_be_decoded_is_answered_with_the_error_object_too() {
    let (s, _repo) = serve_small("bad-path", &[]);
    // %FF is no UTF-8: the path cannot name a model. Every failed request
    // carries the OIP's {"error": ...} (tritonclient decodes it as JSON).
    for (method, path) in [
        ("GET", "/v2/models/%FF"),
        ("GET", "/v2/models/%FF/ready"),
        ("GET", "/v2/models/%FF/versions/1"),
        ("POST", "/v2/models/%FF/infer"),
        ("POST", "/v2/models/%FF/versions/1/infer"),
        ("POST", "/v2/repository/models/%FF/load"),
        ("POST", "/v2/repository/models/%FF/unload"),
    ] {
        let (st, body, _) = call(agent().request(method, &s.url(path)), Some(b"{}"));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(st, 400, "{method} {path}: {text}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert!(v["error"].as_str().is_some_and(|e| e.contains("UTF-8")), "{method} {path}: {text}");
    }
}

#[test]
fn a_failed_reload_keeps_the_old_version_serving_over_http() {
    let (s, repo) = serve_small("failed-reload", &[]);
    let infer = s.url("/v2/models/echo_int8/infer");
    let load = s.url("/v2/repository/models/echo_int8/load");
    let request = json!({"inputs": [{"name": "in_INT8", "shape": [1], "datatype": "INT8", "data": [5]}]});
    let serving = |when: &str| {
        let (st, r) = post_json(&infer, &request);
        assert_eq!((st, &r["outputs"][0]["data"]), (200, &json!([5])), "{when}: {r}");
        assert_eq!(get_json(&s.url("/v2/models/echo_int8/ready")).0, 200, "{when}");
        let (_, index) = post_json(&s.url("/v2/repository/index"), &json!({}));
        let row = index.as_array().unwrap().iter().find(|r| r["name"] == "echo_int8").cloned();
        assert_eq!(row.map(|r| r["state"].clone()), Some(json!("READY")), "{when}: {index}");
    };
    // SPEC (Serving): "A failed load keeps the old version serving." A
    // configuration that does not parse...
    let config = repo.0.join("echo_int8/config.toml");
    let good = std::fs::read(&config).unwrap();
    write(&config, b"platform = \"command\"\nmax_batch_size = \"many\"\n");
    let (st, b) = post_json(&load, &json!({}));
    assert_eq!(st, 400, "{b}");
    serving("after a reload with a bad configuration");
    // ...and one that parses but whose version cannot start (other inputs,
    // a command that exits): requests are still checked against, and
    // served by, what was serving.
    let failing = String::from_utf8(good.clone()).unwrap().replace("in_INT8", "in_other");
    let failing = failing.lines().map(|l| if l.starts_with("command") { "command = [\"false\"]" } else { l });
    write(&config, (failing.collect::<Vec<_>>().join("\n") + "\n[timeouts]\nstartup_ms = 3000\n").as_bytes());
    let (st, b) = post_json(&load, &json!({}));
    assert!(st >= 400, "{st} {b}");
    serving("after a reload whose version did not start");
    // A good configuration loads again.
    write(&config, &good);
    assert_eq!(post_json(&load, &json!({})).0, 200);
    serving("after a good reload");
}

#[test]
fn an_empty_outputs_list_asks_for_every_output_as_triton_reads_it() {
    let (s, _repo) = serve_small("empty-outputs", &[]);
    // Triton reads "outputs": [] as no selection: every output, with the
    // request's binary_data_output default.
    let body =
        json!({"inputs": [{"name": "in_INT8", "shape": [2], "datatype": "INT8", "data": [1, 2]}], "outputs": []});
    let (st, r) = post_json(&s.url("/v2/models/echo_int8/infer"), &body);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["outputs"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["outputs"][0]["data"], json!([1, 2]), "{r}");
}

#[test]
fn failures_on_versions_the_model_does_not_have_add_no_metrics_series() {
    let (s, _repo) = serve_small("unknown-versions", &[]);
    // Bad bodies sent to versions that do not exist, as a scanner would.
    for v in 1000..1020 {
        let url = s.url(&format!("/v2/models/echo_int8/versions/{v}/infer"));
        let (status, _, _) = call(agent().post(&url), Some(b"not json"));
        assert!(matches!(status, 400 | 404), "version {v}: {status}");
    }
    let (status, _, _) = call(agent().post(&s.url("/v2/models/echo_int8/versions/1/infer")), Some(b"not json"));
    assert_eq!(status, 400);
    let (status, body, _) = call(agent().get(&s.url("/metrics")), None);
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let series: Vec<&str> = text.lines().filter(|l| l.contains("version=\"10")).collect();
    assert!(series.is_empty(), "series for versions the model does not have: {series:?}");
    assert!(
        text.lines()
            .any(|l| l == r#"nv_inference_request_failure{model="echo_int8",version="1",reason="bad_request"} 1"#),
        "the failure on version 1 is counted: {text}"
    );
}

#[test]
fn a_model_name_with_a_quote_or_backslash_is_escaped_in_the_metrics_labels() {
    let repo = TempDir::new("label-escape");
    echo_model(&repo.0, r#"say"hi\there"#, 0.0, &["INT8"]);
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let (status, body, _) = call(agent().get(&s.url("/metrics")), None);
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    // The exposition format escapes \ and " in label values; unescaped,
    // the line does not parse and Prometheus drops the whole scrape.
    let want = r#"nv_inference_request_success{model="say\"hi\\there",version="1"} 0"#;
    assert!(text.lines().any(|l| l == want), "no line {want} in {text}");
}

#[test]
fn a_version_policy_naming_no_version_on_disk_is_a_config_error_naming_the_field() {
    let repo = TempDir::new("policy-none");
    let config = echo_config_for(0.0, &["INT8"]) + "[version_policy]\nspecific = [3]\n";
    write(&repo.0.join("pinned/config.toml"), config.as_bytes());
    std::fs::create_dir_all(repo.0.join("pinned/1")).unwrap();
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let (status, index) = post_json(&s.url("/v2/repository/index"), &json!({}));
    assert_eq!(status, 200);
    let row = &index[0];
    assert_eq!(row["state"], "UNAVAILABLE", "{index}");
    let reason = row["reason"].as_str().unwrap_or("");
    assert!(reason.contains("config.toml") && reason.contains("version_policy.specific"), "{index}");
    let (status, body) = post_json(&s.url("/v2/repository/models/pinned/load"), &json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("version_policy.specific"), "{body}");
}

#[test]
fn inference_on_a_version_the_policy_does_not_serve_is_404_as_its_metadata_is() {
    let repo = TempDir::new("unserved-version");
    echo_model(&repo.0, "two", 0.0, &["INT8"]);
    std::fs::create_dir_all(repo.0.join("two/2")).unwrap();
    // The default policy, latest 1: version 2 serves, version 1 is on disk only.
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let request = json!({"inputs": [{"name": "in_INT8", "shape": [1], "datatype": "INT8", "data": [1]}]});
    let (status, body) = post_json(&s.url("/v2/models/two/versions/2/infer"), &request);
    assert_eq!(status, 200, "{body}");
    assert_eq!(get_json(&s.url("/v2/models/two/versions/1")).0, 404);
    let r = match agent().post(&s.url("/v2/models/two/versions/1/infer")).send_string(&request.to_string()) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let (status, retry) = (r.status(), r.header("retry-after").map(str::to_string));
    assert_eq!((status, retry), (404, None), "a client would retry a 503 with Retry-After for ever");
}
