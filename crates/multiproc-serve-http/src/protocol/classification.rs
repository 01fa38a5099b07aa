//! Triton's classification extension: an output asked for with the
//! parameter `"classification": n` comes back as its `n` highest values
//! instead of its raw data, each as the string `"<value>:<index>"` in a
//! BYTES tensor, highest first (equal values: the lower index first), or
//! `"<value>:<index>:<label>"` when the output's configuration names its
//! classes (a label file) and the index has a name.
//!
//! For a model with a batch dimension each row of the batch is classified
//! on its own, and the answer's shape is `[rows, n]`; without one the whole
//! output is one row, and the shape is `[n]`. `n` is cut to the number of
//! values a row has. Only numeric outputs classify; NaN ranks below every
//! number.

use super::ProtocolError;
use super::tensor::{DataType, Tensor};

/// One value, comparable within its tensor: integers exactly, floats as
/// `f64` (exact for FP16 and FP32).
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i128),
    Float(f64),
}

impl Value {
    /// Descending order, NaN last.
    fn rank(a: &Value, b: &Value) -> std::cmp::Ordering {
        match (a, b) {
            (Value::Int(a), Value::Int(b)) => b.cmp(a),
            (Value::Float(a), Value::Float(b)) => match (a.is_nan(), b.is_nan()) {
                (false, false) => b.total_cmp(a),
                (nan_a, nan_b) => nan_a.cmp(&nan_b),
            },
            // A tensor holds one datatype.
            (Value::Int(_), Value::Float(_)) | (Value::Float(_), Value::Int(_)) => std::cmp::Ordering::Equal,
        }
    }
}

/// The value of each element of `t` (its elements are whole, checked by `Tensor`).
fn values(t: &Tensor) -> Result<Vec<Value>, ProtocolError> {
    let dt = t.datatype();
    let size = match dt.size() {
        Some(size) if dt.is_numeric() => size,
        _ => {
            return Err(ProtocolError::new(format!(
                "output '{}' is {dt}: classification needs a numeric output",
                t.name()
            )));
        }
    };
    let value = |b: &[u8]| -> Value {
        let mut le = [0u8; 8];
        le[..size].copy_from_slice(b);
        let u = u64::from_le_bytes(le);
        match dt {
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => Value::Int(i128::from(u)),
            DataType::Int8 => Value::Int(i128::from(b[0] as i8)),
            DataType::Int16 => Value::Int(i128::from(i16::from_le_bytes([b[0], b[1]]))),
            DataType::Int32 => Value::Int(i128::from(u as u32 as i32)),
            DataType::Int64 => Value::Int(i128::from(u as i64)),
            DataType::Fp16 => Value::Float(f64::from(half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
            DataType::Fp32 => Value::Float(f64::from(f32::from_bits(u as u32))),
            _ => Value::Float(f64::from_bits(u)),
        }
    };
    Ok(t.data().chunks_exact(size).map(value).collect())
}

/// The value as it is written in a classification string: an integer as
/// is, a float in the shortest form that reads back to the same value.
fn text(dt: DataType, v: Value) -> String {
    match (v, dt) {
        (Value::Int(i), _) => i.to_string(),
        (Value::Float(f), DataType::Fp64) => f.to_string(),
        (Value::Float(f), _) => (f as f32).to_string(),
    }
}

/// The `count` highest values of each row of `t` (see the module docs);
/// `batched`: the model has a batch dimension, `t`'s first; `labels`: the
/// name of each class, by index (empty: none).
///
/// ```
/// use multiproc_serve_http::protocol::{DataType, Tensor, classify};
/// let probs: Vec<u8> = [0.1f32, 0.7, 0.2, 0.5, 0.25, 0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
/// let t = Tensor::new("p", DataType::Fp32, vec![2, 3], probs).unwrap();
/// let top = classify(&t, 2, true, &[]).unwrap();
/// assert_eq!((top.datatype(), top.shape()), (DataType::Bytes, &[2, 2][..]));
/// let strings: Vec<String> = top.items().unwrap().into_iter().map(|s| String::from_utf8(s.to_vec()).unwrap()).collect();
/// assert_eq!(strings, ["0.7:1", "0.2:2", "0.5:0", "0.25:1"]);
/// let named = classify(&t, 1, true, &["cat".into(), "dog".into()]).unwrap();
/// assert_eq!(named.items().unwrap(), [&b"0.7:1:dog"[..], b"0.5:0:cat"]);
/// ```
///
/// # Errors
///
/// A BOOL or BYTES output.
pub fn classify(t: &Tensor, count: usize, batched: bool, labels: &[String]) -> Result<Tensor, ProtocolError> {
    let values = values(t)?;
    let rows = if batched { t.shape().first().copied().unwrap_or(1) } else { 1 };
    let per_row = values.len().checked_div(rows).unwrap_or(0);
    let n = count.min(per_row);
    let mut strings = Vec::with_capacity(rows.saturating_mul(n));
    let mut order: Vec<usize> = Vec::with_capacity(per_row);
    for row in values.chunks(per_row.max(1)).take(rows) {
        order.clear();
        order.extend(0..row.len());
        // Stable: equal values keep the lower index first.
        order.sort_by(|&a, &b| Value::rank(&row[a], &row[b]));
        strings.extend(order[..n].iter().map(|&i| match labels.get(i) {
            Some(label) => format!("{}:{i}:{label}", text(t.datatype(), row[i])),
            None => format!("{}:{i}", text(t.datatype(), row[i])),
        }));
    }
    let shape = if batched { vec![rows, n] } else { vec![n] };
    Tensor::from_items(t.name(), shape, strings.iter().map(String::as_bytes))
        .map_err(|e| ProtocolError::new(format!("classification of output '{}': {e}", t.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(t: &Tensor) -> Vec<String> {
        t.items().unwrap().into_iter().map(|s| String::from_utf8(s.to_vec()).unwrap()).collect()
    }

    #[test]
    fn integers_rank_exactly_and_nan_ranks_last() {
        let big: Vec<u8> = [i64::MAX, i64::MAX - 1, -5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Tensor::new("x", DataType::Int64, vec![3], big).unwrap();
        let top = classify(&t, 5, false, &[]).unwrap();
        assert_eq!(top.shape(), [3], "cut to the values there are");
        assert_eq!(strings(&top), [format!("{}:0", i64::MAX), format!("{}:1", i64::MAX - 1), "-5:2".into()]);
        let f: Vec<u8> = [f64::NAN, 1.5, f64::NEG_INFINITY].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Tensor::new("y", DataType::Fp64, vec![3], f).unwrap();
        assert_eq!(strings(&classify(&t, 3, false, &[]).unwrap()), ["1.5:1", "-inf:2", "NaN:0"]);
        let u: Vec<u8> = vec![3, 200, 200, 7];
        let t = Tensor::new("z", DataType::Uint8, vec![2, 2], u).unwrap();
        assert_eq!(strings(&classify(&t, 1, true, &[]).unwrap()), ["200:1", "200:0"], "one row each");
        let empty = Tensor::new("e", DataType::Fp32, vec![0, 4], vec![]).unwrap();
        assert_eq!(classify(&empty, 2, true, &[]).unwrap().shape(), [0, 0]);
    }

    #[test]
    fn bool_and_bytes_outputs_do_not_classify() {
        let t = Tensor::new("b", DataType::Bool, vec![2], vec![1, 0]).unwrap();
        assert!(classify(&t, 1, false, &[]).unwrap_err().0.contains("numeric"));
    }
}
