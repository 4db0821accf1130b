//! `migrate-check` proves that no member of a Cargo workspace still depends on or imports a deprecated crate, and
//! `--fix` migrates the members to its replacement. This is the library; `cargo migrate-check` (the
//! `cargo-migrate-check` binary) is a thin shell around [`cli::run`].
//!
//! The rules (what counts as a violation, the configuration, exit codes and output formats) are the tool's public
//! contract, written down in `docs/migrate-check.md`. How the library works, and where the contract left room:
//!
//! - Manifests are read with spans, never through `cargo metadata`: the root manifest with `toml_edit::Document`,
//!   the members', path crates' and `Cargo.lock` with the `toml` crate's borrowing `DeTable` (about 0.6x the time).
//!   The root is found as Cargo finds it, members come from `members` globs, `exclude`, a root `[package]` and path
//!   dependencies inside the root. A root manifest with `[package]` and no `[workspace]` is a one-member workspace.
//!   Member manifests are parsed on all cores.
//! - `transitive` follows the graph Cargo builds: members, non-member path crates (their manifests are read too,
//!   `[patch]` and `[replace]` paths included) and registry or git crates, one node per version locked in
//!   `Cargo.lock`, each with its own edges (without a lockfile, registry crates are leaves). Optional dependencies
//!   count at every step: a feature can turn them on.
//! - The source scan reads each member's target roots and module trees once, lexes a
//!   file only when its text may declare modules or names the crate, and finds path roots and `mod` items as token
//!   patterns, in code, macro token trees and the library's doctests alike. A file whose delimiters do not balance
//!   cannot be checked: that is an error, naming the file, line and column.
//! - The library name of the deprecated crate comes from its manifest (`[lib] name`) when it is a member or path
//!   crate, else it is the package name with `-` as `_`. A dependency key of another package that takes that name
//!   (`old-core = { package = "new-core" }`) shadows it in that member's sources.
//! - Every violation carries a [`Diagnostic`] with `file`, `line` and `column` (for `transitive`, the member's
//!   declaration of the first package on the chain; for `stale-allow`, the entry in the root manifest) and a `help`.
//!
//! The library never prints and never exits: [`check`] returns a [`Report`] or the [`Diagnostic`] that kept it from
//! checking; [`plan_fix`] returns the edits `--fix` would make, and [`FixPlan::write`] makes them.
//!
//! ```no_run
//! use migrate_check::{CheckOptions, Names};
//!
//! let options = CheckOptions {
//!     flags: Names { deprecated: Some("old-core".into()), replacement: Some("new-core".into()) },
//!     ..CheckOptions::default()
//! };
//! match migrate_check::check(&options) {
//!     Ok(report) if report.violations.is_empty() => eprintln!("ok: {} packages", report.packages_checked),
//!     Ok(report) => eprintln!("{} violations", report.violations.len()),
//!     Err(diagnostic) => eprintln!("{diagnostic}"),
//! }
//! ```

#![allow(
    clippy::result_large_err,
    reason = "the error type is the one `Diagnostic` every command renders; a run has at most one, so its size costs \
              nothing, and boxing it would only add a layer to every caller"
)]

pub mod cli;
pub mod deprecations;
pub mod diag;
mod fix;
mod lex;
pub mod modules;
pub mod paths;
mod read;
mod render;
mod source;
mod workspace;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use diag::{Diagnostic, Format, Severity};
pub use fix::{Allow, FileChange, FixPlan, Unfixed, plan_fix};
pub use render::render;
pub use workspace::Names;

use workspace::{Decl, DepKind, Lock, Package, Workspace};

/// The tool's name, version and documentation, as SARIF output reports them.
pub const TOOL: diag::Tool = diag::Tool {
    name: "migrate-check",
    version: env!("CARGO_PKG_VERSION"),
    information_uri: concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/docs/migrate-check.md"),
};

/// What to check and how.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// A `Cargo.toml` of the workspace (its root's or a member's); `None` finds it from the current directory, as
    /// Cargo does.
    pub manifest_path: Option<PathBuf>,
    /// Names given on the command line: they win over the configuration table.
    pub flags: Names,
    /// Names to use when neither the flags nor the configuration table set them (none for the generic tool).
    pub defaults: Names,
    /// Scan Rust sources too (`false`: manifests only, as `--no-source`).
    pub sources: bool,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions { manifest_path: None, flags: Names::default(), defaults: Names::default(), sources: true }
    }
}

