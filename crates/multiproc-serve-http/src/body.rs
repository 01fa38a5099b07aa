//! Reading a request body whole, bounded in size (`--max-body-bytes`), in
//! time (`--body-timeout-secs`) and, with every other body held, in bytes
//! (`--body-budget-bytes`, see [`crate::budget`]).
//!
//! A body refused for the budget (before any of it is read when its
//! `Content-Length` is over what the budget has free, else as soon as what
//! has arrived crosses it) is read no further: the answer (503) is sent at
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
/// A body announced by its `Content-Length` is checked against what the
/// budget has free (and refused at once if it is over), but held only as
/// it arrives, as a chunked body is: a client that announces a body and
/// sends none of it holds nothing.
///
/// # Errors
///
/// 413 if it is over the size limit (at once if its `Content-Length` is),
/// 408 if it does not arrive in time, 503 if the budget cannot hold it (at
/// once if its `Content-Length` is over what is free; else as soon as what
/// has arrived is over it), 413 if it is over the whole budget, 400 if it
/// cannot be read (the client went away).
pub(crate) async fn read_body<B>(app: &App, head: BodyHead, body: B) -> Result<(Bytes, BodyLease), ApiError>
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
    // Under the size limit, so it fits a usize.
    let declared = head.declared.and_then(|n| usize::try_from(n).ok());
    let deadline = Instant::now() + app.options.body_timeout;
    let mut body = body;
    if let Some(n) = declared
        && let Err(refusal) = app.body_budget.check(n)
    {
        return Err(refused(app, head, refusal, body, deadline));
    }
    let mut lease = app.body_budget.lease();
    // The buffer never grows past what the body may be.
    let most = declared.unwrap_or(limit).min(limit);
    let mut gathered = Gathered::default();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::Read(e.into()))?;
            let Ok(data) = frame.into_data() else { continue };
            if gathered.len().saturating_add(data.len()) > limit {
                return Err(Failure::TooLarge);
            }
            gathered.push(data, most, &mut lease).map_err(Failure::Budget)?;
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(())) => {
            let bytes = gathered.into_bytes(&mut lease);
            Ok((bytes, lease))
        }
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
/// then the body itself, uncopied; more are gathered in a buffer that
/// doubles as it fills, up to the most the body may be (its
/// `Content-Length`, else the size limit). The lease holds what the
/// buffer takes (its capacity), reserved before it grows.
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

    /// Adds `data`, holding in `lease` the bytes it takes first; `most`:
    /// the most bytes the body may be (the caller checked that it is no
    /// more with `data`).
    fn push(&mut self, data: Bytes, most: usize, lease: &mut BodyLease) -> Result<(), Refusal> {
        let now = self.len() + data.len();
        // Doubles, within what the body may be (and the whole budget: see
        // `BodyLease::grow`), and at least `now`.
        match self {
            _ if data.is_empty() => {}
            Gathered::Empty => {
                lease.reserve_total(now)?;
                *self = Gathered::One(data);
            }
            Gathered::One(first) => {
                // Twice the first chunk (an empty buffer's double is none).
                let mut all = Vec::new();
                lease.grow(&mut all, now, first.len().saturating_mul(2), most, 0)?;
                all.extend_from_slice(first);
                all.extend_from_slice(&data);
                *self = Gathered::Many(all);
            }
            Gathered::Many(all) => {
                if now > all.capacity() {
                    lease.grow(all, now, 0, most, 0)?;
                }
                all.extend_from_slice(&data);
            }
        }
        Ok(())
    }

    /// The body; `lease` then holds what it takes (a buffer much larger
    /// than the body is shrunk to it first).
    fn into_bytes(self, lease: &mut BodyLease) -> Bytes {
        match self {
            Gathered::Empty => Bytes::new(),
            Gathered::One(b) => b,
            Gathered::Many(mut v) => {
                shrink_into_lease(&mut v, lease);
                Bytes::from(v)
            }
        }
    }
}

/// Shrinks `v` to its length if its capacity is over it by more than a
/// quarter (a buffer grown by doubling), then shrinks `lease` to what `v`
/// takes, so that the bytes the lease counts for it are about those it
/// holds. (`Bytes::from` keeps the capacity.)
pub(crate) fn shrink_into_lease(v: &mut Vec<u8>, lease: &mut BodyLease) {
    if v.capacity() > v.len().saturating_add(v.len() / 4) {
        v.shrink_to_fit();
    }
    lease.release_to(v.capacity());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::budget::BodyBudget;

    #[test]
    fn a_gathered_body_is_held_by_its_buffer_which_doubles_within_its_size_and_is_shrunk_when_loose() {
        let budget = Arc::new(BodyBudget::new(10_000));
        let mut lease = budget.lease();
        let mut gathered = Gathered::default();
        gathered.push(Bytes::from(vec![1; 300]), 1000, &mut lease).unwrap();
        assert_eq!(budget.held(), 300, "one chunk: itself");
        gathered.push(Bytes::from(vec![2; 200]), 1000, &mut lease).unwrap();
        assert_eq!(budget.held(), 600, "a buffer twice the first chunk");
        gathered.push(Bytes::from(vec![3; 400]), 1000, &mut lease).unwrap();
        assert_eq!(budget.held(), 1000, "doubled, but no more than the body may be");
        let body = gathered.into_bytes(&mut lease);
        assert_eq!((body.len(), budget.held()), (900, 1000), "not loose: kept as it is");
        drop((body, lease));

        let mut lease = budget.lease();
        let mut gathered = Gathered::default();
        for _ in 0..3 {
            gathered.push(Bytes::from(vec![4; 1000]), 8000, &mut lease).unwrap();
        }
        assert_eq!(budget.held(), 4000);
        let body = gathered.into_bytes(&mut lease);
        assert_eq!(body.len(), 3000);
        assert!(budget.held() < 3750, "shrunk: {}", budget.held());
        drop((body, lease));

        // A buffer that would be over the budget is refused before it grows.
        let mut lease = budget.lease();
        let mut gathered = Gathered::default();
        gathered.push(Bytes::from(vec![5; 6000]), 20_000, &mut lease).unwrap();
        let refused = gathered.push(Bytes::from(vec![6; 4001]), 20_000, &mut lease).unwrap_err();
        assert!(refused.is_too_large());
        assert_eq!(gathered.len(), 6000);
        drop(lease);
        assert_eq!(budget.held(), 0);
    }
}
