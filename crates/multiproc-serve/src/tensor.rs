//! Tensors for the generic path: a name, an Open Inference Protocol datatype,
//! a shape and the raw little-endian bytes.
//!
//! Every constructor checks that the bytes agree with the shape (the element
//! count is computed with checked arithmetic, so a hostile shape is an error,
//! never an overflow or a huge allocation). `BYTES` tensors hold their
//! elements as 4-byte little-endian length prefixes followed by the bytes,
//! as in Triton's binary tensor extension.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The datatypes of the Open Inference Protocol (KServe v2).
///
/// ```
/// use multiproc_serve::DataType;
///
/// let t: DataType = "FP32".parse().unwrap();
/// assert_eq!(t, DataType::Fp32);
/// assert_eq!(t.size(), Some(4));
/// assert_eq!(DataType::Bytes.size(), None);
/// assert_eq!(DataType::Uint16.as_str(), "UINT16");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DataType {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16`: IEEE half precision, stored as its 2 raw bytes.
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: variable-length items, each a `u32` little-endian length then the bytes.
    Bytes,
}

impl DataType {
    /// Every datatype, in protocol order.
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// Bytes per element, or `None` for `BYTES` (variable length).
    pub fn size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }

    /// A number type (integers and floats; not BOOL or BYTES).
    pub fn is_numeric(self) -> bool {
        !matches!(self, DataType::Bool | DataType::Bytes)
    }

    /// The protocol's name: `"FP32"`, `"BYTES"`…
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataType {
    type Err = TensorError;

    fn from_str(s: &str) -> Result<DataType, TensorError> {
        DataType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| TensorError::UnknownDataType(s.chars().take(32).collect()))
    }
}

/// Why bytes do not make a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// A datatype name outside the protocol.
    #[error("unknown datatype {0:?}; expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES")]
    UnknownDataType(String),
    /// The shape's element count overflows.
    #[error("tensor '{name}': shape {shape:?} has too many elements")]
    ShapeOverflow {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The data length disagrees with shape × element size.
    #[error("tensor '{name}': shape {shape:?} of {datatype} needs {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its datatype.
        datatype: DataType,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// `BYTES` data that is not a sequence of length-prefixed items, one per element.
    #[error("tensor '{name}': BYTES data is malformed: {reason}")]
    BadBytes {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A typed accessor used on a tensor of another datatype.
    #[error("tensor '{name}' is {actual}, not {wanted}")]
    WrongType {
        /// The tensor.
        name: String,
        /// Its datatype.
        actual: DataType,
        /// The datatype asked for.
        wanted: DataType,
    },
    /// A `BOOL` element other than 0 or 1.
    #[error("tensor '{name}': BOOL element {index} is {value}, not 0 or 1")]
    BadBool {
        /// The tensor.
        name: String,
        /// Index of the element.
        index: usize,
        /// Its byte.
        value: u8,
    },
}

/// A plain element type of a tensor (`f32`, `i64`, `u8`, …).
pub trait Element: Copy + Send + 'static {
    /// The datatype of tensors holding this type.
    const DATATYPE: DataType;
    /// Size of one element in bytes.
    const SIZE: usize;
    /// Appends the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
    /// Reads one element from exactly `SIZE` little-endian bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $dt:ident) => {
        impl Element for $t {
            const DATATYPE: DataType = DataType::$dt;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    };
}
element!(u8, Uint8);
element!(u16, Uint16);
element!(u32, Uint32);
element!(u64, Uint64);
element!(i8, Int8);
element!(i16, Int16);
element!(i32, Int32);
element!(i64, Int64);
element!(f32, Fp32);
element!(f64, Fp64);

/// A named tensor: datatype, shape and little-endian bytes that agree with
/// them (checked at construction and when deserialized).
///
/// ```
/// use multiproc_serve::{DataType, Tensor};
///
/// let t = Tensor::from_slice("x", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]).unwrap();
/// assert_eq!(t.datatype(), DataType::Fp32);
/// assert_eq!(t.data().len(), 16);
/// assert_eq!(t.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
///
/// // Bytes that disagree with the shape are refused.
/// assert!(Tensor::new("x", DataType::Fp32, vec![3], vec![0; 8]).is_err());
///
/// let s = Tensor::from_items("words", vec![2], [b"hi".as_slice(), b"there"]).unwrap();
/// assert_eq!(s.items().unwrap(), [b"hi".as_slice(), b"there"]);
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTensor")]
pub struct Tensor {
    name: String,
    datatype: DataType,
    shape: Vec<usize>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// A tensor as it arrives, before its size is checked.
#[derive(Deserialize)]
struct RawTensor {
    name: String,
    datatype: DataType,
    shape: Vec<usize>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

impl TryFrom<RawTensor> for Tensor {
    type Error = TensorError;

