"""An external-command test model: returns every input as an output with the
same bytes ("in_X" becomes "out_X"), after sleeping argv[1] seconds per
batch. Built on multiproc-serve's reference worker (MULTIPROC_WORKER_DIR)."""

import os
import sys
import time

sys.path.insert(0, os.environ.get("MULTIPROC_WORKER_DIR", os.path.dirname(os.path.abspath(__file__))))
import multiproc_worker as mw  # noqa: E402

DELAY = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0


def rename(name):
    return "out_" + name[3:] if name.startswith("in_") else name


def predict(_, batch):
    if DELAY:
        time.sleep(DELAY)
    return [[mw.Tensor(rename(t.name), t.datatype, t.shape, t.data) for t in inputs.values()] for inputs in batch]


if __name__ == "__main__":
    mw.serve(lambda model, version: None, predict)
