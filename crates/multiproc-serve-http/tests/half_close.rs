//! A client that sends its request and then shuts down its write side
//! (as `curl --http1.0`-like tools and some proxies do) still gets its
//! answer: the server, on loopback, with an empty model repository.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use multiproc_serve_http::app::HttpOptions;
use multiproc_serve_http::serve::{ServeOptions, start};

/// How long a read may wait for the server; generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A running server on an ephemeral port, stopped (and its empty
/// repository removed) when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    repository: PathBuf,
}

impl TestServer {
    fn start() -> TestServer {
        let repository = std::env::temp_dir().join(format!("multiproc-half-close-{}", std::process::id()));
        std::fs::create_dir_all(&repository).expect("create the empty repository");
        let options = ServeOptions {
            repository: repository.clone(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            http: HttpOptions::default(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a tokio runtime");
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
        TestServer { addr, stop: Some(stop), thread: Some(thread), repository }
    }

    /// Sends `request`, shuts down the write side, and reads until the
    /// server closes (or `PATIENCE` passes: then what came so far).
    fn ask_then_half_close(&self, request: &str) -> String {
        let mut stream = TcpStream::connect_timeout(&self.addr, PATIENCE).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(request.as_bytes()).expect("send the request");
        stream.shutdown(Shutdown::Write).expect("half-close");
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.repository);
    }
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_its_answer() {
    let server = TestServer::start();
    // HTTP/1.1 (kept alive), through the router.
    let live = server.ask_then_half_close("GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(live.starts_with("HTTP/1.1 200"), "no answer to a half-closed request: {live:?}");
    // HTTP/1.0, as `curl --http1.0` sends it.
    let live = server.ask_then_half_close("GET /v2/health/live HTTP/1.0\r\n\r\n");
    assert!(live.starts_with("HTTP/1.1 200") || live.starts_with("HTTP/1.0 200"), "{live:?}");
    // With a body, through the inference fast path (no such model: 404).
    let body = r#"{"inputs":[]}"#;
    let infer = server.ask_then_half_close(&format!(
        "POST /v2/models/none/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert!(infer.starts_with("HTTP/1.1 404"), "{infer:?}");
    assert!(infer.contains("none"), "{infer:?}");
}
