"""The demo text model of `multiproc serve`: an external-command model in
Python's standard library only, speaking multiproc-serve's framed protocol on
stdin/stdout (see multiproc_serve::command::protocol).

Input  "text"  BYTES [n]: UTF-8 strings.
Output "upper" BYTES [n]: each string upper-cased.
Output "words" INT32 [n]: the number of whitespace-separated words of each.
"""

import json
import struct
import sys


def read_exact(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(stream):
    head = read_exact(stream, 4)
    if head is None:
        return None
    (frame_len,) = struct.unpack("<I", head)
    frame = read_exact(stream, frame_len)
    if frame is None or frame_len < 4:
        return None
    (header_len,) = struct.unpack("<I", frame[:4])
    header = json.loads(frame[4 : 4 + header_len])
    return header, frame[4 + header_len :]


def write_frame(stream, header, blob=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    stream.write(struct.pack("<II", 4 + len(h) + len(blob), len(h)) + h + blob)
    stream.flush()


def split_bytes(data):
    items, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("<I", data, i)
        items.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return items


def predict(inputs, blob):
    text = next((t for t in inputs if t["name"] == "text"), None)
    if text is None or text["datatype"] != "BYTES":
        raise ValueError("expected a BYTES input called 'text'")
    items = split_bytes(blob[text["offset"] : text["offset"] + text["size"]])
    strings = [i.decode("utf-8", errors="replace") for i in items]
    upper = b"".join(struct.pack("<I", len(b)) + b for b in (s.upper().encode() for s in strings))
    words = struct.pack("<%di" % len(strings), *(len(s.split()) for s in strings))
    return [("upper", "BYTES", upper), ("words", "INT32", words)], text["shape"]


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    write_frame(stdout, {"type": "ready"})
    while True:
        msg = read_frame(stdin)
        if msg is None:
            return
        header, blob = msg
        out_blob = bytearray()
        responses = []
        for request in header["requests"]:
            try:
                outputs, shape = predict(request["inputs"], blob)
                refs = []
                for name, datatype, data in outputs:
                    refs.append({"name": name, "datatype": datatype, "shape": shape, "offset": len(out_blob), "size": len(data)})
                    out_blob += data
                responses.append({"outputs": refs})
            except Exception as e:  # one bad request fails alone
                responses.append({"error": str(e)})
        write_frame(stdout, {"type": "result", "id": header["id"], "responses": responses}, bytes(out_blob))


if __name__ == "__main__":
    main()
