//! Seed 001: `pipe_pools`. Run with `cargo run -p multiproc-seeds --example pipe_pools`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("pipe_pools")
}
