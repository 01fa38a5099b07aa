//! A look at a queue from outside: its worker hosts (consumers) and what
//! each holds, its length, its dead letters.

use std::time::Duration;

use redis::Value;

use crate::conn::Conn;
use crate::error::RedisPoolError;
use crate::schema::{GROUP, Keys};

/// One worker host of a queue, as the consumer group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Its consumer name: `hostname-pid-random`.
    pub name: String,
    /// Entries delivered to it and not yet acknowledged.
    pub pending: u64,
    /// Milliseconds since it last read or heartbeated.
    pub idle_ms: u64,
}

impl HostInfo {
    /// True if this is the host with process id `pid` (on any machine).
    pub fn is_pid(&self, pid: u32) -> bool {
        self.name.contains(&format!("-{pid}-"))
    }
}

/// A snapshot of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// Entries in the task stream (waiting or running).
    pub tasks: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// The worker hosts that have read from the queue.
    pub hosts: Vec<HostInfo>,
}

/// Looks at queue `queue` under `prefix` on the server at `url`.
///
/// # Errors
///
/// [`RedisPoolError::Redis`] if Redis cannot be reached.
pub fn queue_info(url: &str, prefix: &str, queue: &str) -> Result<QueueInfo, RedisPoolError> {
    let keys = Keys::new(prefix, queue);
    let mut conn = Conn::open(url)?;
    let (tasks, dead_letters): (u64, u64) = conn.retry(Duration::from_secs(5), |c| {
        redis::pipe().cmd("XLEN").arg(keys.tasks()).cmd("XLEN").arg(keys.dead_letters()).query(c)
    })?;
    let hosts = hosts(&mut conn, &keys.tasks()).unwrap_or_default();
    Ok(QueueInfo { tasks, dead_letters, hosts })
}

/// The consumers of the group on `tasks`.
pub(crate) fn hosts(conn: &mut Conn, tasks: &str) -> redis::RedisResult<Vec<HostInfo>> {
    let raw: Vec<Value> = conn.run(|c| redis::cmd("XINFO").arg("CONSUMERS").arg(tasks).arg(GROUP).query(c))?;
    Ok(raw.iter().filter_map(host_info).collect())
}

fn host_info(v: &Value) -> Option<HostInfo> {
    let pairs: Vec<(String, Value)> = match v {
        Value::Map(m) => {
            m.iter().filter_map(|(k, v)| Some((redis::from_redis_value_ref(k).ok()?, v.clone()))).collect()
        }
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|kv| Some((redis::from_redis_value_ref(kv.first()?).ok()?, kv.get(1)?.clone())))
            .collect(),
        _ => return None,
    };
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    Some(HostInfo {
        name: redis::from_redis_value_ref(get("name")?).ok()?,
        pending: get("pending").and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or(0),
        idle_ms: get("idle").and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or(0),
    })
}
