//! Seed 003: `manager_written_by_child`. Run with `cargo run -p multiproc-seeds --example manager_written_by_child`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("manager_written_by_child")
}
