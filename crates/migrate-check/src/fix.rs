//! `--fix`: plans the migration of the checked workspace from the deprecated crate to its replacement. The CLI writes
//! the plan (or prints it as a diff with `--dry-run`), then checks again and reports what is left.
//!
//! - **Manifests** are edited with `toml_edit::DocumentMut`, so comments, order and formatting survive. Each
//!   declaration of the deprecated package in a fixed member (any table, renamed, target-specific, optional,
//!   `workspace = true`) becomes a declaration of the replacement under its package name, keeping `optional`,
//!   `default-features` and the comments; `package`, `features` and git/registry keys go. Where the member already
//!   depends on the replacement in a table that covers it (the same table, or `[dependencies]` for
//!   `[dev-dependencies]`, with no narrower target), the old declaration is removed instead. Features naming the old
//!   key (`dep:old`, `old`, `old/feature`) follow. `[workspace.dependencies]` entries of the deprecated package that
//!   nothing inherits any more are removed, the first one turned into the replacement's entry when a member
//!   inherits it. The replacement's version and path come from `replacement-version` / `replacement-path` in
//!   `[workspace.metadata.migrate-check]` if set, else from the workspace's own declaration of it
//!   (`[workspace.dependencies]`, else the member package).
//! - **Sources** are edited by byte spans, so nothing outside an edited span changes. The old -> new paths come from
//!   the deprecated crate's deprecation notes ([`crate::deprecations::shims`]);
//!   the compat crate is found through a `path` declaration of it, else among the members, else `--fix` stops with
//!   exit 2. A path through the old crate (or an alias: Cargo rename, `extern crate x as y`) is replaced up to the
//!   longest prefix that has a note. A helper function is swapped only when its body proves the swap keeps the
//!   meaning: it forwards its parameters, in order, to the new path, or calls the new method on its first parameter
//!   (then the call becomes `Type::method(first, ..)`); a macro only when its one rule forwards its `expr`
//!   fragments, in order, to the new path and the call uses parentheses. A local `macro_rules!` that pastes a fragment
//!   after the old path (`old::$kind`) is rewritten with its calls where every call is in sight and passes an old item
//!   by name (module `local_macro`). Anything else stays and is reported with a `help:` line quoting the note.
//!   Imports of items whose new path cannot be imported (an associated const or fn, a module that became a type) are
//!   removed and the names they brought in are rewritten in that module; imports that become duplicates are dropped.
//! - A member with an occurrence left keeps its old dependency (so it still builds) and gains the replacement.
//! - Every check and edit comes first; then all files are written or none (module `guard`): the workspace must be under
//!   git, clean (`--allow-dirty`, `--allow-staged`, `--allow-no-vcs` relax that), and after writing it must compile
//!   (`cargo check --workspace --all-targets` and the changed libraries' doctests), else every file is put back
//!   (`--broken-code` keeps them, `--no-verify` skips the compile). Rust files that were rustfmt-clean are formatted.
//!   `--dry-run` prints a unified diff instead, with the exit code the real run would have.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit::{self, Visit};
use toml_edit::{DocumentMut, Item, Key, TableLike, Value};

use crate::deprecations::{self, CrateSource, ShimKind};
use crate::diag::Diagnostic;
use crate::paths::{LineIndex, line_col, normalize, rel_path, relative};
use crate::render::plural;
use crate::workspace::{Decl, DepKind, Package, Workspace};
use crate::{CheckOptions, Kind, Report};

mod guard;
mod local_macro;

pub use guard::Allow;

/// What `--fix` would write: every edit computed, nothing written yet.
#[derive(Debug)]
pub struct FixPlan {
    /// The workspace root (absolute).
    pub root: PathBuf,
    root_shown: PathBuf,
    /// The check's report before fixing.
    pub before: Report,
    /// Every file looked at, by absolute path (unchanged ones too: the occurrences left in them are located there).
    files: BTreeMap<PathBuf, FileChange>,
    /// Occurrences left in place, with the reason.
    pub unfixed: Vec<Unfixed>,
    /// Members that keep the deprecated crate for the occurrences left in them.
    kept: HashSet<String>,
    /// Members with a library whose doctests the compile afterwards runs (those whose files change).
    doctest_packages: Vec<String>,
    /// Notes for the user about the plan (rustfmt not found, say).
    pub notes: Vec<String>,
}

/// One file's text before and after the fix.
#[derive(Debug)]
pub struct FileChange {
    /// The text now.
    pub old: String,
    /// The text after the fix.
    pub new: String,
    /// The source edits that turned `old` into `new` (empty for manifests), sorted and disjoint.
    edits: Vec<Edit>,
    /// rustfmt formatted `new` after the edits (so `edits` no longer locate text in it).
    formatted: bool,
}

impl FileChange {
    /// Where a byte offset of `old` is in `new`.
    fn new_offset(&self, offset: usize) -> usize {
        let mut shifted = offset as isize;
        for edit in self.edits.iter().filter(|e| e.end <= offset) {
            shifted += edit.text.len() as isize - (edit.end - edit.start) as isize;
        }
        shifted.max(0) as usize
    }
}

/// An occurrence `--fix` leaves in place, and why.
#[derive(Debug, Clone)]
pub struct Unfixed {
    /// The file (absolute).
    pub file: PathBuf,
    /// Byte offset in the original text.
    pub offset: usize,
    /// What to do by hand.
    pub help: String,
}

#[derive(Debug, Clone)]
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

/// Plans the migration of the workspace `options` name: the members with `dependency` or `source` violations (not
/// allowlisted) get the replacement in their manifests and the new paths in their sources, read from the deprecated
/// crate's deprecation notes. Nothing is written.
pub fn plan_fix(options: &CheckOptions) -> Result<FixPlan, Diagnostic> {
    let ws = crate::load(options)?;
    let before = crate::check_loaded(&ws, true)?;
    // The name first: a typo would otherwise surface as a confusing problem of the notes, or be written everywhere.
    if before.violations.iter().any(|v| matches!(v.kind, Kind::Dependency | Kind::Source)) {
        check_replacement_name(&ws)?;
    }
    let planned = plan(&ws, &before)?;
    let mut plan = FixPlan {
        root: ws.root.clone(),
        root_shown: ws.root_shown.clone(),
        before,
        files: planned.files,
        unfixed: planned.unfixed,
        kept: planned.kept,
        doctest_packages: Vec::new(),
        notes: Vec::new(),
    };
    plan.format(&ws);
    plan.doctest_packages = ws
        .members
        .iter()
        .filter(|m| m.doctest && m.lib_root.is_file())
        .filter(|m| plan.files.iter().any(|(path, c)| c.old != c.new && path.starts_with(&m.dir)))
        .map(|m| m.name.clone())
        .collect();
    Ok(plan)
}

/// Refuses a replacement that is probably not the package meant: `--fix` would write a dependency on it into every
/// member. It must be in sight (a member, a path crate, a package some manifest declares, or in `Cargo.lock`), or
/// else not be one or two letters away from a package that is, and be the crate the deprecation notes point at when
/// the deprecated crate's source is in sight.
fn check_replacement_name(ws: &Workspace) -> Result<(), Diagnostic> {
    let replacement = ws.config.replacement.as_str();
    let packages = ws.members.iter().chain(&ws.others);
    let mut known: Vec<&str> = packages.clone().map(|p| p.name.as_str()).collect();
    known.extend(packages.flat_map(|p| &p.decls).map(|d| d.package.as_str()));
    known.extend(ws.lock.packages.iter().map(|p| p.name.as_str()));
    if known.contains(&replacement) {
        return Ok(());
    }
    let shown = ws.root_shown.join("Cargo.toml").display().to_string();
    let source = format!("`replacement` in {}, or `--replacement`", ws.config.table);
    known.sort_unstable();
    if let Some(near) = known.iter().find(|k| edit_distance(k, replacement) <= 2) {
        return Err(Diagnostic::error(
            "fix",
            format!(
                "--fix would make the members depend on `{replacement}`, which no package here is named, but `{near}` \
                 is; nothing was written"
            ),
        )
        .with_help(format!("if `{near}` is meant, correct {source}"))
        .in_file(shown));
    }
    if let Some(dir) = ws.source_dir(&ws.config.deprecated) {
        // Errors if no note names a path of the replacement's library.
        Mapping::load(&dir, &ws.root, &ws.lib_name(replacement))?;
    }
    Ok(())
}

/// The Levenshtein distance of two names, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The edition a package's sources are written in (`package.edition`, inherited from `[workspace.package]`, else
/// 2015), for rustfmt.
fn edition(ws: &Workspace, package: &Package) -> String {
    let get = |text: &str, table: &[&str]| -> Option<(Option<String>, bool)> {
        let doc = text.parse::<DocumentMut>().ok()?;
        let mut item = doc.as_item();
        for key in table {
            item = item.get(key)?;
        }
        let edition = item.get("edition")?;
        Some((edition.as_str().map(str::to_owned), edition.get("workspace").and_then(Item::as_bool) == Some(true)))
    };
    match get(&package.text, &["package"]) {
        Some((Some(edition), _)) => Some(edition),
        Some((None, true)) => get(&ws.root_text, &["workspace", "package"]).and_then(|(e, _)| e),
        _ => None,
    }
    .unwrap_or_else(|| "2015".to_owned())
}

impl FixPlan {
    /// The files that would change, with their paths relative to the workspace root, sorted.
    pub fn changes(&self) -> impl Iterator<Item = (String, &FileChange)> {
        self.files.iter().filter(|(_, c)| c.old != c.new).map(|(path, c)| (rel_path(&self.root, path), c))
    }

    /// A unified diff of every change, paths relative to the workspace root (`--- a/<path>`, `+++ b/<path>`), so that
    /// `git apply` and `patch -p1` take it.
    pub fn diff(&self) -> String {
        let mut out = String::new();
        for (path, change) in self.changes() {
            let diff = similar::TextDiff::from_lines(&change.old, &change.new);
            let (old, new) = (format!("a/{path}"), format!("b/{path}"));
            let _ = write!(out, "{}", diff.unified_diff().context_radius(3).header(&old, &new));
        }
        out
    }

    /// Each occurrence left in place as `(file relative to the root, line, column, help)`, at its place before the
    /// fix.
    pub fn left(&self) -> Vec<(String, usize, usize, &str)> {
        self.unfixed
            .iter()
            .map(|note| {
                let (line, column) = line_col(&self.files[&note.file].old, note.offset);
                (rel_path(&self.root, &note.file), line, column, note.help.as_str())
            })
            .collect()
    }

    /// Refuses to write unless version control can give the files back (see [`Allow`]): the workspace must be in a git
    /// work tree that tracks the files to change and has no uncommitted changes under the root. With nothing to write,
    /// there is nothing to refuse.
    pub fn ensure_vcs(&self, allow: Allow) -> Result<(), Diagnostic> {
        let files: Vec<PathBuf> = self.files.iter().filter(|(_, c)| c.old != c.new).map(|(p, _)| p.clone()).collect();
        if files.is_empty() {
            return Ok(());
        }
        guard::ensure_vcs(&self.root, &files, allow, &self.root_shown.join("Cargo.toml").display().to_string())
    }

