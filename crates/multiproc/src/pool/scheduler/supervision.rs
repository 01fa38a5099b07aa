//! The scheduler's workers: starting them, replacing the ones that died or
//! retired, killing the ones over the task timeout, and deciding, when one
//! exits, the fate of the chunks it held.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::*;

/// When a worker's status page could not be read consistently (it was
/// inside an update), the next look comes this much later.
const STATUS_RETRY: Duration = Duration::from_millis(5);

/// The least time a worker must stay inside one update of its status page
/// to be taken for stuck, however short the task timeout: a live worker can
/// be descheduled inside an update for a time slice or more on a busy
/// machine.
const STUCK_FLOOR: Duration = Duration::from_secs(1);

impl Scheduler {
    pub(super) fn spawn_worker(&mut self) -> Result<Worker, PoolError> {
        let number = self.next_number;
        self.next_number += 1;
        let io = |e: std::io::Error| PoolError::Start(crate::ProcessError::Start(e));
        let (ours, theirs) = imp::socketpair().map_err(io)?;
        let status = StatusPage::new().map_err(io)?;
        let init = match &self.config.init {
            None => None,
            Some(t) => Some(InitSpec {
                runner: t.runner,
                args: t.args.clone(),
                fds: t.fds.iter().map(|f| f.try_clone().map(SendFd::from)).collect::<Result<_, _>>().map_err(io)?,
            }),
        };
        let config = WorkerConfig {
            socket: SendFd::from(theirs),
            status: SendFd::from(status.as_fd().try_clone_to_owned().map_err(io)?),
            init,
            timed: self.config.timeout.is_some(),
        };
        let process = Process::builder()
            .name(format!("PoolWorker-{number}"))
            .daemon(true)
            .start_method(self.config.method)
            .spawn(worker_main, (config,))
            .map_err(PoolError::Start)?;
        let pid = process.pid().unwrap_or(0);
        Ok(Worker {
            process,
            pid,
            channel: Channel::unix(ours),
            outbox: Outbox::default(),
            batch: Batch::default(),
            status,
            input_ring: None,
            output_ring: None,
            known_slabs: HashSet::new(),
            fds_in: VecDeque::new(),
            inflight: VecDeque::new(),
            received: 0,
            assigned: 0,
            retiring: false,
            stopping: false,
            eof_at: None,
            killed: false,
            timed_out: None,
            status_stuck: None,
            init_message: None,
            per_chunk_ns: 0.0,
            depth: FIRST_DEPTH,
            last_arrival: Instant::now(),
        })
    }

    /// Starts workers in place of the ones that died or retired.
    pub(super) fn replenish(&mut self) {
        let active =
            self.workers.iter().filter(|w| !w.retiring && !w.stopping && !w.killed && w.eof_at.is_none()).count();
        let wanted = !self.closed || !self.pending.is_empty();
        if !wanted || (self.broken.is_some() && !self.start_broken) {
            self.respawn_at = None;
            return;
        }
        if self.respawn_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.respawn_at = None;
        for _ in active..self.config.processes {
            match self.spawn_worker() {
                Ok(w) => {
                    lifecycle!(INFO, "pool worker replaced: started {} (pid {})", w.process.name(), w.pid);
                    self.workers.push(w);
                    if self.start_broken {
                        lifecycle!(INFO, "pool workers can be started again: the pool takes tasks again");
                        self.start_broken = false;
                        self.broken = None;
                        self.init_failures = 0;
                    }
                }
                Err(e) => {
                    tracing::warn!("could not start a pool worker: {e}");
                    self.init_failed(format!("a worker could not be started: {e}"));
                    self.start_broken |= self.broken.is_some();
                    let delay = if self.start_broken { BROKEN_RETRY } else { RESPAWN_DELAY };
                    self.respawn_at = Some(Instant::now() + delay);
                    break;
                }
            }
        }
    }

