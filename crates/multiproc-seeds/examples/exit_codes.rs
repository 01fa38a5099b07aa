//! Seed 003: `exit_codes`. Run with `cargo run -p multiproc-seeds --example exit_codes`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("exit_codes")
}
