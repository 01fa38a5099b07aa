//! `max_batch_size` caps the rows of one model call, as in Triton: a
//! request's batch dimension counts in the batcher, so requests of 8 rows
//! under a `max_batch_size` of 8 each run alone, and 3- and 5-row requests
//! share a call of 8. The model answers every row with the rows of the call
//! it ran in.

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
    let threads: Vec<_> = sizes
        .iter()
        .map(|&n| {
            std::thread::spawn(move || {
                let body = serde_json::json!({"inputs": [{"name": "x", "shape": [n, 1], "datatype": "FP32", "data": vec![1.0; n]}]});
                let agent = ureq::AgentBuilder::new().timeout(PATIENCE).build();
                let answer: serde_json::Value = agent
                    .post(&format!("http://{addr}/v2/models/rows/infer"))
                    .send_json(body)
                    .expect("an answer")
                    .into_json()
                    .expect("a JSON answer");
                let data = answer["outputs"][0]["data"].as_array().cloned().unwrap_or_default();
                assert_eq!(data.len(), n, "{answer}");
                data[0].as_f64().expect("a number") as usize
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("a request thread panicked")).collect()
}

#[test]
fn one_model_call_gets_at_most_max_batch_size_rows() {
    let repository = Repository::new();
    let (addr, stop, server) = serve(&repository.0);
    let eights = calls(addr, &[8; 16]);
    let mixed = calls(addr, &[3, 5, 3, 5, 3, 5, 3, 5, 3, 5]);
    let _ = stop.send(());
    server.join().expect("the server thread panicked");
    assert!(eights.iter().all(|&rows| rows == 8), "model calls of {eights:?} rows for a max_batch_size of 8");
    assert!(mixed.iter().all(|&rows| rows <= 8), "model calls of {mixed:?} rows for a max_batch_size of 8");
    assert!(mixed.contains(&8), "3- and 5-row requests queued together were not packed to 8: {mixed:?}");
}
