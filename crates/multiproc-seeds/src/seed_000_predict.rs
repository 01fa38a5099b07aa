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
//! The "model" is a small bag-of-words linear classifier whose weights come
//! from the version number (so versions answer differently), built once in
//! its process: real work, not a sleep.

use std::collections::BTreeMap;

use multiproc::{Connection, Pipe, Process};
use serde::{Deserialize, Serialize};

use crate::{Error, PATIENCE, Report};

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

/// A request to a model process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The version the caller wants.
    pub version: u32,
    /// The text to classify.
    pub text: String,
}

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
struct Model {
    version: u32,
    weights: BTreeMap<&'static str, f64>,
    bias: f64,
}

impl Model {
    /// "Loads" version `version`: weights from a generator seeded by it;
    /// positive words lean positive, negative words negative.
    fn load(version: u32) -> Model {
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
        Model { version, weights, bias: next() - 0.5 }
    }

    fn predict(&self, text: &str) -> (String, f64) {
        let score = self.bias
            + text
                .split(|c: char| !c.is_alphanumeric())
                .filter_map(|w| self.weights.get(w.to_lowercase().as_str()))
                .sum::<f64>();
        (if score >= 0.0 { "positive" } else { "negative" }.to_string(), score)
    }
}

/// The model process: loads the model once, then answers until the pipe closes.
fn serve_model(conn: Connection<Result<Prediction, String>>, requests: Connection<Request>, version: u32) -> u64 {
    let model = Model::load(version);
    let pid = std::process::id() as i32;
    let mut served = 0;
    while let Ok(req) = requests.recv() {
        let reply = if req.version == model.version {
            served += 1;
            let (label, score) = model.predict(&req.text);
            Ok(Prediction { version, label, score, pid, served })
        } else {
            Err("sorry, not match".to_string())
        };
        if conn.send(&reply).is_err() {
            break;
        }
    }
    served
}

/// One running model version.
struct ModelProcess {
    requests: Connection<Request>,
    replies: Connection<Result<Prediction, String>>,
    process: Process<u64>,
}

/// Runs one model process per version, as the seed's `PredictServer`.
#[derive(Default)]
pub struct PredictServer {
    models: BTreeMap<u32, ModelProcess>,
    /// What the server did, in order (the seed's prints).
    pub log: Vec<String>,
}

impl std::fmt::Debug for PredictServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredictServer").field("status", &self.status()).finish()
    }
}

/// One line of [`PredictServer::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    /// The model version.
    pub version: u32,
    /// Pid of its process.
    pub pid: Option<i32>,
    /// Whether the process is alive.
    pub alive: bool,
}

impl PredictServer {
    /// A server with no model running.
    pub fn new() -> PredictServer {
        PredictServer::default()
    }

    /// Classifies `text` with model `version`, starting that version's
    /// process if needed (and stopping the others).
    ///
    /// # Errors
    ///
    /// The model process could not start or did not answer.
    pub fn predict(&mut self, text: &str, version: u32) -> Result<Prediction, Error> {
        self.drop_dead();
        if !self.models.contains_key(&version) {
            self.start(version)?;
        }
        let model = self.models.get(&version).expect("started above");
        model.requests.send(&Request { version, text: text.to_string() })?;
        model.replies.recv_timeout(PATIENCE)?.map_err(Error::Unexpected)
    }

    /// Forgets every model process that died (reaping it).
    fn drop_dead(&mut self) {
        let dead: Vec<u32> = self.models.iter().filter(|(_, m)| !m.process.is_alive()).map(|(v, _)| *v).collect();
        for v in dead {
            let mut m = self.models.remove(&v).expect("listed above");
            let _ = m.process.join_timeout(PATIENCE);
            self.log.push(format!("model {v} is dead (exit code {:?}); dropped", m.process.exitcode()));
        }
    }

