//! `multiproc serve` with no repository serves the built-in demo: the digits
//! classifier's accuracy on its held-out images through the HTTP API, the
//! text model through the external-command path, `multiproc infer`,
//! and SIGTERM with requests in flight (answered, or, when the model
//! hangs, failed once the drain timeout has passed).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

#[test]
fn demo_classifier_accuracy_on_held_out_digits_through_http() {
    let test_set: Value = serde_json::from_str(multiproc_serve_http::demo::DIGITS_TEST_SET).unwrap();
    let inputs = test_set["inputs"].as_array().unwrap();
    let labels: Vec<u64> = test_set["labels"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap()).collect();
    let stated = test_set["accuracy"].as_f64().unwrap();
    assert_eq!(inputs.len(), 360);
    let mut s = Served::start(&["--metrics-port", "0"]);
    let url = s.url("/v2/models/digits/infer");
    let metrics_line = s.stdout.recv_timeout(Duration::from_secs(10)).expect("the metrics address line");
    let metrics_url = metrics_line.rsplit(' ').next().unwrap().to_string();
    assert!(metrics_url.starts_with("http://127.0.0.1:") && metrics_url.ends_with("/metrics"), "{metrics_line}");
    let mut correct = 0;
    // Half as JSON, 45 images per request; half as binary tensors.
    for (chunk_no, (rows, want)) in inputs.chunks(45).zip(labels.chunks(45)).enumerate() {
        let flat: Vec<f32> =
            rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
        let probs: Vec<f32> = if chunk_no % 2 == 0 {
            let body =
                json!({"inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": flat}]});
            let (st, r) = post_json(&url, &body);
            assert_eq!(st, 200, "{r}");
            r["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
        } else {
            let head = json!({"inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32",
                "parameters": {"binary_data_size": flat.len() * 4}}], "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]})
            .to_string();
            let mut body = head.clone().into_bytes();
            body.extend(flat.iter().flat_map(|v| v.to_le_bytes()));
            let (st, resp, h) =
                call(agent().post(&url).set("inference-header-content-length", &head.len().to_string()), Some(&body));
            assert_eq!(st, 200, "{}", String::from_utf8_lossy(&resp));
            let n: usize = h.unwrap().parse().unwrap();
            resp[n..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        };
        assert_eq!(probs.len(), rows.len() * 10);
        for (p, &label) in probs.chunks(10).zip(want) {
            let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
            correct += usize::from(best as u64 == label);
        }
    }
    let accuracy = correct as f64 / 360.0;
    println!("digits accuracy through HTTP: {accuracy:.4} ({correct}/360), stated {stated:.4}");
    assert!((accuracy - stated).abs() < 1.5 / 360.0, "accuracy {accuracy} differs from the stated {stated}");
    assert!(accuracy > 0.95);
    // The metrics port has the same series: 8 requests, 360 inferences.
    let (st, text, _) = call(agent().get(&metrics_url), None);
    let text = String::from_utf8(text).unwrap();
    assert_eq!(st, 200);
    assert!(text.contains("nv_inference_request_success{model=\"digits\",version=\"1\"} 8"), "{text}");
    assert!(text.contains("nv_inference_count{model=\"digits\",version=\"1\"} 360"), "{text}");
    assert_eq!(get_json(&metrics_url.replace("/metrics", "/v2")).0, 404, "only /metrics on the metrics port");

    // The text model and the `multiproc infer` client.
    let out = Command::new(EXE)
        .args(["infer", "text", r#"{"text": ["hello big world", "multiproc"]}"#, "--url", &s.base])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#"upper BYTES [2] ["HELLO BIG WORLD","MULTIPROC"]"#), "{stdout}");
    assert!(stdout.contains("words INT32 [2] [3,1]"), "{stdout}");
    let out = Command::new(EXE).args(["infer", "text", r#"{"txt": ["x"]}"#, "--url", &s.base]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no input 'txt' (inputs: text)"));
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn sigterm_with_requests_in_flight_loses_none_and_exits_zero() {
    stop_with_requests_in_flight("sigterm", Served::start, Served::terminate);
}

/// A terminal's Ctrl-C reaches the model workers too (they are in the
/// server's process group): they must keep working until the server has
/// drained.
#[test]
fn ctrl_c_to_the_whole_group_with_requests_in_flight_loses_none_and_exits_zero() {
    stop_with_requests_in_flight("ctrl-c", Served::start_in_own_group, Served::interrupt_group);
}

/// The value of `series{model="slow",version="1"}` in the `/metrics` text.
fn slow_series(text: &str, series: &str) -> u64 {
    let key = format!("{series}{{model=\"slow\",version=\"1\"}} ");
    let line = text.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("no {key}in\n{text}"));
    line[key.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// Starts a server with 8 requests of 1 s for 2 workers, stops it with
/// `stop` once all of them have reached it, and checks every request was
/// answered.
fn stop_with_requests_in_flight(
    tag: &str,
    start: impl FnOnce(&[&str]) -> Served,
    stop: impl FnOnce(&mut Served) -> std::process::ExitStatus,
) {
    let repo = TempDir::new(tag);
    write(
        &repo.0.join("slow/config.toml"),
        echo_config_for(1.0, &["INT64"]).replace("max_batch_size = 0", "max_batch_size = 0\ninstances = 2").as_bytes(),
    );
    std::fs::create_dir_all(repo.0.join("slow/1")).unwrap();
    let mut s = start(&["--model-repository", repo.0.to_str().unwrap()]);
    let url = s.url("/v2/models/slow/infer");
    let clients: Vec<_> = (0..8i64)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                post_json(&url, &json!({"id": i.to_string(), "inputs": [{"name": "in_INT64", "shape": [1], "datatype": "INT64", "data": [i]}]}))
            })
        })
        .collect();
    // 8 requests, 2 workers, 1 s each: about 4 s of work. Stop once every
    // request has reached the server (a fixed sleep could stop it before
    // a slow client thread has connected, and its request be refused).
    let waiting = std::time::Instant::now();
    let in_flight = loop {
        let (_, text, _) = call(agent().get(&s.url("/metrics")), None);
        let text = String::from_utf8(text).unwrap();
        let pending = slow_series(&text, "nv_inference_pending_request_count");
        if pending + slow_series(&text, "nv_inference_request_success") == 8 {
            break pending;
        }
        assert!(waiting.elapsed() < Duration::from_secs(60), "the 8 requests did not reach the server in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(in_flight > 0, "every request was answered before the stop: nothing was in flight");
    let status = stop(&mut s);
    for (i, c) in clients.into_iter().enumerate() {
        let (st, r) = c.join().unwrap();
        assert_eq!(st, 200, "request {i} lost at shutdown: {r}");
        assert_eq!(r["outputs"][0]["data"], json!([i]));
    }
    assert_eq!(status.code(), Some(0), "exit status after {tag}");
    // New connections are refused once it has stopped.
    assert!(agent().get(&s.url("/v2/health/live")).call().is_err());
}

/// How long the hung model's batch sleeps: distinctive, to find its
/// process, and far past the test.
const HUNG_SECONDS: &str = "3599.25";

/// True while a process runs the test model with [`HUNG_SECONDS`].
fn hung_model_running() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("echo.py") && c.contains(HUNG_SECONDS)
        })
    })
}

