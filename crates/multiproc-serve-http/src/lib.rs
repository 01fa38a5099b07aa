//! # multiproc-serve-http
//!
//! The HTTP front end of [`multiproc_serve`]: the **Open Inference Protocol**
//! (KServe v2 REST, the protocol Triton, KServe, MLServer and OpenVINO Model
//! Server share) with Triton's **binary tensor extension**, a **model
//! repository** on disk in Triton's layout, and **Prometheus metrics** named
//! after Triton's. The `multiproc serve` command is a thin wrapper over
//! [`serve::start`].
//!
//! | module | what |
//! |---|---|
//! | [`protocol`] | request/response bodies, JSON and binary tensors: no HTTP in it (a gRPC front end would reuse it) |
//! | [`repository`] | `<repo>/<model>/config.toml` + `<repo>/<model>/<N>/`, checked field by field |
//! | [`onnx`] | ONNX versions run by tract inside the worker process, requests joined into one batch; inputs and outputs matched to the graph's by name and datatype at load |
//! | [`app`] | the axum router and its thin handlers; [`error::ApiError`] maps every failure to a status |
//! | [`metrics`] | `nv_inference_*` and `multiproc_*` series via `prometheus-client` |
//! | `body`, `budget`, `control` (private) | reading a request body within its limits and the server's byte budget of bodies held; the typed bodies of the requests other than inference |
//! | [`model_config`] | Triton's model configuration extension: `config.toml` as Triton's `ModelConfig` JSON |
//! | [`shm`] | Triton's system shared memory extension: tensors read from and written to clients' regions (opt-in) |
//! | [`stats`] | Triton's statistics extension: the same counts as JSON, with executions by batch size |
//! | [`serve`] | bind the listeners and answer while a repository loads (live, not ready); serve; drain on shutdown |
//! | [`demo`] | the built-in demo repository (digits classifier, text model) |
//! | [`client`] | the small blocking client behind `multiproc infer` |
//!
//! ## Endpoints
//!
//! `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2`,
//! `GET /v2/models/{m}[/versions/{v}]`, `GET …/ready`, `POST …/infer`,
//! `POST /v2/repository/index`, `POST /v2/repository/models/{m}/load` and
//! `/unload` (a load of a model already served is a zero-downtime reload:
//! a new version directory is started, traffic moves when it is ready, the
//! old version drains), `GET /v2/models[/{m}[/versions/{v}]]/stats`
//! (Triton's statistics extension, see [`stats`]),
//! `GET /v2/models/{m}[/versions/{v}]/config` (Triton's model configuration
//! extension, see [`model_config`]), with `--allow-client-shm` Triton's
//! system shared memory extension (`/v2/systemsharedmemory/…`, see
//! [`shm`]), `GET /metrics`. An output asked for
//! with the parameter `"classification": n` comes back as its `n` highest
//! values (Triton's classification extension, see
//! [`protocol::classify`]). An inference body may also be Triton's raw
//! binary request (`Inference-Header-Content-Length: 0`: the one input's
//! bytes alone, its shape deduced from their size, every output binary).
//! Health and readiness answer the
//! protocol's `{"live": true}`, `{"ready": true}` and
//! `{"name": …, "ready": true}`. Errors are `{"error": "..."}` with
//! these statuses:
//!
//! | status | when |
//! |---|---|
//! | 400 | a malformed request: bad JSON, a tensor that does not match the model's configuration |
//! | 404 | an unknown endpoint, model or version (also a version on disk that the version policy does not serve) |
//! | 405 | a method the endpoint does not take (`GET …/infer`) |
//! | 408 | the request body did not arrive within `--body-timeout-secs` ([`app::HttpOptions`]`::body_timeout`) |
//! | 413 | the body (or, compressed, its decompressed size) is over `--max-body-bytes`, or alone over the whole body budget (`--body-budget-bytes`) |
//! | 415 | a `Content-Encoding` other than gzip or deflate (the two tritonclient compresses requests with, read here) |
//! | 499 | the request was dropped before its answer (its connection was closed under it): no client sees it, the failure metrics count it (reason `cancelled`, as nginx logs 499) |
//! | 500 | the model failed, its worker died, or its call ran over `timeouts.call_ms` |
//! | 503 | the server or model is not ready, is loading, is unavailable (a bad configuration, with the reason), is overloaded (its queue is full, or the request bodies held use the server's whole body budget, `--body-budget-bytes`), crash-looping or shutting down; all but "unavailable" and the health and readiness probes come with `Retry-After` |
//! | 504 | the request waited longer than its model's `timeouts.request_ms` |
//!
//! The server answers while its repository loads, as Triton and KServe do
//! (a Kubernetes liveness probe must not wait for big models to load):
//! live at once, not ready (503) until every model has been through its
//! load, a model not through it yet 503 "loading" (its metadata, readiness
//! and inference; the repository index lists it `LOADING`), `/metrics`
//! answered, and the repository's load and unload refused (503) until the
//! load has ended. A model whose configuration is bad is unavailable with
//! its reason throughout. [`serve::start`] returns once the load has
//! ended; [`serve::launch`] at once.
//!
//! ## Serving a repository from Rust
//!
//! ```
//! use multiproc_serve_http::{app::HttpOptions, demo::DemoRepository, serve::{ServeOptions, start}};
//!
//! let demo = DemoRepository::unpack().unwrap();
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! rt.block_on(async {
//!     let running = start(ServeOptions {
//!         repository: demo.path().to_path_buf(),
//!         http_addr: "127.0.0.1:0".parse().unwrap(),
//!         metrics_addr: None,
//!         http: HttpOptions::default(),
//!     })
//!     .await
//!     .unwrap();
//!     let base = format!("http://{}", running.http_addr);
//!     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!     let server = tokio::spawn(running.run(async { let _ = stopped.await; }));
//!     let lines = tokio::task::spawn_blocking(move || {
//!         let text = serde_json::json!({"text": ["hello world"]});
//!         let timeout = multiproc_serve_http::client::DEFAULT_TIMEOUT;
//!         multiproc_serve_http::client::infer(&base, "text", None, text, None, timeout).unwrap()
//!     })
//!     .await
//!     .unwrap();
//!     assert_eq!(lines[1], r#"upper BYTES [1] ["HELLO WORLD"]"#);
//!     assert_eq!(lines[2], "words INT32 [1] [2]");
//!     stop.send(()).unwrap();
//!     server.await.unwrap(); // requests in flight finish, workers stop
//! });
//! ```
//!
//! ## Cost of a request
//!
//! Connections are served by hyper directly; an inference request goes
//! straight to its handler, every other request through the axum router. The
//! body is read whole (bounded by [`app::HttpOptions`] in size and
//! time, so a slow client holds only its own connection, never a worker),
//! decoded once into [`protocol::Tensor`]s (JSON elements checked one by
//! one; binary tensors sliced from the body), checked against the model's
//! configuration, and handed to multiproc-serve, whose costs its own docs
//! state. Outputs are written to JSON straight from their bytes, or appended
//! as binary after the JSON.
//!
//! ## Memory held by request bodies
//!
//! The queues bound how many requests wait and `--max-body-bytes` how big
//! each body is, but not their product: 1024 queued bodies of 64 MiB are
//! 64 GiB. The server also holds at most `--body-budget-bytes`
//! ([`app::HttpOptions`]`::body_budget`, default 1 GiB) of request bodies
//! at once, all requests together. A request holds its share from the
//! moment its body's bytes arrive (what has arrived, not what its
//! `Content-Length` announces) until nothing of it is held any more (a
//! guard given back on every path, a panic included):
//!
//! - a body counts as it arrives, announced or chunked (by the buffer it
//!   is gathered in, which doubles as it fills), and is refused as soon
//!   as what has arrived goes over; a body announced by its
//!   `Content-Length` is also refused before any of it is read if it is
//!   over what the budget has free then, but holds nothing until it
//!   arrives (a client that announces a body and sends none holds no
//!   share: it is cut off by `--body-timeout-secs`);
//! - a compressed body counts with what it inflates to while it inflates,
//!   then as inflated; inputs read from client shared memory count as if
//!   they had come in the body;
//! - once decoded, while the request waits and runs, it counts its inputs'
//!   bytes and what the server keeps of the body for the answer (the
//!   request `id`, the outputs asked for). The inputs' share goes with the
//!   request into multiproc-serve's queue ([`multiproc_serve::Request::hold`])
//!   and is given back when the queue drops the request: answered, failed,
//!   or dropped after its client went away or its deadline passed (when
//!   the queue is next swept: as its next batch leaves, when it is full,
//!   and, while no batch leaves because the model's workers load, back off
//!   after a crash or run a long batch, within about 200 ms; not at the
//!   moment the client got its 504 or closed its connection, for the
//!   queued input is held until then). Decoded inputs are held before
//!   they are made, with the body they come from: a request whose tensors
//!   the budget cannot hold beside its body is refused before it is
//!   decoded (a JSON tensor may take 4 to 8 times its text);
//! - the body of a request other than inference (repository, shared
//!   memory) counts while it is read and parsed.
//!
//! A request over the budget is answered at once with 503, `Retry-After: 1`
//! and `{"error": "the server is overloaded: request bodies already hold …
//! bytes of its request body budget of … bytes (multiproc serve
//! --body-budget-bytes), and this request needs … more; retry later, or send
//! smaller requests"}`, as for a full queue: Triton's and KServe's clients
//! retry it as an overload. What the client still sends of that body is
//! read and thrown away, within the body's size and time limits (a client
//! busy sending would otherwise see its connection reset instead of the
//! answer); a client that sent `Expect: 100-continue` is never asked for
//! it. A body that alone is larger than the whole budget is 413: it can
//! never be held (`multiproc serve` refuses a budget below
//! `--max-body-bytes`, so that this is only a compressed body with what
//! it inflates to). A fixed default rather than a share of the machine's
//! memory: in a container the memory the kernel reports is the host's, not
//! the container's limit, and a bound that changes with the host is one an
//! operator cannot plan with; 1 GiB holds sixteen bodies of the largest
//! default size. `/metrics` shows `multiproc_http_body_held_bytes` (held
//! now), `multiproc_http_body_budget_bytes` (the budget) and
//! `multiproc_http_body_budget_refused` (refusals since the start); a
//! refused inference request also counts in `nv_inference_request_failure`
//! with reason `body_budget`.

#![warn(missing_docs)]

pub mod app;
mod body;
mod budget;
pub mod client;
mod control;
pub mod demo;
mod encoding;
pub mod error;
mod idle;
mod infer;
mod listen;
mod loading;
pub mod metrics;
pub mod model_config;
pub mod onnx;
pub mod protocol;
mod raw;
pub mod repository;
pub mod serve;
pub mod shm;
pub mod stats;
