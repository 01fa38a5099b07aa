//! Queuing a batch of chunks: every entry of the batch or none, in one
//! command (one reply to wait for, so a call's deadline bounds it).

use std::time::{Duration, Instant};

use redis::RedisResult;

use crate::conn::{self, Conn};

/// Adds every entry of the batch to the task stream, or none: an `XADD`
/// that fails (no permission, out of memory) withdraws those added before
/// it, and the whole script runs before any worker reads. `KEYS[1]`: the
/// task stream; `ARGV[1]`: values per entry (field-value pairs); then the
/// entries. Returns the entry ids in order.
const QUEUE_SCRIPT: &str = r"
local per, ids = tonumber(ARGV[1]), {}
for i = 2, #ARGV, per do
  local xadd = {'XADD', KEYS[1], '*'}
  for j = i, i + per - 1 do xadd[#xadd + 1] = ARGV[j] end
  local id = redis.pcall(unpack(xadd))
  if type(id) == 'table' and id.err then
    if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
    return redis.error_reply(id.err)
  end
  ids[#ids + 1] = id
end
return ids
";

/// One chunk to queue: the fields of its entry and, for large arguments,
/// the key and bytes of its blob.
#[derive(Debug)]
pub(crate) struct ChunkEntry {
    pub fields: Vec<(&'static str, Vec<u8>)>,
    pub blob: Option<(String, Vec<u8>)>,
}

/// How long the blobs of a batch that could not be queued may take to
/// delete (they expire anyway).
const CLEANUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Queues `chunks` on the stream `tasks`: their blobs first (one command
/// each, expiring after `ttl_ms`), then every entry in one script. Each
/// command is tried again while Redis is away, at most `patience` and never
/// past `deadline`. Returns the entry ids in order.
///
/// # Errors
///
/// A Redis error; none of the entries is queued then, unless the error
/// is transient (the reply was lost: the script may have run).
pub(crate) fn enqueue(
    conn: &mut Conn,
    tasks: &str,
    ttl_ms: u64,
    chunks: &[ChunkEntry],
    patience: Duration,
    deadline: Option<Instant>,
) -> RedisResult<Vec<String>> {
    let blobs: Vec<&(String, Vec<u8>)> = chunks.iter().filter_map(|c| c.blob.as_ref()).collect();
    let result = blobs
        .iter()
        .try_for_each(|(key, bytes)| {
            conn.retry_while(
                patience,
                deadline,
                || true,
                |c| redis::cmd("SET").arg(key).arg(bytes).arg("PX").arg(ttl_ms).exec(c),
            )
        })
        .and_then(|()| {
            let per = chunks.first().map_or(0, |c| 2 * c.fields.len());
            let mut script = redis::cmd("EVAL");
            script.arg(QUEUE_SCRIPT).arg(1).arg(tasks).arg(per);
            for chunk in chunks {
                for (name, value) in &chunk.fields {
                    script.arg(*name).arg(value);
                }
            }
            conn.retry_while(patience, deadline, || true, |c| script.query::<Vec<String>>(c))
        });
    if let Err(e) = &result
        && !conn::is_transient(e)
        && !blobs.is_empty()
    {
        let keys: Vec<&String> = blobs.iter().map(|(key, _)| key).collect();
        let cleanup = Some(Instant::now() + CLEANUP_TIMEOUT);
        if let Err(e) = conn.run_until(cleanup, |c| redis::cmd("DEL").arg(&keys).exec(c)) {
            tracing::warn!("could not delete the argument keys of a batch not queued: {e} (they expire)");
        }
    }
    result
}
