//! `cargo xtask migrate-check`: proves that no workspace member still depends on or imports the deprecated crate.
//!
//! The contract (CLI, configuration, violation kinds, exit codes, output formats) is `MIGRATE_CHECK.md`; `--help`
//! summarises it. How it works, and where the contract left room:
//!
//! - Manifests are read with `toml_edit::Document` (which keeps spans), never through `cargo metadata`: members
//!   come from `members` globs, `exclude`, a root `[package]` and path dependencies inside the root, as in Cargo.
//!   Member manifests are parsed on all cores.
//! - `transitive` follows members, non-member path crates (their manifests are read too) and registry or git
//!   crates, whose edges come from `Cargo.lock` when there is one (by name, all versions merged; without a lockfile
//!   registry crates are leaves). Optional dependencies count at every step: a feature can turn them on. `[patch]`
//!   and `[replace]` are not applied.
//! - The source scan walks each member's target roots and module trees with a small lexer; only files in which one
//!   of the crate's names occurs as an identifier are parsed with `syn`, so most files cost one read and one lexer
//!   pass. A file that `syn` cannot parse is exit 2 (the tool could not check it), naming the file, line and column.
//! - The library name of the deprecated crate comes from its manifest (`[lib] name`) when it is a member or path
//!   crate, else it is the package name with `-` as `_`. A dependency key of another package that takes that name
//!   (`registry-compat = { package = "core-registry" }`) shadows it in that member's sources.
//! - `--no-source` (not part of the contract) skips the source scan; `cargo xtask bench` times both modes.
//! - `--fix [--dry-run] [--allow-dirty]` (in `fix.rs`) migrates the members, then checks again: manifests with
//!   `toml_edit::DocumentMut`, sources by byte spans, the old -> new paths from the compat crate's deprecation notes.
//! - Every violation carries `file`, `line` and `column` (for `transitive`, the member's declaration of the first
//!   package on the chain; for `stale-allow`, the entry in the root manifest) and a `help` text.

mod diff;
mod fix;
mod render;
mod source;
mod workspace;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use workspace::{Decl, DepKind, Package, Workspace};

const HELP: &str = "\
cargo xtask migrate-check: report workspace members that still depend on or import the deprecated crate

USAGE:
    cargo xtask migrate-check [--manifest-path PATH] [--format human|json|github|sarif] [--no-source]
    cargo xtask migrate-check --fix [--dry-run] [--allow-dirty] [--manifest-path PATH] [--format FORMAT]

OPTIONS:
    --manifest-path PATH  root Cargo.toml of the workspace to check (default: this workspace's)
    --format FORMAT       human: rustc-style diagnostics with the fix (default)
                          json: one JSON object on stdout
                          github: `::error file=..,line=..,col=..::message` workflow commands
                          sarif: SARIF 2.1.0, one rule per violation kind
    --no-source           check manifests only, skip the source scan (faster; used by `cargo xtask bench`)
    --fix                 migrate the members: swap the dependency in their Cargo.toml files and rewrite the old
                          paths to the new ones named by the compat crate's deprecation notes, then check again and
                          report what is left (with a `help:` line for what could not be rewritten safely)
    --dry-run             with --fix: print a unified diff (paths relative to the workspace root), change nothing
    --allow-dirty         with --fix: write even if the git work tree has uncommitted changes
    -h, --help            print this help

VIOLATIONS:
    dependency   a member's Cargo.toml declares the deprecated package (any table, renamed, inherited, optional)
    transitive   a member reaches it through other packages (`via` is one shortest chain)
    source       a member's Rust source names it (or an alias) as the root of a path, `use` tree or `extern crate`
    stale-allow  an `allow` entry names a package without violations, or a non-member

CONFIGURATION (in the checked workspace's root Cargo.toml, all keys optional):
    [workspace.metadata.migrate-check]
    deprecated = \"registry-compat\"   # package name of the deprecated crate
    replacement = \"core-registry\"    # package that replaces it
    replacement-version = \"0.10\"     # --fix only: version requirement to write for the replacement
    replacement-path = \"crates/core-registry\"   # --fix only: its directory, relative to the workspace root
    allow = [{ package = \"compat-tests\", reason = \"tests the shims on purpose\" }]   # reason is required

EXIT CODES:
    0  no violations
    1  violations found
    2  could not check: no such manifest, not a workspace, TOML that does not parse, unknown config key, allow
       entry without a reason (one line on stderr names the file and the problem)
    With --fix: 0 nothing left, 1 violations left after fixing, 2 could not fix (as above, or a dirty work tree
    without --allow-dirty, or the compat crate's source or the replacement's version cannot be found)
";

/// A reason the workspace could not be checked: one line naming the file and the problem (exit 2).
#[derive(Debug)]
pub(crate) struct CheckError(pub(crate) String);

/// Output format of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Human,
    Json,
    Github,
    Sarif,
}

/// The four violation kinds, in the order their names sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Dependency,
    Source,
    StaleAllow,
    Transitive,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Dependency, Kind::Transitive, Kind::Source, Kind::StaleAllow];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Dependency => "dependency",
            Kind::Transitive => "transitive",
            Kind::Source => "source",
            Kind::StaleAllow => "stale-allow",
        }
    }
}

