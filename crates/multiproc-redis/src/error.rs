//! Errors of distributed tasks and of pool calls.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why one task produced no value. It travels from the worker host to the
/// caller in the result stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TaskFailure {
    /// The task panicked; the worker process survived.
    #[error("the task panicked: {message}{}", location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The panic message.
        message: String,
        /// Where it panicked, if known.
        location: Option<String>,
    },
    /// The worker process running the task died (crash, kill, out of memory).
    #[error("{0}")]
    WorkerLost(String),
    /// The task ran longer than its timeout and its process was killed.
    #[error("the task ran longer than its {0:?} timeout; its worker process was killed")]
    Timeout(Duration),
    /// The argument or result could not be (de)serialized.
    #[error("the task's {0}")]
    Unserializable(String),
    /// A worker of another build refused the task: it would run other code.
    #[error(
        "refused by a worker of another build (worker {worker_build}, task {task_build}): run workers from the caller's binary"
    )]
    Refused {
        /// The worker's build id.
        worker_build: String,
        /// The caller's build id.
        task_build: String,
    },
    /// A worker refused the task because it was not signed with the
    /// worker's key (or was forged).
    #[error(
        "refused: the task is not signed with the worker's key (entry MAC does not match); give the pool and its workers the same auth key"
    )]
    WrongKey,
    /// The task failed on every one of its deliveries and is now in the
    /// dead-letter stream.
    #[error("the task failed {attempts} deliveries and went to the dead-letter stream; last error: {last_error}")]
    DeadLettered {
        /// Deliveries made.
        attempts: u32,
        /// The last delivery's error.
        last_error: String,
    },
    /// The task ran, but Redis refused to store its result (out of memory
    /// under `maxmemory` with `noeviction`): the worker host wrote this
    /// small failure in its place.
    #[error(
        "the task ran but redis refused to store its result ({0}); give redis room (maxmemory) or return less, and submit it again"
    )]
    ResultRefused(String),
    /// The task's arguments were no longer in Redis (their key expired or
    /// Redis lost them).
    #[error("the task's arguments are gone from redis ({0}); submit it again")]
    ArgumentsLost(String),
}

/// Why a pool call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisPoolError {
    /// A task failed; `index` is its position in the call's input.
    #[error("task {index} failed: {error}")]
    Task {
        /// Position in the input (0 for `apply`).
        index: usize,
        /// What happened to it.
        error: TaskFailure,
    },
    /// Redis could not be reached or refused a command, for longer than
    /// the pool's reconnect timeout.
    #[error("redis: {0}")]
    Redis(String),
    /// A worker host could not start its local pool of worker processes
    /// (this host's limits: processes, open files, memory); Redis is not
    /// at fault.
    #[error("could not start the local pool of worker processes: {0}")]
    LocalPool(String),
    /// Something on this host failed, not Redis: a thread could not be
    /// started (the host's limit of threads or memory), the OS's source of
    /// randomness failed, or a call's own thread ended without its result.
    #[error("{what}: {source}; {remedy}")]
    Local {
        /// What could not be done.
        what: &'static str,
        /// The OS's error.
        source: io::Error,
        /// What to do about it.
        remedy: &'static str,
    },
    /// An argument could not be serialized (handles such as pipes and
    /// queues cannot leave the host).
    #[error("task {index}'s argument could not be serialized: {reason}")]
    Encode {
        /// Position in the input.
        index: usize,
        /// Why.
        reason: String,
    },
    /// No result within the wait's timeout. A call out of wait time
    /// ([`RedisPoolBuilder::wait_timeout`](crate::RedisPoolBuilder::wait_timeout))
    /// deletes its tasks still queued (those running finish);
    /// [`RedisAsync::get_timeout`](crate::RedisAsync::get_timeout) stops
    /// nothing (ask again later).
    #[error("not finished within {0:?}")]
    Timeout(Duration),
    /// The value was already taken by an earlier `get`.
    #[error("the result was already taken by an earlier get")]
    Taken,
    /// The pool was closed ([`RedisPool::close`](crate::RedisPool::close))
    /// or terminated: it takes no new calls.
    #[error("the pool is closed and takes no new calls; connect a new pool")]
    Closed,
    /// The pool was terminated
    /// ([`RedisPool::terminate`](crate::RedisPool::terminate)) before the
    /// result arrived; the task may still run on a worker host.
    #[error("the pool was terminated before the result arrived")]
    Terminated,
    /// The [`RedisPool`](crate::RedisPool) was dropped while this call (a
    /// background call, an `imap` iterator) still waited for results: no
    /// result can arrive any more. Its tasks still queued were withdrawn,
    /// as by [`RedisPool::terminate`](crate::RedisPool::terminate); one a
    /// worker host already ran finishes there (or, if Redis did not answer
    /// the drop, the others may run too). Keep the pool alive until its
    /// calls are done (or `close()` and `join()` it first).
    #[error(
        "the pool was dropped before the result arrived (the task may still run on a worker host); keep the RedisPool \
         alive until its calls are done, or close() and join() it first"
    )]
    Dropped,
    /// [`RedisPool::join`](crate::RedisPool::join) before `close` or
    /// `terminate`.
    #[error("join() needs close() or terminate() first, or it would wait forever")]
    NotClosed,
    /// The input iterator of a `try_imap` failed at `index`; the tasks
    /// before it ran.
    #[error("the input iterator failed at item {index}: {message}")]
    Input {
        /// Position of the failed item.
        index: usize,
        /// The iterator's error, as text.
        message: String,
    },
    /// [`RedisAsync::successful`](crate::RedisAsync::successful) before the
    /// result arrived.
    #[error("the result is not ready yet; wait() first")]
    NotReady,
}

