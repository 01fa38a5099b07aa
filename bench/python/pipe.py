"""CPython side of the pipe workloads (bench/src/workloads/pipe.rs).

pipe_rtt --mode {bytes,typed} --batch N
    One sample: N round trips of an 8-byte message parent -> child -> parent
    over multiprocessing.Pipe() (duplex), in microseconds per round trip.
    "bytes" uses send_bytes/recv_bytes, "typed" send/recv of an int. Each
    echo is compared with what was sent.
pipe_1mib --batch N --full-check-batches K
    One sample: N messages of 1 MiB parent -> child with send_bytes, then an
    empty message asks the child for an acknowledgement (its count), in GB/s
    (10^9 bytes/s). The child checks the length, the sequence stamps and a
    few bytes of every message, and every byte of the first K batches (the
    warm-up).

Children use the default start method (fork on Linux with 3.11); the start
method does not enter the timed part.
"""

import multiprocessing as mp
import time

import common

MIB = 1 << 20


def pattern():
    # Same bytes as the Rust side: byte i is i % 251.
    return (bytes(range(251)) * (MIB // 251 + 1))[:MIB]


def echo_bytes(conn, parent_end):
    parent_end.close()  # a forked child inherits it; keep it and EOF never comes
    while True:
        try:
            m = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(m)


def echo_typed(conn, parent_end):
    parent_end.close()
    while True:
        try:
            v = conn.recv()
        except EOFError:
            return
        conn.send(v)


def check_message(msg, seq, full, pat):
    if len(msg) != MIB:
        return f"message {seq} has {len(msg)} bytes"
    stamp = seq.to_bytes(8, "little")
    if msg[:8] != stamp or msg[-8:] != stamp:
        return f"message {seq} carries wrong stamps"
    if full:
        if msg[8:-8] != pat[8:-8]:
            return f"message {seq} content differs"
    elif any(msg[i] != pat[i] for i in (8, 4099, MIB // 2 + 7, MIB - 9)):
        return f"message {seq} content differs"
    return None


def sink_bytes(conn, parent_end, full_check_batches):
    parent_end.close()
    pat = pattern()
    seq = batch = in_batch = 0
    while True:
        try:
            msg = conn.recv_bytes()
        except EOFError:
            return
        if not msg:
            conn.send_bytes(in_batch.to_bytes(8, "little"))
            batch += 1
            in_batch = 0
            continue
        err = check_message(msg, seq, batch < full_check_batches, pat)
        if err:
            raise SystemExit(f"check failed: {err}")
        seq += 1
        in_batch += 1


def start(target, *args):
    ours, theirs = mp.Pipe()
    p = mp.Process(target=target, args=(theirs, ours, *args), daemon=True)
    p.start()
    theirs.close()
    return ours, p


def finish(conn, p):
    conn.close()
    p.join(60)
    if p.exitcode is None:
        p.kill()
        p.join()
        common.fail("child did not finish within 60 s after end of stream")
    if p.exitcode != 0:
        common.fail(f"child exited with {p.exitcode}")


def pipe_rtt(args):
    batch = args.batch
    conn, p = start(echo_bytes if args.mode == "bytes" else echo_typed)
    state = {"seq": 0, "checked": 0}

    def sample_bytes():
        seq = state["seq"]
        t0 = time.perf_counter()
        for _ in range(batch):
            seq += 1
            m = seq.to_bytes(8, "little")
            conn.send_bytes(m)
            if conn.recv_bytes() != m:
                common.fail(f"echo of message {seq} differs")
        elapsed = time.perf_counter() - t0
        state["seq"] = seq
        state["checked"] += batch
        return elapsed / batch * 1e6

    def sample_typed():
        seq = state["seq"]
        t0 = time.perf_counter()
        for _ in range(batch):
            seq += 1
            conn.send(seq)
            if conn.recv() != seq:
                common.fail(f"echo of {seq} differs")
        elapsed = time.perf_counter() - t0
        state["seq"] = seq
        state["checked"] += batch
        return elapsed / batch * 1e6

    def finish_all():
        finish(conn, p)
        return state["checked"]

    common.serve(sample_bytes if args.mode == "bytes" else sample_typed, finish_all)


def pipe_1mib(args):
    batch = args.batch
    conn, p = start(sink_bytes, args.full_check_batches)
    buf = bytearray(pattern())
    state = {"seq": 0, "checked": 0}
    want_ack = batch.to_bytes(8, "little")

    def sample():
        seq = state["seq"]
        t0 = time.perf_counter()
        for _ in range(batch):
            stamp = seq.to_bytes(8, "little")
            buf[:8] = stamp
            buf[-8:] = stamp
            conn.send_bytes(buf)
            seq += 1
        conn.send_bytes(b"")
        ack = conn.recv_bytes()
        elapsed = time.perf_counter() - t0
        if ack != want_ack:
            common.fail(f"child acknowledged {ack!r}")
        state["seq"] = seq
        state["checked"] += batch
        return batch * MIB / elapsed / 1e9

    def finish_all():
        finish(conn, p)
        return state["checked"]

    common.serve(sample, finish_all)


def main():
    p = common.parser(__doc__)
    p.add_argument("--mode", choices=["bytes", "typed"], default="bytes")
    p.add_argument("--batch", type=int, default=100, help="round trips or messages per sample")
    p.add_argument("--full-check-batches", type=int, default=1, help="pipe_1mib: batches checked byte for byte")
    args = p.parse_args()
    if args.workload == "pipe_rtt":
        pipe_rtt(args)
    elif args.workload == "pipe_1mib":
        pipe_1mib(args)
    else:
        p.error(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
