//! Tensor elements as JSON: the `data` field of inputs (flat or nested
//! arrays, checked element by element against the datatype and written
//! straight into the tensor's bytes as they are parsed, without an
//! intermediate `Value`) and of outputs (always flat, written straight from
//! the bytes).

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

use super::ProtocolError;
use super::tensor::{DataType, Tensor};

/// Decodes the JSON text `data` (the `data` of input `name`) into
/// little-endian bytes of `datatype` (BYTES elements length-prefixed),
/// returning the bytes and the number of elements. Nested arrays are
/// flattened in row-major order; a lone scalar is one element. `expected` is
/// the element count the shape asks for: only a hint for the buffer's size
/// (bounded by the text's length, so a hostile shape allocates nothing).
pub fn decode(name: &str, datatype: DataType, data: &str, expected: usize) -> Result<(Vec<u8>, u64), ProtocolError> {
    // Every element takes at least one byte of text.
    let elements = expected.min(data.len());
    let mut sink = Sink {
        name,
        datatype,
        out: Vec::with_capacity(elements.saturating_mul(datatype.size().unwrap_or(8))),
        count: 0,
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_str(data);
    let parsed = (&mut sink).deserialize(&mut de).and_then(|()| de.end());
    match (parsed, sink.failure) {
        (Ok(()), _) => Ok((sink.out, sink.count)),
        (Err(_), Some(failure)) => Err(failure),
        (Err(e), None) => Err(ProtocolError::new(format!("input '{name}': malformed 'data': {e}"))),
    }
}

/// Where decoded elements go; the first bad element's error is kept in
/// `failure` (the parser's own error only stops the parse).
struct Sink<'n> {
    name: &'n str,
    datatype: DataType,
    out: Vec<u8>,
    count: u64,
    failure: Option<ProtocolError>,
}

/// One scalar as the parser hands it over.
enum Scalar<'s> {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(&'s str),
    /// `null` or an object: never an element.
    Other(Value),
}

impl Scalar<'_> {
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Unsigned(u) => Some(u as f64),
            Scalar::Signed(i) => Some(i as f64),
            Scalar::Float(f) => Some(f),
            _ => None,
        }
    }

    fn int<T: TryFrom<u64> + TryFrom<i64>>(&self) -> Option<T> {
        match *self {
            Scalar::Unsigned(u) => T::try_from(u).ok(),
            Scalar::Signed(i) => T::try_from(i).ok(),
            _ => None,
        }
    }

    /// The element as JSON text, cut at 40 characters, for errors.
    fn short(&self) -> String {
        let v = match self {
            Scalar::Bool(b) => Value::from(*b),
            Scalar::Unsigned(u) => Value::from(*u),
            Scalar::Signed(i) => Value::from(*i),
            Scalar::Float(f) => Value::from(*f),
            Scalar::Str(s) => Value::from(*s),
            Scalar::Other(v) => v.clone(),
        };
        let s = v.to_string();
        if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s }
    }
}

