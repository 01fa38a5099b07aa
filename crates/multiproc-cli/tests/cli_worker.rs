//! `multiproc worker`: a worker host as a command, on a real redis-server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use multiproc_redis::{RedisPool, RedisServer, TaskFailure, queue_info};

const EXE: &str = env!("CARGO_BIN_EXE_multiproc");

fn square(x: u64) -> u64 {
    x * x
}

/// Kills and reaps the worker command on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "multiproc worker did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_worker_command_serves_a_queue_and_refuses_another_build() {
    let server = RedisServer::start().expect("this test needs redis-server");
    let child = Command::new(EXE)
        .args(["worker", "--redis", &server.url(), "--processes", "1", "--queue", "q", "--prefix", "cli"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut worker = Guard(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while queue_info(&server.url(), "cli", "q").unwrap().hosts.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the worker did not join the queue");
        assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    // This test binary is another build than `multiproc`: refused, clearly.
    let pool = RedisPool::builder(&server.url())
        .prefix("cli")
        .queue("q")
        .wait_timeout(Duration::from_secs(60))
        .connect()
        .unwrap();
    let err = pool.apply(square, (3,)).unwrap_err();
    let Some(TaskFailure::Refused { worker_build, task_build }) = err.task_failure() else { panic!("{err}") };
    assert_eq!(task_build, multiproc::build_id());
    assert_ne!(worker_build, task_build);
    assert!(err.to_string().contains("another build"), "{err}");
    assert_eq!(queue_info(&server.url(), "cli", "q").unwrap().dead_letters, 1);
    // A garbage entry: skipped, dead-lettered, logged.
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).unwrap();
    let _: String = redis::cmd("XADD").arg("cli:q:tasks").arg("*").arg("junk").arg("!").query(&mut con).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while queue_info(&server.url(), "cli", "q").unwrap().dead_letters < 2 {
        assert!(std::time::Instant::now() < deadline, "the garbage entry was not dead-lettered");
        std::thread::sleep(Duration::from_millis(20));
    }
    // It logged both and goes on serving; SIGTERM stops it cleanly.
    assert!(worker.0.try_wait().unwrap().is_none());
    let term = Command::new("kill").args(["-TERM", &worker.0.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert_eq!(wait_exit(&mut worker.0, Duration::from_secs(60)).code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(worker.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("serving queue \"q\"") && log.contains("another build"), "{log}");
    assert!(log.contains("skipping entry") && log.contains("no byte field"), "{log}");
    assert!(log.contains("stopping: finishing the tasks in hand") && log.contains("stopped"), "{log}");
}

/// Runs `multiproc worker` against `url`, where no Redis listens: it must
/// exit with code 1; returns its stderr.
fn worker_stderr_for_unreachable(url: &str) -> String {
    let mut child = Command::new(EXE)
        .args(["worker", "--redis", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn the_worker_command_says_when_redis_is_unreachable() {
    let err = worker_stderr_for_unreachable("redis://127.0.0.1:1/");
    assert!(err.contains("cannot serve queue \"default\" on redis://127.0.0.1:1/"), "{err}");
    // What to do, said once (by the library's error).
    assert_eq!(err.matches("check that").count(), 1, "advice missing or repeated: {err}");
    assert!(err.contains("check that the server is running and reachable"), "{err}");
    assert!(!err.contains('\x1b'), "terminal escape codes in piped stderr: {err:?}");
}

#[test]
fn the_worker_command_does_not_print_the_redis_password() {
    let err = worker_stderr_for_unreachable("redis://user:s3cret@127.0.0.1:1/0");
    assert!(err.contains("127.0.0.1:1/0") && !err.contains("s3cret"), "{err}");
}

#[test]
fn the_worker_command_tells_a_local_pool_that_cannot_start_apart_from_redis() {
    use std::os::unix::process::CommandExt;
    let server = RedisServer::start().expect("this test needs redis-server");
    let mut command = Command::new(EXE);
    command.args(["worker", "--redis", &server.url(), "--processes", "4"]).stdout(Stdio::null()).stderr(Stdio::piped());
    // Room for the Redis connections, none for the pool's worker processes.
    let few_files = libc::rlimit { rlim_cur: 8, rlim_max: 8 };
    // SAFETY: setrlimit(2) is async-signal-safe; it only lowers the limit
    // of the child about to exec, from a value on the stack.
    unsafe {
        command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &few_files) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let mut child = command.spawn().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("could not start the local pool of worker processes"), "{err}");
    // Redis is not at fault: neither named as the cause nor given advice for.
    assert!(!err.contains("redis: could not start"), "{err}");
    assert!(!err.contains("check that"), "{err}");
}

/// The signals a process ignores (its `SigIgn` mask in `/proc`).
fn ignored_signals(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).map_or("0", str::trim);
    u64::from_str_radix(mask, 16).unwrap()
}

/// The pids of `parent`'s children (started by any of its threads).
fn children(parent: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).into_iter().flatten().flatten();
    let lists = tasks.map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default());
    lists.flat_map(|l| l.split_whitespace().map(|p| p.parse().unwrap()).collect::<Vec<u32>>()).collect()
}

#[test]
fn ctrl_c_to_the_whole_group_stops_the_worker_without_killing_its_pool() {
    use std::os::unix::process::CommandExt;
    let server = RedisServer::start().expect("this test needs redis-server");
    let child = Command::new(EXE)
        .args(["worker", "--redis", &server.url(), "--processes", "2", "--queue", "g", "--prefix", "cli"])
        .process_group(0) // as a shell runs a foreground job
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut worker = Guard(child);
    let pid = worker.0.id();
    let (sigint, sigterm) = (1u64 << (libc::SIGINT - 1), 1u64 << (libc::SIGTERM - 1));
    // Both pool workers up, each ignoring SIGINT and SIGTERM.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ignoring =
            children(pid).into_iter().filter(|&c| ignored_signals(c) & (sigint | sigterm) == sigint | sigterm);
        if ignoring.count() >= 2 && !queue_info(&server.url(), "cli", "g").unwrap().hosts.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no two pool workers ignoring SIGINT and SIGTERM");
        assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A terminal's Ctrl-C: SIGINT to every process of the group.
    // SAFETY: kill(2) on the process group our child leads.
    assert_eq!(unsafe { libc::kill(-(pid as i32), libc::SIGINT) }, 0);
    assert_eq!(wait_exit(&mut worker.0, Duration::from_secs(60)).code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(worker.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("stopping: finishing the tasks in hand") && log.contains("stopped"), "{log}");
    assert!(!log.contains("died"), "a pool worker died of the group's SIGINT: {log}");
}

#[test]
fn the_worker_command_refuses_zero_processes() {
    let out =
        Command::new(EXE).args(["worker", "--redis", "redis://127.0.0.1:1/", "--processes", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--processes must be at least 1"));
}
