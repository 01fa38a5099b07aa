#!/usr/bin/env python3
"""Reference worker for multiproc-serve external-command models (standard library only).

The protocol (see the Rust module `multiproc_serve::command::protocol`): every message, both
ways, is a frame

    u32 LE frame length F | u32 LE header length H | H bytes of JSON header | F-4-H bytes of blob

The worker sends {"type": "ready"} once its model is loaded (or {"type": "error", "message": ...}
and exits), then answers each {"type": "batch", "id": N, "requests": [{"inputs": [T, ...]}, ...]}
with {"type": "result", "id": N, "responses": [{"outputs": [T, ...]} | {"error": "..."}, ...]},
one response per request, in order. T = {"name", "datatype", "shape", "offset", "size"} locates a
tensor's little-endian bytes in the blob; BYTES elements are u32 LE length-prefixed items.
End of stdin means stop. Logs go to stderr (the server prefixes them with model and version);
serve() moves the protocol off descriptor 1, so what the model prints to stdout (print(), or a
native library's printf) goes to stderr too instead of breaking the stream of frames.
An exception raised by predict, or a wrong number of results, fails that batch's requests with
the reason, and a result that is not a list of tensors fails its request; the model stays loaded.

Use it as a library:

    import multiproc_worker as mw
    def load(model, version): return MyModel(version)
    def predict(model, batch): return [model(inputs) for inputs in batch]   # inputs: {name: Tensor}
    mw.serve(load, predict)

or run it as is: the demo model multiplies every numeric input by its version number and
upper-cases BYTES items (outputs are named "output_<input name>").
"""

import array
import json
import os
import struct
import sys

# Datatype → (array typecode, element size); BOOL and FP16 are kept as raw bytes.
_CODES = {
    "UINT8": ("B", 1), "INT8": ("b", 1), "UINT16": ("H", 2), "INT16": ("h", 2),
    "UINT32": ("I", 4), "INT32": ("i", 4), "UINT64": ("Q", 8), "INT64": ("q", 8),
    "FP32": ("f", 4), "FP64": ("d", 8),
}
if sys.byteorder != "little":  # the protocol is little-endian; arrays are native
    raise SystemExit("multiproc_worker.py needs a little-endian machine")


