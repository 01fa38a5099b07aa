//! The framed stdin/stdout protocol of external-command models.
//!
//! Every message, both ways, is one frame:
//!
//! ```text
//! u32 LE  frame length F (the bytes after this field)
//! u32 LE  header length H
//! H bytes header: UTF-8 JSON object with a "type" field
//! F-4-H   bytes: the binary blob (tensor data), may be empty
//! ```
//!
//! Messages:
//!
//! | direction | header | blob |
//! |---|---|---|
//! | worker → server, once after loading | `{"type":"ready"}` | empty |
//! | worker → server, instead of ready | `{"type":"error","message":"why"}` (then exit) | empty |
//! | server → worker | `{"type":"batch","id":7,"requests":[{"inputs":[T,…]},…]}` | the inputs' data |
//! | worker → server | `{"type":"result","id":7,"responses":[{"outputs":[T,…]} or {"error":"msg"},…]}` | the outputs' data |
//!
//! `T` is `{"name":"x","datatype":"FP32","shape":[2,3],"offset":0,"size":24}`:
//! the tensor's bytes are `blob[offset..offset+size]`, little-endian, and
//! `BYTES` elements are 4-byte LE length-prefixed items (Triton's binary
//! extension). One response per request, in order. End of stdin means stop.
//! The worker gets `MULTIPROC_MODEL`, `MULTIPROC_VERSION` and
//! `MULTIPROC_INSTANCE` in its environment; its stderr goes to the server's
//! log, prefixed with the model and version.
//!
//! Everything read is checked: the frame length against a limit, the header
//! as JSON, every offset and size against the blob, every tensor against
//! its shape.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::tensor::{DataType, Tensor};

/// Largest header accepted (16 MiB).
pub const MAX_HEADER: usize = 16 << 20;

/// A tensor's description in a header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorRef {
    /// Its name.
    pub name: String,
    /// Its datatype (`"FP32"`…).
    pub datatype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Where its bytes start in the blob.
    pub offset: usize,
    /// How many bytes.
    pub size: usize,
}

/// One request of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRef {
    /// Its input tensors.
    pub inputs: Vec<TensorRef>,
}

/// One response of a result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseRef {
    /// Output tensors, if it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<TensorRef>>,
    /// The error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A message header.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Header {
    /// The worker loaded its model.
    Ready,
    /// The worker could not load.
    Error {
        /// Why.
        message: String,
    },
    /// A batch of requests.
    Batch {
        /// Batch id.
        id: u64,
        /// The requests.
        requests: Vec<RequestRef>,
    },
    /// The answers to a batch.
    Result {
        /// The batch's id.
        id: u64,
        /// One per request.
        responses: Vec<ResponseRef>,
    },
}

/// Appends tensors to `blob`, returning their descriptions.
pub fn put_tensors(tensors: &[Tensor], blob: &mut Vec<u8>) -> Vec<TensorRef> {
    tensors
        .iter()
        .map(|t| {
            let offset = blob.len();
            blob.extend_from_slice(t.data());
            TensorRef {
                name: t.name().to_string(),
                datatype: t.datatype().as_str().to_string(),
                shape: t.shape().to_vec(),
                offset,
                size: t.data().len(),
            }
        })
        .collect()
}

