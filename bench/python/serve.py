"""CPython side of the serving workloads (bench/src/workloads/serve.rs): seed 004's
asynchronous inference pipeline written with multiprocessing, in the seed's own design, made
finite.

The seed (seeds/004_*.txt): ``c_pool_size`` receive processes each read their own queue and
put ``'receive_' + info`` on a cache queue; a cache process collects items into a batch and
puts it on an infer queue when it holds 128 items or 1 s has passed; a predict process that
built its model *inside itself* turns each batch into ``['modelpredict_' + e for e in batch]``
on a result queue; the parent routes each result back to its request. Made finite here:

- requests carry an id; the parent keeps at most ``--window`` requests in flight and routes
  every result by id (the seed's ``whole_queue``), checking each answer;
- the cache sends a batch when it holds 128 items or when its input queue is empty (an idle
  dispatch, like the Rust server's default, instead of waiting up to 1 s for a partial batch:
  otherwise every sample would end with a one-second wait and a lone request would take 1 s);
- the model sleeps for nothing (the seed's ``time.sleep(random.uniform(0.1, 0.5))`` stands
  for model time; the benchmark measures the serving machinery with a trivial model).

serve_pipeline --requests N --window W --figure rate|p50|p99
    N requests through the pipeline, W in flight; ``rate`` = million requests/s, ``p50`` /
    ``p99`` = percentile of the per-request latency (send to routed result) in µs.
serve_overhead --requests N --figure p50|p99
    N requests one at a time (low load); the figure is the percentile of the latency minus
    the median time of calling the model function directly in this process, in µs.
"""

import multiprocessing as mp
import queue as queue_mod
import time

import common

BATCH = 128
PREPROCESS = 2


def receive(inbox, cache_queue):
    while True:
        item = inbox.get()
        if item is None:
            cache_queue.put(None)
            return
        ident, info = item
        cache_queue.put((ident, "receive_" + info))


def cache(cache_queue, infer_queue, producers):
    caches = []
    ended = 0
    while True:
        item = cache_queue.get()
        if item is None:
            ended += 1
            if ended == producers:
                if caches:
                    infer_queue.put(caches)
                infer_queue.put(None)
                return
            continue
        caches.append(item)
        if len(caches) >= BATCH or cache_queue.empty():
            infer_queue.put(caches)
            caches = []


class Model:
    """The seed's model: built in the predict process."""

    def __call__(self, batch):
        return ["modelpredict_" + e for e in batch]


def predict(infer_queue, result_queue):
    model = Model()
    while True:
        batch = infer_queue.get()
        if batch is None:
            result_queue.put(None)
            return
        idents = [i for i, _ in batch]
        result_queue.put(list(zip(idents, model([e for _, e in batch]))))


class Pipeline:
    def __init__(self):
        self.inboxes = [mp.Queue() for _ in range(PREPROCESS)]
        cache_queue, infer_queue, self.results = mp.Queue(), mp.Queue(), mp.Queue()
        self.procs = [mp.Process(target=receive, args=(q, cache_queue), daemon=True) for q in self.inboxes]
        self.procs.append(mp.Process(target=cache, args=(cache_queue, infer_queue, PREPROCESS), daemon=True))
        self.procs.append(mp.Process(target=predict, args=(infer_queue, self.results), daemon=True))
        for p in self.procs:
            p.start()
        self.next_id = 0
        self.checked = 0

    def run(self, n, window):
        """Sends n requests, at most `window` in flight; returns (seconds, latencies in s)."""
        sent_at = {}
        latencies = []
        first = self.next_id
        end = first + n
        t0 = time.perf_counter()
        while self.next_id < end or sent_at:
            while self.next_id < end and len(sent_at) < window:
                ident = self.next_id
                self.next_id += 1
                sent_at[ident] = time.perf_counter()
                self.inboxes[ident % PREPROCESS].put((ident, "msg%d" % ident))
            for ident, res in self.results.get(timeout=60):
                now = time.perf_counter()
                if res != "modelpredict_receive_msg%d" % ident:
                    common.fail("request %d got %r" % (ident, res))
                latencies.append(now - sent_at.pop(ident))
                self.checked += 1
        return time.perf_counter() - t0, latencies

    def close(self):
        for q in self.inboxes:
            q.put(None)
        while True:
            try:
                if self.results.get(timeout=30) is None:
                    break
            except queue_mod.Empty:
                common.fail("the pipeline did not shut down")
        for p in self.procs:
            p.join(30)
            if p.exitcode != 0:
                common.fail("pipeline process exited with %r" % p.exitcode)
        return self.checked


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def direct_call_median():
    model = Model()
    times = []
    for i in range(2000):
        t = time.perf_counter()
        model(["receive_msg%d" % i])
        times.append(time.perf_counter() - t)
    return percentile(times, 0.5)


def main():
    p = common.parser(__doc__)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--window", type=int, default=1)
    p.add_argument("--figure", choices=["rate", "p50", "p99"], required=True)
    args = p.parse_args()
    pipeline = Pipeline()
    pipeline.run(16, 1)  # the processes are up and the path is warm
    direct = direct_call_median() if args.workload == "serve_overhead" else 0.0

    def sample():
        if args.workload == "serve_pipeline":
            took, lat = pipeline.run(args.requests, args.window)
            if args.figure == "rate":
                return args.requests / took / 1e6
            return percentile(lat, 0.5 if args.figure == "p50" else 0.99) * 1e6
        if args.workload == "serve_overhead":
            lat = []
            for _ in range(args.requests):
                _, one = pipeline.run(1, 1)
                lat.extend(one)
            return max(0.0, percentile(lat, 0.5 if args.figure == "p50" else 0.99) - direct) * 1e6
        common.fail("unknown workload %r" % args.workload)

    common.serve(sample, pipeline.close)


if __name__ == "__main__":
    main()
