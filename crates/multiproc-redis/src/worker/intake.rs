//! The worker host's reader: `XREADGROUP` from the task stream, as much
//! as the host can keep busy, checks each entry and hands its items to the
//! local pools.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redis::RedisResult;
use redis::streams::StreamReadOptions;
use serde_bytes::ByteBuf;

use super::exec::Executors;
use super::outlet::{Disposal, Event};
use super::{HostShared, admit, withdrawn_lookup};
use crate::conn::{self, Conn};
use crate::error::{RedisPoolError, TaskFailure, explain};
use crate::schema::{self, Args, GROUP, StreamEntry, TaskMsg};

/// How long one `XREADGROUP` blocks (also how soon a stop is noticed).
const BLOCK: Duration = Duration::from_millis(100);
/// How much finished work the host keeps queued in its pools: items in
/// flight ≈ throughput × this (at least two per process).
const AHEAD: Duration = Duration::from_millis(20);
/// The most items in flight on one host.
const MAX_IN_FLIGHT: usize = 16_384;
/// Entries per read of the host's own pending list.
const RECOVER_COUNT: usize = 1024;

/// How long joining the consumer group waits for Redis in all (a restart
/// that is loading its data, a server that stopped answering).
const JOIN_PATIENCE: Duration = Duration::from_secs(10);

/// Creates the consumer group (and the stream) if they do not exist, and
/// this host's consumer in it, so the host is visible before its first
/// entry. Waits for Redis no longer than [`JOIN_PATIENCE`].
pub(crate) fn ensure_group(conn: &mut Conn, tasks: &str, consumer: &str) -> Result<(), RedisPoolError> {
    let deadline = Instant::now().checked_add(JOIN_PATIENCE);
    let r = conn.retry_while(
        JOIN_PATIENCE,
        deadline,
        || true,
        |c| redis::cmd("XGROUP").arg("CREATE").arg(tasks).arg(GROUP).arg("0").arg("MKSTREAM").exec(c),
    );
    if let Err(e) = r
        && e.code() != Some("BUSYGROUP")
    {
        return Err(RedisPoolError::Redis(explain(
            &format!("could not create consumer group {GROUP} on {tasks}"),
            &e,
            None,
        )));
    }
    conn.retry_while(
        JOIN_PATIENCE,
        deadline,
        || true,
        |c| redis::cmd("XGROUP").arg("CREATECONSUMER").arg(tasks).arg(GROUP).arg(consumer).exec(c),
    )
    .map_err(|e| {
        let what = format!("could not join consumer group {GROUP} on {tasks}");
        let hint = if conn::is_transient(&e) { "" } else { " (this needs Redis 6.2 or newer)" };
        RedisPoolError::Redis(format!("{}{hint}", explain(&what, &e, None)))
    })
}

/// How many items the host may have in flight now: enough for about
/// [`AHEAD`] of work at the rate measured over the last 200 ms, and at
/// least two per process — so a host takes no more than it can start soon,
/// and the other hosts get the rest.
struct Pacer {
    since: Instant,
    done_then: u64,
    limit: usize,
}

impl Pacer {
    fn limit(&mut self, host: &HostShared) -> usize {
        let floor = 2 * host.processes;
        let done = host.done_items.load(Ordering::Relaxed);
        if done == self.done_then && host.in_flight.load(Ordering::Acquire) == 0 {
            // Idle: the next measurement starts with the next work.
            self.since = Instant::now();
        }
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_millis(200) {
            // Too few items to measure (the host was idle, or its tasks are
            // long): keep the last limit, so an idle spell does not make
            // the next burst start slowly.
            if done - self.done_then >= floor as u64 {
                let rate = (done - self.done_then) as f64 / elapsed.as_secs_f64();
                self.limit = ((rate * AHEAD.as_secs_f64()) as usize).clamp(floor, MAX_IN_FLIGHT);
            }
            self.since = Instant::now();
            self.done_then = done;
        }
        self.limit.max(floor)
    }
}

