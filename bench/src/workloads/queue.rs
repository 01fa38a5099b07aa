//! Queue workloads: `queue_1to1` (one producer process to one consumer
//! process) and `queue_2to2` (two of each), 200,000 small items (`u64`) per
//! sample through one unbounded `Queue`, side by side with CPython's
//! `multiprocessing.Queue()`.
//!
//! CPython side: `bench/python/mp_queue.py`.

use std::time::{Duration, Instant};

use multiproc::{Connection, GetError, Pipe, Process, Queue};
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats, Subject};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// One producer process, one consumer process.
pub const QUEUE_1TO1: Workload = Workload {
    name: "queue_1to1",
    about: "million items/s through a Queue, 200,000 u64 from 1 producer process to 1 consumer process",
    run: queue_1to1,
};

/// Two producer processes, two consumer processes.
pub const QUEUE_2TO2: Workload = Workload {
    name: "queue_2to2",
    about: "million items/s through a Queue, 200,000 u64 from 2 producer processes to 2 consumer processes",
    run: queue_2to2,
};

/// Items per sample (all producers together).
const ITEMS: u64 = 200_000;

fn queue_1to1(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    run(ctx, "queue_1to1", 1)
}

fn queue_2to2(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    run(ctx, "queue_2to2", 2)
}

fn run(ctx: &Ctx, name: &str, pairs: u64) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 8.0, 5, 1_000_000, 250), Plan::new(1, 2.0, 3, 1_000_000, 100));
    let (items, procs) = (ITEMS.to_string(), pairs.to_string());
    let mut ours = Flow::start(pairs)?;
    let mut py = ctx.python("mp_queue.py", name, &["--items", &items, "--pairs", &procs], &plan)?;
    let stats =
        ctx.measure(&plan, &mut [(&format!("multiproc {name}"), &mut ours), (&format!("cpython {name}"), &mut py)])?;
    ours.finish()?;
    py.finish()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    Ok(vec![
        Row::new(name, Unit::MillionsPerSec, ours, py)
            .with_extra("api", json!("Queue::<u64>::new(): put / get (CPython: multiprocessing.Queue(), put / get)"))
            .with_extra("params", json!({ "items_per_sample": ITEMS, "producers": pairs, "consumers": pairs })),
    ])
}

/// A producer: on each request `n`, puts `n` items `id, id + stride, …`
/// (continuing where the last request stopped), then a `u64::MAX` sentinel
/// when there are several consumers; answers with `n`.
fn producer(ctl: Connection<u64>, q: Queue<u64>, id: u64, stride: u64, sentinel: bool) -> u64 {
    let mut next = id;
    let mut total = 0;
    while let Ok(n) = ctl.recv() {
        for _ in 0..n {
            q.put(next).expect("put failed");
            next += stride;
        }
        if sentinel {
            q.put(u64::MAX).expect("put failed");
        }
        total += n;
        if ctl.send(&n).is_err() {
            break;
        }
    }
    total
}

/// A consumer. With `exact`, on each request `n` it gets `n` items and checks
/// that they come in order (one producer); otherwise it gets items until a
/// sentinel. Answers with (items, sum of items); u64::MAX items on a failed
/// check.
fn consumer(ctl: Connection<(u64, u64)>, q: Queue<u64>, exact: bool) -> u64 {
    let mut expected = 0u64;
    let mut total = 0;
    while let Ok((n, _)) = ctl.recv() {
        let (mut count, mut sum) = (0u64, 0u64);
        loop {
            if exact && count == n {
                break;
            }
            match q.get_timeout(Duration::from_secs(60)) {
                Ok(u64::MAX) if !exact => break,
                Ok(v) => {
                    if exact && v != expected {
                        count = u64::MAX;
                        break;
                    }
                    expected += 1;
                    count += 1;
                    sum = sum.wrapping_add(v);
                }
                Err(GetError::Closed) => return total,
                Err(e) => panic!("consumer: {e}"),
            }
        }
        total += count;
        if ctl.send(&(count, sum)).is_err() {
            break;
        }
    }
    total
}

/// A consumer child and the pipe that reports what it took.
type Consumer = (Connection<(u64, u64)>, Process<u64>);

/// The producer and consumer children of one workload.
struct Flow {
    pairs: u64,
    producers: Vec<(Connection<u64>, Process<u64>)>,
    consumers: Vec<Consumer>,
    queue: Queue<u64>,
    sent: u64,
}

impl Flow {
    fn start(pairs: u64) -> Result<Flow, BenchError> {
        let queue = Queue::new()?;
        let mut producers = Vec::new();
        let mut consumers = Vec::new();
        for id in 0..pairs {
            let (ours, theirs) = Pipe::<(u64, u64)>::duplex()?;
            consumers.push((ours, Process::spawn(consumer, (theirs, queue.clone(), pairs == 1))?));
            let (ours, theirs) = Pipe::<u64>::duplex()?;
            producers.push((ours, Process::spawn(producer, (theirs, queue.clone(), id, pairs, pairs > 1))?));
        }
        Ok(Flow { pairs, producers, consumers, queue, sent: 0 })
    }

    fn finish(mut self) -> Result<(), BenchError> {
        let per_producer = self.sent / self.pairs;
        for (conn, mut p) in self.producers.drain(..) {
            drop(conn);
            let n = p.join()?;
            ensure(n == per_producer, || format!("a producer put {n} items, expected {per_producer}"))?;
        }
        self.queue.shutdown(false);
        let mut got = 0;
        for (conn, mut p) in self.consumers.drain(..) {
            drop(conn);
            got += p.join()?;
        }
        ensure(got == self.sent, || format!("consumers got {got} items, {} were put", self.sent))
    }
}

impl Subject for Flow {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let per_producer = ITEMS / self.pairs;
        let t = Instant::now();
        for (conn, _) in &self.consumers {
            conn.send(&(per_producer, 0))?;
        }
        for (conn, _) in &self.producers {
            conn.send(&per_producer)?;
        }
        let (mut count, mut sum) = (0u64, 0u64);
        for (conn, _) in &self.consumers {
            let (c, s) = conn.recv()?;
            ensure(c != u64::MAX, || "a consumer got items out of order".to_string())?;
            count += c;
            sum = sum.wrapping_add(s);
        }
        let took = t.elapsed();
        for (conn, _) in &self.producers {
            let n = conn.recv()?;
            ensure(n == per_producer, || format!("a producer answered {n}"))?;
        }
        // Items are 0, 1, 2, … across all producers (producer `id` puts
        // id, id + pairs, …), so a sample's items are the next ITEMS integers.
        let first = self.sent;
        let expected_sum = (first..first + ITEMS).fold(0u64, |a, v| a.wrapping_add(v));
        self.sent += ITEMS;
        ensure(count == ITEMS, || format!("consumers got {count} items, {ITEMS} were put"))?;
        ensure(sum == expected_sum, || "the items got differ from the items put".to_string())?;
        Ok(ITEMS as f64 / took.as_secs_f64() / 1e6)
    }
}
