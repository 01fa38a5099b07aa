//! ONNX models run by tract inside the worker process. Requests of a batch
//! are joined along their first dimension into one call (Triton's dynamic
//! batching), and the outputs split back by each request's row count.
//!
//! The configuration's inputs and outputs are the graph's by **name** (the
//! private `graph` module): the `[[input]]` and `[[output]]` tables may list
//! them in any order; every input of the graph must be listed, and a listed
//! output must be one of the graph's (those not listed are left out of the
//! answer); a datatype must be the graph's own (never cast), and a
//! dimension the graph fixes the same. A version that breaks these does
//! not load, and says which field of its `config.toml` to correct; such a
//! load is not retried ([`LoadError::permanent`]): the version is
//! unavailable with that reason until it is loaded again. An
//! output shape the configuration does not allow fails the request.

mod graph;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, Symbol, TDim, TValue, TVec,
    Tensor as TractTensor, TypedModel, TypedRunnableModel,
};

use multiproc_serve::{LoadError, Model, WorkerContext};

use crate::protocol::{DataType, Tensor};

/// An input or output as the worker needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnnxTensorSpec {
    /// The name.
    pub name: String,
    /// The datatype.
    pub datatype: DataType,
    /// The dimensions after the batch dimension; -1 = any.
    pub dims: Vec<i64>,
}

/// What a worker needs to load one ONNX version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnnxConfig {
    /// The `model.onnx` file.
    pub path: PathBuf,
    /// The inputs, matched to the graph's by name, in any order.
    pub inputs: Vec<OnnxTensorSpec>,
    /// The outputs answered, matched to the graph's by name, in any order.
    pub outputs: Vec<OnnxTensorSpec>,
    /// 0: the graph has no batch dimension; n > 0: the first dimension is
    /// the batch dimension and the server sends batches of up to n requests.
    pub max_batch_size: usize,
}

impl OnnxConfig {
    /// Whether the first dimension is the batch dimension.
    pub fn batched(&self) -> bool {
        self.max_batch_size > 0
    }
}

/// Plans made for a concrete batch size are kept for the sizes seen most (a
/// graph with a symbolic batch dimension resolves it on every call, which
/// costs an error value per call inside tract: 3-10× a small model's call).
/// At least this many are kept...
const CONCRETE_PLANS: usize = 32;

/// ...and up to one per batch size (1 to `max_batch_size`: under load every
/// size comes up, and a plan evicted and made again costs milliseconds of
/// the worker's time, hundreds of small batches' worth), as long as the
/// plans' weights stay within this many bytes (counted as the file's size
/// per plan).
const CONCRETE_BYTES: u64 = 512 << 20;

/// Only models up to this size get concrete plans: each plan holds its own
/// packed weights, and for a large model the per-call cost no longer matters.
const CONCRETE_MAX_FILE: u64 = 16 << 20;

/// How many concrete plans a model of `file_bytes` batched up to
/// `max_batch_size` keeps.
fn plan_capacity(file_bytes: u64, max_batch_size: usize) -> usize {
    let fit = usize::try_from(CONCRETE_BYTES / file_bytes.max(1)).unwrap_or(usize::MAX);
    max_batch_size.min(fit).max(CONCRETE_PLANS)
}

/// A loaded, optimized ONNX graph.
#[derive(Debug)]
pub struct OnnxRunner {
    config: OnnxConfig,
    plan: Arc<TypedRunnableModel>,
    typed: TypedModel,
    batch: Option<Symbol>,
    concrete: RefCell<Vec<(usize, Arc<TypedRunnableModel>)>>,
    /// How many plans `concrete` keeps.
    concrete_capacity: usize,
}

fn datum(dt: DataType) -> Result<DatumType, String> {
    Ok(match dt {
        DataType::Bool => DatumType::Bool,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Fp16 => DatumType::F16,
        DataType::Fp32 => DatumType::F32,
        DataType::Fp64 => DatumType::F64,
        DataType::Bytes => return Err("BYTES tensors are not supported by the ONNX runner".into()),
    })
}

