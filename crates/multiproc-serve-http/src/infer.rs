//! `POST /v2/models/{name}[/versions/{v}]/infer`: read the body (bounded in
//! size and time), decode it, check it against the model's configuration,
//! run it, encode the answer.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{self, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use multiproc_serve::Request;

use crate::app::{App, PathParams, parse_version};
use crate::body::{BodyHead, read_body};
use crate::encoding::ContentEncoding;
use crate::error::ApiError;
use crate::protocol::{
    DecodedRequest, HEADER_CONTENT_LENGTH, OutputWanted, ProtocolError, SharedMemoryRef, ShmReader, Tensor, classify,
    decode_request_reserving, encode_response,
};
use crate::raw::raw_request;
use crate::repository::{ModelConfig, TensorConfig};

// The handlers take the whole request and read its headers in place
// (a `HeaderMap` extractor would clone them for every request).

/// Inference on the model's default version (the router's way in).
pub(crate) async fn infer(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
    request: extract::Request,
) -> Response {
    answer(&app, name, None, request).await
}

/// Inference on one version (the router's way in).
pub(crate) async fn infer_version(
    State(app): State<Arc<App>>,
    PathParams((name, version)): PathParams<(String, String)>,
    request: extract::Request,
) -> Response {
    answer(&app, name, Some(&version), request).await
}

/// Answers an inference request on `name` (and the version `version`, a
/// path segment, if given), whichever way it came in: the router's or the
/// listener's fast path.
pub(crate) async fn answer<B>(
    app: &App,
    name: String,
    version: Option<&str>,
    request: axum::http::Request<B>,
) -> Response
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    let version = match version.map(parse_version).transpose() {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    // What the headers say is read now and the headers dropped: they share
    // the connection's read buffer, which hyper can then reuse for the next
    // request instead of allocating a new one while this one is answered.
    let (parts, body) = request.into_parts();
    let lengths = Lengths::of(&parts.headers);
    drop(parts);
    match infer_inner(app, &name, version, lengths, body).await {
        Ok(r) => r,
        Err(mut e) => {
            // A version on disk that the policy does not serve is 404, as
            // its metadata and readiness are (the core says 503, not
            // loaded, and a client would retry it for ever).
            if e.status == StatusCode::SERVICE_UNAVAILABLE
                && let Some(v) = version
                && let Err(not_served) = crate::app::model_at(app, &name, Some(v))
                && not_served.status == StatusCode::NOT_FOUND
            {
                e = not_served;
            }
            // Failures inside the core are counted by the core. A version
            // the model does not serve gets no series: any number in the
            // path would otherwise add one to /metrics, for ever.
            if matches!(e.reason, "bad_request" | "too_large" | "body_timeout" | "unsupported_encoding" | "body_budget")
                && version.is_none_or(|v| app.model(&name).is_ok_and(|(_, served)| served.contains(&v)))
            {
                let v = version.map_or_else(|| "default".to_string(), |v| v.to_string());
                app.http_counters.failure(&name, &v, e.reason);
            }
            e.into_response()
        }
    }
}

/// The request headers inference needs.
struct Lengths {
    /// What they say of the body.
    body: BodyHead,
    /// `Inference-Header-Content-Length`: absent, a number, or the error
    /// for a value that is not one (answered after the body is read).
    json_header: Result<Option<u64>, ApiError>,
    /// `Content-Encoding`, or the error for one not read here.
    encoding: Result<ContentEncoding, ApiError>,
}

impl Lengths {
    fn of(headers: &HeaderMap) -> Lengths {
        let body = BodyHead::of(headers);
        let json_header = match headers.get(HEADER_CONTENT_LENGTH) {
            None => Ok(None),
            Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("Inference-Header-Content-Length is {v:?}, expected a number of bytes"))
            }),
        };
        Lengths { body, json_header, encoding: ContentEncoding::of(headers) }
    }
}

