//! `cargo migrate-check`: the installable binary. It parses nothing itself: [`migrate_check::cli::run`] does, and this
//! prints what it returns.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use migrate_check::cli::{Defaults, run_to};

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // Run as `cargo migrate-check ...`, cargo passes the subcommand's name first.
    if args.first().is_some_and(|arg| arg == "migrate-check") {
        args.remove(0);
    }
    // The report goes to stdout as it is rendered; a closed pipe (`| head`) is not worth a panic.
    let output = run_to(args, &Defaults::generic(), &mut std::io::stdout().lock());
    let _ = std::io::stderr().lock().write_all(output.stderr.as_bytes());
    ExitCode::from(output.code)
}