    fn try_from(raw: RawTensor) -> Result<Tensor, TensorError> {
        Tensor::new(raw.name, raw.datatype, raw.shape, raw.data)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name)
            .field("datatype", &self.datatype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// The element count of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d))
}

impl Tensor {
    /// A tensor from raw little-endian bytes (for `BYTES`, length-prefixed
    /// items), checked against the shape.
    ///
    /// # Errors
    ///
    /// The shape overflows, the byte count is not shape × element size, or
    /// `BYTES` data does not hold exactly one well-formed item per element.
    pub fn new(
        name: impl Into<String>,
        datatype: DataType,
        shape: Vec<usize>,
        data: Vec<u8>,
    ) -> Result<Tensor, TensorError> {
        let name = name.into();
        let Some(count) = element_count(&shape) else { return Err(TensorError::ShapeOverflow { name, shape }) };
        match datatype.size() {
            Some(size) => {
                let Some(expected) = count.checked_mul(size) else {
                    return Err(TensorError::ShapeOverflow { name, shape });
                };
                if expected != data.len() {
                    return Err(TensorError::SizeMismatch { name, shape, datatype, expected, actual: data.len() });
                }
                if datatype == DataType::Bool
                    && let Some((index, value)) = data.iter().enumerate().find(|(_, b)| **b > 1)
                {
                    return Err(TensorError::BadBool { name, index, value: *value });
                }
            }
            None => {
                let items =
                    split_items(&data).map_err(|reason| TensorError::BadBytes { name: name.clone(), reason })?;
                if items.len() != count {
                    let reason = format!("shape {shape:?} needs {count} items, data holds {}", items.len());
                    return Err(TensorError::BadBytes { name, reason });
                }
            }
        }
        Ok(Tensor { name, datatype, shape, data })
    }

    /// A tensor of plain elements.
    ///
    /// # Errors
    ///
    /// The slice's length is not the shape's element count.
    pub fn from_slice<T: Element>(
        name: impl Into<String>,
        shape: Vec<usize>,
        values: &[T],
    ) -> Result<Tensor, TensorError> {
        let mut data = Vec::with_capacity(values.len().saturating_mul(T::SIZE));
        for v in values {
            v.put(&mut data);
        }
        Tensor::new(name, T::DATATYPE, shape, data)
    }

    /// A `BOOL` tensor.
    ///
    /// # Errors
    ///
    /// The slice's length is not the shape's element count.
    pub fn from_bools(name: impl Into<String>, shape: Vec<usize>, values: &[bool]) -> Result<Tensor, TensorError> {
        Tensor::new(name, DataType::Bool, shape, values.iter().map(|b| u8::from(*b)).collect())
    }

    /// A `BYTES` tensor from its items.
    ///
    /// # Errors
    ///
    /// The number of items is not the shape's element count, or an item is
    /// longer than 4 GiB.
    pub fn from_items<'a>(
        name: impl Into<String>,
        shape: Vec<usize>,
        items: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Tensor, TensorError> {
        let name = name.into();
        let mut data = Vec::new();
        for item in items {
            let len = u32::try_from(item.len()).map_err(|_| TensorError::BadBytes {
                name: name.clone(),
                reason: format!("an item of {} bytes is longer than 4 GiB", item.len()),
            })?;
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(item);
        }
        Tensor::new(name, DataType::Bytes, shape, data)
    }

    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the tensor.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The datatype.
    pub fn datatype(&self) -> DataType {
        self.datatype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements (product of the shape).
    pub fn len(&self) -> usize {
        element_count(&self.shape).unwrap_or(0)
    }

    /// True if the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes (little-endian elements; for `BYTES`, length-prefixed items).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the raw bytes.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The elements as `T`.
    ///
    /// # Errors
    ///
    /// The tensor is of another datatype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>, TensorError> {
        self.expect(T::DATATYPE)?;
        Ok(self.data.chunks_exact(T::SIZE).map(T::get).collect())
    }

