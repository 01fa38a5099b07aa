//! `multiproc infer` against other Open Inference Protocol servers: a
//! stand-in server on loopback answers as the protocol allows (not only as
//! `multiproc serve` does), and the client must read it.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Reads one request from `conn`: its request line and JSON body.
fn read_request(conn: &TcpStream) -> (String, Value) {
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (request_line.trim().to_string(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A stand-in OIP server on loopback answering `answers` (a request line's
/// start, and the JSON to answer with) to at most `requests` requests, one
/// per connection, within 30 s; the requests it saw come out of the channel.
fn stand_in(answers: Vec<(&'static str, Value)>, requests: usize) -> (String, mpsc::Receiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < requests && Instant::now() < deadline {
            let conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            conn.set_nonblocking(false).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            conn.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            let (line, body) = read_request(&conn);
            let answer = answers.iter().find(|(start, _)| line.starts_with(start));
            let (status, json) = match answer {
                Some((_, json)) => ("200 OK", json.to_string()),
                None => ("404 Not Found", r#"{"error":"no such endpoint"}"#.to_string()),
            };
            let _ = tx.send((line, body));
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                json.len()
            );
            served += 1;
        }
    });
    (base, rx)
}

/// A stand-in for model `m` (x → y, FP32), whose metadata has no
/// "versions" (the protocol marks it optional) and whose answer is y = [2, 4].
fn stand_in_for_m() -> (String, mpsc::Receiver<(String, Value)>) {
    let metadata = serde_json::json!({
        "name": "m",
        "platform": "",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    });
    let response = serde_json::json!({
        "model_name": "m",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [2.0, 4.0]}],
    });
    stand_in(vec![("GET /v2/models/m ", metadata), ("POST /v2/models/m/infer ", response)], 2)
}

#[test]
fn model_metadata_without_the_optional_versions_field_is_read() {
    let (base, seen) = stand_in_for_m();
    let out = run_with_limit(
        Command::new(EXE).args(["infer", "m", r#"{"x": [1, 2]}"#, "--url", &base]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("y FP32 [2] [2.0,4.0]"), "{stdout}");
    let requests: Vec<(String, Value)> = seen.try_iter().collect();
    let infer = requests.iter().find(|(line, _)| line.starts_with("POST")).expect("an inference request");
    assert_eq!(infer.1["inputs"][0]["shape"], serde_json::json!([2]), "{:?}", infer.1);
}

#[test]
fn a_model_name_with_url_characters_is_percent_encoded_in_the_path() {
    // A repository's model is named after its directory: any character a
    // file name may hold, '#', '?', '%' and spaces included.
    let metadata = serde_json::json!({
        "name": "a#b?c d%",
        "platform": "",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    });
    let response = serde_json::json!({
        "model_name": "a#b?c d%",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1.0]}],
    });
    let (base, seen) = stand_in(
        vec![("GET /v2/models/a%23b%3Fc%20d%25 ", metadata), ("POST /v2/models/a%23b%3Fc%20d%25/infer ", response)],
        2,
    );
    let out = run_with_limit(
        Command::new(EXE).args(["infer", "a#b?c d%", r#"{"x": [1]}"#, "--url", &base]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = seen.try_iter().map(|(line, _)| line).collect();
    assert!(out.status.success(), "{stdout} {} {lines:?}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("y FP32 [1] [1.0]"), "{stdout}");
}

#[test]
fn a_full_request_asking_for_binary_outputs_is_sent_asking_for_json_which_the_client_prints() {
    let (base, seen) = stand_in_for_m();
    let request = r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}],
                      "parameters": {"binary_data_output": true},
                      "outputs": [{"name": "y", "parameters": {"binary_data": true}}]}"#;
    let out = run_with_limit(Command::new(EXE).args(["infer", "m", request, "--url", &base]), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("y FP32 [2] [2.0,4.0]"), "{stdout}");
    let requests: Vec<(String, Value)> = seen.try_iter().collect();
    let infer = requests.iter().find(|(line, _)| line.starts_with("POST")).expect("an inference request");
    assert_eq!(infer.1["parameters"], serde_json::json!({}), "{:?}", infer.1);
    assert_eq!(infer.1["outputs"][0], serde_json::json!({"name": "y", "parameters": {}}), "{:?}", infer.1);
}
