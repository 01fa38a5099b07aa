//! Seed 003: `terminate_join`. Run with `cargo run -p multiproc-seeds --example terminate_join`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("terminate_join")
}
