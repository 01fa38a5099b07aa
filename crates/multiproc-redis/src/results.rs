//! What a call returns: [`RedisImap`] (one outcome per item, in order or
//! as they finish) and [`RedisAsync`] (a result that arrives in the
//! background).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::mpsc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::call::Engine;
use crate::error::{RedisPoolError, TaskFailure};

/// The results of an `imap` call, one `Result` per item: in input order
/// ([`RedisPool::imap`](crate::RedisPool::imap)) or as they finish
/// ([`RedisPool::imap_unordered`](crate::RedisPool::imap_unordered)).
pub struct RedisImap<'a, R> {
    engine: Engine<'a>,
    ordered: bool,
    early: BTreeMap<usize, Result<Vec<u8>, RedisPoolError>>,
    next: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for RedisImap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisImap").field("engine", &self.engine).field("ordered", &self.ordered).finish()
    }
}

impl<'a, R: DeserializeOwned> RedisImap<'a, R> {
    pub(crate) fn new(engine: Engine<'a>, ordered: bool) -> Self {
        RedisImap { engine, ordered, early: BTreeMap::new(), next: 0, _result: PhantomData }
    }

    fn decode(index: usize, r: Result<Vec<u8>, RedisPoolError>) -> Result<R, RedisPoolError> {
        let bytes = r?;
        postcard::from_bytes(&bytes).map_err(|e| RedisPoolError::Task {
            index,
            error: TaskFailure::Unserializable(format!(
                "result does not decode as {}: {e}",
                std::any::type_name::<R>()
            )),
        })
    }
}

impl<R: DeserializeOwned> Iterator for RedisImap<'_, R> {
    type Item = Result<R, RedisPoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.ordered {
            let (index, r) = self.engine.next_outcome()?;
            return Some(Self::decode(index, r));
        }
        loop {
            if let Some(r) = self.early.remove(&self.next) {
                self.next += 1;
                return Some(Self::decode(self.next - 1, r));
            }
            match self.engine.next_outcome() {
                Some((index, r)) => {
                    self.early.insert(index, r);
                }
                None => {
                    // Only after a failure of the whole call: the rest in order.
                    let (index, r) = self.early.pop_first()?;
                    self.next = index + 1;
                    return Some(Self::decode(index, r));
                }
            }
        }
    }
}

/// A result that arrives in the background
/// ([`RedisPool::apply_async`](crate::RedisPool::apply_async),
/// [`RedisPool::map_async`](crate::RedisPool::map_async)).
pub struct RedisAsync<T> {
    rx: mpsc::Receiver<Result<T, RedisPoolError>>,
    value: Option<Result<T, RedisPoolError>>,
    taken: bool,
}

impl<T> fmt::Debug for RedisAsync<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAsync").field("arrived", &self.value.is_some()).field("taken", &self.taken).finish()
    }
}

impl<T: Send + 'static> RedisAsync<T> {
    pub(crate) fn spawn(work: impl FnOnce() -> Result<T, RedisPoolError> + Send + 'static) -> RedisAsync<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        let started = std::thread::Builder::new().name("multiproc-redis call".into()).spawn(move || {
            let _ = tx.send(work());
        });
        let value = started.err().map(|e| Err(RedisPoolError::no_thread("could not start the call's thread", e)));
        RedisAsync { rx, value, taken: false }
    }

    /// True once the result has arrived.
    pub fn ready(&mut self) -> bool {
        if self.value.is_none()
            && let Ok(v) = self.rx.try_recv()
        {
            self.value = Some(v);
        }
        self.value.is_some()
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// As for the call that made it.
    pub fn get(self) -> Result<T, RedisPoolError> {
        if self.taken {
            return Err(RedisPoolError::Taken);
        }
        match self.value {
            Some(v) => v,
            None => self.rx.recv().unwrap_or_else(|_| Err(RedisPoolError::call_thread_died())),
        }
    }

    /// Waits at most `timeout` for the result.
    ///
    /// # Errors
    ///
    /// [`RedisPoolError::Timeout`] (ask again later), [`RedisPoolError::Taken`]
    /// after an earlier successful wait, or as for the call.
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T, RedisPoolError> {
        if self.taken {
            return Err(RedisPoolError::Taken);
        }
        let v = match self.value.take() {
            Some(v) => v,
            None => match self.rx.recv_timeout(timeout) {
                Ok(v) => v,
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(RedisPoolError::Timeout(timeout)),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(RedisPoolError::call_thread_died()),
            },
        };
        self.taken = true;
        v
    }
}
