//! Seed 001: `pipe_ping_pong`. Run with `cargo run -p multiproc-seeds --example pipe_ping_pong`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("pipe_ping_pong")
}
