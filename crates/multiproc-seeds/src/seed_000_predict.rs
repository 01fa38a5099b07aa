//! Seed 000 (`python多进程`): the `PredictServer` — one model process per
//! version behind a Pipe, started on the first request for that version;
//! dead processes are dropped; a new version starts and the old one stops;
//! everything can be stopped; the status lists what runs.
//!
//! ```python
//! class PredictServer:
//!     def func(self, conn, version):          # the model process
//!         bsm = Model(version=version)        # loaded once, in the child
//!         while True:
//!             json_data = json.loads(conn.recv())
//!             res = bsm.predict(json_data["text"]) if json_data["version"] == version else "sorry, not match"
//!             conn.send(res)
//!     def predict(self, text, version):
//!         # drop dead processes; reuse the live one for `version`, or start
//!         # it and stop every other version
//! ```
//!
//! Rebuilt on `multiproc-serve`: the seed's bookkeeping (a dict of
//! processes, dropping the dead ones, stopping the others) becomes a
//! [`Server`] with one model and two versions: lazy start on the first
//! request, a killed model process restarted by the supervisor (the request
//! that comes meanwhile waits for it instead of failing), a zero-downtime
//! version switch, and `status()`.
//!
//! The "model" is a small bag-of-words linear classifier whose weights come
//! from the version number (so versions answer differently), built once in
//! its process: real work, not a sleep.

use std::collections::BTreeMap;
use std::time::Duration;

use multiproc_serve::{
    LoadError, Model, ModelSettings, ModelSpec, Request, RestartPolicy, ServeError, Server, StartMode, VersionPolicy,
    VersionState, WorkerContext, WorkerState,
};
use serde::{Deserialize, Serialize};

use crate::{Error, PATIENCE, Report};

/// The model's name in the server.
pub const MODEL: &str = "sentiment";

/// Words the model knows.
const VOCABULARY: [&str; 16] = [
    "good",
    "great",
    "love",
    "fast",
    "happy",
    "thanks",
    "excellent",
    "nice",
    "bad",
    "slow",
    "hate",
    "broken",
    "angry",
    "refund",
    "terrible",
    "late",
];

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Version of the model that answered.
    pub version: u32,
    /// `positive` or `negative`.
    pub label: String,
    /// The linear score.
    pub score: f64,
    /// Pid of the model process.
    pub pid: i32,
    /// How many requests this model process has answered, this one included.
    pub served: u64,
}

/// The linear model of one version.
struct Sentiment {
    version: u32,
    weights: BTreeMap<&'static str, f64>,
    bias: f64,
    served: u64,
}

impl Model for Sentiment {
    type Config = ();
    type Input = String;
    type Output = Prediction;

    /// "Loads" the version: weights from a generator seeded by it; positive
    /// words lean positive, negative words negative.
    fn load((): (), ctx: &WorkerContext) -> Result<Self, LoadError> {
        let version = u32::try_from(ctx.version).map_err(|_| format!("no weights for version {}", ctx.version))?;
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(version).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f64 / 1000.0
        };
        let weights = VOCABULARY
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, if i < 8 { 0.5 + next() } else { -0.5 - next() }))
            .collect();
        Ok(Sentiment { version, weights, bias: next() - 0.5, served: 0 })
    }

    fn predict(&mut self, batch: Vec<String>) -> Vec<Result<Prediction, String>> {
        let pid = std::process::id() as i32;
        batch
            .into_iter()
            .map(|text| {
                self.served += 1;
                let score = self.bias
                    + text
                        .split(|c: char| !c.is_alphanumeric())
                        .filter_map(|w| self.weights.get(w.to_lowercase().as_str()))
                        .sum::<f64>();
                let label = if score >= 0.0 { "positive" } else { "negative" }.to_string();
                Ok(Prediction { version: self.version, label, score, pid, served: self.served })
            })
            .collect()
    }
}

/// One line of [`PredictServer::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    /// The model version.
    pub version: u32,
    /// Pid of its process.
    pub pid: Option<i32>,
    /// Whether the process is alive (loaded and serving).
    pub alive: bool,
}

/// The seed's `PredictServer`, on a [`Server`].
#[derive(Debug)]
pub struct PredictServer {
    server: Server,
    current: Option<u32>,
    /// What the server did, in order (the seed's prints).
    pub log: Vec<String>,
}

fn serve_error(e: ServeError) -> Error {
    Error::Unexpected(e.to_string())
}

impl PredictServer {
    /// A server knowing versions 1 and 2, none started (lazy).
    ///
    /// # Errors
    ///
    /// The model could not be registered.
    pub fn new() -> Result<PredictServer, Error> {
        let server = Server::new();
        let settings = ModelSettings {
            start: StartMode::Lazy,
            version_policy: VersionPolicy::Specific(vec![1]),
            restart: RestartPolicy { initial_backoff: Duration::from_millis(10), ..Default::default() },
            request_timeout: Some(PATIENCE),
            ..Default::default()
        };
        server
            .add(ModelSpec::<Sentiment>::new(MODEL).version(1, ()).version(2, ()).settings(settings))
            .map_err(serve_error)?;
        Ok(PredictServer { server, current: None, log: Vec::new() })
    }

