//! Test support: a running `multiproc serve` and a model repository in a
//! temporary directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const EXE: &str = env!("CARGO_BIN_EXE_multiproc");

/// Every datatype of the protocol.
pub const DATATYPES: [&str; 13] =
    ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"];

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("multiproc-test-{tag}-{}-{nonce:x}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference Python worker of multiproc-serve.
pub fn worker_dir() -> PathBuf {
    manifest().join("../multiproc-serve/python")
}

pub fn write(path: &Path, text: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The echo model's config: one `in_X`/`out_X` pair per datatype, variable
/// length, `max_batch_size` 0 (no batch dimension), `delay` seconds per batch.
pub fn echo_config(delay: f64) -> String {
    echo_config_for(delay, &DATATYPES)
}

/// The echo model's config for these datatypes only.
pub fn echo_config_for(delay: f64, datatypes: &[&str]) -> String {
    let echo = manifest().join("tests/support/echo.py");
    let mut c = format!(
        "platform = \"command\"\ncommand = [\"python3\", {:?}, \"{delay}\"]\nmax_batch_size = 0\n",
        echo.display().to_string()
    );
    for (kind, prefix) in [("input", "in"), ("output", "out")] {
        for dt in datatypes {
            c.push_str(&format!("[[{kind}]]\nname = \"{prefix}_{dt}\"\ndatatype = \"{dt}\"\ndims = [-1]\n"));
        }
    }
    c
}

/// A repository: `digits` (the demo ONNX model), `echo` (every datatype),
/// `slow` (echo taking 300 ms per batch) and `broken` (a bad config).
pub fn test_repository(dir: &Path) {
    digits_model(dir);
    write(&dir.join("echo/config.toml"), echo_config(0.0).as_bytes());
    std::fs::create_dir_all(dir.join("echo/1")).unwrap();
    write(
        &dir.join("slow/config.toml"),
        echo_config(0.3).replace("max_batch_size = 0", "max_batch_size = 0\ninstances = 2").as_bytes(),
    );
    std::fs::create_dir_all(dir.join("slow/1")).unwrap();
    write(&dir.join("broken/config.toml"), b"platform = \"onnx\"\nmax_batch_size = -4\n");
    std::fs::create_dir_all(dir.join("broken/1")).unwrap();
}

/// The demo's `digits` (an ONNX classifier of 8×8 images: `input` FP32
/// `[-1, 64]`, `probabilities` FP32 `[-1, 10]`) in the repository `dir`.
pub fn digits_model(dir: &Path) {
    let demo = manifest().join("../multiproc-serve-http/demo/repository/digits");
    write(&dir.join("digits/config.toml"), &std::fs::read(demo.join("config.toml")).unwrap());
    write(&dir.join("digits/1/model.onnx"), &std::fs::read(demo.join("1/model.onnx")).unwrap());
}

/// A running `multiproc serve`, stopped (SIGKILL) on drop if still running.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub stderr: mpsc::Receiver<String>,
    pub stdout: mpsc::Receiver<String>,
}

impl Served {
    /// Starts `multiproc serve --http-port 0 <args>` and waits (60 s at
    /// most) for the line with its address.
    pub fn start(args: &[&str]) -> Served {
        Served::start_with(args, false)
    }

    /// As [`Served::start`], as the leader of its own process group (as a
    /// shell runs a job), for signals sent to the whole group.
    pub fn start_in_own_group(args: &[&str]) -> Served {
        Served::start_with(args, true)
    }

    fn start_with(args: &[&str], own_group: bool) -> Served {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(EXE);
        if own_group {
            command.process_group(0);
        }
        let mut child = command
            .args(["serve", "--http-port", "0"])
            .args(args)
            .env("MULTIPROC_WORKER_DIR", worker_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start multiproc serve");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (etx, erx) = mpsc::channel();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "multiproc serve printed no address in 60 s: {}",
                erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
            )
        });
        let addr = line.rsplit("http://").next().unwrap().trim().to_string();
        Served { child, base: format!("http://{addr}"), stderr: erx, stdout: rx }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits (30 s at most) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_and_wait(self.child.id() as i32, libc::SIGTERM)
    }

    /// Sends SIGINT to its whole process group, as a terminal's Ctrl-C
    /// does (see [`Served::start_in_own_group`]), and waits (30 s at most)
    /// for the exit.
    pub fn interrupt_group(&mut self) -> ExitStatus {
        self.signal_and_wait(-(self.child.id() as i32), libc::SIGINT)
    }

    fn signal_and_wait(&mut self, target: i32, signal: libc::c_int) -> ExitStatus {
        // SAFETY: kill(2) on our own unreaped child, or the group it leads.
        assert_eq!(unsafe { libc::kill(target, signal) }, 0);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "multiproc serve did not exit 30 s after signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client with timeouts.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build()
}

