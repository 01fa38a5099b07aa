//! `start` binds its listeners before it loads any model: a port already in
//! use is reported at once, not after every model has loaded (which, with
//! big models, may take minutes).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use multiproc_serve_http::app::HttpOptions;
use multiproc_serve_http::serve::{ServeOptions, StartError, start};

/// How long a model of the test repository takes to load at least: its
/// command never says it is ready, so loading it waits out its startup
/// time-out.
const SLOW_LOAD: Duration = Duration::from_secs(40);

/// A repository in a temporary directory, removed on drop.
struct Repository(PathBuf);

impl Repository {
    /// One model, `slow`, whose command (`sleep`) never answers its load.
    fn with_a_slow_model() -> Repository {
        let dir = std::env::temp_dir().join(format!("multiproc-start-order-{}", std::process::id()));
        let config = format!(
            "platform = \"command\"\ncommand = [\"sleep\", \"{}\"]\nmax_batch_size = 0\n\
             [[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = [-1]\n\
             [[output]]\nname = \"y\"\ndatatype = \"FP32\"\ndims = [-1]\n\
             [timeouts]\nstartup_ms = {}\n",
            SLOW_LOAD.as_secs() * 3,
            SLOW_LOAD.as_millis()
        );
        std::fs::create_dir_all(dir.join("slow/1")).expect("create the repository");
        std::fs::write(dir.join("slow/config.toml"), config).expect("write the model's config");
        Repository(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Repository {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_port_in_use_is_reported_before_any_model_loads() {
    let repository = Repository::with_a_slow_model();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr: SocketAddr = taken.local_addr().unwrap();
    let options = ServeOptions {
        repository: repository.path().to_path_buf(),
        http_addr: addr,
        metrics_addr: None,
        http: HttpOptions::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let began = Instant::now();
    let outcome = runtime.block_on(start(options));
    let took = began.elapsed();
    match outcome {
        Err(StartError::Bind { addr: reported, .. }) => assert_eq!(reported, addr),
        Err(e) => panic!("not the bind error: {e}"),
        Ok(r) => panic!("started on {} although the port is taken", r.http_addr),
    }
    // Half the slow model's load: generous for a loaded machine, and still
    // far below what waiting for the load would take.
    assert!(took < SLOW_LOAD / 2, "the bind error came after {took:?}: the model was loaded first");
    drop(taken);
}
