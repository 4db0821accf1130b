//! The command line: `cargo migrate-check` is [`run`] with [`Defaults::generic`]; a repository's own task runner
//! (this repository's `cargo xtask migrate-check`) is [`run`] with its own defaults. [`run`] prints nothing: it
//! returns what to print and the exit code, and the binary prints it.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use crate::diag::{self, Diagnostic, Format};
use crate::render::{plural, render, write_report};
use crate::{CheckOptions, Names, TOOL};

/// What a caller of [`run`] fixes in advance.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// How the user invokes the command, for the help and for usage errors (`cargo migrate-check`).
    pub program: &'static str,
    /// Names used when neither a flag nor the configuration table gives them.
    pub names: Names,
    /// The manifest to check without `--manifest-path`; `None` finds the workspace from the current directory.
    pub manifest_path: Option<PathBuf>,
}

impl Defaults {
    /// The installable tool: no names (they must be configured or given as flags), the workspace of the current
    /// directory.
    pub fn generic() -> Defaults {
        Defaults { program: "cargo migrate-check", names: Names::default(), manifest_path: None }
    }
}

/// What to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Text for standard output (the report, in the chosen format).
    pub stdout: String,
    /// Text for standard error (errors, `--fix`'s progress).
    pub stderr: String,
    /// 0: no violations; 1: violations; 2: could not check (or fix).
    pub code: u8,
}

/// The parsed command line.
#[derive(Debug, Default)]
struct Args {
    manifest_path: Option<PathBuf>,
    format: Format,
    flags: Names,
    no_source: bool,
    fix: bool,
    dry_run: bool,
    allow: crate::Allow,
    broken_code: bool,
    no_verify: bool,
}

/// What the command line asks for.
enum Command {
    Help,
    Version,
    Run(Args),
}

