//! Limits of `multiproc serve`: an overloaded model answers 503 with
//! `Retry-After` at once; a slow client holds only its own connection (not
//! a worker) and is cut off with 408 after the body timeout, or closed after
//! the header timeout if it trickles its headers.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// A repository with `slow`: one worker taking `delay` seconds per batch,
/// a queue of one.
fn slow_repo(dir: &std::path::Path, delay: f64) {
    let config = echo_config_for(delay, &["INT32"])
        .replace("max_batch_size = 0", "max_batch_size = 0\n[batching]\nmax_queue_size = 1\n");
    write(&dir.join("slow/config.toml"), config.as_bytes());
    std::fs::create_dir_all(dir.join("slow/1")).unwrap();
}

const BODY: &str = r#"{"inputs":[{"name":"in_INT32","shape":[1],"datatype":"INT32","data":[7]}]}"#;

#[test]
fn overload_is_refused_at_once_with_503_and_retry_after() {
    let repo = TempDir::new("overload");
    // A request takes 3 s: the 6 clients' requests all arrive while the
    // first is running, however the threads are scheduled, and "at once"
    // (under 2 s) is told apart from "after waiting for the worker".
    slow_repo(&repo.0, 3.0);
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let url = s.url("/v2/models/slow/infer");
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let res = agent().post(&url).send_string(BODY);
                let (status, retry) = match res {
                    Ok(r) => (r.status(), None),
                    Err(ureq::Error::Status(st, r)) => (st, r.header("retry-after").map(str::to_string)),
                    Err(e) => panic!("{e}"),
                };
                (status, retry, t.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(ok >= 1, "{results:?}");
    assert!(!refused.is_empty(), "one worker and a queue of 1 cannot take 6 at once: {results:?}");
    assert_eq!(ok + refused.len(), 6, "{results:?}");
    for r in &refused {
        assert!(r.1.as_deref().is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 1)), "Retry-After: {r:?}");
        assert!(r.2 < Duration::from_secs(2), "refused at once, not after waiting: {r:?}");
    }
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn a_slow_client_holds_no_worker_and_times_out_with_408() {
    let repo = TempDir::new("slowclient");
    slow_repo(&repo.0, 0.4);
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap(), "--body-timeout-secs", "2"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // A client that announces a body and sends only half of it.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(slow, "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", BODY.len()).unwrap();
    slow.write_all(&BODY.as_bytes()[..BODY.len() / 2]).unwrap();
    // Meanwhile the single worker serves others as usual.
    let t = Instant::now();
    for _ in 0..2 {
        let (st, r) = post_json(&s.url("/v2/models/slow/infer"), &serde_json::from_str(BODY).unwrap());
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["outputs"][0]["data"], json!([7]));
    }
    assert!(t.elapsed() < Duration::from_secs(5), "two 0.4 s requests took {:?}", t.elapsed());
    // The slow client is answered 408 once its body timeout has passed.
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 2s"), "{answer}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn a_client_trickling_its_headers_is_cut_off_after_the_header_timeout() {
    let repo = TempDir::new("slowheaders");
    slow_repo(&repo.0, 0.4);
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap(), "--header-timeout-secs", "2"]);
    let addr = s.base.trim_start_matches("http://").to_string();
    // Slowloris: a request line, then one header byte every 200 ms, never
    // the blank line; and a connection that sends nothing at all.
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // Timed from before the connection (the server's timer starts at its
    // accept), so that a test thread descheduled after connecting cannot
    // make the cut look early.
    let t = Instant::now();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    let mut cut_after = None;
    while t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(b"a").is_err() {
            cut_after = Some(t.elapsed());
            break;
        }
    }
    let cut_after = cut_after.expect("the server kept a connection trickling its headers open for 15 s");
    assert!(cut_after >= Duration::from_millis(1500), "cut off before the timeout: {cut_after:?}");
    // The silent connection is closed too (EOF or reset, not the read timeout).
    let mut buf = [0u8; 64];
    let t = Instant::now();
    let closed = match silent.read(&mut buf) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    assert!(closed && t.elapsed() < Duration::from_secs(14), "a silent connection stayed open");
    // Others were served all along.
    let (st, r) = post_json(&s.url("/v2/models/slow/infer"), &serde_json::from_str(BODY).unwrap());
    assert_eq!(st, 200, "{r}");
    assert_eq!(s.terminate().code(), Some(0));
}

