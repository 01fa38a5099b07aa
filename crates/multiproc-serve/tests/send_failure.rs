//! A batch the server cannot send to a live worker (no descriptor left for
//! the shared memory a large batch travels in) fails at once, instead of
//! waiting for an answer that cannot come, and the worker is replaced.

use std::time::{Duration, Instant};

use multiproc_serve::{ErrorKind, LoadError, Model, ModelSpec, Request, Server, WorkerContext};
use serde_bytes::ByteBuf;

/// Answers each input's length.
struct Length;

impl Model for Length {
    type Config = ();
    type Input = ByteBuf;
    type Output = u64;

    fn load((): (), _: &WorkerContext) -> Result<Self, LoadError> {
        Ok(Length)
    }

    fn predict(&mut self, batch: Vec<ByteBuf>) -> Vec<Result<u64, String>> {
        batch.iter().map(|b| Ok(b.len() as u64)).collect()
    }
}

/// The lowest descriptor number not in use: with the soft limit set to it,
/// the process cannot open any descriptor.
fn lowest_free_fd() -> u64 {
    let open: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

fn nofile() -> libc::rlimit {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit
}

fn set_nofile(limit: libc::rlimit) {
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

fn length(server: &Server, len: usize, timeout: Duration) -> Result<u64, multiproc_serve::ServeError> {
    let request = Request::new("len", ByteBuf::from(vec![7u8; len]));
    server.infer_async::<ByteBuf, u64>(request).wait_timeout(timeout).map(|r| r.output)
}

#[test]
fn a_batch_that_cannot_be_sent_to_a_live_worker_fails_at_once_and_the_worker_comes_back() {
    let server = Server::new();
    server.add(ModelSpec::<Length>::new("len").version(1, ())).unwrap();
    assert_eq!(length(&server, 10, Duration::from_secs(60)).unwrap(), 10, "the worker is up");
    // 20 MiB: over the channel's 16 MiB, so the batch needs a memory file of
    // its own, which cannot be made with no descriptor left.
    let before = nofile();
    set_nofile(libc::rlimit { rlim_cur: lowest_free_fd(), rlim_max: before.rlim_max });
    let started = Instant::now();
    let got = length(&server, 20 << 20, Duration::from_secs(30));
    set_nofile(before);
    let took = started.elapsed();
    let e = got.expect_err("the batch could not have been sent");
    assert_eq!(e.kind(), ErrorKind::WorkerLost, "{e} (after {took:?})");
    // The worker is replaced (after a backoff).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match length(&server, 20 << 20, Duration::from_secs(10)) {
            Ok(n) => {
                assert_eq!(n, 20 << 20);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("the model did not come back: {e}"),
        }
    }
    server.shutdown();
}
