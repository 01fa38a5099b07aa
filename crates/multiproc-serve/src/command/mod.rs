//! External-command models: any executable (Python with PyTorch, a shell
//! script, a C++ binary) that speaks the framed stdin/stdout protocol of
//! [`protocol`]. It runs under a worker process of the server, so it gets
//! the same supervision, batching and versions as a Rust model: the worker
//! starts the command when it loads, waits for its `ready` frame, forwards
//! batches, and dies (and is restarted) if the command dies.
//!
//! A reference worker in Python, standard library only, ships as
//! `crates/multiproc-serve/python/multiproc_worker.py`.
//!
//! A command that dies or breaks the protocol (bytes that are not a frame,
//! a frame cut short, the answer to another batch) is killed and its worker
//! restarted; the requests of its batch fail with `WorkerLost`, whose
//! message ends with the last line the command wrote to stderr (a Python
//! traceback's exception); one that dies while idle ends its worker within
//! about 100 ms, and the server replaces it before a request is written to
//! the dead command. A whole result with the wrong number of
//! responses fails only that batch (`ModelFailed`). Its stderr reaches the
//! log line by line (long lines in 8 KiB pieces, bytes that are not UTF-8
//! shown as U+FFFD).
//!
//! The command starts with SIGINT and SIGTERM ignored, as the server's own
//! workers run: a terminal's Ctrl-C or a service manager's SIGTERM reaches
//! every process of the group and is for the server, which answers what is
//! in flight before it stops its workers. The command dies with its worker
//! (SIGKILL), so it needs no handler of its own; one it installs anyway
//! takes those signals back.
//!
//! ```no_run
//! use multiproc_serve::{CommandConfig, CommandModel, ModelSpec, Server};
//!
//! let config = CommandConfig::new("python3").arg("crates/multiproc-serve/python/multiproc_worker.py");
//! let server = Server::new();
//! server.add(ModelSpec::<CommandModel>::new("py").version(1, config)).unwrap();
//! ```

pub mod protocol;
mod stderr;

use std::io::{self, BufReader, BufWriter};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{LoadError, Model, WorkerContext};
use crate::tensor::Tensor;
use protocol::{Header, RequestRef, get_tensors, put_tensors, read_frame, write_frame};
use stderr::StderrTail;

/// How to start an external-command model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandConfig {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Its working directory (default: the server's).
    pub cwd: Option<PathBuf>,
    /// Largest frame accepted from the command (default 1 GiB).
    pub max_frame_bytes: usize,
}

impl CommandConfig {
    /// Runs `program` with no argument.
    pub fn new(program: impl Into<PathBuf>) -> CommandConfig {
        CommandConfig {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            max_frame_bytes: 1 << 30,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

/// A model served by an external command; inputs and outputs are named tensors.
#[derive(Debug)]
pub struct CommandModel {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    max_frame: usize,
    next_id: u64,
    /// The last line of its stderr, for the errors that say why it failed.
    stderr: Arc<StderrTail>,
}

/// How long a failed command's stderr is waited for, to tell why it failed.
const STDERR_GRACE: Duration = Duration::from_millis(500);

/// How often an idle worker looks whether its command still runs.
const ALIVE_CHECK: Duration = Duration::from_millis(100);

impl CommandModel {
    /// How the command ended, waiting up to `grace` for it to exit; one
    /// still running then is killed.
    fn exit_status(&mut self, grace: Duration) -> String {
        let until = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) | Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return "still running; killed".to_string();
                }
            }
        }
    }

    /// The command died or broke the protocol: the worker process exits so
    /// the server fails the batch (worker lost) and restarts it.
    fn fatal(&mut self, what: &str) -> ! {
        let status = self.child.try_wait().ok().flatten().map(|s| s.to_string()).unwrap_or_else(|| {
            let _ = self.child.kill();
            "still running; killed".to_string()
        });
        let why = self.stderr.explain(STDERR_GRACE);
        // The server prefixes the line with the model and version.
        crate::worker::log_to_server(&format!("external command failed: {what} (command {status}){why}"));
        std::process::exit(3);
    }
}

impl Model for CommandModel {
    type Config = CommandConfig;
    type Input = Vec<Tensor>;
    type Output = Vec<Tensor>;