/// How many file descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn connections_dropped_mid_request_leave_the_server_serving_and_nothing_open() {
    let repo = TempDir::new("dropped");
    slow_repo(&repo.0, 0.4);
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap()]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let url = s.url("/v2/models/slow/infer");
    assert_eq!(post_json(&url, &serde_json::from_str(BODY).unwrap()).0, 200);
    let pid = s.child.id();
    let baseline = open_fds(pid);
    let head = format!("POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", BODY.len());
    let whole = format!("{head}{BODY}");
    // Cut at every kind of place: in the request line, in the headers, in
    // the body, and after the whole request (the model is working on it, or
    // it is queued, or refused): the client is gone before the answer.
    let cuts = [5, head.len() - 10, head.len(), head.len() + BODY.len() / 2, whole.len()];
    for round in 0..8 {
        let conns: Vec<TcpStream> = cuts
            .iter()
            .map(|&cut| {
                let mut c = TcpStream::connect(&addr).unwrap();
                c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                c.write_all(&whole.as_bytes()[..cut]).unwrap();
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(if round % 2 == 0 { 0 } else { 150 }));
        drop(conns);
    }
    // Still serving, answering right (once the requests the model took
    // before their clients left are done: its queue holds one).
    let t = Instant::now();
    let (st, r) = loop {
        let (st, r) = post_json(&url, &serde_json::from_str(BODY).unwrap());
        if st != 503 || t.elapsed() > Duration::from_secs(10) {
            break (st, r);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["outputs"][0]["data"], json!([7]));
    // Every dropped connection is closed on the server's side, and no
    // request is left pending.
    let t = Instant::now();
    while open_fds(pid) > baseline {
        assert!(t.elapsed() < Duration::from_secs(20), "{} fds open, {baseline} before", open_fds(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, text, _) = call(agent().get(&s.url("/metrics")), None);
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("nv_inference_pending_request_count{model=\"slow\",version=\"1\"} 0"), "{text}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn a_slow_body_on_the_repository_api_is_cut_off_with_408_as_on_infer() {
    let repo = TempDir::new("slowindex");
    slow_repo(&repo.0, 0.4);
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap(), "--body-timeout-secs", "2"]);
    let t = Instant::now();
    let answer =
        raw_exchange(&s.base, b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"rea");
    assert!(answer.starts_with("HTTP/1.1 408"), "after {:?}: {answer:?}", t.elapsed());
    assert!(answer.contains("did not arrive within 2s"), "{answer}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn a_chunked_body_over_the_limit_is_413_with_a_message_that_reads() {
    let repo = TempDir::new("chunked");
    slow_repo(&repo.0, 0.4);
    let mut s = Served::start(&["--model-repository", repo.0.to_str().unwrap(), "--max-body-bytes", "1000"]);
    // No Content-Length: the limit is found while reading.
    let mut request =
        b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    request.extend_from_slice(format!("{:x}\r\n", 1500).as_bytes());
    request.extend_from_slice(&[b' '; 1500]);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let answer = raw_exchange(&s.base, &request);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"the request body is over the limit of 1000 bytes (--max-body-bytes)\""), "{answer}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn a_body_alone_over_the_body_budget_is_413_naming_the_flag() {
    let repo = TempDir::new("budget");
    slow_repo(&repo.0, 0.4);
    let dir = repo.0.to_str().unwrap();
    let mut s = Served::start(&["--model-repository", dir, "--max-body-bytes", "1000", "--body-budget-bytes", "1000"]);
    // The budget is at least the body limit (see below), so only a body
    // and what it inflates to together can be over it: 1000 bytes
    // inflated, plus the compressed body, cannot be held at once.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&[b' '; 1000]).unwrap();
    let gzipped = encoder.finish().unwrap();
    let mut request = format!(
        "POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Encoding: gzip\r\n\
         Content-Length: {}\r\n\r\n",
        gzipped.len()
    )
    .into_bytes();
    request.extend_from_slice(&gzipped);
    let answer = raw_exchange(&s.base, &request);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("budget of 1000 bytes (multiproc serve --body-budget-bytes)"), "{answer}");
    assert_eq!(s.terminate().code(), Some(0));
}

#[test]
fn a_body_budget_of_zero_or_below_the_body_limit_is_refused_before_anything_starts() {
    let repo = TempDir::new("budgetflag");
    slow_repo(&repo.0, 0.4);
    let dir = repo.0.to_str().unwrap();
    let refused: [(&[&str], &str); 3] = [
        (&["--body-budget-bytes", "0"], "--body-budget-bytes 0 would hold no request body at all"),
        // Below the default body limit (64 MiB).
        (&["--body-budget-bytes", "1000"], "--body-budget-bytes 1000 is below --max-body-bytes 67108864"),
        (&["--max-body-bytes", "2000", "--body-budget-bytes", "1999"], "raise --body-budget-bytes to at least 2000"),
    ];
    for (flags, says) in refused {
        let mut command = std::process::Command::new(EXE);
        command.args(["serve", "--http-port", "0", "--model-repository", dir]).args(flags);
        let out = run_with_limit(&mut command, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{flags:?}: nothing is served: {}", String::from_utf8_lossy(&out.stdout));
    }
    // Equal is enough.
    let mut s = Served::start(&["--model-repository", dir, "--max-body-bytes", "2000", "--body-budget-bytes", "2000"]);
    assert_eq!(s.terminate().code(), Some(0));
}