/// A model that hangs (no call timeout) holds SIGTERM up for about its
/// drain timeout, not forever: its request gets an error answer, and the
/// server exits, leaving no model process behind.
#[test]
fn sigterm_with_a_hung_request_exits_after_the_drain_timeout_and_answers_it() {
    const DRAIN: Duration = Duration::from_millis(500);
    // The listeners' wait and the core's drain (one drain timeout each),
    // then the hard stop: a few seconds are plenty on a loaded machine.
    const EXIT_WITHIN: Duration = Duration::from_secs(10);
    let repo = TempDir::new("hung");
    let config = echo_config_for(0.0, &["INT64"]).replace("\"0\"]", &format!("\"{HUNG_SECONDS}\"]"));
    assert!(config.contains(HUNG_SECONDS), "{config}");
    let config = format!("{config}[timeouts]\ndrain_ms = {}\n", DRAIN.as_millis());
    write(&repo.0.join("slow/config.toml"), config.as_bytes());
    std::fs::create_dir_all(repo.0.join("slow/1")).unwrap();
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let url = s.url("/v2/models/slow/infer");
    let (answer_tx, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let body = json!({"inputs": [{"name": "in_INT64", "shape": [1], "datatype": "INT64", "data": [7]}]});
        let _ = answer_tx.send(post_json(&url, &body));
    });
    let waiting = Instant::now();
    loop {
        let (_, text, _) = call(agent().get(&s.url("/metrics")), None);
        if slow_series(&String::from_utf8(text).unwrap(), "nv_inference_pending_request_count") == 1 {
            break;
        }
        assert!(waiting.elapsed() < Duration::from_secs(30), "the request did not reach the model in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(hung_model_running(), "the model's process is not running");

    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        // (Dropping `s` kills the server.)
        assert!(signalled.elapsed() < EXIT_WITHIN, "multiproc serve did not exit {EXIT_WITHIN:?} after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    assert!(took >= DRAIN, "it exited {took:?} after SIGTERM, before the drain timeout");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let (st, body) = answer.recv_timeout(Duration::from_secs(10)).expect("no answer to the hung request");
    assert!(st == 500 || st == 503, "the hung request: {st} {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("slow")), "the hung request: {st} {body}");
    eprintln!("exited {took:?} after SIGTERM; the hung request got {st} {body}");
    let gone = Instant::now();
    while hung_model_running() {
        assert!(gone.elapsed() < Duration::from_secs(10), "the hung model's process outlived the server");
        std::thread::sleep(Duration::from_millis(20));
    }
}
