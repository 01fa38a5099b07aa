//! Values larger than a lane's message area (64 KiB) in every kind of
//! manager object, from another process, locally and over TCP. The manager
//! keeps such a value in the buffer it arrived in and answers reads with
//! shares of it: each read, replacement, update and removal must still
//! see exactly the bytes last written, whatever else shares that buffer.
//! Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use multiproc::manager::{self, Dict, List, Manager, Queue, Value};
use serde_bytes::ByteBuf;
use sync_support::{Kid, LONG};

const KEY: &[u8] = b"large values key";

/// A value of 200 KiB whose bytes depend on `seed`.
fn big(seed: u8) -> ByteBuf {
    ByteBuf::from((0..200 << 10).map(|i: usize| (i % 251) as u8 ^ seed).collect::<Vec<u8>>())
}

fn flip_first(v: &mut Option<ByteBuf>) -> usize {
    let v = v.as_mut().expect("the entry is there");
    v[0] ^= 0xff;
    v.len()
}

fn flip_second(v: &mut ByteBuf) {
    v[1] ^= 0xff;
}

fn flipped(mut v: ByteBuf, at: usize) -> ByteBuf {
    v[at] ^= 0xff;
    v
}

type Objects = (Dict<u32, ByteBuf>, List<ByteBuf>, Value<ByteBuf>, Queue<ByteBuf>);

/// Works every object with large values; panics on the first wrong answer.
fn exercise((d, l, v, q): Objects) -> u32 {
    let (a, b) = (big(1), big(2));

    d.set(&1, &a).unwrap();
    assert_eq!(d.get(&1).unwrap().as_ref(), Some(&a));
    assert_eq!(d.get(&1).unwrap().as_ref(), Some(&a), "a second read of a shared value");
    assert_eq!(d.update(&1, flip_first).unwrap(), a.len());
    assert_eq!(d.get(&1).unwrap(), Some(flipped(a.clone(), 0)));
    assert_eq!(d.insert(2, b.clone()).unwrap(), None);
    assert_eq!(d.insert(2, a.clone()).unwrap(), Some(b.clone()));
    let mut items = d.items().unwrap();
    items.sort_by_key(|(k, _)| *k);
    assert_eq!(items, vec![(1, flipped(a.clone(), 0)), (2, a.clone())]);
    assert_eq!(d.remove(&1).unwrap(), Some(flipped(a.clone(), 0)));
    assert_eq!(d.values().unwrap(), vec![a.clone()]);

    l.push(a.clone()).unwrap();
    l.extend([b.clone(), a.clone()]).unwrap();
    assert_eq!(l.get(0).unwrap(), a);
    l.set(0, b.clone()).unwrap();
    assert_eq!(l.to_vec().unwrap(), vec![b.clone(), b.clone(), a.clone()]);
    assert_eq!(l.pop().unwrap(), Some(a.clone()));
    assert_eq!(l.remove(0).unwrap(), b);

    assert_eq!(v.get().unwrap(), big(0));
    v.set(a.clone()).unwrap();
    v.update(flip_second).unwrap();
    assert_eq!(v.get().unwrap(), flipped(a.clone(), 1));

    q.put(a.clone()).unwrap();
    q.put(b.clone()).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), a);
    assert_eq!(q.get_timeout(LONG).unwrap(), b);
    7
}

/// What [`exercise`] left, as seen from the process that made the objects.
fn check_left((d, l, v, q): &Objects) {
    assert_eq!(d.get(&2).unwrap(), Some(big(1)));
    assert_eq!(d.len().unwrap(), 1);
    assert_eq!(l.to_vec().unwrap(), vec![big(2)]);
    assert_eq!(v.get().unwrap(), flipped(big(1), 1));
    assert!(q.empty().unwrap());
}

fn objects(m: &Manager) -> Objects {
    (m.dict().unwrap(), m.list().unwrap(), m.value(big(0)).unwrap(), m.queue().unwrap())
}

#[test]
fn large_values_read_back_exactly_from_a_local_manager() {
    let m = Manager::start().unwrap();
    let objects = objects(&m);
    assert_eq!(Kid::spawn(exercise, (objects.clone(),)).join(), 7);
    check_left(&objects);
    m.shutdown().unwrap();
}

fn remote_exercise(address: String) -> u32 {
    let m = Manager::connect(&address, Some(KEY)).unwrap();
    let objects = (m.get("d").unwrap(), m.get("l").unwrap(), m.get("v").unwrap(), m.get("q").unwrap());
    exercise(objects)
}

#[test]
fn large_values_read_back_exactly_over_tcp() {
    let server = manager::serve("tcp:127.0.0.1:0", Some(KEY)).unwrap();
    let objects = objects(&server);
    server.publish("d", &objects.0).unwrap();
    server.publish("l", &objects.1).unwrap();
    server.publish("v", &objects.2).unwrap();
    server.publish("q", &objects.3).unwrap();
    let address = server.address().to_string();
    assert_eq!(Kid::spawn(remote_exercise, (address,)).join(), 7);
    check_left(&objects);
    server.shutdown().unwrap();
}
