//! Development tasks for this workspace, run as `cargo xtask <command>`. Each command lives in its own module;
//! this file only dispatches.

#![allow(
    clippy::result_large_err,
    reason = "errors are `migrate_check::Diagnostic`s, at most one a run: their size costs nothing"
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod compat_audit;
mod migrate_check;
mod migration_doc;
mod test;

const HELP: &str = "\
cargo xtask: development tasks for this workspace

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    migrate-check   report workspace members that still depend on or import the deprecated crate
    compat-audit    check that the compat crate holds only deprecated forwarding items
    migration-doc   regenerate MIGRATION.md's old -> new table (--check: fail when it is stale)
    bench           run the benchmarks (migrate-check vs cargo metadata, registry, gateway load) in one table
    test            install what the tests need (chromium, redis-server, npm packages) if missing, then cargo test
                    --workspace
    help            print this help

Run `cargo xtask <COMMAND> --help` for a command's options.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    };
    match command.as_str() {
        "migrate-check" => migrate_check::main(rest),
        "compat-audit" => compat_audit::main(rest),
        "migration-doc" => migration_doc::main(rest),
        "bench" => bench::main(rest),
        "test" => test::main(rest),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("error: unknown command `{other}`; run `cargo xtask --help` for the list");
            ExitCode::from(2)
        }
    }
}

/// What a command's argument parser (each one uses `lexopt`) returns: `Ok(Some(args))` to run, `Ok(None)` when help
/// was asked for, or a usage error. Prints the help or the error with the way to the help; `Err` carries the exit
/// code to return (0 after help, 2 after an error).
pub(crate) fn parsed_or_exit<A>(parsed: Result<Option<A>, String>, help: &str, command: &str) -> Result<A, ExitCode> {
    match parsed {
        Ok(Some(args)) => Ok(args),
        Ok(None) => {
            print!("{help}");
            Err(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("error: {message}; run `cargo xtask {command} --help`");
            Err(ExitCode::from(2))
        }
    }
}

/// The root of this workspace (the directory holding the root Cargo.toml).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the workspace root").to_owned()
}
