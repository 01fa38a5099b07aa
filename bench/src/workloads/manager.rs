//! Manager workloads, side by side with CPython's `multiprocessing.managers`:
//!
//! - `manager_dict`: set + get round trips per second on a manager dict, from
//!   one client (the bench process); `manager_dict/4_clients`: the same from
//!   four client processes at once, on one dict (each its own keys).
//! - `manager_queue_tcp`: put + get per second through a queue served over
//!   TCP loopback with an auth key, from a client that connected by address
//!   and key and fetched the queue by name. Its extra `batched` gives the
//!   same items moved a hundred per round trip (`put_many`, `get_many`),
//!   which CPython's proxies cannot do: not the row's figure.
//! - `manager_update`: increments per second of one dict entry by four
//!   processes, atomically: `Dict::update` with a plain `fn` (CPython has no
//!   such call: its peer takes a manager `Lock` around `d[k] = d[k] + 1`,
//!   three proxy calls more). The final count is checked exactly.
//!
//! Every client process is told how many operations to run over a pipe and
//! answers when done; each sample checks what came back.
//!
//! CPython side: `bench/python/managers.py`.

use std::time::Instant;

use multiproc::manager::{Dict, Manager, Queue};
use multiproc::{Connection, Pipe, Process};
use serde_json::json;

use super::tcp_echo::TcpEcho;
use super::{Ctx, Workload};
use crate::measure::{Plan, Stats, Subject};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// Dict set + get from one and from four clients.
pub const MANAGER_DICT: Workload = Workload {
    name: "manager_dict",
    about: "thousand set+get round trips/s on a manager dict, from 1 client and from 4 client processes",
    run: manager_dict,
};

/// Queue put + get over TCP with an auth key.
pub const MANAGER_QUEUE_TCP: Workload = Workload {
    name: "manager_queue_tcp",
    about: "thousand put+get pairs/s through a manager queue served over TCP loopback with an auth key",
    run: manager_queue_tcp,
};

/// Atomic increments of one dict entry from four processes.
pub const MANAGER_UPDATE: Workload = Workload {
    name: "manager_update",
    about: "thousand atomic increments/s of one manager dict entry by 4 processes (CPython: Lock + get + set)",
    run: manager_update,
};

/// Set + get pairs per client per sample.
const DICT_BATCH: u64 = 1000;
/// Put + get pairs per sample.
const QUEUE_BATCH: u64 = 1000;
/// Items per `put_many` and `get_many` in the row's batched extra.
const MANY: usize = 100;
/// Increments per process per sample.
const UPDATE_BATCH: u64 = 500;
/// Client processes of the multi-client rows.
const CLIENTS: u64 = 4;
/// The floor of `manager_queue_tcp` (see [`TcpEcho`]).
const FLOOR_TCP_ECHO: &str = "raw TCP echo between two processes, both polling, same message sizes";
/// The auth key of `manager_queue_tcp`.
const AUTHKEY: &[u8] = b"multiproc-bench";

/// The sampling plan of every manager workload.
pub(super) fn plan(ctx: &Ctx) -> Plan {
    ctx.plan(Plan::new(1, 5.0, 8, 1_000_000, 100), Plan::new(1, 1.5, 4, 1_000_000, 100))
}

fn manager_dict(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = plan(ctx);
    let batch = DICT_BATCH.to_string();
    let manager = Manager::start()?;

    // One client: this process.
    let d = manager.dict::<u64, u64>()?;
    let mut round = 0u64;
    let mut ours = || -> Result<f64, BenchError> {
        round += 1;
        let t = Instant::now();
        let mut wrong = 0;
        for k in 0..DICT_BATCH {
            d.insert(k, k ^ round)?;
            if d.get(&k)? != Some(k ^ round) {
                wrong += 1;
            }
        }
        let elapsed = t.elapsed();
        ensure(wrong == 0, || format!("{wrong} gets did not return the value just set"))?;
        Ok(DICT_BATCH as f64 / elapsed.as_secs_f64() / 1e3)
    };
    let mut floor = Echo::start()?;
    let mut py = ctx.python("managers.py", "manager_dict", &["--batch", &batch, "--clients", "1"], &plan)?;
    let stats = ctx.measure(
        &plan,
        &mut [
            ("multiproc manager_dict", &mut ours),
            ("reference: two pipe round trips", &mut floor),
            ("cpython manager_dict", &mut py),
        ],
    )?;
    py.finish()?;
    floor.finish()?;
    let [one, floor, py_one] = <[Stats; 3]>::try_from(stats).expect("three subjects");

    // Four client processes.
    let d4 = manager.dict::<u64, u64>()?;
    let mut ours = Clients::start(CLIENTS, DICT_BATCH, |ctl, id| Process::spawn(dict_client, (ctl, d4.clone(), id)))?;
    let clients = CLIENTS.to_string();
    let mut py = ctx.python("managers.py", "manager_dict", &["--batch", &batch, "--clients", &clients], &plan)?;
    let stats = ctx.measure(
        &plan,
        &mut [("multiproc manager_dict/4_clients", &mut ours), ("cpython manager_dict/4_clients", &mut py)],
    )?;
    ours.finish()?;
    py.finish()?;
    let [four, py_four] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    ensure(d4.len()? == (CLIENTS * DICT_BATCH) as usize, || "the 4 clients' keys are not all there".into())?;
    manager.shutdown()?;

    let api = "Manager::start(); d.insert(k, v); d.get(&k) (CPython: Manager().dict(); d[k] = v; d[k])";
    Ok(vec![
        Row::new("manager_dict", Unit::ThousandsPerSec, one, py_one)
            .with_floor(FLOOR, floor)
            .with_extra("api", json!(api))
            .with_extra("params", json!({ "pairs_per_sample": DICT_BATCH, "clients": 1 })),
        Row::new("manager_dict/4_clients", Unit::ThousandsPerSec, four, py_four)
            .with_extra("api", json!(api))
            .with_extra("params", json!({ "pairs_per_client_per_sample": DICT_BATCH, "clients": CLIENTS })),
    ])
}

