//! A small blocking client for `multiproc infer`: inputs as
//! `{"name": data, …}` (datatype and shape taken from the model's metadata
//! and the nesting of `data`) or as a whole Open Inference Protocol request.

use std::io::Read;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::protocol::{DataType, ModelMetadata};

/// How long [`infer`] waits by default for each answer (the model's
/// metadata, then the inference) before giving up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How many bytes of an answer that is not JSON an error shows.
const SHOWN_BYTES: usize = 80;

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("server answered {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// Its `error` message.
        message: String,
    },
    /// The server could not be reached.
    #[error("cannot reach {url}: {message}; is `multiproc serve` running there?")]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The server accepted the connection but sent no (whole) answer in time.
    #[error(
        "{url} accepted the connection but did not answer within {} s; the server may be overloaded or the \
         model slow: try again, or allow more time (`multiproc infer --timeout SECONDS`)",
        timeout.as_secs_f64()
    )]
    NoAnswer {
        /// The URL.
        url: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The server answered with a success status but its body is not JSON:
    /// likely not an Open Inference Protocol server (a web page, a proxy).
    #[error(
        "{url} answered {status} with a body that is not JSON ({content_type}, {size} bytes, beginning {start}); \
         is it an Open Inference Protocol server (`multiproc serve`, Triton, KServe)? Check --url"
    )]
    NotJson {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its `Content-Type`, escaped (or "no Content-Type").
        content_type: String,
        /// The body's length in bytes.
        size: usize,
        /// The body's first bytes, quoted and escaped so that they print
        /// safely (no terminal control codes).
        start: String,
    },
    /// The server answered with a success status, then its body broke off
    /// (the connection closed or failed before the announced length).
    #[error(
        "{url} answered {status}, then its answer broke off after {received} bytes ({message}); the server may \
         have stopped or restarted: try again"
    )]
    BrokenAnswer {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The bytes of the body received before it broke off.
        received: usize,
        /// Why it broke off.
        message: String,
    },
    /// The server's URL is not an `http://` or `https://` URL.
    #[error("{url} is not a server URL ({message}); give one like http://127.0.0.1:8000")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is not one.
        message: String,
    },
    /// The inputs given are not usable.
    #[error("{0}")]
    Input(String),
}

/// `bytes` (at most `limit` of them) as a quoted string with every control
/// character escaped, "…" after it when cut short.
fn quoted_start(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]);
    let more = if bytes.len() > limit { "…" } else { "" };
    format!("\"{}\"{more}", text.escape_debug())
}

/// True if `error` (or what caused it) is an I/O time-out.
fn is_time_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A blocking HTTP client giving up on an answer after `timeout`.
struct Client {
    agent: ureq::Agent,
    timeout: Duration,
}

impl Client {
    fn new(timeout: Duration) -> Client {
        Client { agent: ureq::AgentBuilder::new().timeout(timeout).build(), timeout }
    }

    /// An I/O error while reading the body of an answer with `status`,
    /// after `received` bytes of it: the time-out, or the answer breaking
    /// off (the server was reached: not a transport failure).
    fn body_failure(&self, url: &str, status: u16, received: usize, e: &std::io::Error) -> ClientError {
        match is_time_out(e) {
            true => ClientError::NoAnswer { url: url.into(), timeout: self.timeout },
            false => ClientError::BrokenAnswer { url: url.into(), status, received, message: e.to_string() },
        }
    }

    fn call(&self, method: &str, url: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let req = self.agent.request(method, url);
        let res = match body {
            Some(b) => req.send_json(b.clone()),
            None => req.call(),
        };
        match res {
            Ok(r) => {
                let status = r.status();
                let content_type = r
                    .header("content-type")
                    .map_or_else(|| "no Content-Type".to_string(), |t| quoted_start(t.as_bytes(), 60));
                let mut bytes = Vec::new();
                if let Err(e) = r.into_reader().read_to_end(&mut bytes) {
                    return Err(self.body_failure(url, status, bytes.len(), &e));
                }
                serde_json::from_slice(&bytes).map_err(|_| ClientError::NotJson {
                    url: url.into(),
                    status,
                    content_type,
                    size: bytes.len(),
                    start: quoted_start(&bytes, SHOWN_BYTES),
                })
            }
            Err(ureq::Error::Status(status, r)) => {
                let message = r
                    .into_json::<Value>()
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_default();
                Err(ClientError::Server { status, message })
            }
            // A time-out connecting is `ConnectionFailed`: not reached.
            Err(ureq::Error::Transport(t)) if t.kind() == ureq::ErrorKind::Io && is_time_out(&t) => {
                Err(ClientError::NoAnswer { url: url.into(), timeout: self.timeout })
            }
            Err(ureq::Error::Transport(t)) => {
                // ureq's message starts with the URL, which ours already names.
                let text = t.to_string();
                let message = text.strip_prefix(&format!("{url}: ")).unwrap_or(&text).to_string();
                Err(ClientError::Transport { url: url.into(), message })
            }
        }
    }
}

