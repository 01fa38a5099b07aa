//! The Open Inference Protocol over HTTP for `multiproc-serve`.
pub mod app;
pub mod client;
pub mod demo;
pub mod error;
mod infer;
pub mod metrics;
pub mod onnx;
pub mod protocol;
pub mod repository;
pub mod serve;