    /// A worker was killed by `signal` in its initializer: replaced, unless
    /// every worker slot saw [`INIT_KILLS_PER_WORKER_LIMIT`] such deaths in
    /// a row.
    fn init_killed(&mut self, signal: i32) {
        self.init_kills += 1;
        let limit = INIT_KILLS_PER_WORKER_LIMIT.saturating_mul(self.config.processes.max(1) as u32);
        if self.init_kills >= limit && self.broken.is_none() {
            self.broken = Some(format!(
                "{} workers in a row were killed by signal {signal} ({}) while running the initializer: \
                 either the initializer kills its own worker, or something outside the pool (kill, the OOM \
                 killer) kills every new worker; the pool stopped starting workers, build a new one",
                self.init_kills,
                imp::signal_name(signal)
            ));
        }
    }

    fn init_failed(&mut self, message: String) {
        self.init_failures += 1;
        if self.init_failures >= INIT_FAILURE_LIMIT {
            self.broken = Some(message);
        }
    }

    /// Kills workers whose current item is over the timeout; the next time
    /// to look again.
    pub(super) fn check_timeouts(&mut self) -> Option<Instant> {
        let limit = self.config.timeout?;
        // Saturating: a limit past what a u64 of nanoseconds (or an
        // `Instant`) holds, `Duration::MAX` for one, is no limit at all.
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        let now_ns = ring::monotonic_ns();
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for w in &mut self.workers {
            if w.inflight.is_empty() || w.killed {
                w.status_stuck = None;
                continue;
            }
            let Some(st) = w.status.read() else {
                // Caught inside an update of its status page at every try:
                // a live worker between two quick updates, one descheduled
                // inside an update (look again soon), or one stopped there.
                // Only a worker inside the same update (the same odd
                // sequence word) at every look for the timeout, and at
                // least `STUCK_FLOOR`, is taken for stuck and killed; its
                // running chunk counts as lost: no timeout is charged to an
                // item that a half-written page cannot name for sure.
                if let Some(stuck_for) = stuck_in_update(&mut w.status_stuck, w.status.seq(), now, limit) {
                    lifecycle!(
                        WARN,
                        "pool worker {} (pid {}) was stuck for {stuck_for:?} inside an update of its status page \
                         (stopped?); killing it",
                        w.process.name(),
                        w.pid
                    );
                    w.kill();
                    continue;
                }
                let Some(at) = now.checked_add(STATUS_RETRY.min(limit)) else { continue };
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            };
            w.status_stuck = None;
            let at = if st.phase == PHASE_ITEM {
                let ran = now_ns.saturating_sub(st.item_started_ns);
                if ran >= limit_ns {
                    w.timed_out = Some((st.started.saturating_sub(1), st.item));
                    w.kill();
                    continue;
                }
                now.checked_add(Duration::from_nanos(limit_ns - ran))
            } else {
                now.checked_add(limit)
            };
            let Some(at) = at else { continue };
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// A worker exited: collect what it sent, decide the fate of its chunks,
    /// reap it.
    pub(super) fn on_exit(&mut self, i: usize) {
        let mut w = self.workers.remove(i);
        let now = Instant::now();
        if w.eof_at.is_none() {
            w.read_all(now);
        }
        let code = w.process.exitcode();
        let _ = w.process.join_timeout(Duration::ZERO);
        if w.stopping || (w.retiring && w.inflight.is_empty()) {
            lifecycle!(DEBUG, "pool worker {} (pid {}) ended ({})", w.process.name(), w.pid, describe(code));
        } else {
            lifecycle!(
                WARN,
                "pool worker {} (pid {}) died ({}) with {} chunk(s) in flight; replacing it",
                w.process.name(),
                w.pid,
                describe(code),
                w.inflight.len()
            );
        }
        let st = w.status.read_after_exit();
        if st.phase == PHASE_INIT && w.received == 0 && !w.stopping {
            match (w.init_message.take(), code) {
                (Some(message), _) => self.init_failed(format!("the initializer failed: {message}")),
                (None, Some(c)) if c < 0 && imp::usually_sent_from_outside(-c) => self.init_killed(-c),
                (None, _) => {
                    self.init_failed(format!("a worker died while running the initializer ({})", describe(code)))
                }
            }
        } else if w.received > 0 || st.phase != PHASE_INIT {
            self.init_failures = 0;
            self.init_kills = 0;
        }
        if w.inflight.is_empty() {
            return;
        }
        let (signal, exit_code) = match code {
            Some(c) if c < 0 => (Some(-c), None),
            Some(c) => (None, Some(c)),
            None => (None, None),
        };
        let lost = TaskError::WorkerLost { pid: w.pid, signal, code: exit_code };
        let running = st.started.checked_sub(1).filter(|_| matches!(st.phase, PHASE_ITEM | PHASE_CHUNK));
        let mut requeue = Vec::with_capacity(w.inflight.len());
        for (k, inflight) in w.inflight.drain(..).enumerate() {
            let seq = w.received + k as u64;
            let mut chunk = inflight.chunk;
            if chunk.job.abandoned() {
                continue; // nobody will read its results: do not run it again
            }
            match w.timed_out {
                // Killed for a task over the timeout: that task fails, the
                // rest of its chunk runs again elsewhere.
                Some((tseq, item)) if tseq == seq => {
                    chunk.skip.push((item, TaskError::Timeout(self.config.timeout.unwrap_or_default())));
                }
                // The chunk it was running is the lost one: it fails now (or
                // runs again while retries are left).
                None if running == Some(seq) => {
                    chunk.lost += 1;
                    if chunk.lost > self.config.retries {
                        chunk.fail_with(&lost);
                        continue;
                    }
                }
                // Chunks it finished (results not sent) or had not started.
                _ => {}
            }
            requeue.push(chunk);
        }
        for chunk in requeue.into_iter().rev() {
            self.pending.push_front(chunk);
        }
    }

    /// Kills every worker and fails every task with `Terminated`.
    pub(super) fn terminate_all(&mut self) {
        for w in &mut self.workers {
            w.kill();
        }
        for chunk in self.pending.drain(..) {
            chunk.fail(TaskError::Terminated);
        }
        for w in &mut self.workers {
            for inflight in w.inflight.drain(..) {
                inflight.chunk.fail(TaskError::Terminated);
            }
        }
        self.fail_inbox(TaskError::Terminated);
        let deadline = Deadline::after(Duration::from_secs(5));
        for mut w in self.workers.drain(..) {
            if let Some(fd) = w.exit_fd() {
                let _ = imp::wait_readable(fd, deadline);
            }
            let _ = w.process.join_timeout(Duration::ZERO);
        }
    }
}

/// Whether a worker whose status page could not be read is stuck inside
/// one update of it, given `seq`, its sequence word seen at this look, at
/// `now`, with the task timeout `limit`. `stuck` holds the odd word seen at
/// every look since the instant paired with it, and is updated here: a
/// different word (the worker moved on, to another update or out of one)
/// restarts the clock, an even one clears it. Stuck only when the same odd
/// word stayed for `limit`, and at least [`STUCK_FLOOR`]; then how long it
/// stayed.
fn stuck_in_update(stuck: &mut Option<(u64, Instant)>, seq: u64, now: Instant, limit: Duration) -> Option<Duration> {
    let since = match *stuck {
        Some((held, since)) if held == seq => since,
        _ => {
            *stuck = (seq & 1 == 1).then_some((seq, now));
            now
        }
    };
    let held = now.saturating_duration_since(since);
    (held >= limit.max(STUCK_FLOOR)).then_some(held)
}

/// Says how a worker ended, from its exit code (negative: the signal).
fn describe(code: Option<i32>) -> String {
    match code {
        Some(c) if c < 0 => format!("signal {} ({})", -c, imp::signal_name(-c)),
        Some(c) => format!("exit code {c}"),
        None => "unknown status".into(),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// An odd sequence word: a worker inside an update of its page.
    const INSIDE: u64 = 41;

    /// Looks at a page holding each word of `looks`, at its offset from
    /// `t0`, with the task timeout `limit`; whether each look found the
    /// worker stuck, and what was held after the last.
    fn look(looks: &[(u64, u64)], limit: Duration) -> (Vec<bool>, Option<(u64, Instant)>) {
        let t0 = Instant::now();
        let mut stuck = None;
        let seen = looks
            .iter()
            .map(|&(seq, ms)| stuck_in_update(&mut stuck, seq, t0 + Duration::from_millis(ms), limit).is_some())
            .collect();
        (seen, stuck)
    }

    /// Held the same odd word for less than the floor (and past a short
    /// timeout): not stuck yet.
    #[test]
    fn the_same_odd_word_for_less_than_the_timeout_and_floor_is_not_stuck() {
        let (seen, held) = look(&[(INSIDE, 0), (INSIDE, 300), (INSIDE, 999)], Duration::from_millis(100));
        assert_eq!(seen, [false, false, false]);
        assert_eq!(held.map(|(seq, _)| seq), Some(INSIDE));
        // Under a timeout longer than the floor, the timeout is what counts.
        let (seen, _) = look(&[(INSIDE, 0), (INSIDE, 1_500), (INSIDE, 4_999)], Duration::from_secs(5));
        assert_eq!(seen, [false, false, false]);
    }

    /// Held the same odd word for the timeout (over the floor): stuck.
    #[test]
    fn the_same_odd_word_held_for_the_timeout_is_stuck() {
        let (seen, _) = look(&[(INSIDE, 0), (INSIDE, 2_000), (INSIDE, 5_000)], Duration::from_secs(5));
        assert_eq!(seen, [false, false, true]);
        let (seen, _) = look(&[(INSIDE, 0), (INSIDE, 1_000)], Duration::from_millis(100));
        assert_eq!(seen, [false, true]);
        // Stuck: for as long as the word was held (what the warning says).
        let t0 = Instant::now();
        let mut stuck = Some((INSIDE, t0));
        let held = stuck_in_update(&mut stuck, INSIDE, t0 + Duration::from_millis(1_500), Duration::from_millis(100));
        assert_eq!(held, Some(Duration::from_millis(1_500)));
    }

    /// A live worker caught inside a different update at each look: the
    /// clock starts again each time, so it is never stuck.
    #[test]
    fn an_odd_word_that_changes_between_looks_restarts_the_clock() {
        let looks = [(INSIDE, 0), (INSIDE + 2, 600), (INSIDE + 4, 1_200), (INSIDE + 6, 1_800), (INSIDE + 6, 2_700)];
        let (seen, held) = look(&looks, Duration::from_millis(1));
        assert_eq!(seen, [false; 5]);
        assert_eq!(held.map(|(seq, _)| seq), Some(INSIDE + 6));
        // Held since t0, another odd word long after: held since that look.
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3);
        let mut stuck = Some((INSIDE, t0));
        assert_eq!(stuck_in_update(&mut stuck, INSIDE + 2, later, Duration::from_millis(1)), None);
        assert_eq!(stuck, Some((INSIDE + 2, later)));
    }

    /// An even word (out of any update) clears what was held, and is never
    /// stuck however long it stays.
    #[test]
    fn an_even_word_clears_the_clock_and_is_never_stuck() {
        let (seen, held) = look(&[(INSIDE, 0), (INSIDE + 1, 2_000)], Duration::from_millis(1));
        assert_eq!(seen, [false, false]);
        assert_eq!(held, None);
        let (seen, held) = look(&[(INSIDE + 1, 0), (INSIDE + 1, 10_000)], Duration::from_millis(1));
        assert_eq!(seen, [false, false]);
        assert_eq!(held, None);
        // The same odd word seen again after an even one starts over.
        let (seen, _) = look(&[(INSIDE, 0), (INSIDE + 1, 900), (INSIDE, 1_000), (INSIDE, 1_999)], Duration::ZERO);
        assert_eq!(seen, [false; 4]);
    }

    /// A tiny task timeout does not shorten the floor: a worker must stay
    /// inside the same update for a whole second.
    #[test]
    fn a_tiny_timeout_still_needs_the_one_second_floor() {
        for limit in [Duration::ZERO, Duration::from_nanos(1), Duration::from_millis(1)] {
            let (seen, _) = look(&[(INSIDE, 0), (INSIDE, 5), (INSIDE, 500), (INSIDE, 999), (INSIDE, 1_000)], limit);
            assert_eq!(seen, [false, false, false, false, true], "timeout {limit:?}");
        }
        assert_eq!(STUCK_FLOOR, Duration::from_secs(1));
    }
}
