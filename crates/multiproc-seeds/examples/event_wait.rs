//! Seed 003: `event_wait`. Run with `cargo run -p multiproc-seeds --example event_wait`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("event_wait")
}