    /// How many violations of the check before fixing would still be there after writing the plan: the occurrences
    /// left in place, the dependencies kept for them, `transitive` violations through packages that keep the crate
    /// (or that `--fix` does not edit) and `stale-allow` entries. This is the exit code the real run has: 1 when it is
    /// not zero.
    pub fn would_remain(&self) -> usize {
        let fixed = |package: &str| {
            self.before
                .violations
                .iter()
                .any(|v| v.package == package && matches!(v.kind, Kind::Dependency | Kind::Source))
                && !self.kept.contains(package)
        };
        let kept_dependencies = self
            .before
            .violations
            .iter()
            .filter(|v| v.kind == Kind::Dependency && self.kept.contains(&v.package))
            .count();
        let other = self
            .before
            .violations
            .iter()
            .filter(|v| match v.kind {
                Kind::Transitive => v.via.as_ref().and_then(|via| via.last()).is_none_or(|declares| !fixed(declares)),
                Kind::StaleAllow => true,
                Kind::Dependency | Kind::Source => false,
            })
            .count();
        self.unfixed.len() + kept_dependencies + other
    }

    /// Writes every change or none (every new text to a temporary file first, then the renames), then, unless
    /// `verify` is off, compiles the workspace (`cargo check --workspace --all-targets` and the doctests of the
    /// changed libraries) and puts every file back (`Cargo.lock` too) when that fails, unless `keep_broken`. Returns the paths written (relative to the root) and,
    /// when the compile failed and the edits were kept, its first errors.
    pub fn write(&self, verify: bool, keep_broken: bool) -> Result<(Vec<String>, Option<String>), Diagnostic> {
        let changed: Vec<(&Path, &str, &str)> = self
            .files
            .iter()
            .filter(|(_, c)| c.old != c.new)
            .map(|(path, c)| (path.as_path(), c.old.as_str(), c.new.as_str()))
            .collect();
        if changed.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut written = guard::write_all(&changed, |path| rel_path(&self.root, path))?;
        let paths = changed.iter().map(|(path, _, _)| rel_path(&self.root, path)).collect();
        if !verify {
            return Ok((paths, None));
        }
        written.save(self.root.join("Cargo.lock"));
        let Err(errors) = guard::verify(&self.root, &self.doctest_packages) else { return Ok((paths, None)) };
        if keep_broken {
            return Ok((paths, Some(errors)));
        }
        let failed = written.restore();
        let restored = if failed.is_empty() {
            "every file was put back as it was".to_owned()
        } else {
            format!("{} could not be put back: {}", plural(failed.len(), "file"), failed.join("; "))
        };
        Err(Diagnostic::error(
            "fix",
            format!("the fixed workspace does not compile, so --fix backed out: {restored}; {errors}"),
        )
        .with_help(
            "rewrite what the compiler names by hand, or pass --broken-code to keep the edits and see the errors",
        )
        .in_file(self.root_shown.join("Cargo.toml").display().to_string()))
    }

    /// Formats the changed Rust files that were rustfmt-clean before (their members' editions, the workspace's
    /// `rustfmt.toml`). Without rustfmt, nothing is formatted and a note says so.
    fn format(&mut self, ws: &Workspace) {
        let changed: Vec<&PathBuf> = self
            .files
            .iter()
            .filter(|(path, c)| c.old != c.new && path.extension().is_some_and(|e| e == "rs"))
            .map(|(path, _)| path)
            .collect();
        if changed.is_empty() {
            return;
        }
        let Some(rustfmt) = guard::Rustfmt::find() else {
            self.notes.push(
                "rustfmt was not found, so the rewritten Rust files are not formatted; run `cargo fmt` after --fix"
                    .to_owned(),
            );
            return;
        };
        let changed: Vec<PathBuf> = changed.into_iter().cloned().collect();
        for path in changed {
            let Some(member) =
                ws.members.iter().filter(|m| path.starts_with(&m.dir)).max_by_key(|m| m.dir.components().count())
            else {
                continue;
            };
            let edition = edition(ws, member);
            let dir = path.parent().unwrap_or(&ws.root).to_owned();
            let change = self.files.get_mut(&path).expect("a planned file");
            if rustfmt.format(&change.old, &dir, &edition).as_deref() != Some(change.old.as_str()) {
                continue;
            }
            if let Some(formatted) = rustfmt.format(&change.new, &dir, &edition)
                && formatted != change.new
            {
                change.new = formatted;
                change.formatted = true;
            }
        }
    }

    /// Puts the fixer's reason on the `source` violations of `report` (a check after writing) that it left in place.
    pub fn explain(&self, report: &mut Report) {
        let mut helps: HashMap<(String, usize, usize), &str> = HashMap::new();
        // In a file rustfmt formatted, the k-th occurrence left is the k-th one the check finds (formatting keeps the
        // order of tokens).
        let mut by_order: HashMap<String, Vec<&str>> = HashMap::new();
        for note in &self.unfixed {
            let change = &self.files[&note.file];
            if change.formatted {
                by_order.entry(rel_path(&self.root, &note.file)).or_default().push(&note.help);
                continue;
            }
            let offset = change.new_offset(note.offset);
            let (line, column) = line_col(&change.new, offset);
            helps.insert((rel_path(&self.root, &note.file), line, column), &note.help);
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for violation in report.violations.iter_mut().filter(|v| v.kind == Kind::Source) {
            let file = violation.file().to_owned();
            if let Some(helps) = by_order.get(&file) {
                let k = seen.entry(file).or_default();
                if let Some(help) = helps.get(*k) {
                    violation.diagnostic.help = Some((*help).to_owned());
                }
                *k += 1;
            } else if let Some(help) = helps.get(&(file, violation.line(), violation.column())) {
                violation.diagnostic.help = Some((*help).to_owned());
            }
        }
    }
}

/// What [`plan`] computes.
struct Planned {
    files: BTreeMap<PathBuf, FileChange>,
    unfixed: Vec<Unfixed>,
    /// Members that keep the deprecated crate for what is left in them.
    kept: HashSet<String>,
}

fn plan(ws: &Workspace, report: &Report) -> Result<Planned, Diagnostic> {
    let config = &ws.config;
    let deprecated = config.deprecated.as_str();
    let replacement = config.replacement.as_str();
    let replacement_lib = ws.lib_name(replacement);

    // The members to fix: those with dependency or source violations that are not allowlisted.
    // Member -> file -> (line, column) of each occurrence.
    type Hits = HashSet<(usize, usize)>;
    // (code, doctests).
    let mut source_hits: BTreeMap<&str, BTreeMap<String, (Hits, Hits)>> = BTreeMap::new();
    let mut to_fix: Vec<&Package> = Vec::new();
    for violation in &report.violations {
        if !matches!(violation.kind, Kind::Dependency | Kind::Source) {
            continue;
        }
        let Some(member) = ws.members.iter().find(|m| m.name == violation.package) else { continue };
        if !to_fix.iter().any(|m| m.name == member.name) {
            to_fix.push(member);
        }
        if violation.kind == Kind::Source {
            let hits =
                source_hits.entry(member.name.as_str()).or_default().entry(violation.file().to_owned()).or_default();
            let hits = if violation.doctest { &mut hits.1 } else { &mut hits.0 };
            hits.insert((violation.line(), violation.column()));
        }
    }

    let mut changes: BTreeMap<PathBuf, FileChange> = BTreeMap::new();
    let mut left_in_place: Vec<Unfixed> = Vec::new();
    let mapping = if source_hits.is_empty() {
        None
    } else {
        Some(Mapping::load(&compat_dir(ws, deprecated)?, &ws.root, &replacement_lib)?)
    };
    // Per member: (occurrences left, some source now names the replacement).
    let mut member_sources: HashMap<&str, (usize, bool)> = HashMap::new();
    for (member, files) in &source_hits {
        let mapping = mapping.as_ref().expect("loaded when there are source hits");
        // The name the member's sources will use for the replacement: its own (possibly renamed) declaration's.
        let package = ws.members.iter().find(|m| m.name == *member).expect("a member");
        let member_lib = package
            .decls
            .iter()
            .filter(|d| d.package == replacement)
            .min_by_key(|d| (d.kind, d.target.is_some()))
            .map_or_else(
                || replacement_lib.clone(),
                |d| if d.key == replacement { replacement_lib.clone() } else { d.key.replace('-', "_") },
            );
        let mut left = 0;
        let mut rewrote = false;
        for (file, (hits, doc_hits)) in files {
            let path = ws.root.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|err| Diagnostic::error("io", format!("cannot read: {err}")).in_file(file.clone()))?;
            let (mut edits, mut unfixed) = if hits.is_empty() {
                Default::default()
            } else {
                let elsewhere = || bare_macro_calls_elsewhere(&package.dir, &path, mapping);
                let bare_elsewhere = text.contains("macro_use") && elsewhere();
                let word_elsewhere = |word: &str| word_elsewhere(ws, &path, word);
                fix_source(file, &text, hits, mapping, &member_lib, bare_elsewhere, &word_elsewhere)?
            };
            // Doc text (a `///` comment or a Markdown file) has no syntax tree: its occurrences are rewritten as text.
            let (doc_edits, doc_unfixed) = fix_doctest(&text, doc_hits, mapping, &member_lib);
            edits.extend(doc_edits);
            edits.sort_by_key(|e| (e.start, e.end));
            unfixed.extend(doc_unfixed);
            unfixed.sort_by_key(|(offset, _)| *offset);
            left += unfixed.len();
            rewrote |= edits.iter().any(|e| e.text.contains(&member_lib));
            let new = apply(&text, &edits);
            left_in_place.extend(unfixed.into_iter().map(|(offset, help)| Unfixed {
                file: path.clone(),
                offset,
                help,
            }));
            changes.insert(path, FileChange { old: text, new, edits, formatted: false });
        }
        member_sources.insert(member, (left, rewrote));
    }

    fix_manifests(ws, &to_fix, &member_sources, &mut changes)?;
    let kept = member_sources.iter().filter(|(_, (left, _))| *left > 0).map(|(m, _)| (*m).to_owned()).collect();
    Ok(Planned { files: changes, unfixed: left_in_place, kept })
}

