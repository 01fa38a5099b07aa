"""KServe's Python model server (the `kserve` package, ModelServer with one
worker) serving the bench's trivial model: output = input * 2, FP32 [n, 4],
over the Open Inference Protocol at /v2/models/double/infer. The multiproc
side serves the same computation as an ONNX Mul (demo/bench/double).

Run by bench/src/workloads/http.rs with the bench's kserve virtual
environment: python http_kserve.py PORT GRPC_PORT"""

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
    ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1, enable_grpc=False).start([Double("double")])
