"""CPython side of the pool workloads (bench/src/workloads/pool.rs).

pool_map --items N [--chunksize C]
    million items per second of Pool(2).map(square, range(N)) (chunksize None:
    Python's default ceil(N / (4 * 2)); 1: one task per message). Every
    result is compared with i * i.
pool_1mib --buffers N --full-check-batches K
    GB/s (10^9 bytes/s) of 1 MiB bytes objects sent to the workers of
    Pool(2) through imap(identity, buffers, chunksize=1), each coming back
    whole; the figure counts the bytes sent one way. Each buffer carries its
    sequence number in its first and last 8 bytes; every returned buffer's
    stamps and a few bytes are checked, every byte during the first K
    samples. The buffers are built before the timed part.

pool_worker_lost
    microseconds from SIGKILL of the worker running a task to the error on
    that task's future, with concurrent.futures.ProcessPoolExecutor(2)
    (multiprocessing.Pool never reports a lost worker: its result waits for
    ever). A killed worker breaks the whole executor, so each sample starts a
    new one (untimed) and waits until its task runs; the figure is checked
    to be a BrokenProcessPool.

The pool (start method: the default, fork on Linux with 3.11) is started once,
before the first sample, and warmed up by the harness's untimed samples.
"""

import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import multiprocessing as mp

import common

MIB = 1 << 20


def square(x):
    return x * x


def identity(b):
    return b


def pattern():
    # Same bytes as the Rust side: byte i is i % 251.
    return (bytes(range(251)) * (MIB // 251 + 1))[:MIB]


def pool_map(args):
    pool = mp.Pool(2)
    n, chunksize = args.items, args.chunksize
    want = [i * i for i in range(n)]
    state = {"checked": 0}

    def sample():
        t0 = time.perf_counter()
        got = pool.map(square, range(n), chunksize=chunksize)
        elapsed = time.perf_counter() - t0
        if got != want:
            common.fail("map results differ from i * i")
        state["checked"] += n
        return n / elapsed / 1e6

    def finish():
        pool.close()
        pool.join()
        return state["checked"]

    common.serve(sample, finish)


def pool_1mib(args):
    pool = mp.Pool(2)
    n = args.buffers
    pat = pattern()
    state = {"seq": 0, "samples": 0, "checked": 0}

    def sample():
        seq0 = state["seq"]
        bufs = []
        for k in range(n):
            stamp = (seq0 + k).to_bytes(8, "little")
            bufs.append(stamp + pat[8:-8] + stamp)
        full = state["samples"] < args.full_check_batches
        t0 = time.perf_counter()
        for k, back in enumerate(pool.imap(identity, bufs, chunksize=1)):
            stamp = (seq0 + k).to_bytes(8, "little")
            if len(back) != MIB or back[:8] != stamp or back[-8:] != stamp:
                common.fail(f"buffer {seq0 + k} came back wrong")
            if full:
                if back[8:-8] != pat[8:-8]:
                    common.fail(f"buffer {seq0 + k} content differs")
            elif any(back[i] != pat[i] for i in (8, 4099, MIB // 2 + 7, MIB - 9)):
                common.fail(f"buffer {seq0 + k} content differs")
        elapsed = time.perf_counter() - t0
        state["seq"] += n
        state["samples"] += 1
        state["checked"] += n
        return n * MIB / elapsed / 1e9

    def finish():
        pool.close()
        pool.join()
        return state["checked"]

    common.serve(sample, finish)


def report_and_sleep(q):
    q.put(os.getpid())
    time.sleep(60)


def pool_worker_lost(args):
    manager = mp.Manager()
    state = {"checked": 0}

    def sample():
        q = manager.Queue()
        ex = ProcessPoolExecutor(2)
        fut = ex.submit(report_and_sleep, q)
        pid = q.get(timeout=60)
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        try:
            fut.result(timeout=60)
            common.fail("the task of a killed worker returned")
        except BrokenProcessPool:
            pass
        elapsed = time.perf_counter() - t0
        ex.shutdown(wait=True, cancel_futures=True)
        state["checked"] += 1
        return elapsed * 1e6

    def finish():
        manager.shutdown()
        return state["checked"]

    common.serve(sample, finish)


def main():
    p = common.parser(__doc__)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--chunksize", type=int, default=None)
    p.add_argument("--buffers", type=int, default=256)
    p.add_argument("--full-check-batches", type=int, default=1)
    args = p.parse_args()
    if args.workload == "pool_map":
        pool_map(args)
    elif args.workload == "pool_1mib":
        pool_1mib(args)
    elif args.workload == "pool_worker_lost":
        pool_worker_lost(args)
    else:
        p.error(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
