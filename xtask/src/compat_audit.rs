//! `cargo xtask compat-audit`: proves that the compat crate is nothing but deprecated forwarding shims onto
//! core-registry.
//!
//! The crate is read by `migrate_check::deprecations` (its root and every out-of-line module, parsed with `syn`);
//! core-registry's exports are read from its crate root (`pub use` lists and `pub` items) and its members (methods,
//! variants) from its `impl`, `enum` and `trait` items. Each finding is a `migrate_check::Diagnostic` whose code is
//! the rule, rendered as migrate-check renders its own (`--format human|json|github|sarif`). The rules:
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
//! Exit codes: 0 clean, 1 findings, 2 the crate could not be read or parsed (one line on stderr, and the error in
//! the machine formats on stdout).

mod load;
mod rules;

use std::path::PathBuf;
use std::process::ExitCode;

use migrate_check::diag::{self, Format, Rule, SarifResult, Tool};

pub(crate) use load::display;

const HELP: &str = "\
cargo xtask compat-audit: check that the compat crate holds only deprecated forwarding items

USAGE:
    cargo xtask compat-audit [--crate-dir PATH | --manifest-path PATH] [--format human|json|github|sarif]

OPTIONS:
    --crate-dir PATH       the compat crate's directory (default: crates/registry-compat)
    --manifest-path PATH   the compat crate's Cargo.toml
    --format FORMAT        human (default), json, github or sarif, as for migrate-check
    -h, --help             print this help

Every public item must be #[deprecated(since, note)] with a note naming a path core-registry exports, and every
item must forward (type aliases, one-call wrapper fns, consts referring to core-registry, macros through
$crate::__private). Exit codes: 0 clean, 1 problems found, 2 the crate could not be read.
";

/// The audit as SARIF names it.
const TOOL: Tool = Tool {
    name: "compat-audit",
    version: env!("CARGO_PKG_VERSION"),
    information_uri: concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/MIGRATION.md"),
};

/// The audit's rules: (code, SARIF name, description).
const RULES: [(&str, &str, &str); 7] = [
    ("crate-not-deprecated", "CrateNotDeprecated", "The compat crate's root has no #![deprecated]."),
    ("missing-deprecated", "MissingDeprecated", "A public item of the compat crate is not #[deprecated]."),
    ("missing-since", "MissingSince", "A deprecation does not say since which version."),
    ("note-without-path", "NoteWithoutPath", "A deprecation note names no core_registry path."),
    ("unknown-path", "UnknownPath", "A note, alias or forwarding call names a path core-registry does not export."),
    ("not-forwarding", "NotForwarding", "An item does more than forward to core-registry."),
    ("bare-reexport", "BareReexport", "A pub use that warns nobody, without a deprecated twin."),
];

/// The parsed command line.
struct Args {
    crate_dir: PathBuf,
    format: Format,
}

pub(crate) fn main(args: &[String]) -> ExitCode {
    let args = match crate::parsed_or_exit(parse_args(args), HELP, "compat-audit") {
        Ok(parsed) => parsed,
        Err(exit) => return exit,
    };
    let rules: Vec<Rule> = RULES
        .iter()
        .map(|&(id, name, description)| Rule {
            id,
            name,
            description,
            help: "The compat crate may hold only #[deprecated] items that forward to core_registry.".to_owned(),
            help_uri: None,
        })
        .collect();
    let krate = match load::load(&args.crate_dir) {
        Ok(krate) => krate,
        Err(err) => {
            print!("{}", diag::render_error(&err, args.format, &TOOL, &rules));
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let findings = rules::analyze(&krate).findings;
    let shown_dir = display(&args.crate_dir);
    let items = migrate_check::deprecations::shims(&krate.source, "core_registry").len();
    let out = match args.format {
        Format::Human => {
            let mut out: String = findings.iter().map(diag::human).collect();
            let n = findings.len();
            if n == 0 {
                out.push_str(&format!(
                    "compat-audit: {shown_dir}: {items} items, each a deprecated forwarding shim onto core_registry\n"
                ));
            } else {
                out.push_str(&format!(
                    "compat-audit: {n} problem{} in {shown_dir}: the compat crate may hold only #[deprecated] items \
                     that forward to core_registry\n",
                    if n == 1 { "" } else { "s" }
                ));
            }
            out
        }
        Format::Json => diag::pretty(&serde_json::json!({
            "crate": shown_dir,
            "items": items,
            "findings": findings.iter().map(diag::json).collect::<Vec<_>>(),
        })),
        Format::Github => findings.iter().map(|d| diag::github(d, TOOL.name)).collect(),
        Format::Sarif => {
            let none = serde_json::Value::Null;
            let results: Vec<SarifResult<'_>> =
                findings.iter().map(|d| SarifResult { diagnostic: d, suppression: None, properties: &none }).collect();
            diag::pretty(&diag::sarif(&TOOL, &rules, &results, &[]))
        }
    };
    print!("{out}");
    if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// The crate directory to audit and the format, or `None` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut crate_dir = None;
    let mut format = Format::Human;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|err| err.to_string())? {
        let dir = match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("crate-dir") => PathBuf::from(parser.value().map_err(|err| err.to_string())?),
            Long("manifest-path") => {
                let manifest = PathBuf::from(parser.value().map_err(|err| err.to_string())?);
                if manifest.file_name().is_none_or(|name| name != "Cargo.toml") {
                    return Err(format!("`--manifest-path` must point at a Cargo.toml, not {}", manifest.display()));
                }
                manifest.parent().map(PathBuf::from).unwrap_or_default()
            }
            Long("format") => {
                let value = parser.value().map_err(|err| err.to_string())?;
                format = value.to_string_lossy().parse().map_err(|err| format!("{err} for `--format`"))?;
                continue;
            }
            other => return Err(other.unexpected().to_string()),
        };
        if crate_dir.replace(dir).is_some() {
            return Err("give the crate once, with `--crate-dir` or `--manifest-path`".to_owned());
        }
    }
    Ok(Some(Args { crate_dir: crate_dir.unwrap_or_else(default_crate_dir), format }))
}

/// The workspace's compat crate.
pub(crate) fn default_crate_dir() -> PathBuf {
    crate::project_root().join("crates/registry-compat")
}
