//! The `multiproc` binary as a user runs it.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use multiproc::{Process, ProcessError};

const EXE: &str = env!("CARGO_BIN_EXE_multiproc");

mod support;

/// Runs the binary with `args`, killing it if it takes longer than `limit`
/// (its output read meanwhile: the tour writes more than a pipe holds).
fn run(args: &[&str], limit: Duration) -> Output {
    support::run_with_limit(Command::new(EXE).args(args), limit)
}

#[test]
fn tour_runs_every_example_and_prints_what_it_shows() {
    let out = run(&["tour"], Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tour failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for e in multiproc_seeds::EXAMPLES {
        assert!(stdout.contains(&format!("== {} (seed {})", e.name, e.seed)), "no heading for {}:\n{stdout}", e.name);
    }
    assert!(stdout.contains("Process close"), "{stdout}");
    assert!(stdout.contains("terminated.exitcode = Some(-15)"), "{stdout}");
    let n = multiproc_seeds::EXAMPLES.len();
    assert!(stdout.contains(&format!("tour: {n} of {n} examples ran")), "{stdout}");
}

#[test]
fn tour_runs_chosen_examples_and_lists_them() {
    let out = run(&["tour", "exit_codes"], Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("== exit_codes") && !stdout.contains("== five_children"), "{stdout}");

    let out = run(&["tour", "--list"], Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), multiproc_seeds::EXAMPLES.len(), "{stdout}");

    let out = run(&["tour", "no_such_example"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no example called no_such_example;"), "{stderr}");
}

#[test]
fn serve_refuses_a_metrics_port_that_is_the_http_port() {
    let out = run(&["serve", "--http-port", "18999", "--metrics-port", "18999"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-port 18999 is the HTTP port too"), "{stderr}");
}

#[test]
fn worker_refuses_a_zero_visibility_timeout_a_negative_drain_and_a_url_that_is_not_redis() {
    let out = run(&["worker", "--redis", "redis://127.0.0.1:1", "--visibility-timeout", "0"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--visibility-timeout must be a positive number"), "{stderr}");

    let out = run(&["worker", "--redis", "redis://127.0.0.1:1", "--drain-timeout=-1"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--drain-timeout must be a number of seconds, 0 or more"), "{stderr}");

    let out = run(&["worker", "--redis", "127.0.0.1:6379"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a Redis URL; give one like redis://"), "{stderr}");
}

#[test]
fn serve_refuses_zero_timeouts_and_zero_threads() {
    for (flag, says) in [
        ("--body-timeout-secs", "0 is not in 1..=86400"),
        ("--header-timeout-secs", "0 is not in 1..=86400"),
        ("--http-threads", "0 is not in 1..=65535"),
    ] {
        let out = run(&["serve", flag, "0"], Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }
}

#[test]
fn serve_says_when_the_repository_holds_no_model() {
    let dir = std::env::temp_dir().join(format!("multiproc-cli-empty-repo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(EXE)
        .args(["serve", "--http-port", "0", "--model-repository", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let found =
        std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(30)).ok()).any(|l| l.contains("holds no model"));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir(&dir);
    assert!(found, "no warning about the empty repository");
}

#[test]
fn infer_with_a_malformed_url_says_so_and_not_that_the_server_is_down() {
    for url in ["127.0.0.1:8000", "htp://127.0.0.1:8000", "http://", "http://bad host:8000"] {
        let out = run(&["infer", "--url", url, "digits", "{}"], Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("is not a server URL") && !stderr.contains("running there"), "{url}: {stderr}");
    }
}

#[test]
fn help_describes_the_commands() {
    let out = run(&["--help"], Duration::from_secs(30));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tour") && stdout.contains("Usage: multiproc"), "{stdout}");
}

fn secret() -> u32 {
    42
}

/// A genuinely different program that links multiproc (the `multiproc`
/// binary) refuses to run this test binary's task.
#[test]
fn a_different_program_refuses_the_task_with_build_mismatch() {
    let mut p = Process::builder().executable(EXE).spawn(secret, ()).unwrap();
    let err = p.join_timeout(Duration::from_secs(30)).unwrap_err();
    assert!(matches!(err, ProcessError::BuildMismatch { .. }), "{err:?}");
    assert_eq!(p.exitcode(), Some(1));
}

#[test]
fn serve_on_a_port_in_use_says_so_and_writes_no_colour_codes_into_a_pipe() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&["serve", "--http-port", &port], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("is another server using the port?"), "{stderr}");
    // Its log lines go to a pipe here, not a terminal: plain text.
    assert!(!stderr.contains('\x1b'), "terminal escape codes in piped stderr: {stderr:?}");
}

#[test]
fn infer_with_inputs_that_are_not_json_names_them_and_shows_the_form() {
    let file = std::env::temp_dir().join(format!("multiproc-cli-bad-inputs-{}.json", std::process::id()));
    std::fs::write(&file, "{input: [1, 2]}").unwrap();
    let at_file = format!("@{}", file.display());
    for (inputs, names) in [("{bad", "the inputs"), (at_file.as_str(), file.to_str().unwrap())] {
        let out = run(&["infer", "digits", inputs, "--url", "http://127.0.0.1:1"], Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{inputs}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("cannot parse {names} as JSON")), "{inputs}: {stderr}");
        assert!(stderr.contains(r#"give the inputs as '{"input name": [1, 2]}'"#), "{inputs}: {stderr}");
    }
    let _ = std::fs::remove_file(&file);

    let missing = format!("@{}", std::env::temp_dir().join("multiproc-cli-no-such-inputs.json").display());
    let out = run(&["infer", "digits", &missing], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read") && stderr.contains("No such file"), "{stderr}");
}

/// Answers every connection on a free local port with `response`, on a
/// thread that ends when the test does (after at most `connections`).
fn http_stub(response: &'static str, connections: usize) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

#[test]
fn infer_against_a_server_that_does_not_speak_the_protocol_says_so() {
    let url = http_stub("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found", 1);
    let out = run(&["infer", "digits", r#"{"input": [1]}"#, "--url", &url], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("answered 404 without an Open Inference Protocol error"), "{stderr}");
    assert!(stderr.contains(&format!("is {url} a `multiproc serve`")), "{stderr}");
}

#[test]
fn infer_against_a_server_whose_answer_breaks_off_says_so() {
    // A 200 announcing 100 bytes of JSON, cut after 6: the server was
    // reached, its answer broke off.
    let url = http_stub(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"id\":",
        1,
    );
    let out = run(&["infer", "digits", r#"{"input": [1]}"#, "--url", &url], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{url}/v2/models/digits answered 200")), "{stderr}");
    assert!(stderr.contains("broke off after 6 bytes"), "{stderr}");
    assert!(!stderr.contains("cannot reach"), "the server was reached: {stderr}");
}

#[test]
fn infer_against_a_server_answering_200_with_no_json_says_what_came_back() {
    let page = "<html><body>\x1b[31mwelcome</body></html>";
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        )
        .into_boxed_str(),
    );
    let url = http_stub(response, 1);
    let out = run(&["infer", "digits", r#"{"input": [1]}"#, "--url", &url], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{url}/v2/models/digits answered 200")), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(stderr.contains("<html><body>"), "what came back: {stderr}");
    assert!(stderr.contains("is it an Open Inference Protocol server"), "{stderr}");
    // The transport worked: not told as a server that cannot be reached.
    assert!(!stderr.contains("cannot reach"), "{stderr}");
    // What came back is shown escaped, never as raw terminal codes.
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn infer_against_a_server_that_never_answers_gives_up_after_its_timeout() {
    // The kernel accepts the connection into the listen backlog; nothing
    // ever reads the request or answers it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let out = run(&["infer", "digits", r#"{"input": [1]}"#, "--url", &url, "--timeout", "1"], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{url}/v2/models/digits accepted the connection")), "{stderr}");
    assert!(stderr.contains("did not answer within 1 s"), "{stderr}");
    assert!(stderr.contains("--timeout"), "{stderr}");
    // Well below the 60 s default (generous: the machine may be loaded).
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    drop(silent);
}

#[test]
fn infer_refuses_a_zero_timeout() {
    let out = run(&["infer", "digits", "{}", "--timeout", "0"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--timeout"), "{stderr}");
}

#[test]
fn serve_with_a_repository_that_is_not_a_directory_says_what_to_give() {
    let file = std::env::temp_dir().join(format!("multiproc-cli-not-a-repo-{}", std::process::id()));
    std::fs::write(&file, "not a directory").unwrap();
    let missing = std::env::temp_dir().join("multiproc-cli-no-such-repo");
    for path in [&file, &missing] {
        let out =
            run(&["serve", "--http-port", "0", "--model-repository", path.to_str().unwrap()], Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(2), "{path:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("--model-repository {}", path.display())), "{stderr}");
        assert!(stderr.contains("give a directory of models"), "{stderr}");
    }
    let _ = std::fs::remove_file(&file);
}