    fn start(&mut self, version: u32) -> Result<(), Error> {
        self.log.push(format!("init model {version}"));
        let (requests, their_requests) = Pipe::<Request>::duplex()?;
        let (replies, their_replies) = Pipe::<Result<Prediction, String>>::duplex()?;
        let process = Process::builder()
            .name(format!("model-v{version}"))
            .daemon(true)
            .spawn(serve_model, (their_replies, their_requests, version))?;
        self.models.insert(version, ModelProcess { requests, replies, process });
        // The other versions go offline.
        let others: Vec<u32> = self.models.keys().copied().filter(|v| *v != version).collect();
        for v in others {
            self.stop(v)?;
        }
        Ok(())
    }

    /// Stops one version: closes its pipe (it returns how many requests it
    /// answered), or terminates it if it does not finish.
    fn stop(&mut self, version: u32) -> Result<(), Error> {
        let Some(mut m) = self.models.remove(&version) else { return Ok(()) };
        drop(m.requests);
        let served = match m.process.join_timeout(PATIENCE) {
            Ok(n) => n,
            Err(_) => {
                m.process.terminate()?;
                let _ = m.process.join_timeout(PATIENCE);
                0
            }
        };
        self.log.push(format!("stop process {version} (answered {served} requests)"));
        Ok(())
    }

    /// Stops every model process.
    ///
    /// # Errors
    ///
    /// A process could not be signalled.
    pub fn stop_all(&mut self) -> Result<(), Error> {
        let versions: Vec<u32> = self.models.keys().copied().collect();
        for v in versions {
            self.stop(v)?;
        }
        Ok(())
    }

    /// The model processes and whether they are alive.
    pub fn status(&self) -> Vec<ModelStatus> {
        self.models
            .iter()
            .map(|(v, m)| ModelStatus { version: *v, pid: m.process.pid(), alive: m.process.is_alive() })
            .collect()
    }

    /// Pid of the process serving `version`, if one runs.
    pub fn pid_of(&self, version: u32) -> Option<i32> {
        self.models.get(&version).and_then(|m| m.process.pid())
    }
}

impl Drop for PredictServer {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// What [`predict_server`] showed.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictOutcome {
    /// Two requests to version 1: same process, `served` 1 then 2.
    pub v1: Vec<Prediction>,
    /// Version 1 again after its process was killed: a new process.
    pub v1_restarted: Prediction,
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

/// Runs the seed's scenario: start lazily, reuse, drop a dead process,
/// switch version, stop all, status.
///
/// # Errors
///
/// A model process failed.
pub fn predict_server() -> Result<Report<PredictOutcome>, Error> {
    let mut server = PredictServer::new();
    let texts = ["great service, thanks", "slow and broken, I want a refund"];
    let v1 = texts.iter().map(|t| server.predict(t, 1)).collect::<Result<Vec<_>, _>>()?;
    let status_v1 = server.status();
    let killed_pid = server.pid_of(1).ok_or_else(|| Error::Unexpected("version 1 is not running".into()))?;
    // A crash: the next request notices, drops the dead process, starts a new one.
    // SAFETY: kill(2) on the pid of our own model process.
    unsafe { libc::kill(killed_pid, libc::SIGKILL) };
    let mut tries = 0;
    while server.status().first().is_some_and(|s| s.alive) && tries < 3000 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        tries += 1;
    }
    let v1_restarted = server.predict(texts[0], 1)?;
    let v2 = texts.iter().map(|t| server.predict(t, 2)).collect::<Result<Vec<_>, _>>()?;
    let status_v2 = server.status();
    server.stop_all()?;
    let status_stopped = server.status();
    let log = server.log.clone();
    let mut lines = log.clone();
    for p in v1.iter().chain([&v1_restarted]).chain(&v2) {
        lines.push(format!("v{} pid {}: {} ({:+.3}), request {}", p.version, p.pid, p.label, p.score, p.served));
    }
    let outcome = PredictOutcome { v1, v1_restarted, status_v1, v2, status_v2, status_stopped, killed_pid, log };
    Ok(Report { lines, outcome })
}