/// Checks that `base` is an absolute `http://` or `https://` URL with a host,
/// so that a typo is reported as such and not as a server that is down.
fn check_base_url(base: &str) -> Result<(), ClientError> {
    let bad = |message: &str| Err(ClientError::BadUrl { url: base.into(), message: message.into() });
    let Some((scheme, rest)) = base.split_once("://") else {
        return bad("no http:// or https:// in front");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return bad("the scheme must be http or https");
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return bad("no host");
    }
    if host.contains(char::is_whitespace) {
        return bad("a space in the host");
    }
    Ok(())
}

fn nested_shape(v: &Value) -> Vec<usize> {
    match v {
        Value::Array(items) => {
            let mut shape = vec![items.len()];
            if let Some(first) = items.first() {
                shape.extend(nested_shape(first));
            }
            shape
        }
        _ => Vec::new(),
    }
}

/// Asks for every output as JSON: a full request given to `multiproc infer`
/// may ask for binary outputs (Triton's extension: `binary_data_output`, or
/// an output's `binary_data`), which the client could not print; it prints
/// outputs as JSON, so it drops those flags.
///
/// ```
/// use multiproc_serve_http::client::outputs_as_json;
/// let mut req = serde_json::json!({
///     "inputs": [],
///     "parameters": {"binary_data_output": true, "other": 1},
///     "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
/// });
/// outputs_as_json(&mut req);
/// assert_eq!(req["parameters"], serde_json::json!({"other": 1}));
/// assert_eq!(req["outputs"][0]["parameters"], serde_json::json!({}));
/// ```
pub fn outputs_as_json(request: &mut Value) {
    if let Some(parameters) = request.get_mut("parameters").and_then(Value::as_object_mut) {
        parameters.remove("binary_data_output");
    }
    for output in request.get_mut("outputs").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(parameters) = output.get_mut("parameters").and_then(Value::as_object_mut) {
            parameters.remove("binary_data");
        }
    }
}

/// Builds an inference request from `{"input name": data}` and the model's
/// metadata: the datatype is the input's, the shape the nesting of `data`
/// (with a batch dimension of 1 added when the model has one and it is
/// missing). A value that already has `"inputs"` is sent as it is (by
/// [`infer`], with [`outputs_as_json`]).
///
/// ```
/// use multiproc_serve_http::client::build_request;
/// use multiproc_serve_http::protocol::{ModelMetadata, TensorMetadata};
/// let meta = ModelMetadata {
///     name: "m".into(), versions: vec!["1".into()], platform: "onnxruntime_onnx".into(),
///     inputs: vec![TensorMetadata { name: "x".into(), datatype: "FP32".into(), shape: vec![-1, 2] }],
///     outputs: vec![],
/// };
/// let req = build_request(&meta, serde_json::json!({"x": [1.0, 2.0]})).unwrap();
/// assert_eq!(req["inputs"][0]["shape"], serde_json::json!([1, 2]));
/// ```
///
/// # Errors
///
/// An input the model does not have, or inputs that are not a JSON object.
pub fn build_request(meta: &ModelMetadata, given: Value) -> Result<Value, ClientError> {
    if given.get("inputs").is_some() {
        return Ok(given);
    }
    let Value::Object(map) = given else {
        return Err(ClientError::Input("inputs must be a JSON object {\"input name\": data, …}".into()));
    };
    let mut inputs = Vec::new();
    for (name, data) in map {
        let m = meta.inputs.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = meta.inputs.iter().map(|i| i.name.as_str()).collect();
            ClientError::Input(format!("model '{}' has no input '{name}' (inputs: {})", meta.name, names.join(", ")))
        })?;
        let mut shape = nested_shape(&data);
        if shape.len() + 1 == m.shape.len() && m.shape[0] == -1 {
            shape.insert(0, 1);
        }
        inputs.push(json!({"name": name, "datatype": m.datatype, "shape": shape, "data": data}));
    }
    Ok(json!({ "inputs": inputs }))
}

