"""The demo text model of `multiproc serve`: an external-command model in
Python's standard library only, built on multiproc-serve's reference worker
(multiproc_worker.py, unpacked next to this file), which speaks the framed
stdin/stdout protocol.

Input  "text"  BYTES [n]: UTF-8 strings.
Output "upper" BYTES [n]: each string upper-cased.
Output "words" INT32 [n]: the number of whitespace-separated words of each.
"""

import os
import sys

try:
    import multiproc_worker as mw
except ImportError:  # run from the source tree: the worker is in crates/multiproc-serve/python
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", "..", "..", "..", "multiproc-serve", "python"))
    import multiproc_worker as mw


def load(model, version):
    return None


def predict(_, batch):
    results = []
    for inputs in batch:
        text = inputs.get("text")
        if text is None or text.datatype != "BYTES":
            results.append(ValueError("expected a BYTES input called 'text'"))
            continue
        strings = [s.decode("utf-8", errors="replace") for s in text.values()]
        upper = [s.upper().encode() for s in strings]
        words = [len(s.split()) for s in strings]
        results.append([
            mw.Tensor.of("upper", "BYTES", text.shape, upper),
            mw.Tensor.of("words", "INT32", text.shape, words),
        ])
    return results


if __name__ == "__main__":
    mw.serve(load, predict)
