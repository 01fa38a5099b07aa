//! Triton's system shared memory extension, for clients on the same
//! machine: a client registers a region of a POSIX shared memory object
//! (`/dev/shm/<key>`) under a name, then names it in a request instead of
//! sending a tensor's bytes: an input is read from it, an output is written
//! to it and the answer carries only its size.
//!
//! - `POST /v2/systemsharedmemory/region/{name}/register` with
//!   `{"key": "/obj", "offset": 0, "byte_size": n}`;
//! - `GET /v2/systemsharedmemory[/region/{name}]/status`;
//! - `POST /v2/systemsharedmemory[/region/{name}]/unregister`.
//!
//! In a request, an input's or output's parameters `shared_memory_region`
//! and `shared_memory_byte_size` (both needed) and `shared_memory_offset`
//! (0 if absent) name the bytes, inside the region.
//!
//! Off unless the server is started with `--allow-client-shm` (as Triton's
//! `--allow-client-shm`): a client that may register regions may read and
//! write every shared memory object the server's user can open, which is
//! for clients the machine trusts. The segment's bytes are read and
//! written through its file, never through a mapping another process can
//! cut short (see [`multiproc::SharedMemory::read_at`]), so a client that
//! shrinks or removes its object meanwhile gets an error, not a crash.
//! The inputs a request reads from shared memory count against the body
//! limit (`--max-body-bytes`), as if they had come in the body.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use multiproc::SharedMemory;
use serde::Serialize;

use crate::app::{App, PathParams};
use crate::error::ApiError;
use crate::protocol::ProtocolError;
use crate::protocol::request::SharedMemoryRef;

/// A registered region: `byte_size` bytes from `offset` of the object `key`.
#[derive(Debug)]
struct Region {
    key: String,
    offset: usize,
    byte_size: usize,
    memory: SharedMemory,
}

/// The registered regions, by name.
#[derive(Debug, Default)]
pub struct Regions {
    allowed: bool,
    regions: Mutex<BTreeMap<String, Arc<Region>>>,
}

/// One region, as the status lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionStatus {
    /// The name requests use.
    pub name: String,
    /// The shared memory object.
    pub key: String,
    /// Where the region starts in it.
    pub offset: usize,
    /// Its length.
    pub byte_size: usize,
}

impl Regions {
    /// Regions that clients may register only if `allowed`.
    pub fn new(allowed: bool) -> Regions {
        Regions { allowed, regions: Mutex::new(BTreeMap::new()) }
    }

    /// Whether clients may use shared memory.
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    fn get(&self, at: &SharedMemoryRef) -> Result<Arc<Region>, ProtocolError> {
        let regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.get(&at.region).cloned().ok_or_else(|| {
            ProtocolError::new(format!(
                "no shared memory region '{}' is registered (POST /v2/systemsharedmemory/region/{}/register)",
                at.region, at.region
            ))
        })
    }

    /// Where `at` lies in its object: checked against its region.
    fn place(region: &Region, at: &SharedMemoryRef) -> Result<usize, ProtocolError> {
        match at.offset.checked_add(at.byte_size) {
            Some(end) if end <= region.byte_size => Ok(region.offset + at.offset),
            _ => Err(ProtocolError::new(format!(
                "bytes {}..{} are outside shared memory region '{}' ({} bytes)",
                at.offset,
                at.offset.saturating_add(at.byte_size),
                at.region,
                region.byte_size
            ))),
        }
    }

    /// The bytes `at` names.
    ///
    /// # Errors
    ///
    /// An unknown region, a range outside it, or an object cut short.
    pub fn read(&self, at: &SharedMemoryRef) -> Result<Vec<u8>, ProtocolError> {
        let region = self.get(at)?;
        let start = Self::place(&region, at)?;
        let mut bytes = vec![0; at.byte_size];
        region
            .memory
            .read_at(start, &mut bytes)
            .map_err(|e| ProtocolError::new(format!("shared memory region '{}': {e}", at.region)))?;
        Ok(bytes)
    }

    /// Writes `bytes` where `at` says, if they fit in its size.
    ///
    /// # Errors
    ///
    /// As [`Regions::read`], or more bytes than `at` has room for.
    pub fn write(&self, at: &SharedMemoryRef, bytes: &[u8]) -> Result<(), ProtocolError> {
        if bytes.len() > at.byte_size {
            return Err(ProtocolError::new(format!(
                "the output has {} bytes, more than the {} its shared_memory_byte_size gives",
                bytes.len(),
                at.byte_size
            )));
        }
        let region = self.get(at)?;
        let start = Self::place(&region, at)?;
        region
            .memory
            .write_at(start, bytes)
            .map_err(|e| ProtocolError::new(format!("shared memory region '{}': {e}", at.region)))
    }

