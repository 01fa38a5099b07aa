//! Queuing a batch of chunks: every entry of the batch or none, in one
//! command (one reply to wait for, so a call's deadline bounds it), and at
//! most once, however often that command is sent again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::RedisError;

use crate::conn::{self, Conn};

/// Adds every entry of the batch to the task stream, or none: an `XADD`
/// that fails (no permission, out of memory) withdraws those added before
/// it, and the whole script runs before any worker reads. Then it sets the
/// batch's key to the entry ids; a batch whose key is set was queued
/// already (the reply was lost and the command sent again), and the script
/// returns the ids it holds, queuing nothing. Last, it deletes the keys of
/// earlier batches that no command can queue again. `KEYS[1]`: the task
/// stream; `KEYS[2]`: the batch's key; `KEYS[3..]`: the keys to delete;
/// `ARGV[1]`: values per entry (field-value pairs); `ARGV[2]`: the key's
/// time to live in ms; then the entries. Returns the entry ids in order.
///
/// The first write must be the first `XADD`: Redis refuses a script's
/// write for want of memory (`maxmemory` with `noeviction`) only while the
/// script has written nothing, since it cannot undo what it wrote. A
/// `DEL` first, even of keys that do not exist, would let every `XADD`
/// after it through a full server. So the spent keys are deleted last (or,
/// for a batch queued already, after the `GET`, with nothing written
/// after them). Deleting them is a courtesy (they expire): a refused `DEL`
/// (an ACL without it) must not fail a batch already queued, so it is a
/// `pcall` whose error is ignored; so is the `XDEL` that undoes a batch,
/// whose failure the script reports as [`PARTIAL`].
const QUEUE_SCRIPT: &str = r"
local function forget_spent()
  if #KEYS > 2 then redis.pcall('DEL', unpack(KEYS, 3)) end
end
local function undo(ids, err)
  if #ids > 0 then
    local undone = redis.pcall('XDEL', KEYS[1], unpack(ids))
    if type(undone) == 'table' and undone.err then
      return redis.error_reply('PARTIAL ' .. err .. ' (and the entries queued before it could not be deleted: ' .. undone.err .. ')')
    end
  end
  return redis.error_reply(err)
