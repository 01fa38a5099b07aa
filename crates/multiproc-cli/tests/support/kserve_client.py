"""Drives `multiproc serve` (the demo repository) with KServe's own Python
REST client (kserve.InferenceRESTClient, protocol v2): health, readiness,
inference with JSON and with binary tensors. argv: base URL, path of the
digits test set. Prints one line per check; exits non-zero on a failure."""

import asyncio
import sys

import digits_set
import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

base, test_set = sys.argv[1], sys.argv[2]


async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30, retries=0))
    assert await client.is_server_live(base) is True
    assert await client.is_server_ready(base) is True
    assert await client.is_model_ready(base, "digits") is True
    print("health ok")

    x, labels = digits_set.load(test_set)
    probs = {}
    for binary in (False, True):
        inp = InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = RequestedOutput("probabilities", parameters={"binary_data": binary})
        request = InferRequest(model_name="digits", infer_inputs=[inp], request_id="kreq-%s" % binary, request_outputs=[out])
        result = await client.infer(base, request, model_name="digits")
        assert result.id == "kreq-%s" % binary, result.id
        p = result.outputs[0].as_numpy()
        accuracy = digits_set.check(p, labels)
        probs[binary] = p
        print("digits binary=%s accuracy %.3f" % (binary, accuracy))
    assert np.array_equal(probs[False].view(np.uint32), probs[True].view(np.uint32)), "JSON and binary differ"
    print("digits json == binary bit for bit")

    for binary in (False, True):
        inp = InferInput("text", [2], "BYTES")
        inp.set_data_from_numpy(np.array([b"hello big world", "h\u00e9 x".encode()], dtype=np.object_), binary_data=binary)
        request = InferRequest(model_name="text", infer_inputs=[inp], parameters={"binary_data_output": binary})
        result = await client.infer(base, request, model_name="text")
        outputs = {o.name: o for o in result.outputs}
        upper = [v if isinstance(v, bytes) else v.encode() for v in outputs["upper"].as_numpy().tolist()]
        assert upper == [b"HELLO BIG WORLD", "H\u00c9 X".encode()], upper
        assert outputs["words"].as_numpy().tolist() == [3, 2], outputs["words"].data
        print("text binary=%s ok" % binary)

    try:
        await client.infer(base, InferRequest(model_name="nope", infer_inputs=[inp]), model_name="nope")
        raise AssertionError("unknown model accepted")
    except httpx.HTTPStatusError as e:
        assert e.response.status_code == 404 and "unknown model 'nope'" in str(e), str(e)
        print("error surfaced: %s" % e)
    await client.close()
    print("OK")


asyncio.run(main())
