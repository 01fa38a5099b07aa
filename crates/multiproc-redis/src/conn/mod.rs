//! One Redis connection that reconnects: a command that fails because the
//! server went away (or is loading its data after a restart) is run again on
//! a new connection, until a deadline.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use redis::{Client, Cmd, Connection, ConnectionLike, Pipeline, RedisError, RedisResult, Value};

/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reply may take (longer than any `BLOCK` this crate asks for).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`Conn::retry_while`] asks whether to keep trying while it
/// waits between two tries.
const RETRY_POLL: Duration = Duration::from_millis(50);

/// How far the wait bound on the socket may be above the one a command
/// asks for before it is set again (each setting is a system call): every
/// bound of this crate holds to within this, less than a few ticks of the
/// kernel's timer (to which it rounds socket timeouts anyway). The socket's
/// bound is never below the one asked for.
const TIMEOUT_SLACK: Duration = Duration::from_millis(10);

/// A reconnecting connection.
pub(crate) struct Conn {
    client: Client,
    link: Option<Link>,
    /// How long a reply may take ([`REPLY_TIMEOUT`] unless set).
    reply_timeout: Duration,
    /// Connections made so far: a change means the last one was lost.
    connects: u64,
}

/// One connection, with the read and write timeouts last set on its
/// socket, so that a command sets them only when they change. Commands
/// run on it as on a [`Connection`] (it is [`ConnectionLike`]); pipelines
/// through [`Link::exec_pipeline`], which keeps their bound.
pub(crate) struct Link {
    con: Connection,
    /// The socket's read timeout (redis-rs leaves none after connecting).
    read_timeout: Option<Duration>,
    /// The socket's write timeout.
    write_timeout: Option<Duration>,
    /// Timeouts set on the socket so far (system calls made).
    #[cfg(test)]
    timeout_sets: u64,
}

/// True if a socket whose timeout is `current` must be set again to wait
/// `wanted`: it would wait less, or more than [`TIMEOUT_SLACK`] longer.
fn needs_setting(current: Option<Duration>, wanted: Duration) -> bool {
    current.is_none_or(|current| current < wanted || current > wanted.saturating_add(TIMEOUT_SLACK))
}

impl Link {
    fn new(con: Connection) -> Link {
        Link {
            con,
            read_timeout: None,
            write_timeout: None,
            #[cfg(test)]
            timeout_sets: 0,
        }
    }

    /// Bounds each read from the socket by `timeout` (give or take
    /// [`TIMEOUT_SLACK`]), setting it only if it changes.
    fn bound_reads(&mut self, timeout: Duration) -> RedisResult<()> {
        if needs_setting(self.read_timeout, timeout) {
            self.con.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
            self.count_timeout_set();
        }
        Ok(())
    }

    /// Bounds each write to the socket by `timeout`, as
    /// [`Link::bound_reads`].
    fn bound_writes(&mut self, timeout: Duration) -> RedisResult<()> {
        if needs_setting(self.write_timeout, timeout) {
            self.con.set_write_timeout(Some(timeout))?;
            self.write_timeout = Some(timeout);
            self.count_timeout_set();
        }
        Ok(())
    }

    fn count_timeout_set(&mut self) {
        #[cfg(test)]
        {
            self.timeout_sets += 1;
        }
    }

