//! `queue_1mib`: 1 MiB byte items through one unbounded `Queue`, from the
//! bench process to one consumer process, side by side with CPython's
//! `multiprocessing.Queue()` carrying `bytes`. Each item starts with its
//! number (8 bytes, little-endian) and ends with a fixed byte; the consumer
//! checks both and the length of every item, and answers with its count.
//!
//! Ours holds the items as `serde_bytes::ByteBuf` (a `Vec<u8>` is a
//! sequence to serde, encoded a byte at a time); the producer clones its
//! buffer for each put (the put takes the item) and writes the number in.
//!
//! CPython side: `bench/python/mp_queue.py` (`queue_1mib`).

use std::time::{Duration, Instant};

use multiproc::{Connection, Pipe, Process, Queue};
use serde_bytes::ByteBuf;
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats, Subject};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// 1 MiB items from one process to another.
pub const QUEUE_1MIB: Workload = Workload {
    name: "queue_1mib",
    about: "GB/s of 1 MiB byte items through a Queue, from the bench process to 1 consumer process",
    run: queue_1mib,
};

/// Bytes per item.
const SIZE: usize = 1 << 20;
/// Items per sample.
const ITEMS: u64 = 64;
/// The last byte of every item.
const LAST: u8 = 0x5a;

fn queue_1mib(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 5.0, 5, 1_000_000, 200), Plan::new(1, 1.5, 3, 1_000_000, 100));
    let mut ours = Large::start()?;
    let (items, size) = (ITEMS.to_string(), SIZE.to_string());
    let mut py = ctx.python("mp_queue.py", "queue_1mib", &["--items", &items, "--size", &size], &plan)?;
    let stats = ctx.measure(&plan, &mut [("multiproc queue_1mib", &mut ours), ("cpython queue_1mib", &mut py)])?;
    ours.finish()?;
    py.finish()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    let api = "Queue::<ByteBuf>::new(): put(buf.clone()) / get (CPython: multiprocessing.Queue(), put(bytes) / get)";
    Ok(vec![
        Row::new("queue_1mib", Unit::GigabytesPerSec, ours, py)
            .with_extra("api", json!(api))
            .with_extra("params", json!({ "item_bytes": SIZE, "items_per_sample": ITEMS })),
    ])
}

/// The consumer: on each request `n`, gets `n` items and checks them;
/// answers with `n`, or `u64::MAX` on a wrong item.
fn consumer(ctl: Connection<u64>, q: Queue<ByteBuf>) -> u64 {
    let mut expected = 0u64;
    let mut total = 0;
    while let Ok(n) = ctl.recv() {
        let mut answer = n;
        for _ in 0..n {
            let item = q.get_timeout(Duration::from_secs(60)).expect("consumer: no item within 60 s");
            let number = item.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            if item.len() != SIZE || number != Some(expected) || item.last() != Some(&LAST) {
                answer = u64::MAX;
            }
            expected += 1;
        }
        total += n;
        if ctl.send(&answer).is_err() {
            break;
        }
    }
    total
}

/// The queue, the consumer child and its pipe.
struct Large {
    queue: Queue<ByteBuf>,
    ctl: Connection<u64>,
    child: Process<u64>,
    item: ByteBuf,
    sent: u64,
}

impl Large {
    fn start() -> Result<Large, BenchError> {
        let queue = Queue::new()?;
        let (ctl, theirs) = Pipe::<u64>::duplex()?;
        let child = Process::spawn(consumer, (theirs, queue.clone()))?;
        let mut item = ByteBuf::from((0..SIZE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        item[SIZE - 1] = LAST;
        Ok(Large { queue, ctl, child, item, sent: 0 })
    }

    fn finish(mut self) -> Result<(), BenchError> {
        drop(self.ctl);
        let got = self.child.join()?;
        ensure(got == self.sent, || format!("the consumer got {got} items, {} were put", self.sent))?;
        ensure(self.queue.empty(), || "items left in the queue".into())
    }
}

impl Subject for Large {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let t = Instant::now();
        self.ctl.send(&ITEMS)?;
        for _ in 0..ITEMS {
            let mut item = self.item.clone();
            item[..8].copy_from_slice(&self.sent.to_le_bytes());
            self.queue.put(item).map_err(|e| BenchError::new(format!("put failed: {e}")))?;
            self.sent += 1;
        }
        let answer = self.ctl.recv()?;
        let took = t.elapsed();
        ensure(answer == ITEMS, || "the consumer got a wrong item".to_string())?;
        Ok((ITEMS as usize * SIZE) as f64 / took.as_secs_f64() / 1e9)
    }
}
