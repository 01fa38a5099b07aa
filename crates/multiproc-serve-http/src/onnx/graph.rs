//! The configuration's `[[input]]` and `[[output]]` tables matched to the
//! graph's inputs and outputs **by name**, never by position: the tables
//! may list them in any order, every input of the graph must be listed,
//! a listed output must be an output of the graph (the graph's other
//! outputs are not computed for the answer), and each listed datatype must
//! be the graph's own (a different one is refused, never cast). Dimensions
//! the graph fixes are checked at load, the others after every run.

use std::path::Path;

use tract_onnx::prelude::{DatumType, Fact, InferenceModel, OutletId, TDim, TValue, TypedModel};

use super::{OnnxConfig, OnnxTensorSpec, datum};

/// A mismatch between the configuration and the graph: which field of
/// which file, what the graph has, and what to do.
fn mismatch(config: &OnnxConfig, field: String, problem: String, fix: &str) -> String {
    format!(
        "{}: field `{field}`: {problem}; {fix} (the graph: {})",
        config_file(&config.path).display(),
        config.path.display()
    )
}

/// The `config.toml` of the model whose version file is `model_onnx`
/// (`<repo>/<model>/<N>/model.onnx`, as the repository lays it out).
fn config_file(model_onnx: &Path) -> std::path::PathBuf {
    model_onnx.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join("config.toml")
}

/// The configuration's name for a tract datatype (tract's own name if the
/// protocol has none).
fn protocol_name(dt: DatumType) -> String {
    let name = match dt {
        DatumType::Bool => "BOOL",
        DatumType::U8 => "UINT8",
        DatumType::U16 => "UINT16",
        DatumType::U32 => "UINT32",
        DatumType::U64 => "UINT64",
        DatumType::I8 => "INT8",
        DatumType::I16 => "INT16",
        DatumType::I32 => "INT32",
        DatumType::I64 | DatumType::TDim => "INT64",
        DatumType::F16 => "FP16",
        DatumType::F32 => "FP32",
        DatumType::F64 => "FP64",
        other => return format!("{other:?} (not a protocol datatype)"),
    };
    name.to_string()
}

/// Whether the graph's `graph` datatype is what the configuration's `spec`
/// says (tract computes some INT64 values, such as shapes, as `TDim`).
fn same_datatype(graph: DatumType, spec: &OnnxTensorSpec) -> bool {
    datum(spec.datatype).is_ok_and(|want| want == graph || (want == DatumType::I64 && graph == DatumType::TDim))
}

/// Names quoted and joined: `"a", "b"`.
fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// Makes the model's inputs and outputs those of the configuration, in its
/// order, matched by name; checks the inputs' datatypes the graph declares.
///
/// # Errors
///
/// A listed name the graph does not have, an input of the graph not
/// listed, or a datatype other than the graph's, naming the field.
pub(super) fn bind(model: &mut InferenceModel, config: &OnnxConfig) -> Result<(), String> {
    let graph_inputs: Vec<(String, OutletId)> = model
        .input_outlets()
        .map_err(|e| format!("{e:#}"))?
        .iter()
        .map(|&o| (model.node(o.node).name.clone(), o))
        .collect();
    let input_names: Vec<String> = graph_inputs.iter().map(|(n, _)| n.clone()).collect();
    let mut inputs = Vec::with_capacity(config.inputs.len());
    for (i, spec) in config.inputs.iter().enumerate() {
        let Some(&(_, outlet)) = graph_inputs.iter().find(|(n, _)| *n == spec.name) else {
            return Err(mismatch(
                config,
                format!("input[{i}].name"),
                format!("{:?} is not an input of the graph (its inputs: {})", spec.name, quoted(&input_names)),
                "name each [[input]] after the graph input it feeds",
            ));
        };
        let declared = model.outlet_fact(outlet).map_err(|e| format!("{e:#}"))?.datum_type();
        if let Some(dt) = declared.filter(|&dt| !same_datatype(dt, spec)) {
            return Err(mismatch(
                config,
                format!("input[{i}].datatype"),
                format!("{}, but the graph's input {:?} is {}", spec.datatype.as_str(), spec.name, protocol_name(dt)),
                &format!("set datatype = {:?}", protocol_name(dt)),
            ));
        }
        inputs.push(outlet);
    }
    if let Some((name, _)) = graph_inputs.iter().find(|(n, _)| !config.inputs.iter().any(|s| s.name == *n)) {
        return Err(mismatch(
            config,
            "input".into(),
            format!("no [[input]] table names the graph's input {name:?} (its inputs: {})", quoted(&input_names)),
            "add an [[input]] table for every input of the graph",
        ));
    }
    let graph_outputs: Vec<(String, OutletId)> = model
        .output_outlets()
        .map_err(|e| format!("{e:#}"))?
        .iter()
        .map(|&o| (model.outlet_label(o).map_or_else(|| model.node(o.node).name.clone(), str::to_string), o))
        .collect();
    let mut outputs = Vec::with_capacity(config.outputs.len());
    for (i, spec) in config.outputs.iter().enumerate() {
        let Some(&(_, outlet)) = graph_outputs.iter().find(|(n, _)| *n == spec.name) else {
            let names: Vec<String> = graph_outputs.iter().map(|(n, _)| n.clone()).collect();
            return Err(mismatch(
                config,
                format!("output[{i}].name"),
                format!("{:?} is not an output of the graph (its outputs: {})", spec.name, quoted(&names)),
                "name each [[output]] after a graph output; the graph's outputs not listed are left out of the answer",
            ));
        };
        outputs.push(outlet);
    }
    model.set_input_outlets(&inputs).map_err(|e| format!("{e:#}"))?;
    model.select_output_outlets(&outputs).map_err(|e| format!("{e:#}"))
}

