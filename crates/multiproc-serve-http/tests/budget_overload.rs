//! The request body budget (`HttpOptions::body_budget`, `multiproc serve
//! --body-budget-bytes`) bounds the bytes of request bodies the server
//! holds, whatever the number of requests: with a budget of 1 MiB and one
//! request of 600 KiB held by a model that does not answer yet, a second
//! one is refused with 503 (before its body is read when its size is
//! announced, as soon as it crosses the budget when it is chunked) and the
//! answer names the budget; once the first is answered, the same request
//! is served. A client that goes away mid-body gives its bytes back.
//! `/metrics` shows the bytes held and the refusals.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use multiproc_serve_http::app::HttpOptions;
use support::{Body, call, metric, wait_for};

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

/// A repository in a temporary directory holding `hold`
/// (`tests/support/hold.py`: a call waits until the release file exists),
/// removed on drop, after the model is released.
struct Repository {
    dir: PathBuf,
}

impl Repository {
    fn new() -> Repository {
        let dir = multiproc_test_support::marker_dir("body-budget", "repository");
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let repository = Repository { dir };
        let config = format!(
            "platform = \"command\"\ncommand = [\"python3\", {:?}, {:?}, {:?}]\nmax_batch_size = 0\n\
             [[input]]\nname = \"x\"\ndatatype = \"UINT8\"\ndims = [-1]\n\
             [[output]]\nname = \"y\"\ndatatype = \"UINT8\"\ndims = [1]\n",
            here.join("tests/support/hold.py").display().to_string(),
            repository.release_file().display().to_string(),
            here.join("../multiproc-serve/python").display().to_string(),
        );
        let model = repository.models().join("hold");
        std::fs::create_dir_all(model.join("1")).expect("create the repository");
        std::fs::write(model.join("config.toml"), config).expect("write the config");
        repository
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
        self.release();
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

#[test]
fn bodies_over_the_budget_are_refused_until_the_held_ones_are_answered() {
    let repository = Repository::new();
    let http = HttpOptions { body_budget: BUDGET, ..HttpOptions::default() };
    let server = support::InProcess::start_with(repository.models(), http);
    let base = server.base.clone();
    server.started.recv_timeout(PATIENCE).expect("start did not return");
    let large = vec![7u8; LARGE];

    // The first request is held by the model, its bytes by the budget.
    let (first_tx, first) = mpsc::channel();
    let first_base = base.clone();
    let first_body = large.clone();
    let first_thread = std::thread::spawn(move || {
        let _ = first_tx.send(call(&first_base, "POST", INFER, RAW, Body::Sized(&first_body)));
    });
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
    assert!(first.try_recv().is_err(), "the first request was answered before it was released");

    // Once the first is answered, its bytes are given back: the same
    // requests are served.
    repository.release();
    let answer = first.recv_timeout(PATIENCE).expect("the first request was not answered");
    first_thread.join().unwrap();
    let answer = answer.unwrap_or_else(|e| panic!("the first request: no answer: {e}"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for(PATIENCE, "the first request's bytes to be given back", || metric(&base, HELD) == 0.0);
    for (what, body) in [("announced", Body::Sized(&large)), ("chunked", Body::Chunked(&large))] {
        let answer = call(&base, "POST", INFER, RAW, body).unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!(answer.status, 200, "{what}, once the budget was given back: {}", answer.body);
    }
    assert_eq!(metric(&base, HELD), 0.0);

    // A client that goes away mid-body gives its bytes back: announced (held
    // whole from the start), or chunked (held as it arrives).
    let mut request = raw_head(&format!("Content-Length: {LARGE}")).into_bytes();
    request.extend_from_slice(&large[..LARGE / 2]);
    let stream = connect_and_send(&base, &request);
    wait_for(PATIENCE, "the announced body to be held", || metric(&base, HELD) == LARGE as f64);
    drop(stream);
    wait_for(PATIENCE, "the announced body's bytes to be given back", || metric(&base, HELD) == 0.0);
    let half = LARGE / 2;
    let mut request = raw_head("Transfer-Encoding: chunked").into_bytes();
    request.extend_from_slice(format!("{LARGE:x}\r\n").as_bytes());
    request.extend_from_slice(&large[..half]);
    let stream = connect_and_send(&base, &request);
    wait_for(PATIENCE, "the chunked body to be held", || metric(&base, HELD) == half as f64);
    drop(stream);
    wait_for(PATIENCE, "the chunked body's bytes to be given back", || metric(&base, HELD) == 0.0);
    assert_eq!(metric(&base, REFUSED), 3.0, "nothing was refused since");

    server.stop(PATIENCE);
}
