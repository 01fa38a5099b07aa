"""Writes the bench's trivial model, bench/double/1/model.onnx: output = input * 2
(FP32, [batch, 4]), one ONNX Mul. The KServe side of the `http_*` bench rows
computes the same in numpy. Run with the `onnx` package installed (see
train_digits.py for a throwaway virtual environment)."""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))

graph = helper.make_graph(
    [helper.make_node("Mul", ["input", "two"], ["output"])],
    "double",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
    [numpy_helper.from_array(np.array([2.0], dtype=np.float32), "two")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="make_double.py")
model.ir_version = 8
onnx.checker.check_model(model)
out = os.path.join(HERE, "bench", "double", "1")
os.makedirs(out, exist_ok=True)
onnx.save(model, os.path.join(out, "model.onnx"))
print("wrote", os.path.join(out, "model.onnx"))
