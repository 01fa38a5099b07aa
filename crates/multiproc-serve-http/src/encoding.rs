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

/// How much is inflated at a time between two looks at the budget.
const INFLATE_STEP: u64 = 64 << 10;

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
    /// what it inflates to are over what `lease` can hold (it holds the
    /// inflated body's bytes once decoded).
    pub(crate) fn decode(self, body: Bytes, limit: usize, lease: &mut BodyLease<'_>) -> Result<Bytes, ApiError> {
        let (name, reader): (&str, Box<dyn Read + '_>) = match self {
            ContentEncoding::Identity => return Ok(body),
            ContentEncoding::Gzip => ("gzip", Box::new(MultiGzDecoder::new(&body[..]))),
            ContentEncoding::Deflate => ("deflate", Box::new(ZlibDecoder::new(&body[..]))),
        };
        // One byte past the limit tells a body over it from one exactly at it.
        let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let mut reader = reader.take(bound);
        let mut out = Vec::new();
        loop {
            let read = (&mut reader).take(INFLATE_STEP).read_to_end(&mut out).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid {name} (Content-Encoding: {name}): {e}"))
            })?;
            if read == 0 {
                break;
            }
            // Both are held while it inflates.
            lease.reserve_total(body.len().saturating_add(out.len()))?;
        }
        drop(reader);
        drop(body);
        lease.release_to(out.len());
        if out.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the {name} request body inflates to more than the limit of {limit} bytes (--max-body-bytes)"),
            ));
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

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
        let budget = BodyBudget::new(1 << 20);
        let mut lease = budget.lease();
        lease.reserve_total(body.len()).unwrap();
        let inflated = ContentEncoding::Gzip.decode(body, 64 << 20, &mut lease).unwrap();
        assert_eq!((inflated.len(), budget.held()), (300_000, 300_000));

        // Over what is left of the budget: refused while it inflates, and
        // the bytes it held given back.
        let small = BodyBudget::new(200_000);
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
}