/// The edits for the occurrences `hits` (line, column) in the doctests of `text`, and those left (offset, help). A path
/// is rewritten when the mapping gives its new path (a macro when it is called with parentheses); an import whose new
/// name differs is left, since the doctest's other lines still use the old name.
fn fix_doctest(
    text: &str,
    hits: &HashSet<(usize, usize)>,
    map: &Mapping,
    replacement_lib: &str,
) -> (Vec<Edit>, Vec<(usize, String)>) {
    let index = LineIndex::new(text);
    let rebase = |new: &str| match new.split_once("::") {
        Some((_, rest)) => format!("{replacement_lib}::{rest}"),
        None => replacement_lib.to_owned(),
    };
    let mut hits: Vec<&(usize, usize)> = hits.iter().collect();
    hits.sort();
    let (mut edits, mut left) = (Vec::new(), Vec::new());
    for &(line, column) in hits {
        let start = index.offset(line, column - 1);
        let is_ident = |c: char| c.is_alphanumeric() || c == '_';
        // The path: ident (:: ident)*, ending where a segment ends.
        let mut segments: Vec<(usize, usize)> = Vec::new();
        let mut at = start;
        loop {
            let len = text[at..].find(|c: char| !is_ident(c)).unwrap_or(text.len() - at);
            if len == 0 {
                break;
            }
            segments.push((at, at + len));
            at += len;
            if text[at..].starts_with("::") && text[at + 2..].starts_with(is_ident) {
                at += 2;
            } else {
                break;
            }
        }
        let mut old: Vec<String> = segments.iter().map(|(a, b)| text[*a..*b].to_owned()).collect();
        let Some(root) = old.first_mut() else { continue };
        *root = map.lib.clone();
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let in_use = text[line_start..start].trim_end().ends_with("use");
        let end = segments.last().map_or(start, |s| s.1);
        let bang = text[end..].starts_with("!(");
        let manual = |help: &str| (start, help.to_owned());
        if bang {
            match map.macros.get(&old.join("::")) {
                Some(Action::Macro(new)) => edits.push(Edit { start, end: end + 1, text: rebase(new) }),
                Some(Action::Manual(help)) => left.push(manual(help)),
                _ => left.push(manual(&format!("rewrite this doctest's macro call by hand with `{replacement_lib}`"))),
            }
            continue;
        }
        match map.resolve(&old, 2.min(old.len()), false) {
            Some((len, Action::Path(new))) => {
                let renamed = new.rsplit("::").next() != old.get(len - 1).map(String::as_str);
                if in_use && (renamed || new.split("::").count() > 2) {
                    left.push(manual(&format!(
                        "this doctest imports `{}`; import `{}` instead and rename its uses",
                        old[..len].join("::"),
                        rebase(new)
                    )));
                } else {
                    edits.push(Edit { start, end: segments[len - 1].1, text: rebase(new) });
                }
            }
            Some((_, Action::Manual(help))) => left.push(manual(help)),
            _ => left.push(manual(&format!("rewrite this path in the doctest by hand with `{replacement_lib}`"))),
        }
    }
    (edits, left)
}

/// The directory of the deprecated crate's source: a `path` declaration of it, else a member of that name.
fn compat_dir(ws: &Workspace, deprecated: &str) -> Result<PathBuf, Diagnostic> {
    if let Some(dir) = ws.source_dir(deprecated) {
        return Ok(dir);
    }
    Err(Diagnostic::error(
        "fix",
        format!(
            "--fix reads the old -> new paths from `{deprecated}`'s deprecation notes, but no package declares it with \
             a `path` and it is not a workspace member; check it out next to the workspace and depend on it by path"
        ),
    )
    .in_file(ws.root_shown.join("Cargo.toml").display().to_string()))
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for edit in edits {
        out.push_str(&text[at..edit.start]);
        out.push_str(&edit.text);
        at = edit.end;
    }
    out.push_str(&text[at..]);
    out
}

// ---------------------------------------------------------------------------------------------------------------------
// The old -> new mapping.

/// What to do with a path that resolves to one old item.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// Replace the old path by this one.
    Path(String),
    /// A module: only paths through it to an item can be rewritten.
    Module,
    /// A macro whose call `old!(args)` becomes `new(args)`.
    Macro(String),
    /// Not safe to swap: the help text for the author.
    Manual(String),
}

/// The deprecated crate's deprecations, keyed by full old path (`old_core::registry::Registry`).
#[derive(Debug)]
struct Mapping {
    lib: String,
    items: HashMap<String, Action>,
    macros: HashMap<String, Action>,
    /// Old paths of constants and statics (which may stand in patterns).
    consts: HashSet<String>,
    /// Old paths of helpers that call a method on their first parameter: a call becomes a method call.
    methods: HashSet<String>,
    /// The new paths those helpers call as methods (`new_core::Builder::add`): a
    /// forwarding macro that calls one through its type with its first argument is a method call too.
    method_targets: HashSet<String>,
}

impl Mapping {
    /// Reads the deprecated crate in `dir`: its shims (new paths rooted at `replacement_lib`), the bodies of its
    /// wrapper fns and its macros.
    fn load(dir: &Path, root: &Path, replacement_lib: &str) -> Result<Mapping, Diagnostic> {
        let krate = CrateSource::load(dir, root)
            .map_err(|err| err.with_context("--fix could not read the deprecated crate's deprecation notes"))?;
        let shims = deprecations::shims(&krate, replacement_lib);
        if !shims.iter().any(|shim| shim.kind != ShimKind::Crate && shim.new_path.is_some()) {
            let manifest = dir.join("Cargo.toml");
            let shown =
                if manifest.starts_with(root) { rel_path(root, &manifest) } else { manifest.display().to_string() };
            return Err(Diagnostic::error(
                "fix",
                format!(
                    "--fix could not read the deprecated crate's deprecation notes: no `#[deprecated]` item of \
                     `{}` has a note naming a `{replacement_lib}::` path, so there is nothing to map old paths to",
                    krate.lib_name
                ),
            )
            .with_help(format!("write `#[deprecated(note = \"use {replacement_lib}::Item\")]` on each shim"))
            .in_file(shown));
        }
        let mut fns: HashMap<String, &syn::ItemFn> = HashMap::new();
        let mut macro_defs: HashMap<String, &syn::ItemMacro> = HashMap::new();
        krate.walk(|_, module_path, item| match item {
            syn::Item::Fn(f) => {
                let mut path = vec![krate.lib_name.clone()];
                path.extend(module_path.iter().cloned());
                path.push(f.sig.ident.to_string());
                fns.insert(path.join("::"), f);
            }
            // `#[macro_export]` macros live at the crate root whatever their module.
            syn::Item::Macro(m) => {
                if let Some(ident) = &m.ident {
                    macro_defs.insert(format!("{}::{ident}", krate.lib_name), m);
                }
            }
            _ => {}
        });
        let mut mapping = Mapping {
            lib: krate.lib_name.clone(),
            items: HashMap::new(),
            macros: HashMap::new(),
            consts: HashSet::new(),
            methods: HashSet::new(),
            method_targets: HashSet::new(),
        };
        for shim in shims {
            let manual = || {
                Action::Manual(format!(
                    "`{}` has no path-for-path replacement; rewrite it by hand: {}",
                    shim.old_path, shim.note
                ))
            };
            if shim.kind == ShimKind::Crate {
                continue;
            }
            let Some(new_path) = shim.new_path.clone() else {
                let old = shim.old_path.trim_end_matches('!').to_owned();
                if shim.kind == ShimKind::Macro {
                    mapping.macros.insert(old, manual());
                } else {
                    mapping.items.insert(old, manual());
                }
                continue;
            };
            match shim.kind {
                ShimKind::Crate => {}
                ShimKind::Module => _ = mapping.items.insert(shim.old_path.clone(), Action::Module),
                ShimKind::Function | ShimKind::AsyncFunction => {
                    let forwarded = fns.get(&shim.old_path).and_then(|f| forwarded_path(f, &new_path));
                    if let Some((path, true)) = &forwarded {
                        mapping.methods.insert(shim.old_path.clone());
                        mapping.method_targets.insert(path.clone());
                    }
                    let action = forwarded.map_or_else(manual, |(path, _)| Action::Path(path));
                    mapping.items.insert(shim.old_path.clone(), action);
                }
                ShimKind::Macro => {
                    let old = shim.old_path.trim_end_matches('!').to_owned();
                    let action = macro_defs
                        .get(&old)
                        .filter(|m| macro_forwards(m, &new_path))
                        .map_or_else(manual, |_| Action::Macro(new_path.clone()));
                    mapping.macros.insert(old, action);
                }
                ShimKind::Constant | ShimKind::Static | ShimKind::TypeAlias | ShimKind::ReExport => {
                    if matches!(shim.kind, ShimKind::Constant | ShimKind::Static) {
                        mapping.consts.insert(shim.old_path.clone());
                    }
                    mapping.items.insert(shim.old_path.clone(), Action::Path(new_path));
                }
            }
        }
        Ok(mapping)
    }

    /// The longest prefix of `old` (at least `min` segments) with a note, and its action. Modules only match as a
    /// whole path when `whole_module` is set (in `use`).
    fn resolve(&self, old: &[String], min: usize, whole_module: bool) -> Option<(usize, &Action)> {
        (min.max(1)..=old.len()).rev().find_map(|len| {
            let action = self.items.get(&old[..len].join("::"))?;
            (*action != Action::Module || (whole_module && len == old.len())).then_some((len, action))
        })
    }
}

/// The path a helper fn's call can be swapped for, if its body proves the swap keeps the meaning: `new(a, b)` with the
/// parameters in order, or `a.method(b)` where `a: [&[mut]] Type` and the note names `Type` or `Type::method` (the call
/// then becomes `Type::method(a, b)`, or the method call `a.method(b)`: the `bool` says it is a method). An `async fn`
/// must end in `.await` on that call, a plain fn must not.
fn forwarded_path(f: &syn::ItemFn, new_path: &str) -> Option<(String, bool)> {
    let mut params = Vec::new();
    for input in &f.sig.inputs {
        let syn::FnArg::Typed(typed) = input else { return None };
        let syn::Pat::Ident(ident) = &*typed.pat else { return None };
        if ident.by_ref.is_some() || ident.subpat.is_some() {
            return None;
        }
        params.push((ident.ident.to_string(), &*typed.ty));
    }
    let [syn::Stmt::Expr(body, None)] = f.block.stmts.as_slice() else { return None };
    let (call, awaited) = match body {
        syn::Expr::Await(await_expr) => (&*await_expr.base, true),
        other => (other, false),
    };
    if awaited != f.sig.asyncness.is_some() {
        return None;
    }
    let is_param =
        |expr: &syn::Expr, name: &str| matches!(expr, syn::Expr::Path(p) if p.qself.is_none() && p.path.is_ident(name));
    let plain_path = |path: &syn::Path| {
        path.segments
            .iter()
            .all(|s| s.arguments.is_none())
            .then(|| path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::"))
    };
    match call {
        syn::Expr::Call(call) => {
            let syn::Expr::Path(func) = &*call.func else { return None };
            let path = plain_path(&func.path).filter(|p| func.qself.is_none() && p == new_path)?;
            let forwards = call.args.len() == params.len()
                && call.args.iter().zip(&params).all(|(arg, (name, _))| is_param(arg, name));
            forwards.then_some((path, false))
        }
        syn::Expr::MethodCall(method) => {
            let ((first, first_ty), rest) = params.split_first()?;
            let forwards = method.turbofish.is_none()
                && is_param(&method.receiver, first)
                && method.args.len() == rest.len()
                && method.args.iter().zip(rest).all(|(arg, (name, _))| is_param(arg, name));
            let ty = match first_ty {
                syn::Type::Reference(reference) => &*reference.elem,
                other => other,
            };
            let syn::Type::Path(ty) = ty else { return None };
            let ty = plain_path(&ty.path).filter(|_| ty.qself.is_none())?;
            let swapped = format!("{ty}::{}", method.method);
            (forwards && (new_path == ty || new_path == swapped)).then_some((swapped, true))
        }
        _ => None,
    }
}

/// Whether a `macro_rules!` has one rule that takes comma-separated `expr` fragments and expands to one call of
/// `$crate::__private::<new path after the crate>` with them, in order.
fn macro_forwards(def: &syn::ItemMacro, new_path: &str) -> bool {
    let text: String = def.mac.tokens.to_string().chars().filter(|c| !c.is_whitespace()).collect();
    let Some((matcher, body)) = text.split_once("=>") else { return false };
    if body.contains("=>") {
        return false;
    }
    let Some(matcher) = matcher.strip_prefix('(').and_then(|m| m.strip_suffix(')')) else { return false };
    let matcher = matcher.strip_suffix("$(,)?").unwrap_or(matcher);
    let mut fragments = Vec::new();
    for part in matcher.split(',') {
        let Some(name) = part.strip_prefix('$').and_then(|p| p.strip_suffix(":expr")) else { return false };
        fragments.push(format!("${name}"));
    }
    let body = body.trim_end_matches(';');
    let Some(body) = body.strip_prefix('{').and_then(|b| b.strip_suffix('}')) else { return false };
    let body = body.strip_prefix('{').and_then(|b| b.strip_suffix('}')).unwrap_or(body);
    let Some((_, rest)) = new_path.split_once("::") else { return false };
    body == format!("$crate::__private::{rest}({})", fragments.join(","))
}

// ---------------------------------------------------------------------------------------------------------------------
// Sources.

/// The names of one module scope.
#[derive(Debug, Default)]
struct Scope {
    /// Local names whose import was removed, with the old path they stood for.
    lowered: HashMap<String, Vec<String>>,
    /// The scope had `use <old crate>::*`.
    glob: bool,
    /// Names defined or imported otherwise in this scope (they shadow a glob).
    shadowed: HashSet<String>,
    /// (local name, full path) of the imports from the replacement.
    imports: HashSet<(String, String)>,
    /// `extern crate <replacement> [as alias]` items.
    externs: HashSet<Option<String>>,
    /// Local names of old imports that are now imported under the new item's own name (`AgentContext` ->
    /// `RunContext`): their use sites are renamed rather than the old name kept as an alias.
    renamed: HashMap<String, String>,
}

struct FileFix<'a> {
    index: LineIndex<'a>,
    hits: &'a HashSet<(usize, usize)>,
    map: &'a Mapping,
    replacement_lib: &'a str,
    scope: Scope,
    edits: Vec<Edit>,
    unfixed: Vec<(usize, String)>,
    handled: HashSet<(usize, usize)>,
    /// `macro_rules!` macros defined in this file: their arguments may be pasted after a path (`old::$name`), so
    /// names in them are not taken for names of the old crate's glob import.
    local_macros: HashSet<String>,
    /// Inside the arguments of one of `local_macros`.
    in_local_macro: bool,
    /// Processing the `use` items of a block, whose renames hold in that block only.
    in_block: bool,
    /// A `#[macro_use] extern crate <old>;` of this file: the old macros are in scope by their bare names, and the
    /// item can go once every bare call of them is rewritten (here and, `bare_elsewhere` says, nowhere else).
    /// (the item's span, where its name starts)
    macro_use: Option<(proc_macro2::Span, proc_macro2::LineColumn)>,
    bare_elsewhere: bool,
    /// A bare call of an old macro left as it is (so the item that brings it in stays).
    bare_left: bool,
    /// Occurrences in `macro_rules!` bodies that [`local_macro::rewrite`] rewrites with the macro's calls.
    claimed: HashSet<(usize, usize)>,
    /// Occurrences in `macro_rules!` bodies that it left, with the reason.
    refused: HashMap<(usize, usize), String>,
}

