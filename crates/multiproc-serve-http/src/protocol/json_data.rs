//! Tensor elements as JSON: the `data` field of inputs (flat or nested
//! arrays, checked element by element against the datatype and written
//! straight into the tensor's bytes as they are parsed, without an
//! intermediate `Value`) and of outputs (always flat, written straight from
//! the bytes).

use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::Value;

use super::tensor::{DataType, Tensor};
use super::{ProtocolError, Reserve};

/// Decodes the JSON text `data` (the `data` of input `name`) into
/// little-endian bytes of `datatype` (BYTES elements length-prefixed),
/// returning the bytes and the number of elements. Nested arrays are
/// flattened in row-major order; a lone scalar is one element. `expected` is
/// the element count the shape asks for: only a hint for the buffer's size
/// (bounded by the text's length, so a hostile shape allocates nothing).
///
/// # Errors
///
/// The text is not JSON, or an element is not one of `datatype`.
pub fn decode(name: &str, datatype: DataType, data: &str, expected: usize) -> Result<(Vec<u8>, u64), ProtocolError> {
    decode_reserving(name, datatype, data, expected, &|_| Ok(()))
}

/// [`decode`], holding through `reserve` every byte the tensor's buffer
/// takes before it is allocated: first what `expected` elements take
/// (at most what the text can hold: an element takes at least a byte of
/// it, and a comma or a bracket; so, for a valid request, exactly the
/// tensor's size when it is numeric), then what the buffer grows by if
/// the text holds more.
///
/// # Errors
///
/// As [`decode`], and the first error of `reserve` (nothing more is
/// allocated then).
pub fn decode_reserving(
    name: &str,
    datatype: DataType,
    data: &str,
    expected: usize,
    reserve: Reserve<'_>,
) -> Result<(Vec<u8>, u64), ProtocolError> {
    let elements = expected.min(data.len().div_ceil(2));
    let capacity = match datatype.size() {
        Some(size) => elements.saturating_mul(size),
        // A length before each, and the strings, no longer than their text.
        None => elements.saturating_mul(4).saturating_add(data.len()),
    };
    reserve(capacity)?;
    let mut out = Vec::with_capacity(capacity);
    if let Some(count) = decode_flat_numbers(datatype, data, &mut out, reserve)? {
        return Ok((out, count));
    }
    out.clear();
    decode_general(name, datatype, data, out, reserve)
}

/// Makes room in `out` for `more` bytes, holding what its buffer grows
/// by (it doubles) through `reserve` first.
fn room(out: &mut Vec<u8>, more: usize, reserve: Reserve<'_>) -> Result<(), ProtocolError> {
    if out.capacity() - out.len() >= more {
        return Ok(());
    }
    let capacity = out.capacity().saturating_mul(2).max(out.len().saturating_add(more));
    reserve(capacity - out.capacity())?;
    out.reserve_exact(capacity - out.len());
    Ok(())
}