/// Reads tensors described by `refs` out of `blob`, checking every range.
///
/// # Errors
///
/// A range outside the blob, an unknown datatype, or bytes that disagree
/// with the shape.
pub fn get_tensors(refs: &[TensorRef], blob: &[u8]) -> Result<Vec<Tensor>, String> {
    refs.iter()
        .map(|r| {
            let end = r.offset.checked_add(r.size).filter(|e| *e <= blob.len()).ok_or_else(|| {
                format!("tensor {:?}: bytes {}+{} lie outside the {}-byte blob", r.name, r.offset, r.size, blob.len())
            })?;
            let datatype: DataType = r.datatype.parse().map_err(|e| format!("{e}"))?;
            Tensor::new(r.name.clone(), datatype, r.shape.clone(), blob[r.offset..end].to_vec())
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Writes one frame.
///
/// # Errors
///
/// The header does not encode, the frame exceeds 4 GiB, or the write fails.
pub fn write_frame(out: &mut impl Write, header: &Header, blob: &[u8]) -> std::io::Result<()> {
    let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let too_big = || std::io::Error::other("frame longer than 4 GiB");
    let h = u32::try_from(json.len()).map_err(|_| too_big())?;
    let f = json.len().checked_add(blob.len()).and_then(|n| n.checked_add(4)).ok_or_else(too_big)?;
    let f = u32::try_from(f).map_err(|_| too_big())?;
    out.write_all(&f.to_le_bytes())?;
    out.write_all(&h.to_le_bytes())?;
    out.write_all(&json)?;
    out.write_all(blob)?;
    out.flush()
}

/// Reads one frame: its header and blob. `Ok(None)` at a clean end of stream.
///
/// The header is read and checked before the blob: bytes that are not a
/// frame (a `print` to stdout) fail at once instead of waiting for the
/// hundreds of megabytes their first four bytes announce, and the blob's
/// memory grows with the bytes that come, not with the length announced.
///
/// # Errors
///
/// A frame longer than `max_frame`, a header that is not valid JSON of a
/// known message, a short read.
pub fn read_frame(input: &mut impl Read, max_frame: usize) -> Result<Option<(Header, Vec<u8>)>, String> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read failed: {e}")),
    }
    let f = u32::from_le_bytes(len) as usize;
    if f < 4 || f > max_frame {
        return Err(format!("frame of {f} bytes is outside 4..={max_frame}"));
    }
    input.read_exact(&mut len).map_err(|e| format!("frame cut short: {e}"))?;
    let h = u32::from_le_bytes(len) as usize;
    if h > f - 4 || h > MAX_HEADER {
        return Err(format!("header of {h} bytes does not fit the {f}-byte frame"));
    }
    let mut json = vec![0u8; h];
    input.read_exact(&mut json).map_err(|e| format!("frame cut short: {e}"))?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| format!("bad header: {e}"))?;
    let n = f - 4 - h;
    let mut blob = Vec::with_capacity(n.min(BLOB_RESERVE));
    let got = input.take(n as u64).read_to_end(&mut blob).map_err(|e| format!("frame cut short: {e}"))?;
    if got < n {
        return Err(format!("frame cut short: {got} of {n} blob bytes"));
    }
    Ok(Some((header, blob)))
}

/// Most memory reserved for a blob before its bytes come.
const BLOB_RESERVE: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_errors() {
        let t = Tensor::from_slice("x", vec![2], &[1.5f32, 2.5]).unwrap();
        let mut blob = Vec::new();
        let refs = put_tensors(std::slice::from_ref(&t), &mut blob);
        let header = Header::Batch { id: 3, requests: vec![RequestRef { inputs: refs }] };
        let mut buf = Vec::new();
        write_frame(&mut buf, &header, &blob).unwrap();
        let (back, blob) = read_frame(&mut buf.as_slice(), 1 << 20).unwrap().unwrap();
        let Header::Batch { id, requests } = back else { panic!("not a batch") };
        assert_eq!(id, 3);
        assert_eq!(get_tensors(&requests[0].inputs, &blob).unwrap(), [t]);
        // A range past the blob, a huge frame, garbage JSON.
        let bad = TensorRef { name: "x".into(), datatype: "FP32".into(), shape: vec![2], offset: 4, size: usize::MAX };
        assert!(get_tensors(&[bad], &blob).is_err());
        assert!(read_frame(&mut [0xff, 0xff, 0xff, 0x7f].as_slice(), 1 << 20).is_err());
        let mut junk = 6u32.to_le_bytes().to_vec();
        junk.extend_from_slice(&2u32.to_le_bytes());
        junk.extend_from_slice(b"{]");
        assert!(read_frame(&mut junk.as_slice(), 1 << 20).is_err());
        assert!(read_frame(&mut [].as_slice(), 1 << 20).unwrap().is_none());
        // A good header whose blob is cut short.
        let mut cut = Vec::new();
        write_frame(&mut cut, &Header::Ready, b"0123456789").unwrap();
        cut.truncate(cut.len() - 3);
        assert!(read_frame(&mut cut.as_slice(), 1 << 20).unwrap_err().contains("7 of 10 blob bytes"));
    }
}