/// The edits for one source file and the occurrences it leaves (offset, help). `elsewhere(word)` names another Rust
/// file of the workspace whose code has `word`, if one does (see [`local_macro::rewrite`]).
#[allow(clippy::type_complexity)]
fn fix_source(
    file: &str,
    text: &str,
    hits: &HashSet<(usize, usize)>,
    map: &Mapping,
    replacement_lib: &str,
    bare_elsewhere: bool,
    elsewhere: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Edit>, Vec<(usize, String)>), Diagnostic> {
    let file = syn::parse_file(text).map_err(|err| {
        let start = err.span().start();
        Diagnostic::error("syntax", format!("Rust source does not parse: {err}")).at(
            file,
            start.line,
            Some(start.column + 1),
        )
    });
    let mut fixer = FileFix {
        index: LineIndex::new(text),
        hits,
        map,
        replacement_lib,
        scope: Scope::default(),
        edits: Vec::new(),
        unfixed: Vec::new(),
        handled: HashSet::new(),
        local_macros: HashSet::new(),
        in_local_macro: false,
        in_block: false,
        macro_use: None,
        bare_elsewhere,
        bare_left: false,
        claimed: HashSet::new(),
        refused: HashMap::new(),
    };
    if let Ok(file) = &file {
        let rewrites = local_macro::rewrite(file, text, hits, map, replacement_lib, elsewhere);
        fixer.edits.extend(rewrites.edits);
        fixer.claimed = rewrites.claimed;
        fixer.refused = rewrites.refused;
        struct Macros<'m>(&'m mut HashSet<String>);
        impl<'ast> Visit<'ast> for Macros<'_> {
            fn visit_item_macro(&mut self, item: &'ast syn::ItemMacro) {
                if let Some(ident) = &item.ident {
                    self.0.insert(name(ident));
                }
            }
        }
        Macros(&mut fixer.local_macros).visit_file(file);
        for attr in &file.attrs {
            fixer.visit_attribute(attr);
        }
        fixer.module(&file.items);
        if let Some((span, name)) = fixer.macro_use {
            if fixer.bare_left || fixer.bare_elsewhere {
                let help = format!(
                    "`#[macro_use]` brings the old macros in by their bare names; import them from `{}` or use their \
                     new paths, then drop this item",
                    fixer.replacement_lib
                );
                fixer.leave(name, help);
            } else {
                // Every bare call of an old macro is rewritten: nothing needs the item any more.
                fixer.delete(span);
            }
        }
    }
    proc_macro2::extra::invalidate_current_thread_spans();
    file?;
    // Occurrences the walk did not reach are left, with the general advice.
    let mut left: Vec<&(usize, usize)> = hits.iter().filter(|h| !fixer.handled.contains(h)).collect();
    left.sort();
    for &(line, column) in left {
        let offset = fixer.index.offset(line, column - 1);
        fixer.unfixed.push((offset, format!("rewrite this path by hand with `{replacement_lib}`")));
    }
    let mut edits = fixer.edits;
    edits.sort_by_key(|e| (e.start, e.end));
    let mut disjoint: Vec<Edit> = Vec::with_capacity(edits.len());
    for edit in edits {
        if disjoint.last().is_none_or(|last| last.end <= edit.start) {
            disjoint.push(edit);
        }
    }
    fixer.unfixed.sort_by_key(|(offset, _)| *offset);
    Ok((disjoint, fixer.unfixed))
}

/// Whether a Rust file of the member in `dir` other than `file` has text that may be a bare call of one of the old
/// crate's macros (`name!`): then a `#[macro_use] extern crate` of it stays. A text search (names in comments count),
/// so it errs on the side of keeping the item.
fn bare_macro_calls_elsewhere(dir: &Path, file: &Path, map: &Mapping) -> bool {
    let calls: Vec<String> =
        map.macros.keys().filter_map(|old| old.rsplit_once("::")).map(|(_, name)| format!("{name}!")).collect();
    crate::read::any_rust_file(dir, |path, text| {
        path != file && calls.iter().any(|call| memchr::memmem::find(text, call.as_bytes()).is_some())
    })
}

/// A Rust file of a member other than `file` whose code has `word` (not within a longer identifier, nor in a comment
/// or a literal), relative to the root.
fn word_elsewhere(ws: &Workspace, file: &Path, word: &str) -> Option<String> {
    let same = |a: &Path, b: &Path| a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok();
    let has_word = |text: &[u8]| {
        let mut found = memchr::memmem::find_iter(text, word.as_bytes()).filter(|&at| {
            let before = at.checked_sub(1).map(|i| text[i]);
            let after = text.get(at + word.len()).copied();
            !before.is_some_and(crate::lex::is_ident_byte) && !after.is_some_and(crate::lex::is_ident_byte)
        });
        let Some(first) = found.next() else { return false };
        // Text that is no UTF-8 is no Rust, but counts: the search errs on the side of seeing a call.
        let Ok(text) = std::str::from_utf8(text) else { return true };
        let skim = crate::lex::skim(text);
        std::iter::once(first).chain(found).any(|at| skim.span_at(at).is_none())
    };
    let mut found = None;
    for member in &ws.members {
        let hit = crate::read::any_rust_file(&member.dir, |path, text| {
            let yes = has_word(text) && !same(path, file);
            if yes {
                found = Some(rel_path(&ws.root, path));
            }
            yes
        });
        if hit {
            return found;
        }
    }
    None
}

/// The receiver a first argument makes (`&x` gives `x`: a method call borrows by itself) and the parentheses it
/// needs before `.method(..)`: one that binds looser than `.` gets them.
fn receiver_of(first: &syn::Expr) -> (&syn::Expr, &'static str, &'static str) {
    let receiver = match first {
        syn::Expr::Reference(reference) => &*reference.expr,
        other => other,
    };
    let plain = matches!(
        receiver,
        syn::Expr::Path(_)
            | syn::Expr::Field(_)
            | syn::Expr::MethodCall(_)
            | syn::Expr::Call(_)
            | syn::Expr::Index(_)
            | syn::Expr::Paren(_)
            | syn::Expr::Macro(_)
            | syn::Expr::Lit(_)
            | syn::Expr::Tuple(_)
    );
    if plain { (receiver, "", "") } else { (receiver, "(", ")") }
}

/// Whether an item is `use super::*;`.
fn is_super_glob(item: &syn::Item) -> bool {
    let syn::Item::Use(item) = item else { return false };
    matches!(&item.tree, syn::UseTree::Path(p) if p.ident == "super" && matches!(&*p.tree, syn::UseTree::Glob(_)))
}

fn key(ident: &proc_macro2::Ident) -> (usize, usize) {
    let start = ident.span().start();
    (start.line, start.column + 1)
}

fn name(ident: &proc_macro2::Ident) -> String {
    ident.unraw().to_string()
}

/// One imported name of a `use` tree.
struct Leaf<'u> {
    segments: Vec<String>,
    root: &'u proc_macro2::Ident,
    kind: LeafKind,
}

enum LeafKind {
    Name,
    SelfOf,
    Rename(String),
    Glob,
}

impl Leaf<'_> {
    fn local(&self) -> String {
        match &self.kind {
            LeafKind::Rename(alias) => alias.clone(),
            _ => self.segments.last().cloned().unwrap_or_default(),
        }
    }

    fn render(&self) -> String {
        let path = self.segments.join("::");
        match &self.kind {
            LeafKind::Name => path,
            LeafKind::SelfOf => format!("{path}::{{self}}"),
            LeafKind::Rename(alias) => format!("{path} as {alias}"),
            LeafKind::Glob => format!("{path}::*"),
        }
    }
}

fn flatten<'u>(
    tree: &'u syn::UseTree,
    prefix: &mut Vec<String>,
    root: Option<&'u proc_macro2::Ident>,
    out: &mut Vec<Leaf<'u>>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(name(&p.ident));
            flatten(&p.tree, prefix, root.or(Some(&p.ident)), out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let root = root.unwrap_or(&n.ident);
            if n.ident == "self" {
                out.push(Leaf { segments: prefix.clone(), root, kind: LeafKind::SelfOf });
            } else {
                let mut segments = prefix.clone();
                segments.push(name(&n.ident));
                out.push(Leaf { segments, root, kind: LeafKind::Name });
            }
        }
        syn::UseTree::Rename(r) => {
            let root = root.unwrap_or(&r.ident);
            let mut segments = prefix.clone();
            if r.ident != "self" {
                segments.push(name(&r.ident));
            }
            out.push(Leaf { segments, root, kind: LeafKind::Rename(r.rename.to_string()) });
        }
        syn::UseTree::Glob(_) => {
            if let Some(root) = root {
                out.push(Leaf { segments: prefix.clone(), root, kind: LeafKind::Glob });
            }
        }
        syn::UseTree::Group(g) => g.items.iter().for_each(|item| flatten(item, prefix, root, out)),
    }
}

