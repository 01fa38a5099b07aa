//! Seeds 003 and 004: `globals_not_shared`. Run with `cargo run -p multiproc-seeds --example globals_not_shared`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("globals_not_shared")
}
