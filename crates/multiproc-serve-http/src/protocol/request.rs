//! Decoding an inference request body: the JSON part and, with Triton's
//! binary tensor extension, the binary tensors after it.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Map, Value};

use super::messages::InferRequestBody;
use super::tensor::{DataType, Tensor, element_count};
use super::{ProtocolError, json_data};

/// Bytes in a client's shared memory region (Triton's system shared memory
/// extension, see [`crate::shm`]): an input's data, or where an output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemoryRef {
    /// The region's registered name.
    pub region: String,
    /// Where the bytes start in the region.
    pub offset: usize,
    /// How many bytes (for an output: the room for it).
    pub byte_size: usize,
}

/// Reads an input's bytes from a shared memory region.
pub type ShmReader<'a> = &'a dyn Fn(&SharedMemoryRef) -> Result<Vec<u8>, ProtocolError>;

/// Holds `n` more bytes (in a front end's byte budget) before decoding
/// allocates them; an error refuses the request, and nothing more is
/// allocated. Called for every input's bytes (see
/// [`decode_request_reserving`]).
pub type Reserve<'a> = &'a dyn Fn(usize) -> Result<(), ProtocolError>;

/// Up to this many names are checked for one given twice by a look at
/// each earlier one; more go into a set (a body of millions of tensors
/// must not cost a look at every earlier one each).
const SCAN_NAMES: usize = 16;

/// The first name of `items` (by `name`) that an earlier one has already;
/// nothing allocated for up to [`SCAN_NAMES`] of them, names borrowed.
fn given_twice<T>(items: &[T], name: impl Fn(&T) -> &str) -> Option<&str> {
    if items.len() <= SCAN_NAMES {
        return items
            .iter()
            .map(&name)
            .enumerate()
            .find_map(|(i, n)| items[..i].iter().any(|earlier| name(earlier) == n).then_some(n));
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(items.len());
    items.iter().map(name).find(|n| !seen.insert(n))
}

/// The shared memory parameters of an input or output, if any: both
/// `shared_memory_region` and `shared_memory_byte_size`, and
/// `shared_memory_offset` if not 0.
fn shared_memory(params: &Option<Map<String, Value>>, whose: &str) -> Result<Option<SharedMemoryRef>, ProtocolError> {
    let Some(params) = params else { return Ok(None) };
    let (region, size) = (params.get("shared_memory_region"), params.get("shared_memory_byte_size"));
    let region = match (region, size) {
        (None, None) => return Ok(None),
        (Some(Value::String(r)), Some(_)) if !r.is_empty() => r.clone(),
        (Some(_), Some(_)) => {
            return Err(ProtocolError::new(format!("{whose}: 'shared_memory_region' is not a region's name")));
        }
        _ => {
            return Err(ProtocolError::new(format!(
                "{whose}: 'shared_memory_region' and 'shared_memory_byte_size' go together"
            )));
        }
    };
    let count = |key: &str, v: Option<&Value>| match v {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ProtocolError::new(format!("{whose}: parameter '{key}' is {v}, expected a byte count"))),
    };
    let byte_size = count("shared_memory_byte_size", size)?;
    let offset = count("shared_memory_offset", params.get("shared_memory_offset"))?;
    Ok(Some(SharedMemoryRef { region, offset, byte_size }))
}

/// An output the client asked for, and how it wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputWanted {
    /// The output's name.
    pub name: String,
    /// Send it after the JSON as binary data.
    pub binary: bool,
    /// Its `n` highest values instead of its data (Triton's classification
    /// extension, see [`super::classify`]).
    pub classification: Option<usize>,
    /// Write it to this shared memory instead of the answer.
    pub shared_memory: Option<SharedMemoryRef>,
}

/// A checked inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRequest {
    /// The request `id`, to echo.
    pub id: Option<String>,
    /// The inputs, each with data of exactly its shape's size.
    pub inputs: Vec<Tensor>,
    /// The outputs asked for; `None` (no list, or an empty one) means all of them.
    pub outputs: Option<Vec<OutputWanted>>,
    /// The request-level `binary_data_output`: the default for outputs not
    /// listed individually.
    pub binary_output_default: bool,
    /// The request-level `timeout` (Triton's parameter, in µs; 0 is none,
    /// as there): the longest the request may wait for its answer.
    pub timeout: Option<Duration>,
}

