//! The multiproc benchmark harness: each workload measured with multiproc,
//! with CPython's `multiprocessing` and against a physical floor, in one run.
//!
//! ```text
//! cargo run --release -p multiproc-bench -- [--quick] [--only NAME...] [--json FILE] [--python CMD] [--verify-all]
//! ```
//!
//! See `bench/README.md` for the workloads and how to add one.

mod machine;
mod measure;
mod python;
mod report;
mod workloads;

use std::fmt;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

/// First argument that makes the binary exit before doing anything: the
/// re-execution floor of `spawn_join` runs the binary with it.
pub const EXIT_AT_ONCE: &str = "--exit-at-once";

/// A failed measurement or a failed check, with what happened.
#[derive(Debug)]
pub struct BenchError(String);

impl BenchError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> BenchError {
        BenchError(message.into())
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for BenchError {
    fn from(e: E) -> BenchError {
        BenchError(e.to_string())
    }
}

/// Fails with `what()` unless `ok`: benchmarks check their results.
pub fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), BenchError> {
    if ok { Ok(()) } else { Err(BenchError(format!("check failed: {}", what()))) }
}

#[derive(Debug, Default)]
struct Args {
    quick: bool,
    only: Vec<String>,
    json: Option<PathBuf>,
    python: Option<String>,
    list: bool,
    verify_all: bool,
}

const USAGE: &str =
    "usage: multiproc-bench [--quick] [--only NAME...] [--json FILE] [--python CMD] [--verify-all] [--list]

  --quick        short plans (the whole run takes well under two minutes)
  --only NAME... run only these workloads (see --list)
  --json FILE    write the rows and machine information to FILE
  --python CMD   the CPython to compare with (default: python3)
  --verify-all   check every byte of every large message, not only in warm-up
                 (slower: for validating results, not for figures)
  --list         list the workloads and exit";

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1).peekable();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--list" => args.list = true,
            "--verify-all" => args.verify_all = true,
            "--json" => args.json = Some(it.next().ok_or("--json needs a file name")?.into()),
            "--python" => args.python = Some(it.next().ok_or("--python needs a command")?),
            "--only" => {
                while let Some(name) = it.next_if(|a| !a.starts_with("--")) {
                    args.only.push(name);
                }
                if args.only.is_empty() {
                    return Err("--only needs at least one workload name".into());
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == EXIT_AT_ONCE) {
        std::process::exit(0);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("multiproc-bench: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("multiproc-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), BenchError> {
    if args.list {
        let width = workloads::ALL.iter().map(|w| w.name.len()).max().unwrap_or(0);
        for w in workloads::ALL {
            println!("{:<width$}  {}", w.name, w.about);
        }
        return Ok(());
    }
    let selected = workloads::select(&args.only)?;
    if cfg!(debug_assertions) {
        eprintln!("multiproc-bench: warning: a debug build; figures need --release");
    }
    let python = python::Python::probe(args.python.as_deref().unwrap_or("python3"))?;
    if !python.version.starts_with("3.11.") {
        eprintln!("multiproc-bench: note: comparing with CPython {}, the contract says 3.11", python.version);
    }
    eprintln!("{}", machine::summary(&python));
    let ctx = workloads::Ctx { quick: args.quick, verify_all: args.verify_all, python };
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for w in &selected {
        eprintln!("== {}: {}", w.name, w.about);
        match (w.run)(&ctx) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("  FAILED: {e}");
                errors.push(json!({ "workload": w.name, "error": e.to_string() }));
            }
        }
    }
    let elapsed = started.elapsed();
    println!();
    print!("{}", report::table(&rows));
    for r in &rows {
        if let Some(reference) = r.extra.get("reference") {
            println!(
                "{}: reference {} = {} {}",
                r.workload,
                reference["name"].as_str().unwrap_or("?"),
                report::fmt_figure(reference["value"].as_f64().unwrap_or(f64::NAN)),
                r.unit.label()
            );
        }
        let method = |key: &str| r.extra.get(key).and_then(|v| v.as_str());
        if let (Some(ours), Some(theirs)) = (method("multiproc_method"), method("cpython_method")) {
            println!("{}: best start method: multiproc {ours}, cpython {theirs}", r.workload);
        }
    }
    let mode = match (ctx.quick, ctx.verify_all) {
        (true, true) => " (--quick --verify-all)",
        (true, false) => " (--quick)",
        (false, true) => " (--verify-all)",
        (false, false) => "",
    };
    println!("measured in {:.1} s{mode}", elapsed.as_secs_f64());

    if let Some(path) = &args.json {
        let mut doc = json!({
            "rows": rows.iter().map(report::Row::to_json).collect::<Vec<_>>(),
            "errors": errors,
            "quick": ctx.quick,
            "verify_all": ctx.verify_all,
            "workloads": selected.iter().map(|w| w.name).collect::<Vec<_>>(),
            "elapsed_s": elapsed.as_secs_f64(),
            "timestamp_unix": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        });
        if let (Some(doc), serde_json::Value::Object(info)) = (doc.as_object_mut(), machine::describe(&ctx.python)) {
            doc.extend(info);
        }
        let text = serde_json::to_string_pretty(&doc)? + "\n";
        std::fs::write(path, text).map_err(|e| BenchError::new(format!("cannot write {}: {e}", path.display())))?;
        println!("wrote {}", path.display());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BenchError::new(format!("{} workload(s) failed; see above", errors.len())))
    }
}
