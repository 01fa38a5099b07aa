//! The Open Inference Protocol over HTTP for `multiproc-serve`.
pub mod onnx;
pub mod protocol;
pub mod repository;
