//! Where callers and worker hosts meet: the server, the key prefix, the
//! queue and the key that signs tasks. Both builders hold one.

use std::fmt;

use crate::schema::{self, Keys};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "multiproc";
/// The default queue name.
pub const DEFAULT_QUEUE: &str = "default";

/// A server, a prefix, a queue and a signing key.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub url: String,
    pub prefix: String,
    pub queue: String,
    pub key: Vec<u8>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the URL (it may hold a password) nor the key.
        f.debug_struct("Endpoint").field("prefix", &self.prefix).field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The server at `url`, with the default prefix, queue and key.
    pub(crate) fn new(url: &str) -> Endpoint {
        Endpoint {
            url: url.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            queue: DEFAULT_QUEUE.to_string(),
            key: schema::default_key(),
        }
    }

    /// The key names of the queue.
    pub(crate) fn keys(&self) -> Keys {
        Keys::new(&self.prefix, &self.queue)
    }
}

/// The builder methods that set a builder's `endpoint` field.
macro_rules! endpoint_setters {
    () => {
        /// The key prefix (default [`DEFAULT_PREFIX`](crate::DEFAULT_PREFIX)):
        /// callers and worker hosts with different prefixes share nothing.
        pub fn prefix(mut self, prefix: &str) -> Self {
            self.endpoint.prefix = prefix.to_string();
            self
        }

        /// The queue (default [`DEFAULT_QUEUE`](crate::DEFAULT_QUEUE)); a
        /// worker host serves one queue.
        pub fn queue(mut self, queue: &str) -> Self {
            self.endpoint.queue = queue.to_string();
            self
        }

        /// The key that signs tasks, the same for callers and worker hosts.
        /// Default: [`schema::default_key`](crate::schema::default_key),
        /// derived from the build id (no secret: set one when others can
        /// write to the Redis server).
        pub fn auth_key(mut self, key: &[u8]) -> Self {
            self.endpoint.key = key.to_vec();
            self
        }
    };
}
pub(crate) use endpoint_setters;
