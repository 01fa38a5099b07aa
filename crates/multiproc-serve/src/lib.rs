//! # multiproc-serve
//!
//! Models served by supervised worker processes, built on [`multiproc`]:
//! named, versioned models, each version a group of worker processes that
//! load the model once (inside the worker) and are then called with batches
//! formed by a dynamic batcher. Workers that die fail their in-flight
//! requests at once and are restarted with backoff (a load that fails for
//! good, a [`LoadError::permanent`], is not: the version fails at once,
//! saying why, until it is loaded again); versions switch without
//! downtime; pipelines chain preprocessing processes, the batched model and
//! postprocessing (seed 004); external commands in any language serve
//! through a small framed protocol ([`command`]).
//!
//! ## A model in ten lines
//!
//! ```
//! use multiproc_serve::{LoadError, Model, ModelSpec, Request, Server, WorkerContext};
//!
//! struct Scale(f64);
//!
//! impl Model for Scale {
//!     type Config = f64;          // per version, known at run time
//!     type Input = f64;
//!     type Output = f64;
//!     fn load(factor: f64, _: &WorkerContext) -> Result<Self, LoadError> {
//!         Ok(Scale(factor))       // runs once, in the worker process
//!     }
//!     fn predict(&mut self, batch: Vec<f64>) -> Vec<Result<f64, String>> {
//!         batch.into_iter().map(|x| Ok(x * self.0)).collect()
//!     }
//! }
//!
//! let server = Server::new();
//! server.add(ModelSpec::<Scale>::new("scale").version(1, 2.0).version(2, 10.0)).unwrap();
//! // The default version is the highest ready one of the version policy (latest 1).
//! let reply = server.infer::<f64, f64>(Request::new("scale", 4.0)).unwrap();
//! assert_eq!((reply.version, reply.output), (2, 40.0));
//! // Zero-downtime switch to version 1.
//! server.switch("scale", 1).unwrap();
//! let reply = server.infer::<f64, f64>(Request::new("scale", 4.0)).unwrap();
//! assert_eq!((reply.version, reply.output), (1, 8.0));
//! assert!(server.status().model("scale").unwrap().ready);
//! server.shutdown();
//! ```
//!
//! ## Batching, supervision, status
//!
//! [`ModelSettings`] holds what a deployment tunes: `max_batch_size` (in
//! rows: a request says how many it carries with [`Request::rows`], 1 by
//! default), `max_queue_delay` (how long a partial batch waits for more
//! requests; 0 sends it to an idle worker at once), preferred sizes,
//! instances per version, the version
//! policy, queue capacity, startup and call timeouts, request deadline,
//! eager or lazy start, and the restart policy. [`Server::status`] lists every
//! model, version and worker with its state ([`VersionState`]), restarts,
//! queue depth and last failure; [`Server::metrics`] has the counters behind
//! Triton's `nv_inference_*` metrics. Errors ([`ServeError`]) carry a kind
//! that maps to an HTTP status; a pipeline's own failures are the
//! `Pipeline*` variants ([`ServeError::PipelineFailed`], …), which name the
//! pipeline (and the stage), while a failure of the model inside it names
//! the model.
//!
//! ## What a request costs
//!
//! A request is encoded once (postcard) in the caller and queued; its batch
//! goes to a worker as one message (a message above 64 KiB travels through a
//! sealed memfd, the core's wire, not through the socket), the worker
//! decodes, predicts and encodes, and one message brings the batch's answers
//! back. Each tensor byte is copied about six times in all (encode, into the
//! memfd, decode in the worker, and the same on the way back), never pushed
//! through a socket twice. A batch's inputs arrive in the worker as one
//! buffer and its answers come back as one buffer that the requests share
//! (an allocation per batch, not per request); under load a worker holds its
//! next full batch in its pipe while it runs one, so it never waits for the
//! server between batches. On the caller's side a request allocates its
//! answer slot and its encoded input, nothing more (a short model name is
//! kept inline); a batch's answers are all set before any caller is woken,
//! so a caller reading its replies in order sleeps at most once per batch.
//! A pipeline sends its preprocessing processes chunks of about half the requests
//! it holds, cut to whole model batches. At low load a lone request does
//! not sleep at each hand-off: its blocking caller polls for the answer
//! ([`LoneWait`]), and after a lone answer the model's supervisor and worker
//! poll for the next request for about twice the recent gap before they
//! sleep (a thread woken on an idle CPU costs 20–50 µs on a 2-CPU VM).
//!
//! Measured with `cargo run --release -p multiproc-serve --example request_cost`
//! (a lone request to a model returning its input tensor; 2-core VM shared
//! with other builds, load average 10): 16 B 18 µs, 4 KiB 21 µs, 64 KiB
//! 37 µs, 1 MiB 0.23 ms (≈ 9 GB/s of tensor bytes in and out). At 16 MiB the
//! fresh memfd pages of each message dominate (≈ 0.1 s here). The bench rows
//! `serve_overhead/*` measure the time the server adds over calling the model
//! in-process for small requests, through the model alone and through a
//! pipeline; `serve_pipeline` the throughput with batching.

