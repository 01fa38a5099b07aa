"""CPython side of the queue workloads (bench/src/workloads/queue.rs).

queue_1to1 --items N --pairs 1
queue_2to2 --items N --pairs 2
    million items per second moved through one ``multiprocessing.Queue()`` from
    ``pairs`` producer processes to ``pairs`` consumer processes. One sample:
    each producer puts N / pairs ints (producer ``id`` puts id, id + pairs,
    ...; so a sample's items are the next N integers), the consumers get them
    all; timed from the requests to the consumers' answers. With one pair the
    consumer checks that the items come in order; with two, each producer puts
    a sentinel (None) after its items and each consumer stops at its first
    sentinel. The parent checks the count and the sum of the items got.

queue_1mib --items N --size S
queue_4mib --items N --size S
    GB/s of S-byte ``bytes`` items through one ``multiprocessing.Queue()``
    from this process to one consumer process. One sample: the consumer is
    asked for N items, this process puts N items (each a copy of one buffer
    with its number in its first 8 bytes, little-endian, and 0x5a last), the
    consumer checks each item's length, number and last byte and answers;
    timed from the request to the answer.

Children use the default start method (fork on Linux with 3.11); the start
method does not enter the timed part.
"""

import multiprocessing as mp
import time

import common


def producer(ctl, q, ident, stride, sentinel):
    nxt = ident
    total = 0
    while True:
        n = ctl.recv()
        if n is None:
            ctl.send(total)
            return
        for _ in range(n):
            q.put(nxt)
            nxt += stride
        if sentinel:
            q.put(None)
        total += n
        ctl.send(n)


def consumer(ctl, q, exact):
    expected = 0
    total = 0
    while True:
        n = ctl.recv()
        if n is None:
            ctl.send(total)
            return
        count = 0
        s = 0
        while True:
            if exact and count == n:
                break
            v = q.get()
            if v is None:
                break
            if exact and v != expected:
                count = -1
                break
            expected += 1
            count += 1
            s += v
        total += max(count, 0)
        ctl.send((count, s))


def flow(args):
    pairs = args.pairs
    items = args.items
    per_producer = items // pairs
    q = mp.Queue()
    consumers, producers = [], []
    for ident in range(pairs):
        ours, theirs = mp.Pipe()
        p = mp.Process(target=consumer, args=(theirs, q, pairs == 1), daemon=True)
        p.start()
        consumers.append((ours, p))
        ours, theirs = mp.Pipe()
        p = mp.Process(target=producer, args=(theirs, q, ident, pairs, pairs > 1), daemon=True)
        p.start()
        producers.append((ours, p))
    state = {"sent": 0}

    def sample():
        t0 = time.perf_counter()
        for conn, _ in consumers:
            conn.send(per_producer)
        for conn, _ in producers:
            conn.send(per_producer)
        count = 0
        total = 0
        for conn, _ in consumers:
            c, s = conn.recv()
            if c < 0:
                common.fail("a consumer got items out of order")
            count += c
            total += s
        elapsed = time.perf_counter() - t0
        for conn, _ in producers:
            if conn.recv() != per_producer:
                common.fail("a producer answered a wrong count")
        first = state["sent"]
        state["sent"] += items
        if count != items:
            common.fail(f"consumers got {count} items, {items} were put")
        if total != sum(range(first, first + items)):
            common.fail("the items got differ from the items put")
        return items / elapsed / 1e6

    def finish():
        got = 0
        for conn, p in producers:
            conn.send(None)
            if conn.recv() != state["sent"] // pairs:
                common.fail("a producer put a wrong number of items")
            p.join(60)
        for conn, p in consumers:
            conn.send(None)
            got += conn.recv()
            p.join(60)
        for _, p in producers + consumers:
            if p.exitcode != 0:
                common.fail(f"child exited with {p.exitcode}")
        if got != state["sent"]:
            common.fail(f"consumers got {got} items, {state['sent']} were put")
        return got

    common.serve(sample, finish)


def large_consumer(ctl, q, size):
    expected = 0
    total = 0
    while True:
        n = ctl.recv()
        if n is None:
            ctl.send(total)
            return
        answer = n
        for _ in range(n):
            item = q.get()
            if len(item) != size or int.from_bytes(item[:8], "little") != expected or item[-1] != 0x5A:
                answer = -1
            expected += 1
        total += n
        ctl.send(answer)


def large(args):
    items, size = args.items, args.size
    q = mp.Queue()
    ours, theirs = mp.Pipe()
    p = mp.Process(target=large_consumer, args=(theirs, q, size), daemon=True)
    p.start()
    body = bytearray(i % 251 for i in range(size))
    body[-1] = 0x5A
    state = {"sent": 0}

    def sample():
        t0 = time.perf_counter()
        ours.send(items)
        for _ in range(items):
            item = bytearray(body)
            item[:8] = state["sent"].to_bytes(8, "little")
            q.put(bytes(item))
            state["sent"] += 1
        answer = ours.recv()
        elapsed = time.perf_counter() - t0
        if answer != items:
            common.fail("the consumer got a wrong item")
        return items * size / elapsed / 1e9

    def finish():
        ours.send(None)
        got = ours.recv()
        p.join(60)
        if p.exitcode != 0:
            common.fail(f"child exited with {p.exitcode}")
        if got != state["sent"]:
            common.fail(f"the consumer got {got} items, {state['sent']} were put")
        return got

    common.serve(sample, finish)


def main():
    p = common.parser(__doc__)
    p.add_argument("--items", type=int, default=200_000, help="items per sample, all producers together")
    p.add_argument("--pairs", type=int, default=1, help="producer processes (and as many consumers)")
    p.add_argument("--size", type=int, default=1 << 20, help="bytes per item (queue_1mib, queue_4mib)")
    args = p.parse_args()
    if args.workload in ("queue_1to1", "queue_2to2"):
        flow(args)
    elif args.workload in ("queue_1mib", "queue_4mib"):
        large(args)
    else:
        p.error(f"unknown workload {args.workload!r}")


if __name__ == "__main__":
    main()