/// The four violation kinds, in the order their names sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A member's Cargo.toml declares the deprecated package.
    Dependency,
    /// A member's Rust source names the deprecated crate as a path root.
    Source,
    /// An `allow` entry has nothing to allow.
    StaleAllow,
    /// A member reaches the deprecated package through other packages.
    Transitive,
}

impl Kind {
    /// Every kind, in the order the summary and SARIF list them.
    pub const ALL: [Kind; 4] = [Kind::Dependency, Kind::Transitive, Kind::Source, Kind::StaleAllow];

    /// The kind's name in the output (`dependency`, `transitive`, `source`, `stale-allow`): the diagnostic code.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dependency => "dependency",
            Kind::Transitive => "transitive",
            Kind::Source => "source",
            Kind::StaleAllow => "stale-allow",
        }
    }

    /// The SARIF rule of this kind; `help` says what to do, with the names of the two crates.
    pub fn rule(self, deprecated: &str, replacement: &str) -> diag::Rule {
        let (name, description) = match self {
            Kind::Dependency => (
                "DeprecatedDependency",
                "A member's Cargo.toml declares the deprecated package (any table, renamed, inherited or optional).",
            ),
            Kind::Transitive => {
                ("TransitiveDeprecatedDependency", "A member reaches the deprecated package through other packages.")
            }
            Kind::Source => {
                ("DeprecatedCratePath", "A member's Rust source names the deprecated crate as the root of a path.")
            }
            Kind::StaleAllow => {
                ("StaleAllowEntry", "An allow entry names a package that has no violation or is not a member.")
            }
        };
        let help = match self {
            Kind::StaleAllow => "Remove the entry from `allow` in the migrate-check configuration table.".to_owned(),
            _ => format!("Depend on and import `{replacement}` instead of `{deprecated}`."),
        };
        // docs/migrate-check.md has a heading per kind, named as the kind.
        let help_uri = Some(format!("{}#{}", TOOL.information_uri, self.as_str()));
        diag::Rule { id: self.as_str(), name, description, help, help_uri }
    }
}

/// One finding: the diagnostic and the fields of its kind. Fields that do not apply to the kind are `None`.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The member it belongs to.
    pub package: String,
    /// What kind of violation it is.
    pub kind: Kind,
    /// `dependency`: `normal`, `dev` or `build`.
    pub dependency_kind: Option<&'static str>,
    /// `dependency`: the `cfg(..)` or target triple of a `[target.<..>]` table.
    pub target: Option<String>,
    /// `dependency`: whether it is optional.
    pub optional: Option<bool>,
    /// `dependency`: the dependency key when it renames the package.
    pub rename: Option<String>,
    /// `transitive`: package names from the member to the package that declares the deprecated crate.
    pub via: Option<Vec<String>>,
    /// `source`: the occurrence is in a doctest (a code block of the library's documentation).
    pub doctest: bool,
    /// Where and what: `file` (relative to the workspace root), `line`, `column`, `message`, `help`.
    pub diagnostic: Diagnostic,
}

impl Violation {
    /// The file, relative to the workspace root.
    pub fn file(&self) -> &str {
        self.diagnostic.file.as_deref().unwrap_or_default()
    }

    /// 1-based line.
    pub fn line(&self) -> usize {
        self.diagnostic.line.unwrap_or(1)
    }

    /// 1-based column, in characters.
    pub fn column(&self) -> usize {
        self.diagnostic.column.unwrap_or(1)
    }

    fn new(package: &str, kind: Kind, diagnostic: Diagnostic) -> Violation {
        Violation {
            package: package.to_owned(),
            kind,
            dependency_kind: None,
            target: None,
            optional: None,
            rename: None,
            via: None,
            doctest: false,
            diagnostic,
        }
    }
}

/// Violations of an allowlisted member.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The member.
    pub package: String,
    /// Why it is allowed, from its `allow` entry.
    pub reason: String,
    /// What would otherwise be violations, sorted.
    pub violations: Vec<Violation>,
}

