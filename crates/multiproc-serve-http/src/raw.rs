//! Triton's raw binary request (binary tensor extension): with
//! `Inference-Header-Content-Length: 0` the body is the bytes of a
//! one-input model's input and nothing else. The shape follows from the
//! configuration and the size: at most one variable dimension, which takes
//! what the size leaves (a BYTES input is one element, the whole body, its
//! length put before it); a batching model gets a batch of 1. Every output
//! is sent back as binary data.

use crate::protocol::{DecodedRequest, ProtocolError, Tensor};
use crate::repository::ModelConfig;

/// The request a raw binary body of `model` stands for.
///
/// # Errors
///
/// The model has other than one input, or the size cannot give its shape.
pub(crate) fn raw_request(model: &str, config: &ModelConfig, body: Vec<u8>) -> Result<DecodedRequest, ProtocolError> {
    let raw = "a raw binary request (Inference-Header-Content-Length: 0)";
    let [input] = config.inputs.as_slice() else {
        return Err(ProtocolError::new(format!(
            "{raw} needs a model with one input; '{model}' has {}: send a JSON header",
            config.inputs.len()
        )));
    };
    // The dimensions of the input, -1 where variable; the bytes of one
    // "row" (every fixed dimension); the variable one takes the rest.
    let variable = input.dims.iter().filter(|&&d| d < 0).count();
    let fixed =
        input.dims.iter().filter(|&&d| d >= 0).try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?));
    let shape = match input.datatype.size() {
        // BYTES: one element, so every dimension is 1.
        None => (fixed == Some(1)).then(|| vec![1; input.dims.len()]),
        Some(size) => fixed
            .and_then(|f| f.checked_mul(size))
            .filter(|&row| row > 0 && variable <= 1 && body.len().is_multiple_of(row))
            .map(|row| body.len() / row)
            .filter(|&fill| variable == 1 || fill == 1)
            .map(|fill| input.dims.iter().map(|&d| usize::try_from(d).unwrap_or(fill)).collect()),
    };
    let mut shape: Vec<usize> = shape.ok_or_else(|| {
        ProtocolError::new(format!(
            "{raw}: {} bytes cannot be input '{}' of model '{model}' ({} of dims {:?}: at most one -1, \
             which the size fills; BYTES: one element)",
            body.len(),
            input.name,
            input.datatype,
            input.dims
        ))
    })?;
    if config.max_batch_size > 0 {
        shape.insert(0, 1);
    }
    // A BYTES element is the whole body: its length goes before it, in
    // the body's own buffer (grown by those 4 bytes, not copied into a
    // second one while the body is held).
    let data = match input.datatype.size() {
        Some(_) => body,
        None => {
            let length = u32::try_from(body.len())
                .map_err(|_| ProtocolError::new(format!("{raw}: a BYTES element is at most 4 GiB")))?;
            let mut data = body;
            data.reserve_exact(4);
            data.splice(0..0, length.to_le_bytes());
            data
        }
    };
    let tensor = Tensor::new(input.name.clone(), input.datatype, shape, data)
        .map_err(|e| ProtocolError::new(format!("{raw}: input {e}")))?;
    Ok(DecodedRequest { id: None, inputs: vec![tensor], outputs: None, binary_output_default: true, timeout: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(datatype: &str, dims: &str, max_batch_size: usize) -> ModelConfig {
        let text = format!(
            "platform = \"onnx\"\nmax_batch_size = {max_batch_size}\n[[input]]\nname = \"x\"\ndatatype = \"{datatype}\"\n\
             dims = {dims}\n[[output]]\nname = \"y\"\ndatatype = \"FP32\"\ndims = [1]\n"
        );
        ModelConfig::parse(&text).unwrap_or_else(|e| panic!("{datatype} {dims}: {e}"))
    }

    #[test]
    fn any_body_against_any_shape_is_a_request_or_an_error_never_a_panic() {
        let huge = i64::MAX.to_string();
        let dims = [
            "[]".to_string(),
            "[-1]".into(),
            "[3, -1]".into(),
            "[-1, -1]".into(),
            "[0]".into(),
            "[0, -1]".into(),
            format!("[{huge}, 2]"),
            format!("[{huge}, -1]"),
            "[4294967296, 4294967296, -1]".into(),
            "[1, 1]".into(),
        ];
        for datatype in ["FP32", "BOOL", "UINT8", "FP64", "BYTES"] {
            for dims in &dims {
                for batch in [0, 4] {
                    let config = config(datatype, dims, batch);
                    for len in [0, 1, 2, 3, 4, 7, 8, 12, 24, 25] {
                        if let Ok(request) = raw_request("m", &config, vec![1; len]) {
                            let input = &request.inputs[0];
                            assert_eq!(input.shape().len(), config.inputs[0].dims.len() + usize::from(batch > 0));
                        }
                    }
                }
            }
        }
    }
}
