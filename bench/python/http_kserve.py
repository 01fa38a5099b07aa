"""KServe's Python model server (the `kserve` package, ModelServer with one
worker) serving the bench's trivial model: output = input * 2, FP32 [n, 4],
over the Open Inference Protocol at /v2/models/double/infer. The multiproc
side serves the same computation as an ONNX Mul (demo/bench/double).

KServe's defaults write three or four log records per request: a latency line
(enable_latency_logging), timing-middleware lines on the "kserve.trace" logger
and uvicorn's access line. multiproc serve writes none, so they are turned off
here, as anyone measuring throughput would; the records would be formatted and
written (to /dev/null) on the one worker's event loop, inside every request.

Run by bench/src/workloads/http.rs with the bench's kserve virtual
environment: python http_kserve.py PORT GRPC_PORT"""

import logging
import sys

import kserve
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Double(Model):
    def __init__(self, name):
        super().__init__(name)
        self.load()

    def load(self):
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        y = x * 2
        out = InferOutput(name="output", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    http_port, grpc_port = int(sys.argv[1]), int(sys.argv[2])
    server = ModelServer(
        http_port=http_port, grpc_port=grpc_port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    # After ModelServer has configured KServe's logging; uvicorn (log_config
    # None, log_level None) leaves these levels alone when it starts.
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server.start([Double("double")])