impl Sink<'_> {
    /// Appends one element, or keeps the error and stops the parse.
    fn push<E: de::Error>(&mut self, v: Scalar<'_>) -> Result<(), E> {
        match push_one(self.datatype, &v, &mut self.out) {
            Ok(()) => {
                self.count += 1;
                Ok(())
            }
            Err(expected) => {
                let (name, count, dt) = (self.name, self.count, self.datatype);
                let message = format!("input '{name}': element {count} is {}, expected {expected} for {dt}", v.short());
                self.failure = Some(ProtocolError::new(message));
                Err(E::custom("bad element"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for &mut Sink<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Sink<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "elements of {}", self.datatype)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::Signed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(Scalar::Other(Value::Null))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v = serde::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.push(Scalar::Other(v))
    }
}

/// Appends one element; on failure returns what was expected.
fn push_one(dt: DataType, v: &Scalar<'_>, out: &mut Vec<u8>) -> Result<(), &'static str> {
    const INT: &str = "an integer in range";
    const NUM: &str = "a number";
    match dt {
        DataType::Bool => match v {
            Scalar::Bool(b) => out.push(u8::from(*b)),
            _ => return Err("true or false"),
        },
        DataType::Uint8 => out.push(v.int::<u8>().ok_or(INT)?),
        DataType::Uint16 => out.extend(v.int::<u16>().ok_or(INT)?.to_le_bytes()),
        DataType::Uint32 => out.extend(v.int::<u32>().ok_or(INT)?.to_le_bytes()),
        DataType::Uint64 => out.extend(v.int::<u64>().ok_or(INT)?.to_le_bytes()),
        DataType::Int8 => out.extend(v.int::<i8>().ok_or(INT)?.to_le_bytes()),
        DataType::Int16 => out.extend(v.int::<i16>().ok_or(INT)?.to_le_bytes()),
        DataType::Int32 => out.extend(v.int::<i32>().ok_or(INT)?.to_le_bytes()),
        DataType::Int64 => out.extend(v.int::<i64>().ok_or(INT)?.to_le_bytes()),
        DataType::Fp16 => out.extend(half::f16::from_f64(v.as_f64().ok_or(NUM)?).to_le_bytes()),
        DataType::Fp32 => out.extend((v.as_f64().ok_or(NUM)? as f32).to_le_bytes()),
        DataType::Fp64 => out.extend(v.as_f64().ok_or(NUM)?.to_le_bytes()),
        DataType::Bytes => {
            let Scalar::Str(s) = v else { return Err("a string") };
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
        let flat = decode("x", DataType::Int16, "[1, -2, 3, 4]", 4).unwrap();
        let nested = decode("x", DataType::Int16, "[[1, -2], [3, 4]]", 4).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.1, 4);
        assert_eq!(decode("x", DataType::Fp64, "2.5", 1).unwrap().1, 1, "a lone scalar is one element");
    }

    #[test]
    fn out_of_range_names_element_and_type() {
        let err = decode("x", DataType::Uint8, "[1, 256]", 2).unwrap_err();
        assert_eq!(err.0, "input 'x': element 1 is 256, expected an integer in range for UINT8");
        let err = decode("x", DataType::Int64, "[[1], [2.5]]", 2).unwrap_err();
        assert_eq!(err.0, "input 'x': element 1 is 2.5, expected an integer in range for INT64");
        let err = decode("x", DataType::Fp32, r#"[1, {"a": "bcdefghijklmnopqrstuvwxyz0123456789"}]"#, 2).unwrap_err();
        assert_eq!(
            err.0,
            r#"input 'x': element 1 is {"a":"bcdefghijklmnopqrstuvwxyz012345678…, expected a number for FP32"#
        );
        let err = decode("s", DataType::Bytes, r#"["a", null]"#, 2).unwrap_err();
        assert_eq!(err.0, "input 's': element 1 is null, expected a string for BYTES");
        let err = decode("b", DataType::Bool, r#"[true, "x\"y"]"#, 2).unwrap_err();
        assert_eq!(err.0, r#"input 'b': element 1 is "x\"y", expected true or false for BOOL"#);
    }

    #[test]
    fn encode_round_trips_floats_and_bytes() {
        let (bytes, _) = decode("x", DataType::Fp32, "[0.1, 1e-30, 3]", 3).unwrap();
        let t = Tensor::new("x", DataType::Fp32, vec![3], bytes.clone()).unwrap();
        let text = serde_json::to_string(&JsonData::new(t)).unwrap();
        let (again, _) = decode("x", DataType::Fp32, &text, 3).unwrap();
        assert_eq!(bytes, again);
        let (b, _) = decode("s", DataType::Bytes, r#"["h\u00e9", ""]"#, 1 << 40).unwrap();
        let t = Tensor::new("s", DataType::Bytes, vec![2], b).unwrap();
        assert_eq!(serde_json::to_string(&JsonData::new(t)).unwrap(), r#"["hé",""]"#);
    }
}