    /// Classifies `text` with model `version`: the first request starts it;
    /// a request for another version switches to it (the old one drains and
    /// stops).
    ///
    /// # Errors
    ///
    /// The model did not answer.
    pub fn predict(&mut self, text: &str, version: u32) -> Result<Prediction, Error> {
        if self.current != Some(version) {
            if let Some(old) = self.current {
                self.log.push(format!("switch model {old} -> {version}"));
                let answered = self.answered(old);
                self.server.switch(MODEL, u64::from(version)).map_err(serve_error)?;
                self.log.push(format!("stop process {old} (answered {answered} requests)"));
            } else if version != 1 {
                self.server.switch(MODEL, u64::from(version)).map_err(serve_error)?;
            }
            self.log.push(format!("init model {version}"));
            self.current = Some(version);
        }
        let reply = self
            .server
            .infer::<String, Prediction>(Request::new(MODEL, text.to_string()).version(u64::from(version)))
            .map_err(serve_error)?;
        Ok(reply.output)
    }

    fn answered(&self, version: u32) -> u64 {
        self.server.metrics().get(MODEL, u64::from(version)).map_or(0, |m| m.request_success)
    }

    /// Stops every model process (they drain first).
    ///
    /// # Errors
    ///
    /// The model is unknown (cannot happen here).
    pub fn stop_all(&mut self) -> Result<(), Error> {
        if let Some(v) = self.current.take() {
            let answered = self.answered(v);
            self.server.unload(MODEL).map_err(serve_error)?;
            self.log.push(format!("stop process {v} (answered {answered} requests)"));
        }
        Ok(())
    }

    /// The versions that run a process, and whether it is alive.
    pub fn status(&self) -> Vec<ModelStatus> {
        let status = self.server.status();
        let Some(model) = status.model(MODEL) else { return Vec::new() };
        model
            .versions
            .iter()
            .filter(|v| !matches!(v.state, VersionState::NotStarted | VersionState::Stopped | VersionState::Failed))
            .map(|v| ModelStatus {
                version: v.version as u32,
                pid: v.workers[0].pid,
                alive: matches!(v.workers[0].state, WorkerState::Idle | WorkerState::Busy),
            })
            .collect()
    }

    /// Pid of the process serving `version`, if one runs.
    pub fn pid_of(&self, version: u32) -> Option<i32> {
        self.status().into_iter().find(|s| s.version == version).and_then(|s| s.pid)
    }

    /// Restarts of `version`'s process so far.
    pub fn restarts(&self, version: u32) -> u64 {
        self.server.status().model(MODEL).and_then(|m| m.version(u64::from(version))).map_or(0, |v| v.restarts)
    }

    /// The underlying server.
    pub fn server(&self) -> &Server {
        &self.server
    }
}

/// What [`predict_server`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictOutcome {
    /// Two requests to version 1: same process, `served` 1 then 2.
    pub v1: Vec<Prediction>,
    /// Version 1 again after its process was killed: a new process.
    pub v1_restarted: Prediction,
    /// Restarts of version 1 after the kill.
    pub v1_restarts: u64,
    /// The status before the first request (lazy: nothing runs).
    pub status_before: Vec<ModelStatus>,
    /// The status while version 1 runs.
    pub status_v1: Vec<ModelStatus>,
    /// Version 2: a new process; version 1 stopped.
    pub v2: Vec<Prediction>,
    /// The status after the switch.
    pub status_v2: Vec<ModelStatus>,
    /// The status after `stop_all`.
    pub status_stopped: Vec<ModelStatus>,
    /// Pid of the killed version-1 process.
    pub killed_pid: i32,
    /// What the server logged.
    pub log: Vec<String>,
}

/// Runs the seed's scenario: start lazily, reuse, a killed process
/// restarted, switch version, stop all, status.
///
/// # Errors
///
/// A model process failed.
pub fn predict_server() -> Result<Report<PredictOutcome>, Error> {
    let mut server = PredictServer::new()?;
    let status_before = server.status();
    let texts = ["great service, thanks", "slow and broken, I want a refund"];
    let v1 = texts.iter().map(|t| server.predict(t, 1)).collect::<Result<Vec<_>, _>>()?;
    let status_v1 = server.status();
    let killed_pid = server.pid_of(1).ok_or_else(|| Error::Unexpected("version 1 is not running".into()))?;
    // A crash: the supervisor notices at once and starts a new process; the
    // next request waits for it.
    multiproc::process::kill_pid(killed_pid).map_err(|e| Error::Unexpected(format!("kill {killed_pid}: {e}")))?;
    let mut tries = 0;
    while server.restarts(1) == 0 && tries < 3000 {
        std::thread::sleep(Duration::from_millis(1));
        tries += 1;
    }
    server.log.push(format!("model 1 process {killed_pid} died; the supervisor restarted it"));
    let v1_restarted = server.predict(texts[0], 1)?;
    let v1_restarts = server.restarts(1);
    let v2 = texts.iter().map(|t| server.predict(t, 2)).collect::<Result<Vec<_>, _>>()?;
    let status_v2 = server.status();
    server.stop_all()?;
    let status_stopped = server.status();
    let log = server.log.clone();
    let mut lines = log.clone();
    for p in v1.iter().chain([&v1_restarted]).chain(&v2) {
        lines.push(format!("v{} pid {}: {} ({:+.3}), request {}", p.version, p.pid, p.label, p.score, p.served));
    }
    let outcome = PredictOutcome {
        v1,
        v1_restarted,
        v1_restarts,
        status_before,
        status_v1,
        v2,
        status_v2,
        status_stopped,
        killed_pid,
        log,
    };
    Ok(Report { lines, outcome })
}
