//! `cargo xtask compat-audit`: proves that the compat crate is nothing but deprecated forwarding shims onto
//! core-registry.
//!
//! The crate is parsed with `syn` (its root and every out-of-line module); core-registry's exports are read from
//! its crate root (`pub use` lists and `pub` items) and its members (methods, variants) from its `impl`, `enum` and
//! `trait` items. Rules, each reported as `file:line:col: error[kind]: ...` with the source line, a caret and help:
//!
//! - `crate-not-deprecated`: the crate root has no `#![deprecated]`.
//! - `missing-deprecated`: a public item has no `#[deprecated]`.
//! - `missing-since`, `note-without-path`: a deprecation without `since`, or whose note names no
//!   `core_registry::` path.
//! - `unknown-path`: a note, alias or forwarding call names a `core_registry::X` (or `core_registry::X::member`)
//!   that core-registry does not export.
//! - `not-forwarding`: anything but a forwarding item: a fn whose body is not one call passing its parameters on, a
//!   `struct`/`enum`/`trait`/`impl`, a const or static that is neither a core_registry path nor a literal, a macro
//!   that does not expand through `$crate::__private`, global state.
//! - `bare-reexport`: a `pub use` (which warns nobody, rust-lang/rust#30827) without a deprecated `#[doc(hidden)]`
//!   const twin of the same name. The one other exception is `#[doc(hidden)] pub use core_registry as __private;`.
//!
//! Exit codes: 0 clean, 1 findings, 2 the crate could not be read or parsed (one line on stderr).

mod load;
mod rules;

use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) use load::{LoadError, display, load};
pub(crate) use rules::{Shim, core_paths};

const HELP: &str = "\
cargo xtask compat-audit: check that the compat crate holds only deprecated forwarding items

USAGE:
    cargo xtask compat-audit [--crate-dir PATH | --manifest-path PATH]

OPTIONS:
    --crate-dir PATH       the compat crate's directory (default: crates/registry-compat)
    --manifest-path PATH   the compat crate's Cargo.toml
    -h, --help             print this help

Every public item must be #[deprecated(since, note)] with a note naming a path core-registry exports, and every
item must forward (type aliases, one-call wrapper fns, consts referring to core-registry, macros through
$crate::__private). Exit codes: 0 clean, 1 problems found, 2 the crate could not be read.
";

pub(crate) fn main(args: &[String]) -> ExitCode {
    let crate_dir = match crate::parsed_or_exit(parse_args(args), HELP) {
        Ok(parsed) => parsed,
        Err(exit) => return exit,
    };
    let krate = match load(&crate_dir) {
        Ok(krate) => krate,
        Err(err) => {
            eprintln!("error: compat-audit could not read the crate: {err}");
            return ExitCode::from(2);
        }
    };
    let analysis = rules::analyze(&krate);
    let shown_dir = display(&crate_dir);
    if analysis.findings.is_empty() {
        println!(
            "compat-audit: {shown_dir}: {} items, each a deprecated forwarding shim onto core_registry",
            analysis.shims.len()
        );
        return ExitCode::SUCCESS;
    }
    let mut out = String::new();
    for finding in &analysis.findings {
        render(finding, &mut out);
    }
    let n = analysis.findings.len();
    out.push_str(&format!(
        "compat-audit: {n} problem{} in {shown_dir}: the compat crate may hold only #[deprecated] items that forward \
         to core_registry\n",
        if n == 1 { "" } else { "s" }
    ));
    print!("{out}");
    ExitCode::from(1)
}

/// The crate directory to audit, or `None` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<PathBuf>, String> {
    let mut crate_dir = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let dir = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--crate-dir" => PathBuf::from(args.next().ok_or("`--crate-dir` needs a path")?),
            "--manifest-path" => {
                let manifest = PathBuf::from(args.next().ok_or("`--manifest-path` needs a path")?);
                if manifest.file_name().is_none_or(|name| name != "Cargo.toml") {
                    return Err(format!("`--manifest-path` must point at a Cargo.toml, not {}", manifest.display()));
                }
                manifest.parent().map(PathBuf::from).unwrap_or_default()
            }
            other => return Err(format!("unknown argument `{other}`; run `cargo xtask compat-audit --help`")),
        };
        if crate_dir.replace(dir).is_some() {
            return Err("give the crate once, with `--crate-dir` or `--manifest-path`".to_owned());
        }
    }
    Ok(Some(crate_dir.unwrap_or_else(default_crate_dir)))
}

/// The workspace's compat crate.
pub(crate) fn default_crate_dir() -> PathBuf {
    crate::project_root().join("crates/registry-compat")
}

/// The old API's items and their replacements, in source order: the mapping `migration-doc` prints and a `--fix`
/// applies. Hidden items (the twins, `__private`) are folded into the re-exports they stand for.
pub(crate) fn migration_map(crate_dir: &std::path::Path) -> Result<Vec<Shim>, LoadError> {
    let krate = load(crate_dir)?;
    Ok(rules::analyze(&krate).shims)
}

/// Renders one finding rustc-style: location and message, the source line, a caret, and the help.
fn render(finding: &rules::Finding, out: &mut String) {
    use std::fmt::Write as _;
    let number = finding.line.to_string();
    let gutter = " ".repeat(number.len());
    let _ = writeln!(
        out,
        "{}:{}:{}: error[{}]: {}",
        finding.file, finding.line, finding.column, finding.kind, finding.message
    );
    let _ = writeln!(out, "{gutter} |");
    let _ = writeln!(out, "{number} | {}", finding.source_line);
    let _ = writeln!(out, "{gutter} | {}{}", " ".repeat(finding.column - 1), "^".repeat(finding.width.max(1)));
    let _ = writeln!(out, "{gutter} = help: {}", finding.help);
    out.push('\n');
}