class Tensor:
    """A named tensor: datatype, shape and raw little-endian bytes."""

    def __init__(self, name, datatype, shape, data):
        self.name, self.datatype, self.shape, self.data = name, datatype, list(shape), bytes(data)

    def count(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def values(self):
        """The elements: a list of numbers, or of bytes for BYTES."""
        if self.datatype == "BYTES":
            return split_items(self.data)
        if self.datatype in ("BOOL",):
            return [b != 0 for b in self.data]
        code, _ = _CODES[self.datatype]
        a = array.array(code)
        a.frombytes(self.data)
        return a.tolist()

    @staticmethod
    def of(name, datatype, shape, values):
        """A tensor from a list of numbers (or of bytes for BYTES)."""
        if datatype == "BYTES":
            data = b"".join(struct.pack("<I", len(v)) + v for v in values)
        elif datatype == "BOOL":
            data = bytes(1 if v else 0 for v in values)
        else:
            data = array.array(_CODES[datatype][0], values).tobytes()
        return Tensor(name, datatype, shape, data)


def split_items(data):
    items, i = [], 0
    while i < len(data):
        if i + 4 > len(data):
            raise ValueError("truncated BYTES length prefix")
        (n,) = struct.unpack_from("<I", data, i)
        i += 4
        if i + n > len(data):
            raise ValueError("BYTES item runs past the end")
        items.append(data[i:i + n])
        i += n
    return items


def read_frame(stream):
    """(header dict, blob bytes), or None at end of stream."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = struct.unpack("<I", head)
    body = stream.read(length)
    if len(body) < length or length < 4:
        raise EOFError("frame cut short")
    (hlen,) = struct.unpack_from("<I", body, 0)
    header = json.loads(body[4:4 + hlen].decode("utf-8"))
    return header, body[4 + hlen:]


def write_frame(stream, header, blob=b""):
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    stream.write(struct.pack("<II", 4 + len(h) + len(blob), len(h)))
    stream.write(h)
    stream.write(blob)
    stream.flush()


def _tensors(refs, blob):
    out = {}
    for r in refs:
        start, size = r["offset"], r["size"]
        if start < 0 or size < 0 or start + size > len(blob):
            raise ValueError("tensor %r lies outside the blob" % r["name"])
        out[r["name"]] = Tensor(r["name"], r["datatype"], r["shape"], blob[start:start + size])
    return out


def _protocol_stdout():
    """The process's stdout, moved to a descriptor of its own for the frames; descriptor 1 (and
    sys.stdout) then go to stderr, so that what the model prints reaches the log."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def serve(load, predict, stdin=None, stdout=None):
    """Loads the model, says ready, answers batches until stdin closes."""
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or _protocol_stdout()
    model_name = os.environ.get("MULTIPROC_MODEL", "model")
    version = int(os.environ.get("MULTIPROC_VERSION", "1"))
    try:
        model = load(model_name, version)
    except Exception as e:  # the server reports it as the load failure
        write_frame(stdout, {"type": "error", "message": "%s: %s" % (type(e).__name__, e)})
        return
    write_frame(stdout, {"type": "ready"})
    while True:
        frame = read_frame(stdin)
        if frame is None:
            return
        header, blob = frame
        if header.get("type") != "batch":
            raise SystemExit("expected a batch, got %r" % header.get("type"))
        batch, errors = [], {}
        for i, req in enumerate(header["requests"]):
            try:
                batch.append(_tensors(req["inputs"], blob))
            except Exception as e:
                errors[i] = str(e)
                batch.append(None)
        good = [b for b in batch if b is not None]
        # predict's own failure fails its batch, not the worker (the model stays loaded).
        try:
            results = list(predict(model, good)) if good else []
            if len(results) != len(good):
                raise ValueError("predict returned %d results for a batch of %d" % (len(results), len(good)))
        except Exception as e:
            results = [RuntimeError("predict failed: %s: %s" % (type(e).__name__, e))] * len(good)
        results = iter(results)
        responses, out = [], bytearray()
        for i, inputs in enumerate(batch):
            if inputs is None:
                responses.append({"error": errors[i]})
                continue
            result = next(results)
            if isinstance(result, Exception):
                responses.append({"error": str(result)})
                continue
            refs, start = [], len(out)
            try:
                for t in result:
                    refs.append({"name": t.name, "datatype": t.datatype, "shape": list(t.shape),
                                 "offset": len(out), "size": len(t.data)})
                    out += t.data
            except Exception as e:  # that request's answer only
                del out[start:]
                responses.append({"error": "predict's result is not a list of tensors: %s: %s"
                                  % (type(e).__name__, e)})
                continue
            responses.append({"outputs": refs})
        write_frame(stdout, {"type": "result", "id": header["id"], "responses": responses}, bytes(out))


# The demo model ---------------------------------------------------------------------------

def _demo_load(model, version):
    if os.environ.get("DEMO_FAIL_LOAD"):
        raise RuntimeError(os.environ["DEMO_FAIL_LOAD"])
    print("demo model %s loaded version %d (pid %d)" % (model, version, os.getpid()), file=sys.stderr, flush=True)
    return version


def _demo_predict(factor, batch):
    results = []
    for inputs in batch:
        try:
            outs = []
            for name, t in sorted(inputs.items()):
                if t.datatype == "BYTES":
                    vals = [v.upper() for v in t.values()]
                elif t.datatype in _CODES:
                    vals = [v * factor for v in t.values()]
                else:
                    raise ValueError("the demo model does not take %s" % t.datatype)
                outs.append(Tensor.of("output_" + name, t.datatype, t.shape, vals))
            results.append(outs)
        except Exception as e:
            results.append(e)
    return results


if __name__ == "__main__":
    serve(_demo_load, _demo_predict)
