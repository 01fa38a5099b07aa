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

#[test]
fn the_worker_command_says_when_redis_is_unreachable() {
    let mut child = Command::new(EXE)
        .args(["worker", "--redis", "redis://127.0.0.1:1/"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("redis"), "{err}");
}