/// What the floor column of `manager_dict` measures. It was a true floor
/// while every proxy call was a round trip over the manager's socket; a
/// local client's calls now go through a shared-memory lane and beat it, so
/// it stays as the reference it is, named as such.
const FLOOR: &str = "reference (not a floor: local calls go through shared memory): two round trips of a small \
                     message over a Pipe to a child that echoes it";

/// A child echoing byte messages, for the reference.
fn echo(conn: Connection<()>) {
    while let Ok(m) = conn.recv_bytes() {
        if conn.send_bytes(&m).is_err() {
            break;
        }
    }
}

/// The reference's subject: an echo child and its pipe.
struct Echo {
    conn: Connection<()>,
    child: Process<()>,
}

impl Echo {
    fn start() -> Result<Echo, BenchError> {
        let (conn, theirs) = Pipe::<()>::duplex()?;
        Ok(Echo { conn, child: Process::spawn(echo, (theirs,))? })
    }

    fn finish(mut self) -> Result<(), BenchError> {
        drop(self.conn);
        Ok(self.child.join()?)
    }
}

impl Subject for Echo {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let msg = [7u8; 24];
        let t = Instant::now();
        for _ in 0..2 * DICT_BATCH {
            self.conn.send_bytes(&msg)?;
            ensure(self.conn.recv_bytes()? == msg, || "the echo differs".into())?;
        }
        Ok(DICT_BATCH as f64 / t.elapsed().as_secs_f64() / 1e3)
    }
}

/// A client of `manager_dict/4_clients`: on each request `n`, sets and gets
/// `n` keys of its own; answers with `n`, or `u64::MAX` on a wrong value.
fn dict_client(ctl: Connection<u64>, d: Dict<u64, u64>, id: u64) -> u64 {
    let mut round = 0;
    let mut total = 0;
    while let Ok(n) = ctl.recv() {
        round += 1;
        let mut answer = n;
        for i in 0..n {
            let k = id * 1_000_000 + i;
            let ok = d.insert(k, k ^ round).is_ok() && matches!(d.get(&k), Ok(Some(v)) if v == k ^ round);
            if !ok {
                answer = u64::MAX;
            }
        }
        total += n;
        if ctl.send(&answer).is_err() {
            break;
        }
    }
    total
}

fn manager_queue_tcp(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = plan(ctx);
    let batch = QUEUE_BATCH.to_string();
    let manager = Manager::builder().address("tcp:127.0.0.1:0").authkey(AUTHKEY).start()?;
    manager.publish("queue", &manager.queue::<u64>()?)?;
    let remote = Manager::connect(manager.address(), Some(AUTHKEY))?;
    let q: Queue<u64> = remote.get("queue")?;
    let mut next = 0u64;
    let mut ours = || -> Result<f64, BenchError> {
        let t = Instant::now();
        let mut wrong = 0;
        for _ in 0..QUEUE_BATCH {
            q.put(next)?;
            if q.get()? != next {
                wrong += 1;
            }
            next += 1;
        }
        let elapsed = t.elapsed();
        ensure(wrong == 0, || format!("{wrong} items came back wrong"))?;
        Ok(QUEUE_BATCH as f64 / elapsed.as_secs_f64() / 1e3)
    };
    // The same items, a hundred per round trip (CPython's proxies have no
    // such call): an extra of the row, not its figure.
    let mut next_batch = 0u64;
    let mut batched = || -> Result<f64, BenchError> {
        let t = Instant::now();
        for _ in 0..QUEUE_BATCH / MANY as u64 {
            let first = next_batch;
            q.put_many(first..first + MANY as u64)?;
            let got = q.get_many(MANY)?;
            ensure(got.iter().copied().eq(first..first + MANY as u64), || "a batch came back wrong".into())?;
            next_batch += MANY as u64;
        }
        Ok(QUEUE_BATCH as f64 / t.elapsed().as_secs_f64() / 1e3)
    };
    let mut py = ctx.python("managers.py", "manager_queue_tcp", &["--batch", &batch], &plan)?;
    let mut echo = TcpEcho::start()?;
    let mut floor = || echo.pairs(QUEUE_BATCH);
    let stats = ctx.measure(
        &plan,
        &mut [
            ("floor: raw TCP echo, polling", &mut floor),
            ("multiproc manager_queue_tcp", &mut ours),
            ("cpython manager_queue_tcp", &mut py),
            ("multiproc put_many + get_many of 100 (items)", &mut batched),
        ],
    )?;
    py.finish()?;
    echo.finish()?;
    ensure(q.qsize()? == 0, || "items left in the queue".into())?;
    manager.shutdown()?;
    let [floor, ours, py, batched] = <[Stats; 4]>::try_from(stats).expect("four subjects");
    Ok(vec![
        Row::new("manager_queue_tcp", Unit::ThousandsPerSec, ours, py)
            .with_floor(FLOOR_TCP_ECHO, floor)
            .with_extra(
                "api",
                json!(
                    "manager on tcp:127.0.0.1 with an auth key; Manager::connect + get(\"queue\"); q.put(x); q.get() \
                     (CPython: BaseManager(('127.0.0.1', 0), authkey).register('queue').start(), a second \
                     BaseManager.connect(), q.put(x); q.get())"
                ),
            )
            .with_extra("params", json!({ "pairs_per_sample": QUEUE_BATCH }))
            .with_extra(
                "batched",
                json!({ "api": format!("q.put_many({MANY} items); q.get_many({MANY})"),
                        "thousand_items_per_s": batched.value() }),
            ),
    ])
}

