//! The worker host's writer: gathers item outcomes into chunk results,
//! and writes them in one transaction per batch — results to each caller's
//! stream, `XACK` + `XDEL` of the finished entries, chunks queued again,
//! dead letters. It also sends the heartbeats of the entries in flight and
//! reclaims the entries of hosts that stopped sending theirs.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::exec::ItemResult;
use super::{HostShared, admit, visibility, withdrawn_lookup};
use crate::conn::{self, Conn};
use crate::error::TaskFailure;
use crate::schema::{self, ChunkResult, DeadMessage, GROUP, Outcome, TaskMsg};

/// How often a host removes the group's long-gone consumers.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A consumer holding nothing and idle this long is removed from the group
/// (a host that comes back joins again).
const GONE_AFTER: Duration = Duration::from_secs(3600);

/// A result entry holds about this many bytes of results at most.
const RESULT_ENTRY_BYTES: usize = 4 << 20;
/// A batch is written once it holds this many bytes of results...
const BATCH_BYTES: usize = 16 << 20;
/// ...or finishes this many entries.
const BATCH_ENTRIES: usize = 4096;

/// What the intake and the pools tell the outlet.
#[derive(Debug)]
pub(crate) enum Event {
    /// A chunk was handed to the pools.
    Started { id: Arc<str>, msg: TaskMsg, items: usize },
    /// One item of a chunk finished.
    Item { id: Arc<str>, index: usize, result: ItemResult },
    /// A chunk that will not run: garbage, another build, lost arguments.
    Dispose { id: String, disposal: Disposal },
}

/// Why an entry will not run, and what to do about it.
#[derive(Debug)]
pub(crate) enum Disposal {
    /// Not a task of ours: acknowledged, deleted, dead-lettered.
    Garbage { reason: String, message: Option<DeadMessage> },
    /// A task that fails as a whole: the caller is told, and it is
    /// dead-lettered.
    Fail { msg: Box<TaskMsg>, failure: TaskFailure },
    /// A chunk its caller withdrew (see `Keys::withdrawn`): acknowledged
    /// and deleted, with no result and no dead letter.
    Withdrawn { caller: String, task: u64 },
}

struct Running {
    msg: TaskMsg,
    outcomes: Vec<Option<ItemResult>>,
    left: usize,
}

