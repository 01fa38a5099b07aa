//! `multiproc serve` and `multiproc infer`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use multiproc_serve_http::app::HttpOptions;
use multiproc_serve_http::client::ClientError;
use multiproc_serve_http::demo::DemoRepository;
use multiproc_serve_http::serve::{ServeOptions, launch};

/// Options of `multiproc serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The model repository (`<repo>/<model>/config.toml`, `<repo>/<model>/<N>/`);
    /// without it, the built-in demo repository (digits, text) is served.
    #[arg(long, value_name = "DIR")]
    model_repository: Option<PathBuf>,
    /// The port of the Open Inference Protocol (0: any free port, printed).
    #[arg(long, default_value_t = 8000)]
    http_port: u16,
    /// A second port serving only /metrics (it is on the HTTP port too).
    #[arg(long)]
    metrics_port: Option<u16>,
    /// The IP address to listen on (0.0.0.0: every IPv4 interface; a host name is not accepted).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Largest request body accepted (413 above it); inputs read from client shared memory count as part of it.
    #[arg(long, default_value_t = 64 << 20)]
    max_body_bytes: usize,
    /// Most bytes of request bodies held at once, all requests together (503 with Retry-After above it; 413 for one body larger than it); at least --max-body-bytes.
    #[arg(long, default_value_t = 1 << 30)]
    body_budget_bytes: usize,
    /// Longest time a request body may take to arrive, in seconds (408 after it).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    body_timeout_secs: u64,
    /// Longest time, in seconds, a connection may go without a request
    /// starting while none is in flight: a request's headers must arrive
    /// within it, and a kept-alive connection idle that long is closed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    header_timeout_secs: u64,
    /// Threads handling HTTP (default: one per CPU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    http_threads: Option<u16>,
    /// Let clients register shared memory regions and pass tensors through them (Triton's system shared memory
    /// extension). Only for clients this machine trusts: they may read and write any shared memory object this
    /// server's user can open.
    #[arg(long)]
    allow_client_shm: bool,
}

/// Options of `multiproc infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// The model.
    model: String,
    /// Inputs as JSON, `{"input name": data, …}` or a whole OIP request; `@FILE` reads a file, `-` stdin.
    inputs: String,
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// A model version (default: the server's choice).
    #[arg(long)]
    model_version: Option<u64>,
    /// Seconds to wait for each answer of the server (the model's metadata, then the inference) before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = multiproc_serve_http::client::DEFAULT_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Print each output's N highest values, as `value:index[:label]`, instead of its data (Triton's classification).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    classification: Option<u64>,
}

/// Watches SIGTERM and SIGINT from now on (not from the first poll, as
/// `tokio::signal::ctrl_c` would: a signal during the load must stop the
/// server, not kill it); the future resolves at the first of them. Inside
/// the runtime.
fn shutdown_signal() -> Pin<Box<dyn Future<Output = ()> + Send>> {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut interrupt)) => Box::pin(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        }),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot watch SIGTERM and SIGINT: {e}; only ctrl-c stops the server");
            Box::pin(async {
                let _ = tokio::signal::ctrl_c().await;
            })
        }
    }
}

/// Checks that `--model-repository` names a directory, so that a typo is
/// told as such, with what to give, before anything starts.
fn check_repository(repo: &std::path::Path) -> Result<(), String> {
    let why = match std::fs::metadata(repo) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => "not a directory".to_string(),
        Err(e) => e.to_string(),
    };
    Err(format!(
        "--model-repository {}: {why}; give a directory of models (<repo>/<model>/config.toml), \
         or leave the option out to serve the built-in demo",
        repo.display()
    ))
}

/// Checks that `--body-budget-bytes` can hold any body `--max-body-bytes`
/// lets in: a budget below it would answer every body in between 413, for
/// ever, which is a mistake to tell before anything starts.
fn check_body_budget(budget: usize, max_body: usize) -> Result<(), String> {
    if budget == 0 {
        return Err(format!(
            "--body-budget-bytes 0 would hold no request body at all; give at least --max-body-bytes ({max_body}), \
             or leave it out for the default (1 GiB)"
        ));
    }
    if budget < max_body {
        return Err(format!(
            "--body-budget-bytes {budget} is below --max-body-bytes {max_body}: a body in between would always be \
             refused (413); raise --body-budget-bytes to at least {max_body}, or lower --max-body-bytes"
        ));
    }
    Ok(())
}

