//! `multiproc serve` over HTTP: every endpoint, every datatype through JSON
//! and binary tensors, bad input, the repository extension.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::*;

/// Values of each datatype as JSON, and the same as little-endian bytes
/// (BYTES: 4-byte-length-prefixed).
fn sample(dt: &str) -> (Value, Vec<u8>) {
    fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|x| f(*x)).collect()
    }
    match dt {
        "BOOL" => (json!([true, false, true]), vec![1, 0, 1]),
        "UINT8" => (json!([0, 255, 7]), vec![0, 255, 7]),
        "UINT16" => (json!([0, 65535, 3]), le(&[0u16, 65535, 3], u16::to_le_bytes)),
        "UINT32" => (json!([0, 4294967295u32, 5]), le(&[0u32, u32::MAX, 5], u32::to_le_bytes)),
        "UINT64" => (json!([0, u64::MAX, 9]), le(&[0u64, u64::MAX, 9], u64::to_le_bytes)),
        "INT8" => (json!([-128, 127, 0]), le(&[-128i8, 127, 0], i8::to_le_bytes)),
        "INT16" => (json!([-32768, 32767, -1]), le(&[i16::MIN, i16::MAX, -1], i16::to_le_bytes)),
        "INT32" => (json!([i32::MIN, i32::MAX, -1]), le(&[i32::MIN, i32::MAX, -1], i32::to_le_bytes)),
        "INT64" => (json!([i64::MIN, i64::MAX, -1]), le(&[i64::MIN, i64::MAX, -1], i64::to_le_bytes)),
        "FP16" => {
            let v = [0.5f32, -2.0, 65504.0];
            (json!(v), v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect())
        }
        "FP32" => {
            let v = [0.1f32, -f32::MAX, f32::from_bits(1)];
            (json!(v), le(&v, f32::to_le_bytes))
        }
        "FP64" => {
            let v = [0.1f64, -f64::MAX, f64::from_bits(1)];
            (json!(v), le(&v, f64::to_le_bytes))
        }
        "BYTES" => {
            let v = ["", "héllo", "a\u{0}b"];
            (json!(v), v.iter().flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())).collect())
        }
        _ => unreachable!(),
    }
}

