//! Development tasks for this workspace. Run `cargo xtask --help`.

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask: development tasks for this workspace

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    help    print this help
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("help" | "--help" | "-h") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unknown command `{other}`; run `cargo xtask --help` for the list");
            ExitCode::from(2)
        }
    }
}