#[derive(Default)]
struct Batch {
    /// Per caller: the results stream's time to live, and result messages
    /// (each at most about [`RESULT_ENTRY_BYTES`]).
    results: HashMap<String, (u64, Vec<Vec<ChunkResult>>)>,
    /// Bytes of results in the batch (roughly).
    bytes: usize,
    /// Bytes of the last message of each caller.
    last_bytes: HashMap<String, usize>,
    done: Vec<String>,
    requeue: Vec<TaskMsg>,
    /// Dead letters: the entry's id, why, what is kept of its message.
    dead: Vec<(String, String, Option<DeadMessage>)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.done.is_empty() && self.results.is_empty()
    }

    fn result(&mut self, msg: &TaskMsg, outcome: Outcome) {
        let size = match &outcome {
            Outcome::Items(items) => items.iter().map(|r| r.as_ref().map_or(64, |b| b.len() + 8)).sum(),
            Outcome::Failed(_) => 64,
        };
        let slot = self.results.entry(msg.caller.clone()).or_insert_with(|| (msg.result_ttl_ms, Vec::new()));
        let last = self.last_bytes.entry(msg.caller.clone()).or_default();
        if slot.1.is_empty() || *last + size > RESULT_ENTRY_BYTES {
            slot.1.push(Vec::new());
            *last = 0;
        }
        *last += size;
        self.bytes += size;
        slot.1.last_mut().unwrap_or_else(|| unreachable!("pushed above")).push(ChunkResult { task: msg.task, outcome });
    }

    /// True when the batch should be written before taking more events.
    fn is_full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.done.len() >= BATCH_ENTRIES
    }

    fn dead_letter(&mut self, id: &str, reason: String, msg: Option<&TaskMsg>) {
        self.dead.push((id.to_string(), reason, msg.map(|m| DeadMessage::of(&schema::encode_task(m)))));
    }

    /// A finished chunk: its result, or another delivery.
    fn finish(&mut self, id: &str, msg: TaskMsg, outcomes: Vec<ItemResult>) {
        self.done.push(id.to_string());
        let retry = outcomes.iter().find(|(r, again)| *again && r.is_err()).map(|(r, _)| r.clone().unwrap_err());
        match retry {
            Some(err) if msg.attempt < msg.max_attempts => {
                tracing::warn!("chunk {} of {}: {err}; delivering it again", msg.task, msg.caller);
                self.requeue.push(TaskMsg { attempt: msg.attempt + 1, last_error: Some(err.to_string()), ..msg });
            }
            Some(err) => {
                let dead = self.bury(id, &msg, &err);
                let items = outcomes
                    .into_iter()
                    .map(|(r, again)| if again && r.is_err() { Err(dead.clone()) } else { r })
                    .collect();
                self.result(&msg, Outcome::Items(items));
            }
            None => self.result(&msg, Outcome::Items(outcomes.into_iter().map(|(r, _)| r).collect())),
        }
    }

    /// Dead-letters a chunk that failed its last delivery with `err`; the
    /// failure its items get.
    fn bury(&mut self, id: &str, msg: &TaskMsg, err: &TaskFailure) -> TaskFailure {
        let dead = TaskFailure::DeadLettered { attempts: msg.attempt, last_error: err.to_string() };
        tracing::error!("chunk {} of {}: {dead}", msg.task, msg.caller);
        self.dead_letter(id, dead.to_string(), Some(msg));
        dead
    }

    /// A chunk that was delivered to a host that stopped heartbeating. Its
    /// item count is unknown here (its arguments may be in a blob), so on
    /// its last delivery the whole chunk fails.
    fn reclaimed(&mut self, id: &str, msg: TaskMsg, silence: Duration) {
        let err = TaskFailure::WorkerLost(format!("the worker host that had it sent no heartbeat for {silence:?}"));
        if msg.attempt < msg.max_attempts {
            self.finish(id, msg, vec![(Err(err), true)]);
        } else {
            let dead = self.bury(id, &msg, &err);
            self.result(&msg, Outcome::Failed(dead));
            self.done.push(id.to_string());
        }
    }

    fn dispose(&mut self, id: String, disposal: Disposal) {
        match disposal {
            Disposal::Garbage { reason, message } => {
                tracing::error!("skipping entry {id}: {reason}");
                self.dead.push((id.clone(), reason, message));
            }
            Disposal::Fail { msg, failure } => {
                tracing::error!("chunk {} of {} ({}): {failure}", msg.task, msg.caller, msg.function);
                self.dead_letter(&id, failure.to_string(), Some(&msg));
                self.result(&msg, Outcome::Failed(failure));
            }
            Disposal::Withdrawn { caller, task } => {
                tracing::debug!("dropping entry {id}: chunk {task} of {caller} was withdrawn by its caller");
            }
        }
        self.done.push(id);
    }

    /// The batch that tells the callers that Redis refused this one
    /// (`why`): each chunk's result is a small
    /// [`TaskFailure::ResultRefused`], dead letters keep their reason only.
    fn refused(&self, why: &str) -> Batch {
        let failure = TaskFailure::ResultRefused(why.to_string());
        let dead = self.dead.iter().map(|(id, reason, _)| (id.clone(), reason.clone(), None)).collect();
        let mut b = Batch { done: self.done.clone(), requeue: self.requeue.clone(), dead, ..Batch::default() };
        for (caller, (ttl, messages)) in &self.results {
            let chunks = messages
                .iter()
                .flatten()
                .map(|r| ChunkResult { task: r.task, outcome: Outcome::Failed(failure.clone()) });
            b.results.insert(caller.clone(), (*ttl, vec![chunks.collect()]));
        }
        b
    }

    /// Writes the batch in one transaction.
    fn pipeline(&self, host: &HostShared) -> redis::Pipeline {
        let keys = &host.keys;
        let tasks = keys.tasks();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (caller, (ttl, messages)) in &self.results {
            let key = keys.results(caller);
            for results in messages {
                let fields = schema::result_fields(results);
                pipe.cmd("XADD").arg(&key).arg("*").arg(&fields[..]).ignore();
            }
            pipe.cmd("PEXPIRE").arg(&key).arg(*ttl).ignore();
        }
        for msg in &self.requeue {
            pipe.cmd("XADD").arg(&tasks).arg("*").arg(&schema::task_fields(msg, &host.key)[..]).ignore();
        }
        for (id, reason, m) in &self.dead {
            let dead = keys.dead_letters();
            let cap = schema::DEAD_LETTER_MAXLEN;
            let c = pipe.cmd("XADD").arg(&dead).arg("MAXLEN").arg("~").arg(cap).arg("*");
            c.arg(schema::field::ID).arg(id).arg(schema::field::REASON).arg(schema::dead_letter_reason(reason));
            for (name, value) in m.iter().flat_map(DeadMessage::fields) {
                c.arg(name).arg(value);
            }
            c.ignore();
        }
        if !self.done.is_empty() {
            pipe.cmd("XACK").arg(&tasks).arg(schema::GROUP).arg(&self.done).ignore();
            pipe.cmd("XDEL").arg(&tasks).arg(&self.done).ignore();
        }
        pipe
    }
}

