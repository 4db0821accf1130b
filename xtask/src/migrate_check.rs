//! `cargo xtask migrate-check`: the `cargo-migrate-check` library's command line with this repository's defaults:
//! the deprecated crate is `registry-compat`, its replacement `core-registry`, and the workspace is this one. Every
//! flag and rule is the tool's own (`docs/migrate-check.md`).

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use migrate_check::Names;
use migrate_check::cli::{Defaults, run_to};

/// Runs the command with its arguments (after `migrate-check`).
pub(crate) fn main(args: &[String]) -> ExitCode {
    let defaults = Defaults {
        program: "cargo xtask migrate-check",
        names: Names { deprecated: Some("registry-compat".to_owned()), replacement: Some("core-registry".to_owned()) },
        manifest_path: Some(crate::project_root().join("Cargo.toml")),
    };
    // The report goes to stdout as it is rendered; a closed pipe (`| head`) is not worth a panic.
    let output = run_to(args.iter().map(OsString::from), &defaults, &mut std::io::stdout().lock());
    let _ = std::io::stderr().lock().write_all(output.stderr.as_bytes());
    ExitCode::from(output.code)
}
