//! The shared-memory layer under `sync` and `shared`: typed objects in shared
//! segments ([`segment`]), the robust process-shared mutex ([`raw_mutex`],
//! with the thread that watches its owners, [`owner_watch`]) and plain data
//! ([`plain`]: the element types of `Value` and `Array`, copied whole).
//!
//! `sync` builds its primitives on it and `shared` its data handles (which
//! also use `sync`'s public lock results); this layer uses neither.

pub(crate) mod owner_watch;
pub(crate) mod plain;
pub(crate) mod raw_mutex;
pub(crate) mod segment;
