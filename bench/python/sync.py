"""CPython side of the lock and shared-value workloads (bench/src/workloads/sync.rs).

lock_handoff --batch N
    microseconds per lock pass between two processes. Two
    multiprocessing.Lock objects, ping and pong, start held by the parent;
    each round trip the parent releases ping (the child, blocked in
    ping.acquire(), takes it: one pass) and acquires pong (which the child
    releases: a second pass). One sample = N round trips = 2N passes. At the
    end the child reports how many times it took ping, which must equal the
    round trips. With --cpu C, both processes run on CPU C only (the
    parent only while it samples), as a hand-over between two processes
    that share a CPU.
value_incr --batch N
    millions of increments per second of a multiprocessing.Value('q') by two
    processes, each doing ``with v.get_lock(): v.value += 1`` N times per
    sample (started and acknowledged over a Pipe). After each sample the
    value must equal the total number of increments (no lost updates).

lock_create --batch N
    microseconds to create a multiprocessing.Lock (a named POSIX semaphore,
    created and unlinked), acquire it without blocking and drop it. One
    sample = N locks.

Children use the default start method (fork on Linux with 3.11); the start
method does not enter the timed part.
"""

import multiprocessing as mp
import os
import time

import common


def handoff_child(ping, pong, stop, taken, cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    count = 0  # a local, as the Rust child's: a shared ctypes write would sit inside every pass
    while True:
        ping.acquire()
        if stop.value:
            taken.value = count
            return
        count += 1
        pong.release()


def lock_handoff(args):
    batch = args.batch
    ping, pong = mp.Lock(), mp.Lock()
    stop = mp.RawValue("b", 0)
    taken = mp.RawValue("q", 0)
    ping.acquire()
    pong.acquire()
    p = mp.Process(target=handoff_child, args=(ping, pong, stop, taken, args.cpu), daemon=True)
    p.start()
    state = {"round_trips": 0}
    everywhere = os.sched_getaffinity(0)

    def sample():
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        t0 = time.perf_counter()
        for _ in range(batch):
            ping.release()
            pong.acquire()
        elapsed = time.perf_counter() - t0
        os.sched_setaffinity(0, everywhere)
        state["round_trips"] += batch
        return elapsed / (2 * batch) * 1e6

    def finish():
        stop.value = 1
        ping.release()
        p.join(60)
        if p.exitcode != 0:
            common.fail(f"child exited with {p.exitcode}")
        if taken.value != state["round_trips"]:
            common.fail(f"the child took the lock {taken.value} times in {state['round_trips']} round trips")
        return state["round_trips"]

    common.serve(sample, finish)


def incr_child(conn, parent_end, counter):
    parent_end.close()
    while True:
        n = conn.recv()
        if n is None:  # stop (EOF would not come: a later fork inherits our parent end)
            return
        for _ in range(n):
            with counter.get_lock():
                counter.value += 1
        conn.send(n)


def value_incr(args):
    batch = args.batch
    counter = mp.Value("q", 0)
    ends = []
    for _ in range(2):
        ours, theirs = mp.Pipe()
        p = mp.Process(target=incr_child, args=(theirs, ours, counter), daemon=True)
        p.start()
        theirs.close()
        ends.append((ours, p))
    state = {"expected": 0}

    def sample():
        t0 = time.perf_counter()
        for conn, _ in ends:
            conn.send(batch)
        for conn, _ in ends:
            if conn.recv() != batch:
                common.fail("a child answered a wrong count")
        elapsed = time.perf_counter() - t0
        state["expected"] += 2 * batch
        if counter.value != state["expected"]:
            common.fail(f"counter is {counter.value}, expected {state['expected']} (lost updates)")
        return 2 * batch / elapsed / 1e6

    def finish():
        for conn, p in ends:
            conn.send(None)
            p.join(60)
            if p.exitcode != 0:
                common.fail(f"child exited with {p.exitcode}")
        return state["expected"]

    common.serve(sample, finish)


def lock_create(args):
    batch = args.batch
    state = {"created": 0}

    def sample():
        t0 = time.perf_counter()
        locks = [mp.Lock() for _ in range(batch)]
        usable = all(lock.acquire(False) for lock in locks)
        del locks
        elapsed = time.perf_counter() - t0
        if not usable:
            common.fail("a new lock was not free")
        state["created"] += batch
        return elapsed / batch * 1e6

    common.serve(sample, lambda: state["created"])


def main():
    p = common.parser(__doc__)
    p.add_argument("--batch", type=int, default=500, help="round trips or increments per process per sample")
    p.add_argument("--cpu", type=int, default=None, help="lock_handoff: run both processes on this CPU only")
    args = p.parse_args()
    if args.workload == "lock_handoff":
        lock_handoff(args)
    elif args.workload == "value_incr":
        value_incr(args)
    elif args.workload == "lock_create":
        lock_create(args)
    else:
        p.error(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
