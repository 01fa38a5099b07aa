//! Queuing a batch of chunks: every entry of the batch or none, in one
//! command (one reply to wait for, so a call's deadline bounds it), and at
//! most once, however often that command is sent again.

use std::time::{Duration, Instant};

use redis::RedisResult;

use crate::conn::{self, Conn};

/// Adds every entry of the batch to the task stream, or none: an `XADD`
/// that fails (no permission, out of memory) withdraws those added before
/// it, and the whole script runs before any worker reads. Then it sets the
/// batch's key to the entry ids; a batch whose key is set was queued
/// already (the reply was lost and the command sent again), and the script
/// returns the ids it holds, queuing nothing. First of all it deletes the
/// keys of earlier batches that no command can queue again. `KEYS[1]`: the
/// task stream; `KEYS[2]`: the batch's key; `KEYS[3..]`: the keys to
/// delete; `ARGV[1]`: values per entry (field-value pairs); `ARGV[2]`: the
/// key's time to live in ms; then the entries. Returns the entry ids in
/// order.
const QUEUE_SCRIPT: &str = r"
if #KEYS > 2 then redis.call('DEL', unpack(KEYS, 3)) end
local done = redis.call('GET', KEYS[2])
if done then
  local ids = {}
  for id in string.gmatch(done, '%S+') do ids[#ids + 1] = id end
  return ids
end
local per, ids = tonumber(ARGV[1]), {}
for i = 3, #ARGV, per do
  local xadd = {'XADD', KEYS[1], '*'}
  for j = i, i + per - 1 do xadd[#xadd + 1] = ARGV[j] end
  local id = redis.pcall(unpack(xadd))
  if type(id) == 'table' and id.err then
    if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
    return redis.error_reply(id.err)
  end
  ids[#ids + 1] = id
end
local set = redis.pcall('SET', KEYS[2], table.concat(ids, ' '), 'PX', ARGV[2])
if type(set) == 'table' and set.err then
  if #ids > 0 then redis.call('XDEL', KEYS[1], unpack(ids)) end
  return redis.error_reply(set.err)
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

/// How long the key of a batch lives: longer than the retries of its
/// script may go on. The first try starts before the script first runs
/// and fails within one attempt (`attempt`: a connect and a reply); the
/// tries go on until `patience` after that failure, the last one starting
/// at most one pause later and reaching Redis within another attempt.
///
/// ```text
/// first run ≥ t0;  last run ≤ t0 + attempt + patience + pause + attempt
/// ```
fn batch_ttl(patience: Duration, attempt: Duration) -> Duration {
    patience.saturating_add(Conn::MAX_RETRY_PAUSE).saturating_add(attempt.saturating_mul(2))
}

/// Where [`enqueue`] queues a batch: the task stream, the batch's key, and
/// the keys of earlier batches that are of no more use.
pub(crate) struct BatchKeys<'a> {
    /// The task stream.
    pub tasks: &'a str,
    /// The batch's key ([`crate::schema::Keys::batch`]).
    pub batch: &'a str,
    /// The keys the script deletes (see [`enqueue`]).
    pub spent: &'a mut Vec<String>,
}

/// Queues `chunks` on the stream `tasks`: their blobs first (one command
/// each, expiring after `ttl_ms`), then every entry in one script, which
/// marks the batch queued in the key `batch` (unique to the batch, see
/// [`crate::schema::Keys::batch`]). Each command is tried again while
/// Redis is away, at most `patience` and never past `deadline`; a script
/// tried again after it ran (its reply lost or late) queues nothing more
/// and returns the ids of the first run. Returns the entry ids in order.
///
/// `spent` holds the keys of earlier batches whose script was sent once
/// and answered: nothing can queue them again, so this batch's script
/// deletes them (a key per call would otherwise live a minute: a million
/// of them at a few thousand calls a second). It is emptied when the
/// script ran and, if this batch's script too was answered at its first
/// try, left holding `batch`; a batch tried again keeps its key until it
/// expires.
///
/// # Errors
///
/// A Redis error; none of the entries is queued then, unless the error
/// is transient (the reply was lost: the script may have run).
//
// A command Redis reads only after its sender gave up on it (a server that
// stopped answering for longer than the key lives, then came back) may
// still find the key gone and queue the batch again.
pub(crate) fn enqueue(
    conn: &mut Conn,
    BatchKeys { tasks, batch, spent }: BatchKeys<'_>,
    ttl_ms: u64,
    chunks: &[ChunkEntry],
    patience: Duration,
    deadline: Option<Instant>,
) -> RedisResult<Vec<String>> {
    let blobs: Vec<&(String, Vec<u8>)> = chunks.iter().filter_map(|c| c.blob.as_ref()).collect();
    let batch_ttl_ms = u64::try_from(batch_ttl(patience, conn.attempt_bound()).as_millis()).unwrap_or(u64::MAX);
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
            script.arg(QUEUE_SCRIPT).arg(2 + spent.len()).arg(tasks).arg(batch).arg(&spent[..]);
            script.arg(per).arg(batch_ttl_ms);
            for chunk in chunks {
                for (name, value) in &chunk.fields {
                    script.arg(*name).arg(value);
                }
            }
            let mut tries = 0u32;
            let ids = conn.retry_while(
                patience,
                deadline,
                || true,
                |c| {
                    tries += 1;
                    script.query::<Vec<String>>(c)
                },
            )?;
            spent.clear();
            if tries == 1 {
                spent.push(batch.to_string());
            }
            Ok(ids)
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