/// One finding. Fields that do not apply to its kind are `None`.
#[derive(Debug)]
pub(crate) struct Violation {
    pub(crate) package: String,
    pub(crate) kind: Kind,
    pub(crate) dependency_kind: Option<&'static str>,
    pub(crate) target: Option<String>,
    pub(crate) optional: Option<bool>,
    pub(crate) rename: Option<String>,
    pub(crate) via: Option<Vec<String>>,
    /// Relative to the workspace root, `/` separated.
    pub(crate) file: String,
    pub(crate) line: usize,
    /// 1-based, in characters.
    pub(crate) column: usize,
    pub(crate) message: String,
    pub(crate) help: String,
    /// The source line and the width of the caret, for human output.
    pub(crate) line_text: String,
    pub(crate) width: usize,
}

/// Violations of an allowlisted member.
#[derive(Debug)]
pub(crate) struct Allowed {
    pub(crate) package: String,
    pub(crate) reason: String,
    pub(crate) violations: Vec<Violation>,
}

/// The result of a check.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) deprecated: String,
    pub(crate) replacement: String,
    pub(crate) packages_checked: usize,
    /// Sorted by (package, file, line, column, kind).
    pub(crate) violations: Vec<Violation>,
    /// Sorted by package.
    pub(crate) allowed: Vec<Allowed>,
}