/// Runs `multiproc serve` until SIGTERM or ctrl-c.
pub fn serve(args: ServeArgs) -> ExitCode {
    if let Err(e) = check_body_budget(args.body_budget_bytes, args.max_body_bytes) {
        eprintln!("multiproc serve: {e}");
        return ExitCode::from(2);
    }
    if args.metrics_port.is_some_and(|p| p != 0 && p == args.http_port) {
        eprintln!(
            "multiproc serve: --metrics-port {} is the HTTP port too; leave it out (/metrics is on the HTTP port) or pick another",
            args.http_port
        );
        return ExitCode::from(2);
    }
    if let Some(Err(e)) = args.model_repository.as_deref().map(check_repository) {
        eprintln!("multiproc serve: {e}");
        return ExitCode::from(2);
    }
    // tract builds (and drops) an error on every call of a graph with a
    // symbolic dimension (the ONNX runner makes the batch dimension concrete,
    // but a model may declare others); with RUST_BACKTRACE=1 each captures
    // a backtrace, which costs more than a small model call. Errors of the
    // library need none: turn library backtraces off (panics keep theirs)
    // for this process and the workers it starts.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`'s serve path, before any other
        // thread (async runtime, fork server, workers) exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(crate::stderr_is_terminal())
        .try_init();
    let demo = match &args.model_repository {
        Some(_) => None,
        None => match DemoRepository::unpack() {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("multiproc serve: cannot unpack the demo repository: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let repository = args
        .model_repository
        .clone()
        .unwrap_or_else(|| demo.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default());
    let options = ServeOptions {
        repository: repository.clone(),
        http_addr: SocketAddr::new(args.host, args.http_port),
        metrics_addr: args.metrics_port.map(|p| SocketAddr::new(args.host, p)),
        http: HttpOptions {
            body_limit: args.max_body_bytes,
            body_budget: args.body_budget_bytes,
            body_timeout: Duration::from_secs(args.body_timeout_secs),
            header_timeout: Duration::from_secs(args.header_timeout_secs),
            allow_client_shm: args.allow_client_shm,
        },
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.http_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("multiproc serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let is_demo = demo.is_some();
    let code = runtime.block_on(async move {
        let mut shutdown = shutdown_signal();
        let running = match launch(options).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("multiproc serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Stdout's first line comes once the models are loaded (scripts wait
        // for it); meanwhile the server answers: live, not ready.
        eprintln!("multiproc serve: loading the models; meanwhile live, not ready, on http://{}", running.http_addr);
        let stopped_while_loading = tokio::select! {
            () = running.loaded() => false,
            () = &mut shutdown => true,
        };
        if stopped_while_loading {
            eprintln!("multiproc serve: stopping before the models were loaded");
            shutdown = Box::pin(std::future::ready(()));
        } else {
            let what =
                if is_demo { "the built-in demo repository".to_string() } else { repository.display().to_string() };
            println!("multiproc serve: serving {what} on http://{}", running.http_addr);
            if multiproc_serve_http::repository::scan(&repository).is_ok_and(|models| models.is_empty()) {
                eprintln!(
                    "multiproc serve: {} holds no model directories (<repo>/<model>/config.toml); no model is served",
                    repository.display()
                );
            }
            if let Some(m) = running.metrics_addr {
                println!("multiproc serve: metrics on http://{m}/metrics");
            }
        }
        running.run(shutdown).await;
        println!("multiproc serve: stopped");
        ExitCode::SUCCESS
    });
    drop(runtime);
    drop(demo);
    code
}

/// Runs `multiproc infer`.
pub fn infer(args: InferArgs) -> ExitCode {
    let (source, text) = match args.inputs.as_str() {
        "-" => ("the inputs on stdin".to_string(), std::io::read_to_string(std::io::stdin())),
        s if s.starts_with('@') => (s[1..].to_string(), std::fs::read_to_string(&s[1..])),
        s => ("the inputs".to_string(), Ok(s.to_string())),
    };
    let text = text.map_err(|e| format!("cannot read {source}: {e}"));
    let given = text.and_then(|t| {
        serde_json::from_str(&t).map_err(|e| {
            format!(
                "cannot parse {source} as JSON ({e}); give the inputs as '{{\"input name\": [1, 2]}}' \
                 (quote the whole argument in the shell), or as @FILE"
            )
        })
    });
    let given = match given {
        Ok(g) => g,
        Err(e) => {
            eprintln!("multiproc infer: {e}");
            return ExitCode::from(2);
        }
    };
    match multiproc_serve_http::client::infer(
        &args.url,
        &args.model,
        args.model_version,
        given,
        args.classification.and_then(|n| usize::try_from(n).ok()),
        Duration::from_secs(args.timeout),
    ) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        // An answer with no OIP error message: not an OIP server, likely.
        Err(ClientError::Server { status, message }) if message.is_empty() => {
            eprintln!(
                "multiproc infer: {} answered {status} without an Open Inference Protocol error; \
                 is {} a `multiproc serve` (or other OIP) server?",
                args.url, args.url
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("multiproc infer: {e}");
            ExitCode::FAILURE
        }
    }
}