/// What becomes of one old import.
enum Decision {
    Import(String, String),
    Lower(String, Vec<String>),
    Glob,
    Drop,
    Fail(String),
}

impl FileFix<'_> {
    fn offset(&self, at: proc_macro2::LineColumn) -> usize {
        self.index.offset(at.line, at.column)
    }

    fn edit(&mut self, start: proc_macro2::LineColumn, end: proc_macro2::LineColumn, text: String) {
        let (start, end) = (self.offset(start), self.offset(end));
        self.edits.push(Edit { start, end, text });
    }

    /// The old macro a bare `name!` calls, where a `#[macro_use] extern crate` of the old crate brings its macros in
    /// and no macro of this file has the name.
    fn bare_old_macro(&self, name: &str) -> Option<Vec<String>> {
        let old = vec![self.map.lib.clone(), name.to_owned()];
        (self.macro_use.is_some() && !self.local_macros.contains(name) && self.map.macros.contains_key(&old.join("::")))
            .then_some(old)
    }

    fn leave(&mut self, at: proc_macro2::LineColumn, help: String) {
        let offset = self.offset(at);
        self.unfixed.push((offset, help));
    }

    /// A new path from the notes, rooted at the member's name for the replacement.
    fn rebase(&self, new: &str) -> String {
        match new.split_once("::") {
            Some((_, rest)) => format!("{}::{rest}", self.replacement_lib),
            None => self.replacement_lib.to_owned(),
        }
    }

    fn no_note(&self, old: &[String]) -> String {
        format!(
            "`{}` has no deprecation note in the compat crate; rewrite it by hand with `{}`",
            old.join("::"),
            self.replacement_lib
        )
    }

    /// Handles one module's items: imports first (they decide which names are rewritten), then everything else.
    fn module(&mut self, items: &[syn::Item]) {
        let outer = std::mem::take(&mut self.scope);
        // `use super::*` brings the parent's names in, those of its glob import of the old crate and its renamed
        // imports too: they are rewritten here as they are there.
        if items.iter().any(is_super_glob) {
            self.scope.glob = outer.glob;
            self.scope.lowered = outer.lowered.clone();
            self.scope.renamed = outer.renamed.clone();
            self.scope.shadowed = outer.shadowed.clone();
            if outer.imports.iter().any(|(local, _)| local == "*") {
                self.scope.imports.insert(("*".to_owned(), self.replacement_lib.to_owned()));
            }
        }
        for item in items {
            self.declare(item);
        }
        for item in items {
            match item {
                syn::Item::Use(item) => self.fix_use(item, true),
                syn::Item::ExternCrate(item) => self.fix_extern(item),
                _ => {}
            }
        }
        for item in items {
            if !matches!(item, syn::Item::Use(_) | syn::Item::ExternCrate(_)) {
                self.visit_item(item);
            }
        }
        self.scope = outer;
    }

    /// Records the names an item brings into the module scope.
    fn declare(&mut self, item: &syn::Item) {
        let ident = match item {
            syn::Item::Const(i) => Some(&i.ident),
            syn::Item::Enum(i) => Some(&i.ident),
            syn::Item::Fn(i) => Some(&i.sig.ident),
            syn::Item::Macro(i) => i.ident.as_ref(),
            syn::Item::Mod(i) => Some(&i.ident),
            syn::Item::Static(i) => Some(&i.ident),
            syn::Item::Struct(i) => Some(&i.ident),
            syn::Item::Trait(i) => Some(&i.ident),
            syn::Item::TraitAlias(i) => Some(&i.ident),
            syn::Item::Type(i) => Some(&i.ident),
            syn::Item::Union(i) => Some(&i.ident),
            syn::Item::ExternCrate(i) => {
                if name(&i.ident) == self.replacement_lib {
                    self.scope.externs.insert(i.rename.as_ref().map(|(_, alias)| alias.to_string()));
                }
                None
            }
            syn::Item::Use(item) => {
                let mut leaves = Vec::new();
                flatten(&item.tree, &mut Vec::new(), None, &mut leaves);
                for leaf in leaves.iter().filter(|l| !self.hits.contains(&key(l.root))) {
                    let from_replacement = leaf.segments.first().is_some_and(|s| s == self.replacement_lib);
                    if matches!(leaf.kind, LeafKind::Glob) {
                        if from_replacement && leaf.segments.len() == 1 {
                            self.scope.imports.insert(("*".to_owned(), self.replacement_lib.to_owned()));
                        }
                        continue;
                    }
                    self.scope.shadowed.insert(leaf.local());
                    if from_replacement {
                        self.scope.imports.insert((leaf.local(), leaf.segments.join("::")));
                    }
                }
                None
            }
            _ => None,
        };
        if let Some(ident) = ident {
            self.scope.shadowed.insert(name(ident));
        }
    }

    /// The old path a local name stands for: a removed import, or a name from a glob import of the old crate.
    fn local(&self, local: &str) -> Option<Vec<String>> {
        if let Some(old) = self.scope.lowered.get(local) {
            return Some(old.clone());
        }
        if !self.scope.glob || self.scope.shadowed.contains(local) {
            return None;
        }
        let old = format!("{}::{local}", self.map.lib);
        // Names whose new path is the same name in the replacement come through its glob import.
        let same = |new: &str| new.split_once("::").is_some_and(|(_, rest)| rest == local);
        let differs = |action: Option<&Action>| action.is_some_and(|a| !matches!(a, Action::Path(new) if same(new)));
        (differs(self.map.items.get(&old)) || differs(self.map.macros.get(&old)))
            .then(|| vec![self.map.lib.clone(), local.to_owned()])
    }

    fn decide(&self, leaf: &Leaf<'_>, public: bool) -> Decision {
        let mut old = leaf.segments.clone();
        let Some(root) = old.first_mut() else { return Decision::Fail(self.no_note(&[])) };
        *root = self.map.lib.clone();
        let local = leaf.local();
        if matches!(leaf.kind, LeafKind::Glob) {
            return if old.len() == 1 {
                Decision::Glob
            } else {
                Decision::Fail(format!(
                    "`use {}::*` imports a module of the old crate; import the items from `{}` by hand",
                    old.join("::"),
                    self.replacement_lib
                ))
            };
        }
        if old.len() == 1 {
            return if local == self.map.lib { Decision::Drop } else { Decision::Lower(local, old) };
        }
        let joined = old.join("::");
        let item = self.map.items.get(&joined);
        let mac = self.map.macros.get(&joined);
        for action in [item, mac].into_iter().flatten() {
            if let Action::Manual(help) = action {
                return Decision::Fail(help.clone());
            }
        }
        let lower = || {
            if public {
                Decision::Fail(format!(
                    "`{joined}` is re-exported, but its replacement cannot be imported; re-export it by hand"
                ))
            } else {
                Decision::Lower(local.clone(), old.clone())
            }
        };
        match (item, mac) {
            (None, None) => Decision::Fail(self.no_note(&old)),
            (Some(Action::Path(new)), None) if new.split("::").count() == 2 => {
                Decision::Import(self.rebase(new), local)
            }
            _ => lower(),
        }
    }

    fn fix_use(&mut self, item: &syn::ItemUse, top_level: bool) {
        let mut leaves = Vec::new();
        flatten(&item.tree, &mut Vec::new(), None, &mut leaves);
        let old_roots: Vec<&Leaf<'_>> = leaves.iter().filter(|l| self.hits.contains(&key(l.root))).collect();
        if old_roots.is_empty() {
            return;
        }
        let public = !matches!(item.vis, syn::Visibility::Inherited);
        let decisions: Vec<Option<Decision>> =
            leaves.iter().map(|leaf| self.hits.contains(&key(leaf.root)).then(|| self.decide(leaf, public))).collect();
        let failure = decisions.iter().flatten().find_map(|d| match d {
            Decision::Fail(help) => Some(help.clone()),
            Decision::Lower(local, _) if !top_level => Some(format!(
                "`{local}` is imported inside a block and its replacement cannot be imported; rewrite it by hand"
            )),
            _ => None,
        });
        let roots: Vec<proc_macro2::LineColumn> = old_roots.iter().map(|l| l.root.span().start()).collect();
        for leaf in &old_roots {
            self.handled.insert(key(leaf.root));
        }
        if let Some(help) = failure {
            for root in roots {
                self.leave(root, help.clone());
            }
            return;
        }
        let mut rendered: Vec<String> = Vec::new();
        for (leaf, decision) in leaves.iter().zip(decisions) {
            match decision {
                None => rendered.push(leaf.render()),
                Some(Decision::Import(new, local)) => {
                    let last = new.rsplit("::").next().unwrap_or_default().to_owned();
                    // An old name that the new item no longer has (`AgentContext` for `RunContext`) is renamed at its
                    // use sites (in its module, or in its block: see `visit_block`), unless the author chose it
                    // (`as`), it is re-exported, or the new name is taken.
                    let rename = last != local
                        && (top_level || self.in_block)
                        && !public
                        && matches!(leaf.kind, LeafKind::Name)
                        && !self.scope.shadowed.contains(&last)
                        && !self.scope.imports.iter().any(|(l, path)| *l == last && *path != new);
                    if rename {
                        self.scope.renamed.insert(local.clone(), last.clone());
                        if self.scope.imports.insert((last.clone(), new.clone())) {
                            rendered.push(new);
                        }
                    } else if self.scope.imports.insert((local.clone(), new.clone())) {
                        rendered.push(if last == local { new } else { format!("{new} as {local}") });
                    }
                }
                Some(Decision::Glob) => {
                    self.scope.glob = true;
                    if self.scope.imports.insert(("*".to_owned(), self.replacement_lib.to_owned())) {
                        rendered.push(format!("{}::*", self.replacement_lib));
                    }
                }
                Some(Decision::Lower(local, old)) => _ = self.scope.lowered.insert(local, old),
                Some(Decision::Drop | Decision::Fail(_)) => {}
            }
        }
        if rendered.is_empty() {
            self.delete(item.span());
            return;
        }
        let first = |leaf: &String| leaf.split("::").next().unwrap_or_default().to_owned();
        let tree = if rendered.len() == 1 {
            rendered.remove(0)
        } else if rendered.iter().all(|l| l.contains("::") && first(l) == first(&rendered[0])) {
            let head = first(&rendered[0]);
            let rest: Vec<&str> = rendered.iter().map(|l| &l[head.len() + 2..]).collect();
            format!("{head}::{{{}}}", rest.join(", "))
        } else {
            format!("{{{}}}", rendered.join(", "))
        };
        let colons = if item.leading_colon.is_some() { "::" } else { "" };
        self.edit(item.use_token.span.start(), item.semi_token.span.end(), format!("use {colons}{tree};"));
    }

    /// Removes an item; a line left blank goes with it.
    fn delete(&mut self, span: proc_macro2::Span) {
        let text = self.index.text;
        let (mut start, mut end) = (self.offset(span.start()), self.offset(span.end()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
        if text[line_start..start].trim().is_empty() {
            if text[end..line_end].trim().is_empty() {
                (start, end) = (line_start, line_end);
            } else {
                // A trailing comment stays, at the start of the line.
                end += text[end..line_end].len() - text[end..line_end].trim_start().len();
            }
        }
        self.edits.push(Edit { start, end, text: String::new() });
    }

    fn fix_extern(&mut self, item: &syn::ItemExternCrate) {
        let root = key(&item.ident);
        if !self.hits.contains(&root) {
            return;
        }
        self.handled.insert(root);
        if item.attrs.iter().any(|a| a.path().is_ident("macro_use")) {
            // Decided once the file's bare macro calls are known.
            self.macro_use = Some((item.span(), item.ident.span().start()));
            return;
        }
        let alias = item.rename.as_ref().map(|(_, alias)| alias.to_string());
        if !self.scope.externs.insert(alias) {
            self.delete(item.span());
            return;
        }
        self.edit(item.ident.span().start(), item.ident.span().end(), self.replacement_lib.to_owned());
    }

    /// Rewrites a path rooted at the old crate, an alias of it, or a local name standing for an old item.
    fn fix_path(&mut self, path: &syn::Path) {
        let Some(first) = path.segments.first() else { return };
        let idents: Vec<String> = path.segments.iter().map(|s| name(&s.ident)).collect();
        let hit = self.hits.contains(&key(&first.ident)) && (path.leading_colon.is_some() || idents.len() > 1);
        if !hit && path.leading_colon.is_none() && self.rename_local(&first.ident) {
            return;
        }
        let (old, root_len) = if hit {
            self.handled.insert(key(&first.ident));
            let mut old = vec![self.map.lib.clone()];
            old.extend(idents[1..].iter().cloned());
            (old, 1)
        } else if path.leading_colon.is_none()
            && let Some(mut old) = self.local(&idents[0])
        {
            let root_len = old.len();
            old.extend(idents[1..].iter().cloned());
            (old, root_len)
        } else {
            return;
        };
        let start = first.ident.span().start();
        let Some((len, action)) = self.map.resolve(&old, root_len.max(2).min(old.len()), false) else {
            if hit {
                self.leave(start, self.no_note(&old));
            }
            return;
        };
        let consumed = len - root_len + 1;
        if path.segments.iter().take(consumed - 1).any(|s| !s.arguments.is_none()) {
            self.leave(
                start,
                format!("`{}` has generic arguments inside the old path; rewrite it by hand", old.join("::")),
            );
            return;
        }
        match action.clone() {
            Action::Path(new) => {
                let end = path.segments[consumed - 1].ident.span().end();
                let new = if hit { self.rebase(&new) } else { self.through_glob(&new) };
                self.edit(start, end, new);
            }
            Action::Manual(help) => self.leave(start, help),
            Action::Module | Action::Macro(_) => self.leave(start, self.no_note(&old)),
        }
    }

    /// A call of a helper that called a method on its first argument, written as that method call:
    /// `old::next_event(&mut self.events)` becomes `self.events.recv()`. The arguments keep their text
    /// (and their own edits); only the call around them changes. Whether it was one.
    fn method_call(&mut self, call: &syn::ExprCall) -> bool {
        let syn::Expr::Path(func) = &*call.func else { return false };
        let path = &func.path;
        let Some(first) = path.segments.first() else { return false };
        if func.qself.is_some() || path.segments.iter().any(|s| !s.arguments.is_none()) || call.args.is_empty() {
            return false;
        }
        let idents: Vec<String> = path.segments.iter().map(|s| name(&s.ident)).collect();
        let hit = self.hits.contains(&key(&first.ident)) && (path.leading_colon.is_some() || idents.len() > 1);
        let old = if hit {
            let mut old = vec![self.map.lib.clone()];
            old.extend(idents[1..].iter().cloned());
            old
        } else if path.leading_colon.is_none() && idents.len() == 1 {
            let Some(old) = self.local(&idents[0]) else { return false };
            old
        } else {
            return false;
        };
        let joined = old.join("::");
        let Some(Action::Path(new)) = self.map.items.get(&joined) else { return false };
        if !self.map.methods.contains(&joined) {
            return false;
        }
        let method = new.rsplit("::").next().unwrap_or_default().to_owned();
        let args: Vec<&syn::Expr> = call.args.iter().collect();
        let (receiver, open, close) = receiver_of(args[0]);
        if hit {
            self.handled.insert(key(&first.ident));
        }
        let receiver_span = receiver.span();
        self.edit(call.func.span().start(), receiver_span.start(), open.to_owned());
        match args.get(1) {
            Some(second) => {
                self.edit(receiver_span.end(), second.span().start(), format!("{close}.{method}("));
            }
            None => {
                let end = call.paren_token.span.close().end();
                self.edit(receiver_span.end(), end, format!("{close}.{method}()"));
            }
        }
        true
    }

    /// `old!(receiver, args..)` of a macro that forwards to the method `new` as `receiver.method(args..)`, as
    /// [`Self::method_call`] writes a helper's call; whether its arguments parse as expressions (else nothing is
    /// edited).
    fn macro_method_call(&mut self, mac: &syn::Macro, start: proc_macro2::LineColumn, new: &str) -> bool {
        use syn::punctuated::Punctuated;
        let Ok(args) = mac.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated) else {
            return false;
        };
        let args: Vec<&syn::Expr> = args.iter().collect();
        let Some(first) = args.first() else { return false };
        let method = new.rsplit("::").next().unwrap_or_default().to_owned();
        let (receiver, open, close) = receiver_of(first);
        let receiver_span = receiver.span();
        self.edit(start, receiver_span.start(), open.to_owned());
        match args.get(1) {
            Some(second) => self.edit(receiver_span.end(), second.span().start(), format!("{close}.{method}(")),
            None => {
                let end = mac.delimiter.span().close().end();
                self.edit(receiver_span.end(), end, format!("{close}.{method}()"));
            }
        }
        true
    }

    /// Renames a use site of an old import now imported under the new name; whether it was one.
    fn rename_local(&mut self, ident: &proc_macro2::Ident) -> bool {
        let Some(new) = self.scope.renamed.get(&name(ident)).cloned() else { return false };
        self.edit(ident.span().start(), ident.span().end(), new);
        true
    }

    /// The new path for a name that came through a glob import of the old crate: the bare name when the glob import of
    /// the replacement provides it (`DEFAULT_EVENT_BUFFER`), else the full path.
    fn through_glob(&self, new: &str) -> String {
        let new = self.rebase(new);
        match new.split_once("::") {
            Some((_, last))
                if !last.contains("::")
                    && !self.scope.shadowed.contains(last)
                    && self.scope.imports.contains(&("*".to_owned(), self.replacement_lib.to_owned())) =>
            {
                last.to_owned()
            }
            _ => new,
        }
    }

    /// A constant brought in by a removed import, standing alone in a pattern.
    fn fix_pat_ident(&mut self, pat: &syn::PatIdent) {
        if pat.by_ref.is_some() || pat.mutability.is_some() || pat.subpat.is_some() {
            return;
        }
        if self.rename_local(&pat.ident) {
            return;
        }
        let Some(old) = self.local(&name(&pat.ident)) else { return };
        let joined = old.join("::");
        if let (true, Some(Action::Path(new))) = (self.map.consts.contains(&joined), self.map.items.get(&joined)) {
            let new = self.through_glob(new);
            self.edit(pat.ident.span().start(), pat.ident.span().end(), new);
        }
    }

    fn fix_macro(&mut self, mac: &syn::Macro) {
        let path = &mac.path;
        if let Some(first) = path.segments.first() {
            let idents: Vec<String> = path.segments.iter().map(|s| name(&s.ident)).collect();
            let hit = self.hits.contains(&key(&first.ident)) && (path.leading_colon.is_some() || idents.len() > 1);
            let old = if hit {
                self.handled.insert(key(&first.ident));
                let mut old = vec![self.map.lib.clone()];
                old.extend(idents[1..].iter().cloned());
                Some(old)
            } else if idents.len() == 1 && path.leading_colon.is_none() {
                self.local(&idents[0]).or_else(|| self.bare_old_macro(&idents[0]))
            } else {
                None
            };
            if let Some(old) = old {
                let start = first.ident.span().start();
                let bare = !hit && idents.len() == 1 && self.local(&idents[0]).is_none();
                let rewritable = matches!(
                    self.map.macros.get(&old.join("::")),
                    Some(Action::Macro(_)) if matches!(mac.delimiter, syn::MacroDelimiter::Paren(_))
                );
                self.bare_left |= bare && !rewritable;
                match self.map.macros.get(&old.join("::")) {
                    Some(Action::Macro(new)) if matches!(mac.delimiter, syn::MacroDelimiter::Paren(_)) => {
                        let method = self.map.method_targets.contains(new.as_str());
                        if !(method && self.macro_method_call(mac, start, new)) {
                            let new = self.rebase(new);
                            self.edit(start, mac.bang_token.span.end(), new);
                        }
                    }
                    Some(Action::Macro(new)) => {
                        let help =
                            format!("call `{}(..)` instead, with the arguments in parentheses", self.rebase(new));
                        self.leave(start, help);
                    }
                    Some(Action::Manual(help)) => {
                        let help = help.clone();
                        self.leave(start, help);
                    }
                    _ if hit => self.leave(start, self.no_note(&old)),
                    _ => {}
                }
            }
        }
        let local = mac.path.get_ident().is_some_and(|ident| self.local_macros.contains(&name(ident)));
        let outer = self.in_local_macro;
        self.in_local_macro |= local;
        self.fix_tokens(mac.tokens.clone());
        self.in_local_macro = outer;
    }

    /// Token-level rewriting inside macro arguments and `macro_rules!` bodies, where there is no syntax tree.
    fn fix_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let punct = |i: usize, c: char| matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == c);
        let mut i = 0;
        while i < tokens.len() {
            let ident = match &tokens[i] {
                TokenTree::Group(group) => {
                    // The arguments of a call of one of this file's macros (`name!(..)` inside `assert_eq!(..)`):
                    // bare names there may be pasted after a path too.
                    let local_call = i >= 2
                        && punct(i - 1, '!')
                        && matches!(&tokens[i - 2], TokenTree::Ident(id) if self.local_macros.contains(&name(id)));
                    let outer = self.in_local_macro;
                    self.in_local_macro |= local_call;
                    self.fix_tokens(group.stream());
                    self.in_local_macro = outer;
                    i += 1;
                    continue;
                }
                TokenTree::Ident(ident) => ident,
                _ => {
                    i += 1;
                    continue;
                }
            };
            let hit = self.hits.contains(&key(ident));
            let after_path =
                i > 0 && (punct(i - 1, ':') || punct(i - 1, '.') || punct(i - 1, '$') || punct(i - 1, '\''));
            if !hit && !after_path && !self.in_local_macro && self.rename_local(ident) {
                i += 1;
                continue;
            }
            let local = if hit || after_path || self.in_local_macro { None } else { self.local(&name(ident)) };
            if !hit && local.is_none() {
                i += 1;
                continue;
            }
            // The path: ident (:: ident)*.
            let mut segment_ends = vec![(i, ident.span().end())];
            let mut j = i;
            while matches!(tokens.get(j + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
                && punct(j + 2, ':')
                && let Some(TokenTree::Ident(next)) = tokens.get(j + 3)
            {
                j += 3;
                segment_ends.push((j, next.span().end()));
            }
            // A path a local macro's rewrite covers, or one it left with its reason.
            if hit && self.claimed.contains(&key(ident)) {
                self.handled.insert(key(ident));
                i = j + 1;
                continue;
            }
            if hit && let Some(help) = self.refused.get(&key(ident)).cloned() {
                self.handled.insert(key(ident));
                self.leave(ident.span().start(), help);
                i = j + 1;
                continue;
            }
            let idents: Vec<String> = segment_ends
                .iter()
                .map(|(k, _)| if let TokenTree::Ident(id) = &tokens[*k] { name(id) } else { String::new() })
                .collect();
            let (old, root_len) = match local {
                Some(mut old) => {
                    let root_len = old.len();
                    old.extend(idents[1..].iter().cloned());
                    (old, root_len)
                }
                None => {
                    self.handled.insert(key(ident));
                    let mut old = vec![self.map.lib.clone()];
                    old.extend(idents[1..].iter().cloned());
                    (old, 1)
                }
            };
            let start = ident.span().start();
            let in_use = i > 0 && matches!(&tokens[i - 1], TokenTree::Ident(id) if id == "use");
            if punct(j + 1, '!') {
                match self.map.macros.get(&old.join("::")).cloned() {
                    Some(Action::Macro(new)) if matches!(tokens.get(j + 2), Some(TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Parenthesis) => {
                        if let TokenTree::Punct(bang) = &tokens[j + 1] {
                            self.edit(start, bang.span().end(), self.rebase(&new));
                        }
                    }
                    Some(Action::Manual(help)) => self.leave(start, help),
                    _ if hit => self.leave(start, self.no_note(&old)),
                    _ => {}
                }
            } else {
                match self.map.resolve(&old, root_len.max(2).min(old.len()), false) {
                    Some((len, Action::Path(new))) if !(in_use && new.split("::").count() > 2) => {
                        let new = self.rebase(new);
                        self.edit(start, segment_ends[len - root_len].1, new);
                    }
                    Some((_, Action::Manual(help))) => {
                        let help = help.clone();
                        self.leave(start, help);
                    }
                    _ if hit && old.len() == 1 => {
                        let help = format!(
                            "the rest of this path comes from macro tokens; rewrite it by hand with `{}`",
                            self.replacement_lib
                        );
                        self.leave(start, help);
                    }
                    _ if hit => self.leave(start, self.no_note(&old)),
                    _ => {}
                }
            }
            i = j + 1;
        }
    }
}

impl<'ast> Visit<'ast> for FileFix<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        for attr in &item.attrs {
            self.visit_attribute(attr);
        }
        if let Some((_, items)) = &item.content {
            self.module(items);
        }
    }

    /// A block's `use` items name things in the whole block (before them too): they are handled first, and what
    /// they rename (and import) holds in the block only.
    fn visit_block(&mut self, block: &'ast syn::Block) {
        let (renamed, imports) = (self.scope.renamed.clone(), self.scope.imports.clone());
        let outer = self.in_block;
        self.in_block = true;
        for stmt in &block.stmts {
            if let syn::Stmt::Item(syn::Item::Use(item)) = stmt {
                self.fix_use(item, false);
            }
        }
        self.in_block = outer;
        for stmt in &block.stmts {
            if !matches!(stmt, syn::Stmt::Item(syn::Item::Use(_))) {
                self.visit_stmt(stmt);
            }
        }
        (self.scope.renamed, self.scope.imports) = (renamed, imports);
    }

    /// Only reached for imports that are not a block's statements (module-level ones are handled first by
    /// [`FileFix::module`], a block's by [`Self::visit_block`]).
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.fix_use(item, false);
    }

    fn visit_item_extern_crate(&mut self, item: &'ast syn::ItemExternCrate) {
        self.fix_extern(item);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.fix_path(path);
        visit::visit_path(self, path);
    }

    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if !self.method_call(call) {
            visit::visit_expr_call(self, call);
        } else {
            call.args.iter().for_each(|arg| self.visit_expr(arg));
        }
    }

    fn visit_pat_ident(&mut self, pat: &'ast syn::PatIdent) {
        self.fix_pat_ident(pat);
        visit::visit_pat_ident(self, pat);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.fix_macro(mac);
    }

    fn visit_meta_list(&mut self, list: &'ast syn::MetaList) {
        visit::visit_meta_list(self, list);
        self.fix_tokens(list.tokens.clone());
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Manifests.

/// Where the replacement comes from, for declarations that do not inherit it.
#[derive(Debug, Clone)]
struct Spec {
    version: Option<String>,
    /// Absolute directory.
    path: Option<PathBuf>,
}

fn replacement_spec(ws: &Workspace, root_doc: &DocumentMut) -> Option<Spec> {
    let config = &ws.config;
    if config.replacement_version.is_some() || config.replacement_path.is_some() {
        return Some(Spec {
            version: config.replacement_version.clone(),
            path: config.replacement_path.as_ref().map(|p| normalize(&ws.root.join(p))),
        });
    }
    let replacement = config.replacement.as_str();
    if let Some(deps) = root_doc.get("workspace").and_then(|w| w.get("dependencies")).and_then(Item::as_table_like) {
        let mut entries: Vec<(&str, &Item)> = deps.iter().collect();
        entries.sort_by_key(|(key, _)| *key != replacement);
        for (key, item) in entries {
            let package = item.get("package").and_then(Item::as_str).unwrap_or(key);
            if package != replacement {
                continue;
            }
            if let Some(version) = item.as_str() {
                return Some(Spec { version: Some(version.to_owned()), path: None });
            }
            let version = item.get("version").and_then(Item::as_str).map(str::to_owned);
            let path = item.get("path").and_then(Item::as_str).map(|p| normalize(&ws.root.join(p)));
            if version.is_some() || path.is_some() {
                return Some(Spec { version, path });
            }
        }
    }
    let package = ws.members.iter().chain(&ws.others).find(|p| p.name == replacement)?;
    Some(Spec { version: package.version.clone(), path: Some(package.dir.clone()) })
}

const TABLES: [(DepKind, [&str; 2]); 3] = [
    (DepKind::Normal, ["dependencies", "dependencies"]),
    (DepKind::Dev, ["dev-dependencies", "dev_dependencies"]),
    (DepKind::Build, ["build-dependencies", "build_dependencies"]),
];

/// The dependency table of `doc` that holds `decl`.
fn decl_table<'d>(doc: &'d mut DocumentMut, decl: &Decl) -> Option<&'d mut dyn TableLike> {
    let base: &mut dyn TableLike = match &decl.target {
        None => doc.as_table_mut(),
        Some(target) => doc.get_mut("target")?.as_table_like_mut()?.get_mut(target)?.as_table_like_mut()?,
    };
    let names = TABLES.iter().find(|(kind, _)| *kind == decl.kind)?.1;
    let name = names
        .into_iter()
        .find(|name| base.get(name).and_then(Item::as_table_like).is_some_and(|table| table.contains_key(&decl.key)))?;
    base.get_mut(name)?.as_table_like_mut()
}

