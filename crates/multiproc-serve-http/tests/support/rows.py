"""A test model that answers every row with the number of rows of the model
call it ran in (the batch dimension summed over the call's requests), after
sleeping argv[1] seconds per call (so requests queue meanwhile). Built on
multiproc-serve's reference worker, found in the directory argv[2]."""

import sys
import time

sys.path.insert(0, sys.argv[2])
import multiproc_worker as mw  # noqa: E402

DELAY = float(sys.argv[1])


def predict(_, batch):
    time.sleep(DELAY)
    rows = sum(inputs["x"].shape[0] for inputs in batch)
    return [[mw.Tensor.of("y", "FP32", inputs["x"].shape, [float(rows)] * inputs["x"].count())] for inputs in batch]


if __name__ == "__main__":
    mw.serve(lambda model, version: None, predict)
