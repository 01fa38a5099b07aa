//! Stream replies (`XREAD`, `XREADGROUP`, `XAUTOCLAIM`) read from raw
//! values: field names are any bytes (any client can write an entry), so
//! one that is not UTF-8 is kept, lossily, for the entry's own decoder to
//! refuse, rather than making the whole reply (and every entry in it)
//! unreadable.

use redis::Value;

/// One stream entry: its id and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// The entry id.
    pub id: String,
    /// The fields, in order; a name that is not UTF-8 is converted lossily
    /// (so it matches no field name of this schema).
    pub fields: Vec<(String, Value)>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn reply_error(what: &str) -> String {
    format!("unexpected {what} in a stream reply")
}

/// `[id, [name, value, …]]`; the fields of an entry deleted meanwhile may
/// be nil (then none).
fn entry(v: Value) -> Result<StreamEntry, String> {
    let Value::Array(parts) = v else { return Err(reply_error("entry")) };
    let mut parts = parts.into_iter();
    let id = parts.next().as_ref().and_then(text).ok_or_else(|| reply_error("entry id"))?;
    let pairs: Vec<(Value, Value)> = match parts.next() {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::Array(flat)) => {
            let mut flat = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Some(Value::Map(m)) => m,
        Some(_) => return Err(reply_error("entry fields")),
    };
    let fields = pairs.into_iter().filter_map(|(k, v)| Some((text(&k)?, v))).collect();
    Ok(StreamEntry { id, fields })
}

fn entries(v: Value) -> Result<Vec<StreamEntry>, String> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(list) => list.into_iter().filter(|e| !matches!(e, Value::Nil)).map(entry).collect(),
        _ => Err(reply_error("entry list")),
    }
}

/// The entries of an `XREAD` or `XREADGROUP` reply, of all its streams
/// (nil: none).
///
/// # Errors
///
/// A reply of another shape.
pub fn read_reply(v: Value) -> Result<Vec<StreamEntry>, String> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Map(m) => m,
        Value::Array(list) => list
            .into_iter()
            .map(|s| match s {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    Ok((kv.next().unwrap_or(Value::Nil), kv.next().unwrap_or(Value::Nil)))
                }
                _ => Err(reply_error("stream")),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(reply_error("reply")),
    };
    let mut all = Vec::new();
    for (_, list) in streams {
        all.extend(entries(list)?);
    }
    Ok(all)
}

/// An `XAUTOCLAIM` reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Autoclaim {
    /// Where the next scan of the pending list starts (`0-0`: the scan
    /// reached its end).
    pub cursor: String,
    /// The entries claimed.
    pub claimed: Vec<StreamEntry>,
    /// The ids of pending entries found deleted from the stream.
    pub deleted: Vec<String>,
}

/// Reads an `XAUTOCLAIM` reply.
///
/// # Errors
///
/// A reply of another shape.
pub fn autoclaim_reply(v: Value) -> Result<Autoclaim, String> {
    let Value::Array(parts) = v else { return Err(reply_error("XAUTOCLAIM reply")) };
    let mut parts = parts.into_iter();
    let cursor = parts.next().as_ref().and_then(text).ok_or_else(|| reply_error("XAUTOCLAIM cursor"))?;
    let claimed = entries(parts.next().unwrap_or(Value::Nil))?;
    let deleted = match parts.next() {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::Array(ids)) => ids.iter().filter_map(text).collect(),
        Some(_) => return Err(reply_error("deleted id list")),
    };
    Ok(Autoclaim { cursor, claimed, deleted })
}
