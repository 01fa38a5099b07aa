//! `queue_1mib` and `queue_4mib`: 1 MiB and 4 MiB byte items through one
//! unbounded `Queue`, from the bench process to one consumer process, side
//! by side with CPython's `multiprocessing.Queue()` carrying `bytes`. Each
//! item starts with its number (8 bytes, little-endian) and ends with a
//! fixed byte; the consumer checks both and the length of every item, and
//! answers with its count. A 1 MiB item fits a segment's arena; a 4 MiB one
//! is a blob (see `crates/multiproc/src/queue/README.md`).
//!
//! Ours holds the items as `serde_bytes::ByteBuf` (a `Vec<u8>` is a
//! sequence to serde, encoded a byte at a time); the producer clones its
//! buffer for each put (the put takes the item) and writes the number in.
//!
//! CPython side: `bench/python/mp_queue.py` (`queue_1mib`, `queue_4mib`).

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
    run: |ctx| queue_large(ctx, "queue_1mib", 1 << 20, 64),
};

/// 4 MiB items (blobs) from one process to another.
pub const QUEUE_4MIB: Workload = Workload {
    name: "queue_4mib",
    about: "GB/s of 4 MiB byte items (blobs) through a Queue, from the bench process to 1 consumer process",
    run: |ctx| queue_large(ctx, "queue_4mib", 4 << 20, 16),
};

/// The last byte of every item.
const LAST: u8 = 0x5a;

/// The row `name`: `items` items of `size` bytes per sample.
fn queue_large(ctx: &Ctx, name: &str, size: usize, items: u64) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(1, 5.0, 5, 1_000_000, 200), Plan::new(1, 1.5, 3, 1_000_000, 100));
    let mut ours = Large::start(size, items)?;
    let (n, bytes) = (items.to_string(), size.to_string());
    let mut py = ctx.python("mp_queue.py", name, &["--items", &n, "--size", &bytes], &plan)?;
    let (mine, theirs) = (format!("multiproc {name}"), format!("cpython {name}"));
    let stats = ctx.measure(&plan, &mut [(mine.as_str(), &mut ours), (theirs.as_str(), &mut py)])?;
    ours.finish()?;
    py.finish()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    let api = "Queue::<ByteBuf>::new(): put(buf.clone()) / get (CPython: multiprocessing.Queue(), put(bytes) / get)";
    Ok(vec![
        Row::new(name, Unit::GigabytesPerSec, ours, py)
            .with_extra("api", json!(api))
            .with_extra("params", json!({ "item_bytes": size, "items_per_sample": items })),
    ])
}

/// The consumer: on each request `n`, gets `n` items of `size` bytes and
/// checks them; answers with `n`, or `u64::MAX` on a wrong item.
fn consumer(ctl: Connection<u64>, q: Queue<ByteBuf>, size: usize) -> u64 {
    let mut expected = 0u64;
    let mut total = 0;
    while let Ok(n) = ctl.recv() {
        let mut answer = n;
        for _ in 0..n {
            let item = q.get_timeout(Duration::from_secs(60)).expect("consumer: no item within 60 s");
            let number = item.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            if item.len() != size || number != Some(expected) || item.last() != Some(&LAST) {
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
    items: u64,
    sent: u64,
}

impl Large {
    fn start(size: usize, items: u64) -> Result<Large, BenchError> {
        let queue = Queue::new()?;
        let (ctl, theirs) = Pipe::<u64>::duplex()?;
        let child = Process::spawn(consumer, (theirs, queue.clone(), size))?;
        let mut item = ByteBuf::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        item[size - 1] = LAST;
        Ok(Large { queue, ctl, child, item, items, sent: 0 })
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
        self.ctl.send(&self.items)?;
        for _ in 0..self.items {
            let mut item = self.item.clone();
            item[..8].copy_from_slice(&self.sent.to_le_bytes());
            self.queue.put(item).map_err(|e| BenchError::new(format!("put failed: {e}")))?;
            self.sent += 1;
        }
        let answer = self.ctl.recv()?;
        let took = t.elapsed();
        ensure(answer == self.items, || "the consumer got a wrong item".to_string())?;
        Ok((self.items as usize * self.item.len()) as f64 / took.as_secs_f64() / 1e9)
    }
}
