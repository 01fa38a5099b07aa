//! The worker process: loads one model version, says it is ready, then
//! answers batches until its request pipe closes. Also the messages between
//! the server and a worker.
//!
//! Items travel pre-encoded (postcard bytes) so the server never needs the
//! model's types; a batch is one message each way, and a batch larger than
//! 64 KiB crosses through a sealed memfd (the core's wire), not the socket.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use multiproc::{Connection, ConnectionError, Pipe};
use serde::{Deserialize, Serialize};

use crate::items::{ITEM_BYTES_GUESS, Inputs, Items};
use crate::lone::NextLone;
use crate::model::{Model, WorkerContext};

/// Server → worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// A batch of encoded inputs.
    Batch {
        /// Batch id, echoed in the reply.
        id: u64,
        /// One encoded input per request.
        items: Inputs,
        /// Poll for the next batch a short while after answering this one
        /// (the supervisor saw its requests come one at a time, see
        /// `crate::lone`).
        poll_after: bool,
    },
}

/// Time a worker spent on one batch, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct BatchTiming {
    /// Decoding the inputs.
    pub input_us: u64,
    /// The model's `predict`.
    pub infer_us: u64,
    /// Encoding the outputs.
    pub output_us: u64,
}

/// Worker → server.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The model loaded; batches may come.
    Ready,
    /// The model did not load; the worker exits.
    LoadFailed(String),
    /// The model did not load and never will with this configuration
    /// ([`crate::LoadError::permanent`]); the worker exits.
    LoadRefused(String),
    /// The answers to a batch, one per item, in order.
    Batch {
        /// The batch's id.
        id: u64,
        /// One encoded output or error per item.
        items: Items,
        /// Where the time went.
        timing: BatchTiming,
    },
    /// A log line from the worker (an external command's stderr).
    Log(String),
}

/// The worker's ends of its two pipes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerEnds {
    pub requests: Connection<ToWorker>,
    pub replies: Connection<FromWorker>,
}

/// The server's ends.
#[derive(Debug)]
pub(crate) struct ServerEnds {
    pub requests: Connection<ToWorker>,
    pub replies: Connection<FromWorker>,
}

/// Two one-way pipes between the server and a new worker.
pub(crate) fn worker_pipes() -> Result<(ServerEnds, WorkerEnds), ConnectionError> {
    let (their_requests, our_requests) = Pipe::<ToWorker>::one_way()?;
    let (our_replies, their_replies) = Pipe::<FromWorker>::one_way()?;
    Ok((
        ServerEnds { requests: our_requests, replies: our_replies },
        WorkerEnds { requests: their_requests, replies: their_replies },
    ))
}

/// The worker's way to the server's log (set once, in the worker).
static LOG: std::sync::OnceLock<Connection<FromWorker>> = std::sync::OnceLock::new();

/// Sends a line to the server's log (through `tracing` there); in a worker
/// process only, ignored elsewhere.
pub(crate) fn log_to_server(line: &str) {
    match LOG.get() {
        Some(conn) => {
            let _ = conn.send(&FromWorker::Log(line.to_string()));
        }
        None => eprintln!("{line}"),
    }
}