/// Status and body of a request, whatever the status.
pub fn call(req: ureq::Request, body: Option<&[u8]>) -> (u16, Vec<u8>, Option<String>) {
    let res = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = r.status();
    let header = r.header("inference-header-content-length").map(str::to_string);
    let mut bytes = Vec::new();
    r.into_reader().take(256 << 20).read_to_end(&mut bytes).unwrap();
    (status, bytes, header)
}

/// POSTs JSON, returns status and parsed body.
pub fn post_json(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let (s, b, _) = call(agent().post(url).set("content-type", "application/json"), Some(body.to_string().as_bytes()));
    (s, serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null))
}

/// GETs, returns status and parsed body (Null if empty).
pub fn get_json(url: &str) -> (u16, serde_json::Value) {
    let (s, b, _) = call(agent().get(url), None);
    (s, serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null))
}

/// Runs `cmd` to its end, killing it (and failing) after `limit`. Its
/// stdout and stderr are read while it runs, so that a child writing more
/// than a pipe holds (pip's error output may) is not blocked until `limit`.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} took more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// The Python of the virtual environment `target/py-venvs/<name>`, created
/// (`python3 -m venv`, then `pip install <packages>` from PyPI) unless
/// `check` already runs in it; later runs reuse it. Test processes
/// running at once (two test binaries, or the bench) take turns through a
/// lock file next to it, rather than both installing into it.
pub fn python_venv(name: &str, packages: &[&str], check: &str) -> PathBuf {
    let venvs = manifest().join("../../target/py-venvs");
    std::fs::create_dir_all(&venvs).unwrap();
    let lock = std::fs::File::create(venvs.join(format!("{name}.lock"))).unwrap();
    let waiting = Instant::now();
    // (File::try_lock is newer than the workspace's MSRV.)
    // SAFETY: flock(2) on a file descriptor `lock` owns and keeps open; the
    // lock goes with it when `lock` is dropped at the end of this function.
    while unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(libc::EWOULDBLOCK), "cannot lock the {name} venv: {e}");
        assert!(waiting.elapsed() < Duration::from_secs(900), "another process held the {name} venv for 15 min");
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = venvs.join(name);
    let python = dir.join("bin/python");
    let ok = |p: &PathBuf| Command::new(p).args(["-c", check]).status().is_ok_and(|s| s.success());
    if !ok(&python) {
        let out = run_with_limit(Command::new("python3").args(["-m", "venv"]).arg(&dir), Duration::from_secs(120));
        assert!(out.status.success(), "python3 -m venv failed: {}", String::from_utf8_lossy(&out.stderr));
        let out = run_with_limit(
            Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", "--timeout", "60"])
                .args(packages),
            Duration::from_secs(600),
        );
        assert!(out.status.success(), "pip install {packages:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(ok(&python), "{check:?} fails after installing {packages:?}");
    }
    python
}

/// Sends `request` as it is on a new connection to `base` and reads the
/// answer until the server closes the connection (20 s at most).
pub fn raw_exchange(base: &str, request: &[u8]) -> String {
    let mut conn = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer (and close) before it has read all of it.
    let _ = std::io::Write::write_all(&mut conn, request);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}
