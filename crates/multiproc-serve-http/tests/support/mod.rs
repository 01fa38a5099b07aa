//! Shared by the integration tests that run `multiproc serve`'s server in
//! this process (`serve::launch`, then `Running::loaded`, which is what
//! `serve::start` does, on a runtime of its own thread), so that they can
//! watch it while the models load.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multiproc_serve_http::app::HttpOptions;
use multiproc_serve_http::serve::{ServeOptions, launch};

/// How long the server may take to bind its port.
const BIND_PATIENCE: Duration = Duration::from_secs(60);

/// A server serving a repository on a free port, on its own thread.
pub struct InProcess {
    /// `http://address`.
    pub base: String,
    /// When the models were loaded (when `start` would have returned).
    pub started: mpsc::Receiver<Instant>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: mpsc::Receiver<()>,
    thread: JoinHandle<()>,
}

impl InProcess {
    /// Starts serving `repository`; returns once its port is bound (the
    /// models load meanwhile: see [`InProcess::started`]).
    pub fn start(repository: PathBuf) -> InProcess {
        // Port 0: the server binds a free port itself and says which (a
        // port found free beforehand could be taken before it is bound).
        let options = ServeOptions {
            repository,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            http: HttpOptions::default(),
        };
        let (addr_tx, addr) = mpsc::channel();
        let (started_tx, started) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let running = launch(options).await.expect("the server starts");
                let _ = addr_tx.send(running.http_addr);
                running.loaded().await;
                let _ = started_tx.send(Instant::now());
                running
                    .run(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
            let _ = done_tx.send(());
        });
        let addr: SocketAddr = addr.recv_timeout(BIND_PATIENCE).expect("the server did not bind its port");
        InProcess { base: format!("http://{addr}"), started, stop, done, thread }
    }

    /// Stops the server and waits for its thread, at most `patience`.
    pub fn stop(self, patience: Duration) {
        self.stop.send(()).unwrap();
        self.done.recv_timeout(patience).expect("the server did not stop");
        self.thread.join().unwrap();
    }
}
