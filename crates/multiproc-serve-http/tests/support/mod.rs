//! Shared by the integration tests that run `multiproc serve`'s server in
//! this process (`serve::launch`, then `Running::loaded`, which is what
//! `serve::start` does, on a runtime of its own thread), so that they can
//! watch it while the models load; and the HTTP calls they make to it.
//! (Not every test uses every helper: each test file builds its own copy.)

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
    #[allow(dead_code)]
    pub fn start(repository: PathBuf) -> InProcess {
        InProcess::start_with(repository, HttpOptions::default())
    }

    /// As [`InProcess::start`], with these HTTP limits.
    pub fn start_with(repository: PathBuf, http: HttpOptions) -> InProcess {
        // Port 0: the server binds a free port itself and says which (a
        // port found free beforehand could be taken before it is bound).
        let options =
            ServeOptions { repository, http_addr: SocketAddr::from(([127, 0, 0, 1], 0)), metrics_addr: None, http };
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

/// The body of a request [`call`] sends.
#[allow(dead_code)]
#[derive(Clone, Copy)]
pub enum Body<'a> {
    /// None.
    Empty,
    /// These bytes, with their `Content-Length`.
    Sized(&'a [u8]),
    /// These bytes, chunked, with no `Content-Length`.
    Chunked(&'a [u8]),
}

/// What [`call`] got back.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The body, as text (lossy).
    pub body: String,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

/// `method path` on the server at `base` with `headers` and `body`, whatever
/// the status; `Err` (why) when no answer came within 20 s (connection
/// refused or reset, time-out).
#[allow(dead_code)]
pub fn call(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Body<'_>) -> Result<Answer, String> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(20)).build();
    let request = headers.iter().fold(agent.request(method, &format!("{base}{path}")), |r, (k, v)| r.set(k, v));
    let answer = match body {
        Body::Empty => request.call(),
        Body::Sized(b) => request.send_bytes(b),
        Body::Chunked(b) => request.send(b),
    };
    let response = match answer {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let retry_after = response.header("Retry-After").map(str::to_string);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes)
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(Answer { status, body: String::from_utf8_lossy(&bytes).into_owned(), retry_after })
}

/// The value of the unlabelled series `name` in the server's `/metrics`.
///
/// # Panics
///
/// `/metrics` does not answer, or has no such series.
#[allow(dead_code)]
pub fn metric(base: &str, name: &str) -> f64 {
    let answer = call(base, "GET", "/metrics", &[], Body::Empty).unwrap_or_else(|e| panic!("/metrics: {e}"));
    assert_eq!(answer.status, 200, "/metrics: {}", answer.body);
    let value = answer.body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok());
    value.unwrap_or_else(|| panic!("no series {name} in /metrics: {}", answer.body))
}

/// Waits at most `patience` for `done` to be true, looking every 20 ms.
///
/// # Panics
///
/// It was not within `patience`: `what` says what was waited for.
#[allow(dead_code)]
pub fn wait_for(patience: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < patience, "waited {patience:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
