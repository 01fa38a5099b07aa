//! The request body budget (`HttpOptions::body_budget`, `multiproc serve
//! --body-budget-bytes`) bounds the bytes of request bodies the server
//! holds, whatever the number of requests: with a budget of 1 MiB and one
//! request of 600 KiB held by a model that does not answer yet, a second
//! one is refused with 503 (before its body is read when its announced
//! size is over what is free, as soon as it crosses the budget when it is
//! chunked) and the answer names the budget; once the first is answered,
//! the same request is served. A client that goes away mid-body gives its
//! bytes back. A body counts as it arrives, not as announced (a client
//! announcing a body and sending none holds nothing); a request holds what
//! the server keeps of it until its answer (its `id`), and its inputs
//! until the core drops it, which it does soon after its client was
//! answered 504 even while the model is busy. Decoded inputs are held
//! before they are made: a JSON request whose tensor would take much more
//! than its text is refused before it is decoded when the budget cannot
//! hold both. `/metrics` shows the bytes held and the refusals.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use multiproc_serve_http::app::HttpOptions;
use support::{Answer, Body, call, metric, wait_for};

/// How long anything may take at most (a request, the load, the stop).
const PATIENCE: Duration = Duration::from_secs(60);
/// The server's request body budget.
const BUDGET: usize = 1 << 20;
/// A request body: one fits the budget, two do not.
const LARGE: usize = 600 << 10;
/// The gauge of the bytes held.
const HELD: &str = "multiproc_http_body_held_bytes";
/// The count of refusals.
const REFUSED: &str = "multiproc_http_body_budget_refused";
/// The requests of `hold` queued or running.
const PENDING: &str = "nv_inference_pending_request_count{model=\"hold\",version=\"1\"}";

/// A repository in a temporary directory holding `hold`
/// (`tests/support/hold.py`: a call waits until the release file exists),
/// removed on drop, after the model is released.
struct Repository {
    dir: PathBuf,
}

impl Repository {
    /// A repository of its own for the test `case`, with `hold`.
    fn new(case: &str) -> Repository {
        let repository = Repository { dir: multiproc_test_support::marker_dir("body-budget", case) };
        repository.add("hold", "UINT8");
        repository
    }

    /// Adds a model `name` like `hold`, its input `x` of `datatype`.
    fn add(&self, name: &str, datatype: &str) {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = format!(
            "platform = \"command\"\ncommand = [\"python3\", {:?}, {:?}, {:?}]\nmax_batch_size = 0\n\
             [[input]]\nname = \"x\"\ndatatype = \"{datatype}\"\ndims = [-1]\n\
             [[output]]\nname = \"y\"\ndatatype = \"UINT8\"\ndims = [1]\n",
            here.join("tests/support/hold.py").display().to_string(),
            self.release_file().display().to_string(),
            here.join("../multiproc-serve/python").display().to_string(),
        );
        let model = self.models().join(name);
        std::fs::create_dir_all(model.join("1")).expect("create the repository");
        std::fs::write(model.join("config.toml"), config).expect("write the config");
    }

    fn models(&self) -> PathBuf {
        self.dir.join("models")
    }

    fn release_file(&self) -> PathBuf {
        self.dir.join("release")
    }

    /// Lets the model answer the calls it holds, and every later one at once.
    fn release(&self) {
        std::fs::write(self.release_file(), b"go").expect("write the release file");
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        // No panic here: it may run while a failed test unwinds.
        let _ = std::fs::write(self.release_file(), b"go");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The headers of a raw binary inference request (the body is the input).
const RAW: &[(&str, &str)] = &[("Inference-Header-Content-Length", "0"), ("Content-Type", "application/octet-stream")];
const INFER: &str = "/v2/models/hold/infer";

/// The head of a raw binary inference request, its body announced by
/// `framing` (`Content-Length: n` or `Transfer-Encoding: chunked`).
fn raw_head(framing: &str) -> String {
    format!(
        "POST {INFER} HTTP/1.1\r\nHost: t\r\nInference-Header-Content-Length: 0\r\n\
         Content-Type: application/octet-stream\r\n{framing}\r\n\r\n"
    )
}

/// A connection to `base` (`http://address`) that sends `bytes` and
/// waits at most [`PATIENCE`] for anything.
fn connect_and_send(base: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).expect("send");
    stream
}

/// Reads one answer from `stream` (head and `Content-Length` body) as text.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => panic!("the connection closed before the answer was whole: {text:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no whole answer within {PATIENCE:?} ({e}): {text:?}"),
        }
    }
}

