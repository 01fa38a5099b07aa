"""Drives `multiproc serve --allow-client-shm` (the demo repository) with Triton's
own Python HTTP client through system shared memory: the digits input read
from a region, the probabilities written to another, the same bits as a plain
request. argv: host:port. Prints one line per check; exits non-zero on a failure."""

import os
import sys

import numpy as np
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

url = sys.argv[1]
client = httpclient.InferenceServerClient(url=url, network_timeout=30.0, connection_timeout=30.0)
assert "system_shared_memory" in client.get_server_metadata()["extensions"]
x = np.random.RandomState(0).rand(4, 64).astype(np.float32)
out_size = 4 * 10 * 4
keys = ["/multiproc_triton_in_%d" % os.getpid(), "/multiproc_triton_out_%d" % os.getpid()]
in_handle = shm.create_shared_memory_region("digits_in", keys[0], x.nbytes)
out_handle = shm.create_shared_memory_region("digits_out", keys[1], out_size)
try:
    shm.set_shared_memory_region(in_handle, [x])
    client.register_system_shared_memory("digits_in", keys[0], x.nbytes)
    client.register_system_shared_memory("digits_out", keys[1], out_size)
    status = client.get_system_shared_memory_status()
    assert sorted((r["name"], r["key"], r["byte_size"]) for r in status) == [
        ("digits_in", keys[0], x.nbytes), ("digits_out", keys[1], out_size)], status
    print("registered ok")
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_shared_memory("digits_in", x.nbytes)
    out = httpclient.InferRequestedOutput("probabilities", binary_data=True)
    out.set_shared_memory("digits_out", out_size)
    result = client.infer("digits", [inp], outputs=[out])
    shape = result.get_output("probabilities")["shape"]
    from_shm = shm.get_contents_as_numpy(out_handle, np.float32, shape)
    plain_in = httpclient.InferInput("input", list(x.shape), "FP32")
    plain_in.set_data_from_numpy(x, binary_data=True)
    plain = client.infer("digits", [plain_in]).as_numpy("probabilities")
    assert from_shm.shape == plain.shape == (4, 10), (from_shm.shape, plain.shape)
    assert np.array_equal(from_shm.view(np.uint32), plain.view(np.uint32)), "shared memory and plain differ"
    print("shared memory == plain bit for bit")
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == [], client.get_system_shared_memory_status()
    print("OK")
finally:
    shm.destroy_shared_memory_region(in_handle)
    shm.destroy_shared_memory_region(out_handle)
