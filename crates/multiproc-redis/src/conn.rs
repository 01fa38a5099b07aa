//! One Redis connection that reconnects: a command that fails because the
//! server went away (or is loading its data after a restart) is run again on
//! a new connection, until a deadline.

use std::fmt;
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisError, RedisResult};

/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reply may take (longer than any `BLOCK` this crate asks for).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A reconnecting connection.
pub(crate) struct Conn {
    client: Client,
    con: Option<Connection>,
    /// Connections made so far: a change means the last one was lost.
    connects: u64,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").field("server", &self.client.get_connection_info().addr()).finish()
    }
}

/// True for errors that a new connection (a little later) may cure.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("LOADING")
        || e.code() == Some("TRYAGAIN")
}

impl Conn {
    /// A connection to `url`, made now.
    pub(crate) fn open(url: &str) -> RedisResult<Conn> {
        let client = Client::open(url)?;
        let mut conn = Conn { client, con: None, connects: 0 };
        conn.connection()?;
        Ok(conn)
    }

    /// A second connection to the same server.
    pub(crate) fn another(&self) -> RedisResult<Conn> {
        let mut conn = Conn { client: self.client.clone(), con: None, connects: 0 };
        conn.connection()?;
        Ok(conn)
    }

    fn connection(&mut self) -> RedisResult<&mut Connection> {
        if self.con.is_none() {
            let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            con.set_read_timeout(Some(REPLY_TIMEOUT))?;
            con.set_write_timeout(Some(REPLY_TIMEOUT))?;
            self.con = Some(con);
            self.connects += 1;
        }
        Ok(self.con.as_mut().unwrap_or_else(|| unreachable!("set above")))
    }

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
    pub(crate) fn run<T>(&mut self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        let result = self.connection().and_then(f);
        if let Err(e) = &result
            && is_transient(e)
        {
            self.con = None;
        }
        result
    }

    /// Runs `f` until it succeeds, fails with an error that is not
    /// transient, or `patience` has passed since the first failure
    /// (then the last error). Waits 50 ms, doubling up to 1 s, between tries.
    pub(crate) fn retry<T>(
        &mut self,
        patience: Duration,
        f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        self.retry_while(patience, || true, f)
    }

    /// As [`Conn::retry`], giving up early (with the last error) once
    /// `keep_trying` says no.
    pub(crate) fn retry_while<T>(
        &mut self,
        patience: Duration,
        keep_trying: impl Fn() -> bool,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut first_failure: Option<Instant> = None;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.run(&mut f) {
                Err(e) if is_transient(&e) => {
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    if since.elapsed() >= patience || !keep_trying() {
                        return Err(e);
                    }
                    tracing::warn!("redis unavailable ({e}); trying again in {pause:?}");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}
