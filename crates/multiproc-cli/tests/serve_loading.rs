//! `multiproc serve` answers while its models load (it says where on
//! stderr at once; stdout's "serving" line comes once they are loaded), and
//! SIGTERM during the load stops it promptly and cleanly: exit 0, the models
//! not reached not loaded.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{EXE, Served, TempDir, agent, call, get_json, post_json, worker_dir, write};

/// How long each model's load sleeps: long enough for two requests on a
/// loaded machine to be answered within half of it, and for a stop that
/// waited for the load to show.
const LOAD_SECONDS: u64 = 30;

/// A command model whose load sleeps [`LOAD_SECONDS`].
fn slow_loading_config() -> String {
    loading_config(LOAD_SECONDS, "x")
}

/// A command model whose load sleeps `seconds`, with one input named `input`.
fn loading_config(seconds: u64, input: &str) -> String {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../multiproc-serve-http/tests/support/slow_load.py");
    format!(
        "platform = \"command\"\ncommand = [\"python3\", {:?}, \"{seconds}\", {:?}]\nmax_batch_size = 0\n\
         [[input]]\nname = \"{input}\"\ndatatype = \"FP32\"\ndims = [-1]\n\
         [[output]]\nname = \"y\"\ndatatype = \"FP32\"\ndims = [-1]\n\
         [timeouts]\nstartup_ms = 120000\n",
        script.display().to_string(),
        worker_dir().display().to_string()
    )
}

/// Starts `multiproc serve` on `repository` and waits (60 s at most) for
/// the first line, on stdout or stderr, that gives its address.
fn serve_and_find_address(repository: &std::path::Path) -> Served {
    let mut child = Command::new(EXE)
        .args(["serve", "--http-port", "0", "--model-repository"])
        .arg(repository)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start multiproc serve");
    let (lines_tx, lines) = mpsc::channel();
    let (stdout_tx, stdout) = mpsc::channel();
    let (stderr_tx, stderr) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let (lines_tx2, stdout_tx2) = (lines_tx.clone(), stdout_tx.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = lines_tx2.send(line.clone());
            let _ = stdout_tx2.send(line);
        }
    });
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        let _ = stderr_tx.send(all);
    });
    drop(stdout_tx);
    let deadline = Instant::now() + Duration::from_secs(60);
    let base = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("http://") => {
                break format!("http://{}", line.rsplit("http://").next().unwrap().trim());
            }
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("multiproc serve printed no address in 60 s");
            }
        }
    };
    Served { child, base, stderr, stdout }
}

#[test]
fn sigterm_while_the_models_load_stops_the_server_promptly_and_cleanly() {
    let repository = TempDir::new("serve-loading");
    for model in ["first", "second", "third"] {
        write(&repository.0.join(model).join("config.toml"), slow_loading_config().as_bytes());
        std::fs::create_dir_all(repository.0.join(model).join("1")).unwrap();
    }
    let began = Instant::now();
    let mut served = serve_and_find_address(&repository.0);
    let (status, body, _) = call(agent().get(&served.url("/v2/health/live")), None);
    assert_eq!(status, 200, "live while loading: {}", String::from_utf8_lossy(&body));
    let (status, body, _) = call(agent().get(&served.url("/v2/health/ready")), None);
    assert_eq!(status, 503, "ready while loading: {}", String::from_utf8_lossy(&body));
    assert!(
        began.elapsed() < Duration::from_secs(LOAD_SECONDS / 2),
        "the checks took more than half the first load: the machine is too slow for this test"
    );

    // SIGTERM during the first model's load: that load is cancelled at
    // once (waiting for it would take the other half of LOAD_SECONDS at
    // least), the others are not loaded, exit 0.
    let stopping = Instant::now();
    let status = served.terminate();
    let took = stopping.elapsed();
    let stderr = served.stderr.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(took < Duration::from_secs(LOAD_SECONDS / 2), "stopping took {took:?}: it waited for the load");
    let mut stdout = Vec::new();
    while let Ok(line) = served.stdout.recv_timeout(Duration::from_secs(10)) {
        stdout.push(line);
    }
    assert!(!stdout.iter().any(|l| l.contains("serving")), "said serving although stopped while loading: {stdout:?}");
    assert!(stdout.iter().any(|l| l.contains("stopped")), "{stdout:?}\n{stderr}");
}

#[test]
fn of_two_loads_of_a_model_through_the_api_the_one_asked_last_is_left_serving() {
    let repository = TempDir::new("serve-two-loads");
    let config = repository.0.join("m").join("config.toml");
    write(&config, loading_config(0, "first").as_bytes());
    std::fs::create_dir_all(repository.0.join("m").join("1")).unwrap();
    let mut served = Served::start(&["--model-repository", repository.0.to_str().unwrap()]);
    let load = served.url("/v2/repository/models/m/load");
    // A slow load (4 s), then, while it runs, a fast one of a newer
    // configuration: the newer must be the one left serving, though its
    // workers would be ready first.
    write(&config, loading_config(4, "slow").as_bytes());
    let slow = {
        let load = load.clone();
        std::thread::spawn(move || post_json(&load, &serde_json::json!({})))
    };
    std::thread::sleep(Duration::from_secs(1));
    write(&config, loading_config(0, "last").as_bytes());
    let (status, body) = post_json(&load, &serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    // The slow load's request is bounded by the agent's 30 s timeout.
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, metadata) = get_json(&served.url("/v2/models/m"));
    assert_eq!(status, 200, "{metadata}");
    assert_eq!(metadata["inputs"][0]["name"], "last", "{metadata}");
    assert_eq!(served.terminate().code(), Some(0));
}
