//! Test models and helpers shared by the integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use multiproc_serve::{Model, WorkerContext};
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

    fn load(behaviour: Behaviour, ctx: &WorkerContext) -> Result<Self, String> {
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
