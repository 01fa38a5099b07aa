//! Shared by the integration tests that run `multiproc serve`'s server in
//! this process (`serve::start` on a runtime of its own thread), so that
//! they can watch it while `start` has not returned yet.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multiproc_serve_http::app::HttpOptions;
use multiproc_serve_http::serve::{ServeOptions, start};

/// A free loopback address (bound and let go: a small race, accepted).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("find a free port")
}

/// A server serving a repository on a free port, on its own thread.
pub struct InProcess {
    /// `http://address`.
    pub base: String,
    /// When `start` returned (its models loaded).
    pub started: mpsc::Receiver<Instant>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: mpsc::Receiver<()>,
    thread: JoinHandle<()>,
}

impl InProcess {
    /// Starts serving `repository`; returns at once (the models load
    /// meanwhile: see [`InProcess::started`]).
    pub fn start(repository: PathBuf) -> InProcess {
        let addr = free_addr();
        let options = ServeOptions { repository, http_addr: addr, metrics_addr: None, http: HttpOptions::default() };
        let (started_tx, started) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let running = start(options).await.expect("the server starts");
                let _ = started_tx.send(Instant::now());
                running
                    .run(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
            let _ = done_tx.send(());
        });
        InProcess { base: format!("http://{addr}"), started, stop, done, thread }
    }

    /// Stops the server and waits for its thread, at most `patience`.
    pub fn stop(self, patience: Duration) {
        self.stop.send(()).unwrap();
        self.done.recv_timeout(patience).expect("the server did not stop");
        self.thread.join().unwrap();
    }
}
