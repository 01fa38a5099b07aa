//! Seed 002 on Redis: `redis_master_worker`. Run with
//! `cargo run -p multiproc-seeds --example redis_master_worker`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("redis_master_worker")
}