/// Asserts that `answer` is the budget's 503.
fn assert_refused_for_the_budget(what: &str, status: u16, retry_after: Option<&str>, body: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(retry_after, Some("1"), "{what}: a 503 for the budget says when to retry: {body}");
    assert!(
        body.starts_with("{\"error\":") && body.contains(&format!("request body budget of {BUDGET} bytes")),
        "{what}: the answer does not name the budget: {body}"
    );
}

/// Serves `repository` with a body budget of [`BUDGET`]; returns once its
/// model is loaded.
fn serve(repository: &Repository) -> support::InProcess {
    let http = HttpOptions { body_budget: BUDGET, ..HttpOptions::default() };
    let server = support::InProcess::start_with(repository.models(), http);
    server.started.recv_timeout(PATIENCE).expect("start did not return");
    server
}

/// A request sent from a thread of its own (the model may hold it): its
/// answer comes through the receiver.
struct InFlight {
    answer: mpsc::Receiver<Result<Answer, String>>,
    thread: std::thread::JoinHandle<()>,
}

impl InFlight {
    /// POSTs `body` to [`INFER`] on `base` with `headers`, announced.
    fn send(base: &str, headers: &[(&str, &str)], body: Vec<u8>) -> InFlight {
        let (tx, answer) = mpsc::channel();
        let (base, headers) = (base.to_string(), headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let headers: Vec<(String, String)> = headers.collect();
        let thread = std::thread::spawn(move || {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let _ = tx.send(call(&base, "POST", INFER, &headers, Body::Sized(&body)));
        });
        InFlight { answer, thread }
    }

    /// Its answer, within [`PATIENCE`]; `what` names it in failures.
    fn answer(self, what: &str) -> Answer {
        let answer = self.answer.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("{what}: no answer in time"));
        self.thread.join().unwrap();
        answer.unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
    }
}