/// Checks the typed graph's outputs (in the configuration's order, as
/// [`bind`] left them) against the configuration: the datatype, and each
/// dimension the graph fixes.
///
/// # Errors
///
/// A datatype other than the graph's, a different number of dimensions, or
/// a fixed dimension of another size, naming the field.
pub(super) fn check_outputs(typed: &TypedModel, config: &OnnxConfig) -> Result<(), String> {
    for (i, spec) in config.outputs.iter().enumerate() {
        let fact = typed.output_fact(i).map_err(|e| format!("{e:#}"))?;
        if !same_datatype(fact.datum_type, spec) {
            let graph = protocol_name(fact.datum_type);
            return Err(mismatch(
                config,
                format!("output[{i}].datatype"),
                format!("{}, but the graph's output {:?} is {graph}", spec.datatype.as_str(), spec.name),
                &format!("set datatype = {graph:?}; outputs are never converted"),
            ));
        }
        let dims: Vec<Option<i64>> = fact.shape.iter().map(|d: &TDim| d.as_i64()).collect();
        if let Err(problem) = fits(&dims, spec, config.batched()) {
            return Err(mismatch(
                config,
                format!("output[{i}].dims"),
                format!("{:?}: {problem}", spec.dims),
                "set the dims the graph has (without the batch dimension; -1 for a variable size)",
            ));
        }
    }
    Ok(())
}

/// Checks the outputs of a run against the configuration's dimensions.
///
/// # Errors
///
/// An output whose shape the configuration does not allow: the model
/// answered something other than its configuration promises.
pub(super) fn check_run(outputs: &[TValue], config: &OnnxConfig) -> Result<(), String> {
    for (i, (value, spec)) in outputs.iter().zip(&config.outputs).enumerate() {
        let dims: Vec<Option<i64>> = value.shape().iter().map(|&d| i64::try_from(d).ok()).collect();
        if let Err(problem) = fits(&dims, spec, config.batched()) {
            return Err(format!(
                "output {:?}: the model answered shape {:?}, which does not fit field `output[{i}].dims` = {:?} of {}: \
                 {problem}; correct the dims",
                spec.name,
                value.shape(),
                spec.dims,
                config_file(&config.path).display()
            ));
        }
    }
    Ok(())
}

/// Whether a shape (`None`: a size not known yet) fits the dimensions of
/// `spec` (after the batch dimension when `batched`).
fn fits(shape: &[Option<i64>], spec: &OnnxTensorSpec, batched: bool) -> Result<(), String> {
    let dims = match batched {
        true => shape.get(1..).ok_or("the graph gives it no batch dimension")?,
        false => shape,
    };
    if dims.len() != spec.dims.len() {
        return Err(format!(
            "the graph gives it {} dimension(s){}, not {}",
            dims.len(),
            if batched { " after the batch dimension" } else { "" },
            spec.dims.len()
        ));
    }
    match dims.iter().zip(&spec.dims).position(|(&got, &want)| want >= 0 && got.is_some_and(|g| g != want)) {
        Some(j) => Err(format!("dimension {j} is {} in the graph", dims[j].unwrap_or(-1))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DataType;

    fn spec(dims: &[i64]) -> OnnxTensorSpec {
        OnnxTensorSpec { name: "y".into(), datatype: DataType::Fp32, dims: dims.to_vec() }
    }

    #[test]
    fn shapes_fit_the_dims_after_the_batch_dimension() {
        assert_eq!(fits(&[Some(4), Some(10)], &spec(&[10]), true), Ok(()));
        assert_eq!(fits(&[None, Some(3), None], &spec(&[-1, 3]), true), Ok(()));
        assert_eq!(fits(&[Some(3), Some(7)], &spec(&[3, -1]), false), Ok(()));
        let e = fits(&[Some(4), Some(2)], &spec(&[10]), true).unwrap_err();
        assert_eq!(e, "dimension 0 is 2 in the graph");
        let e = fits(&[Some(4)], &spec(&[10]), true).unwrap_err();
        assert!(e.contains("0 dimension(s) after the batch dimension, not 1"), "{e}");
        assert!(fits(&[], &spec(&[]), true).is_err(), "no batch dimension");
    }

    #[test]
    fn the_config_file_is_beside_the_version_directory() {
        assert_eq!(config_file(Path::new("/r/m/3/model.onnx")), Path::new("/r/m/config.toml"));
    }
}