/// Runs the command with its arguments (after `migrate-check`).
pub(crate) fn main(args: &[String]) -> ExitCode {
    let mut manifest_path = None;
    let mut format = Format::Human;
    let mut scan_sources = true;
    let (mut fix, mut dry_run, mut allow_dirty) = (false, false, false);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next().cloned());
        match flag {
            "-h" | "--help" => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            "--manifest-path" => match value() {
                Some(path) => manifest_path = Some(PathBuf::from(path)),
                None => return usage_error("`--manifest-path` needs a path to a root Cargo.toml"),
            },
            "--format" => {
                format = match value().as_deref() {
                    Some("human") => Format::Human,
                    Some("json") => Format::Json,
                    Some("github") => Format::Github,
                    Some("sarif") => Format::Sarif,
                    Some(other) => {
                        return usage_error(&format!(
                            "unknown format `{other}` for `--format` (expected human, json, github or sarif)"
                        ));
                    }
                    None => return usage_error("`--format` needs one of human, json, github, sarif"),
                }
            }
            "--no-source" if inline.is_none() => scan_sources = false,
            "--fix" if inline.is_none() => fix = true,
            "--dry-run" if inline.is_none() => dry_run = true,
            "--allow-dirty" if inline.is_none() => allow_dirty = true,
            _ => return usage_error(&format!("unexpected argument `{arg}`")),
        }
    }
    let manifest_path = manifest_path.unwrap_or_else(|| crate::project_root().join("Cargo.toml"));
    if fix {
        if !scan_sources {
            return usage_error("`--fix` rewrites sources too and cannot be combined with `--no-source`");
        }
        return fix::run(&manifest_path, format, fix::Options { dry_run, allow_dirty });
    }
    if dry_run || allow_dirty {
        return usage_error("`--dry-run` and `--allow-dirty` only go with `--fix`");
    }
    match check(&manifest_path, scan_sources) {
        Ok(report) => {
            let output = render::render(&report, format);
            // A closed pipe (`| head`) is not worth a panic.
            let _ = std::io::stdout().lock().write_all(output.as_bytes());
            if report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(CheckError(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}; run `cargo xtask migrate-check --help`");
    ExitCode::from(2)
}

/// Checks the workspace whose root manifest is `manifest_path`; `scan_sources: false` checks manifests only.
pub(crate) fn check(manifest_path: &Path, scan_sources: bool) -> Result<Report, CheckError> {
    let ws = Workspace::load(manifest_path)?;
    let config = &ws.config;
    let deprecated = config.deprecated.as_str();
    let deprecated_lib = ws.lib_name(deprecated);
    let replacement_lib = ws.lib_name(&config.replacement);
    let checked: Vec<&Package> =
        ws.members.iter().filter(|p| p.name != deprecated && p.name != config.replacement).collect();
    let graph = Graph::new(&ws, deprecated);
    let texts = Texts { deprecated, replacement: &config.replacement, replacement_lib: &replacement_lib };

    let mut per_package: Vec<Vec<Violation>> = checked
        .iter()
        .map(|member| {
            let own: Vec<&Decl> = member.decls.iter().filter(|d| d.package == deprecated).collect();
            if !own.is_empty() {
                own.into_iter().map(|decl| texts.dependency(member, decl)).collect()
            } else {
                graph.transitive(member).map(|(via, decl)| texts.transitive(member, decl, via)).into_iter().collect()
            }
        })
        .collect();

    if scan_sources {
        let scans = par_map(&checked, |member| {
            let names = source_names(member, deprecated, &deprecated_lib);
            source::scan(member, &ws.root, &ws.root_shown, &names)
        });
        for ((member, scan), violations) in checked.iter().zip(scans).zip(&mut per_package) {
            violations.extend(scan?.into_iter().map(|hit| texts.source(member, hit)));
        }
    }

    let mut violations = Vec::new();
    let mut allowed = Vec::new();
    for (member, mut found) in checked.iter().zip(per_package) {
        match config.allow.iter().find(|entry| entry.package == member.name) {
            Some(entry) if !found.is_empty() => {
                sort(&mut found);
                allowed.push(Allowed { package: member.name.clone(), reason: entry.reason.clone(), violations: found });
            }
            _ => violations.extend(found),
        }
    }
    for entry in &config.allow {
        if allowed.iter().any(|a| a.package == entry.package) {
            continue;
        }
        let is_member = checked.iter().any(|m| m.name == entry.package);
        let problem = if is_member { "has no violation to allow" } else { "is not a checked workspace member" };
        violations.push(Violation {
            message: format!("allow entry for `{}` is stale: `{}` {problem}", entry.package, entry.package),
            help: "remove it from `allow` in [workspace.metadata.migrate-check]: the allowlist only shrinks".to_owned(),
            line_text: ws.root_text.lines().nth(entry.line - 1).unwrap_or("").to_owned(),
            width: "package".len(),
            ..Violation::new(&entry.package, Kind::StaleAllow, "Cargo.toml".to_owned(), entry.line, entry.column)
        });
    }
    sort(&mut violations);
    allowed.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(Report {
        deprecated: deprecated.to_owned(),
        replacement: config.replacement.clone(),
        packages_checked: checked.len(),
        violations,
        allowed,
    })
}

fn sort(violations: &mut [Violation]) {
    violations.sort_by(|a, b| {
        (&a.package, &a.file, a.line, a.column, a.kind).cmp(&(&b.package, &b.file, b.line, b.column, b.kind))
    });
}

/// The names under which a member's sources can reach the deprecated crate: its library name (unless a dependency
/// on another package takes that name) and every Cargo rename of it. `extern crate` aliases are added by the scan.
fn source_names(member: &Package, deprecated: &str, deprecated_lib: &str) -> Vec<String> {
    let extern_name = |decl: &Decl| {
        if decl.package == deprecated && decl.key == decl.package {
            deprecated_lib.to_owned()
        } else {
            decl.key.replace('-', "_")
        }
    };
    let shadowed = member.decls.iter().any(|d| d.package != deprecated && extern_name(d) == deprecated_lib);
    let mut names = if shadowed { Vec::new() } else { vec![deprecated_lib.to_owned()] };
    for decl in member.decls.iter().filter(|d| d.package == deprecated) {
        let name = extern_name(decl);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

impl Violation {
    fn new(package: &str, kind: Kind, file: String, line: usize, column: usize) -> Violation {
        Violation {
            package: package.to_owned(),
            kind,
            dependency_kind: None,
            target: None,
            optional: None,
            rename: None,
            via: None,
            file,
            line,
            column,
            message: String::new(),
            help: String::new(),
            line_text: String::new(),
            width: 1,
        }
    }
}

/// Messages and fixes.
struct Texts<'a> {
    deprecated: &'a str,
    replacement: &'a str,
    replacement_lib: &'a str,
}

impl Texts<'_> {
    fn dependency(&self, member: &Package, decl: &Decl) -> Violation {
        let rename = (decl.key != decl.package).then(|| decl.key.clone());
        let mut details = vec![format!("{} dependency", decl.kind.as_str())];
        if decl.optional {
            details.push("optional".to_owned());
        }
        if let Some(target) = &decl.target {
            details.push(format!("target `{target}`"));
        }
        if let Some(rename) = &rename {
            details.push(format!("renamed `{rename}`"));
        }
        Violation {
            dependency_kind: Some(decl.kind.as_str()),
            target: decl.target.clone(),
            optional: Some(decl.optional),
            message: format!("`{}` depends on deprecated `{}` ({})", member.name, self.deprecated, details.join(", ")),
            help: format!("depend on `{}` instead of `{}`", self.replacement, self.deprecated),
            line_text: member.text.lines().nth(decl.line - 1).unwrap_or("").to_owned(),
            width: decl.key.chars().count(),
            rename,
            ..Violation::new(&member.name, Kind::Dependency, member.manifest_rel.clone(), decl.line, decl.column)
        }
    }

    fn transitive(&self, member: &Package, decl: &Decl, via: Vec<String>) -> Violation {
        let last = via.last().cloned().unwrap_or_default();
        Violation {
            message: format!(
                "`{}` depends on deprecated `{}` through `{}`: {} -> {}",
                member.name,
                self.deprecated,
                decl.package,
                via.join(" -> "),
                self.deprecated
            ),
            help: format!("migrate `{last}` to `{}`, or drop this dependency on `{}`", self.replacement, decl.package),
            line_text: member.text.lines().nth(decl.line - 1).unwrap_or("").to_owned(),
            width: decl.key.chars().count(),
            via: Some(via),
            ..Violation::new(&member.name, Kind::Transitive, member.manifest_rel.clone(), decl.line, decl.column)
        }
    }

    fn source(&self, member: &Package, hit: source::Hit) -> Violation {
        Violation {
            message: format!("`{}` refers to deprecated `{}` as `{}`", member.name, self.deprecated, hit.name),
            help: format!(
                "use `{}` instead of `{}`, and depend on `{}`",
                self.replacement_lib, hit.name, self.replacement
            ),
            width: hit.name.chars().count(),
            line_text: hit.line_text,
            ..Violation::new(&member.name, Kind::Source, hit.file, hit.line, hit.column)
        }
    }
}

/// The package graph for `transitive`: members, non-member path crates, then registry crates from `Cargo.lock`.
struct Graph<'w> {
    names: Vec<&'w str>,
    /// Edges to other packages: (target node, kind, the declaration for members).
    edges: Vec<Vec<(usize, DepKind, Option<&'w Decl>)>>,
    /// Shortest number of normal/build steps to a package that declares the deprecated crate as a normal or build
    /// dependency (1 for such a package); `u32::MAX` when it cannot reach it.
    dist: Vec<u32>,
    // Keyed by the directory's bytes (directories are normalized): much cheaper to hash than a `Path`.
    member_index: HashMap<&'w OsStr, usize>,
}

impl<'w> Graph<'w> {
    fn new(ws: &'w Workspace, deprecated: &str) -> Graph<'w> {
        let packages: Vec<&Package> = ws.members.iter().chain(&ws.others).collect();
        let mut names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        let member_index: HashMap<&OsStr, usize> =
            packages.iter().enumerate().map(|(i, p)| (p.dir.as_os_str(), i)).collect();
        let mut registry_names: Vec<&str> = ws.registry.keys().map(String::as_str).collect();
        registry_names.sort_unstable();
        let registry_index: HashMap<&str, usize> =
            registry_names.iter().enumerate().map(|(i, name)| (*name, packages.len() + i)).collect();
        names.extend(&registry_names);

        let mut edges: Vec<Vec<(usize, DepKind, Option<&Decl>)>> = vec![Vec::new(); names.len()];
        let mut terminal = vec![false; names.len()];
        for (i, package) in packages.iter().enumerate() {
            for decl in &package.decls {
                if decl.package == deprecated {
                    terminal[i] |= decl.kind != DepKind::Dev;
                    continue;
                }
                let target = match &decl.path {
                    Some(dir) => member_index.get(dir.as_os_str()).copied(),
                    None => registry_index.get(decl.package.as_str()).copied(),
                };
                if let Some(target) = target {
                    edges[i].push((target, decl.kind, Some(decl)));
                }
            }
        }
        for (name, deps) in &ws.registry {
            let i = registry_index[name.as_str()];
            for dep in deps {
                if dep == deprecated {
                    terminal[i] = true;
                } else if let Some(&target) = registry_index.get(dep.as_str()) {
                    edges[i].push((target, DepKind::Normal, None));
                }
            }
        }

        // Breadth-first from the declaring packages over reversed normal and build edges.
        let mut reverse: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
        for (from, out) in edges.iter().enumerate() {
            for &(to, kind, _) in out {
                if kind != DepKind::Dev {
                    reverse[to].push(from);
                }
            }
        }
        let mut dist = vec![u32::MAX; names.len()];
        let mut queue = std::collections::VecDeque::new();
        for (i, &is_terminal) in terminal.iter().enumerate() {
            if is_terminal {
                dist[i] = 1;
                queue.push_back(i);
            }
        }
        while let Some(node) = queue.pop_front() {
            for &from in &reverse[node] {
                if dist[from] == u32::MAX {
                    dist[from] = dist[node] + 1;
                    queue.push_back(from);
                }
            }
        }
        Graph { names, edges, dist, member_index }
    }

    /// One shortest chain from `member` to a package that declares the deprecated crate, with the member's
    /// declaration of the first step. All of the member's own dependency kinds count for that first step.
    fn transitive(&self, member: &Package) -> Option<(Vec<String>, &'w Decl)> {
        let start = self.member_index[member.dir.as_os_str()];
        let &(first, _, decl) = self.edges[start]
            .iter()
            .filter(|(to, _, _)| self.dist[*to] != u32::MAX)
            .min_by_key(|(to, _, decl)| (self.dist[*to], self.names[*to], decl.map(|d| d.line)))?;
        let decl = decl?;
        let mut via = vec![member.name.clone(), self.names[first].to_owned()];
        let mut node = first;
        while self.dist[node] > 1 {
            node = self.edges[node]
                .iter()
                .filter(|(to, kind, _)| *kind != DepKind::Dev && self.dist[*to] == self.dist[node] - 1)
                .map(|(to, _, _)| *to)
                .min_by_key(|to| self.names[*to])?;
            via.push(self.names[node].to_owned());
        }
        Some((via, decl))
    }
}

/// Maps `items` on all cores (at most 8 threads), keeping the order.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
