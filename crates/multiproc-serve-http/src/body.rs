//! Reading a request body whole, bounded in size (`--max-body-bytes`), in
//! time (`--body-timeout-secs`) and, with every other body held, in bytes
//! (`--body-budget-bytes`, see [`crate::budget`]).
//!
//! A body refused for the budget is not read: the answer (503) is sent at
//! once, and what the client sends of the body after it is read and thrown
//! away, chunk by chunk, within the body's time and size limits, so that a
//! client busy sending it still reads the answer (a connection closed with
//! its request unread would be reset under it) and may send its next
//! request on the same connection. A client that asked for
//! `100-continue` is not sent the body's go-ahead at all.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::app::App;
use crate::budget::{BodyLease, Refusal};
use crate::error::ApiError;

/// What the request headers say of the body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyHead {
    /// `Content-Length`, if present and a number.
    declared: Option<u64>,
    /// `Expect: 100-continue`: the client waits for a go-ahead before it
    /// sends the body.
    expects_continue: bool,
}

impl BodyHead {
    /// What `headers` say of the body.
    pub(crate) fn of(headers: &HeaderMap) -> BodyHead {
        let declared =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let expects_continue =
            headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        BodyHead { declared, expects_continue }
    }
}

/// Reads a request body whole, with the lease of the budget that holds it.
///
/// # Errors
///
/// 413 if it is over the size limit (at once if its `Content-Length` is),
/// 408 if it does not arrive in time, 503 if the budget cannot hold it (at
/// once if its `Content-Length` is known; else as soon as what has arrived
/// is over it), 413 if it is over the whole budget, 400 if it cannot be
/// read (the client went away).
pub(crate) async fn read_body<B>(app: &App, head: BodyHead, body: B) -> Result<(Bytes, BodyLease<'_>), ApiError>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    let limit = app.options.body_limit;
    // `what`: the body, with its size when it was announced.
    let too_large = |what: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{what} is over the limit of {limit} bytes (--max-body-bytes)"),
        )
    };
    if let Some(n) = head.declared
        && n > limit as u64
    {
        return Err(too_large(format!("request body of {n} bytes")));
    }
    let deadline = Instant::now() + app.options.body_timeout;
    let mut lease = app.body_budget.lease();
    let mut body = body;
    // Under the size limit, so it fits a usize.
    if let Some(n) = head.declared.and_then(|n| usize::try_from(n).ok())
        && let Err(refusal) = lease.reserve_total(n)
    {
        return Err(refused(app, head, refusal, body, deadline));
    }
    let mut gathered = Gathered::default();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::Read(e.into()))?;
            let Ok(data) = frame.into_data() else { continue };
            let total = gathered.len().saturating_add(data.len());
            if total > limit {
                return Err(Failure::TooLarge);
            }
            lease.reserve_total(total).map_err(Failure::Budget)?;
            gathered.push(data, head.declared);
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(())) => Ok((gathered.into_bytes(), lease)),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {:?}", app.options.body_timeout),
        )),
        Ok(Err(Failure::TooLarge)) => Err(too_large("the request body".into())),
        Ok(Err(Failure::Read(e))) => Err(ApiError::bad_request(format!("cannot read the request body: {e}"))),
        Ok(Err(Failure::Budget(refusal))) => {
            drop(gathered);
            drop(lease);
            Err(refused(app, head, refusal, body, deadline))
        }
    }
}

/// Why a body could not be read whole.
enum Failure {
    /// Over the size limit.
    TooLarge,
    /// Over the budget.
    Budget(Refusal),
    /// The body broke off (the client went away) or was not HTTP.
    Read(axum::BoxError),
}

/// The error for a body refused for the budget; what remains of `body` is
/// thrown away as it arrives (see the module docs), unless the client
/// waits for a go-ahead (it will not send it) or the body could never be
/// held (a 413: the connection closes, as for a body over the size limit).
fn refused<B>(app: &App, head: BodyHead, refusal: Refusal, body: B, deadline: Instant) -> ApiError
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
{
    if !head.expects_continue && !refusal.is_too_large() {
        tokio::spawn(discard(body, app.options.body_limit, deadline));
    }
    refusal.into()
}

/// Reads `body` to its end and throws it away, at most `limit` bytes and
/// until `deadline`; then drops it (which closes the connection if it has
/// not ended).
async fn discard<B>(mut body: B, limit: usize, deadline: Instant)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut seen = 0usize;
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > limit {
                break;
            }
        }
    };
    if tokio::time::timeout_at(deadline, read).await.is_err() {
        tracing::debug!("a refused request body was still arriving at its time limit; closing its connection");
    }
}

/// The chunks of a body read so far: most bodies come in one, which is
/// then the body itself, uncopied.
#[derive(Default)]
enum Gathered {
    #[default]
    Empty,
    One(Bytes),
    Many(Vec<u8>),
}

impl Gathered {
    fn len(&self) -> usize {
        match self {
            Gathered::Empty => 0,
            Gathered::One(b) => b.len(),
            Gathered::Many(v) => v.len(),
        }
    }

    /// Adds `data`; `declared`, the body's `Content-Length`, sizes the
    /// buffer once (the body is under the size limit when it is given).
    fn push(&mut self, data: Bytes, declared: Option<u64>) {
        match self {
            _ if data.is_empty() => {}
            Gathered::Empty => *self = Gathered::One(data),
            Gathered::One(first) => {
                let now = first.len() + data.len();
                let mut all =
                    Vec::with_capacity(declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(now).max(now));
                all.extend_from_slice(first);
                all.extend_from_slice(&data);
                *self = Gathered::Many(all);
            }
            Gathered::Many(all) => all.extend_from_slice(&data),
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Gathered::Empty => Bytes::new(),
            Gathered::One(b) => b,
            Gathered::Many(v) => Bytes::from(v),
        }
    }
}