    /// Runs `pipe` and checks its replies for errors, waiting for all of
    /// them together no longer than the read timeout set for this command
    /// by [`Conn::run_until`] (its reply timeout, or less before a
    /// deadline): redis-rs's own pipelines wait for each reply up to the
    /// read timeout, even after one timed out, so a server that stops
    /// answering would hold a pipeline of `n` commands `n` times the
    /// timeout. Use it inside [`Conn::run`] (a timeout drops the
    /// connection, whose replies are then out of step).
    pub(crate) fn exec_pipeline(&mut self, pipe: &Pipeline) -> RedisResult<()> {
        let end = Instant::now() + self.read_timeout.unwrap_or(REPLY_TIMEOUT);
        self.con.send_packed_command(&pipe.get_packed_pipeline())?;
        // A transaction adds the replies of MULTI and EXEC.
        let mut replies = pipe.len() + if pipe.is_transaction() { 2 } else { 0 };
        let mut first_error = None;
        while replies > 0 {
            // Set again only once the deadline is nearer than the socket's
            // bound by more than the slack: at most once per slack of the
            // pipeline's time, however many replies. A bound set once for
            // the whole pipeline would let a read that starts late block
            // past the deadline by as much as the pipeline had taken.
            self.bound_reads(time_left(Some(end))?)?;
            match self.con.recv_response()? {
                Value::Push { .. } => continue, // not a reply (RESP3)
                reply => {
                    if let Err(e) = reply.extract_error() {
                        first_error.get_or_insert(e);
                    }
                    replies -= 1;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.con.req_packed_command(cmd)
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        self.con.req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.con.req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        self.con.get_db()
    }

    fn supports_pipelining(&self) -> bool {
        self.con.supports_pipelining()
    }

    fn check_connection(&mut self) -> bool {
        self.con.check_connection()
    }

    fn is_open(&self) -> bool {
        self.con.is_open()
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("server", &self.client.get_connection_info().addr()).finish()
    }
}

/// True for errors that a new connection (a little later) may cure; with
/// them, the refusals of a server that refuses every command for a while
/// (see [`is_refusal`]).
pub(crate) fn is_transient(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() || is_refusal(e)
}

/// True for the answer of a server that did not run the command and will
/// run it later: still loading its data (`LOADING`), running a script past
/// `busy-reply-threshold` (`BUSY`: until it ends, or is killed), or asking
/// to try again (`TRYAGAIN`). Unlike a lost reply, it says for sure that
/// the command did not run.
pub(crate) fn is_refusal(e: &RedisError) -> bool {
    matches!(e.code(), Some("LOADING" | "TRYAGAIN" | "BUSY"))
}

/// The error of a command not sent (or not answered) because its
/// deadline passed.
pub(crate) fn deadline_passed() -> RedisError {
    io::Error::new(io::ErrorKind::TimedOut, "redis did not answer in time (before the deadline of the call or command)")
        .into()
}

/// The time left until `deadline` (`Duration::MAX` without one), or the
/// error of a deadline that has passed.
fn time_left(deadline: Option<Instant>) -> RedisResult<Duration> {
    match deadline {
        None => Ok(Duration::MAX),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(deadline_passed()),
        },
    }
}

impl Conn {
    /// A connection to `url`, made now.
    pub(crate) fn open(url: &str) -> RedisResult<Conn> {
        Conn::open_until(url, None)
    }

    /// A connection to `url`, made now and no later than `deadline`.
    pub(crate) fn open_until(url: &str, deadline: Option<Instant>) -> RedisResult<Conn> {
        Conn::of(Client::open(url)?, deadline)
    }

    /// A second connection to the same server.
    pub(crate) fn another(&self) -> RedisResult<Conn> {
        Conn::of(self.client.clone(), None)
    }

    fn of(client: Client, deadline: Option<Instant>) -> RedisResult<Conn> {
        let mut conn = Conn { client, link: None, reply_timeout: REPLY_TIMEOUT, connects: 0 };
        conn.connection(time_left(deadline)?)?;
        Ok(conn)
    }

    /// This connection with replies waited for at most `timeout` (for a
    /// connection whose commands all answer soon, so that it notices a
    /// server that stopped answering soon too).
    pub(crate) fn with_reply_timeout(mut self, timeout: Duration) -> Conn {
        self.reply_timeout = timeout;
        self
    }

    /// The connection (made now if there is none), with its connect and
    /// reply timeouts no longer than `limit`.
    fn connection(&mut self, limit: Duration) -> RedisResult<&mut Link> {
        if self.link.is_none() {
            let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT.min(limit))?;
            self.link = Some(Link::new(con));
            self.connects += 1;
        }
        let link = self.link.as_mut().unwrap_or_else(|| unreachable!("set above"));
        let reply_timeout = self.reply_timeout.min(limit);
        link.bound_reads(reply_timeout)?;
        link.bound_writes(reply_timeout)?;
        Ok(link)
    }

    /// Closes the connection; the next command makes a new one. The server
    /// then frees what it kept for the old one (the query buffer of a
    /// huge command it refused, which counts toward its `maxmemory`).
    pub(crate) fn reconnect(&mut self) {
        self.link = None;
    }

    /// The longest one attempt of a command may wait for Redis: a connect
    /// and a reply.
    pub(crate) fn attempt_bound(&self) -> Duration {
        CONNECT_TIMEOUT.saturating_add(self.reply_timeout)
    }

    /// The longest [`Conn::retry_while`] waits between two tries.
    pub(crate) const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

    /// How many connections were made so far (a new one after each loss).
    pub(crate) fn connects(&self) -> u64 {
        self.connects
    }

    /// The server's run id (new at each start) and whether it keeps an
    /// append-only file.
    pub(crate) fn server_identity(&mut self) -> RedisResult<(String, bool)> {
        let info: String = self.run(|c| redis::cmd("INFO").arg("server").arg("persistence").query(c))?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim)
        };
        Ok((field("run_id").unwrap_or_default().to_string(), field("aof_enabled") == Some("1")))
    }

    /// Runs `f` once on the connection; a transient error drops the
    /// connection so the next call makes a new one.
    pub(crate) fn run<T>(&mut self, f: impl FnOnce(&mut Link) -> RedisResult<T>) -> RedisResult<T> {
        self.run_until(None, f)
    }

    /// As [`Conn::run`], connecting and waiting for the reply no later than
    /// `deadline`: a server that stops answering (paused, cut off) costs the
    /// caller no more than the time it has.
    ///
    /// The bound holds for one command per `f`: redis-rs reads every reply
    /// of a pipeline, each with the full reply timeout, even after one
    /// timed out, so a pipeline of `n` commands may block `n` times longer
    /// (run it with [`Link::exec_pipeline`]).
    ///
    /// A transient error drops the connection (the next command connects
    /// anew), but for a refusal ([`is_refusal`]): the server answered, so
    /// the connection is there and in step, and it is kept.
    pub(crate) fn run_until<T>(
        &mut self,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut Link) -> RedisResult<T>,
    ) -> RedisResult<T> {
        // A deadline already passed sends nothing and keeps the connection.
        let limit = time_left(deadline)?;
        let result = self.connection(limit).and_then(f);
        if let Err(e) = &result
            && is_transient(e)
            && !is_refusal(e)
        {
            self.link = None;
        }
        result
    }

    /// Runs `f` until it succeeds, fails with an error that is not
    /// transient, or `patience` has passed since the first failure (then
    /// the last error); gives up early (with the last error) once
    /// `keep_trying` says no or `deadline` passes, and no attempt waits
    /// past `deadline`. Waits 50 ms, doubling up to 1 s, between tries.
    ///
    /// `keep_trying` is asked after each failure, every
    /// [`RETRY_POLL`] of the wait, and before each new attempt: once it
    /// says no, at most the attempt under way (one connect and one reply)
    /// and one poll pass before this returns.
    pub(crate) fn retry_while<T>(
        &mut self,
        patience: Duration,
        deadline: Option<Instant>,
        keep_trying: impl Fn() -> bool,
        mut f: impl FnMut(&mut Link) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut first_failure: Option<Instant> = None;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.run_until(deadline, &mut f) {
                Err(e) if is_transient(&e) => {
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    let Ok(left) = time_left(deadline) else { return Err(e) };
                    if since.elapsed() >= patience || !keep_trying() {
                        return Err(e);
                    }
                    tracing::warn!("redis unavailable ({e}); trying again in {pause:?}");
                    let wake = Instant::now() + pause.min(left);
                    loop {
                        let now = Instant::now();
                        if now >= wake || !keep_trying() {
                            break;
                        }
                        std::thread::sleep((wake - now).min(RETRY_POLL));
                    }
                    if !keep_trying() {
                        return Err(e);
                    }
                    pause = (pause * 2).min(Conn::MAX_RETRY_PAUSE);
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod test;