#[test]
fn bodies_over_the_budget_are_refused_until_the_held_ones_are_answered() {
    let repository = Repository::new("overload");
    let server = serve(&repository);
    let base = server.base.clone();
    let large = vec![7u8; LARGE];

    // The first request is held by the model, its bytes by the budget.
    let first = InFlight::send(&base, RAW, large.clone());
    wait_for(PATIENCE, "the first request to be held", || metric(&base, HELD) == LARGE as f64);

    // A second is refused: announced, before any of its body is sent.
    let mut stream = connect_and_send(&base, raw_head(&format!("Content-Length: {LARGE}")).as_bytes());
    let answer = read_answer(&mut stream);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let retry_after = head.lines().find_map(|l| l.strip_prefix("retry-after: ").or(l.strip_prefix("Retry-After: ")));
    assert!(head.starts_with("HTTP/1.1 503"), "announced, before its body: {answer}");
    assert_refused_for_the_budget("announced, before its body", 503, retry_after, body);
    drop(stream);
    // Sent whole by a client that reads the answer only then, announced or
    // chunked: it gets the answer (its body is thrown away, not held).
    for (what, body) in [("announced", Body::Sized(&large)), ("chunked", Body::Chunked(&large))] {
        let answer = call(&base, "POST", INFER, RAW, body).unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_refused_for_the_budget(what, answer.status, answer.retry_after.as_deref(), &answer.body);
    }
    assert_eq!(metric(&base, REFUSED), 3.0);
    assert_eq!(metric(&base, HELD), LARGE as f64, "a refused request holds nothing");
    assert!(first.answer.try_recv().is_err(), "the first request was answered before it was released");

    // Once the first is answered, its bytes are given back: the same
    // requests are served.
    repository.release();
    let answer = first.answer("the first request");
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for(PATIENCE, "the first request's bytes to be given back", || metric(&base, HELD) == 0.0);
    for (what, body) in [("announced", Body::Sized(&large)), ("chunked", Body::Chunked(&large))] {
        let answer = call(&base, "POST", INFER, RAW, body).unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!(answer.status, 200, "{what}, once the budget was given back: {}", answer.body);
    }
    assert_eq!(metric(&base, HELD), 0.0);

    // A client that goes away mid-body gives its bytes back, announced or
    // chunked: held as they arrive (by the buffer they are gathered in,
    // which doubles as it fills; an announced body's, to its announced size
    // at most).
    let half = LARGE / 2;
    let mut request = raw_head(&format!("Content-Length: {LARGE}")).into_bytes();
    request.extend_from_slice(&large[..half]);
    let stream = connect_and_send(&base, &request);
    let held = |most: usize| {
        let base = &base;
        move || (half as f64..=most as f64).contains(&metric(base, HELD))
    };
    wait_for(PATIENCE, "the announced body's half to be held", held(LARGE));
    drop(stream);
    wait_for(PATIENCE, "the announced body's bytes to be given back", || metric(&base, HELD) == 0.0);
    let mut request = raw_head("Transfer-Encoding: chunked").into_bytes();
    request.extend_from_slice(format!("{LARGE:x}\r\n").as_bytes());
    request.extend_from_slice(&large[..half]);
    let stream = connect_and_send(&base, &request);
    wait_for(PATIENCE, "the chunked body's half to be held", held(2 * half));
    drop(stream);
    wait_for(PATIENCE, "the chunked body's bytes to be given back", || metric(&base, HELD) == 0.0);
    assert_eq!(metric(&base, REFUSED), 3.0, "nothing was refused since");

    server.stop(PATIENCE);
}

#[test]
fn a_request_holds_its_id_until_it_is_answered() {
    let repository = Repository::new("id");
    let server = serve(&repository);
    let base = server.base.clone();
    // A large id, a one-byte input: the id is echoed in the answer, so it
    // is held as long as the input is.
    const ID: usize = 300 << 10;
    let id = "i".repeat(ID);
    let body = format!(r#"{{"id":"{id}","inputs":[{{"name":"x","shape":[1],"datatype":"UINT8","data":[7]}}]}}"#);
    let request = InFlight::send(&base, &[("Content-Type", "application/json")], body.into_bytes());
    wait_for(PATIENCE, "the request to be queued", || metric(&base, PENDING) == 1.0);
    assert_eq!(metric(&base, HELD), (ID + 1) as f64, "held while it waits: its id and its input's byte");
    repository.release();
    let answer = request.answer("the request");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains(&id), "the id is echoed");
    wait_for(PATIENCE, "the bytes to be given back", || metric(&base, HELD) == 0.0);
    server.stop(PATIENCE);
}

