//! Seed 001: `manager_dict_list`. Run with `cargo run -p multiproc-seeds --example manager_dict_list`.

fn main() -> std::process::ExitCode {
    multiproc_seeds::run_example_main("manager_dict_list")
}