async fn infer_inner<B>(
    app: &App,
    name: &str,
    version: Option<u64>,
    lengths: Lengths,
    body: B,
) -> Result<Response, ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    let config = app.config(name)?;
    let encoding = lengths.encoding?;
    // The lease holds the body's bytes in the server's body budget, then
    // (see below) its inputs' and what is kept of it for the answer.
    let (body, mut lease) = read_body(app, lengths.body, body).await?;
    let body = encoding.decode(body, app.options.body_limit, &mut lease)?;
    let header_length = lengths.json_header?;
    // The body is gone (moved or dropped) before the model runs.
    let DecodedRequest { id, inputs, outputs, binary_output_default, timeout } = match header_length {
        Some(0) => raw_request(name, &config, Vec::from(body))?,
        _ => {
            // What decoding allocates for the inputs is held in the budget
            // before it is allocated, on top of the body (dropped once
            // decoded): a request whose inputs the budget cannot hold is
            // refused before they take any memory.
            let held = std::cell::RefCell::new(&mut lease);
            let over_budget = std::cell::Cell::new(None);
            let reserve = |more: usize| {
                let total = held.borrow().bytes().saturating_add(more);
                if let Err(refusal) = held.borrow_mut().reserve_total(total) {
                    over_budget.set(Some(refusal));
                    return Err(ProtocolError::new("over the request body budget"));
                }
                Ok(())
            };
            // Inputs read from shared memory also count against the
            // body's limit, as if they had come in the body.
            let read_so_far = std::cell::Cell::new(body.len());
            let read = |at: &SharedMemoryRef| {
                let total = read_so_far.get().saturating_add(at.byte_size);
                if total > app.options.body_limit {
                    return Err(ProtocolError::new(format!(
                        "shared memory region '{}': its {} bytes would bring the request to {total} bytes, more \
                         than the server's limit of {} (multiproc serve --max-body-bytes)",
                        at.region, at.byte_size, app.options.body_limit
                    )));
                }
                reserve(at.byte_size)?;
                read_so_far.set(total);
                app.shm.read(at)
            };
            let shm: Option<ShmReader<'_>> = if app.shm.allowed() { Some(&read) } else { None };
            let decoded = decode_request_reserving(&body, header_length, shm, &reserve);
            drop(body);
            match (decoded, over_budget.take()) {
                (_, Some(refusal)) => return Err(refusal.into()),
                (decoded, None) => decoded?,
            }
        }
    };
    // Held while the request waits and runs: its inputs (by the core, which
    // holds them encoded until it drops the request), and what the handler
    // keeps of the body until it answers. The lease is set to that, not
    // grown by it: what it held for the body and for decoding is
    // replaced.
    let queued = inputs.iter().map(|t| t.data().len()).fold(0, usize::saturating_add);
    lease.resize(queued.saturating_add(kept_bytes(id.as_deref(), outputs.as_deref())))?;
    check_inputs(name, &config, &inputs)?;
    if let Some(wanted) = &outputs
        && let Some(w) = wanted.iter().find(|w| !config.outputs.iter().any(|o| o.name == w.name))
    {
        return Err(ApiError::bad_request(format!(
            "model '{name}' has no output '{}' (outputs: {})",
            w.name,
            names(&config.outputs)
        )));
    }
    if let Some(w) = outputs.iter().flatten().find(|w| {
        w.classification.is_some() && config.outputs.iter().any(|o| o.name == w.name && !o.datatype.is_numeric())
    }) {
        return Err(ApiError::bad_request(format!(
            "output '{}' of model '{name}' is not numeric: it cannot be classified",
            w.name
        )));
    }
    // The batcher counts rows, so one model call gets at most max_batch_size.
    let rows = if config.max_batch_size > 0 { inputs[0].shape().first().copied().unwrap_or(1) } else { 1 };
    // The inputs' share goes with the request: the core gives it back when
    // it drops the request, not when this handler stops waiting for it.
    let held_by_core = lease.split_off(queued);
    let mut request = Request::new(name, inputs).maybe_version(version).rows(rows).hold(held_by_core);
    if let Some(t) = timeout {
        request = request.timeout(t);
    }
    let answer = app.core.infer_async::<Vec<Tensor>, Vec<Tensor>>(request);
    let reply = app.lone.wait(answer).await?;
    let model_failed = |e: ProtocolError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "model_failed", e.0);
    let produced = classified(reply.output, outputs.as_deref(), &config).map_err(model_failed)?;
    for w in outputs.iter().flatten() {
        if let (Some(at), Some(t)) = (&w.shared_memory, produced.iter().find(|t| t.name() == w.name)) {
            app.shm.write(at, t.data()).map_err(|e| ApiError::bad_request(format!("output '{}': {}", w.name, e.0)))?;
        }
    }
    let encoded =
        encode_response(name, &reply.version.to_string(), id, produced, outputs.as_deref(), binary_output_default)
            .map_err(model_failed)?;
    let mut response = Response::new(Body::from(encoded.body));
    let h = response.headers_mut();
    match encoded.header_length {
        Some(n) => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            h.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(response)
}

