//! `multiproc serve`'s Triton extensions: statistics, model configuration
//! and classification.
//! Statistics (Triton's `GET /v2/models[/{name}[/versions/{v}]]/stats`):
//! per model version, the requests answered and failed with their time, the
//! stages' time, the executions by batch size and the last inference's
//! time. Configuration (`GET /v2/models/{name}[/versions/{v}]/config`):
//! `config.toml` as Triton's `ModelConfig` JSON. Classification (an
//! output's parameter `classification`): its highest values, as strings.

mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::*;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A digits request of `rows` images.
fn digits(rows: usize) -> Value {
    json!({"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": vec![0.5f32; rows * 64]}]})
}

/// The statistics at `path` once `settled` holds for them (the counters
/// trail an answer by the rest of its batch's delivery), within 20 s.
fn stats_once(s: &Served, path: &str, settled: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get_json(&s.url(path));
        assert_eq!(status, 200, "{path}: {body}");
        if settled(&body) {
            return body;
        }
        assert!(Instant::now() < until, "{path} never settled: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A model `name` in `repo`: its config.toml and an empty version 1.
fn model(repo: &TempDir, name: &str, config: &str) {
    write(&repo.0.join(name).join("config.toml"), config.as_bytes());
    std::fs::create_dir_all(repo.0.join(name).join("1")).unwrap();
}

/// Whether `GET /v2` lists `extension`.
fn offers(s: &Served, extension: &str) -> bool {
    let (_, meta) = get_json(&s.url("/v2"));
    meta["extensions"].as_array().unwrap().contains(&json!(extension))
}

fn count(stat: &Value) -> u64 {
    stat["count"].as_u64().unwrap()
}

#[test]
fn statistics_count_requests_batches_and_failures_per_model_version() {
    let repo = TempDir::new("stats");
    digits_model(&repo.0);
    // One worker taking 400 ms per batch: a request with a 50 ms timeout fails.
    model(&repo, "slow", &echo_config_for(0.4, &["INT8"]));
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    assert!(offers(&s, "statistics"));

    // A served version that has not run yet: listed, all zero.
    let (status, fresh) = get_json(&s.url("/v2/models/digits/stats"));
    assert_eq!(status, 200, "{fresh}");
    let f = &fresh["model_stats"];
    assert_eq!(f.as_array().unwrap().len(), 1, "{fresh}");
    assert_eq!([&f[0]["name"], &f[0]["version"]], [&json!("digits"), &json!("1")]);
    assert_eq!(
        [&f[0]["last_inference"], &f[0]["execution_count"], &f[0]["batch_stats"]],
        [&json!(0), &json!(0), &json!([])]
    );
    assert_eq!(f[0]["inference_stats"]["success"], json!({"count": 0, "ns": 0}));

    // One at a time, so each is a batch of its own: three of 1 row, two of 2.
    let before = now_ms();
    for rows in [1, 2, 1, 2, 1] {
        let (status, body) = post_json(&s.url("/v2/models/digits/infer"), &digits(rows));
        assert_eq!(status, 200, "{body}");
    }
    let after = now_ms();
    let body =
        stats_once(&s, "/v2/models/digits/stats", |b| count(&b["model_stats"][0]["inference_stats"]["success"]) == 5);
    let m = &body["model_stats"][0];
    assert_eq!((m["inference_count"].as_u64(), m["execution_count"].as_u64()), (Some(7), Some(5)), "{m}");
    let last = m["last_inference"].as_u64().unwrap();
    assert!((before..=after).contains(&last), "last inference at {last} ms, requests between {before} and {after}");
    let stages = &m["inference_stats"];
    for stage in ["success", "queue", "compute_input", "compute_infer", "compute_output"] {
        assert_eq!(count(&stages[stage]), 5, "{stage}: {stages}");
    }
    let ns = |stage: &str| stages[stage]["ns"].as_u64().unwrap();
    assert!(ns("success") > 0 && ns("success") >= ns("queue") + ns("compute_infer"), "{stages}");
    for none in ["fail", "cache_hit", "cache_miss"] {
        assert_eq!(stages[none], json!({"count": 0, "ns": 0}), "{none}");
    }
    let by_size: Vec<[u64; 4]> = m["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let c = |stage: &str| count(&b[stage]);
            [b["batch_size"].as_u64().unwrap(), c("compute_input"), c("compute_infer"), c("compute_output")]
        })
        .collect();
    assert_eq!(by_size, [[1, 3, 3, 3], [2, 2, 2, 2]], "executions by batch size: {m}");
    // The version's own URL gives the same entry.
    let one = stats_once(&s, "/v2/models/digits/versions/1/stats", |_| true);
    assert_eq!(one["model_stats"], body["model_stats"]);

    // A request cut off by its 50 ms timeout: failed, for the 50 ms its
    // caller waited (not the 400 ms the model took to answer after).
    let slow = json!({"parameters": {"timeout": 50_000},
        "inputs": [{"name": "in_INT8", "shape": [1], "datatype": "INT8", "data": [1]}]});
    let (status, e) = post_json(&s.url("/v2/models/slow/infer"), &slow);
    assert_eq!(status, 504, "{e}");
    let body = stats_once(&s, "/v2/models/slow/stats", |b| count(&b["model_stats"][0]["inference_stats"]["fail"]) == 1);
    let failed = &body["model_stats"][0]["inference_stats"];
    assert_eq!(failed["fail"]["ns"], 50_000_000, "{failed}");
    assert_eq!(count(&failed["success"]), 0, "{failed}");

    // Every model at once; unknown names and versions are 404s.
    let all = stats_once(&s, "/v2/models/stats", |_| true);
    let names: Vec<&str> = all["model_stats"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["digits", "slow"], "{all}");
    for path in ["/v2/models/nope/stats", "/v2/models/digits/versions/9/stats"] {
        let (status, e) = get_json(&s.url(path));
        assert_eq!(status, 404, "{path}: {e}");
    }
    assert_eq!(get_json(&s.url("/v2/models/digits/versions/x/stats")).0, 400);
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn a_models_configuration_is_given_as_tritons_model_config() {
    let repo = TempDir::new("config");
    digits_model(&repo.0);
    let echo =
        echo_config_for(0.0, &["INT8", "BYTES"]).replace("max_batch_size = 0", "max_batch_size = 0\ninstances = 2");
    model(&repo, "echo", &format!("{echo}[version_policy]\nall = true\n"));
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    assert!(offers(&s, "model_configuration"));

    let (status, digits) = get_json(&s.url("/v2/models/digits/config"));
    assert_eq!(status, 200, "{digits}");
    for (field, value) in [
        ("name", json!("digits")),
        ("platform", json!("onnxruntime_onnx")),
        ("backend", json!("onnxruntime")),
        ("max_batch_size", json!(64)),
        ("version_policy", json!({"latest": {"num_versions": 1}})),
        ("default_model_filename", json!("model.onnx")),
        ("instance_group", json!([{"name": "digits_0", "kind": "KIND_CPU", "count": 1}])),
    ] {
        assert_eq!(digits[field], value, "{field}: {digits}");
    }
    // Dims without the batch dimension, as in config.toml and in Triton.
    assert_eq!(
        [&digits["input"][0]["name"], &digits["input"][0]["data_type"], &digits["input"][0]["dims"]],
        [&json!("input"), &json!("TYPE_FP32"), &json!([64])]
    );
    assert_eq!([&digits["output"][0]["data_type"], &digits["output"][0]["dims"]], [&json!("TYPE_FP32"), &json!([10])]);
    let batching = &digits["dynamic_batching"];
    assert_eq!(
        [&batching["max_queue_delay_microseconds"], &batching["default_queue_policy"]["max_queue_size"]],
        [&json!(0), &json!(4096)],
        "{digits}"
    );
    assert_eq!(digits["output"][0]["label_filename"], "", "no label file");
    assert_eq!(get_json(&s.url("/v2/models/digits/versions/1/config")).1, digits);

    let (status, echo) = get_json(&s.url("/v2/models/echo/config"));
    assert_eq!(status, 200, "{echo}");
    let types: Vec<&Value> = echo["input"].as_array().unwrap().iter().map(|t| &t["data_type"]).collect();
    assert_eq!(types, [&json!("TYPE_INT8"), &json!("TYPE_STRING")], "BYTES is Triton's TYPE_STRING: {echo}");
    assert_eq!(echo["input"][0]["dims"], json!([-1]));
    assert_eq!([&echo["max_batch_size"], &echo["version_policy"]], [&json!(0), &json!({"all": {}})]);
    assert_eq!(echo["instance_group"][0]["count"], 2);
    assert!(echo.get("dynamic_batching").is_none(), "no batching without a batch dimension: {echo}");

    for path in ["/v2/models/nope/config", "/v2/models/digits/versions/9/config"] {
        assert_eq!(get_json(&s.url(path)).0, 404, "{path}");
    }
    assert_eq!(s.terminate().code(), Some(0));
}

/// The strings of a BYTES output given as JSON.
fn strings(output: &Value) -> Vec<String> {
    output["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn an_output_asked_for_with_classification_gives_its_highest_values_as_strings() {
    let repo = TempDir::new("classify");
    digits_model(&repo.0);
    // Digits names its classes (a label file beside config.toml).
    let config = std::fs::read_to_string(repo.0.join("digits/config.toml")).unwrap();
    let labelled = config.replace("dims = [10]", "dims = [10]\nlabels = \"labels.txt\"");
    write(&repo.0.join("digits/config.toml"), labelled.as_bytes());
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    write(&repo.0.join("digits/labels.txt"), names.join("\n").as_bytes());
    model(&repo, "echo", &echo_config_for(0.0, &["INT8", "BYTES"]));
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    assert!(offers(&s, "classification"));

    // Three images: their top 3 classes against the raw probabilities.
    let pixels: Vec<f32> = (0..3 * 64).map(|i| ((i * 37) % 17) as f32 / 16.0).collect();
    let input = json!({"name": "input", "shape": [3, 64], "datatype": "FP32", "data": pixels});
    let url = s.url("/v2/models/digits/infer");
    let (status, raw) = post_json(&url, &json!({"inputs": [input]}));
    assert_eq!(status, 200, "{raw}");
    let probs: Vec<f32> =
        raw["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let (status, top) = post_json(
        &url,
        &json!({"inputs": [input], "outputs": [{"name": "probabilities", "parameters": {"classification": 3}}]}),
    );
    assert_eq!(status, 200, "{top}");
    let out = &top["outputs"][0];
    assert_eq!(
        [&out["name"], &out["datatype"], &out["shape"]],
        [&json!("probabilities"), &json!("BYTES"), &json!([3, 3])]
    );
    for (row, classes) in strings(out).chunks(3).enumerate() {
        let row_probs = &probs[row * 10..row * 10 + 10];
        let mut expected: Vec<usize> = (0..10).collect();
        expected.sort_by(|&a, &b| row_probs[b].total_cmp(&row_probs[a]));
        let got: Vec<(f32, usize, &str)> = classes
            .iter()
            .map(|c| {
                let [value, index, label] = c.split(':').collect::<Vec<_>>()[..] else { panic!("{c}") };
                (value.parse().unwrap(), index.parse().unwrap(), label)
            })
            .collect();
        let want: Vec<(f32, usize, &str)> = expected[..3].iter().map(|&i| (row_probs[i], i, names[i])).collect();
        assert_eq!(got, want, "row {row}: {classes:?}");
    }
    // As binary: the same strings, 4-byte-length-prefixed after the JSON.
    let (status, body, header) = call(
        agent().post(&url).set("Content-Type", "application/json"),
        Some(
            json!({"inputs": [input], "outputs": [{"name": "probabilities",
            "parameters": {"classification": 3, "binary_data": true}}]})
            .to_string()
            .as_bytes(),
        ),
    );
    assert_eq!(status, 200);
    let n: usize = header.expect("Inference-Header-Content-Length").parse().unwrap();
    let mut binary = Vec::new();
    for s in strings(out) {
        binary.extend_from_slice(&(s.len() as u32).to_le_bytes());
        binary.extend_from_slice(s.as_bytes());
    }
    assert_eq!(&body[n..], &binary[..]);

    // `multiproc infer --classification 2` on the first image: its top two
    // classes, printed (values aside: a batch of one may round differently).
    let first = json!({"input": pixels[..64]}).to_string();
    let run = run_with_limit(
        Command::new(EXE).args(["infer", "digits", &first, "--classification", "2", "--url", &s.base]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout} {}", String::from_utf8_lossy(&run.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("probabilities BYTES [1,2] ")).expect(&stdout);
    let printed: Vec<String> = serde_json::from_str(line).unwrap();
    let without_value = |c: &String| c.split_once(':').unwrap().1.to_string();
    let batched: Vec<String> = strings(out)[..2].iter().map(without_value).collect();
    assert_eq!(printed.iter().map(without_value).collect::<Vec<_>>(), batched, "{stdout}");

    let (_, config) = get_json(&s.url("/v2/models/digits/config"));
    assert_eq!(config["output"][0]["label_filename"], "labels.txt", "{config}");

    // No batch dimension: the whole output is one row, cut to its size.
    let echo = s.url("/v2/models/echo/infer");
    let int8 = json!({"name": "in_INT8", "shape": [3], "datatype": "INT8", "data": [-4, 9, 3]});
    let text = json!({"name": "in_BYTES", "shape": [1], "datatype": "BYTES", "data": ["a"]});
    let ask = |output: &str, classes: Value| {
        post_json(
            &echo,
            &json!({"inputs": [int8, text], "outputs": [{"name": output, "parameters": {"classification": classes}}]}),
        )
    };
    let (status, top) = ask("out_INT8", json!(5));
    assert_eq!((status, &top["outputs"][0]["shape"]), (200, &json!([3])), "{top}");
    assert_eq!(strings(&top["outputs"][0]), ["9:1", "3:2", "-4:0"]);
    let (status, e) = ask("out_BYTES", json!(1));
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("not numeric"), "{e}");
    let (status, e) = ask("out_INT8", json!("three"));
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("'classification'"), "{e}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn tensors_pass_through_client_shared_memory_regions_only_when_allowed() {
    let repo = TempDir::new("shm");
    model(&repo, "echo", &echo_config_for(0.0, &["INT8", "BYTES"]));
    let name = format!("multiproc-test-shm-{}", std::process::id());
    // Removed by its creator's drop, however the test ends.
    let shm = multiproc::SharedMemory::create(&name, 256).unwrap();
    let key = format!("/{name}");
    let text = json!({"name": "in_BYTES", "shape": [1], "datatype": "BYTES", "data": ["hi"]});
    let int8_at = |offset: u64, size: u64| {
        json!({"name": "in_INT8", "shape": [3], "datatype": "INT8", "parameters":
            {"shared_memory_region": "io", "shared_memory_byte_size": size, "shared_memory_offset": offset}})
    };

    // Off unless asked for: not listed, registration and use refused.
    let mut off = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    assert!(!offers(&off, "system_shared_memory"));
    let (status, e) = post_json(
        &off.url("/v2/systemsharedmemory/region/io/register"),
        &json!({"key": key, "offset": 0, "byte_size": 8}),
    );
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("--allow-client-shm"), "{e}");
    let (status, e) = post_json(&off.url("/v2/models/echo/infer"), &json!({"inputs": [int8_at(0, 3), text]}));
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("not supported"), "{e}");
    assert_eq!(off.terminate().code(), Some(0));

    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap(), "--allow-client-shm"]);
    assert!(offers(&s, "system_shared_memory"));
    let register = |region: &str, body: Value| {
        post_json(&s.url(&format!("/v2/systemsharedmemory/region/{region}/register")), &body)
    };
    // The region is bytes 8..208 of the object; offsets in requests count from its start.
    assert_eq!(register("io", json!({"key": key, "offset": 8, "byte_size": 200})).0, 200);
    let refused = [
        ("io", json!({"key": key, "offset": 0, "byte_size": 8}), "already registered"),
        ("big", json!({"key": key, "offset": 100, "byte_size": 200}), "outside"),
        ("gone", json!({"key": "/multiproc-test-shm-none", "byte_size": 8}), "cannot open"),
        ("nosize", json!({"key": key}), "'byte_size'"),
    ];
    for (region, body, says) in refused {
        let (status, e) = register(region, body);
        assert_eq!(status, 400, "{region}: {e}");
        assert!(e["error"].as_str().unwrap().contains(says), "{region}: {e}");
    }
    let (status, listed) = get_json(&s.url("/v2/systemsharedmemory/status"));
    assert_eq!((status, listed), (200, json!([{"name": "io", "key": key, "offset": 8, "byte_size": 200}])));

    // INT8 input at region bytes 8..11 (object 16..19); its output to region 56.. (object 64..).
    shm.write_at(16, &[5, 0xff, 7]).unwrap();
    let url = s.url("/v2/models/echo/infer");
    let out_at = |size: u64| {
        json!({"name": "out_INT8", "parameters":
        {"shared_memory_region": "io", "shared_memory_byte_size": size, "shared_memory_offset": 56}})
    };
    let (status, r) =
        post_json(&url, &json!({"inputs": [int8_at(8, 3), text], "outputs": [out_at(16), {"name": "out_BYTES"}]}));
    assert_eq!(status, 200, "{r}");
    let params = json!({"shared_memory_region": "io", "shared_memory_byte_size": 3, "shared_memory_offset": 56});
    assert_eq!((&r["outputs"][0]["parameters"], r["outputs"][0].get("data")), (&params, None), "{r}");
    assert_eq!(r["outputs"][1]["data"], json!(["hi"]), "the other output as usual");
    let mut written = [0u8; 3];
    shm.read_at(64, &mut written).unwrap();
    assert_eq!(written, [5, 0xff, 7]);

    let bad = [
        (json!({"inputs": [int8_at(8, 3), text], "outputs": [out_at(2)]}), "more than the 2"),
        (json!({"inputs": [int8_at(199, 3), text]}), "outside shared memory region 'io'"),
        (json!({"inputs": [int8_at(8, 2), text]}), "in_INT8"),
        (
            json!({"inputs": [{"name": "in_INT8", "shape": [3], "datatype": "INT8",
                "parameters": {"shared_memory_region": "io"}}, text]}),
            "go together",
        ),
    ];
    for (body, says) in bad {
        let (status, e) = post_json(&url, &body);
        assert_eq!(status, 400, "{body}: {e}");
        assert!(e["error"].as_str().unwrap().contains(says), "{says}: {e}");
    }
    let unregister = s.url("/v2/systemsharedmemory/region/io/unregister");
    assert_eq!(call(agent().post(&unregister), Some(b"")).0, 200);
    assert_eq!(get_json(&s.url("/v2/systemsharedmemory/region/io/status")).0, 400);
    let (status, e) = post_json(&url, &json!({"inputs": [int8_at(8, 3), text]}));
    assert_eq!(status, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("no shared memory region 'io'"), "{e}");
    assert_eq!(call(agent().post(&s.url("/v2/systemsharedmemory/unregister")), Some(b"")).0, 200);
    assert_eq!(get_json(&s.url("/v2/systemsharedmemory/status")).1, json!([]));
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn shared_memory_inputs_count_against_the_body_limit() {
    let repo = TempDir::new("shm-limit");
    model(&repo, "echo", &echo_config_for(0.0, &["INT8"]));
    let name = format!("multiproc-test-shm-limit-{}", std::process::id());
    // Removed by its creator's drop, however the test ends.
    let shm = multiproc::SharedMemory::create(&name, 8192).unwrap();
    shm.write_at(0, &[3; 8192]).unwrap();
    let limit = 2048;
    let mut s = Served::start(&[
        "--model-repository",
        repo.0.to_str().unwrap(),
        "--allow-client-shm",
        "--max-body-bytes",
        &limit.to_string(),
    ]);
    let register = s.url("/v2/systemsharedmemory/region/all/register");
    assert_eq!(post_json(&register, &json!({"key": format!("/{name}"), "byte_size": 8192})).0, 200);
    let request = |bytes: usize| {
        json!({"inputs": [{"name": "in_INT8", "shape": [bytes], "datatype": "INT8", "parameters":
            {"shared_memory_region": "all", "shared_memory_byte_size": bytes}}],
            "outputs": [{"name": "out_INT8", "parameters": {"binary_data": false}}]})
    };
    let url = s.url("/v2/models/echo/infer");
    // A body of under 300 bytes and 1,000 from the region: within 2,048.
    let (status, r) = post_json(&url, &request(1000));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["outputs"][0]["data"].as_array().unwrap().len(), 1000, "{r}");
    // 8,000 from the region: refused before it is read, naming the limit.
    let (status, e) = post_json(&url, &request(8000));
    assert_eq!(status, 400, "{e}");
    let says = e["error"].as_str().unwrap();
    assert!(says.contains("region 'all'") && says.contains("2048") && says.contains("--max-body-bytes"), "{e}");
    // The server goes on serving.
    assert_eq!(post_json(&url, &request(10)).0, 200);
    assert_eq!(s.terminate().code(), Some(0));
}