/// Removes the dependency table that held `decl` (just removed) when nothing is left in it and no comment sits on its
/// header: a reviewer would not keep an empty `[dev-dependencies]`.
fn drop_emptied_table(doc: &mut DocumentMut, decl: &Decl) {
    let base: &mut dyn TableLike = match &decl.target {
        None => doc.as_table_mut(),
        Some(target) => {
            let Some(base) = doc
                .get_mut("target")
                .and_then(Item::as_table_like_mut)
                .and_then(|targets| targets.get_mut(target))
                .and_then(Item::as_table_like_mut)
            else {
                return;
            };
            base
        }
    };
    let names = TABLES.iter().find(|(kind, _)| *kind == decl.kind).map_or([].as_slice(), |(_, names)| names.as_slice());
    // Text that cannot be read back (a span into the parsed input) counts as a comment: the table stays.
    let commented =
        |raw: Option<&toml_edit::RawString>| raw.is_some_and(|r| r.as_str().is_none_or(|r| r.contains('#')));
    for name in names {
        let empty = matches!(base.get(name), Some(Item::Table(table))
            if table.is_empty() && !commented(table.decor().prefix()) && !commented(table.decor().suffix()));
        if empty {
            base.remove(name);
        }
    }
}

/// Whether a declaration of the replacement makes `old` unnecessary.
fn covers(new: &Decl, old: &Decl) -> bool {
    let kind = new.kind == old.kind || (new.kind == DepKind::Normal && old.kind == DepKind::Dev);
    let target = new.target.is_none() || new.target == old.target;
    kind && target && (!new.optional || old.optional)
}

