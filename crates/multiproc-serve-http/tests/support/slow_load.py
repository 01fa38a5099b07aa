"""A test model whose load is slow: it sleeps argv[1] seconds before it says
it is ready, then returns each input as an output of the same bytes ("x"
becomes "y"). Built on multiproc-serve's reference worker, found in the
directory argv[2]."""

import sys
import time

sys.path.insert(0, sys.argv[2])
import multiproc_worker as mw  # noqa: E402

LOAD_SECONDS = float(sys.argv[1])


def load(model, version):
    time.sleep(LOAD_SECONDS)


def predict(_, batch):
    return [[mw.Tensor("y", t.datatype, t.shape, t.data) for t in inputs.values()] for inputs in batch]


if __name__ == "__main__":
    mw.serve(load, predict)