fn bool_param(params: &Option<Map<String, Value>>, key: &str, whose: &str) -> Result<Option<bool>, ProtocolError> {
    match params.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => {
            Err(ProtocolError::new(format!("{whose}: parameter '{key}' is {other}, expected true or false")))
        }
    }
}

/// Refuses the parameters among `params` that belong to a Triton extension
/// this server does not offer (`keys`: each parameter and its extension),
/// unless given their neutral value (0, "", false, null), as tritonclient
/// sends some by default: answering as if they were not there would answer
/// something else than asked.
fn refuse_unoffered(
    params: &Option<Map<String, Value>>,
    keys: &[(&str, &str)],
    whose: impl Fn() -> String,
) -> Result<(), ProtocolError> {
    let Some(params) = params else { return Ok(()) };
    for (key, extension) in keys {
        let neutral = |v: &Value| match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
        if params.get(*key).is_some_and(|v| !neutral(v)) {
            return Err(ProtocolError::new(format!(
                "{}: parameter '{key}' (Triton's {extension} extension) is not supported by this server; \
                 GET /v2 lists the extensions it has",
                whose()
            )));
        }
    }
    Ok(())
}

/// Decodes `body`. `header_length` is the `Inference-Header-Content-Length`
/// header: the JSON part's length when binary tensors follow it.
///
/// ```
/// use multiproc_serve_http::protocol::{DataType, decode_request};
/// let body = br#"{"id":"7","inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,2]}]}"#;
/// let req = decode_request(body, None).unwrap();
/// assert_eq!(req.id.as_deref(), Some("7"));
/// assert_eq!(req.inputs[0].datatype(), DataType::Int32);
/// assert_eq!(req.inputs[0].data(), [1, 0, 0, 0, 2, 0, 0, 0]);
/// ```
///
/// # Errors
///
/// Any way the body disagrees with the protocol, with a message naming the
/// input or field.
pub fn decode_request(body: &[u8], header_length: Option<u64>) -> Result<DecodedRequest, ProtocolError> {
    decode_request_with(body, header_length, None)
}

/// Decodes `body` as [`decode_request`] does; with `shm`, inputs may be read
/// from and outputs sent to shared memory regions through it (without,
/// such parameters are refused: the extension is off).
///
/// # Errors
///
/// As [`decode_request`], and what `shm` says of the regions named.
pub fn decode_request_with(
    body: &[u8],
    header_length: Option<u64>,
    shm: Option<ShmReader<'_>>,
) -> Result<DecodedRequest, ProtocolError> {
    decode_request_reserving(body, header_length, shm, &|_| Ok(()))
}

