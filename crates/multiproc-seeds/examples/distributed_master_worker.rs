//! Seed 002: `distributed_master_worker`. Run with
//! `cargo run -p multiproc-seeds --example distributed_master_worker`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("distributed_master_worker")
}
