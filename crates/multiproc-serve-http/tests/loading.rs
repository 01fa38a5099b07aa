//! While `start` loads the repository, the server already answers, as
//! Triton and KServe do (Kubernetes' liveness probe depends on it): live at
//! once, not ready until every model has loaded, a model not loaded yet
//! "loading" (not unknown), `/metrics` served, repository loads refused; a
//! model whose configuration is bad is unavailable with its reason, as
//! after loading. `start` itself still returns once the models are loaded.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the slow model's load sleeps: long enough for a handful of
/// requests on a loaded machine to be answered within it.
const LOAD_SECONDS: u64 = 10;

/// How long anything may take at most (a request, the load, the stop).
const PATIENCE: Duration = Duration::from_secs(120);

/// A repository in a temporary directory, removed on drop: `slow`, whose
/// load sleeps [`LOAD_SECONDS`], and `broken`, whose configuration is bad.
struct Repository(PathBuf);

impl Repository {
    fn new() -> Repository {
        let dir = std::env::temp_dir().join(format!("multiproc-loading-{}", std::process::id()));
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = here.join("tests/support/slow_load.py");
        let worker = here.join("../multiproc-serve/python");
        let config = format!(
            "platform = \"command\"\ncommand = [\"python3\", {:?}, \"{LOAD_SECONDS}\", {:?}]\nmax_batch_size = 0\n\
             [[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = [-1]\n\
             [[output]]\nname = \"y\"\ndatatype = \"FP32\"\ndims = [-1]\n\
             [timeouts]\nstartup_ms = {}\n",
            script.display().to_string(),
            worker.display().to_string(),
            PATIENCE.as_millis()
        );
        std::fs::create_dir_all(dir.join("slow/1")).expect("create the repository");
        std::fs::write(dir.join("slow/config.toml"), config).expect("write slow's config");
        std::fs::create_dir_all(dir.join("broken/1")).expect("create the repository");
        std::fs::write(dir.join("broken/config.toml"), "platform = \"onnx\"\nmax_batch_size = -4\n")
            .expect("write broken's config");
        Repository(dir)
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Status and body of `method path` (with `body`, if any), whatever the
/// status; `Err` (why) when no answer came (connection refused, time-out).
fn call(base: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
    call_with_retry_after(base, method, path, body).map(|(status, body, _)| (status, body))
}

/// As [`call`], with the answer's `Retry-After` header, if any.
fn call_with_retry_after(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String, Option<String>), String> {
    let (headers, body) = match body {
        Some(b) => (&[("Content-Type", "application/json")][..], support::Body::Sized(b.as_bytes())),
        None => (&[][..], support::Body::Empty),
    };
    let answer = support::call(base, method, path, headers, body)?;
    Ok((answer.status, answer.body, answer.retry_after))
}

/// As [`call`], panicking when no answer came.
fn ask(base: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    call(base, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
}

const INFER: &str = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1.5,2.5]}]}"#;

#[test]
fn the_server_answers_while_its_models_load_and_start_returns_once_they_are_loaded() {
    let repository = Repository::new();
    let server = support::InProcess::start(repository.0.clone());
    let base = server.base.clone();

    // Live answers at once, long before the slow model has loaded.
    let began = Instant::now();
    let live = loop {
        match call(&base, "GET", "/v2/health/live", None) {
            Ok(answer) => break answer,
            Err(_) if began.elapsed() < PATIENCE => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("live never answered: {e}"),
        }
    };
    assert_eq!(live.0, 200, "{live:?}");
    assert!(server.started.try_recv().is_err(), "live answered only once the models were loaded");

    let (status, body) = ask(&base, "GET", "/v2/health/ready", None);
    assert_eq!(status, 503, "ready while loading: {body}");
    let (status, body, retry_after) = call_with_retry_after(&base, "POST", "/v2/models/slow/infer", Some(INFER))
        .unwrap_or_else(|e| panic!("inference while loading: no answer: {e}"));
    assert_eq!(status, 503, "inference while loading: {body}");
    assert!(body.contains("loading"), "inference while loading does not say so: {body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "a 503 \"loading\" says when to retry: {body}");
    for path in ["/v2/models/slow", "/v2/models/slow/ready", "/v2/models/slow/versions/1/ready"] {
        let (status, body) = ask(&base, "GET", path, None);
        assert_eq!(status, 503, "{path} while loading: {body}");
        assert!(body.contains("loading"), "{path} while loading does not say so: {body}");
    }
    // A model that cannot load is unavailable with its reason, as ever.
    let (status, body) = ask(&base, "GET", "/v2/models/broken", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable") && body.contains("max_batch_size"), "{body}");
    let (status, body) = ask(&base, "GET", "/metrics", None);
    assert_eq!(status, 200, "/metrics while loading: {body}");
    let (status, body) = ask(&base, "POST", "/v2/repository/index", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""name":"slow""#) && body.contains("LOADING"), "the index while loading: {body}");
    for action in ["load", "unload"] {
        let (status, body) = ask(&base, "POST", &format!("/v2/repository/models/slow/{action}"), None);
        assert_eq!(status, 503, "{action} while loading: {body}");
        assert!(body.contains("loading"), "{action} while loading does not say why: {body}");
    }
    assert!(
        server.started.try_recv().is_err(),
        "the load ended before the checks did: the machine is too slow for this test, raise LOAD_SECONDS"
    );

    // `start` returns once the models are loaded: ready at once then.
    server.started.recv_timeout(PATIENCE).expect("start did not return");
    let (status, body) = ask(&base, "GET", "/v2/health/ready", None);
    assert_eq!(status, 200, "ready once start returned: {body}");
    let (status, body) = ask(&base, "POST", "/v2/models/slow/infer", Some(INFER));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""name":"y""#) && body.contains("[1.5,2.5]"), "{body}");
    let (status, body) = ask(&base, "GET", "/v2/models/slow/ready", None);
    assert_eq!(status, 200, "{body}");

    server.stop(PATIENCE);
}
