//! Test models and helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use multiproc_serve::{
    InferFuture, LoadError, Model, ModelSettings, ModelSpec, Request, RestartPolicy, ServeError, Server, StartMode,
    VersionMetrics, WorkerContext,
};
use serde::{Deserialize, Serialize};

/// How the test model behaves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Behaviour {
    /// Sleep per batch, ms (only for batches holding an input below `slow_below`, if set).
    pub batch_ms: u64,
    /// See `batch_ms`.
    pub slow_below: Option<u64>,
    /// Panic in `load` with this message.
    pub panic_on_load: Option<String>,
    /// Sleep in `load`, ms.
    pub load_ms: u64,
}

/// What the test model answers: who computed what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tagged {
    pub version: u64,
    pub pid: u32,
    pub value: u64,
    pub batch: usize,
}

/// Doubles numbers, tagging each answer with its version, pid and batch size.
pub struct Doubler {
    version: u64,
    behaviour: Behaviour,
}

impl Model for Doubler {
    type Config = Behaviour;
    type Input = u64;
    type Output = Tagged;

    fn load(behaviour: Behaviour, ctx: &WorkerContext) -> Result<Self, LoadError> {
        std::thread::sleep(Duration::from_millis(behaviour.load_ms));
        if let Some(msg) = &behaviour.panic_on_load {
            panic!("{msg}");
        }
        Ok(Doubler { version: ctx.version, behaviour })
    }

    fn predict(&mut self, batch: Vec<u64>) -> Vec<Result<Tagged, String>> {
        if self.behaviour.slow_below.is_none_or(|b| batch.iter().any(|x| *x < b)) {
            std::thread::sleep(Duration::from_millis(self.behaviour.batch_ms));
        }
        let n = batch.len();
        batch
            .into_iter()
            .map(|x| {
                if x == u64::MAX {
                    Err("no answer for u64::MAX".to_string())
                } else {
                    Ok(Tagged { version: self.version, pid: std::process::id(), value: 2 * x, batch: n })
                }
            })
            .collect()
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future on this thread; panics if it is not done within `timeout`
/// (no test may hang).
pub fn block_on<F: Future>(f: F, timeout: Duration) -> F::Output {
    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        let now = Instant::now();
        assert!(now < deadline, "future not done within {timeout:?}");
        std::thread::park_timeout(deadline - now);
    }
}

/// Polls `cond` every 5 ms up to `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

pub const PATIENCE: Duration = Duration::from_secs(30);

/// The counters of `model` version `version` once `settled` holds for
/// them, or as they are after [`PATIENCE`]; the test then asserts on them.
/// A caller's own outcomes are counted before it can read them, but a
/// request whose deadline passed is counted when the server next handles
/// it (just after `in_flight` or `queue_depth` went down), and other
/// callers' answers may still be on their way.
pub fn metrics_when(
    server: &Server,
    model: &str,
    version: u64,
    settled: impl Fn(&VersionMetrics) -> bool,
) -> VersionMetrics {
    let now =
        || server.metrics().get(model, version).cloned().unwrap_or_else(|| panic!("no metrics for {model} v{version}"));
    wait_for(PATIENCE, || settled(&now()));
    now()
}

/// Requests counted by `m`, answered or failed.
pub fn requests_counted(m: &VersionMetrics) -> u64 {
    m.request_success + m.request_failure.values().sum::<u64>()
}

/// A `tracing` subscriber that hands every event, as one line of
/// `field=value` pairs, to its function.
pub struct OnEvent<F>(pub F);

struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl<F: Fn(String) + Send + Sync + 'static> tracing::Subscriber for OnEvent<F> {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        (self.0)(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Installs a subscriber keeping every event's line, for the whole test
/// binary (once), and returns the lines.
pub fn capture_log() -> Arc<std::sync::Mutex<Vec<String>>> {
    static LINES: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<String>>>> = std::sync::OnceLock::new();
    Arc::clone(LINES.get_or_init(|| {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let keep = OnEvent(move |line| sink.lock().unwrap_or_else(|e| e.into_inner()).push(line));
        let _ = tracing::subscriber::set_global_default(keep);
        lines
    }))
}

/// Appends this process's pid and a newline to the file at `path` in one
/// write, so that processes noting theirs at the same moment never mix
/// their lines (`writeln!` with an argument writes the pid and the newline
/// separately, and two workers loading at once interleaved them).
pub fn note_pid(path: &str) -> std::io::Result<()> {
    use std::io::Write;
    let line = format!("{}\n", std::process::id());
    std::fs::OpenOptions::new().append(true).create(true).open(path)?.write_all(line.as_bytes())
}

/// Model "m", version 1: one worker, batches of 2; a batch holding an input
/// below 2 sleeps `slow_ms`. Started lazily by 8 requests sent while it
/// loads, so that when it is ready it takes batch {0, 1} (slow) and holds
/// batch {2, 3} in its pipe, while {4..8} wait in the queue. Returns the
/// futures and the worker's pid. `settings` gives the rest of the settings.
pub fn two_batches_held_and_four_queued(
    server: &Server,
    slow_ms: u64,
    settings: ModelSettings,
) -> (Vec<InferFuture<Tagged>>, i32) {
    let settings = ModelSettings {
        max_batch_size: 2,
        start: StartMode::Lazy,
        restart: RestartPolicy { initial_backoff: Duration::from_millis(20), ..Default::default() },
        ..settings
    };
    let behaviour = Behaviour { batch_ms: slow_ms, slow_below: Some(2), load_ms: 500, ..Default::default() };
    server.add(ModelSpec::<Doubler>::new("m").version(1, behaviour).settings(settings)).unwrap();
    let futures: Vec<_> = (0..8u64).map(|i| server.infer_async::<u64, Tagged>(Request::new("m", i))).collect();
    assert!(
        wait_for(PATIENCE, || {
            let v = server.status().model("m").unwrap().versions[0].clone();
            v.in_flight == 4 && v.queue_depth == 4
        }),
        "{:?}",
        server.status().model("m").unwrap().versions[0]
    );
    let pid = server.status().model("m").unwrap().versions[0].workers[0].pid.unwrap();
    (futures, pid)
}

pub fn kill(pid: i32) {
    // SAFETY: kill(2) on the pid of our own worker process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// Waits for the futures of [`two_batches_held_and_four_queued`]: the
/// batch the worker `pid` ran fails as `lost` says; the six requests it
/// never started are answered by another worker. Returns their pids.
pub fn only_the_batch_that_ran_fails(
    futures: Vec<InferFuture<Tagged>>,
    pid: i32,
    lost: impl Fn(&ServeError) -> bool,
) -> Vec<i32> {
    let mut pids = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        let result = block_on(f, PATIENCE);
        if i < 2 {
            assert!(result.as_ref().is_err_and(&lost), "request {i} of the batch that ran: {result:?}");
        } else {
            let reply = result.unwrap_or_else(|e| panic!("request {i} never started but failed: {e}"));
            assert_eq!(reply.output.value, 2 * i as u64);
            assert_ne!(reply.output.pid as i32, pid);
            pids.push(reply.output.pid as i32);
        }
    }
    pids
}