/// The intake's loop, until the host stops.
pub(crate) fn run(host: &HostShared, executors: &Executors, events: mpsc::Sender<Event>, mut conn: Conn) {
    let tasks = host.keys.tasks();
    let mut pacer = Pacer { since: Instant::now(), done_then: 0, limit: 2 * host.processes };
    // Items per entry in the last read: entries are read, items counted.
    let mut per_entry = 1usize;
    let mut connects = conn.connects();
    while !host.stopping() {
        let limit = pacer.limit(host);
        let in_flight = host.in_flight.load(Ordering::Acquire);
        if in_flight >= limit {
            host.wait_for_room(limit, Duration::from_millis(50));
            continue;
        }
        let count = ((limit - in_flight) / per_entry).clamp(1, 1024);
        let opts =
            StreamReadOptions::default().group(GROUP, &host.consumer).count(count).block(BLOCK.as_millis() as usize);
        let reply = conn
            .run(|c| redis::cmd("XREADGROUP").arg(&opts).arg("STREAMS").arg(&tasks).arg(">").query::<redis::Value>(c));
        let reply = match reply.map(schema::read_reply) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!("reading {tasks}: {e}");
                continue;
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!("consumer group gone from {tasks} (redis lost its data?); creating it again");
                let _ = ensure_group(&mut conn, &tasks, &host.consumer);
                continue;
            }
            Err(e) => {
                let level = if conn::is_transient(&e) { "unavailable" } else { "failed" };
                tracing::warn!("reading {tasks}: redis {level} ({e}); trying again");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        // Held at once, before any lookup of `take`'s: the outlet's reclaim
        // leaves them alone, and heartbeats keep them while they wait.
        let reply = host.held.take_unheld(reply, true);
        let (entries, items) = take(host, executors, &events, &mut conn, reply);
        if entries > 0 {
            per_entry = items.div_ceil(entries).max(1);
        }
        if conn.connects() != connects {
            connects = conn.connects();
            recover(host, executors, &events, &mut conn);
        }
    }
    host.set_intake_done();
    // The drain's deadline counts from the stop, not from the end of the
    // read that was blocked then (on a paused Redis, its reply timeout).
    let deadline = host.drain_deadline().unwrap_or_else(Instant::now);
    while host.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Takes entries read for this host, each held by it: checks each and
/// hands its items to the pools (or the entry to the outlet, to dispose
/// of); lets go of those it does not start. Returns the entries and the
/// items started.
fn take(
    host: &HostShared,
    executors: &Executors,
    events: &mpsc::Sender<Event>,
    conn: &mut Conn,
    entries: Vec<StreamEntry>,
) -> (usize, usize) {
    let (mut started, mut items) = (0usize, 0usize);
    let mut entries = entries.into_iter();
    while let Some(entry) = entries.next() {
        match admit(host, &entry.fields) {
            Ok(msg) => {
                started += 1;
                match start(host, executors, events, conn, entry.id, msg) {
                    Some(n) => items += n,
                    None => {
                        // Redis is away. The rest are not tried: each would
                        // wait for Redis in turn (a reply timeout or two),
                        // with the host's stop unheard. Pending to this host,
                        // they are taken again once it has reconnected (see
                        // `recover`), or by another host after the visibility
                        // timeout; so they are let go.
                        host.held.release(entries.by_ref().map(|e| e.id));
                        break;
                    }
                }
            }
            Err(disposal) => {
                let _ = events.send(Event::Dispose { id: entry.id, disposal });
            }
        }
    }
    (started, items)
}

/// Takes the entries delivered to this host that it never saw. After a
/// reconnect the reply of a read may have been lost (Redis restarted, or
/// answered too late): its entries are pending to this host, which does not
/// run them nor send their heartbeats, and would wait for the visibility
/// timeout and another delivery. They are read again from the host's own
/// pending list (deleted ones are left to the reclaim scan).
fn recover(host: &HostShared, executors: &Executors, events: &mpsc::Sender<Event>, conn: &mut Conn) {
    let tasks = host.keys.tasks();
    let mut after = "0-0".to_string();
    loop {
        let opts = StreamReadOptions::default().group(GROUP, &host.consumer).count(RECOVER_COUNT);
        let reply = conn.run(|c| {
            redis::cmd("XREADGROUP").arg(&opts).arg("STREAMS").arg(&tasks).arg(&after).query::<redis::Value>(c)
        });
        let entries = match reply.map(schema::read_reply) {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => return tracing::warn!("reading the entries pending to this host: {e}"),
            Err(e) => return tracing::warn!("reading the entries pending to this host: {e}"),
        };
        let Some(last) = entries.last() else { return };
        after.clone_from(&last.id);
        let unknown: Vec<StreamEntry> = entries.into_iter().filter(|e| !e.fields.is_empty()).collect();
        let Some(lost) = still_pending(host, conn, unknown) else { return };
        if !lost.is_empty() {
            tracing::warn!("{} entries were delivered to this host while it was cut off; running them", lost.len());
            take(host, executors, events, conn, lost);
        }
    }
}

/// The most entries pending to this host that [`still_pending`] lists in
/// the span of one page of [`recover`] (the page's and any reclaimed since).
const PENDING_COUNT: usize = 4 * RECOVER_COUNT;

/// Those of `entries` (read from this host's pending list, in order) that
/// it does not hold and that are still pending to it, now held and their
/// idle time reset. An entry held when the list was read may have been
/// answered since (its results written and acknowledged, then let go): not
/// held any more, but not lost either, and it must not run again. Each
/// entry is let go only after it was acknowledged, so asking Redis
/// (`XPENDING`, which changes nothing) after taking the holds finds such an
/// entry gone from the list. The holds are taken first so that the outlet's
/// reclaim, which may claim these same entries, leaves them alone. An entry
/// idle for half the visibility timeout or more is left to the reclaim
/// scans: another host's may take it at any moment, so this one must not
/// run it too; the others are claimed again by this host with their idle
/// time reset (`XCLAIM … JUSTID`), which no other host can have claimed in
/// between. `None` when Redis is away (a recovery runs again after the
/// reconnect); if Redis refuses the question otherwise, all of them run
/// (at least once).
fn still_pending(host: &HostShared, conn: &mut Conn, entries: Vec<StreamEntry>) -> Option<Vec<StreamEntry>> {
    let entries = host.held.take_unheld(entries, false);
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Some(entries) };
    let listed = conn.run(|c| {
        redis::cmd("XPENDING")
            .arg(host.keys.tasks())
            .arg(GROUP)
            .arg(&first.id)
            .arg(&last.id)
            .arg(PENDING_COUNT)
            .arg(&host.consumer)
            .query::<Vec<(String, String, u64, u64)>>(c)
    });
    let idle: HashMap<String, u64> = match listed {
        Ok(list) => list.into_iter().map(|(id, _, idle_ms, _)| (id, idle_ms)).collect(),
        Err(e) => return give_up_checking(host, entries, &e),
    };
    let fresh = |e: &StreamEntry| idle.get(&e.id).is_some_and(|&ms| u128::from(ms) < host.visibility.as_millis() / 2);
    let (lost, left): (Vec<StreamEntry>, Vec<StreamEntry>) = entries.into_iter().partition(fresh);
    host.held.release(left.into_iter().map(|e| e.id));
    if lost.is_empty() {
        return Some(lost);
    }
    let ids: Vec<&str> = lost.iter().map(|e| e.id.as_str()).collect();
    let claimed = conn.run(|c| host.claim_again(&ids).query::<HashSet<String>>(c));
    match claimed {
        // One answered or deleted since the look is not claimed: let go.
        Ok(claimed) => {
            let (lost, gone): (Vec<StreamEntry>, Vec<StreamEntry>) =
                lost.into_iter().partition(|e| claimed.contains(&e.id));
            host.held.release(gone.into_iter().map(|e| e.id));
            host.held.confirm(lost.iter().map(|e| e.id.as_str()));
            Some(lost)
        }
        Err(e) => give_up_checking(host, lost, &e),
    }
}

