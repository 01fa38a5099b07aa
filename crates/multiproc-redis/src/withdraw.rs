//! Withdrawing the chunks a caller no longer waits for (a call dropped,
//! out of wait time, terminated, or its pool dropped): their entries still
//! in the task stream are deleted with their argument keys, and the chunks
//! are marked withdrawn in the caller's set `P:Q:withdrawn:C` (see
//! [`crate::schema`]), so that a host drops unrun a chunk delivered again
//! under an entry id the caller does not know. A chunk a host already runs
//! finishes there, and its result is dropped.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redis::RedisResult;

use crate::conn::Conn;
use crate::dispatch::{Pending, Shared};

/// The chunks to withdraw, gathered from their [`Pending`] records.
#[derive(Debug, Default)]
pub(crate) struct Withdrawal {
    tasks: Vec<u64>,
    entries: Vec<String>,
    blobs: Vec<String>,
}

impl Withdrawal {
    /// Adds chunk `task`, whose record (taken out of the pool's pending
    /// chunks) is `pending`.
    pub(crate) fn add(&mut self, task: u64, pending: &Pending) {
        self.add_parts(task, pending.entry.clone(), pending.blob.clone());
    }

    /// Adds chunk `task`, queued under `entry` (if it is known to be), its
    /// arguments in the key `blob` (if they have one of their own).
    pub(crate) fn add_parts(&mut self, task: u64, entry: Option<String>, blob: Option<String>) {
        self.tasks.push(task);
        self.entries.extend(entry);
        self.blobs.extend(blob);
    }

    /// How many entries it deletes: none when no chunk was queued (a batch
    /// refused, or not confirmed), and there is nothing to do.
    pub(crate) fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Deletes the entries and argument keys, and marks the chunks
    /// withdrawn, waiting for Redis no later than `deadline`.
    ///
    /// # Errors
    ///
    /// The first Redis error (the commands after it are still tried).
    pub(crate) fn run(&self, conn: &mut Conn, shared: &Shared, deadline: Option<Instant>) -> RedisResult<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let stream = shared.keys.tasks();
        let mut done = conn.run_until(deadline, |c| redis::cmd("XDEL").arg(&stream).arg(&self.entries).exec(c));
        if !self.blobs.is_empty() {
            done = done.and(conn.run_until(deadline, |c| redis::cmd("DEL").arg(&self.blobs).exec(c)));
        }
        // The set lives as long as the results could: a chunk still
        // delivered after that has no caller to report to anyway. One
        // transaction, so the set never stays without its expiry.
        // Scored with the time each is forgotten, and the ones past it are
        // removed: a pool that withdraws more often than once a TTL keeps
        // the key alive, and it must not grow for ever.
        let withdrawn = shared.keys.withdrawn(&shared.caller);
        let ttl_ms = u64::try_from(shared.options.result_ttl.as_millis()).unwrap_or(u64::MAX);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let forget_at = now_ms.saturating_add(ttl_ms);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("ZREMRANGEBYSCORE").arg(&withdrawn).arg("-inf").arg(now_ms).ignore();
        let add = pipe.cmd("ZADD").arg(&withdrawn);
        for task in &self.tasks {
            add.arg(forget_at).arg(*task);
        }
        add.ignore();
        pipe.cmd("PEXPIRE").arg(&withdrawn).arg(ttl_ms).ignore();
        done.and(conn.run_until(deadline, |c| c.exec_pipeline(&pipe)))
    }
}