/// The result of a check.
#[derive(Debug, Clone)]
pub struct Report {
    /// Package name of the deprecated crate.
    pub deprecated: String,
    /// Package name of its replacement.
    pub replacement: String,
    /// Members checked: all but the deprecated crate and the replacement (allowlisted ones count).
    pub packages_checked: usize,
    /// Whether a package of the deprecated crate's name is anywhere in sight: a member, a path crate, a dependency
    /// declaration or a `Cargo.lock` entry. `false` with no violations means either that the migration is complete
    /// or that the name is not the package's: the report says so.
    pub deprecated_found: bool,
    /// Sorted by (package, file, line, column, kind).
    pub violations: Vec<Violation>,
    /// Sorted by package.
    pub allowed: Vec<Allowed>,
}

/// A workspace member, as the check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its package name.
    pub name: String,
    /// Its manifest (absolute, normalized).
    pub manifest_path: PathBuf,
}

/// The members of the workspace `options` name, sorted by manifest path: the packages every check is about. The
/// configuration is read too, so its errors are errors here.
pub fn members(options: &CheckOptions) -> Result<Vec<Member>, Diagnostic> {
    let ws = load(options)?;
    Ok(ws
        .members
        .iter()
        .map(|member| Member { name: member.name.clone(), manifest_path: member.dir.join("Cargo.toml") })
        .collect())
}

/// Checks the workspace `options` name.
pub fn check(options: &CheckOptions) -> Result<Report, Diagnostic> {
    let ws = load(options)?;
    check_loaded(&ws, options.sources)
}

pub(crate) fn load(options: &CheckOptions) -> Result<Workspace, Diagnostic> {
    let located = workspace::locate(options.manifest_path.as_deref())?;
    Workspace::load(&located, &options.flags, &options.defaults)
}