fn manager_update(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = plan(ctx);
    let batch = UPDATE_BATCH.to_string();
    let manager = Manager::start()?;
    let d = manager.dict::<String, u64>()?;
    let mut ours = Clients::start(CLIENTS, UPDATE_BATCH, |ctl, _| Process::spawn(update_client, (ctl, d.clone())))?;
    let clients = CLIENTS.to_string();
    let mut py = ctx.python("managers.py", "manager_update", &["--batch", &batch, "--clients", &clients], &plan)?;
    let stats =
        ctx.measure(&plan, &mut [("multiproc manager_update", &mut ours), ("cpython manager_update", &mut py)])?;
    let done = ours.finish()?;
    py.finish()?;
    let count = d.get("count")?.unwrap_or(0);
    ensure(count == done, || format!("the count is {count} after {done} increments (lost updates)"))?;
    manager.shutdown()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    Ok(vec![
        Row::new("manager_update", Unit::ThousandsPerSec, ours, py)
            .with_extra(
                "api",
                json!(
                    "d.update(\"count\", |n: &mut Option<u64>| *n.get_or_insert(0) += 1) (CPython: with lock: \
                     d['count'] = d['count'] + 1, lock = Manager().Lock())"
                ),
            )
            .with_extra("params", json!({ "increments_per_process_per_sample": UPDATE_BATCH, "processes": CLIENTS })),
    ])
}

/// A client of `manager_update`: on each request `n`, increments the count
/// `n` times; answers with `n`, or `u64::MAX` on an error.
fn update_client(ctl: Connection<u64>, d: Dict<String, u64>) -> u64 {
    let mut total = 0;
    while let Ok(n) = ctl.recv() {
        let mut answer = n;
        for _ in 0..n {
            if d.update("count", |c: &mut Option<u64>| *c.get_or_insert(0) += 1).is_err() {
                answer = u64::MAX;
            }
        }
        total += n;
        if ctl.send(&answer).is_err() {
            break;
        }
    }
    total
}

/// Client processes driven over pipes: each sample asks every client for
/// its batch and times until all have answered.
struct Clients {
    ends: Vec<(Connection<u64>, Process<u64>)>,
    batch: u64,
    done: u64,
}

impl Clients {
    fn start(
        n: u64,
        batch: u64,
        mut spawn: impl FnMut(Connection<u64>, u64) -> Result<Process<u64>, multiproc::ProcessError>,
    ) -> Result<Clients, BenchError> {
        let mut ends = Vec::new();
        for id in 0..n {
            let (ours, theirs) = Pipe::<u64>::duplex()?;
            ends.push((ours, spawn(theirs, id)?));
        }
        Ok(Clients { ends, batch, done: 0 })
    }

    /// Stops the clients; returns the operations they made in all.
    fn finish(self) -> Result<u64, BenchError> {
        let per_client = self.done / self.ends.len() as u64;
        for (conn, mut child) in self.ends {
            drop(conn);
            let n = child.join()?;
            ensure(n == per_client, || format!("a client made {n} operations, expected {per_client}"))?;
        }
        Ok(self.done)
    }
}

impl Subject for Clients {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let t = Instant::now();
        for (conn, _) in &self.ends {
            conn.send(&self.batch)?;
        }
        for (conn, _) in &self.ends {
            let n = conn.recv()?;
            ensure(n == self.batch, || format!("a client answered {n} (a failed operation)"))?;
        }
        let elapsed = t.elapsed();
        let ops = self.batch * self.ends.len() as u64;
        self.done += ops;
        Ok(ops as f64 / elapsed.as_secs_f64() / 1e3)
    }
}
