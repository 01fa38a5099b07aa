//! `manager_dict_1mib`: set + get pairs per second of a 1 MiB byte value
//! in a manager dict, from one client, side by side with CPython's
//! `Manager().dict()` (`d[k] = v; d[k]` with `bytes`). Each get is checked
//! against the value just set, byte for byte, on both sides.
//!
//! Ours holds the value as `serde_bytes::ByteBuf` (a `Vec<u8>` is a
//! sequence to serde, encoded a byte at a time) and sets it with
//! `Dict::set`, which does not send the replaced value back (Python's
//! `d[k] = v` does not either).
//!
//! CPython side: `bench/python/managers.py` (`manager_dict_1mib`).

use std::time::Instant;

use multiproc::manager::Manager;
use serde_bytes::ByteBuf;
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::Stats;
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// Set + get of a 1 MiB value.
pub const MANAGER_DICT_1MIB: Workload = Workload {
    name: "manager_dict_1mib",
    about: "set+get pairs/s of a 1 MiB bytes value in a manager dict, from 1 client",
    run: manager_dict_1mib,
};

/// Bytes of the value.
const SIZE: usize = 1 << 20;
/// Set + get pairs per sample.
const BATCH: u64 = 50;

fn manager_dict_1mib(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = super::manager::plan(ctx);
    let manager = Manager::start()?;
    let d = manager.dict::<u64, ByteBuf>()?;
    let mut value = ByteBuf::from((0..SIZE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut round = 0u8;
    let mut ours = || -> Result<f64, BenchError> {
        // A value of its own per sample: a get returning an older one fails.
        round = round.wrapping_add(1);
        value[0] = round;
        let t = Instant::now();
        for k in 0..BATCH {
            d.set(&k, &value)?;
            ensure(d.get(&k)?.as_ref() == Some(&value), || format!("key {k}: the get did not return the value set"))?;
        }
        Ok(BATCH as f64 / t.elapsed().as_secs_f64())
    };
    let (batch, size) = (BATCH.to_string(), SIZE.to_string());
    let mut py = ctx.python("managers.py", "manager_dict_1mib", &["--batch", &batch, "--size", &size], &plan)?;
    let stats =
        ctx.measure(&plan, &mut [("multiproc manager_dict_1mib", &mut ours), ("cpython manager_dict_1mib", &mut py)])?;
    py.finish()?;
    ensure(d.len()? == BATCH as usize, || "keys are missing from the dict".into())?;
    manager.shutdown()?;
    let [ours, py] = <[Stats; 2]>::try_from(stats).expect("two subjects");
    let api = "Manager::start(); d: Dict<u64, ByteBuf>; d.set(&k, &v); d.get(&k) (CPython: Manager().dict(); \
               d[k] = v; d[k], v: bytes)";
    Ok(vec![
        Row::new("manager_dict_1mib", Unit::PerSec, ours, py)
            .with_extra("api", json!(api))
            .with_extra("params", json!({ "value_bytes": SIZE, "pairs_per_sample": BATCH })),
    ])
}