/// The outlet's loop, until the host stops.
pub(crate) fn run(host: &HostShared, events: mpsc::Receiver<Event>, mut conn: Conn) {
    let mut running: HashMap<Arc<str>, Running> = HashMap::new();
    let heartbeat_every = host.visibility / 4;
    let mut next_heartbeat = Instant::now() + heartbeat_every;
    let mut next_reclaim = Instant::now();
    // The queue's visibility timeout, renewed with this host's declaration.
    let mut queue_visibility = host.visibility;
    let mut next_declare = Instant::now();
    let mut reclaim_cursor = START.to_string();
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    let mut batch = Batch::default();
    loop {
        let first = match events.recv_timeout(Duration::from_millis(20)) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // What the last reclaim took is written, not left to wait
                // for another host's reclaim.
                if !batch.is_empty() {
                    flush(host, &mut conn, &mut batch);
                }
                return;
            }
        };
        if let Some(event) = first {
            handle(host, event, &mut running, &mut batch);
            while !batch.is_full() {
                let Ok(event) = events.try_recv() else { break };
                handle(host, event, &mut running, &mut batch);
            }
        }
        // A stopping host's intake may still hand over the chunks of its
        // last read: the outlet ends once it has seen them all done.
        if host.intake_done() && running.is_empty() && batch.is_empty() {
            match events.try_recv() {
                Ok(event) => handle(host, event, &mut running, &mut batch),
                Err(_) => return,
            }
        }
        if !batch.is_empty() {
            flush(host, &mut conn, &mut batch);
        }
        let now = Instant::now();
        if now >= next_heartbeat {
            // Every entry held, not only those running: one read, or a
            // recovery's page, may wait long for its turn to start.
            let held = host.held.ids();
            if !held.is_empty() {
                heartbeat(host, &mut conn, &held);
            }
            next_heartbeat = now + heartbeat_every;
        }
        // Also while the host drains its last tasks: their heartbeats
        // keep them only while no host reclaims after a shorter timeout.
        if now >= next_declare {
            match visibility::declare(&mut conn, &host.keys.visibility(), host.visibility, host.command_deadline()) {
                Ok(v) => queue_visibility = v,
                Err(e) => tracing::warn!("could not declare the visibility timeout: {e}"),
            }
            next_declare = now + heartbeat_every;
        }
        if now >= next_reclaim && !host.stopping() {
            reclaim(host, &mut conn, &mut reclaim_cursor, &mut batch, queue_visibility);
            next_reclaim = now + heartbeat_every;
        }
        if now >= next_sweep && !host.stopping() {
            sweep_consumers(host, &mut conn);
            next_sweep = now + SWEEP_EVERY;
        }
    }
}

fn handle(host: &HostShared, event: Event, running: &mut HashMap<Arc<str>, Running>, batch: &mut Batch) {
    match event {
        Event::Started { id, msg, items } => {
            if items == 0 {
                batch.finish(&id, msg, Vec::new());
            } else {
                running.insert(id, Running { msg, outcomes: (0..items).map(|_| None).collect(), left: items });
            }
        }
        Event::Item { id, index, result } => {
            host.done_items.fetch_add(1, Ordering::Relaxed);
            host.finished(1);
            let Some(r) = running.get_mut(&id) else { return };
            if let Some(slot) = r.outcomes.get_mut(index)
                && slot.is_none()
            {
                *slot = Some(result);
                r.left -= 1;
            }
            if r.left == 0
                && let Some(r) = running.remove(&id)
            {
                let outcomes = r.outcomes.into_iter().map(|o| o.unwrap_or_else(|| unreachable!("all set"))).collect();
                batch.finish(&id, r.msg, outcomes);
            }
        }
        Event::Dispose { id, disposal } => batch.dispose(id, disposal),
    }
}

