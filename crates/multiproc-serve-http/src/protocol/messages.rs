//! The JSON bodies of the Open Inference Protocol, field for field.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// `POST /v2/models/{name}/infer`: the JSON part of the request. It borrows
/// from the body: the inputs' `data` stays JSON text until it is decoded
/// straight into tensor bytes (no `Value` per element).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequestBody<'a> {
    /// An identifier echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// The model's name, which KServe's client writes into every request
    /// (and Triton's examples show). Not the protocol's: accepted and
    /// ignored, as Triton does; the path names the model.
    #[serde(default)]
    pub model_name: Option<String>,
    /// The model's version, likewise accepted and ignored.
    #[serde(default)]
    pub model_version: Option<String>,
    /// Request parameters (`binary_data_output`, …).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// The input tensors.
    #[serde(borrow)]
    pub inputs: Vec<RequestInput<'a>>,
    /// The outputs wanted (all of them when absent).
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of a request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInput<'a> {
    /// The input's name.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<i64>,
    /// Its datatype (`"FP32"`, …).
    #[serde(borrow)]
    pub datatype: Cow<'a, str>,
    /// Parameters (`binary_data_size`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// The elements, flat or nested, as JSON text, when not sent as binary.
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

/// One output a request asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOutput {
    /// The output's name.
    pub name: String,
    /// Parameters (`binary_data`).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// The JSON part of an inference response.
#[derive(Debug, Clone, Serialize)]
pub struct InferResponseBody {
    /// The model that answered.
    pub model_name: String,
    /// Its version.
    pub model_version: String,
    /// The request's `id`, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The output tensors.
    pub outputs: Vec<ResponseOutput>,
}

/// One output tensor of a response.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseOutput {
    /// The output's name.
    pub name: String,
    /// Its datatype.
    pub datatype: &'static str,
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// `binary_data_size` when the data follows the JSON as binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// The elements, flat, when sent as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<super::json_data::JsonData>,
}

/// `GET /v2`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The server's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The protocol extensions it supports.
    pub extensions: Vec<String>,
}

/// An input or output in model metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TensorMetadata {
    /// The name.
    pub name: String,
    /// The datatype.
    pub datatype: String,
    /// The dimensions, -1 where variable (the batch dimension included).
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}[/versions/{v}]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// Its available versions (optional in the protocol: absent reads as
    /// none).
    #[serde(default)]
    pub versions: Vec<String>,
    /// What runs it: `"onnx"` or `"command"`.
    pub platform: String,
    /// The inputs.
    pub inputs: Vec<TensorMetadata>,
    /// The outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// One row of `POST /v2/repository/index`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepositoryEntry {
    /// The model's name.
    pub name: String,
    /// The version (absent for a model whose configuration failed).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    /// `READY`, `UNAVAILABLE`, `LOADING`, `UNLOADING`.
    pub state: String,
    /// Why it is not ready, when it is not.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub reason: String,
}

/// Every error response: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}
