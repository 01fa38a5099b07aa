//! Tensor elements as JSON: the `data` field of inputs (flat or nested
//! arrays, checked element by element against the datatype) and of outputs
//! (always flat, written straight from the bytes without an intermediate
//! `Value`).

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

use super::ProtocolError;
use super::tensor::{DataType, Tensor};

/// Decodes the JSON `data` of input `name` into little-endian bytes of
/// `datatype` (BYTES elements length-prefixed), returning the bytes and the
/// number of elements. Nested arrays are flattened in row-major order.
pub fn decode(name: &str, datatype: DataType, data: &Value) -> Result<(Vec<u8>, u64), ProtocolError> {
    let mut out = Vec::new();
    let mut count = 0u64;
    push_all(name, datatype, data, &mut out, &mut count)?;
    Ok((out, count))
}

fn push_all(name: &str, dt: DataType, v: &Value, out: &mut Vec<u8>, count: &mut u64) -> Result<(), ProtocolError> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|item| push_all(name, dt, item, out, count)),
        scalar => {
            push_one(dt, scalar, out).map_err(|expected| {
                ProtocolError::new(format!(
                    "input '{name}': element {count} is {}, expected {expected} for {dt}",
                    short(scalar)
                ))
            })?;
            *count += 1;
            Ok(())
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s }
}

fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Option<T> {
    match v {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => T::try_from(u).ok(),
            (None, Some(i)) => T::try_from(i).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Appends one element; on failure returns what was expected.
fn push_one(dt: DataType, v: &Value, out: &mut Vec<u8>) -> Result<(), &'static str> {
    const INT: &str = "an integer in range";
    const NUM: &str = "a number";
    match dt {
        DataType::Bool => out.push(u8::from(v.as_bool().ok_or("true or false")?)),
        DataType::Uint8 => out.push(int::<u8>(v).ok_or(INT)?),
        DataType::Uint16 => out.extend(int::<u16>(v).ok_or(INT)?.to_le_bytes()),
        DataType::Uint32 => out.extend(int::<u32>(v).ok_or(INT)?.to_le_bytes()),
        DataType::Uint64 => out.extend(int::<u64>(v).ok_or(INT)?.to_le_bytes()),
        DataType::Int8 => out.extend(int::<i8>(v).ok_or(INT)?.to_le_bytes()),
        DataType::Int16 => out.extend(int::<i16>(v).ok_or(INT)?.to_le_bytes()),
        DataType::Int32 => out.extend(int::<i32>(v).ok_or(INT)?.to_le_bytes()),
        DataType::Int64 => out.extend(int::<i64>(v).ok_or(INT)?.to_le_bytes()),
        DataType::Fp16 => out.extend(half::f16::from_f64(v.as_f64().ok_or(NUM)?).to_le_bytes()),
        DataType::Fp32 => out.extend((v.as_f64().ok_or(NUM)? as f32).to_le_bytes()),
        DataType::Fp64 => out.extend(v.as_f64().ok_or(NUM)?.to_le_bytes()),
        DataType::Bytes => {
            let s = v.as_str().ok_or("a string")?;
            let len = u32::try_from(s.len()).map_err(|_| "a string shorter than 4 GiB")?;
            out.extend(len.to_le_bytes());
            out.extend(s.as_bytes());
        }
    }
    Ok(())
}

/// Output elements written as a flat JSON array straight from their bytes.
/// Floats are written in the shortest form that reads back to the same value
/// (NaN and infinities, which JSON cannot hold, become `null`: ask for binary
/// data to get them); BYTES elements become strings (invalid UTF-8 replaced:
/// ask for binary data to get the exact bytes).
#[derive(Debug, Clone)]
pub struct JsonData {
    datatype: DataType,
    data: Vec<u8>,
}

impl JsonData {
    /// The elements of `tensor`.
    pub fn new(tensor: Tensor) -> JsonData {
        JsonData { datatype: tensor.datatype(), data: tensor.into_data() }
    }
}

macro_rules! seq_of {
    ($ser:expr, $data:expr, $t:ty, $conv:expr) => {{
        const N: usize = std::mem::size_of::<$t>();
        let chunks = $data.chunks_exact(N);
        let mut seq = $ser.serialize_seq(Some(chunks.len()))?;
        for c in chunks {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            seq.serialize_element(&$conv(<$t>::from_le_bytes(b)))?;
        }
        seq.end()
    }};
}

impl Serialize for JsonData {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let d = &self.data;
        match self.datatype {
            DataType::Bool => seq_of!(ser, d, u8, |x: u8| x != 0),
            DataType::Uint8 => seq_of!(ser, d, u8, |x| x),
            DataType::Uint16 => seq_of!(ser, d, u16, |x| x),
            DataType::Uint32 => seq_of!(ser, d, u32, |x| x),
            DataType::Uint64 => seq_of!(ser, d, u64, |x| x),
            DataType::Int8 => seq_of!(ser, d, i8, |x| x),
            DataType::Int16 => seq_of!(ser, d, i16, |x| x),
            DataType::Int32 => seq_of!(ser, d, i32, |x| x),
            DataType::Int64 => seq_of!(ser, d, i64, |x| x),
            DataType::Fp16 => seq_of!(ser, d, u16, |x| half::f16::from_bits(x).to_f32()),
            DataType::Fp32 => seq_of!(ser, d, f32, |x| x),
            DataType::Fp64 => seq_of!(ser, d, f64, |x| x),
            DataType::Bytes => {
                let mut seq = ser.serialize_seq(None)?;
                let mut rest = d.as_slice();
                // Checked when the tensor was made; stop at anything short.
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
                    let (item, tail) = tail.split_at(len);
                    seq.serialize_element(&String::from_utf8_lossy(item))?;
                    rest = tail;
                }
                seq.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_decode_alike() {
        let flat = decode("x", DataType::Int16, &serde_json::json!([1, -2, 3, 4])).unwrap();
        let nested = decode("x", DataType::Int16, &serde_json::json!([[1, -2], [3, 4]])).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.1, 4);
    }

    #[test]
    fn out_of_range_names_element_and_type() {
        let err = decode("x", DataType::Uint8, &serde_json::json!([1, 256])).unwrap_err();
        assert_eq!(err.0, "input 'x': element 1 is 256, expected an integer in range for UINT8");
    }

    #[test]
    fn encode_round_trips_floats_and_bytes() {
        let (bytes, _) = decode("x", DataType::Fp32, &serde_json::json!([0.1, 1e-30, 3])).unwrap();
        let t = Tensor::new("x", DataType::Fp32, vec![3], bytes.clone()).unwrap();
        let text = serde_json::to_string(&JsonData::new(t)).unwrap();
        let (again, _) = decode("x", DataType::Fp32, &serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(bytes, again);
        let (b, _) = decode("s", DataType::Bytes, &serde_json::json!(["hé", ""])).unwrap();
        let t = Tensor::new("s", DataType::Bytes, vec![2], b).unwrap();
        assert_eq!(serde_json::to_string(&JsonData::new(t)).unwrap(), r#"["hé",""]"#);
    }
}