/// The bytes of a request the handler keeps from its body until it answers,
/// besides its inputs: its `id` (echoed in the answer) and the outputs it
/// asks for (their names and shared memory regions).
fn kept_bytes(id: Option<&str>, outputs: Option<&[OutputWanted]>) -> usize {
    let output = |w: &OutputWanted| {
        let region = w.shared_memory.as_ref().map_or(0, |at| at.region.len());
        size_of::<OutputWanted>().saturating_add(w.name.len()).saturating_add(region)
    };
    let outputs = outputs.unwrap_or_default().iter().map(output).fold(0, usize::saturating_add);
    id.map_or(0, str::len).saturating_add(outputs)
}

/// The model's outputs with those asked for with a `classification`
/// replaced by their classes (see [`classify`]), named by the labels of
/// their configuration.
fn classified(
    outputs: Vec<Tensor>,
    wanted: Option<&[OutputWanted]>,
    config: &ModelConfig,
) -> Result<Vec<Tensor>, ProtocolError> {
    let Some(wanted) = wanted.filter(|w| w.iter().any(|w| w.classification.is_some())) else { return Ok(outputs) };
    let labels = |name: &str| {
        let configured = config.outputs.iter().find(|o| o.name == name).and_then(|o| o.labels.as_ref());
        configured.map_or(&[][..], |l| &l.names[..])
    };
    outputs
        .into_iter()
        .map(|t| match wanted.iter().find(|w| w.name == t.name()).and_then(|w| w.classification) {
            Some(n) => classify(&t, n, config.max_batch_size > 0, labels(t.name())),
            None => Ok(t),
        })
        .collect()
}

fn names(list: &[TensorConfig]) -> String {
    list.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Checks the inputs against the configuration: every input present once,
/// no other, datatype and shape as configured (batch dimension first, at
/// most `max_batch_size`, when the model batches).
fn check_inputs(model: &str, config: &ModelConfig, inputs: &[Tensor]) -> Result<(), ApiError> {
    if let Some(t) = inputs.iter().find(|t| !config.inputs.iter().any(|c| c.name == t.name())) {
        return Err(ApiError::bad_request(format!(
            "model '{model}' has no input '{}' (inputs: {})",
            t.name(),
            names(&config.inputs)
        )));
    }
    let mut batch: Option<usize> = None;
    for c in &config.inputs {
        let t = inputs.iter().find(|t| t.name() == c.name).ok_or_else(|| {
            ApiError::bad_request(format!("model '{model}' needs input '{}', which is missing", c.name))
        })?;
        if t.datatype() != c.datatype {
            return Err(ApiError::bad_request(format!(
                "input '{}' of model '{model}' is {}, expected {}",
                c.name,
                t.datatype(),
                c.datatype
            )));
        }
        let shape = t.shape();
        let dims = if config.max_batch_size > 0 { shape.get(1..) } else { Some(shape) };
        let fits = dims
            .is_some_and(|d| d.len() == c.dims.len() && d.iter().zip(&c.dims).all(|(&d, &e)| e < 0 || d as i64 == e));
        if !fits {
            return Err(ApiError::bad_request(format!(
                "input '{}' of model '{model}' has shape {shape:?}, expected {:?} (-1: any size)",
                c.name,
                config.metadata(c).shape
            )));
        }
        if config.max_batch_size > 0 {
            let n = shape[0];
            if n == 0 || n > config.max_batch_size {
                return Err(ApiError::bad_request(format!(
                    "input '{}' of model '{model}' has a batch of {n}, expected 1 to max_batch_size {}",
                    c.name, config.max_batch_size
                )));
            }
            if batch.is_some_and(|b| b != n) {
                return Err(ApiError::bad_request(format!(
                    "the inputs of model '{model}' disagree on the batch size ({} and {n})",
                    batch.unwrap_or(0)
                )));
            }
            batch = Some(n);
        }
    }
    Ok(())
}
