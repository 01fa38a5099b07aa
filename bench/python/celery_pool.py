"""Celery on Redis, the peer of the redis_pool workloads: one Celery worker
(prefork pool, --concurrency N) on the harness's Redis server, Redis as
broker and result backend; each sample submits tasks and waits for every
result, checking each.

    python celery_pool.py redis_pool/chunk1 --url redis://127.0.0.1:PORT/ --processes 2 \
        --tasks 300 --chunksize 1 --kind tiny

Run with the harness's virtual environment (celery[redis] installed)."""

import os
import subprocess
import sys
import time

from common import fail, parser, serve


def main():
    p = parser(__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--processes", type=int, required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--chunksize", type=int, default=1)
    p.add_argument("--kind", choices=["tiny", "cpu"], required=True)
    p.add_argument("--cpu-us", type=int, default=5000)
    args = p.parse_args()

    queue = "q-" + args.workload.replace("/", "-")
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["MP_CELERY_URL"] = args.url
    os.environ["MP_CELERY_QUEUE"] = queue
    sys.path.insert(0, here)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool", "prefork",
         "--concurrency", str(args.processes), "--loglevel", "WARNING", "-Q", queue,
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=here, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    import celery_tasks

    checked = [0]

    def stop():
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    try:
        # Ready when a task comes back (the worker's first start is slow).
        if celery_tasks.tiny.delay(41).get(timeout=120) != 42:
            fail("tiny(41) != 42")
    except Exception as e:  # noqa: BLE001 - any failure to start is a failed check
        stop()
        fail(f"the Celery worker did not answer: {e!r}")

    n = args.tasks

    def sample():
        t = time.perf_counter()
        if args.kind == "cpu":
            results = [celery_tasks.burn.delay(i, args.cpu_us) for i in range(n)]
            got = [r.get(timeout=300) for r in results]
            want = list(range(n))
        elif args.chunksize == 1:
            results = [celery_tasks.tiny.delay(i) for i in range(n)]
            got = [r.get(timeout=300) for r in results]
            want = [i + 1 for i in range(n)]
        else:
            res = celery_tasks.tiny.chunks(((i,) for i in range(n)), args.chunksize).apply_async()
            got = [y for part in res.get(timeout=300) for y in part]
            want = [i + 1 for i in range(n)]
        took = time.perf_counter() - t
        if got != want:
            fail(f"results differ: {got[:5]}... != {want[:5]}...")
        checked[0] += n
        return n / took

    def finish():
        stop()
        return checked[0]

    serve(sample, finish)


if __name__ == "__main__":
    main()