/// Decodes `body` as [`decode_request_with`] does, holding through
/// `reserve` the bytes it allocates for the inputs before it allocates
/// them: each input's data (a binary one's, a JSON one's buffer as it is
/// sized and as it grows; see [`super::json_data::decode_reserving`]),
/// and the JSON rewritten for non-finite numbers (see
/// [`super::non_finite`]). Not those `shm` reads, which it holds itself.
///
/// # Errors
///
/// As [`decode_request_with`], and the first error of `reserve`.
pub fn decode_request_reserving(
    body: &[u8],
    header_length: Option<u64>,
    shm: Option<ShmReader<'_>>,
    reserve: Reserve<'_>,
) -> Result<DecodedRequest, ProtocolError> {
    let (json, mut binary) = match header_length {
        None => (body, &[][..]),
        Some(n) => match usize::try_from(n).ok().filter(|&n| n <= body.len()) {
            Some(n) => body.split_at(n),
            None => {
                return Err(ProtocolError::new(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
        },
    };
    let malformed = |e: serde_json::Error| ProtocolError::new(format!("malformed inference request JSON: {e}"));
    // A second chance for NaN and infinities as tritonclient writes them.
    let rewritten;
    let req: InferRequestBody = match serde_json::from_slice(json) {
        Ok(req) => req,
        Err(e) => {
            let length = super::non_finite::rewritten_len(json).ok_or_else(|| malformed(e))?;
            reserve(length)?;
            rewritten = super::non_finite::rewrite(json, length);
            serde_json::from_slice(&rewritten).map_err(malformed)?
        }
    };
    if req.inputs.is_empty() {
        return Err(ProtocolError::new("the request has no inputs"));
    }
    if let Some(name) = given_twice(&req.inputs, |i| i.name.as_str()) {
        return Err(ProtocolError::new(format!("input '{name}' is given twice")));
    }
    let mut inputs: Vec<Tensor> = Vec::with_capacity(req.inputs.len());
    refuse_unoffered(&req.parameters, &[("sequence_id", "sequence")], || "request".into())?;
    for input in req.inputs {
        let name = input.name;
        let in_shm = match shm {
            Some(_) => shared_memory(&input.parameters, &format!("input '{name}'"))?,
            None => {
                refuse_unoffered(&input.parameters, &[("shared_memory_region", "shared memory")], || {
                    format!("input '{name}'")
                })?;
                None
            }
        };
        let datatype: DataType =
            input.datatype.parse().map_err(|e| ProtocolError::new(format!("input '{name}': {e}")))?;
        let shape =
            input.shape.iter().map(|&d| usize::try_from(d)).collect::<Result<Vec<usize>, _>>().map_err(|_| {
                ProtocolError::new(format!("input '{name}': shape {:?} has a negative dimension", input.shape))
            })?;
        let binary_size = match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                ProtocolError::new(format!("input '{name}': binary_data_size is {v}, expected a non-negative integer"))
            })?),
        };
        let data = match (binary_size, input.data) {
            (_, _) if in_shm.is_some() && (binary_size.is_some() || input.data.is_some()) => {
                return Err(ProtocolError::new(format!(
                    "input '{name}' has shared memory parameters and also 'data' or binary_data_size"
                )));
            }
            (None, None) if let (Some(at), Some(read)) = (&in_shm, shm) => read(at)?,
            (Some(_), Some(_)) => {
                return Err(ProtocolError::new(format!("input '{name}' has both 'data' and binary_data_size")));
            }
            (None, None) => {
                return Err(ProtocolError::new(format!("input '{name}' has no 'data' and no binary_data_size")));
            }
            (Some(_), None) if header_length.is_none() => {
                return Err(ProtocolError::new(format!(
                    "input '{name}' has binary_data_size but the request has no Inference-Header-Content-Length header"
                )));
            }
            (Some(size), None) => {
                let taken = usize::try_from(size).ok().filter(|&s| s <= binary.len()).ok_or_else(|| {
                    ProtocolError::new(format!(
                        "input '{name}': binary_data_size {size} overruns the body ({} bytes of binary data remain)",
                        binary.len()
                    ))
                })?;
                let (chunk, rest) = binary.split_at(taken);
                binary = rest;
                reserve(taken)?;
                chunk.to_vec()
            }
            (None, Some(value)) => {
                let count = element_count(&shape).ok_or_else(|| {
                    ProtocolError::new(format!("input '{name}': shape {shape:?} has too many elements"))
                })?;
                let (bytes, got) = json_data::decode_reserving(&name, datatype, value.get(), count, reserve)?;
                if got != count as u64 {
                    return Err(ProtocolError::new(format!(
                        "input '{name}': shape {shape:?} needs {count} elements but 'data' has {got}"
                    )));
                }
                bytes
            }
        };
        let tensor = Tensor::new(name, datatype, shape, data).map_err(|e| ProtocolError::new(format!("input {e}")))?;
        inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(ProtocolError::new(format!(
            "{} bytes of binary data after the last binary input are not claimed by any binary_data_size",
            binary.len()
        )));
    }
    let binary_output_default = bool_param(&req.parameters, "binary_data_output", "request")?.unwrap_or(false);
    let timeout = match req.parameters.as_ref().and_then(|p| p.get("timeout")) {
        None => None,
        Some(v) => match v.as_u64() {
            Some(0) => None,
            Some(us) => Some(Duration::from_micros(us)),
            None => {
                return Err(ProtocolError::new(format!(
                    "request: parameter 'timeout' is {v}, expected a whole number of microseconds"
                )));
            }
        },
    };
    let outputs = match req.outputs {
        // An empty list selects nothing, so every output, as Triton reads it.
        None => None,
        Some(list) if list.is_empty() => None,
        Some(list) => {
            if let Some(name) = given_twice(&list, |o| o.name.as_str()) {
                return Err(ProtocolError::new(format!("output '{name}' is asked for twice")));
            }
            let mut wanted: Vec<OutputWanted> = Vec::with_capacity(list.len());
            for o in list {
                let whose = format!("output '{}'", o.name);
                let out_shm = match shm {
                    Some(_) => shared_memory(&o.parameters, &whose)?,
                    None => {
                        refuse_unoffered(&o.parameters, &[("shared_memory_region", "shared memory")], || {
                            whose.clone()
                        })?;
                        None
                    }
                };
                let binary = bool_param(&o.parameters, "binary_data", &whose)?;
                // 0 is no classification, as tritonclient's class_count=0.
                let classification = match o.parameters.as_ref().and_then(|p| p.get("classification")) {
                    None => None,
                    Some(v) => match v.as_u64().map(usize::try_from) {
                        Some(Ok(0)) => None,
                        Some(Ok(n)) => Some(n),
                        _ => {
                            return Err(ProtocolError::new(format!(
                                "{whose}: parameter 'classification' is {v}, expected a whole number of classes"
                            )));
                        }
                    },
                };
                wanted.push(OutputWanted {
                    name: o.name,
                    binary: binary.unwrap_or(binary_output_default),
                    classification,
                    shared_memory: out_shm,
                });
            }
            Some(wanted)
        }
    };
    Ok(DecodedRequest { id: req.id, inputs, outputs, binary_output_default, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_body(json: &str, tail: &[u8]) -> (Vec<u8>, Option<u64>) {
        let mut body = json.as_bytes().to_vec();
        body.extend_from_slice(tail);
        (body, Some(json.len() as u64))
    }

    #[test]
    fn binary_input_is_sliced_and_checked() {
        let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let (body, len) = binary_body(json, &[0, 0, 128, 63, 0, 0, 0, 64]);
        let req = decode_request(&body, len).unwrap();
        assert_eq!(req.inputs[0].data(), [0, 0, 128, 63, 0, 0, 0, 64]);
    }

    #[test]
    fn binary_overrun_and_leftover_are_errors() {
        let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let (body, len) = binary_body(json, &[0; 4]);
        let err = decode_request(&body, len).unwrap_err();
        assert!(err.0.contains("overruns the body"), "{err}");
        let (body, len) = binary_body(json, &[0; 9]);
        assert!(decode_request(&body, len).unwrap_err().0.contains("not claimed"));
    }

    #[test]
    fn bytes_elements_must_match_shape() {
        let json = r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
        let (body, len) = binary_body(json, &[2, 0, 0, 0, b'h', b'i']);
        let err = decode_request(&body, len).unwrap_err();
        assert!(err.0.starts_with("input tensor 's'"), "{err}");
    }

    #[test]
    fn outputs_take_request_default_unless_set() {
        let body = br#"{"parameters":{"binary_data_output":true},"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[true]}],
            "outputs":[{"name":"a"},{"name":"b","parameters":{"binary_data":false}}]}"#;
        let req = decode_request(body, None).unwrap();
        let outs = req.outputs.unwrap();
        assert!(outs[0].binary && !outs[1].binary);
    }

    #[test]
    fn a_name_given_twice_is_refused_among_many() {
        let inputs: Vec<String> =
            (0..3).map(|i| format!(r#"{{"name":"x{i}","shape":[1],"datatype":"BOOL","data":[true]}}"#)).collect();
        let mut outputs: Vec<String> = (0..50_000).map(|i| format!(r#"{{"name":"y{i}"}}"#)).collect();
        let body = format!(r#"{{"inputs":[{}],"outputs":[{}]}}"#, inputs.join(","), outputs.join(","));
        assert_eq!(decode_request(body.as_bytes(), None).unwrap().outputs.unwrap().len(), 50_000);
        outputs.push(r#"{"name":"y777"}"#.to_string());
        let body = format!(r#"{{"inputs":[{}],"outputs":[{}]}}"#, inputs.join(","), outputs.join(","));
        assert!(decode_request(body.as_bytes(), None).unwrap_err().0.contains("'y777' is asked for twice"));
        let body = format!(r#"{{"inputs":[{},{}]}}"#, inputs.join(","), inputs[1]);
        assert!(decode_request(body.as_bytes(), None).unwrap_err().0.contains("input 'x1' is given twice"));
    }

    #[test]
    fn what_decoding_allocates_for_the_inputs_is_reserved_first() {
        use std::cell::{Cell, RefCell};
        // The reservations granted, in order; refused past `budget` bytes.
        let granted = RefCell::new(Vec::<usize>::new());
        let budget = Cell::new(usize::MAX);
        let reserve = |n: usize| {
            if granted.borrow().iter().sum::<usize>() + n > budget.get() {
                return Err(ProtocolError::new(format!("refused {n}")));
            }
            granted.borrow_mut().push(n);
            Ok(())
        };
        let decode = |json: &str, tail: &[u8], limit: usize| {
            granted.borrow_mut().clear();
            budget.set(limit);
            let (body, len) = binary_body(json, tail);
            decode_request_reserving(&body, len, None, &reserve)
        };
        // FP64 from "0,": 8 bytes an element from 2 of text, reserved
        // exactly before the buffer is made; then a binary input's 3.
        let n = 10_000;
        let zeros = vec!["0"; n].join(",");
        let json = format!(
            r#"{{"inputs":[{{"name":"x","shape":[{n}],"datatype":"FP64","data":[{zeros}]}},
            {{"name":"b","shape":[3],"datatype":"UINT8","parameters":{{"binary_data_size":3}}}}]}}"#
        );
        let req = decode(&json, &[1, 2, 3], usize::MAX).unwrap();
        assert_eq!((req.inputs[0].data().len(), req.inputs[1].data()), (8 * n, &[1, 2, 3][..]));
        assert_eq!(*granted.borrow(), [8 * n, 3]);
        // Refused before either is allocated: the refusal is the error.
        assert_eq!(decode(&json, &[1, 2, 3], 8 * n - 1).unwrap_err().0, format!("refused {}", 8 * n));
        assert!(granted.borrow().is_empty());
        assert_eq!(decode(&json, &[1, 2, 3], 8 * n + 2).unwrap_err().0, "refused 3");
        // The JSON rewritten for a NaN is reserved first, then the tensor.
        let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[NaN,1]}]}"#;
        decode(json, &[], usize::MAX).unwrap();
        assert_eq!(*granted.borrow(), [json.len() + 2, 8]);
        // More elements than the shape says: the buffer grows, reserved first.
        let json = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,2,3,4,5]}]}"#;
        assert!(decode(json, &[], usize::MAX).unwrap_err().0.contains("needs 2 elements but 'data' has 5"));
        assert!(granted.borrow().iter().sum::<usize>() >= 20, "{:?}", granted.borrow());
        assert_eq!(decode(json, &[], 8).unwrap_err().0, "refused 8");
        // Strings: their lengths and bytes, at most what the text holds.
        let json = r#"{"inputs":[{"name":"s","shape":[2],"datatype":"BYTES","data":["ab","c"]}]}"#;
        let req = decode(json, &[], usize::MAX).unwrap();
        assert_eq!(req.inputs[0].data(), [2, 0, 0, 0, b'a', b'b', 1, 0, 0, 0, b'c']);
        assert!(granted.borrow().iter().sum::<usize>() >= 11, "{:?}", granted.borrow());
    }
}