    /// Starts the command and waits for its ready message. A program that
    /// does not exist or may not be run is a permanent failure (no retry
    /// fixes it: correct the program and load again), anything else is
    /// retried.
    fn load(config: CommandConfig, ctx: &WorkerContext) -> Result<Self, LoadError> {
        let mut cmd = Command::new(&config.program);
        cmd.args(&config.args)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .env("MULTIPROC_MODEL", &ctx.model)
            .env("MULTIPROC_VERSION", ctx.version.to_string())
            .env("MULTIPROC_INSTANCE", ctx.instance.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &config.cwd {
            cmd.current_dir(dir);
        }
        // It dies with this worker, and leaves stopping to the server (as
        // the worker does: see `worker_main`).
        multiproc::process::kill_command_with_parent(&mut cmd);
        multiproc::process::command_ignores_stop_signals(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            let reason = format!("could not start {}: {e}", config.program.display());
            match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                    LoadError::permanent(format!("{reason}; set the program to an executable file"))
                }
                _ => LoadError::retry(reason),
            }
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(LoadError::retry("the command's pipes are missing"));
        };
        let tail = StderrTail::forward(stderr);
        let mut model = CommandModel {
            child,
            stdin: BufWriter::new(stdin),
            stdout: BufReader::new(stdout),
            max_frame: config.max_frame_bytes,
            next_id: 0,
            stderr: tail,
        };
        match read_frame(&mut model.stdout, model.max_frame) {
            Ok(Some((Header::Ready, _))) => Ok(model),
            Ok(Some((Header::Error { message }, _))) => {
                // It should exit now; one that lingers must not hold the load up.
                let _ = model.child.kill();
                Err(LoadError::retry(format!("the command could not load: {message}")))
            }
            Ok(Some((other, _))) => {
                let _ = model.child.kill();
                Err(LoadError::retry(format!("the command sent {other:?} before ready")))
            }
            Ok(None) => {
                // It should be exiting; one that lives on (its stdout sent
                // elsewhere) must not hold the load up.
                let status = model.exit_status(STDERR_GRACE);
                let why = model.stderr.explain(STDERR_GRACE);
                Err(LoadError::retry(format!("the command closed its stdout before it was ready ({status}){why}")))
            }
            Err(e) => {
                let _ = model.child.kill();
                let why = model.stderr.explain(STDERR_GRACE);
                Err(LoadError::retry(format!("the command broke the protocol: {e}{why}")))
            }
        }
    }

    fn predict(&mut self, batch: Vec<Vec<Tensor>>) -> Vec<Result<Vec<Tensor>, String>> {
        self.next_id += 1;
        let id = self.next_id;
        let n = batch.len();
        let mut blob = Vec::new();
        let requests = batch.iter().map(|inputs| RequestRef { inputs: put_tensors(inputs, &mut blob) }).collect();
        if let Err(e) = write_frame(&mut self.stdin, &Header::Batch { id, requests }, &blob) {
            self.fatal(&format!("writing the batch: {e}"));
        }
        let (responses, blob) = match read_frame(&mut self.stdout, self.max_frame) {
            Ok(Some((Header::Result { id: got, responses }, blob))) if got == id => (responses, blob),
            Ok(Some((other, _))) => {
                self.fatal(&format!("expected the result of batch {id} with {n} responses, got {other:?}"))
            }
            Ok(None) => self.fatal("the command closed its stdout"),
            Err(e) => self.fatal(&e),
        };
        // A whole frame, in step with the stream: only this batch is wrong.
        if responses.len() != n {
            let e = format!("the command answered {} responses for a batch of {n}", responses.len());
            return vec![Err(e); n];
        }
        responses
            .into_iter()
            .map(|r| match (r.outputs, r.error) {
                (_, Some(error)) => Err(error),
                (Some(outputs), None) => get_tensors(&outputs, &blob),
                (None, None) => Err("the command's response has neither outputs nor error".to_string()),
            })
            .collect()
    }

    /// A command that exited while idle (killed, out of memory) ends its
    /// worker before a batch is written to it and fails. The command is
    /// another process, whose end the worker's wait for a batch does not
    /// see, so the idle worker looks every `ALIVE_CHECK` (100 ms).
    fn check_alive(&mut self) -> Result<Option<Duration>, String> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                Err(format!("the external command exited while idle ({status}){}", self.stderr.explain(STDERR_GRACE)))
            }
            _ => Ok(Some(ALIVE_CHECK)),
        }
    }
}

impl Drop for CommandModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
