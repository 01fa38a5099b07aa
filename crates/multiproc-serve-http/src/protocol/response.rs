//! Encoding an inference response: JSON, with the outputs asked for as
//! binary after it (Triton's binary tensor extension).

use serde_json::{Map, Value};

use super::ProtocolError;
use super::json_data::JsonData;
use super::messages::{InferResponseBody, ResponseOutput};
use super::request::{OutputWanted, SharedMemoryRef};
use super::tensor::Tensor;

/// A response body, and the JSON part's length when binary data follows it
/// (to send as `Inference-Header-Content-Length`).
#[derive(Debug, Clone)]
pub struct EncodedResponse {
    /// The whole body.
    pub body: Vec<u8>,
    /// The JSON part's length if any output is binary.
    pub header_length: Option<usize>,
}

/// Encodes the outputs of a request: those in `wanted`, in its order (all of
/// them, each binary as `binary_default` says, when `wanted` is `None`). An
/// output wanted in shared memory is written there by the caller first: the
/// answer gives only its region and size.
///
/// ```
/// use multiproc_serve_http::protocol::{DataType, Tensor, encode_response};
/// let out = Tensor::new("y", DataType::Uint8, vec![2], vec![3, 4]).unwrap();
/// let r = encode_response("m", "1", Some("a".into()), vec![out], None, false).unwrap();
/// assert_eq!(r.header_length, None);
/// assert_eq!(
///     std::str::from_utf8(&r.body).unwrap(),
///     r#"{"model_name":"m","model_version":"1","id":"a","outputs":[{"name":"y","datatype":"UINT8","shape":[2],"data":[3,4]}]}"#
/// );
/// ```
///
/// # Errors
///
/// An output asked for that the model did not produce.
pub fn encode_response(
    model_name: &str,
    model_version: &str,
    id: Option<String>,
    outputs: Vec<Tensor>,
    wanted: Option<&[OutputWanted]>,
    binary_default: bool,
) -> Result<EncodedResponse, ProtocolError> {
    // Each output, how it goes (false: JSON data, true: binary), and the
    // shared memory it was written to instead (see `crate::shm`).
    let chosen: Vec<(Tensor, bool, Option<&SharedMemoryRef>)> = match wanted {
        None => outputs.into_iter().map(|t| (t, binary_default, None)).collect(),
        Some(wanted) => {
            let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
            let mut chosen = Vec::with_capacity(wanted.len());
            for w in wanted {
                let slot = outputs.iter_mut().find(|t| t.as_ref().is_some_and(|t| t.name() == w.name));
                let tensor = slot
                    .and_then(Option::take)
                    .ok_or_else(|| ProtocolError::new(format!("model '{model_name}' has no output '{}'", w.name)))?;
                chosen.push((tensor, w.binary, w.shared_memory.as_ref()));
            }
            chosen
        }
    };
    // Room for the whole body at once: JSON elements take about 3 characters
    // per byte of data (an FP32 is 4 bytes, up to ~12 characters).
    let size: usize =
        chosen.iter().map(|(t, binary, _)| 64 + t.name().len() + t.data().len() * if *binary { 1 } else { 3 }).sum();
    let mut body = Vec::with_capacity(128 + model_name.len() + size);
    let mut tail = Vec::new();
    let mut any_binary = false;
    let outputs = chosen
        .into_iter()
        .map(|(t, binary, shm)| {
            let (name, datatype, shape) = (t.name().to_string(), t.datatype().as_str(), t.shape().to_vec());
            if let Some(at) = shm {
                let mut params = Map::new();
                params.insert("shared_memory_region".into(), Value::from(at.region.clone()));
                params.insert("shared_memory_byte_size".into(), Value::from(t.data().len()));
                if at.offset > 0 {
                    params.insert("shared_memory_offset".into(), Value::from(at.offset));
                }
                ResponseOutput { name, datatype, shape, parameters: Some(params), data: None }
            } else if binary {
                any_binary = true;
                let mut params = Map::new();
                params.insert("binary_data_size".into(), Value::from(t.data().len()));
                tail.extend_from_slice(t.data());
                ResponseOutput { name, datatype, shape, parameters: Some(params), data: None }
            } else {
                ResponseOutput { name, datatype, shape, parameters: None, data: Some(JsonData::new(t)) }
            }
        })
        .collect();
    let head =
        InferResponseBody { model_name: model_name.to_string(), model_version: model_version.to_string(), id, outputs };
    serde_json::to_writer(&mut body, &head).map_err(|e| ProtocolError::new(format!("cannot encode response: {e}")))?;
    let header_length = any_binary.then_some(body.len());
    body.extend_from_slice(&tail);
    Ok(EncodedResponse { body, header_length })
}
