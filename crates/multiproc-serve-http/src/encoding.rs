//! The `Content-Encoding` of an inference request body: none, or gzip or
//! deflate (zlib), as tritonclient's `request_compression_algorithm` sends
//! them and Triton reads them. The inflated body is held to the same size
//! limit as a plain one.

use std::io::Read;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use flate2::read::{MultiGzDecoder, ZlibDecoder};

use crate::error::ApiError;

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
    /// not in the encoding announced.
    pub(crate) fn decode(self, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
        let (name, reader): (&str, Box<dyn Read + '_>) = match self {
            ContentEncoding::Identity => return Ok(body),
            ContentEncoding::Gzip => ("gzip", Box::new(MultiGzDecoder::new(&body[..]))),
            ContentEncoding::Deflate => ("deflate", Box::new(ZlibDecoder::new(&body[..]))),
        };
        // One byte past the limit tells a body over it from one exactly at it.
        let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        let mut out = Vec::new();
        reader.take(bound).read_to_end(&mut out).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid {name} (Content-Encoding: {name}): {e}"))
        })?;
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
