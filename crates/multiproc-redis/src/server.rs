//! A private `redis-server` for tests, examples and benchmarks: started on
//! a free loopback port in a temporary directory, with append-only
//! persistence, and killed, reaped and removed on drop (and killed with its
//! parent, should the parent die first).
//!
//! A process that dies without dropping its server (killed, `exit`, a
//! `mem::forget`) leaves the server's directory behind; the next
//! [`RedisServer::start`] on the host removes every such directory whose
//! owner is gone.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The start of a server directory's name, followed by `<owner pid>-<hex>`.
const DIR_PREFIX: &str = "multiproc-redis-";

/// How many ports [`RedisServer::start`] tries (each chosen free; one may
/// be taken before the server binds it).
const START_ATTEMPTS: u32 = 3;

/// How to install the server when it is missing.
pub const INSTALL_HINT: &str = "install it with `apt-get install -y redis-server` (Debian, Ubuntu)";

/// A running `redis-server` owned by this process.
///
/// ```
/// use multiproc_redis::RedisServer;
///
/// let server = RedisServer::start().unwrap();
/// assert!(server.url().starts_with("redis://127.0.0.1:"));
/// let pool = multiproc_redis::RedisPool::connect(&server.url()).unwrap();
/// # drop(pool);
/// ```
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    persistent: bool,
}

impl RedisServer {
    /// True when `redis-server` is on the `PATH`.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts a server on a free port of 127.0.0.1 and waits (at most 10 s)
    /// until it answers.
    ///
    /// # Errors
    ///
    /// `redis-server` is missing (the message says how to install it), or
    /// it did not start.
    pub fn start() -> io::Result<RedisServer> {
        RedisServer::start_with(true)
    }

    /// As [`RedisServer::start`], without persistence: for benchmarks.
    ///
    /// # Errors
    ///
    /// As for [`RedisServer::start`].
    pub fn start_in_memory() -> io::Result<RedisServer> {
        RedisServer::start_with(false)
    }

    fn start_with(persistent: bool) -> io::Result<RedisServer> {
        remove_orphaned_dirs(&std::env::temp_dir());
        let mut attempt = 1;
        loop {
            // The port is free when chosen, but another process (a server
            // started at the same time, a client's ephemeral port) may take
            // it before the server binds it: then it exits, and a new port
            // is tried.
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = RedisServer::new(port, persistent)?;
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) if attempt < START_ATTEMPTS && server.child.is_none() && e.kind() != io::ErrorKind::NotFound => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A server to launch on `port`, in a new directory of its own.
    fn new(port: u16, persistent: bool) -> io::Result<RedisServer> {
        let mut id = [0u8; 6];
        getrandom::fill(&mut id).map_err(|e| io::Error::other(e.to_string()))?;
        let name: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(RedisServer { child: None, dir, port, persistent })
    }

    fn launch(&mut self) -> io::Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "no"])
            .args(["--appendonly", if self.persistent { "yes" } else { "no" }, "--appendfsync", "always", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // It dies with us, even when started from a thread that ends.
        let child = multiproc::process::spawn_command_with_parent(cmd).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(e.kind(), format!("redis-server is not installed: {INSTALL_HINT}"))
            } else {
                e
            }
        })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    /// Waits until the server answers on its port. Only an answer from
    /// this server counts: another server on the same port (ours then
    /// fails to bind it, and exits) is not ours to use.
    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200))
                && let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut c)
                && self.child.as_ref().is_some_and(|child| server_pid(&info) == Some(child.id()))
            {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(io::Error::other(format!("redis-server exited ({status}): {}", tail.join(" | "))));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "redis-server did not answer within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs (for a test that pauses it
    /// with `SIGSTOP`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Pauses the server (`SIGSTOP`) until the guard is dropped
    /// (`SIGCONT`): it still accepts connections (the kernel does) and
    /// answers nothing, as a server that hangs or is cut off. For tests of
    /// what a client does then.
    ///
    /// # Errors
    ///
    /// The server is not running, or `kill` could not signal it.
    pub fn pause(&self) -> io::Result<PausedServer<'_>> {
        let pid = self.pid().ok_or_else(|| io::Error::other("the redis-server is not running"))?;
        signal("-STOP", pid)?;
        Ok(PausedServer { server: self, pid })
    }

    /// The server's directory (its append-only file and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and directory:
    /// it reloads its data from the append-only file.
    ///
    /// # Errors
    ///
    /// As for [`RedisServer::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.launch()
    }
}

/// A paused [`RedisServer`], resumed on drop (see [`RedisServer::pause`]).
#[derive(Debug)]
pub struct PausedServer<'a> {
    server: &'a RedisServer,
    pid: u32,
}

impl PausedServer<'_> {
    /// The paused server.
    pub fn server(&self) -> &RedisServer {
        self.server
    }
}

impl Drop for PausedServer<'_> {
    fn drop(&mut self) {
        if let Err(e) = signal("-CONT", self.pid) {
            tracing::error!("could not resume redis-server {}: {e}", self.pid);
        }
    }
}

/// The `process_id` of an `INFO server` reply.
fn server_pid(info: &str) -> Option<u32> {
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
}

/// Sends signal `which` (`-STOP`, `-CONT`) to process `pid` with `kill`.
fn signal(which: &str, pid: u32) -> io::Result<()> {
    let status = Command::new("kill").arg(which).arg(pid.to_string()).stdin(Stdio::null()).status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("kill {which} {pid}: {status}"))) }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the server directories in `tmp` whose owner process is gone: it
/// died without dropping its [`RedisServer`] (its redis-server died with
/// it). Only where `/proc` shows which processes live; a directory whose
/// owner's pid was reused by another process waits for a later sweep.
fn remove_orphaned_dirs(tmp: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)).and_then(|rest| rest.split_once('-'));
        let Some(pid) = owner.and_then(|(pid, _)| pid.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !proc.join(pid.to_string()).exists() {
            // Another process may sweep it at the same time: its errors
            // (already gone) do not matter.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_server_whose_port_another_server_holds_is_not_ready() {
        let other = RedisServer::start().unwrap();
        // Launched on the port the other server holds: it cannot bind it.
        let mut late = RedisServer::new(other.port(), false).unwrap();
        let err = late.launch().expect_err("the other server's answer does not make this one ready");
        assert!(err.to_string().contains("redis-server exited"), "{err}");
        assert!(late.pid().is_none());
    }

    #[test]
    fn the_process_id_of_an_info_reply() {
        assert_eq!(server_pid("# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\n"), Some(4242));
        assert_eq!(server_pid("# Server\r\n"), None);
    }
}