    /// The elements of a `BOOL` tensor.
    ///
    /// # Errors
    ///
    /// The tensor is of another datatype.
    pub fn to_bools(&self) -> Result<Vec<bool>, TensorError> {
        self.expect(DataType::Bool)?;
        Ok(self.data.iter().map(|b| *b != 0).collect())
    }

    /// The items of a `BYTES` tensor.
    ///
    /// # Errors
    ///
    /// The tensor is of another datatype.
    pub fn items(&self) -> Result<Vec<&[u8]>, TensorError> {
        self.expect(DataType::Bytes)?;
        split_items(&self.data).map_err(|reason| TensorError::BadBytes { name: self.name.clone(), reason })
    }

    fn expect(&self, wanted: DataType) -> Result<(), TensorError> {
        if self.datatype == wanted {
            Ok(())
        } else {
            Err(TensorError::WrongType { name: self.name.clone(), actual: self.datatype, wanted })
        }
    }
}

/// Splits `BYTES` data into its items, checking every length prefix.
fn split_items(mut data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut items = Vec::new();
    while !data.is_empty() {
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            return Err(format!("{} trailing bytes are too short for a length prefix", data.len()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!("item {} announces {len} bytes, {} remain", items.len(), rest.len()));
        }
        let (item, rest) = rest.split_at(len);
        items.push(item);
        data = rest;
    }
    Ok(items)
}

/// Finds the tensor called `name` in a set of named tensors.
///
/// ```
/// use multiproc_serve::{Tensor, tensor::find};
///
/// let set = vec![Tensor::from_slice("a", vec![1], &[1i32]).unwrap()];
/// assert!(find(&set, "a").is_some());
/// assert!(find(&set, "b").is_none());
/// ```
pub fn find<'a>(tensors: &'a [Tensor], name: &str) -> Option<&'a Tensor> {
    tensors.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_checks_its_size() {
        for dt in DataType::ALL {
            assert_eq!(dt.as_str().parse::<DataType>().unwrap(), dt);
            if let Some(size) = dt.size() {
                assert!(Tensor::new("t", dt, vec![3], vec![0; 3 * size]).is_ok());
                assert!(Tensor::new("t", dt, vec![3], vec![0; 3 * size + 1]).is_err());
            }
        }
        assert!("fp32".parse::<DataType>().is_err());
    }

    #[test]
    fn hostile_shapes_and_bytes_are_errors() {
        let huge = vec![usize::MAX, 2];
        assert!(matches!(Tensor::new("t", DataType::Fp32, huge, vec![]), Err(TensorError::ShapeOverflow { .. })));
        let big = vec![usize::MAX / 2, 1];
        assert!(matches!(Tensor::new("t", DataType::Fp64, big, vec![]), Err(TensorError::ShapeOverflow { .. })));
        // A length prefix that runs past the end.
        let bad = [200u8, 0, 0, 0, b'x'].to_vec();
        assert!(matches!(Tensor::new("t", DataType::Bytes, vec![1], bad), Err(TensorError::BadBytes { .. })));
        // Two items for a shape of three.
        let two = Tensor::from_items("t", vec![2], [b"a".as_slice(), b"b"]).unwrap().into_data();
        assert!(Tensor::new("t", DataType::Bytes, vec![3], two).is_err());
        assert!(matches!(Tensor::new("t", DataType::Bool, vec![1], vec![2]), Err(TensorError::BadBool { .. })));
    }

    #[test]
    fn deserializing_checks_like_new() {
        let t = Tensor::from_slice("x", vec![2], &[1u16, 2]).unwrap();
        let bytes = postcard::to_allocvec(&t).unwrap();
        let back: Tensor = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, t);
        // The same fields with a shape that disagrees with the bytes.
        #[derive(Serialize)]
        struct Forged {
            name: String,
            datatype: DataType,
            shape: Vec<usize>,
            #[serde(with = "serde_bytes")]
            data: Vec<u8>,
        }
        let forged = Forged { name: "x".into(), datatype: DataType::Uint16, shape: vec![3], data: vec![0; 4] };
        let bytes = postcard::to_allocvec(&forged).unwrap();
        assert!(postcard::from_bytes::<Tensor>(&bytes).is_err());
    }
}