fn help(program: &str) -> String {
    format!(
        "\
{program}: report workspace members that still depend on or import a deprecated crate

USAGE:
    {program} [--manifest-path PATH] [--format FORMAT] [--deprecated PKG --replacement PKG] [--no-source]
    {program} --fix [--dry-run] [--allow-dirty] [--allow-staged] [--allow-no-vcs] [--broken-code | --no-verify]
        [--manifest-path PATH] [--format FORMAT] [--deprecated PKG ..]

OPTIONS:
    --manifest-path PATH  a Cargo.toml of the workspace to check (default: the workspace that contains the
                          current directory, found as Cargo finds it)
    --deprecated PKG      package name of the deprecated crate (wins over the configuration)
    --replacement PKG     package name of the crate that replaces it (wins over the configuration)
    --format FORMAT       human: rustc-style diagnostics with the fix (default)
                          json: one JSON object on stdout
                          github: `::error file=..,line=..,col=..::message` workflow commands
                          sarif: SARIF 2.1.0, one rule per violation kind
    --no-source           check manifests only, skip the source scan (faster)
    --fix                 migrate the members: swap the dependency in their Cargo.toml files and rewrite the old
                          paths to the new ones named by the deprecated crate's deprecation notes, then check again
                          and report what is left (with a `help:` line for what could not be rewritten safely)
                          (validates and computes every edit before writing; writes all files or none; then
                          compiles the workspace, all targets and the changed libraries' doctests, and puts
                          every file back if that fails; formats with rustfmt the files that were formatted)
    --dry-run             with --fix: print a unified diff (paths relative to the workspace root), change nothing;
                          exits as the real run would: 1 if violations would be left, 2 if it would refuse
    --allow-dirty         with --fix: write even if the git work tree has uncommitted changes
    --allow-staged        with --fix: write even if the git index has staged changes (nothing else uncommitted)
    --allow-no-vcs        with --fix: write even outside a git work tree, or over files git ignores
    --broken-code         with --fix: keep the edits even if the workspace no longer compiles
    --no-verify           with --fix: do not compile afterwards (unsafe: broken code stays, unseen)
    -h, --help            print this help
    -V, --version         print the version

VIOLATIONS:
    dependency   a member's Cargo.toml declares the deprecated package (any table, renamed, inherited, optional)
    transitive   a member reaches it through other packages (`via` is one shortest chain)
    source       a member's Rust source names it (or an alias) as the root of a path, `use` tree or `extern crate`,
                 also in macros and in the library's doctests (`doctest: true` in JSON)
    stale-allow  an `allow` entry names a package without violations, or a non-member

CONFIGURATION (in the root Cargo.toml; [package.metadata.migrate-check] for a single package):
    [workspace.metadata.migrate-check]
    deprecated = \"old-core\"            # package name of the deprecated crate (required, or --deprecated)
    replacement = \"new-core\"           # package that replaces it (required, or --replacement)
    replacement-version = \"1.0\"        # --fix only: version requirement to write for the replacement
    replacement-path = \"crates/new-core\"   # --fix only: its directory, relative to the workspace root
    allow = [{{ package = \"compat-tests\", reason = \"tests the shims on purpose\" }}]   # reason is required

EXIT CODES:
    0  no violations
    1  violations found
    2  could not check: no manifest, TOML that does not parse, unknown config key, allow entry without a reason,
       no deprecated or replacement package named (one line on stderr names the file and the problem)
    With --fix: 0 nothing left, 1 violations left after fixing (or code kept broken with --broken-code), 2 could
    not fix: as above, or no git work tree without --allow-no-vcs, a dirty one without --allow-dirty, the
    deprecated crate's source not found or its notes naming no replacement path, no version or path known for the
    replacement, a replacement-path that does not hold it, a replacement name no package has, a file that cannot
    be written, or a result that does not compile (then every file is put back). Exit 2 leaves every file as it
    was. With --fix --dry-run: the exit code the real run would have.

Reference: docs/migrate-check.md ({uri})
",
        uri = TOOL.information_uri
    )
}

fn parse(args: Vec<OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parsed = Args::default();
    let mut parser = lexopt::Parser::from_args(args);
    let text = |value: OsString, flag: &str| {
        value.into_string().map_err(|value| format!("`{flag}` needs UTF-8, not {value:?}"))
    };
    while let Some(arg) = parser.next().map_err(|err| err.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("manifest-path") => parsed.manifest_path = Some(PathBuf::from(parser.value().map_err(missing)?)),
            Long("format") => {
                let value = text(parser.value().map_err(missing)?, "--format")?;
                parsed.format = value.parse().map_err(|err| format!("{err} for `--format`"))?;
            }
            Long("deprecated") => {
                parsed.flags.deprecated = Some(package(text(parser.value().map_err(missing)?, "--deprecated")?)?);
            }
            Long("replacement") => {
                parsed.flags.replacement = Some(package(text(parser.value().map_err(missing)?, "--replacement")?)?);
            }
            Long("no-source") => parsed.no_source = true,
            Long("fix") => parsed.fix = true,
            Long("dry-run") => parsed.dry_run = true,
            Long("allow-dirty") => parsed.allow.dirty = true,
            Long("allow-staged") => parsed.allow.staged = true,
            Long("allow-no-vcs") => parsed.allow.no_vcs = true,
            Long("broken-code") => parsed.broken_code = true,
            Long("no-verify") => parsed.no_verify = true,
            Value(value) => return Err(format!("unexpected argument `{}`", value.to_string_lossy())),
            other => return Err(other.unexpected().to_string()),
        }
    }
    if parsed.fix && parsed.no_source {
        return Err("`--fix` rewrites sources too and cannot be combined with `--no-source`".to_owned());
    }
    let allow = parsed.allow;
    if !parsed.fix
        && (parsed.dry_run || allow.dirty || allow.staged || allow.no_vcs || parsed.broken_code || parsed.no_verify)
    {
        return Err("`--dry-run`, `--allow-dirty`, `--allow-staged`, `--allow-no-vcs`, `--broken-code` and \
                    `--no-verify` only go with `--fix`"
            .to_owned());
    }
    if parsed.broken_code && parsed.no_verify {
        return Err(
            "`--broken-code` keeps edits that do not compile, which `--no-verify` never finds out: pass one".to_owned()
        );
    }
    Ok(Command::Run(parsed))
}

fn missing(err: lexopt::Error) -> String {
    err.to_string()
}

fn package(name: String) -> Result<String, String> {
    if !crate::workspace::is_package_name(&name) {
        return Err(format!("`{name}` is not a package name"));
    }
    Ok(name)
}

/// Runs the command line `args` (without the program name, and without the `migrate-check` that cargo passes to a
/// subcommand).
pub fn run(args: impl IntoIterator<Item = OsString>, defaults: &Defaults) -> Output {
    run_with(args, defaults, None)
}

/// Like [`run`], but what is for standard output is written to `stdout` (the report as it is rendered: a JSON report
/// of thousands of violations is never held whole), so the returned [`Output::stdout`] is empty. An error writing to
/// `stdout` (a closed pipe) ends the writing, not the run.
pub fn run_to(args: impl IntoIterator<Item = OsString>, defaults: &Defaults, stdout: &mut dyn Write) -> Output {
    let mut output = run_with(args, defaults, Some(&mut *stdout));
    let _ = stdout.write_all(output.stdout.as_bytes()).and_then(|()| stdout.flush());
    output.stdout.clear();
    output
}

fn run_with(args: impl IntoIterator<Item = OsString>, defaults: &Defaults, stdout: Option<&mut dyn Write>) -> Output {
    let program = defaults.program;
    let args = match parse(args.into_iter().collect()) {
        Ok(Command::Help) => return Output { stdout: help(program), stderr: String::new(), code: 0 },
        Ok(Command::Version) => {
            let stdout = format!("{program} {}\n", TOOL.version);
            return Output { stdout, stderr: String::new(), code: 0 };
        }
        Ok(Command::Run(args)) => args,
        Err(message) => {
            let stderr = format!("error: {message}; run `{program} --help`\n");
            return Output { stdout: String::new(), stderr, code: 2 };
        }
    };
    let options = CheckOptions {
        manifest_path: args.manifest_path.clone().or_else(|| defaults.manifest_path.clone()),
        flags: args.flags.clone(),
        defaults: defaults.names.clone(),
        sources: !args.no_source,
    };
    let mut output = Output { stdout: String::new(), stderr: String::new(), code: 0 };
    let result =
        if args.fix { fix(&options, &args, &mut output) } else { check(&options, args.format, stdout, &mut output) };
    if let Err(diagnostic) = result {
        output.stdout = diag::render_error(&diagnostic, args.format, &TOOL, &[]);
        output.stderr.push_str(&format!("{diagnostic}\n"));
        output.code = 2;
    }
    output
}

fn check(
    options: &CheckOptions,
    format: Format,
    stdout: Option<&mut dyn Write>,
    output: &mut Output,
) -> Result<(), Diagnostic> {
    let ws = crate::load(options)?;
    let report = crate::check_loaded(&ws, options.sources)?;
    match stdout {
        // A closed pipe ends the writing; the exit code still says what was found.
        Some(stdout) => _ = write_report(&report, format, stdout),
        None => output.stdout = render(&report, format),
    }
    output.code = u8::from(!report.violations.is_empty());
    // Thousands of violations, or hundreds of members, are tens of thousands of strings to free (a millisecond on
    // the realistic workspace, a fifth of one on 300 members): another thread frees them, so that the report is
    // printed without waiting (a process that exits right after does not wait for it either). Where no thread can
    // be started, they are freed here.
    if report.violations.len() > 1_000 || ws.members.len() > 100 {
        let _ = std::thread::Builder::new().name("drop-report".to_owned()).spawn(move || drop((report, ws)));
    }
    Ok(())
}

fn fix(options: &CheckOptions, args: &Args, output: &mut Output) -> Result<(), Diagnostic> {
    // Every check and every edit first: a refusal here has written nothing.
    let plan = crate::plan_fix(options)?;
    for note in &plan.notes {
        output.stderr.push_str(&format!("note: {note}\n"));
    }
    // Like `cargo fix`, refuse to write where version control could not give the files back.
    let vcs = plan.ensure_vcs(args.allow);
    if args.dry_run {
        output.stdout = plan.diff();
        for (file, line, column, help) in plan.left() {
            output.stderr.push_str(&format!("note: {file}:{line}:{column}: left in place: {help}\n"));
        }
        output.stderr.push_str(&format!(
            "migrate-check --fix --dry-run: {} would change, {} left for a manual fix\n",
            plural(plan.changes().count(), "file"),
            plural(plan.unfixed.len(), "occurrence")
        ));
        // The exit code the real run would have: 2 when it would refuse, 1 when violations would be left.
        if let Err(refusal) = vcs {
            output.stderr.push_str(&format!("{refusal}\n"));
            output.code = 2;
        } else {
            output.code = u8::from(plan.would_remain() > 0);
        }
        return Ok(());
    }
    vcs?;
    let (written, broken) = plan.write(!args.no_verify, args.broken_code)?;
    let mut after = crate::check(options)?;
    plan.explain(&mut after);
    if written.is_empty() {
        output.stderr.push_str("migrate-check --fix: nothing to change\n");
    } else {
        output.stderr.push_str(&format!(
            "migrate-check --fix: rewrote {}: {}\n",
            plural(written.len(), "file"),
            written.join(", ")
        ));
    }
    output.stdout = render(&after, args.format);
    output.code = u8::from(!after.violations.is_empty());
    if let Some(errors) = broken {
        output.stderr.push_str(&format!(
            "warning: the fixed workspace does not compile; --broken-code kept the edits: {errors}\n"
        ));
        output.code = output.code.max(1);
    }
    Ok(())
}