/// Writes the batch; after a transient failure (Redis restarting) tries
/// again until it is written or the host stops, so no result is lost.
fn flush(host: &HostShared, conn: &mut Conn, batch: &mut Batch) {
    let pipe = batch.pipeline(host);
    loop {
        let deadline = host.command_deadline();
        match conn.retry_while(Duration::from_secs(5), deadline, || true, |c| c.exec_pipeline(&pipe)) {
            Ok(()) => break,
            Err(e) if conn::is_transient(&e) && !host.stopping() => {
                tracing::warn!("could not write results yet ({e}); trying again");
            }
            Err(e) => {
                tracing::error!("could not write {} results: {e}", batch.done.len());
                if !conn::is_transient(&e) && !batch.results.is_empty() {
                    tell_refused(host, conn, batch, &e);
                }
                break;
            }
        }
    }
    host.held.release(&batch.done);
    *batch = Batch::default();
}

/// Redis refused the batch (`e`: out of memory, ...): writes small
/// failures in place of its results, so that each caller learns why
/// rather than wait out its timeout. When Redis refuses that too (a
/// read-only replica refuses every write), the entries stay pending and
/// are delivered again later, and the caller waits out its timeout.
fn tell_refused(host: &HostShared, conn: &mut Conn, batch: &Batch, e: &redis::RedisError) {
    let pipe = batch.refused(&e.to_string()).pipeline(host);
    // A new connection: the refused batch's buffer on the server, which
    // may be what filled its memory, goes with the old one.
    conn.reconnect();
    match conn.run_until(host.command_deadline(), |c| c.exec_pipeline(&pipe)) {
        Ok(()) => tracing::warn!("told the callers of {} chunk(s) that redis refused their results", batch.done.len()),
        Err(e) => tracing::error!("could not tell the callers that redis refused their results either: {e}"),
    }
}

/// Resets the idle time of the entries this host holds (`XCLAIM …
/// JUSTID`), so no live host reclaims them however long they wait or run.
fn heartbeat(host: &HostShared, conn: &mut Conn, ids: &[Arc<str>]) {
    let ids: Vec<&str> = ids.iter().map(|s| &**s).collect();
    for part in ids.chunks(1000) {
        let r = conn.run_until(host.command_deadline(), |c| host.claim_again(part).exec(c));
        if let Err(e) = r {
            tracing::warn!("heartbeat failed: {e}");
            if conn::is_transient(&e) {
                return; // Redis is away: each part would wait for it in turn
            }
        }
    }
}

/// Entries one `XAUTOCLAIM` claims at most (it looks at ten times as many
/// pending entries).
const RECLAIM_COUNT: usize = 64;
/// `XAUTOCLAIM` calls per reclaim round at most: a round looks at up to
/// 2560 pending entries, the next goes on from there.
const RECLAIM_SCANS: usize = 4;

/// Claims entries idle longer than `visibility`, the queue's visibility
/// timeout (their host died or lost Redis), and delivers them again (or
/// dead-letters them). The scan of the pending list goes on from `cursor`,
/// where the last one stopped, and starts over once it reaches the end:
/// each `XAUTOCLAIM` looks at a bounded part of the list, and a scan that
/// always started at the beginning would never reach the entries behind
/// the first few hundred held by live hosts.
fn reclaim(host: &HostShared, conn: &mut Conn, cursor: &mut String, batch: &mut Batch, visibility: Duration) {
    let min_idle = u64::try_from(visibility.as_millis()).unwrap_or(u64::MAX);
    // Whether withdrawals are looked up: not after Redis failed one.
    let mut look = true;
    for _ in 0..RECLAIM_SCANS {
        let reply = conn.run(|c| {
            redis::cmd("XAUTOCLAIM")
                .arg(host.keys.tasks())
                .arg(schema::GROUP)
                .arg(&host.consumer)
                .arg(min_idle)
                .arg(&*cursor)
                .arg("COUNT")
                .arg(RECLAIM_COUNT)
                .query::<redis::Value>(c)
        });
        let reply = match reply {
            Ok(r) => match schema::autoclaim_reply(r) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("reclaim failed: {e}");
                    *cursor = START.to_string();
                    return;
                }
            },
            Err(e) => {
                if !conn::is_transient(&e) {
                    tracing::warn!("reclaim failed: {e}");
                    *cursor = START.to_string();
                }
                return;
            }
        };
        // All held at once, before any lookup: an entry this host holds
        // (running, or taken by the intake's recovery) is left alone, and
        // the recovery leaves alone what is held here.
        let claimed = host.held.take_unheld(reply.claimed, true);
        for entry in claimed {
            match admit(host, &entry.fields) {
                Ok(msg) if withdrawn(host, conn, &msg, &mut look) => {
                    let disposal = Disposal::Withdrawn { caller: msg.caller, task: msg.task };
                    batch.dispose(entry.id, disposal);
                }
                Ok(msg) => batch.reclaimed(&entry.id, msg, visibility),
                Err(disposal) => batch.dispose(entry.id, disposal),
            }
        }
        if !reply.deleted.is_empty() {
            let deleted = &reply.deleted;
            let _ = conn.run(|c| redis::cmd("XACK").arg(host.keys.tasks()).arg(schema::GROUP).arg(deleted).exec(c));
        }
        *cursor = reply.cursor;
        if *cursor == START || batch.is_full() {
            return;
        }
    }
}

