//! Seed 001: `process_kinds`. Run with `cargo run -p multiproc-seeds --example process_kinds`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("process_kinds")
}