/// Splits a binary response into its JSON and each output's bytes.
fn split_binary(body: &[u8], header: Option<String>) -> (Value, Vec<(String, Vec<u8>)>) {
    let n: usize = header.expect("Inference-Header-Content-Length").parse().unwrap();
    let json: Value = serde_json::from_slice(&body[..n]).unwrap();
    let mut offset = n;
    let mut outs = Vec::new();
    for o in json["outputs"].as_array().unwrap() {
        let size = o["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
        outs.push((o["name"].as_str().unwrap().to_string(), body[offset..offset + size].to_vec()));
        offset += size;
    }
    assert_eq!(offset, body.len(), "binary sizes add up to the body");
    (json, outs)
}

#[test]
fn endpoints_answer_health_metadata_readiness_index_and_metrics() {
    let repo = TempDir::new("endpoints");
    test_repository(&repo.0);
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    assert_eq!(get_json(&s.url("/v2/health/live")).0, 200);
    assert_eq!(get_json(&s.url("/v2/health/ready")).0, 200);
    let (st, meta) = get_json(&s.url("/v2"));
    assert_eq!(st, 200);
    assert_eq!(meta["name"], "multiproc");
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")), "{meta}");
    let (st, m) = get_json(&s.url("/v2/models/digits"));
    assert_eq!(st, 200);
    assert_eq!(m["platform"], "onnxruntime_onnx");
    assert_eq!(m["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]));
    assert_eq!(m["outputs"], json!([{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]));
    assert_eq!(get_json(&s.url("/v2/models/digits/versions/1")).1["versions"], json!(["1"]));
    assert_eq!(
        get_json(&s.url("/v2/models/echo")).1["inputs"][12],
        json!({"name": "in_BYTES", "datatype": "BYTES", "shape": [-1]})
    );
    assert_eq!(get_json(&s.url("/v2/models/digits/ready")).0, 200);
    assert_eq!(get_json(&s.url("/v2/models/digits/versions/1/ready")).0, 200);
    let (st, e) = get_json(&s.url("/v2/models/nope"));
    assert_eq!((st, e["error"].as_str().unwrap().starts_with("unknown model 'nope'")), (404, true), "{e}");
    let (st, e) = get_json(&s.url("/v2/models/digits/versions/7"));
    assert_eq!(st, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("no version 7"), "{e}");
    assert_eq!(get_json(&s.url("/v2/models/digits/versions/x/ready")).0, 400);
    assert_eq!(get_json(&s.url("/v2/models/nope/ready")).0, 404);
    let (st, e) = get_json(&s.url("/v3/whatever"));
    assert_eq!(st, 404);
    assert!(e["error"].as_str().unwrap().contains("/v3/whatever"), "{e}");
    // The bad model is listed with its file, field and expectation; the others are ready.
    let (st, index) = post_json(&s.url("/v2/repository/index"), &json!({}));
    assert_eq!(st, 200);
    let rows = index.as_array().unwrap();
    let broken = rows.iter().find(|r| r["name"] == "broken").expect("broken listed");
    assert_eq!(broken["state"], "UNAVAILABLE");
    let reason = broken["reason"].as_str().unwrap();
    assert!(reason.contains("broken/config.toml") && reason.contains("max_batch_size"), "{reason}");
    for name in ["digits", "echo", "slow"] {
        assert!(rows.iter().any(|r| r["name"] == name && r["state"] == "READY" && r["version"] == "1"), "{index}");
    }
    let (_, ready_only) = post_json(&s.url("/v2/repository/index"), &json!({"ready": true}));
    assert!(ready_only.as_array().unwrap().iter().all(|r| r["state"] == "READY"));
    let (st, e) = get_json(&s.url("/v2/models/broken"));
    assert_eq!(st, 503);
    assert!(e["error"].as_str().unwrap().contains("max_batch_size"), "{e}");
    // A request, then the metrics count it under Triton's names.
    let x: Vec<f32> = vec![0.5; 128];
    let body = json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": x}]});
    assert_eq!(post_json(&s.url("/v2/models/digits/infer"), &body).0, 200);
    let (st, text, _) = call(agent().get(&s.url("/metrics")), None);
    assert_eq!(st, 200);
    let text = String::from_utf8(text).unwrap();
    for line in [
        "nv_inference_request_success{model=\"digits\",version=\"1\"} 1",
        "nv_inference_exec_count{model=\"digits\",version=\"1\"} 1",
        "nv_inference_pending_request_count{model=\"digits\",version=\"1\"} 0",
        "multiproc_inference_batch_size_count{model=\"digits\",version=\"1\"} 1",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    assert!(text.contains("nv_inference_queue_duration_us{model=\"digits\""), "{text}");
    assert!(text.contains("multiproc_worker_state{model=\"slow\",version=\"1\",state="), "{text}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn every_datatype_round_trips_through_json_and_binary_bit_for_bit() {
    let repo = TempDir::new("datatypes");
    test_repository(&repo.0);
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let url = s.url("/v2/models/echo/infer");
    let samples: Vec<(&str, Value, Vec<u8>)> = DATATYPES.iter().map(|dt| (*dt, sample(dt).0, sample(dt).1)).collect();

    // JSON in, JSON out.
    let inputs: Vec<Value> = samples
        .iter()
        .map(|(dt, v, _)| json!({"name": format!("in_{dt}"), "shape": [3], "datatype": dt, "data": v}))
        .collect();
    let (st, r) = post_json(&url, &json!({"id": "json-1", "inputs": inputs}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["id"], "json-1");
    assert_eq!(r["model_version"], "1");
    let json_outputs: Vec<Value> = r["outputs"].as_array().unwrap().clone();
    for (dt, v, _) in &samples {
        let o = json_outputs.iter().find(|o| o["name"] == format!("out_{dt}")).unwrap_or_else(|| panic!("no out_{dt}"));
        assert_eq!((&o["datatype"], &o["shape"]), (&json!(dt), &json!([3])));
        if dt.starts_with("FP") && *dt != "FP64" {
            // Written as the shortest decimal that reads back to the same f32/f16.
            let as_f32 = |d: &Value| {
                d.as_array().unwrap().iter().map(|x| (x.as_f64().unwrap() as f32).to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(as_f32(&o["data"]), as_f32(v), "{dt} through JSON");
        } else {
            assert_eq!(&o["data"], v, "{dt} through JSON");
        }
    }

    // Binary in, binary out: the very bytes come back.
    let mut header = json!({"id": "bin-1", "parameters": {"binary_data_output": true}, "inputs": []});
    let mut tail = Vec::new();
    for (dt, _, bytes) in &samples {
        header["inputs"].as_array_mut().unwrap().push(json!({
            "name": format!("in_{dt}"), "shape": [3], "datatype": dt, "parameters": {"binary_data_size": bytes.len()}
        }));
        tail.extend_from_slice(bytes);
    }
    let head = header.to_string();
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(&tail);
    let req = agent().post(&url).set("inference-header-content-length", &head.len().to_string());
    let (st, resp, h) = call(req, Some(&body));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&resp));
    let (json, outs) = split_binary(&resp, h);
    assert_eq!(json["id"], "bin-1");
    for (dt, _, bytes) in &samples {
        let (_, got) = outs.iter().find(|(n, _)| *n == format!("out_{dt}")).unwrap();
        assert_eq!(got, bytes, "{dt} through binary");
    }

    // JSON in, binary out, two outputs selected: the JSON path decodes to the same bits.
    let pick = json!([{"name": "out_FP64", "parameters": {"binary_data": true}}, {"name": "out_FP16", "parameters": {"binary_data": true}}]);
    let body = json!({"inputs": inputs, "outputs": pick}).to_string();
    let (st, resp, h) = call(agent().post(&url), Some(body.as_bytes()));
    assert_eq!(st, 200);
    let (json, outs) = split_binary(&resp, h);
    assert_eq!(json["outputs"].as_array().unwrap().len(), 2, "only the outputs asked for");
    assert_eq!(outs[0], ("out_FP64".to_string(), sample("FP64").1));
    assert_eq!(outs[1], ("out_FP16".to_string(), sample("FP16").1));

    // Nested data decodes as flat data does.
    let nested =
        json!({"inputs": [{"name": "in_INT16", "shape": [3], "datatype": "INT16", "data": [[-32768], [32767], [-1]]}]});
    let rest: Vec<Value> = inputs.iter().filter(|i| i["name"] != "in_INT16").cloned().collect();
    let mut all = nested["inputs"].as_array().unwrap().clone();
    all.extend(rest);
    let (st, r) = post_json(&url, &json!({"inputs": all, "outputs": [{"name": "out_INT16"}]}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["outputs"][0]["data"], json!([-32768, 32767, -1]));
    drop(s);
}

fn expect_error(status: u16, body: &Value, want_status: u16, want: &str) {
    let msg = body["error"].as_str().unwrap_or_else(|| panic!("no error message in {body}"));
    assert_eq!(status, want_status, "{msg}");
    assert!(msg.contains(want), "{msg:?} does not say {want:?}");
}

#[test]
fn each_bad_input_gets_its_status_and_message_and_the_server_keeps_serving() {
    let repo = TempDir::new("bad");
    test_repository(&repo.0);
    let s = Served::start(&["--model-repository", repo.0.to_str().unwrap(), "--max-body-bytes", "100000"]);
    let digits = s.url("/v2/models/digits/infer");
    let good = |data: Value| json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]});
    let raw = |url: &str, body: &[u8], hdr: Option<&str>| {
        let mut req = agent().post(url);
        if let Some(h) = hdr {
            req = req.set("inference-header-content-length", h);
        }
        let (st, b, _) = call(req, Some(body));
        (st, serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null))
    };
    let (st, b) = raw(&digits, b"{\"inputs\": [", None);
    expect_error(st, &b, 400, "malformed inference request JSON");
    let (st, b) = post_json(&s.url("/v2/models/nope/infer"), &good(json!(vec![0.0; 64])));
    expect_error(st, &b, 404, "unknown model 'nope'");
    let (st, b) = post_json(&s.url("/v2/models/digits/versions/9/infer"), &good(json!(vec![0.0; 64])));
    expect_error(st, &b, 404, "no version 9");
    let (st, b) = post_json(
        &digits,
        &json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
    );
    expect_error(st, &b, 400, "has shape [1, 3], expected [-1, 64]");
    let (st, b) = post_json(
        &digits,
        &json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP64", "data": vec![0.0; 64]}]}),
    );
    expect_error(st, &b, 400, "is FP64, expected FP32");
    let (st, b) = post_json(&digits, &good(json!([1, 2, 3])));
    expect_error(st, &b, 400, "needs 64 elements but 'data' has 3");
    let (st, b) = post_json(&digits, &good(json!(vec!["x"; 64])));
    expect_error(st, &b, 400, "element 0 is \"x\", expected a number for FP32");
    let (st, b) =
        post_json(&digits, &json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP33", "data": []}]}));
    expect_error(st, &b, 400, "unknown datatype");
    let (st, b) =
        post_json(&digits, &json!({"inputs": [{"name": "input", "shape": [1, -64], "datatype": "FP32", "data": []}]}));
    expect_error(st, &b, 400, "negative dimension");
    let (st, b) = post_json(
        &digits,
        &json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": vec![0.0; 64]}]}),
    );
    expect_error(st, &b, 400, "has no input 'pixels'");
    let mut with_output = good(json!(vec![0.0; 64]));
    with_output["outputs"] = json!([{"name": "logits"}]);
    let (st, b) = post_json(&digits, &with_output);
    expect_error(st, &b, 400, "has no output 'logits'");
    let (st, b) = post_json(
        &s.url("/v2/models/echo/infer"),
        &json!({"inputs": [{"name": "in_UINT8", "shape": [1], "datatype": "UINT8", "data": [300]}]}),
    );
    expect_error(st, &b, 400, "element 0 is 300, expected an integer in range for UINT8");
    // Binary: sizes that overrun the body, a header length past the body, leftovers.
    let head =
        r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":256}}]}"#;
    let mut body = head.as_bytes().to_vec();
    body.extend_from_slice(&[0u8; 100]);
    let (st, b) = raw(&digits, &body, Some(&head.len().to_string()));
    expect_error(st, &b, 400, "binary_data_size 256 overruns the body (100 bytes of binary data remain)");
    let (st, b) = raw(&digits, &body, Some("100000"));
    expect_error(st, &b, 400, "Inference-Header-Content-Length is 100000 but the body has only");
    body.extend_from_slice(&[0u8; 160]);
    let (st, b) = raw(&digits, &body, Some(&head.len().to_string()));
    expect_error(st, &b, 400, "4 bytes of binary data after the last binary input");
    let (st, b) = raw(&digits, &body, Some("many"));
    expect_error(st, &b, 400, "Inference-Header-Content-Length is \"many\"");
    let (st, b) = raw(&digits, head.as_bytes(), None);
    expect_error(st, &b, 400, "no Inference-Header-Content-Length header");
    // Over the body limit: refused from the announced length, before the body is sent.
    let mut conn = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n",
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request body of 200000 bytes is over the limit of 100000 bytes"), "{answer}");
    // A model whose configuration is bad.
    let (st, b) = post_json(&s.url("/v2/models/broken/infer"), &good(json!(vec![0.0; 64])));
    expect_error(st, &b, 503, "broken/config.toml");
    // Still serving, and the failures are counted.
    let (st, r) = post_json(&digits, &good(json!(vec![0.25; 64])));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["outputs"][0]["shape"], json!([1, 10]));
    let (_, text, _) = call(agent().get(&s.url("/metrics")), None);
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("nv_inference_request_failure{model=\"digits\",version=\"default\",reason=\"bad_request\"}"),
        "{text}"
    );
    assert!(text.contains("reason=\"too_large\"}"), "{text}");
}

#[test]
fn repository_load_unload_and_a_new_version_switch_without_failures() {
    let repo = TempDir::new("repo");
    let echo_dir = repo.0.join("echo");
    write(&echo_dir.join("config.toml"), echo_config_for(0.0, &["INT32"]).as_bytes());
    std::fs::create_dir_all(echo_dir.join("1")).unwrap();
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let infer_url = s.url("/v2/models/echo/infer");
    let request = json!({"inputs": [{"name": "in_INT32", "shape": [2], "datatype": "INT32", "data": [4, 5]}]});
    let (st, r) = post_json(&infer_url, &request);
    assert_eq!((st, r["model_version"].clone()), (200, json!("1")), "{r}");

    // Unload: listed as unavailable, requests refused with 503.
    assert_eq!(post_json(&s.url("/v2/repository/models/echo/unload"), &json!({})).0, 200);
    let (_, index) = post_json(&s.url("/v2/repository/index"), &json!({}));
    assert_eq!(index[0]["state"], "UNAVAILABLE", "{index}");
    let (st, b) = post_json(&infer_url, &request);
    assert_eq!(st, 503, "{b}");
    assert_eq!(get_json(&s.url("/v2/models/echo/ready")).0, 503);
    // Load again.
    assert_eq!(post_json(&s.url("/v2/repository/models/echo/load"), &json!({})).0, 200);
    assert_eq!(post_json(&infer_url, &request).0, 200);

    // Version 2 appears on disk; loading it switches traffic with no failed request.
    std::fs::create_dir_all(echo_dir.join("2")).unwrap();
    // Traffic runs before, during and after the switch; each answer is
    // noted with whether its request was sent after the load had returned.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let (stop, switched, answered) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, switched, answered) = (stop.clone(), switched.clone(), answered.clone());
        let (url, request) = (infer_url.clone(), request.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(SeqCst) {
                let after = switched.load(SeqCst);
                let (st, r) = post_json(&url, &request);
                assert_eq!(st, 200, "a request failed during the switch: {r}");
                assert_eq!(r["outputs"][0]["data"], json!([4, 5]));
                seen.push((r["model_version"].as_str().unwrap().to_string(), after));
                answered.fetch_add(1, SeqCst);
            }
            seen
        })
    };
    // Bounded waits for answers (the machine may be slow), not fixed sleeps.
    let answers_reach = |n: usize| {
        let t = std::time::Instant::now();
        while answered.load(SeqCst) < n && !load.is_finished() {
            assert!(t.elapsed() < std::time::Duration::from_secs(60), "{} answers in 60 s", answered.load(SeqCst));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    answers_reach(3);
    let (st, b) = post_json(&s.url("/v2/repository/models/echo/load"), &json!({}));
    assert_eq!(st, 200, "{b}");
    switched.store(true, SeqCst);
    let before_switch = answered.load(SeqCst);
    // At least 3 requests sent after the load returned have been answered.
    answers_reach(before_switch + 4);
    stop.store(true, SeqCst);
    let seen = load.join().unwrap();
    assert!(seen.iter().all(|(v, after)| !after || v == "2"), "a request sent after the load answered: {seen:?}");
    assert_eq!(seen.last().map(|(v, _)| v.as_str()), Some("2"), "traffic moved to version 2");
    let first_two = seen.iter().position(|(v, _)| v == "2").unwrap();
    assert!(seen[first_two..].iter().all(|(v, _)| v == "2"), "once switched, every answer is from version 2: {seen:?}");
    assert_eq!(get_json(&s.url("/v2/models/echo")).1["versions"], json!(["2"]));

    // Loading what is not there, or a bad configuration: precise errors.
    let (st, b) = post_json(&s.url("/v2/repository/models/ghost/load"), &json!({}));
    expect_error(st, &b, 404, "no model directory 'ghost'");
    write(
        &repo.0.join("bad/config.toml"),
        b"platform = \"onnx\"\n[[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = \"64\"\n",
    );
    let (st, b) = post_json(&s.url("/v2/repository/models/bad/load"), &json!({}));
    expect_error(st, &b, 400, "bad/config.toml");
    assert!(b["error"].as_str().unwrap().contains("dims"), "{b}");
    assert_eq!(s.terminate().code(), Some(0));
}
