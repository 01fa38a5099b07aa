"""A test model that holds every call until the file argv[1] exists (at
most 60 seconds, so that a failed test leaves nothing waiting), then answers
each request with the first byte of its input "x" as "y". Built on
multiproc-serve's reference worker, found in the directory argv[2]."""

import os
import sys
import time

sys.path.insert(0, sys.argv[2])
import multiproc_worker as mw  # noqa: E402

RELEASE = sys.argv[1]
LONGEST_HOLD = 60.0


def predict(_, batch):
    deadline = time.monotonic() + LONGEST_HOLD
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [[mw.Tensor("y", "UINT8", [1], inputs["x"].data[:1])] for inputs in batch]


if __name__ == "__main__":
    mw.serve(lambda model, version: None, predict)