/// The message a panic was raised with.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The body of a worker process for model `M`.
///
/// A panic in `load` ends the process (the server sees the panic message as
/// the failure); a panic in `predict` fails that batch and the worker goes on.
pub(crate) fn worker_main<M: Model>(ends: WorkerEnds, config: M::Config, context: WorkerContext) {
    // A terminal's Ctrl-C or a service manager's SIGTERM reaches every
    // process of the group; it is for the server, which answers what is in
    // flight and then stops its workers (which still die with it).
    multiproc::process::ignore_stop_signals();
    let WorkerEnds { requests, replies } = ends;
    let _ = LOG.set(replies.clone());
    // Batches of large tensors are allocated and freed over and over: keep
    // freed memory instead of faulting fresh pages in each time.
    multiproc::keep_freed_memory();
    let mut model = match M::load(config, &context) {
        Ok(m) => m,
        Err(e) => {
            let permanent = e.is_permanent();
            let reason = e.into_reason();
            let _ =
                replies.send(&if permanent { FromWorker::LoadRefused(reason) } else { FromWorker::LoadFailed(reason) });
            return;
        }
    };
    if replies.send(&FromWorker::Ready).is_err() {
        return;
    }
    // How often the idle worker asks the model whether it can still answer.
    let mut check_every = alive_or_exit(&mut model);
    // After answering a lone request, the next one is polled for a short
    // while instead of sleeping until it comes (see `crate::lone`).
    let mut next = NextLone::new();
    let arrived = || requests.poll(Duration::ZERO).unwrap_or(true);
    while let Ok(ToWorker::Batch { id, items, poll_after }) =
        next.wait_next(arrived, || next_batch(&requests, &mut model, &mut check_every))
    {
        let reply = run_batch(&mut model, id, items.into_items());
        if replies.send(&reply).is_err() {
            return;
        }
        if poll_after {
            next.answered_lone();
        }
    }
}

/// Waits for the next batch, asking the model every `check_every` whether
/// it can still answer (see [`Model::check_alive`], whose answer sets the
/// next `check_every`); a model that cannot ends the worker while it is
/// idle (the server then restarts it before a request is lost with it).
/// With no check due the worker sleeps until a batch comes or the server is
/// gone: the server's end of the pipe closing ends the wait, so a dead
/// server never leaves its worker waiting.
fn next_batch<M: Model>(
    requests: &Connection<ToWorker>,
    model: &mut M,
    check_every: &mut Option<Duration>,
) -> Result<ToWorker, ConnectionError> {
    loop {
        let Some(every) = *check_every else {
            return requests.recv();
        };
        match requests.recv_timeout(every) {
            Err(ConnectionError::Timeout) => *check_every = alive_or_exit(model),
            other => return other,
        }
    }
}

/// When to ask the model again whether it can still answer; ends the
/// worker if it cannot.
fn alive_or_exit<M: Model>(model: &mut M) -> Option<Duration> {
    match model.check_alive() {
        Ok(again) => again,
        Err(why) => {
            log_to_server(&format!("the model can no longer answer: {why}"));
            std::process::exit(3);
        }
    }
}

/// Decodes a batch, runs the model, encodes the answers.
fn run_batch<M: Model>(model: &mut M, id: u64, items: Items) -> FromWorker {
    let (n, input_bytes) = (items.len(), items.byte_len());
    let start = Instant::now();
    // Items that do not decode answer an error; the rest form the batch.
    let mut inputs = Vec::with_capacity(n);
    let mut undecoded = Vec::new();
    for i in 0..n {
        match items.decode::<M::Input>(i, "input") {
            Ok(input) => inputs.push(input),
            Err(e) => undecoded.push((i, e)),
        }
    }
    drop(items);
    let input_us = micros(start);
    let start = Instant::now();
    let predicted = inputs.len();
    let outputs = catch_unwind(AssertUnwindSafe(|| model.predict(inputs)));
    let infer_us = micros(start);
    let start = Instant::now();
    let failed = match &outputs {
        Ok(outputs) if outputs.len() == predicted => None,
        Ok(outputs) => Some(format!("predict returned {} results for a batch of {predicted}", outputs.len())),
        Err(panic) => Some(format!("predict panicked: {}", panic_message(&**panic))),
    };
    let mut outputs = outputs.unwrap_or_default().into_iter();
    let mut undecoded = undecoded.into_iter().peekable();
    let mut answers = Items::with_capacity(n, input_bytes.saturating_add(n.saturating_mul(ITEM_BYTES_GUESS)));
    for i in 0..n {
        if let Some((_, e)) = undecoded.next_if(|(at, _)| *at == i) {
            answers.push_error(&e);
        } else if let Some(msg) = &failed {
            answers.push_error(msg);
        } else {
            answers.push_output(outputs.next().unwrap_or_else(|| Err("no answer".to_string())));
        }
    }
    FromWorker::Batch { id, items: answers, timing: BatchTiming { input_us, infer_us, output_us: micros(start) } }
}
