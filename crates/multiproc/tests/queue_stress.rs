//! Many producer and consumer processes on one queue: every item arrives
//! exactly once, whole, and in each producer's order as seen by each
//! consumer; with small segments, so the ring spills and recycles its
//! segments across processes all along, and with mixed item sizes (inline,
//! arena and blob).

mod queue_support;

use std::collections::HashMap;

use multiproc::{Process, Queue};
use queue_support::{Child, LONG};
use serde_bytes::ByteBuf;

type Item = Option<(u32, u32, ByteBuf)>;

const PRODUCERS: u32 = 3;
const CONSUMERS: usize = 3;
const PER_PRODUCER: u32 = 6000;

fn size_of(seq: u32) -> usize {
    match seq % 100 {
        0 => 100_000,
        1..=19 => 2000,
        _ => 8,
    }
}

fn produce(q: Queue<Item>, id: u32) {
    for seq in 0..PER_PRODUCER {
        let bytes = vec![(id * 7 + seq) as u8; size_of(seq)];
        q.put_timeout(Some((id, seq, ByteBuf::from(bytes))), LONG).unwrap();
    }
}

/// Takes items until a poison pill; returns (producer, seq) in arrival order.
fn consume(q: Queue<Item>) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    while let Some((id, seq, bytes)) = q.get_timeout(LONG).unwrap() {
        assert_eq!(bytes.len(), size_of(seq));
        assert!(bytes.iter().all(|&b| b == (id * 7 + seq) as u8), "item ({id}, {seq}) is torn");
        got.push((id, seq));
    }
    got
}

fn run(q: Queue<Item>) {
    let mut consumers: Vec<_> = (0..CONSUMERS).map(|_| Child(Process::spawn(consume, (q.clone(),)).unwrap())).collect();
    let mut producers: Vec<_> =
        (0..PRODUCERS).map(|id| Child(Process::spawn(produce, (q.clone(), id)).unwrap())).collect();
    for p in &mut producers {
        p.join();
    }
    for _ in 0..CONSUMERS {
        q.put_timeout(None, LONG).unwrap();
    }
    let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
    for c in &mut consumers {
        let mut last: HashMap<u32, u32> = HashMap::new();
        for (id, seq) in c.join() {
            if let Some(prev) = last.insert(id, seq) {
                assert!(prev < seq, "producer {id}: {seq} arrived after {prev}");
            }
            *seen.entry((id, seq)).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), (PRODUCERS * PER_PRODUCER) as usize, "items lost");
    assert!(seen.values().all(|&n| n == 1), "items delivered twice");
    assert!(q.empty());
}

#[test]
fn unbounded_with_small_segments() {
    run(Queue::builder().segment_slots(16).build().unwrap());
}

#[test]
fn bounded_with_small_segments() {
    run(Queue::builder().maxsize(10).segment_slots(8).build().unwrap());
}