#![warn(missing_docs)]

mod admin;
mod batcher;
mod bell;
pub mod command;
mod deadline;
mod error;
mod gauge;
mod items;
mod lane;
mod lone;
mod metrics;
mod model;
mod name;
mod pipeline;
mod pipeline_spec;
mod preprocess;
mod registry;
mod request;
mod routing;
mod server;
mod settings;
mod slot;
mod startup;
mod status;
mod supervisor;
pub mod tensor;
mod version;
mod worker;

pub use command::{CommandConfig, CommandModel};
pub use error::{ErrorKind, ServeError};
pub use lone::LoneWait;
pub use metrics::{BatchReason, BatchStats, MetricsSnapshot, VersionMetrics};
pub use model::{LoadError, Model, ModelSpec, WorkerContext};
pub use name::ModelName;
pub use pipeline_spec::{PipelineItem, PipelineSpec};
pub use request::{InferFuture, Reply, Request};
pub use server::Server;
pub use settings::{MAX_INSTANCES, ModelSettings, RestartPolicy, SettingsError, StartMode, VersionPolicy};
pub use status::{
    EndpointKind, ModelStatus, PipelineStatus, ServerStatus, VersionState, VersionStatus, WorkerState, WorkerStatus,
};
pub use tensor::{DataType, Element, Tensor, TensorError};

/// Feeds arbitrary bytes to every decoder of untrusted input in this crate:
/// the external-command frame reader (and the tensors a frame describes),
/// and tensors and batches' items as the workers' wire carries them (and
/// each item as it is handed to its request). Used by the fuzz target
/// (`crates/multiproc-serve/fuzz`) and by a unit test. Never panics.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    use command::protocol::{Header, get_tensors, read_frame};
    if let Ok(Some((header, blob))) = read_frame(&mut &data[..], 1 << 20) {
        match header {
            Header::Batch { requests, .. } => requests.iter().for_each(|r| drop(get_tensors(&r.inputs, &blob))),
            Header::Result { responses, .. } => {
                responses.iter().filter_map(|r| r.outputs.as_ref()).for_each(|o| drop(get_tensors(o, &blob)))
            }
            _ => {}
        }
    }
    if let Ok(items) = postcard::from_bytes::<items::Items>(data) {
        (0..=items.len()).for_each(|i| _ = items.get(i));
        // As a worker's answers are handed to their requests.
        let shared = std::sync::Arc::new(items);
        (0..=shared.len()).for_each(|i| _ = items::Encoded::item(&shared, i).map(|e| e.as_bytes().len()));
    }
    if let Ok(inputs) = postcard::from_bytes::<items::Inputs>(data) {
        let items = inputs.into_items();
        (0..=items.len()).for_each(|i| _ = items.get(i));
    }
    let _ = postcard::from_bytes::<Vec<Tensor>>(data);
    let _ = postcard::from_bytes::<Tensor>(data);
}

#[cfg(test)]
mod thread_safety {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    /// What an async HTTP front end needs: a shareable server and `Send` futures.
    #[test]
    fn server_is_send_sync_and_futures_are_send() {
        send_sync::<crate::Server>();
        send::<crate::InferFuture<Vec<crate::Tensor>>>();
        send_sync::<crate::ServeError>();
        send_sync::<crate::ServerStatus>();
        send_sync::<crate::MetricsSnapshot>();
    }
}

#[cfg(test)]
mod fuzz_tests {
    /// The fuzz entry point on stable, with pseudo-random and mutated inputs.
    #[test]
    fn decoders_survive_garbage() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let t = crate::Tensor::from_items("w", vec![2], [b"ab".as_slice(), b"c"]).unwrap();
        let good = postcard::to_allocvec(&vec![t]).unwrap();
        let mut frame = Vec::new();
        let header = crate::command::protocol::Header::Ready;
        crate::command::protocol::write_frame(&mut frame, &header, b"").unwrap();
        for round in 0..20_000 {
            let mut data = if round % 2 == 0 { good.clone() } else { frame.clone() };
            let flips = 1 + (next() % 4) as usize;
            for _ in 0..flips {
                let len = data.len();
                let i = (next() as usize) % len;
                data[i] = next() as u8;
            }
            if round % 7 == 0 {
                data = (0..(next() % 64)).map(|_| next() as u8).collect();
            }
            super::fuzz_decode(&data);
        }
    }
}