end
local done = redis.call('GET', KEYS[2])
if done then
  forget_spent()
  local ids = {}
  for id in string.gmatch(done, '%S+') do ids[#ids + 1] = id end
  return ids
end
local per, ids = tonumber(ARGV[1]), {}
for i = 3, #ARGV, per do
  local xadd = {'XADD', KEYS[1], '*'}
  for j = i, i + per - 1 do xadd[#xadd + 1] = ARGV[j] end
  local id = redis.pcall(unpack(xadd))
  if type(id) == 'table' and id.err then return undo(ids, id.err) end
  ids[#ids + 1] = id
end
local set = redis.pcall('SET', KEYS[2], table.concat(ids, ' '), 'PX', ARGV[2])
if type(set) == 'table' and set.err then return undo(ids, set.err) end
forget_spent()
return ids
";

/// The start of the error a script returns when it could not delete the
/// entries it had queued before a later write failed: some of the batch
/// may be queued ([`Queued::Maybe`]).
const PARTIAL: &str = "PARTIAL";

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

/// How long [`enqueue`] may ask Redis whether an earlier try of a batch's
/// script queued it, after a later try failed (see [`Queued`]).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest a batch's key lives, whatever the reconnect timeout (a
/// longer one, such as `Duration::MAX`, would overflow the expiry Redis
/// takes): a script sent again more than this after its first try (a
/// reconnect timeout of over a day) could queue its batch a second time.
pub(crate) const MAX_BATCH_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long the key of a batch lives: longer than the retries of its
/// script may go on, at most [`MAX_BATCH_TTL`]. The first try starts
/// before the script first runs and fails within one attempt (`attempt`:
/// a connect and a reply); the tries go on until `patience` after that
/// failure, the last one starting at most one pause later and reaching
/// Redis within another attempt.
///
/// ```text
/// first run ≥ t0;  last run ≤ t0 + attempt + patience + pause + attempt
/// ```
fn batch_ttl(patience: Duration, attempt: Duration) -> Duration {
    patience.saturating_add(Conn::MAX_RETRY_PAUSE).saturating_add(attempt.saturating_mul(2)).min(MAX_BATCH_TTL)
}

/// Where [`enqueue`] queues a batch: the task stream, the batch's key, and
/// the keys of earlier batches that are of no more use; and until when it
/// tries.
pub(crate) struct BatchKeys<'a> {
    /// The task stream.
    pub tasks: &'a str,
    /// The batch's key ([`crate::schema::Keys::batch`]).
    pub batch: &'a str,
    /// The keys the script deletes (see [`enqueue`]).
    pub spent: &'a mut Vec<String>,
    /// Set when the pool is dropped: tries stop then.
    pub stop: &'a AtomicBool,
}

/// Whether the entries of a batch that [`enqueue`] failed to queue are in
/// the task stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// None is, and none will be: the script was refused, or never sent,
    /// or Redis said that no earlier try ran (and marked the batch so that
    /// none runs later). Its argument keys were deleted, unless Redis was
    /// away then (they expire).
    No,
    /// Perhaps: a try of the script may have run (its reply was lost), and
    /// Redis could not be asked. Its argument keys are kept.
    Maybe,
    /// An earlier try, whose reply was lost, queued them under these entry
    /// ids (in order); a later try then failed. The caller is to withdraw
    /// them (and their argument keys, which are kept).
    Yes(Vec<String>),
}

/// Why [`enqueue`] returned no entry ids, and what became of the batch.
#[derive(Debug)]
pub(crate) struct NotQueued {
    /// The last error.
    pub error: RedisError,
    /// Whether the batch is in the task stream.
    pub queued: Queued,
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
/// A Redis error, with whether the batch is queued ([`Queued`]). When a
/// try of the script went unanswered (its reply lost: it may have run)
/// and a later one failed for good (`NOPERM`, `READONLY`…), Redis
/// is asked, briefly, whether the batch's key is set: if it is, an
/// earlier try queued the batch ([`Queued::Yes`]); if not, the key is set
/// empty, so that a try still on its way queues nothing, and none is
/// queued ([`Queued::No`]).
//
// A command Redis reads only after its sender gave up on it (a server that
// stopped answering for longer than the key lives, then came back) may
// still find the key gone and queue the batch again.
pub(crate) fn enqueue(
    conn: &mut Conn,
    BatchKeys { tasks, batch, spent, stop }: BatchKeys<'_>,
    ttl_ms: u64,
    chunks: &[ChunkEntry],
    patience: Duration,
    deadline: Option<Instant>,
) -> Result<Vec<String>, NotQueued> {
    let blobs: Vec<&(String, Vec<u8>)> = chunks.iter().filter_map(|c| c.blob.as_ref()).collect();
    let batch_ttl_ms = u64::try_from(batch_ttl(patience, conn.attempt_bound()).as_millis()).unwrap_or(u64::MAX);
    // Whether a try of the script was sent and not answered (it may have run).
    let mut unanswered = false;
    // ORDERING: Acquire: pairs with the drop's Release store.
    let keep_trying = || !stop.load(Ordering::Acquire);
    let result = blobs
        .iter()
        .try_for_each(|(key, bytes)| {
            conn.retry_while(patience, deadline, keep_trying, |c| {
                redis::cmd("SET").arg(key).arg(bytes).arg("PX").arg(ttl_ms).exec(c)
            })
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
            let ids = conn.retry_while(patience, deadline, keep_trying, |c| {
                let reply = script.query::<Vec<String>>(c);
                // A refusal is an answer: that try did not run.
                unanswered |= reply.as_ref().is_err_and(|e| conn::is_transient(e) && !conn::is_refusal(e));
                reply
            })?;
            spent.clear();
            if !unanswered {
                spent.push(batch.to_string());
            }
            Ok(ids)
        });
    let error = match result {
        Ok(ids) if ids.len() == chunks.len() => return Ok(ids),
        // Only a try that meets the mark `probe` leaves gets other than one
        // id per chunk: no try of this call can (probe is its last word).
        Ok(ids) => {
            let what = format!("the batch's key holds {} entry ids for {} chunks", ids.len(), chunks.len());
            return Err(NotQueued {
                error: (redis::ErrorKind::Client, "unexpected reply", what).into(),
                queued: Queued::Maybe,
            });
        }
        Err(e) => e,
    };
    let partial = error.code() == Some(PARTIAL);
    let queued = match (unanswered, conn::is_transient(&error)) {
        _ if partial => Queued::Maybe,
        (false, _) => Queued::No,
        (true, true) => Queued::Maybe,
        (true, false) => probe(conn, batch, batch_ttl_ms, chunks.len()),
    };
    if queued == Queued::No && !conn::is_transient(&error) && !blobs.is_empty() {
        let keys: Vec<&String> = blobs.iter().map(|(key, _)| key).collect();
        let cleanup = Some(Instant::now() + CLEANUP_TIMEOUT);
        if let Err(e) = conn.run_until(cleanup, |c| redis::cmd("DEL").arg(&keys).exec(c)) {
            tracing::warn!("could not delete the argument keys of a batch not queued: {e} (they expire)");
        }
    }
    Err(NotQueued { error, queued })
}

/// Whether an earlier try of a batch's script queued its `count` entries,
/// asked of Redis within [`PROBE_TIMEOUT`] after a later try failed for
/// good. The batch's key is set empty unless it is set already (`SET NX`,
/// which any Redis version takes): set already, it holds the entry ids of
/// the try that ran; set now, no try ran, and a try still on its way (sent
/// on a connection since lost) finds it set and queues nothing. Two plain
/// commands rather than a script: the failure may be a refused `EVAL`.
fn probe(conn: &mut Conn, batch: &str, batch_ttl_ms: u64, count: usize) -> Queued {
    let deadline = Some(Instant::now() + PROBE_TIMEOUT);
    let marked = conn.run_until(deadline, |c| {
        redis::cmd("SET").arg(batch).arg("").arg("NX").arg("PX").arg(batch_ttl_ms).query::<Option<String>>(c)
    });
    match marked {
        Ok(Some(_)) => return Queued::No,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!("could not ask redis whether a batch whose reply was lost was queued: {e}");
            return Queued::Maybe;
        }
    }
    match conn.run_until(deadline, |c| redis::cmd("GET").arg(batch).query::<Option<String>>(c)) {
        Ok(Some(ids)) => {
            let ids: Vec<String> = ids.split_whitespace().map(String::from).collect();
            if ids.len() == count { Queued::Yes(ids) } else { Queued::Maybe }
        }
        Ok(None) => Queued::Maybe,
        Err(e) => {
            tracing::warn!("could not read which entries of a batch whose reply was lost were queued: {e}");
            Queued::Maybe
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_batch_key_lives_longer_than_the_retries_of_its_script_up_to_a_day() {
        let attempt = Duration::from_secs(12);
        let ttl = batch_ttl(Duration::from_secs(30), attempt);
        assert_eq!(ttl, Duration::from_secs(30 + 1 + 24));
        // Patience without end (`reconnect_timeout(Duration::MAX)`) must
        // not overflow the expiry Redis takes.
        assert_eq!(batch_ttl(Duration::MAX, attempt), MAX_BATCH_TTL);
        assert_eq!(batch_ttl(Duration::ZERO, Duration::MAX), MAX_BATCH_TTL);
    }
}
