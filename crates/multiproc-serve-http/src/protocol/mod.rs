//! The Open Inference Protocol (KServe v2 REST) and Triton's binary tensor
//! extension, apart from any HTTP handler: request and response bodies as
//! serde types, decoding a request body into named tensors and encoding
//! output tensors into a response body. A gRPC front end would reuse
//! the tensor types and the checks here.
//!
//! Everything here takes untrusted bytes: sizes are checked with checked
//! arithmetic before anything is allocated or sliced, and every failure is a
//! [`ProtocolError`] saying which input or output and what was wrong.

pub mod classification;
pub mod fuzz;
pub mod json_data;
pub mod messages;
pub mod non_finite;
pub mod request;
pub mod response;
/// The tensor types: multiproc-serve's, so decoded inputs go to the core
/// without conversion.
pub mod tensor {
    pub use multiproc_serve::tensor::{element_count, find};
    pub use multiproc_serve::{DataType, Tensor};
}

pub use classification::classify;
pub use messages::{
    ErrorBody, InferRequestBody, InferResponseBody, ModelMetadata, RepositoryEntry, RequestInput, RequestOutput,
    ResponseOutput, ServerMetadata, TensorMetadata,
};
pub use request::{
    DecodedRequest, OutputWanted, Reserve, SharedMemoryRef, ShmReader, decode_request, decode_request_reserving,
    decode_request_with,
};
pub use response::{EncodedResponse, encode_response};
pub use tensor::{DataType, Tensor};

/// A request body that does not follow the protocol: HTTP 400, with a message
/// naming the input or field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> ProtocolError {
        ProtocolError(message.into())
    }
}

/// The request header that carries the length of the JSON part of a body
/// with binary tensors after it (Triton's binary tensor extension).
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

/// The extensions `GET /v2` lists.
pub const EXTENSIONS: &[&str] =
    &["binary_tensor_data", "classification", "model_configuration", "model_repository", "statistics"];
