"""Trains the demo classifier of `multiproc serve` and exports it to ONNX.

An MLP (64 -> 1024 ReLU -> 1024 ReLU -> 10 softmax, 1.1 million weights)
trained with scikit-learn on its bundled 8x8 handwritten digits (1797
images), exported with standard ONNX ops only (MatMul, Add, Relu, Softmax)
so tract runs it.

Its size is that of a model worth batching: one row costs tract about
190 us (every weight read for one row), a batch of 64 about 26 us a row
(2 cores, release build). The first demo model (64 -> 64 -> 10, 4,810
weights) cost 6.5 us a row alone and 1.8 us in a batch, less than the HTTP
request around it, so dynamic batching had little to save.

Writes, next to this script:

  repository/digits/1/model.onnx   the model (opset 13)
  digits_test.json                 the held-out test set (inputs scaled to
                                   [0, 1], labels) and the accuracy measured here

Run it in a throwaway virtual environment:

  python3 -m venv /tmp/train && /tmp/train/bin/pip install scikit-learn onnx numpy
  /tmp/train/bin/python crates/multiproc-serve-http/demo/train_digits.py
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN = (1024, 1024)


def main():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=600, random_state=0)
    clf.fit(x_train, y_train)
    sk_accuracy = float(clf.score(x_test, y_test))

    weights = [w.astype(np.float32) for w in clf.coefs_]
    biases = [b.astype(np.float32) for b in clf.intercepts_]
    nodes, initializers, current = [], [], "input"
    for i, (w, b) in enumerate(zip(weights, biases)):
        last = i == len(weights) - 1
        added = "logits" if last else f"h{i}b"
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]),
            helper.make_node("Add", [f"h{i}", f"b{i}"], [added]),
        ]
        initializers += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        if not last:
            nodes.append(helper.make_node("Relu", [added], [f"h{i}r"]))
            current = f"h{i}r"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="train_digits.py")
    model.ir_version = 8
    onnx.checker.check_model(model)

    # The exported graph computed in numpy must agree with scikit-learn.
    h = x_test
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    logits = h
    onnx_accuracy = float((logits.argmax(axis=1) == y_test).mean())
    assert abs(onnx_accuracy - sk_accuracy) < 1e-9, (onnx_accuracy, sk_accuracy)

    out_dir = os.path.join(HERE, "repository", "digits", "1")
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(model, os.path.join(out_dir, "model.onnx"))
    with open(os.path.join(HERE, "digits_test.json"), "w") as f:
        json.dump(
            {
                "about": "held-out 20% of scikit-learn's digits (random_state=0, stratified); inputs are pixels / 16",
                "accuracy": onnx_accuracy,
                "inputs": [[round(float(v), 4) for v in row] for row in x_test],
                "labels": [int(v) for v in y_test],
            },
            f,
            separators=(",", ":"),
        )
    print(f"train {len(y_train)} test {len(y_test)} accuracy {onnx_accuracy:.4f}")


if __name__ == "__main__":
    main()