/// Replaces the entry `old_key` of `table` by `new_key` = `item`, in place.
fn replace_entry(table: &mut dyn TableLike, old_key: &str, new_key: &str, item: Item) {
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_owned()).collect();
    let mut entries: Vec<(Key, Item)> = Vec::new();
    for k in &keys {
        let Some((key, value)) = table.get_key_value(k) else { continue };
        if k == old_key {
            let mut renamed = Key::new(new_key);
            *renamed.leaf_decor_mut() = key.leaf_decor().clone();
            *renamed.dotted_decor_mut() = key.dotted_decor().clone();
            entries.push((renamed, item.clone()));
        } else {
            entries.push((key.clone(), value.clone()));
        }
    }
    table.clear();
    for (key, value) in entries {
        table.insert(key.get(), value);
        if let Some(mut key_mut) = table.key_mut(key.get()) {
            *key_mut.leaf_decor_mut() = key.leaf_decor().clone();
            *key_mut.dotted_decor_mut() = key.dotted_decor().clone();
        }
    }
}

/// Sets `name` in a dependency table to `value` (in place when it exists), or removes it for `None`.
fn set_field(table: &mut dyn TableLike, name: &str, value: Option<&str>) {
    match (value, table.get_mut(name)) {
        (Some(value), Some(Item::Value(existing))) => {
            let decor = existing.decor().clone();
            *existing = Value::from(value);
            *existing.decor_mut() = decor;
        }
        (Some(value), _) => _ = table.insert(name, toml_edit::value(value)),
        (None, _) => _ = table.remove(name),
    }
}

/// The replacement's declaration made from the old one.
fn converted(old: &Item, spec: Option<&Spec>, dir: &Path) -> Option<Item> {
    let inherited = old.get("workspace").and_then(Item::as_bool) == Some(true);
    let had_version = old.as_str().is_some() || old.get("version").is_some();
    let version =
        |spec: &Spec| spec.version.as_deref().filter(|_| had_version || spec.path.is_none()).map(str::to_owned);
    if old.as_str().is_some() {
        let spec = spec?;
        let decor = old.as_value().map(|v| v.decor().clone()).unwrap_or_default();
        let mut value = match (&spec.path, version(spec)) {
            (None, Some(version)) => Value::from(version),
            (path, version) => {
                let mut table = toml_edit::InlineTable::new();
                if let Some(version) = version {
                    table.insert("version", Value::from(version));
                }
                if let Some(path) = path {
                    table.insert("path", Value::from(relative(dir, path)));
                }
                Value::InlineTable(table)
            }
        };
        *value.decor_mut() = decor;
        return Some(Item::Value(value));
    }
    let mut item = old.clone();
    let table = item.as_table_like_mut()?;
    for field in ["package", "features", "git", "branch", "tag", "rev", "registry", "registry-index"] {
        table.remove(field);
    }
    if !inherited {
        let spec = spec?;
        set_field(table, "version", version(spec).as_deref());
        set_field(table, "path", spec.path.as_ref().map(|p| relative(dir, p)).as_deref());
    }
    Some(item)
}

