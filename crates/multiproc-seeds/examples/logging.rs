//! Seed 003: `logging`. Run with `cargo run -p multiproc-seeds --example logging`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("logging")
}
