"""CPython side of the manager workloads (bench/src/workloads/manager.rs).

manager_dict --batch N --clients C
    thousand set+get round trips per second on a Manager().dict(). With one
    client, this process does ``d[k] = v; d[k]`` N times per sample; with C
    clients, C processes (each its own keys) do it N times each, started and
    acknowledged over a Pipe. Every get must return the value just set.

manager_queue_tcp --batch N
    thousand put+get pairs per second through a queue.Queue served by a
    BaseManager on ('127.0.0.1', 0) with an auth key; the client is a second
    BaseManager that connect()s by address and key (as seed 002's workers
    do). Every item must come back in order.

manager_update --batch N --clients C
    thousand increments per second of one Manager().dict() entry by C
    processes. CPython has no atomic update through a proxy (``d[k] += 1`` is
    a get and a set that lose updates under contention), so each increment is
    ``with lock: d['count'] = d['count'] + 1`` with a Manager().Lock(). The
    final count must equal the increments made.

manager_dict_1mib --batch N --size S
    set+get pairs per second of an S-byte ``bytes`` value on a
    Manager().dict(), from this process: ``d[k] = v; d[k]`` for N keys per
    sample, each get compared with the value set (a new value per sample).

Children use the default start method (fork on Linux with 3.11).
"""

import multiprocessing as mp
import queue
import time
from multiprocessing.managers import BaseManager

import common

AUTHKEY = b"multiproc-bench"


def dict_client(conn, parent_end, d, ident):
    parent_end.close()
    rnd = 0
    while True:
        n = conn.recv()
        if n is None:
            return
        rnd += 1
        answer = n
        for i in range(n):
            k = ident * 1_000_000 + i
            d[k] = k ^ rnd
            if d[k] != k ^ rnd:
                answer = -1
        conn.send(answer)


def update_client(conn, parent_end, d, lock):
    parent_end.close()
    while True:
        n = conn.recv()
        if n is None:
            return
        for _ in range(n):
            with lock:
                d["count"] = d["count"] + 1
        conn.send(n)


def drive(clients, batch):
    """Sends each client its batch; returns the elapsed time."""
    t0 = time.perf_counter()
    for conn, _ in clients:
        conn.send(batch)
    for conn, _ in clients:
        if conn.recv() != batch:
            common.fail("a client answered a wrong count (a failed operation)")
    return time.perf_counter() - t0


def start_clients(count, target, extra):
    clients = []
    for ident in range(count):
        ours, theirs = mp.Pipe()
        p = mp.Process(target=target, args=(theirs, ours) + extra(ident), daemon=True)
        p.start()
        theirs.close()
        clients.append((ours, p))
    return clients


def stop_clients(clients):
    for conn, p in clients:
        conn.send(None)
        p.join(60)
        if p.exitcode != 0:
            common.fail(f"a client exited with {p.exitcode}")


def manager_dict(args):
    batch = args.batch
    manager = mp.Manager()
    d = manager.dict()
    state = {"round": 0, "done": 0}
    clients = start_clients(args.clients, dict_client, lambda ident: (d, ident)) if args.clients > 1 else []

    def sample():
        if clients:
            elapsed = drive(clients, batch)
            state["done"] += batch * len(clients)
            return batch * len(clients) / elapsed / 1e3
        state["round"] += 1
        rnd = state["round"]
        t0 = time.perf_counter()
        for k in range(batch):
            d[k] = k ^ rnd
            if d[k] != k ^ rnd:
                common.fail("a get did not return the value just set")
        elapsed = time.perf_counter() - t0
        state["done"] += batch
        return batch / elapsed / 1e3

    def finish():
        stop_clients(clients)
        manager.shutdown()
        return state["done"]

    common.serve(sample, finish)


class QueueServer(BaseManager):
    pass


class QueueClient(BaseManager):
    pass


_served = queue.Queue()


def _get_queue():
    return _served


def manager_queue_tcp(args):
    batch = args.batch
    QueueServer.register("get_queue", callable=_get_queue)
    QueueClient.register("get_queue")
    server = QueueServer(address=("127.0.0.1", 0), authkey=AUTHKEY)
    server.start()
    client = QueueClient(address=server.address, authkey=AUTHKEY)
    client.connect()
    q = client.get_queue()
    state = {"next": 0}

    def sample():
        t0 = time.perf_counter()
        for _ in range(batch):
            x = state["next"]
            q.put(x)
            if q.get() != x:
                common.fail("an item came back wrong")
            state["next"] += 1
        return batch / (time.perf_counter() - t0) / 1e3

    def finish():
        if q.qsize() != 0:
            common.fail("items left in the queue")
        server.shutdown()
        return state["next"]

    common.serve(sample, finish)


def manager_update(args):
    batch = args.batch
    manager = mp.Manager()
    d = manager.dict()
    d["count"] = 0
    lock = manager.Lock()
    clients = start_clients(args.clients, update_client, lambda ident: (d, lock))
    state = {"done": 0}

    def sample():
        elapsed = drive(clients, batch)
        state["done"] += batch * len(clients)
        return batch * len(clients) / elapsed / 1e3

    def finish():
        stop_clients(clients)
        if d["count"] != state["done"]:
            common.fail(f"the count is {d['count']} after {state['done']} increments (lost updates)")
        manager.shutdown()
        return state["done"]

    common.serve(sample, finish)


def manager_dict_1mib(args):
    batch, size = args.batch, args.size
    manager = mp.Manager()
    d = manager.dict()
    body = bytes(i % 251 for i in range(size))
    state = {"round": 0, "done": 0}

    def sample():
        state["round"] += 1
        value = bytes([state["round"] % 256]) + body[1:]
        t0 = time.perf_counter()
        for k in range(batch):
            d[k] = value
            if d[k] != value:
                common.fail("a get did not return the value just set")
        elapsed = time.perf_counter() - t0
        state["done"] += batch
        return batch / elapsed

    def finish():
        if len(d) != batch:
            common.fail("keys are missing from the dict")
        manager.shutdown()
        return state["done"]

    common.serve(sample, finish)


def main():
    p = common.parser(__doc__)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--size", type=int, default=1 << 20)
    args = p.parse_args()
    {
        "manager_dict": manager_dict,
        "manager_queue_tcp": manager_queue_tcp,
        "manager_update": manager_update,
        "manager_dict_1mib": manager_dict_1mib,
    }[args.workload](args)


if __name__ == "__main__":
    main()