impl OnnxRunner {
    /// Loads and optimizes the graph, its inputs and outputs matched to the
    /// configuration's by name, with the input shapes of the configuration
    /// (a symbolic batch dimension first when batched).
    ///
    /// # Errors
    ///
    /// The file cannot be read, the configuration's names, datatypes or
    /// fixed dimensions are not the graph's (the error names the field; it
    /// is [permanent](LoadError::permanent): no retry can fix it), or
    /// tract cannot type or optimize the graph.
    pub fn load(config: OnnxConfig) -> Result<OnnxRunner, LoadError> {
        let what = config.path.display().to_string();
        let mut model = tract_onnx::onnx().model_for_path(&config.path).map_err(|e| format!("{what}: {e:#}"))?;
        let scope = model.symbols.clone();
        let batch = config.batched().then(|| scope.sym("batch"));
        let file_bytes = std::fs::metadata(&config.path).map_or(u64::MAX, |m| m.len());
        let small = file_bytes <= CONCRETE_MAX_FILE;
        let concrete_capacity = plan_capacity(file_bytes, config.max_batch_size);
        graph::bind(&mut model, &config).map_err(LoadError::permanent)?;
        for (i, spec) in config.inputs.iter().enumerate() {
            let mut shape: Vec<TDim> = Vec::new();
            if config.batched() {
                shape.push(scope.sym("batch").into());
            }
            for (j, &d) in spec.dims.iter().enumerate() {
                shape.push(if d < 0 { scope.sym(&format!("{}_{j}", spec.name)).into() } else { (d as usize).into() });
            }
            let fact = InferenceFact::dt_shape(datum(spec.datatype).map_err(LoadError::permanent)?, shape);
            model.set_input_fact(i, fact).map_err(|e| format!("{what}: input {}: {e:#}", spec.name))?;
        }
        let prepare = |e: tract_onnx::prelude::TractError| format!("{what}: cannot prepare the graph: {e:#}");
        let typed = model.into_typed().and_then(|m| m.into_decluttered()).map_err(prepare)?;
        graph::check_outputs(&typed, &config).map_err(LoadError::permanent)?;
        let plan = typed.clone().into_optimized().and_then(|m| m.into_runnable()).map_err(prepare)?;
        let batch = batch.filter(|_| small);
        Ok(OnnxRunner { config, plan, typed, batch, concrete: RefCell::new(Vec::new()), concrete_capacity })
    }

    /// Runs a batch of requests (each a set of named input tensors): one
    /// call for all of them when their shapes allow, else one per request.
    pub fn predict(&self, batch: Vec<Vec<Tensor>>) -> Vec<Result<Vec<Tensor>, String>> {
        if self.config.batched()
            && batch.len() > 1
            && let Ok(joined) = self.join(&batch)
        {
            let rows: Vec<usize> = batch.iter().map(|r| r[0].shape().first().copied().unwrap_or(0)).collect();
            return match self.run(joined) {
                Ok(outputs) => self.split(outputs, &rows),
                Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
            };
        }
        batch.into_iter().map(|r| self.order(r).and_then(|inputs| self.run(inputs))).collect()
    }

    /// The request's tensors in the graph's input order.
    fn order(&self, mut request: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        self.config
            .inputs
            .iter()
            .map(|spec| {
                let i = request
                    .iter()
                    .position(|t| t.name() == spec.name)
                    .ok_or_else(|| format!("missing input '{}'", spec.name))?;
                Ok(request.swap_remove(i))
            })
            .collect()
    }