/// Updates `[features]` for an old dependency key: `new_key` when the replacement is optional, else dropped.
fn fix_features(doc: &mut DocumentMut, old_key: &str, new_key: Option<&str>) {
    let Some(features) = doc.get_mut("features").and_then(Item::as_table_like_mut) else { return };
    for (_, item) in features.iter_mut() {
        let Some(array) = item.as_array_mut() else { continue };
        let mut seen = HashSet::new();
        array.retain(|value| {
            let Some(s) = value.as_str() else { return true };
            let names_old = s == old_key
                || s == format!("dep:{old_key}")
                || s.starts_with(&format!("{old_key}/"))
                || s.starts_with(&format!("{old_key}?/"));
            (!names_old || (new_key.is_some() && !s.contains('/'))) && seen.insert(s.to_owned())
        });
        if let Some(new_key) = new_key {
            for value in array.iter_mut() {
                let replaced = match value.as_str() {
                    Some(s) if s == old_key => new_key.to_owned(),
                    Some(s) if s == format!("dep:{old_key}") => format!("dep:{new_key}"),
                    _ => continue,
                };
                let decor = value.decor().clone();
                *value = Value::from(replaced);
                *value.decor_mut() = decor;
            }
        }
    }
}

fn fix_manifests(
    ws: &Workspace,
    to_fix: &[&Package],
    member_sources: &HashMap<&str, (usize, bool)>,
    files: &mut BTreeMap<PathBuf, FileChange>,
) -> Result<(), Diagnostic> {
    let deprecated = ws.config.deprecated.as_str();
    let replacement = ws.config.replacement.as_str();
    let root_manifest = ws.root.join("Cargo.toml");
    let parse = |path: &Path, text: &str| {
        text.parse::<DocumentMut>().map_err(|err| {
            let message = format!("TOML does not parse: {}", err.message().trim_end());
            Diagnostic::error("manifest", message).in_file(rel_path(&ws.root, path))
        })
    };
    let mut docs: BTreeMap<PathBuf, (String, DocumentMut)> = BTreeMap::new();
    docs.insert(root_manifest.clone(), (ws.root_text.clone(), parse(&root_manifest, &ws.root_text)?));
    let spec = replacement_spec(ws, &docs[&root_manifest].1);
    // A path that is not the replacement's would be written into every manifest, and only the check afterwards would
    // notice: refuse it before anything is written.
    if let Some(dir) = spec.as_ref().and_then(|spec| spec.path.as_ref()) {
        let manifest = dir.join("Cargo.toml");
        let name = std::fs::read_to_string(&manifest).ok().and_then(|text| {
            let doc = text.parse::<DocumentMut>().ok()?;
            Some(doc.get("package")?.get("name")?.as_str()?.to_owned())
        });
        if name.as_deref() != Some(replacement) {
            let found = match name {
                Some(name) => format!("holds the package `{name}`"),
                None => "has no package manifest".to_owned(),
            };
            return Err(Diagnostic::error(
                "fix",
                format!(
                    "--fix would point the members at `{}` for `{replacement}`, but that directory {found}; nothing \
                     was written",
                    rel_path(&ws.root, dir)
                ),
            )
            .with_help(format!("set `replacement-path` in {} to the directory of `{replacement}`", ws.config.table))
            .in_file(ws.root_shown.join("Cargo.toml").display().to_string()));
        }
    }
    let no_spec = || {
        Diagnostic::error(
            "fix",
            format!(
                "--fix cannot tell which `{replacement}` to depend on: the workspace does not declare it; add \
                 `replacement-version = \"..\"` or `replacement-path = \"..\"` to {}",
                ws.config.table
            ),
        )
        .in_file(ws.root_shown.join("Cargo.toml").display().to_string())
    };

    // Workspace entries of the deprecated crate still inherited by a declaration that stays.
    let mut kept_inherited: HashSet<String> = HashSet::new();
    let mut needs_workspace_entry = false;
    for member in &ws.members {
        let fixing = to_fix.iter().any(|m| m.name == member.name);
        let keep_old = fixing && member_sources.get(member.name.as_str()).is_some_and(|(left, _)| *left > 0);
        let manifest = member.dir.join("Cargo.toml");
        if !docs.contains_key(&manifest) {
            docs.insert(manifest.clone(), (member.text.clone(), parse(&manifest, &member.text)?));
        }
        let doc = &mut docs.get_mut(&manifest).expect("just inserted").1;
        let mut replacements: Vec<Decl> = member.decls.iter().filter(|d| d.package == replacement).cloned().collect();
        let olds: Vec<&Decl> = member.decls.iter().filter(|d| d.package == deprecated).collect();
        for old in olds {
            let Some(table) = decl_table(doc, old) else { continue };
            let Some(item) = table.get(&old.key).cloned() else { continue };
            let inherited = item.get("workspace").and_then(Item::as_bool) == Some(true);
            if !fixing || keep_old {
                if inherited {
                    kept_inherited.insert(old.key.clone());
                }
                if !fixing {
                    continue;
                }
            }
            let covered = replacements.iter().any(|new| covers(new, old));
            if keep_old {
                // The member keeps the old crate for what is left and gains the replacement for what was rewritten.
                let rewrote = member_sources.get(member.name.as_str()).is_some_and(|(_, rewrote)| *rewrote);
                if covered || !rewrote || table.contains_key(replacement) {
                    continue;
                }
                let mut new = converted(&item, spec.as_ref(), &member.dir).ok_or_else(no_spec)?;
                if let Some(t) = new.as_table_like_mut() {
                    t.remove("optional");
                }
                needs_workspace_entry |= inherited;
                table.insert(replacement, new);
                replacements.push(Decl { key: replacement.to_owned(), package: replacement.to_owned(), ..old.clone() });
                continue;
            }
            if covered || table.contains_key(replacement) {
                let new_optional = replacements.iter().find(|new| covers(new, old)).map(|new| new.optional);
                table.remove(&old.key);
                let new_key = replacements.iter().find(|new| covers(new, old)).map(|new| new.key.clone());
                fix_features(doc, &old.key, new_key.as_deref().filter(|_| new_optional == Some(true)));
                drop_emptied_table(doc, old);
                continue;
            }
            let new = converted(&item, spec.as_ref(), &member.dir).ok_or_else(no_spec)?;
            needs_workspace_entry |= inherited;
            replace_entry(table, &old.key, replacement, new);
            if old.optional {
                fix_features(doc, &old.key, Some(replacement));
            }
            replacements.push(Decl { key: replacement.to_owned(), package: replacement.to_owned(), ..old.clone() });
        }
    }

    // `[workspace.dependencies]`.
    let root = &mut docs.get_mut(&root_manifest).expect("the root manifest").1;
    if let Some(deps) =
        root.get_mut("workspace").and_then(|w| w.get_mut("dependencies")).and_then(Item::as_table_like_mut)
    {
        let mut has_entry = deps.contains_key(replacement);
        let old_keys: Vec<String> = deps
            .iter()
            .filter(|(key, item)| item.get("package").and_then(Item::as_str).unwrap_or(key) == deprecated)
            .map(|(key, _)| key.to_owned())
            .collect();
        for old_key in old_keys {
            if kept_inherited.contains(&old_key) {
                continue;
            }
            if needs_workspace_entry && !has_entry {
                let item = deps.get(&old_key).cloned().unwrap_or_default();
                let new = converted(&item, spec.as_ref(), &ws.root).ok_or_else(no_spec)?;
                replace_entry(deps, &old_key, replacement, new);
                has_entry = true;
            } else {
                deps.remove(&old_key);
            }
        }
        if needs_workspace_entry && !has_entry {
            let new = converted(&Item::Value(Value::from("")), spec.as_ref(), &ws.root).ok_or_else(no_spec)?;
            deps.insert(replacement, new);
        }
    } else if needs_workspace_entry {
        return Err(Diagnostic::error(
            "fix",
            format!("a member inherits `{deprecated}` but [workspace.dependencies] does not declare it"),
        )
        .in_file(ws.root_shown.join("Cargo.toml").display().to_string()));
    }

    for (path, (old, doc)) in docs {
        let new = doc.to_string();
        if new != old {
            files.insert(path, FileChange { old, new, edits: Vec::new(), formatted: false });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_fns_are_swapped_only_when_their_body_forwards() {
        let check =
            |src: &str, new: &str| forwarded_path(&syn::parse_str(src).expect("a fn"), new).map(|(path, _)| path);
        assert_eq!(check("fn f() -> B { c::R::builder() }", "c::R::builder").as_deref(), Some("c::R::builder"));
        assert_eq!(check("fn f(r: &c::R, u: &str) -> X { r.open(u) }", "c::R::open").as_deref(), Some("c::R::open"));
        assert_eq!(check("fn f(r: &c::R) -> c::R { r.clone() }", "c::R").as_deref(), Some("c::R::clone"));
        assert_eq!(
            check("async fn f(e: &mut c::E) -> X { e.recv().await }", "c::E::recv").as_deref(),
            Some("c::E::recv")
        );
        // Arguments swapped, a different method, an extra statement, a missing `.await`: not the same shape.
        assert_eq!(check("fn f(a: &c::R, b: u8) -> X { a.go(b, b) }", "c::R::go"), None);
        assert_eq!(check("fn f(r: &c::R) -> X { r.other() }", "c::R::go"), None);
        assert_eq!(check("fn f() -> X { let x = 1; c::go(x) }", "c::go"), None);
        assert_eq!(check("async fn f(e: &mut c::E) -> X { e.recv() }", "c::E::recv"), None);
    }

    #[test]
    fn a_dependency_table_emptied_by_the_fix_goes_unless_a_comment_is_on_it() {
        #[track_caller]
        fn check(manifest: &str, target: Option<&str>, expect: &str) {
            let mut doc: DocumentMut = manifest.parse().expect("a manifest");
            let decl = Decl {
                key: "old".to_owned(),
                package: "old".to_owned(),
                kind: DepKind::Dev,
                target: target.map(str::to_owned),
                optional: false,
                path: None,
                patch: None,
                line: 1,
                column: 1,
            };
            let table = decl_table(&mut doc, &decl).expect("the old declaration's table");
            table.remove("old");
            drop_emptied_table(&mut doc, &decl);
            assert_eq!(doc.to_string(), expect);
        }
        let head = "[dependencies]\nnew = \"1\"\n";
        check(&format!("{head}\n[dev-dependencies]\nold = \"1\"\n"), None, head);
        check(&format!("{head}\n[target.'cfg(unix)'.dev-dependencies]\nold = \"1\"\n"), Some("cfg(unix)"), head);
        // The author's note on the table, and a table with other entries, stay.
        let noted = format!("{head}\n# Only the tests use these.\n[dev-dependencies]\nold = \"1\"\n");
        check(&noted, None, &format!("{head}\n# Only the tests use these.\n[dev-dependencies]\n"));
        let other = format!("{head}\n[dev-dependencies]\nold = \"1\"\nx = \"1\"\n");
        check(&other, None, &format!("{head}\n[dev-dependencies]\nx = \"1\"\n"));
    }
}