/// [`decode`] by serde_json's parser: any nesting, any number, and the
/// message for whatever is wrong.
fn decode_general(
    name: &str,
    datatype: DataType,
    data: &str,
    out: Vec<u8>,
    reserve: Reserve<'_>,
) -> Result<(Vec<u8>, u64), ProtocolError> {
    let mut sink = Sink { name, datatype, out, count: 0, failure: None, reserve };
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
    /// Holds what `out` grows by first.
    reserve: Reserve<'n>,
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
            // NaN and infinities, as tritonclient writes them (see non_finite).
            Scalar::Str(s) => super::non_finite::parse(s),
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
        let more = match (&v, self.datatype.size()) {
            (Scalar::Str(s), None) => s.len().saturating_add(4),
            (_, size) => size.unwrap_or(0),
        };
        if let Err(refused) = room(&mut self.out, more, self.reserve) {
            self.failure = Some(refused);
            return Err(E::custom("not reserved"));
        }
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

/// The common case without the general parser: a flat array of plain
/// numbers (`-?(0|[1-9][0-9]*)(\.[0-9]+)?`, at most 18 digits) for a numeric
/// datatype. Each element becomes exactly the [`Scalar`] serde_json would
/// hand over (an integer as serde_json reads it; a decimal only when its
/// digits fit in 53 bits, where dividing by an exact power of ten is the
/// one correctly rounded result any conforming parser gives) and is
/// converted by the same [`push_one`]. `None` for anything else (nesting,
/// exponents, long numbers, a bad element, malformed text): the general
/// path then decodes it or says what is wrong. What `out` grows by is
/// held through `reserve` first (its error is the decode's).
fn decode_flat_numbers(
    dt: DataType,
    text: &str,
    out: &mut Vec<u8>,
    reserve: Reserve<'_>,
) -> Result<Option<u64>, ProtocolError> {
    let Some(size) = dt.size().filter(|_| dt.is_numeric()) else { return Ok(None) };
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Ok(None);
    }
    i = skip_ws(b, i + 1);
    let mut count = 0u64;
    if b.get(i) == Some(&b']') {
        return Ok((skip_ws(b, i + 1) == b.len()).then_some(0));
    }
    loop {
        let Some((scalar, next)) = plain_number(b, i) else { return Ok(None) };
        room(out, size, reserve)?;
        if push_one(dt, &scalar, out).is_err() {
            return Ok(None);
        }
        count += 1;
        i = skip_ws(b, next);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Ok((skip_ws(b, i + 1) == b.len()).then_some(count)),
            _ => return Ok(None),
        }
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Exact powers of ten as `f64` (10^22 is the largest one exactly held).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// A plain number at `b[i..]` and the index after it; see
/// [`decode_flat_numbers`].
fn plain_number(b: &[u8], mut i: usize) -> Option<(Scalar<'static>, usize)> {
    const MAX_DIGITS: usize = 18;
    let negative = b.get(i) == Some(&b'-');
    i += usize::from(negative);
    let (mut significand, mut digits, mut fraction) = (0u64, 0usize, 0usize);
    let mut digit = |i: usize, significand: &mut u64| -> Option<bool> {
        match b.get(i) {
            Some(&c @ b'0'..=b'9') => {
                digits += 1;
                *significand = *significand * 10 + u64::from(c - b'0');
                (digits <= MAX_DIGITS).then_some(true)
            }
            _ => Some(false),
        }
    };
    match b.get(i)? {
        b'0' => {
            i += 1;
            if b.get(i).is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
        b'1'..=b'9' => {
            while digit(i, &mut significand)? {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while digit(i, &mut significand)? {
            i += 1;
            fraction += 1;
        }
        if fraction == 0 {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        return None;
    }
    let scalar = if fraction > 0 {
        if significand >= 1 << 53 {
            return None;
        }
        let f = significand as f64 / POW10[fraction];
        Scalar::Float(if negative { -f } else { f })
    } else if !negative {
        Scalar::Unsigned(significand)
    } else {
        // As serde_json: `-0` is a float, the rest a signed integer.
        let n = (significand as i64).wrapping_neg();
        if n >= 0 { Scalar::Float(-(significand as f64)) } else { Scalar::Signed(n) }
    };
    Some((scalar, i))
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

    /// No budget: every reservation is granted.
    const NO_BUDGET: Reserve<'static> = &|_| Ok(());

    #[test]
    fn the_flat_number_path_agrees_with_the_general_parser() {
        use DataType::*;
        let mut forms: Vec<String> = [
            "0",
            "-0",
            "7",
            "-7",
            "0.0",
            "-0.0",
            "1.0",
            "0.1",
            "0.0625",
            "0.3125",
            "-2.5",
            "01",
            "1.",
            ".5",
            "-",
            "1e3",
            "1E-2",
            "2.5e0",
            "255",
            "256",
            "-128",
            "-129",
            "65535",
            "65536",
            "4294967296",
            "9007199254740993",
            "9007199254740992.5",
            "123456789012345678",
            "1234567890123456789",
            "0.000000000000000001",
            "99999999999999999.9",
            "3.4028235677973366e38",
            "1.7976931348623157",
            "-9223372036854775808",
            "18446744073709551615",
            "true",
            "null",
            "\"1\"",
            "[1]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Pseudo-random numbers of every length up to past the fast path's.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let all = format!("{x:020}");
            let n = (x % 20) as usize + 1;
            let point = (x >> 40) as usize % n + 1;
            let int = all[..point].trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let sign = if x & 1 == 0 { "-" } else { "" };
            forms.push(if point == n { format!("{sign}{int}") } else { format!("{sign}{int}.{}", &all[point..n]) });
        }
        let types = [Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64];
        let mut fast = 0;
        for dt in types {
            for pair in forms.chunks(2) {
                for text in
                    [format!("[{}]", pair.join(", ")), format!(" [ {} ] ", pair.join(",\n")), format!("[{}]", pair[0])]
                {
                    let mut out = Vec::new();
                    let general = decode_general("x", dt, &text, Vec::new(), NO_BUDGET);
                    if let Some(n) = decode_flat_numbers(dt, &text, &mut out, NO_BUDGET).unwrap() {
                        fast += 1;
                        assert_eq!(general.as_ref().ok(), Some(&(out, n)), "{dt} {text}");
                    }
                }
            }
        }
        assert!(fast > 10_000, "the fast path took only {fast} texts");
        let mut out = Vec::new();
        assert_eq!(decode_flat_numbers(Fp32, "[0.0625, 1.0, -0.5]", &mut out, NO_BUDGET), Ok(Some(3)));
        assert_eq!(out, [0.0625f32, 1.0, -0.5].iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<_>>());
        assert_eq!(decode_flat_numbers(Fp32, "[]", &mut Vec::new(), NO_BUDGET), Ok(Some(0)));
        for refused in ["[[1]]", "[1,]", "[1 2]", "[1] x", "1", "[1e2]", "[true]"] {
            assert_eq!(decode_flat_numbers(Int32, refused, &mut Vec::new(), NO_BUDGET), Ok(None), "{refused}");
        }
    }

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