/// True if the caller of reclaimed chunk `msg` withdrew it (see
/// [`withdrawn_lookup`]), so that it is neither delivered again nor
/// dead-lettered; looked up only while `look` holds. On an error the chunk
/// counts as not withdrawn: it is delivered again, and the host that reads
/// it looks again; after an error of a Redis that is away, `look` is
/// cleared, so that the other entries of the round do not each wait for it.
fn withdrawn(host: &HostShared, conn: &mut Conn, msg: &TaskMsg, look: &mut bool) -> bool {
    let Some(lookup) = withdrawn_lookup(host, msg).filter(|_| *look) else { return false };
    conn.run_until(host.command_deadline(), lookup).unwrap_or_else(|e| {
        tracing::warn!("could not check whether chunk {} of {} was withdrawn: {e}", msg.task, msg.caller);
        *look = !conn::is_transient(&e);
        false
    })
}

/// The start of the pending list, where a reclaim scan begins.
const START: &str = "0-0";

/// Removes consumers that hold nothing and have been idle for longer than
/// [`GONE_AFTER`] (hosts that died or left), so the group does not grow with
/// every host that ever ran.
fn sweep_consumers(host: &HostShared, conn: &mut Conn) {
    let tasks = host.keys.tasks();
    let Ok(hosts) = crate::inspect::hosts(conn, &tasks, None) else { return };
    let gone_ms = gone_after_ms(host.visibility);
    for h in hosts.iter().filter(|h| h.name != host.consumer && h.pending == 0 && h.idle_ms > gone_ms) {
        // DELCONSUMER drops whatever the consumer holds: a delivery between
        // the look above and here would be lost with it. A live host reads
        // every 100 ms, which resets its idle time, so only a host silent
        // for an hour that comes back at this very moment could lose one.
        let r =
            conn.run(|c| redis::cmd("XGROUP").arg("DELCONSUMER").arg(&tasks).arg(GROUP).arg(&h.name).query::<i64>(c));
        match r {
            Ok(_) => tracing::info!("removed consumer {} (idle {} s, nothing pending)", h.name, h.idle_ms / 1000),
            Err(e) => {
                tracing::warn!("could not remove consumer {}: {e}", h.name);
                if conn::is_transient(&e) {
                    return; // Redis is away: each removal would wait for it in turn
                }
            }
        }
    }
}

/// How long (ms) a consumer with nothing pending must have been idle to be
/// taken for gone, for a host whose visibility timeout is `visibility`.
fn gone_after_ms(visibility: Duration) -> u64 {
    u64::try_from(GONE_AFTER.max(visibility.saturating_mul(100)).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gone_consumers_limit_holds_for_any_visibility_timeout() {
        assert_eq!(gone_after_ms(Duration::from_secs(30)), 3_600_000);
        assert_eq!(gone_after_ms(Duration::from_secs(60)), 6_000_000);
        // `visibility * 100` overflowed here and ended the host's outlet.
        assert_eq!(gone_after_ms(Duration::MAX), u64::MAX);
        assert!(gone_after_ms(super::super::MAX_VISIBILITY) > 0);
    }
}