/// What is percent-encoded in a path segment: all but RFC 3986's unreserved
/// characters.
const PATH_SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Asks for the `n` highest values of each output the request lists (of
/// each numeric output of the model when it lists none) instead of their
/// data: Triton's classification extension.
///
/// # Errors
///
/// The model has no numeric output.
pub fn ask_classification(meta: &ModelMetadata, request: &mut Value, n: usize) -> Result<(), ClientError> {
    let parameters = json!({"classification": n});
    match request.get_mut("outputs").and_then(Value::as_array_mut).filter(|o| !o.is_empty()) {
        Some(listed) => listed.iter_mut().for_each(|o| o["parameters"]["classification"] = json!(n)),
        None => {
            let numeric: Vec<Value> = meta
                .outputs
                .iter()
                // A datatype this build does not know is left to the server to judge.
                .filter(|o| o.datatype.parse::<DataType>().map_or(true, DataType::is_numeric))
                .map(|o| json!({"name": o.name, "parameters": parameters}))
                .collect();
            if numeric.is_empty() {
                return Err(ClientError::Input(format!("model '{}' has no numeric output to classify", meta.name)));
            }
            request["outputs"] = Value::Array(numeric);
        }
    }
    Ok(())
}

/// Runs one inference and returns the response's outputs, one line each:
/// `name DATATYPE [shape] data`; with `classification`, each output as its
/// that many highest values (see [`ask_classification`]). Each of its two
/// requests (the model's metadata, then the inference) gives up after
/// `timeout` (see [`DEFAULT_TIMEOUT`]).
///
/// # Errors
///
/// `base_url` is not an `http://` or `https://` URL, the server cannot be
/// reached, does not answer within `timeout`, answers with an error or with
/// something that is not JSON, or the inputs do not fit the model.
pub fn infer(
    base_url: &str,
    model: &str,
    version: Option<u64>,
    given: Value,
    classification: Option<usize>,
    timeout: Duration,
) -> Result<Vec<String>, ClientError> {
    let client = Client::new(timeout);
    let base = base_url.trim_end_matches('/');
    check_base_url(base)?;
    // A model is named after its directory, which may hold '#', '?', '%'…
    let model = percent_encoding::utf8_percent_encode(model, PATH_SEGMENT);
    let model_url = match version {
        Some(v) => format!("{base}/v2/models/{model}/versions/{v}"),
        None => format!("{base}/v2/models/{model}"),
    };
    let meta: ModelMetadata = serde_json::from_value(client.call("GET", &model_url, None)?)
        .map_err(|e| ClientError::Input(format!("unexpected model metadata: {e}")))?;
    let mut request = build_request(&meta, given)?;
    outputs_as_json(&mut request);
    if let Some(n) = classification {
        ask_classification(&meta, &mut request, n)?;
    }
    let response = client.call("POST", &format!("{model_url}/infer"), Some(&request))?;
    let outputs = response["outputs"].as_array().cloned().unwrap_or_default();
    let version = response["model_version"].as_str().unwrap_or("?").to_string();
    let mut lines = vec![format!("model {model} version {version}")];
    for o in outputs {
        let o: Map<String, Value> = o.as_object().cloned().unwrap_or_default();
        lines.push(format!(
            "{} {} {} {}",
            o.get("name").and_then(Value::as_str).unwrap_or("?"),
            o.get("datatype").and_then(Value::as_str).unwrap_or("?"),
            o.get("shape").map(Value::to_string).unwrap_or_default(),
            o.get("data").map(Value::to_string).unwrap_or_default()
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::{ask_classification, quoted_start};
    use crate::protocol::{ModelMetadata, TensorMetadata};
    use serde_json::json;

    #[test]
    fn classification_is_asked_of_the_listed_outputs_or_of_every_numeric_one() {
        let tensor = |name: &str, datatype: &str| TensorMetadata {
            name: name.into(),
            datatype: datatype.into(),
            shape: vec![-1],
        };
        let meta = ModelMetadata {
            name: "m".into(),
            versions: vec![],
            platform: String::new(),
            inputs: vec![],
            outputs: vec![tensor("p", "FP32"), tensor("s", "BYTES"), tensor("q", "INT64")],
        };
        let mut request = json!({"inputs": []});
        ask_classification(&meta, &mut request, 3).unwrap();
        let c = json!({"classification": 3});
        assert_eq!(request["outputs"], json!([{"name": "p", "parameters": c}, {"name": "q", "parameters": c}]));
        let mut listed = json!({"inputs": [], "outputs": [{"name": "q", "parameters": {"binary_data": true}}]});
        ask_classification(&meta, &mut listed, 2).unwrap();
        assert_eq!(listed["outputs"], json!([{"name": "q", "parameters": {"binary_data": true, "classification": 2}}]));
        let text = ModelMetadata { outputs: vec![tensor("s", "BYTES")], ..meta };
        let e = ask_classification(&text, &mut json!({"inputs": []}), 1).unwrap_err();
        assert!(e.to_string().contains("no numeric output"), "{e}");
    }

    #[test]
    fn the_start_of_an_answer_is_quoted_escaped_and_cut_short() {
        assert_eq!(quoted_start(b"<h1>\x1b[31m\r\n", 80), r#""<h1>\u{1b}[31m\r\n""#);
        assert_eq!(quoted_start(b"abcdef", 3), "\"abc\"…");
        // Bytes that are not UTF-8 (or a character cut in two) print as U+FFFD.
        assert_eq!(quoted_start("é".as_bytes(), 1), "\"\u{fffd}\"…");
        assert_eq!(quoted_start(b"", 80), "\"\"");
    }
}
