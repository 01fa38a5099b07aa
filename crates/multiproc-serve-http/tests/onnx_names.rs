//! An ONNX model's `[[input]]` and `[[output]]` tables are matched to the
//! graph by name, never by position: tables in another order than the
//! graph's serve correctly, a subset of the outputs answers those outputs,
//! and a name or datatype the graph does not have keeps the version from
//! loading, with the field of `config.toml` named. Only the versions the
//! version policy serves need a `model.onnx`. The digits demo still serves.
//!
//! The test graph is written here with tract's ONNX protobuf types:
//! inputs `a`, `b` (FP32, `[batch, 2]`); outputs `label` = `Cast<INT64>(a - b)`
//! then `diff` = `a - b` (FP32), the order skl2onnx gives a classifier's
//! label and probabilities.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use serde_json::{Value, json};
use tract_onnx::pb;

/// How long anything may take at most (a request, the load, the stop).
const PATIENCE: Duration = Duration::from_secs(120);

/// ONNX's element types used here.
const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// A tensor's type and shape: a symbolic batch dimension, then 2.
fn value_info(name: &str, elem_type: i32) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value as Dim};
    let dim = |value| Dimension { denotation: String::new(), value: Some(value) };
    let shape = pb::TensorShapeProto { dim: vec![dim(Dim::DimParam("N".into())), dim(Dim::DimValue(2))] };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor { elem_type, shape: Some(shape) })),
        }),
        doc_string: String::new(),
    }
}

fn node(op_type: &str, inputs: &[&str], output: &str, attribute: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op_type.into(),
        attribute,
        ..Default::default()
    }
}

