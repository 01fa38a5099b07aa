//! Seed 003: `named_processes`. Run with `cargo run -p multiproc-seeds --example named_processes`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("named_processes")
}