    fn check_allowed(&self) -> Result<(), ApiError> {
        match self.allowed {
            true => Ok(()),
            false => Err(ApiError::bad_request(
                "client shared memory is off: start the server with --allow-client-shm to use it",
            )),
        }
    }
}

/// The body of a registration (Triton's): the shared memory object and
/// the bytes of it the region is.
#[derive(Debug, Default, serde::Deserialize)]
struct RegisterRequest {
    key: Option<String>,
    offset: Option<u64>,
    byte_size: Option<u64>,
}

/// `POST /v2/systemsharedmemory/region/{name}/register`.
pub(crate) async fn register(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    app.shm.check_allowed()?;
    let expected = r#"{"key": "<shared memory object>", "byte_size": <bytes>, "offset": <bytes, optional>}"#;
    let body: RegisterRequest = crate::control::json_request(&app, request, "register", expected).await?;
    let no_field = |f: &str| ApiError::bad_request(format!("register: no '{f}' field; expected {expected}"));
    let key = body.key.ok_or_else(|| no_field("key"))?;
    let key = key.as_str();
    let count = |n: u64, f: &str| {
        usize::try_from(n).map_err(|_| ApiError::bad_request(format!("register: '{f}' is {n}, expected a byte count")))
    };
    let offset = count(body.offset.unwrap_or(0), "offset")?;
    let byte_size = count(body.byte_size.ok_or_else(|| no_field("byte_size"))?, "byte_size")?;
    let memory = SharedMemory::open(key)
        .map_err(|e| ApiError::bad_request(format!("cannot open shared memory object '{key}': {e}")))?;
    if offset.checked_add(byte_size).is_none_or(|end| end > memory.size()) {
        return Err(ApiError::bad_request(format!(
            "region '{name}': bytes {offset}..{} are outside shared memory object '{key}' ({} bytes)",
            offset.saturating_add(byte_size),
            memory.size()
        )));
    }
    let mut regions = app.shm.regions.lock().unwrap_or_else(|e| e.into_inner());
    if regions.contains_key(&name) {
        return Err(ApiError::bad_request(format!(
            "shared memory region '{name}' is already registered: unregister it first"
        )));
    }
    regions.insert(name, Arc::new(Region { key: key.to_string(), offset, byte_size, memory }));
    Ok(StatusCode::OK)
}

fn status_of(app: &App, name: Option<&str>) -> Result<Json<Vec<RegionStatus>>, ApiError> {
    let regions = app.shm.regions.lock().unwrap_or_else(|e| e.into_inner());
    let listed: Vec<RegionStatus> = regions
        .iter()
        .filter(|(n, _)| name.is_none_or(|name| name == n.as_str()))
        .map(|(n, r)| RegionStatus { name: n.clone(), key: r.key.clone(), offset: r.offset, byte_size: r.byte_size })
        .collect();
    match (name, listed.is_empty()) {
        (Some(name), true) => Err(ApiError::bad_request(format!("no shared memory region '{name}' is registered"))),
        _ => Ok(Json(listed)),
    }
}

/// `GET /v2/systemsharedmemory/status`.
pub(crate) async fn status_all(State(app): State<Arc<App>>) -> Result<Json<Vec<RegionStatus>>, ApiError> {
    status_of(&app, None)
}

/// `GET /v2/systemsharedmemory/region/{name}/status`.
pub(crate) async fn status(
    State(app): State<Arc<App>>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Vec<RegionStatus>>, ApiError> {
    status_of(&app, Some(&name))
}

/// `POST /v2/systemsharedmemory/unregister`: every region.
pub(crate) async fn unregister_all(State(app): State<Arc<App>>) -> StatusCode {
    app.shm.regions.lock().unwrap_or_else(|e| e.into_inner()).clear();
    StatusCode::OK
}

/// `POST /v2/systemsharedmemory/region/{name}/unregister` (a name not
/// registered is no error, as in Triton). A request reading or writing
/// the region meanwhile finishes with it.
pub(crate) async fn unregister(State(app): State<Arc<App>>, PathParams(name): PathParams<String>) -> StatusCode {
    app.shm.regions.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
    StatusCode::OK
}
