//! A look at a queue from outside: its worker hosts (consumers) and what
//! each holds, its length, its dead letters.

use std::time::{Duration, Instant};

use redis::{RedisResult, Value};

use crate::conn::{Conn, is_transient};
use crate::error::{RedisPoolError, explain};
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

/// How long [`queue_info`] waits for Redis at most.
pub const QUEUE_INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Looks at queue `queue` under `prefix` on the server at `url`, waiting
/// for Redis no longer than [`QUEUE_INFO_TIMEOUT`] (see
/// [`queue_info_timeout`]).
///
/// # Errors
///
/// [`RedisPoolError::Redis`] if Redis cannot be reached or does not answer
/// in time, or refuses a command.
pub fn queue_info(url: &str, prefix: &str, queue: &str) -> Result<QueueInfo, RedisPoolError> {
    queue_info_timeout(url, prefix, queue, QUEUE_INFO_TIMEOUT)
}

/// As [`queue_info`], waiting for Redis no longer than `timeout` in all
/// (to connect, for each reply, and to try again after a lost connection):
/// a server that hangs or is cut off costs the caller no more than that.
///
/// ```
/// use std::time::Duration;
/// use multiproc_redis::{RedisServer, queue_info_timeout};
///
/// let server = RedisServer::start().unwrap();
/// let info = queue_info_timeout(&server.url(), "multiproc", "default", Duration::from_secs(5)).unwrap();
/// assert_eq!((info.tasks, info.dead_letters, info.hosts.len()), (0, 0, 0));
/// let paused = server.pause().unwrap(); // answers nothing until dropped
/// let err = queue_info_timeout(&server.url(), "multiproc", "default", Duration::from_millis(200)).unwrap_err();
/// assert!(err.to_string().contains("no answer from redis"), "{err}");
/// drop(paused);
/// ```
///
/// # Errors
///
/// As for [`queue_info`].
pub fn queue_info_timeout(
    url: &str,
    prefix: &str,
    queue: &str,
    timeout: Duration,
) -> Result<QueueInfo, RedisPoolError> {
    let keys = Keys::new(prefix, queue);
    let deadline = Instant::now().checked_add(timeout);
    let info = Conn::open_until(url, deadline).and_then(|mut conn| look(&mut conn, &keys, deadline));
    info.map_err(|e| {
        let what = format!("could not look at queue {queue:?} under prefix {prefix:?}");
        let hint = if is_transient(&e) { ", or give queue_info_timeout a longer timeout" } else { "" };
        RedisPoolError::Redis(format!("{}{hint}", explain(&what, &e, Some(timeout))))
    })
}

/// The lengths of the task and dead-letter streams of `keys` and the hosts
/// in their group, read on `conn` no later than `deadline`.
fn look(conn: &mut Conn, keys: &Keys, deadline: Option<Instant>) -> RedisResult<QueueInfo> {
    let mut length = |key: String| {
        conn.retry_while(Duration::MAX, deadline, || true, |c| redis::cmd("XLEN").arg(&key).query::<u64>(c))
    };
    let tasks = length(keys.tasks())?;
    let dead_letters = length(keys.dead_letters())?;
    let hosts = match hosts(conn, &keys.tasks(), deadline) {
        Ok(hosts) => hosts,
        // No stream or no group yet: no host has read from the queue.
        Err(e) if e.code() == Some("NOGROUP") || e.detail().is_some_and(|d| d.contains("no such key")) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(QueueInfo { tasks, dead_letters, hosts })
}

/// The consumers of the group on `tasks`, read no later than `deadline`.
pub(crate) fn hosts(conn: &mut Conn, tasks: &str, deadline: Option<Instant>) -> RedisResult<Vec<HostInfo>> {
    let raw: Vec<Value> =
        conn.run_until(deadline, |c| redis::cmd("XINFO").arg("CONSUMERS").arg(tasks).arg(GROUP).query(c))?;
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

#[cfg(test)]
mod test;