/// Checks a loaded workspace; `scan_sources: false` checks manifests only.
pub(crate) fn check_loaded(ws: &Workspace, scan_sources: bool) -> Result<Report, Diagnostic> {
    let config = &ws.config;
    let deprecated = config.deprecated.as_str();
    let known = known_packages(ws);
    // A name that is one `-`/`_` away from a package in sight is a misspelling, not a finished migration: checking it
    // would find nothing and say "ok".
    for (key, name) in [("deprecated", deprecated), ("replacement", config.replacement.as_str())] {
        let spelled = |candidate: &&&str| candidate.replace('_', "-") == name.replace('_', "-");
        if !known.contains(name)
            && let Some(near) = known.iter().find(spelled)
        {
            return Err(Diagnostic::error(
                "config",
                format!("no package is named `{name}` (the {key} crate); this workspace has `{near}`"),
            )
            .in_file(ws.root_shown.join("Cargo.toml").display().to_string())
            .with_help(format!("name the package as its manifest does: `{near}`")));
        }
    }
    let deprecated_lib = ws.lib_name(deprecated);
    let replacement_lib = ws.lib_name(&config.replacement);
    let checked: Vec<&Package> =
        ws.members.iter().filter(|p| p.name != deprecated && p.name != config.replacement).collect();
    let graph = Graph::new(ws, deprecated);
    let notes = OnceLock::new();
    let texts = Texts {
        ws,
        deprecated,
        deprecated_lib: &deprecated_lib,
        replacement: &config.replacement,
        replacement_lib: &replacement_lib,
        notes: &notes,
    };
    // Each member's violations, sorted: its manifest's first, then its sources'. The sources are scanned on all
    // cores, and each worker builds the messages of what it found at once, so that what a scan allocated is freed by
    // the thread that allocated it (freeing across threads made glibc's allocator take other threads' locks).
    let member_violations = |member: &&Package| -> Result<Vec<Violation>, Diagnostic> {
        let own: Vec<&Decl> = member.decls.iter().filter(|d| d.package == deprecated).collect();
        let mut found: Vec<Violation> = if !own.is_empty() {
            own.into_iter().map(|decl| texts.dependency(member, decl)).collect()
        } else {
            graph.transitive(member).map(|(via, decl)| texts.transitive(member, decl, via)).into_iter().collect()
        };
        if scan_sources {
            let names = source_names(member, deprecated, &deprecated_lib);
            let hits = source::scan(member, &ws.root, &ws.root_shown, &names)?;
            let manifest = found.len();
            found.extend(hits.into_iter().map(|hit| texts.source(member, hit)));
            found[manifest..].sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        }
        // The manifest's violations, then the sources': usually in order already.
        if !found.is_sorted_by(|a, b| sort_key(a) <= sort_key(b)) {
            sort(&mut found);
        }
        Ok(found)
    };
    let per_package: Vec<Vec<Violation>> = if scan_sources {
        par_map(&checked, member_violations).into_iter().collect::<Result<_, _>>()?
    } else {
        checked.iter().map(member_violations).collect::<Result<_, _>>()?
    };

    // Each package's violations sorted apart (a few each), then the packages in order: the report's order without
    // moving thousands of violations through one sort.
    let mut groups: Vec<(&str, Vec<Violation>)> = Vec::new();
    let mut allowed = Vec::new();
    for (member, found) in checked.iter().zip(per_package) {
        match config.allow.iter().find(|entry| entry.package == member.name) {
            Some(entry) if !found.is_empty() => {
                allowed.push(Allowed { package: member.name.clone(), reason: entry.reason.clone(), violations: found });
            }
            _ => groups.push((member.name.as_str(), found)),
        }
    }
    for entry in &config.allow {
        if allowed.iter().any(|a| a.package == entry.package) {
            continue;
        }
        // Without the source scan, a member whose only violations are in its sources looks clean: its entry is not
        // known to be stale.
        if !scan_sources && checked.iter().any(|m| m.name == entry.package) {
            continue;
        }
        let problem = if checked.iter().any(|m| m.name == entry.package) {
            "has no violation to allow"
        } else if entry.package == deprecated {
            "is the deprecated crate itself, which is never checked"
        } else if entry.package == config.replacement {
            "is the replacement, which is never checked"
        } else {
            "is not a workspace member"
        };
        let diagnostic = Diagnostic::error(
            Kind::StaleAllow.as_str(),
            format!("allow entry for `{}` is stale: `{}` {problem}", entry.package, entry.package),
        )
        .at("Cargo.toml", entry.line, Some(entry.column))
        .with_source(paths::line_text(&ws.root_text, entry.line), "package".len())
        .with_help(format!("remove it from `allow` in {}: the allowlist only shrinks", config.table));
        groups.push((entry.package.as_str(), vec![Violation::new(&entry.package, Kind::StaleAllow, diagnostic)]));
    }
    groups.sort_by(|a, b| a.0.cmp(b.0));
    // Each group is sorted and holds its package's violations only, and the report sorts by package first: in
    // order, unless two groups are of one package (an allow entry beside a member of its name), merged by a sort.
    let merge = groups.windows(2).any(|pair| pair[0].0 == pair[1].0);
    let mut violations = Vec::with_capacity(groups.iter().map(|(_, group)| group.len()).sum());
    for (_, group) in groups {
        violations.extend(group);
    }
    if merge {
        sort(&mut violations);
    }
    debug_assert!(violations.is_sorted_by(|a, b| sort_key(a) <= sort_key(b)), "the report's order");
    allowed.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(Report {
        deprecated: deprecated.to_owned(),
        replacement: config.replacement.clone(),
        packages_checked: checked.len(),
        deprecated_found: known.contains(deprecated),
        violations,
        allowed,
    })
}

/// Every package name in sight: members, path crates, the packages their declarations name, and `Cargo.lock`'s.
fn known_packages(ws: &Workspace) -> FastSet<&str> {
    let packages = ws.members.iter().chain(&ws.others);
    let mut known: FastSet<&str> = packages.clone().map(|p| p.name.as_str()).collect();
    known.extend(packages.flat_map(|p| &p.decls).map(|d| d.package.as_str()));
    known.extend(ws.lock.packages.iter().map(|p| p.name.as_str()));
    known
}

fn sort(violations: &mut [Violation]) {
    violations.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
}

