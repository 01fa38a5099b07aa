//! `max_batch_size` caps the rows of one model call, as in Triton: a
//! request's batch dimension counts in the batcher, so requests of 8 rows
//! under a `max_batch_size` of 8 each run alone, and 3- and 5-row requests
//! share a call of 8. The model answers every row with the rows of the call
//! it ran in. `/metrics` counts as Triton does: `nv_inference_count` the
//! rows, `nv_inference_exec_count` the model calls, the request counters
//! the requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use multiproc_serve_http::app::HttpOptions;
use multiproc_serve_http::serve::{ServeOptions, start};

/// How long anything may take at most (a request, the load, the stop).
const PATIENCE: Duration = Duration::from_secs(60);

/// A repository in a temporary directory, removed on drop, holding `rows`:
/// `tests/support/rows.py`, `max_batch_size` 8, 200 ms per call.
struct Repository(PathBuf);

impl Repository {
    fn new() -> Repository {
        let dir = std::env::temp_dir().join(format!("multiproc-infer-rows-{}", std::process::id()));
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = format!(
            "platform = \"command\"\ncommand = [\"python3\", {:?}, \"0.2\", {:?}]\nmax_batch_size = 8\n\
             [[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = [1]\n\
             [[output]]\nname = \"y\"\ndatatype = \"FP32\"\ndims = [1]\n",
            here.join("tests/support/rows.py").display().to_string(),
            here.join("../multiproc-serve/python").display().to_string(),
        );
        std::fs::create_dir_all(dir.join("rows/1")).expect("create the repository");
        std::fs::write(dir.join("rows/config.toml"), config).expect("write the config");
        Repository(dir)
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `repository` on loopback until `stop` is sent; the address.
fn serve(repository: &Path) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let options = ServeOptions {
        repository: repository.to_path_buf(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_addr: None,
        http: HttpOptions::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let running = start(options).await.expect("the server starts");
            let _ = addr_tx.send(running.http_addr);
            running
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    let addr = addr_rx.recv_timeout(PATIENCE).expect("the server did not start in time");
    (addr, stop, thread)
}

/// Sends one request of each of `sizes` rows at once; for each, the rows
/// of the model call it ran in.
fn calls(addr: SocketAddr, sizes: &[usize]) -> Vec<usize> {
    calls_status(addr, sizes).into_iter().map(|c| c.expect("an answer")).collect()
}

/// As [`calls`], but a request refused gives its HTTP status.
fn calls_status(addr: SocketAddr, sizes: &[usize]) -> Vec<Result<usize, u16>> {
    let threads: Vec<_> = sizes
        .iter()
        .map(|&n| {
            std::thread::spawn(move || {
                let body = serde_json::json!({"inputs": [{"name": "x", "shape": [n, 1], "datatype": "FP32", "data": vec![1.0; n]}]});
                let agent = ureq::AgentBuilder::new().timeout(PATIENCE).build();
                let answer: serde_json::Value =
                    match agent.post(&format!("http://{addr}/v2/models/rows/infer")).send_json(body) {
                        Ok(r) => r.into_json().expect("a JSON answer"),
                        Err(ureq::Error::Status(status, _)) => return Err(status),
                        Err(e) => panic!("no answer: {e}"),
                    };
                let data = answer["outputs"][0]["data"].as_array().cloned().unwrap_or_default();
                assert_eq!(data.len(), n, "{answer}");
                Ok(data[0].as_f64().expect("a number") as usize)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("a request thread panicked")).collect()
}

#[test]
fn one_model_call_gets_at_most_max_batch_size_rows_and_the_metrics_count_them() {
    let repository = Repository::new();
    let (addr, stop, server) = serve(&repository.0);
    let eights = calls(addr, &[8; 16]);
    let mixed_sizes = [3, 5, 3, 5, 3, 5, 3, 5, 3, 5];
    let mixed = calls(addr, &mixed_sizes);
    let too_many = calls_status(addr, &[9]);
    let metrics = scrape(addr);
    let _ = stop.send(());
    server.join().expect("the server thread panicked");
    assert!(eights.iter().all(|&rows| rows == 8), "model calls of {eights:?} rows for a max_batch_size of 8");
    assert!(mixed.iter().all(|&rows| rows <= 8), "model calls of {mixed:?} rows for a max_batch_size of 8");
    assert!(mixed.contains(&8), "3- and 5-row requests queued together were not packed to 8: {mixed:?}");
    assert_eq!(too_many, [Err(400)], "a request of 9 rows for a max_batch_size of 8");

    // Each counter counts what its Triton namesake counts.
    let answers: Vec<(u64, u64)> = [8; 16]
        .iter()
        .chain(&mixed_sizes)
        .zip(eights.iter().chain(&mixed))
        .map(|(&n, &c)| (n as u64, c as u64))
        .collect();
    let executions = multiproc_test_support::model_calls(&answers);
    let rows: u64 = answers.iter().map(|(n, _)| n).sum();
    let series = |name: &str| -> u64 {
        let key = format!("{name}{{model=\"rows\",version=\"1\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&key)).unwrap_or_else(|| panic!("no {key}in\n{metrics}"));
        // A histogram's sum is written as a float ("168.0").
        let value: f64 = line[key.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(value.fract() == 0.0 && value >= 0.0, "{line}");
        value as u64
    };
    assert_eq!(series("nv_inference_request_success"), 26, "{metrics}");
    assert_eq!(series("nv_inference_count"), rows, "{metrics}");
    assert_eq!(rows, 16 * 8 + 5 * (3 + 5));
    assert_eq!(series("nv_inference_exec_count"), executions, "{answers:?}\n{metrics}");
    assert_eq!(series("multiproc_inference_batch_size_count"), executions, "{metrics}");
    assert_eq!(series("multiproc_inference_batch_size_sum"), rows, "{metrics}");
    // The request of 9 rows counts one failure (the HTTP layer refuses it
    // before it reaches a version, as a bad request).
    let failure = "nv_inference_request_failure{model=\"rows\",version=\"default\",reason=\"bad_request\"} 1";
    assert!(metrics.lines().any(|l| l == failure), "no {failure} in\n{metrics}");
}

/// The text of `/metrics`.
fn scrape(addr: SocketAddr) -> String {
    let agent = ureq::AgentBuilder::new().timeout(PATIENCE).build();
    let response = agent.get(&format!("http://{addr}/metrics")).call().expect("/metrics answers");
    response.into_string().expect("/metrics is text")
}