impl multiproc::pool::OutcomeError for RedisPoolError {
    fn not_ready() -> Self {
        RedisPoolError::NotReady
    }

    fn taken() -> Self {
        RedisPoolError::Taken
    }

    fn timeout(timeout: Duration) -> Self {
        RedisPoolError::Timeout(timeout)
    }

    const CALLBACK_PANICKED: &'static str = "a redis pool result callback panicked; the panic was ignored";
}

impl RedisPoolError {
    /// The task failure, when a task failed.
    pub fn task_failure(&self) -> Option<&TaskFailure> {
        match self {
            RedisPoolError::Task { error, .. } => Some(error),
            _ => None,
        }
    }

    /// True for [`RedisPoolError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, RedisPoolError::Timeout(_))
    }

    /// The error of a thread that could not be started (by
    /// [`std::thread::Builder::spawn`]), for `what` ("could not start the
    /// result thread").
    pub(crate) fn no_thread(what: &'static str, source: io::Error) -> RedisPoolError {
        RedisPoolError::Local {
            what,
            source,
            remedy: "this host is out of threads or memory: raise its limits (ulimit -u, ulimit -v, the \
                     cgroup's pids.max) or run fewer calls at once",
        }
    }

    /// The error of the OS's source of randomness failing, for `what`.
    pub(crate) fn no_randomness(what: &'static str, e: getrandom::Error) -> RedisPoolError {
        let source = e.raw_os_error().map_or_else(|| io::Error::other(e.to_string()), io::Error::from_raw_os_error);
        RedisPoolError::Local {
            what,
            source,
            remedy: "the OS gave no random bytes (getrandom(2), /dev/urandom): see to this host's kernel and /dev",
        }
    }

    /// The error of a call whose own thread ended without sending its
    /// result (it panicked).
    pub(crate) fn call_thread_died() -> RedisPoolError {
        RedisPoolError::Local {
            what: "the call's thread ended without its result",
            source: io::Error::other("it panicked"),
            remedy: "its panic message (on stderr) says where: a Deserialize of the result type, or a bug in \
                     multiproc-redis to report",
        }
    }

    /// Another error like this one (a call's failure that its items in
    /// flight share): the same variant and message.
    pub(crate) fn same(&self) -> RedisPoolError {
        match self {
            RedisPoolError::Timeout(t) => RedisPoolError::Timeout(*t),
            RedisPoolError::Redis(reason) => RedisPoolError::Redis(reason.clone()),
            RedisPoolError::Dropped => RedisPoolError::Dropped,
            RedisPoolError::Local { what, source, remedy } => {
                RedisPoolError::Local { what, source: io::Error::new(source.kind(), source.to_string()), remedy }
            }
            other => RedisPoolError::Redis(other.to_string()),
        }
    }
}

/// What went wrong when doing `what` ("could not connect to redis") failed
/// with `e`, and what to do about it: fix the URL, or see to the server
/// (one that did not answer within `waited`, if given).
pub(crate) fn explain(what: &str, e: &redis::RedisError, waited: Option<Duration>) -> String {
    if e.kind() == redis::ErrorKind::InvalidClientConfig {
        return format!("{what}: {e}; give a URL like redis://127.0.0.1:6379/0 or unix:///path/to/redis.sock");
    }
    // A command of a script refused by an ACL has no NOPERM code of its own.
    let script_refused = e.detail().is_some_and(|d| d.contains("user executing the script can't run"));
    if e.code() == Some("NOPERM") || script_refused {
        return format!(
            "{what}: {e}; let the pool's Redis user run the commands of multiproc-redis on its keys (ACL \
             SETUSER <user> +@stream +@string +@sortedset +@keyspace +@scripting +info +ping ~<prefix>:*)"
        );
    }
    if !crate::conn::is_transient(e) {
        return format!("{what}: {e}");
    }
    if e.code() == Some("BUSY") {
        return format!(
            "{what}: {e}; a script kept redis busy for longer than this waits: let it end, or SCRIPT KILL it"
        );
    }
    let cause = if e.is_timeout() {
        let within = waited.map(|w| format!(" within {w:?}")).unwrap_or_default();
        format!("no answer from redis{within} (it stopped answering)")
    } else {
        e.to_string()
    };
    format!("{what}: {cause}; check that the server is running and reachable")
}

/// The error of a connection to Redis not made.
pub(crate) fn cannot_connect(e: redis::RedisError) -> RedisPoolError {
    RedisPoolError::Redis(explain("could not connect to redis", &e, None))
}

impl From<redis::RedisError> for RedisPoolError {
    fn from(e: redis::RedisError) -> Self {
        RedisPoolError::Redis(e.to_string())
    }
}