#[test]
fn a_request_that_timed_out_gives_its_input_back_soon_though_the_model_is_busy() {
    let repository = Repository::new("timeout");
    let server = serve(&repository);
    let base = server.base.clone();
    // The model holds a one-byte request; behind it, one of 300 KiB that
    // may wait 1 µs is answered 504. Its input, queued, is dropped from the
    // queue (and given back) within about 200 ms, though no batch leaves.
    let first = InFlight::send(&base, RAW, vec![7]);
    wait_for(PATIENCE, "the first request to be queued", || metric(&base, PENDING) == 1.0);
    const INPUT: usize = 300 << 10;
    let input =
        format!(r#"{{"name":"x","shape":[{INPUT}],"datatype":"UINT8","parameters":{{"binary_data_size":{INPUT}}}}}"#);
    let json = format!(r#"{{"inputs":[{input}],"parameters":{{"timeout":1}}}}"#);
    let json_length = json.len().to_string();
    let mut body = json.into_bytes();
    body.resize(body.len() + INPUT, 9);
    let headers =
        [("Inference-Header-Content-Length", json_length.as_str()), ("Content-Type", "application/octet-stream")];
    let late = InFlight::send(&base, &headers, body).answer("the request that may wait 1 µs");
    assert_eq!(late.status, 504, "{}", late.body);
    wait_for(Duration::from_secs(1), "the late request's input to be given back", || metric(&base, HELD) == 1.0);
    assert!(first.answer.try_recv().is_err(), "the first request was answered before it was released");
    repository.release();
    assert_eq!(first.answer("the first request").status, 200);
    wait_for(PATIENCE, "the first request's bytes to be given back", || metric(&base, HELD) == 0.0);
    server.stop(PATIENCE);
}

#[test]
fn a_json_request_whose_tensor_the_budget_cannot_hold_is_refused_before_it_is_decoded() {
    let repository = Repository::new("decoded");
    repository.add("hold64", "FP64");
    let server = serve(&repository);
    let base = server.base.clone();
    // 600 KiB held by the model leaves 424 KiB free. An FP64 tensor of
    // 50,000 zeros is 100 KB of text and 400 KB decoded: the text fits,
    // and so would the tensor alone, but not both while it is decoded.
    let first = InFlight::send(&base, RAW, vec![7u8; LARGE]);
    wait_for(PATIENCE, "the first request to be held", || metric(&base, HELD) == LARGE as f64);
    const N: usize = 50_000;
    let zeros = vec!["0"; N].join(",");
    // (A request that is not refused waits at most 1 s for its answer.)
    let input = format!(r#"{{"name":"x","shape":[{N}],"datatype":"FP64","data":[{zeros}]}}"#);
    let body = format!(r#"{{"inputs":[{input}],"parameters":{{"timeout":1000000}}}}"#);
    assert!(body.len() < BUDGET - LARGE && body.len() + 8 * N > BUDGET - LARGE && 8 * N < BUDGET - LARGE);
    let json = [("Content-Type", "application/json")];
    let path = "/v2/models/hold64/infer";
    let answer = call(&base, "POST", path, &json, Body::Sized(body.as_bytes())).expect("an answer");
    assert_refused_for_the_budget(
        "a tensor larger than its text",
        answer.status,
        answer.retry_after.as_deref(),
        &answer.body,
    );
    assert_eq!(metric(&base, REFUSED), 1.0, "refused once");
    assert_eq!(metric(&base, HELD), LARGE as f64, "a refused request holds nothing");
    // Once the first is answered, the same request is served, and what it
    // held (its text, then its tensor) is all given back.
    repository.release();
    assert_eq!(first.answer("the first request").status, 200);
    wait_for(PATIENCE, "the first request's bytes to be given back", || metric(&base, HELD) == 0.0);
    let answer = call(&base, "POST", path, &json, Body::Sized(body.as_bytes())).expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for(PATIENCE, "the tensor's bytes to be given back", || metric(&base, HELD) == 0.0);
    assert_eq!(metric(&base, REFUSED), 1.0);
    server.stop(PATIENCE);
}

#[test]
fn a_body_announced_and_not_sent_holds_nothing() {
    let repository = Repository::new("announced");
    repository.release();
    let server = serve(&repository);
    let base = server.base.clone();
    // A client announces a body of the whole budget and sends none of it;
    // the go-ahead it asked for (`100-continue`) says that its handler is
    // reading the body, past the budget's check.
    let head = raw_head(&format!("Content-Length: {BUDGET}\r\nExpect: 100-continue"));
    let mut silent = connect_and_send(&base, head.as_bytes());
    let go_ahead = read_answer(&mut silent);
    assert!(go_ahead.starts_with("HTTP/1.1 100"), "{go_ahead}");
    // Another client's small request is served: the announced bytes are
    // not held until they arrive.
    let answer = call(&base, "POST", INFER, RAW, Body::Sized(&[7])).expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(metric(&base, HELD), 0.0);
    drop(silent);
    server.stop(PATIENCE);
}
