"""Drives `multiproc serve` (the demo repository) with Triton's own Python
HTTP client, with JSON and with binary tensors. argv: host:port, path of the
digits test set. Prints one line per check; exits non-zero on a failure."""

import sys
import time

import digits_set
import numpy as np
import tritonclient.http as httpclient

url, test_set = sys.argv[1], sys.argv[2]
client = httpclient.InferenceServerClient(url=url, network_timeout=30.0, connection_timeout=30.0)
assert client.is_server_live() and client.is_server_ready(), "server not live/ready"
assert client.is_model_ready("digits") and client.is_model_ready("text"), "models not ready"
meta = client.get_model_metadata("digits")
assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], meta
assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
config = client.get_model_config("digits")
assert (config["max_batch_size"], config["input"][0]["dims"], config["input"][0]["data_type"]) == (64, [64], "TYPE_FP32"), config
print("metadata ok")

x, labels = digits_set.load(test_set)
probs = {}
for binary in (False, True):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer("digits", [inp], outputs=[out], request_id="req-%s" % binary)
    assert result.get_response()["id"] == "req-%s" % binary, result.get_response()
    p = result.as_numpy("probabilities")
    accuracy = digits_set.check(p, labels)
    probs[binary] = p
    print("digits binary=%s accuracy %.3f" % (binary, accuracy))
assert np.array_equal(probs[False].view(np.uint32), probs[True].view(np.uint32)), "JSON and binary differ"
print("digits json == binary bit for bit")

for algorithm in ("gzip", "deflate"):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=True)
    result = client.infer("digits", [inp], outputs=[out], request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    assert np.array_equal(result.as_numpy("probabilities").view(np.uint32), probs[True].view(np.uint32)), algorithm
    print("digits %s request ok" % algorithm)

# Statistics: the four digits requests above, counted (the counters trail an
# answer by the rest of its batch's delivery: polled, 20 s at most).
assert "statistics" in client.get_server_metadata()["extensions"]
deadline = time.monotonic() + 20
while True:
    (entry,) = client.get_inference_statistics("digits")["model_stats"]
    if entry["inference_stats"]["success"]["count"] == 4 or time.monotonic() > deadline:
        break
    time.sleep(0.02)
assert (entry["name"], entry["version"]) == ("digits", "1"), entry
assert entry["inference_stats"]["success"]["count"] == 4, entry
assert entry["inference_count"] == 4 * len(x) and entry["last_inference"] > 0, entry
assert sum(b["compute_infer"]["count"] for b in entry["batch_stats"]) == entry["execution_count"], entry
print("statistics ok")

# Classification: the top 3 classes of each image, "<value>:<index>", against the probabilities.
for binary in (False, True):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    top = client.infer("digits", [inp], outputs=[out]).as_numpy("probabilities")
    assert top.shape == (len(x), 3), top.shape
    for row, classes in zip(probs[True], top):
        pairs = [(c if isinstance(c, bytes) else c.encode()).decode().split(":") for c in classes]
        assert [int(i) for _, i in pairs] == list(np.argsort(-row, kind="stable")[:3]), (row, classes)
        assert [np.float32(v) for v, _ in pairs] == [row[int(i)] for _, i in pairs], (row, classes)
print("classification ok")

for binary in (False, True):
    inp = httpclient.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"hello big world", "h\u00e9 x".encode()], dtype=np.object_), binary_data=binary)
    outs = [httpclient.InferRequestedOutput("upper", binary_data=binary), httpclient.InferRequestedOutput("words", binary_data=binary)]
    result = client.infer("text", [inp], outputs=outs)
    upper = [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("upper").tolist()]
    assert upper == [b"HELLO BIG WORLD", "H\u00c9 X".encode()], upper
    assert result.as_numpy("words").tolist() == [3, 2], result.as_numpy("words")
    print("text binary=%s ok" % binary)

try:
    client.infer("nope", [inp])
    raise AssertionError("unknown model accepted")
except httpclient.InferenceServerException as e:
    assert "unknown model 'nope'" in str(e), str(e)
    print("error surfaced: %s" % e.message())
print("OK")