/// What [`still_pending`] does with `entries` (held) when Redis failed it
/// with `e`: lets them go and waits for the next reconnect if Redis is
/// away, else runs them all.
fn give_up_checking(host: &HostShared, entries: Vec<StreamEntry>, e: &redis::RedisError) -> Option<Vec<StreamEntry>> {
    if conn::is_transient(e) {
        tracing::warn!("could not check which entries are still pending to this host ({e}); again after the reconnect");
        host.held.release(entries.into_iter().map(|e| e.id));
        return None;
    }
    tracing::warn!("could not check which entries are still pending to this host ({e}); running them all");
    host.held.confirm(entries.iter().map(|e| e.id.as_str()));
    Some(entries)
}

/// Hands the items of an admitted chunk to the pools; returns how many,
/// or `None` if Redis did not say whether its caller withdrew it or did
/// not give its arguments (it is away). A chunk its caller withdrew is
/// handed to the outlet to drop.
fn start(
    host: &HostShared,
    executors: &Executors,
    events: &mpsc::Sender<Event>,
    conn: &mut Conn,
    id: String,
    msg: TaskMsg,
) -> Option<usize> {
    match withdrawn(host, conn, &msg) {
        Ok(false) => {}
        Ok(true) => {
            let disposal = Disposal::Withdrawn { caller: msg.caller, task: msg.task };
            let _ = events.send(Event::Dispose { id, disposal });
            return Some(0);
        }
        Err(e) => {
            // As for the arguments below: the entry stays pending.
            tracing::warn!("could not check whether entry {id} was withdrawn ({e}); it runs once redis is back");
            host.held.release(&[id]);
            return None;
        }
    }
    let items = match load_args(conn, &msg.args, || !host.stopping()) {
        Ok(Ok(items)) => items,
        Ok(Err(failure)) => {
            let _ = events.send(Event::Dispose { id, disposal: Disposal::Fail { msg: Box::new(msg), failure } });
            return Some(0);
        }
        Err(e) => {
            // Redis is away: the entry stays pending to this host, which
            // lets go of it, and takes it again once it has reconnected
            // (see `recover`), or another host after the visibility timeout.
            tracing::warn!("could not read the arguments of entry {id} ({e}); it runs once redis is back");
            host.held.release(&[id]);
            return None;
        }
    };
    let id: Arc<str> = id.into();
    let (remote, timeout_ms, n) = (msg.remote, msg.timeout_ms, items.len());
    host.in_flight.fetch_add(n, Ordering::AcqRel);
    let _ = events.send(Event::Started { id: id.clone(), msg, items: n });
    for (index, args) in items.into_iter().enumerate() {
        let (tx, id) = (events.clone(), id.clone());
        executors.submit(remote, timeout_ms, args, move |result| {
            let _ = tx.send(Event::Item { id, index, result });
        });
    }
    Some(n)
}