/// The report's order: by package, then where, then kind.
fn sort_key(violation: &Violation) -> (&str, &str, usize, usize, Kind) {
    (&violation.package, violation.file(), violation.line(), violation.column(), violation.kind)
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

/// The deprecated crate's notes, when its source is in sight: its full old paths (`old_core::a::Item`; macros also
/// as `old_core::m`) to the new path each note names (rooted at the replacement's library name) and the note. Empty
/// when the source cannot be seen or read: the help is then the general one.
fn deprecation_notes(
    ws: &Workspace,
    deprecated: &str,
    replacement_lib: &str,
) -> HashMap<String, (Option<String>, String)> {
    let Some(dir) = ws.source_dir(deprecated) else { return HashMap::new() };
    if !mentions_deprecated(&dir) {
        return HashMap::new();
    }
    let Ok(krate) = deprecations::CrateSource::load(&dir, &ws.root) else { return HashMap::new() };
    deprecations::shims(&krate, replacement_lib)
        .into_iter()
        .filter(|shim| shim.kind != deprecations::ShimKind::Crate)
        .map(|shim| (shim.old_path.trim_end_matches('!').to_owned(), (shim.new_path, shim.note)))
        .collect()
}

/// Whether a Rust file below `dir` says `deprecated` anywhere. Without one, the crate has no deprecation notes, and
/// parsing it (a real crate can be thousands of lines, on a core the scan needs) is skipped.
fn mentions_deprecated(dir: &Path) -> bool {
    read::any_rust_file(dir, |_, text| memchr::memmem::find(text, b"deprecated").is_some())
}

/// Messages and fixes.
struct Texts<'a> {
    ws: &'a Workspace,
    deprecated: &'a str,
    deprecated_lib: &'a str,
    replacement: &'a str,
    replacement_lib: &'a str,
    /// The deprecation notes, read once by the first worker that needs them.
    notes: &'a OnceLock<HashMap<String, (Option<String>, String)>>,
}

impl Texts<'_> {
    fn notes(&self) -> &HashMap<String, (Option<String>, String)> {
        self.notes.get_or_init(|| deprecation_notes(self.ws, self.deprecated, self.replacement_lib))
    }

    /// What to write instead: the new path of the longest prefix of the occurrence's path that has a deprecation
    /// note, else the replacement's library.
    fn source_help(&self, hit: &source::Hit) -> String {
        let name = hit.name.as_str();
        // Only a path has a note (never the crate's name alone); the notes are read when one is first needed.
        if !hit.path.is_empty() && !self.notes().is_empty() {
            // `old::a::b`, then each shorter path of it (down to `old::a`), for the longest one with a note.
            let old = [self.deprecated_lib, "::", &hit.path].concat();
            let segments = self.deprecated_lib.len() + 2;
            let mut end = old.len();
            while end > segments {
                if let Some((new, note)) = self.notes().get(&old[..end]) {
                    // As written: the name, then the same segments. `concat` rather than `format!`: one exact
                    // allocation, for thousands of occurrences.
                    let path = &old[segments..end];
                    return match new {
                        Some(new) => [
                            "use `",
                            new,
                            "` instead of `",
                            name,
                            "::",
                            path,
                            "`, and depend on `",
                            self.replacement,
                            "`",
                        ]
                        .concat(),
                        None => ["`", name, "::", path, "` is deprecated: ", note].concat(),
                    };
                }
                end = old[..end].rfind("::").unwrap_or(0);
            }
        }
        ["use `", self.replacement_lib, "` instead of `", name, "`, and depend on `", self.replacement, "`"].concat()
    }

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
        let diagnostic = Diagnostic::error(
            Kind::Dependency.as_str(),
            format!("`{}` depends on deprecated `{}` ({})", member.name, self.deprecated, details.join(", ")),
        )
        .at(&member.manifest_rel, decl.line, Some(decl.column))
        .with_source(paths::line_text(&member.text, decl.line), decl.key.chars().count())
        .with_help(format!("depend on `{}` instead of `{}`", self.replacement, self.deprecated));
        Violation {
            dependency_kind: Some(decl.kind.as_str()),
            target: decl.target.clone(),
            optional: Some(decl.optional),
            rename,
            ..Violation::new(&member.name, Kind::Dependency, diagnostic)
        }
    }

    fn transitive(&self, member: &Package, decl: &Decl, via: Vec<String>) -> Violation {
        let last = via.last().cloned().unwrap_or_default();
        let diagnostic = Diagnostic::error(
            Kind::Transitive.as_str(),
            format!(
                "`{}` depends on deprecated `{}` through `{}`: {} -> {}",
                member.name,
                self.deprecated,
                decl.package,
                via.join(" -> "),
                self.deprecated
            ),
        )
        .at(&member.manifest_rel, decl.line, Some(decl.column))
        .with_source(paths::line_text(&member.text, decl.line), decl.key.chars().count())
        .with_help(format!(
            "migrate `{last}` to `{}`, or drop this dependency on `{}`",
            self.replacement, decl.package
        ));
        Violation { via: Some(via), ..Violation::new(&member.name, Kind::Transitive, diagnostic) }
    }

    fn source(&self, member: &Package, hit: source::Hit) -> Violation {
        let place = if hit.doctest { " in a doctest" } else { "" };
        let help = self.source_help(&hit);
        let width = hit.name.chars().count();
        let message = ["`", &member.name, "` refers to deprecated `", self.deprecated, "` as `", &hit.name, "`", place];
        let diagnostic = Diagnostic::error(Kind::Source.as_str(), message.concat())
            .at(hit.file, hit.line, Some(hit.column))
            .with_source(hit.line_text, width)
            .with_help(help);
        Violation { doctest: hit.doctest, ..Violation::new(&member.name, Kind::Source, diagnostic) }
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
    member_index: FastMap<&'w OsStr, usize>,
}

