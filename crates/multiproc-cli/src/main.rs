//! The `multiproc` command.
//!
//! `multiproc tour` runs every seed example (see the `multiproc-seeds` crate)
//! and prints what each one shows; `multiproc serve` serves models over the
//! Open Inference Protocol; `multiproc infer` asks such a server.

mod serve;

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use multiproc_seeds::{EXAMPLES, Example};

/// Python's multiprocessing, rebuilt for Rust.
#[derive(Debug, Parser)]
#[command(name = "multiproc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the seed examples and print what each one shows.
    Tour {
        /// Run only these examples (default: all of them, in order).
        names: Vec<String>,
        /// List the examples instead of running them.
        #[arg(long)]
        list: bool,
    },
    /// Serve a model repository over HTTP (the Open Inference Protocol / KServe v2, Triton's binary tensors).
    Serve(serve::ServeArgs),
    /// Run one inference on a `multiproc serve` (or any Open Inference Protocol) server.
    Infer(serve::InferArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Tour { names, list } => tour(&names, list),
        Command::Serve(args) => serve::serve(args),
        Command::Infer(args) => serve::infer(args),
    }
}

fn tour(names: &[String], list: bool) -> ExitCode {
    let unknown: Vec<&String> = names.iter().filter(|n| multiproc_seeds::example(n).is_none()).collect();
    if !unknown.is_empty() {
        eprintln!("multiproc tour: no example called {unknown:?}; `multiproc tour --list` shows them");
        return ExitCode::from(2);
    }
    let chosen: Vec<&Example> =
        EXAMPLES.iter().filter(|e| names.is_empty() || names.contains(&e.name.to_string())).collect();
    if list {
        for e in &chosen {
            println!("{:<20} seed {}  {}", e.name, e.seed, e.shows);
        }
        return ExitCode::SUCCESS;
    }

    println!("multiproc tour: {} examples from the seed programs", chosen.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for e in &chosen {
        println!();
        println!("== {} (seed {}): {}", e.name, e.seed, e.shows);
        let t = Instant::now();
        match (e.run)() {
            Ok(lines) => {
                for line in lines {
                    println!("   {line}");
                }
                println!("   ({:.2?})", t.elapsed());
            }
            Err(err) => {
                println!("   FAILED: {err}");
                failed.push(e.name);
            }
        }
    }
    println!();
    let ran = chosen.len() - failed.len();
    println!("tour: {ran} of {} examples ran in {:.2?}", chosen.len(), started.elapsed());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("tour: failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