/// True if the caller of chunk `msg` withdrew it (see [`withdrawn_lookup`]).
/// The error of a Redis that stayed away (transient); any other error
/// counts as not withdrawn (the chunk runs, as it did before withdrawals
/// existed).
fn withdrawn(host: &HostShared, conn: &mut Conn, msg: &TaskMsg) -> RedisResult<bool> {
    let Some(lookup) = withdrawn_lookup(host, msg) else { return Ok(false) };
    match conn.retry_while(Duration::from_secs(10), None, || !host.stopping(), lookup) {
        Err(e) if !conn::is_transient(&e) => {
            tracing::warn!("could not check whether chunk {} of {} was withdrawn: {e}", msg.task, msg.caller);
            Ok(false)
        }
        r => r,
    }
}

/// The items of a chunk, from the entry or its blob key; the error of a
/// Redis that stayed away (transient) as the outer error: the arguments may
/// well be there once it is back. Tries Redis again only while
/// `keep_trying` says so.
pub(super) fn load_args(
    conn: &mut Conn,
    args: &Args,
    keep_trying: impl Fn() -> bool,
) -> RedisResult<Result<Vec<ByteBuf>, TaskFailure>> {
    let (key, len) = match args {
        Args::Inline(items) => return Ok(Ok(items.clone())),
        Args::Blob { key, len } => (key, len),
    };
    if *len > schema::MAX_MESSAGE as u64 {
        return Ok(Err(TaskFailure::Unserializable(format!("arguments of {len} bytes are over the limit"))));
    }
    let get = |c: &mut conn::Link| redis::cmd("GET").arg(key).query(c);
    let bytes: Option<Vec<u8>> = match conn.retry_while(Duration::from_secs(10), None, keep_trying, get) {
        Ok(bytes) => bytes,
        Err(e) if conn::is_transient(&e) => return Err(e),
        Err(e) => return Ok(Err(TaskFailure::ArgumentsLost(format!("reading {key}: {e}")))),
    };
    let Some(bytes) = bytes else { return Ok(Err(TaskFailure::ArgumentsLost(format!("{key} does not exist")))) };
    Ok(schema::decode_blob(&bytes).map_err(|e| TaskFailure::Unserializable(format!("arguments in {key}: {e}"))))
}