impl<'w> Graph<'w> {
    fn new(ws: &'w Workspace, deprecated: &str) -> Graph<'w> {
        let packages: Vec<&Package> = ws.members.iter().chain(&ws.others).collect();
        let mut names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        let member_index: FastMap<&OsStr, usize> =
            packages.iter().enumerate().map(|(i, p)| (p.dir.as_os_str(), i)).collect();
        // Registry and git packages of Cargo.lock, one node per locked version.
        let lock = &ws.lock;
        let mut node_of_lock: Vec<Option<usize>> = vec![None; lock.packages.len()];
        for (k, locked) in lock.packages.iter().enumerate() {
            if locked.source.is_some() {
                node_of_lock[k] = Some(names.len());
                names.push(locked.name.as_str());
            }
        }
        let mut path_named: FastMap<&str, Vec<usize>> = FastMap::default();
        for (i, package) in packages.iter().enumerate() {
            path_named.entry(package.name.as_str()).or_default().push(i);
        }
        let path_packages = |name: &str| -> Vec<usize> { path_named.get(name).cloned().unwrap_or_default() };
        // The nodes a lockfile dependency names: its registry version, or the path package of that name.
        let targets = |dep: &str| -> Vec<usize> {
            lock.resolve(dep)
                .flat_map(|k| match node_of_lock[k] {
                    Some(node) => vec![node],
                    None => path_packages(&lock.packages[k].name),
                })
                .collect()
        };

        let mut edges: Vec<Vec<(usize, DepKind, Option<&Decl>)>> = vec![Vec::new(); names.len()];
        let mut terminal = vec![false; names.len()];
        for (i, package) in packages.iter().enumerate() {
            let locked = lock.path_package(&package.name);
            for decl in &package.decls {
                if decl.package == deprecated {
                    terminal[i] |= decl.kind != DepKind::Dev;
                    continue;
                }
                let found: Vec<usize> = match decl.dir() {
                    Some(dir) => member_index.get(dir.as_os_str()).copied().into_iter().collect(),
                    None => {
                        // The version the lockfile chose for this package; every locked version when it does not say.
                        let exact: Vec<usize> = locked
                            .into_iter()
                            .flat_map(|l| &l.deps)
                            .filter(|dep| Lock::dep_name(dep) == decl.package)
                            .flat_map(|dep| targets(dep))
                            .collect();
                        if exact.is_empty() {
                            lock.named(&decl.package).iter().filter_map(|&k| node_of_lock[k]).collect()
                        } else {
                            exact
                        }
                    }
                };
                for target in found {
                    edges[i].push((target, decl.kind, Some(decl)));
                }
            }
        }
        for (k, locked) in lock.packages.iter().enumerate() {
            let Some(i) = node_of_lock[k] else { continue };
            for dep in &locked.deps {
                if Lock::dep_name(dep) == deprecated {
                    terminal[i] = true;
                } else {
                    for target in targets(dep) {
                        edges[i].push((target, DepKind::Normal, None));
                    }
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

/// A hash map for what the check keys by the hundred (paths, package names): foldhash (already built for
/// serde_json) instead of SipHash, several times cheaper for short keys; the keys come from the workspace being
/// checked, not from an adversary.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set, as [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

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
