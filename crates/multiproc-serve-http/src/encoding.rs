//! The `Content-Encoding` of an inference request body: none, or gzip or
//! deflate (zlib), as tritonclient's `request_compression_algorithm` sends
//! them and Triton reads them. The inflated body is held to the same size
//! limit as a plain one.

use std::io::Read;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use flate2::read::{MultiGzDecoder, ZlibDecoder};

use crate::budget::BodyLease;
use crate::error::ApiError;

/// The first buffer a body is inflated into; it doubles as it fills.
const FIRST_BUFFER: usize = 64 << 10;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentEncoding {
    /// As it is (no header, or `identity`).
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: the zlib format, as HTTP means it.
    Deflate,
}

impl ContentEncoding {
    /// The encoding `headers` announce; 415 for one not read here.
    pub(crate) fn of(headers: &HeaderMap) -> Result<ContentEncoding, ApiError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(ContentEncoding::Identity);
        };
        let name = value.to_str().unwrap_or("").trim();
        match name.to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(ContentEncoding::Identity),
            "gzip" | "x-gzip" => Ok(ContentEncoding::Gzip),
            "deflate" => Ok(ContentEncoding::Deflate),
            _ => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!(
                    "Content-Encoding '{}' is not supported: send the body as it is, gzip or deflate",
                    value.to_str().unwrap_or("(not text)")
                ),
            )),
        }
    }

    /// The body decoded: 413 if it inflates past `limit` bytes, 400 if it is
    /// not in the encoding announced, 503 (or 413) as soon as the body and
    /// the buffer it inflates into are over what `lease` can hold (it holds
    /// the inflated body's buffer once decoded). The buffer doubles as it
    /// fills, each time reserved in `lease` before it grows, and is shrunk
    /// to the body at the end if it is much larger.
    pub(crate) fn decode(self, body: Bytes, limit: usize, lease: &mut BodyLease) -> Result<Bytes, ApiError> {
        let (name, reader): (&str, Box<dyn Read + '_>) = match self {
            ContentEncoding::Identity => return Ok(body),
            ContentEncoding::Gzip => ("gzip", Box::new(MultiGzDecoder::new(&body[..]))),
            ContentEncoding::Deflate => ("deflate", Box::new(ZlibDecoder::new(&body[..]))),
        };
        let invalid = |e: std::io::Error| {
            ApiError::bad_request(format!("the request body is not valid {name} (Content-Encoding: {name}): {e}"))
        };
        // One byte past the limit tells a body over it from one exactly at it.
        let bound = limit.saturating_add(1);
        let mut reader = reader.take(u64::try_from(bound).unwrap_or(u64::MAX));
        // No buffer is worth more than the bound (nor than the budget leaves
        // beside the compressed body: see `BodyLease::grow`).
        let mut out = Vec::new();
        loop {
            if out.len() == out.capacity() {
                // Full: a little more is read first, so that a body that
                // ends exactly at the buffer's end does not grow it.
                let mut probe = [0u8; 64];
                let n = read_some(&mut reader, &mut probe).map_err(invalid)?;
                if n == 0 {
                    break;
                }
                let wanted = out.len() + n;
                // The compressed body is held beside the buffer while it
                // inflates.
                lease.grow(&mut out, wanted, FIRST_BUFFER, bound, body.len())?;
                out.extend_from_slice(&probe[..n]);
            }
            // Into the room reserved, never past it: `read_to_end` stops
            // when the room is full (its probe then reads nothing more), or
            // at the end of the body, with room left.
            let room = (out.capacity() - out.len()) as u64;
            (&mut reader).take(room).read_to_end(&mut out).map_err(invalid)?;
            if out.len() < out.capacity() {
                break;
            }
        }
        drop(reader);
        drop(body);
        if out.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the {name} request body inflates to more than the limit of {limit} bytes (--max-body-bytes)"),
            ));
        }
        crate::body::shrink_into_lease(&mut out, lease);
        Ok(Bytes::from(out))
    }
}

/// Reads what `reader` gives into `buf` (retrying an interrupted read):
/// how many bytes, 0 at its end.
fn read_some(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use std::sync::Arc;

    use super::*;
    use crate::budget::BodyBudget;

    fn gzip(bytes: &[u8]) -> Bytes {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn a_compressed_body_is_held_in_the_budget_by_what_it_inflates_to() {
        let body = gzip(&[0; 300_000]);
        let budget = Arc::new(BodyBudget::new(1 << 20));
        let mut lease = budget.lease();
        lease.reserve_total(body.len()).unwrap();
        let inflated = ContentEncoding::Gzip.decode(body, 64 << 20, &mut lease).unwrap();
        assert_eq!((inflated.len(), budget.held()), (300_000, 300_000));

        // Over what is left of the budget: refused while it inflates, and
        // the bytes it held given back.
        let small = Arc::new(BodyBudget::new(200_000));
        let _other = {
            let mut l = small.lease();
            l.reserve_total(50_000).unwrap();
            l
        };
        let mut lease = small.lease();
        let body = gzip(&[0; 160_000]);
        lease.reserve_total(body.len()).unwrap();
        let refused = match ContentEncoding::Gzip.decode(body, 64 << 20, &mut lease) {
            Ok(inflated) => panic!("inflated to {} bytes, over the budget, and not refused", inflated.len()),
            Err(e) => e,
        };
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.message);
        drop(lease);
        assert_eq!((small.held(), small.refused()), (50_000, 1));
    }

    #[test]
    fn the_inflated_buffer_is_held_as_it_grows_and_a_body_that_fits_exactly_is_taken() {
        // Ends exactly where the first buffer does: it does not grow.
        let budget = Arc::new(BodyBudget::new(1 << 20));
        let mut lease = budget.lease();
        let inflated = ContentEncoding::Gzip.decode(gzip(&[1; FIRST_BUFFER]), 64 << 20, &mut lease).unwrap();
        assert_eq!((inflated.len(), budget.held()), (FIRST_BUFFER, FIRST_BUFFER));
        drop((inflated, lease));

        // The compressed body and what it inflates to are exactly the budget.
        let body = gzip(&[2; 100_000]);
        let budget = Arc::new(BodyBudget::new(body.len() + 100_000));
        let mut lease = budget.lease();
        lease.reserve_total(body.len()).unwrap();
        let inflated = ContentEncoding::Gzip.decode(body, 64 << 20, &mut lease).unwrap();
        assert_eq!((inflated.len(), budget.held()), (100_000, 100_000));
        drop((inflated, lease));

        // One byte more is over the whole budget: 413.
        let body = gzip(&[2; 100_001]);
        let budget = Arc::new(BodyBudget::new(body.len() + 100_000));
        let mut lease = budget.lease();
        lease.reserve_total(body.len()).unwrap();
        let e = ContentEncoding::Gzip.decode(body, 64 << 20, &mut lease).map(|b| b.len()).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", e.message);
        drop(lease);
        assert_eq!(budget.held(), 0);
    }
}