/// The test graph (see the module docs), encoded.
fn two_by_two_onnx() -> Vec<u8> {
    let to_int64 = pb::AttributeProto {
        name: "to".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: i64::from(INT64),
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "two_by_two".into(),
        node: vec![node("Sub", &["a", "b"], "diff", vec![]), node("Cast", &["diff"], "label", vec![to_int64])],
        input: vec![value_info("a", FLOAT), value_info("b", FLOAT)],
        output: vec![value_info("label", INT64), value_info("diff", FLOAT)],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "multiproc-serve-http tests".into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// A `config.toml` of the test graph with these `(name, datatype)` inputs
/// and outputs, each of dims `[2]`, and `extra` lines at the top.
fn config(inputs: &[(&str, &str)], outputs: &[(&str, &str)], extra: &str) -> String {
    let mut text = format!("platform = \"onnx\"\nmax_batch_size = 4\n{extra}\n");
    for (kind, list) in [("input", inputs), ("output", outputs)] {
        for (name, datatype) in list {
            text.push_str(&format!("[[{kind}]]\nname = \"{name}\"\ndatatype = \"{datatype}\"\ndims = [2]\n"));
        }
    }
    text
}

/// A repository in a temporary directory, removed on drop.
struct Repository(PathBuf);

impl Repository {
    fn new() -> Repository {
        let dir = std::env::temp_dir().join(format!("multiproc-onnx-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repository = Repository(dir);
        let onnx = two_by_two_onnx();
        let both = [("label", "INT64"), ("diff", "FP32")];
        let models = [
            // The graph's order is a, b and label, diff: listed the other way.
            ("swapped", config(&[("b", "FP32"), ("a", "FP32")], &[("diff", "FP32"), ("label", "INT64")], "")),
            // Only the second output, as a config listing a classifier's probabilities.
            ("diff_only", config(&[("a", "FP32"), ("b", "FP32")], &[("diff", "FP32")], "")),
            ("wrong_name", config(&[("a", "FP32"), ("x", "FP32")], &both, "")),
            ("wrong_input_datatype", config(&[("a", "FP32"), ("b", "FP64")], &both, "")),
            ("wrong_output_datatype", config(&[("a", "FP32"), ("b", "FP32")], &[("label", "FP32")], "")),
            ("unknown_output", config(&[("a", "FP32"), ("b", "FP32")], &[("probabilities", "FP32")], "")),
            ("missing_input", config(&[("a", "FP32")], &both, "")),
        ];
        // Dims other than the graph's: fixed ones (refused at load), and
        // variable ones in the graph (refused when the model answers them).
        let diff = config(&[("a", "FP32"), ("b", "FP32")], &[("diff", "FP32")], "");
        let wrong_dims = diff.replace(
            "name = \"diff\"\ndatatype = \"FP32\"\ndims = [2]",
            "name = \"diff\"\ndatatype = \"FP32\"\ndims = [3]",
        );
        let dims_at_run = diff.replacen("dims = [2]", "dims = [-1]", 2);
        let models = models.into_iter().chain([("wrong_dims", wrong_dims), ("dims_at_run", dims_at_run)]);
        for (name, text) in models {
            repository.write(&format!("{name}/config.toml"), text.as_bytes());
            repository.write(&format!("{name}/1/model.onnx"), &onnx);
        }
        // Version 3 served (latest = 1); version 1 an empty directory.
        let policy = "[version_policy]\nlatest = 1\n";
        let text = format!("{}{policy}", config(&[("a", "FP32"), ("b", "FP32")], &both, ""));
        repository.write("old_version_empty/config.toml", text.as_bytes());
        std::fs::create_dir_all(repository.0.join("old_version_empty/1")).expect("create a version directory");
        repository.write("old_version_empty/3/model.onnx", &onnx);
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/repository/digits");
        for file in ["config.toml", "1/model.onnx"] {
            let bytes = std::fs::read(demo.join(file)).expect("read the digits demo");
            repository.write(&format!("digits/{file}"), &bytes);
        }
        repository
    }

    fn write(&self, file: &str, bytes: &[u8]) {
        let path = self.0.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).expect("create the repository");
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Status and JSON body of `method path` (with `body`, if any).
fn ask(base: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let request = agent.request(method, &format!("{base}{path}"));
    let answer = match body {
        Some(b) => request.send_json(b.clone()),
        None => request.call(),
    };
    let response = match answer {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: no answer: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The outputs of an answer by name: (datatype, shape, data).
fn outputs(answer: &Value) -> Vec<(String, String, Value, Value)> {
    let list = answer["outputs"].as_array().unwrap_or_else(|| panic!("no outputs: {answer}"));
    list.iter()
        .map(|o| {
            (o["name"].as_str().unwrap().to_string(), o["datatype"].to_string(), o["shape"].clone(), o["data"].clone())
        })
        .collect()
}

/// a = [[5.5, 1], [0, 2]], b = [[1, 1], [3, 0.5]]: a - b = [[4.5, 0], [-3, 1.5]].
fn a_and_b() -> Value {
    json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [5.5, 1.0, 0.0, 2.0]},
        {"name": "b", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 1.0, 3.0, 0.5]},
    ]})
}

/// What the repository index says of `model` (its first row, or that of
/// `version`): its state and reason.
fn index_entry(base: &str, model: &str, version: Option<&str>) -> (String, String) {
    let (status, index) = ask(base, "POST", "/v2/repository/index", None);
    assert_eq!(status, 200, "{index}");
    let entry =
        index.as_array().unwrap().iter().find(|e| e["name"] == model && version.is_none_or(|v| e["version"] == v));
    let entry = entry.unwrap_or_else(|| panic!("{model} is not in the index: {index}"));
    (entry["state"].as_str().unwrap_or("").to_string(), entry["reason"].as_str().unwrap_or("").to_string())
}

#[test]
fn inputs_and_outputs_are_matched_by_name_and_checked_at_load() {
    let repository = Repository::new();
    let server = support::InProcess::start(repository.0.clone());
    let base = server.base.clone();
    server.started.recv_timeout(PATIENCE).expect("start did not return");

    // Listed in another order than the graph's: each tensor by its name.
    let (status, answer) = ask(&base, "POST", "/v2/models/swapped/infer", Some(&a_and_b()));
    assert_eq!(status, 200, "{answer}");
    let got = outputs(&answer);
    assert_eq!(got.len(), 2, "{answer}");
    assert_eq!(got[0], ("diff".into(), "\"FP32\"".into(), json!([2, 2]), json!([4.5, 0.0, -3.0, 1.5])), "{answer}");
    assert_eq!(got[1], ("label".into(), "\"INT64\"".into(), json!([2, 2]), json!([4, 0, -3, 1])), "{answer}");

    // One output listed: that output, not the graph's first one renamed.
    let (status, answer) = ask(&base, "POST", "/v2/models/diff_only/infer", Some(&a_and_b()));
    assert_eq!(status, 200, "{answer}");
    let got = outputs(&answer);
    assert_eq!(got, [("diff".into(), "\"FP32\"".into(), json!([2, 2]), json!([4.5, 0.0, -3.0, 1.5]))], "{answer}");

    // A name or datatype the graph does not have: the version does not
    // load, and the reason names the file, the field and the graph's own.
    let expected = [
        ("wrong_name", vec!["field `input[1].name`: \"x\" is not an input", "(its inputs: \"a\", \"b\")"]),
        ("wrong_input_datatype", vec!["field `input[1].datatype`: FP64, but the graph's input \"b\" is FP32"]),
        ("wrong_output_datatype", vec!["field `output[0].datatype`: FP32, but the graph's output \"label\" is INT64"]),
        ("unknown_output", vec!["field `output[0].name`: \"probabilities\" is not an output", "\"label\", \"diff\""]),
        ("wrong_dims", vec!["field `output[0].dims`: [3]: dimension 0 is 2 in the graph"]),
        ("missing_input", vec!["field `input`: no [[input]] table names the graph's input \"b\""]),
    ];
    for (model, words) in expected {
        let (status, body) = ask(&base, "GET", &format!("/v2/models/{model}/ready"), None);
        assert_eq!(status, 503, "{model} is ready: {body}");
        let (status, body) = ask(&base, "POST", &format!("/v2/models/{model}/infer"), Some(&a_and_b()));
        assert_ne!(status, 200, "{model} answered: {body}");
        let (state, reason) = index_entry(&base, model, None);
        assert_ne!(state, "READY", "{model}: {reason}");
        // No retry can fix the configuration: failed at once, not retried.
        assert!(reason.starts_with("failed: ") && reason.contains("not retried"), "{model}: {reason}");
        let config = repository.0.join(model).join("config.toml");
        assert!(
            reason.contains(&config.display().to_string()),
            "{model}: the reason does not name {config:?}: {reason}"
        );
        for w in words {
            assert!(reason.contains(w), "{model}: the reason does not say {w:?}: {reason}");
        }
    }

    // A shape the graph leaves open, answered other than the configuration says.
    let three = json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]},
        {"name": "b", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 1.0, 1.0]},
    ]});
    let (status, body) = ask(&base, "POST", "/v2/models/dims_at_run/infer", Some(&three));
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("shape [1, 3], which does not fit field `output[0].dims` = [2]"), "{body}");
    let (status, answer) = ask(&base, "POST", "/v2/models/dims_at_run/infer", Some(&a_and_b()));
    assert_eq!(status, 200, "the shape it was configured for: {answer}");

    // Version 1, not served, has no model.onnx: version 3 serves.
    let (state, reason) = index_entry(&base, "old_version_empty", Some("3"));
    assert_eq!(state, "READY", "{reason}");
    let (status, body) = ask(&base, "GET", "/v2/models/old_version_empty/ready", None);
    assert_eq!(status, 200, "{body}");
    let (status, answer) = ask(&base, "POST", "/v2/models/old_version_empty/infer", Some(&a_and_b()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model_version"], "3", "{answer}");

    // The digits demo: eight held-out images, classified as in its docs.
    let test: Value =
        serde_json::from_str(include_str!("../demo/digits_test.json")).expect("read demo/digits_test.json");
    let images: Vec<f64> = test["inputs"].as_array().unwrap()[..8]
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let request = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [8, 64], "data": images}]});
    let (status, answer) = ask(&base, "POST", "/v2/models/digits/infer", Some(&request));
    assert_eq!(status, 200, "{answer}");
    let got = outputs(&answer);
    assert_eq!((got[0].0.as_str(), &got[0].2), ("probabilities", &json!([8, 10])), "{answer}");
    let probabilities: Vec<f64> = got[0].3.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let right = probabilities
        .chunks(10)
        .zip(test["labels"].as_array().unwrap())
        .filter(|(p, label)| {
            let best = p.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
            Some(best as u64) == label.as_u64()
        })
        .count();
    assert!(right >= 7, "{right} of 8 digits right (the model's test accuracy is 97%): {answer}");

    server.stop(PATIENCE);
}
