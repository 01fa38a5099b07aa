"""CPython side of the process workloads (bench/src/workloads/process.rs).

spawn_join --method {fork,spawn,forkserver}
    One sample: microseconds for ctx.Process(target=tiny, args=(7,)).start()
    + join(); the child runs a tiny function. Each join is checked for exit
    code 0 (a Python Process cannot return the function's value).
"""

import multiprocessing as mp
import time

import common


def tiny(x):
    return x * 3 + 1


def spawn_join(args):
    ctx = mp.get_context(args.method)
    checked = 0

    def sample():
        nonlocal checked
        t0 = time.perf_counter()
        p = ctx.Process(target=tiny, args=(7,))
        p.start()
        p.join()
        elapsed = time.perf_counter() - t0
        if p.exitcode != 0:
            common.fail(f"child exited with {p.exitcode}")
        checked += 1
        return elapsed * 1e6

    common.serve(sample, lambda: checked)


def main():
    p = common.parser(__doc__)
    p.add_argument("--method", choices=["fork", "spawn", "forkserver"], required=True)
    args = p.parse_args()
    if args.workload == "spawn_join":
        spawn_join(args)
    else:
        p.error(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
