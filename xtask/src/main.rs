//! Development tasks for this workspace, run as `cargo xtask <command>`. Each command lives in its own module;
//! this file only dispatches.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod bench;
mod compat_audit;
mod migrate_check;
mod migration_doc;

const HELP: &str = "\
cargo xtask: development tasks for this workspace

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    migrate-check   report workspace members that still depend on or import the deprecated crate
    compat-audit    check that the compat crate holds only deprecated forwarding items
    migration-doc   regenerate MIGRATION.md's old -> new table (--check: fail when it is stale)
    bench           run the benchmarks (migrate-check vs cargo metadata, registry, gateway load) in one table
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

/// The root of this workspace (the directory holding the root Cargo.toml).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives one level below the workspace root").to_owned()
}
