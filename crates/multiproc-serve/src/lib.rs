//! # multiproc-serve
//!
//! Models served by supervised worker processes, built on [`multiproc`]:
//! named, versioned models, each version a group of worker processes that
//! load the model once (inside the worker) and are then called with batches
//! formed by a dynamic batcher. Workers that die fail their in-flight
//! requests at once and are restarted with backoff; versions switch without
//! downtime; pipelines chain a preprocessing pool, the batched model and
//! postprocessing (seed 004); external commands in any language serve
//! through a small framed protocol ([`command`]).
//!
//! ## A model in ten lines
//!
//! ```
//! use multiproc_serve::{Model, ModelSpec, Request, Server, WorkerContext};
//!
//! struct Scale(f64);
//!
//! impl Model for Scale {
//!     type Config = f64;          // per version, known at run time
//!     type Input = f64;
//!     type Output = f64;
//!     fn load(factor: f64, _: &WorkerContext) -> Result<Self, String> {
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
//! [`ModelSettings`] holds what a deployment tunes: `max_batch_size`,
//! `max_queue_delay`, preferred sizes, instances per version, the version
//! policy, queue capacity, startup and call timeouts, request deadline,
//! eager or lazy start, and the restart policy. [`Server::status`] lists every
//! model, version and worker with its state ([`VersionState`]), restarts,
//! queue depth and last failure; [`Server::metrics`] has the counters behind
//! Triton's `nv_inference_*` metrics. Errors ([`ServeError`]) carry a kind
//! that maps to an HTTP status.
//!
//! ## What a request costs
//!
//! A request is encoded once (postcard) in the caller and queued; its batch
//! goes to a worker as one message (a message above 64 KiB travels through a
//! sealed memfd, the core's wire, not through the socket), the worker
//! decodes, predicts and encodes, and one message brings the batch's answers
//! back. Each tensor byte is copied about six times in all (encode, into the
//! memfd, decode in the worker, and the same on the way back), never pushed
//! through a socket twice.
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

mod batcher;
pub mod command;
mod deadline;
mod error;
mod metrics;
mod model;
mod pipeline;
mod registry;
mod server;
mod settings;
mod slot;
mod status;
mod supervisor;
pub mod tensor;
mod version;
mod worker;

pub use command::{CommandConfig, CommandModel};
pub use error::{ErrorKind, ServeError};
pub use metrics::{BatchReason, MetricsSnapshot, VersionMetrics};
pub use model::{Model, ModelSpec, WorkerContext};
pub use pipeline::PipelineSpec;
pub use server::{InferFuture, Reply, Request, Server};
pub use settings::{ModelSettings, RestartPolicy, SettingsError, StartMode, VersionPolicy};
pub use status::{
    EndpointKind, ModelStatus, PipelineStatus, ServerStatus, VersionState, VersionStatus, WorkerState, WorkerStatus,
};
pub use tensor::{DataType, Element, Tensor, TensorError};