    /// Joins the requests' inputs along the first dimension, if every
    /// request has the same trailing dimensions.
    fn join(&self, batch: &[Vec<Tensor>]) -> Result<Vec<Tensor>, String> {
        let mut joined = Vec::with_capacity(self.config.inputs.len());
        for spec in &self.config.inputs {
            let parts: Vec<&Tensor> = batch
                .iter()
                .map(|r| {
                    r.iter().find(|t| t.name() == spec.name).ok_or_else(|| format!("missing input '{}'", spec.name))
                })
                .collect::<Result<_, _>>()?;
            let tail = parts[0].shape().get(1..).ok_or("an input has no batch dimension")?;
            if parts.iter().any(|p| p.shape().get(1..) != Some(tail)) {
                return Err("shapes differ".into());
            }
            let rows: usize = parts.iter().map(|p| p.shape()[0]).sum();
            let mut shape = vec![rows];
            shape.extend_from_slice(tail);
            let mut data = Vec::with_capacity(parts.iter().map(|p| p.data().len()).sum());
            for p in &parts {
                data.extend_from_slice(p.data());
            }
            joined.push(Tensor::new(&spec.name, spec.datatype, shape, data).map_err(|e| e.to_string())?);
        }
        Ok(joined)
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let mut values: TVec<TValue> = TVec::new();
        for t in &inputs {
            let mut tt = TractTensor::zero_dt(datum(t.datatype())?, t.shape()).map_err(|e| format!("{e:#}"))?;
            tt.as_bytes_mut().copy_from_slice(t.data());
            values.push(tt.into());
        }
        let rows = inputs.first().and_then(|t| t.shape().first().copied());
        let outputs = match rows.and_then(|n| self.concrete_plan(n)) {
            Some(plan) => plan.run(values),
            None => self.plan.run(values),
        }
        .map_err(|e| format!("model failed: {e:#}"))?;
        graph::check_run(&outputs, &self.config)?;
        outputs
            .iter()
            .zip(&self.config.outputs)
            .map(|(v, spec)| {
                let want = datum(spec.datatype)?;
                let t = v.cast_to_dt(want).map_err(|e| format!("output '{}': {e:#}", spec.name))?;
                Tensor::new(&spec.name, spec.datatype, t.shape().to_vec(), t.as_bytes().to_vec())
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// The plan for batches of exactly `rows`, made on first use (`None`
    /// if the graph has no batch dimension or cannot be made concrete).
    fn concrete_plan(&self, rows: usize) -> Option<Arc<TypedRunnableModel>> {
        let batch = self.batch.as_ref()?;
        let mut cache = self.concrete.borrow_mut();
        if let Some(i) = cache.iter().position(|(n, _)| *n == rows) {
            let hit = cache.remove(i);
            let plan = Arc::clone(&hit.1);
            cache.insert(0, hit);
            return Some(plan);
        }
        let values = std::collections::HashMap::from([(batch.clone(), TDim::Val(i64::try_from(rows).ok()?))]);
        let plan =
            self.typed.set_symbols(&values).and_then(|m| m.into_optimized()).and_then(|m| m.into_runnable()).ok()?;
        cache.insert(0, (rows, Arc::clone(&plan)));
        cache.truncate(self.concrete_capacity);
        Some(plan)
    }

    /// Splits joined outputs back into one set per request.
    fn split(&self, outputs: Vec<Tensor>, rows: &[usize]) -> Vec<Result<Vec<Tensor>, String>> {
        let mut per_request: Vec<Result<Vec<Tensor>, String>> = rows.iter().map(|_| Ok(Vec::new())).collect();
        for out in outputs {
            let total: usize = rows.iter().sum();
            if out.shape().first() != Some(&total) {
                let e = format!("output '{}' has shape {:?}, not {total} rows", out.name(), out.shape());
                return rows.iter().map(|_| Err(e.clone())).collect();
            }
            let row_bytes = out.data().len() / total.max(1);
            let mut offset = 0;
            for (slot, &n) in per_request.iter_mut().zip(rows) {
                let mut shape = out.shape().to_vec();
                shape[0] = n;
                let data = out.data()[offset..offset + n * row_bytes].to_vec();
                offset += n * row_bytes;
                if let Ok(list) = slot {
                    match Tensor::new(out.name(), out.datatype(), shape, data) {
                        Ok(t) => list.push(t),
                        Err(e) => *slot = Err(e.to_string()),
                    }
                }
            }
        }
        per_request
    }
}

/// The ONNX model type served by multiproc-serve: one request is a set of
/// named tensors, so is its answer.
impl Model for OnnxRunner {
    type Config = OnnxConfig;
    type Input = Vec<Tensor>;
    type Output = Vec<Tensor>;

    /// A configuration that does not match the graph fails for good.
    fn load(config: OnnxConfig, _: &WorkerContext) -> Result<Self, LoadError> {
        OnnxRunner::load(config)
    }

    fn predict(&mut self, batch: Vec<Vec<Tensor>>) -> Vec<Result<Vec<Tensor>, String>> {
        OnnxRunner::predict(self, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> OnnxRunner {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo/repository/digits/1/model.onnx");
        let spec = |name: &str, n| OnnxTensorSpec { name: name.into(), datatype: DataType::Fp32, dims: vec![n] };
        OnnxRunner::load(OnnxConfig {
            path,
            inputs: vec![spec("input", 64)],
            outputs: vec![spec("probabilities", 10)],
            max_batch_size: 64,
        })
        .unwrap()
    }

    #[test]
    fn joined_batch_equals_one_by_one() {
        let runner = digits();
        let req = |rows: usize, seed: f32| {
            let values: Vec<f32> = (0..rows * 64).map(|i| (i as f32 * 0.37 + seed) % 1.0).collect();
            vec![Tensor::from_slice("input", vec![rows, 64], &values).unwrap()]
        };
        let batch = vec![req(1, 0.1), req(3, 0.5), req(2, 0.9)];
        let together = runner.predict(batch.clone());
        let alone: Vec<_> = batch.into_iter().map(|r| runner.predict(vec![r]).remove(0)).collect();
        assert_eq!(together.len(), 3);
        for (a, b) in together.iter().zip(&alone) {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert_eq!(a[0].shape(), b[0].shape());
            let (a, b) = (a[0].to_vec::<f32>().unwrap(), b[0].to_vec::<f32>().unwrap());
            assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_small_model_keeps_a_plan_for_every_batch_size() {
        assert_eq!(digits().concrete_capacity, 64, "the digits model is 20 KB, max_batch_size 64");
        assert_eq!(plan_capacity(20_000, 256), 256);
        assert_eq!(plan_capacity(20_000, 4), CONCRETE_PLANS, "never fewer than the default");
        assert_eq!(plan_capacity(CONCRETE_MAX_FILE, 256), CONCRETE_PLANS, "large models keep to the budget");
    }
}
