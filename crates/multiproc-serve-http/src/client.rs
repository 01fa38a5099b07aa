//! A small blocking client for `multiproc infer`: inputs as
//! `{"name": data, …}` (datatype and shape taken from the model's metadata
//! and the nesting of `data`) or as a whole Open Inference Protocol request.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::protocol::ModelMetadata;

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

fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&Value>) -> Result<Value, ClientError> {
    let req = agent.request(method, url);
    let res = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    match res {
        Ok(r) => r.into_json().map_err(|e| ClientError::Transport { url: url.into(), message: e.to_string() }),
        Err(ureq::Error::Status(status, r)) => {
            let message =
                r.into_json::<Value>().ok().and_then(|v| v["error"].as_str().map(str::to_string)).unwrap_or_default();
            Err(ClientError::Server { status, message })
        }
        Err(ureq::Error::Transport(t)) => {
            // ureq's message starts with the URL, which ours already names.
            let text = t.to_string();
            let message = text.strip_prefix(&format!("{url}: ")).unwrap_or(&text).to_string();
            Err(ClientError::Transport { url: url.into(), message })
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

/// Builds an inference request from `{"input name": data}` and the model's
/// metadata: the datatype is the input's, the shape the nesting of `data`
/// (with a batch dimension of 1 added when the model has one and it is
/// missing). A value that already has `"inputs"` is sent as it is.
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

/// Runs one inference and returns the response's outputs, one line each:
/// `name DATATYPE [shape] data`.
///
/// # Errors
///
/// `base_url` is not an `http://` or `https://` URL, the server cannot be
/// reached or answers with an error, or the inputs do not fit the model.
pub fn infer(base_url: &str, model: &str, version: Option<u64>, given: Value) -> Result<Vec<String>, ClientError> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
    let base = base_url.trim_end_matches('/');
    check_base_url(base)?;
    // A model is named after its directory, which may hold '#', '?', '%'…
    let model = percent_encoding::utf8_percent_encode(model, PATH_SEGMENT);
    let model_url = match version {
        Some(v) => format!("{base}/v2/models/{model}/versions/{v}"),
        None => format!("{base}/v2/models/{model}"),
    };
    let meta: ModelMetadata = serde_json::from_value(call(&agent, "GET", &model_url, None)?)
        .map_err(|e| ClientError::Input(format!("unexpected model metadata: {e}")))?;
    let request = build_request(&meta, given)?;
    let response = call(&agent, "POST", &format!("{model_url}/infer"), Some(&request))?;
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
