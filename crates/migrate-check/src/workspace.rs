//! Reading a workspace the way Cargo does, without running Cargo: finding the root manifest, its
//! `[workspace.metadata.migrate-check]` table (`[package.metadata.migrate-check]` for a package that is its own
//! workspace), member discovery (`members` globs, `exclude`, a root `[package]`, path dependencies inside the root),
//! every member's dependency declarations with the line of their key, the manifests of
//! non-member path crates, and the registry part of the graph from `Cargo.lock`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml_edit::{Document, Item, Key, TableLike};

use crate::diag::Diagnostic;
use crate::paths::{LineCursor, line_col, normalize, normalize_owned, rel_path, relative, within};
use crate::{FastMap, FastSet, par_map};

/// The three dependency tables of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DepKind {
    Normal,
    Dev,
    Build,
}

impl DepKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DepKind::Normal => "normal",
            DepKind::Dev => "dev",
            DepKind::Build => "build",
        }
    }
}

/// One dependency declaration in one manifest, inheritance from `[workspace.dependencies]` already applied.
#[derive(Debug, Clone)]
pub(crate) struct Decl {
    /// The dependency key exactly as written (the crate's name in source is this with `-` as `_`).
    pub(crate) key: String,
    /// The package it resolves to: `package = ...` if given (also through `workspace = true`), else the key.
    pub(crate) package: String,
    pub(crate) kind: DepKind,
    /// `cfg(..)` string or target triple of a `[target.<..>.*dependencies]` table.
    pub(crate) target: Option<String>,
    pub(crate) optional: bool,
    /// Directory of a path dependency, absolute and normalised.
    pub(crate) path: Option<PathBuf>,
    /// For a dependency that is not a path: the directory a `[patch]` or `[replace]` of the root puts in its place.
    pub(crate) patch: Option<PathBuf>,
    /// 1-based line and character column of the key in the declaring manifest.
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Decl {
    /// The directory the dependency is built from, when it is a path (given, or put there by a patch).
    pub(crate) fn dir(&self) -> Option<PathBuf> {
        self.path.clone().or_else(|| self.patch.clone())
    }
}

/// A package manifest that was read: a member or a non-member path crate.
#[derive(Debug)]
pub(crate) struct Package {
    pub(crate) name: String,
    /// `package.version` when it is written out (not inherited).
    pub(crate) version: Option<String>,
    /// Absolute, normalised directory of the package.
    pub(crate) dir: PathBuf,
    /// The manifest, relative to the workspace root with `/` separators (absolute for crates outside the root).
    pub(crate) manifest_rel: String,
    pub(crate) text: String,
    /// `[lib] name`, if set.
    pub(crate) lib_name: Option<String>,
    /// Target roots named explicitly in the manifest (`[lib] path`, `[[bin]] path`, ..., `package.build`).
    pub(crate) explicit_roots: Vec<PathBuf>,
    /// `package.build = false`.
    pub(crate) build_disabled: bool,
    /// The library target's root file: `[lib] path`, else `src/lib.rs` (which may not exist).
    pub(crate) lib_root: PathBuf,
    /// `[lib] doctest = false` turns rustdoc's tests of the library off.
    pub(crate) doctest: bool,
    pub(crate) decls: Vec<Decl>,
}

/// One `allow` entry of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct AllowEntry {
    pub(crate) package: String,
    pub(crate) reason: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// The configuration table, with the names of the deprecated crate and its replacement settled.
#[derive(Debug)]
pub(crate) struct Config {
    /// The table it was read from, for messages: `[workspace.metadata.migrate-check]` or
    /// `[package.metadata.migrate-check]`.
    pub(crate) table: &'static str,
    pub(crate) deprecated: String,
    pub(crate) replacement: String,
    pub(crate) allow: Vec<AllowEntry>,
    /// `replacement-version`: the version requirement `--fix` writes for the replacement (used only by `--fix`).
    pub(crate) replacement_version: Option<String>,
    /// `replacement-path`: the replacement's directory, relative to the workspace root (used only by `--fix`).
    pub(crate) replacement_path: Option<String>,
}

/// A `[workspace.dependencies]` entry.
#[derive(Debug)]
struct WsDep {
    package: String,
    path: Option<PathBuf>,
}

/// Everything the checks need to know about a workspace.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// Absolute, normalised root directory.
    pub(crate) root: PathBuf,
    /// The root directory as the user wrote it (for messages about files).
    pub(crate) root_shown: PathBuf,
    pub(crate) root_text: String,
    pub(crate) config: Config,
    /// Members, sorted by manifest path.
    pub(crate) members: Vec<Package>,
    /// Non-member path crates reachable from the members.
    pub(crate) others: Vec<Package>,
    /// `Cargo.lock`, when the graph needs it (some dependency is not a path) and there is one.
    pub(crate) lock: Lock,
}

/// Where the names of the deprecated crate and its replacement come from, besides the configuration table: flags
/// (which win over it) and defaults (which it wins over).
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Package name of the deprecated crate.
    pub deprecated: Option<String>,
    /// Package name of its replacement.
    pub replacement: Option<String>,
}

/// The root manifest of the workspace to check, as [`locate`] found it.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// Absolute, normalized path of the root manifest.
    pub(crate) root_manifest: PathBuf,
    /// The root directory as it is shown in messages about files (as the user wrote it, or relative to the current
    /// directory).
    pub(crate) root_shown: PathBuf,
    /// The manifest the search started from, when it is not the root (it must be a member), and how to show it.
    pub(crate) start: Option<(PathBuf, String)>,
}

/// Finds the root manifest as Cargo does: from `manifest_path`, or else from the nearest `Cargo.toml` at or above the
/// current directory. A manifest with `[workspace]` is the root; one with `package.workspace = ".."` points at it;
/// otherwise the first `Cargo.toml` with `[workspace]` above it that does not exclude it; otherwise the package is
/// a workspace of its own.
pub(crate) fn locate(manifest_path: Option<&Path>) -> Result<Located, Diagnostic> {
    let cwd = std::env::current_dir()
        .map_err(|err| Diagnostic::error("io", format!("cannot read the current directory: {err}")))?;
    let start = match manifest_path {
        Some(path) => {
            if path.is_dir() {
                return Err(Diagnostic::error("usage", "is a directory; --manifest-path takes a Cargo.toml")
                    .in_file(path.display().to_string()));
            }
            normalize(&cwd.join(path))
        }
        None => cwd.ancestors().map(|dir| dir.join("Cargo.toml")).find(|m| m.is_file()).ok_or_else(|| {
            Diagnostic::error(
                "manifest",
                format!("could not find `Cargo.toml` in `{}` or any parent directory", cwd.display()),
            )
        })?,
    };
    let shown_from_cwd = |dir: &Path| match relative(&cwd, dir).as_str() {
        "." => PathBuf::new(),
        rel if !rel.starts_with("../../../") => PathBuf::from(rel),
        _ => dir.to_owned(),
    };
    let start_dir = start.parent().unwrap_or(Path::new("/")).to_owned();
    let given_dir = || match manifest_path {
        Some(path) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => shown_from_cwd(&start_dir),
    };
    // A manifest that cannot be read is reported when the workspace is loaded.
    let Ok(text) = std::fs::read_to_string(&start) else {
        return Ok(Located { root_manifest: start, root_shown: given_dir(), start: None });
    };
    let Ok(doc) = Document::parse(text.as_str()) else {
        return Ok(Located { root_manifest: start, root_shown: given_dir(), start: None });
    };
    let pointer = |doc: &Document<&str>, dir: &Path| {
        let root = doc.get("package")?.get("workspace")?.as_str()?;
        Some(normalize(&dir.join(root).join("Cargo.toml")))
    };
    if doc.contains_key("workspace") {
        return Ok(Located { root_manifest: start, root_shown: given_dir(), start: None });
    }
    let mut root = pointer(&doc, &start_dir);
    if root.is_none() {
        for dir in start_dir.ancestors().skip(1) {
            let manifest = dir.join("Cargo.toml");
            let text = match std::fs::read_to_string(&manifest) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    let shown = shown_from_cwd(dir).join("Cargo.toml").display().to_string();
                    return Err(Diagnostic::error("io", format!("cannot read: {err}")).in_file(shown));
                }
            };
            // A manifest above that does not parse may be the workspace root: Cargo stops there too.
            let doc = Document::parse(text.as_str()).map_err(|err| {
                let shown = shown_from_cwd(dir).join("Cargo.toml").display().to_string();
                toml_error(shown, &text, err.message(), err.span())
            })?;
            if let Some(workspace) = doc.get("workspace").and_then(Item::as_table_like) {
                let paths = |key: &str| -> Vec<PathBuf> {
                    let values = workspace.get(key).and_then(Item::as_array);
                    values
                        .into_iter()
                        .flat_map(|a| a.iter())
                        .filter_map(|v| v.as_str())
                        .map(|p| normalize(&dir.join(p)))
                        .collect()
                };
                if !excluded(&start_dir, &paths("exclude"), &paths("members")) {
                    root = Some(manifest);
                    break;
                }
            } else if let Some(found) = pointer(&doc, dir) {
                root = Some(found);
                break;
            }
        }
    }
    Ok(match root {
        Some(root) if root != start => {
            let dir = root.parent().unwrap_or(Path::new("/")).to_owned();
            let start_shown = match manifest_path {
                Some(path) => path.display().to_string(),
                None => shown_from_cwd(&start_dir).join("Cargo.toml").display().to_string(),
            };
            Located { root_shown: shown_from_cwd(&dir), root_manifest: root, start: Some((start, start_shown)) }
        }
        _ => Located { root_manifest: start, root_shown: given_dir(), start: None },
    })
}

/// Whether `name` can be a Cargo package name: letters, digits, `-` and `_`.
pub(crate) fn is_package_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

/// Whether `dir` is excluded from a workspace by `exclude` (unless a `members` entry names it explicitly), as Cargo
/// decides it.
fn excluded(dir: &Path, exclude: &[PathBuf], members: &[PathBuf]) -> bool {
    exclude.iter().any(|ex| within(dir, ex)) && !members.iter().any(|member| within(dir, member))
}

impl Workspace {
    /// The directory of `package`'s source, when the workspace can see it: a `path` declaration of it, else a member
    /// of that name.
    pub(crate) fn source_dir(&self, package: &str) -> Option<PathBuf> {
        let declared = self
            .members
            .iter()
            .chain(&self.others)
            .flat_map(|p| &p.decls)
            .find_map(|decl| (decl.package == package).then(|| decl.path.clone()).flatten());
        declared.or_else(|| self.members.iter().find(|m| m.name == package).map(|m| m.dir.clone()))
    }

    /// The library name of `package` as written in source (`[lib] name`, else the package name), with `-` as `_`.
    /// A package that is neither a member nor a path crate is assumed to use its package name.
    pub(crate) fn lib_name(&self, package: &str) -> String {
        self.members
            .iter()
            .chain(&self.others)
            .find(|p| p.name == package)
            .and_then(|p| p.lib_name.clone())
            .unwrap_or_else(|| package.to_owned())
            .replace('-', "_")
    }

    /// Reads the workspace `located` names. `flags` and `defaults` fill in the names the configuration table does not
    /// set (flags win over the table, the table over defaults).
    pub(crate) fn load(located: &Located, flags: &Names, defaults: &Names) -> Result<Workspace, Diagnostic> {
        let absolute = &located.root_manifest;
        let root = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
        let root_shown = located.root_shown.clone();
        let loader = Loader { root: root.clone(), root_shown: root_shown.clone() };

        let root_text = loader.read(absolute)?;
        let doc = loader.parse(absolute, &root_text)?;
        let workspace = doc.as_table().get("workspace").and_then(Item::as_table_like);
        let package = doc.as_table().get("package").and_then(Item::as_table_like);
        let (owner, table_name) = match (workspace, package) {
            (Some(workspace), _) => (workspace, "[workspace.metadata.migrate-check]"),
            (None, Some(package)) => (package, "[package.metadata.migrate-check]"),
            (None, None) => {
                return Err(Diagnostic::error(
                    "manifest",
                    "neither a workspace nor a package: the manifest has no [workspace] and no [package] table",
                )
                .in_file(loader.shown(absolute)));
            }
        };
        let config = loader.config(owner, table_name, &root_text, flags, defaults)?;
        let empty = toml_edit::Table::new();
        let workspace: &dyn TableLike = workspace.unwrap_or(&empty);
        let ws_deps = loader.ws_deps(workspace, &root_text)?;
        let exclude: Vec<PathBuf> =
            loader.strings(workspace, "exclude", &root_text)?.iter().map(|(s, _)| normalize(&root.join(s))).collect();
        let member_patterns = loader.strings(workspace, "members", &root_text)?;
        let explicit: Vec<PathBuf> = member_patterns.iter().map(|(s, _)| normalize(&root.join(s))).collect();
        let is_excluded = |dir: &Path| excluded(dir, &exclude, &explicit);
        let single_package = doc.as_table().get("workspace").is_none();
        // Member directories in discovery order, the way Cargo finds them.
        let mut dirs: Vec<PathBuf> = Vec::new();
        // Keyed by the path's bytes: every path here is normalized, so byte equality is path equality, and hashing
        // bytes is far cheaper than hashing a `Path` component by component.
        let mut seen: FastSet<OsString> = FastSet::default();
        if doc.as_table().contains_key("package") {
            seen.insert(root.as_os_str().to_owned());
            dirs.push(root.clone());
        }
        // Directories a glob matched, in order, with the pattern and its line: whether each has a Cargo.toml is
        // seen when the members are read, on all cores, and reported before any manifest's own error, as if seen
        // here (the first pattern with a problem is the one reported).
        let mut globbed: FastMap<OsString, (&str, usize)> = FastMap::default();
        let glob_missing = |dir: &Path, pattern: &str, line: usize| {
            let message = format!("member pattern `{pattern}` matches `{}`, which has no Cargo.toml", loader.rel(dir));
            loader.error("manifest", absolute, Some(line), message)
        };
        for (pattern, line) in &member_patterns {
            if pattern.contains(['*', '?', '[']) {
                let mut found = Vec::new();
                expand_glob(&root, &pattern.split('/').collect::<Vec<_>>(), &mut found);
                found.sort_unstable_by(|a, b| path_order(a, b));
                for dir in found {
                    let dir = normalize_owned(dir);
                    if is_excluded(&dir) || !seen.insert(dir.as_os_str().to_owned()) {
                        continue;
                    }
                    // Whether it has a Cargo.toml is seen when the members are read, on all cores.
                    globbed.insert(dir.as_os_str().to_owned(), (pattern.as_str(), *line));
                    dirs.push(dir);
                }
            } else {
                let dir = normalize(&root.join(pattern));
                if !dir.join("Cargo.toml").is_file() {
                    // An earlier pattern's directory without a manifest comes first.
                    if let Some(missing) = dirs.iter().find_map(|dir| {
                        let (pattern, line) = globbed.get(dir.as_os_str())?;
                        (!dir.join("Cargo.toml").is_file()).then(|| glob_missing(dir, pattern, *line))
                    }) {
                        return Err(missing);
                    }
                    let message = format!("member `{pattern}` has no Cargo.toml");
                    return Err(loader.error("manifest", absolute, Some(*line), message));
                }
                if seen.insert(dir.as_os_str().to_owned()) {
                    dirs.push(dir);
                }
            }
        }

        // `Cargo.lock` is used only if a dependency is not a path one. One that locks registry or git packages
        // (then almost always needed) is parsed beside the members' manifests: a large one takes as long as all of
        // them. Another is parsed once it is known to be needed.
        let lock_path = root.join("Cargo.lock");
        let mut lock_text = match crate::read::read_text(&lock_path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            read => Some(read),
        };
        let mut lock_job = None;
        if lock_text.as_ref().is_some_and(|read| read.as_ref().is_ok_and(|text| text.contains("\nsource = ")))
            && let Some(Ok(text)) = lock_text.take()
        {
            let (loader, path) = (loader.clone(), lock_path.clone());
            lock_job = Some(std::thread::spawn(move || loader.lock(&path, &text)));
        }

        // Parse the members in parallel; path dependencies inside the root become members too (as in Cargo).
        let mut members: Vec<Package> = Vec::new();
        let mut pending = dirs;
        while !pending.is_empty() {
            // `Err` for a globbed directory without a Cargo.toml file (`is_file`: a FIFO or a device is not read).
            let parsed = par_map(&pending, |dir| match globbed.get(dir.as_os_str()) {
                Some((pattern, line)) if !dir.join("Cargo.toml").is_file() => Err(glob_missing(dir, pattern, *line)),
                _ => Ok(loader.package(dir, &root_text, Some(&ws_deps), dir == &root)),
            });
            let parsed: Vec<Result<Package, Diagnostic>> = parsed.into_iter().collect::<Result<_, _>>()?;
            pending = Vec::new();
            for package in parsed {
                let package = package?;
                for decl in &package.decls {
                    if let Some(dir) = &decl.path
                        && !single_package
                        && within(dir, &root)
                        && !is_excluded(dir)
                        && !seen.contains(dir.as_os_str())
                    {
                        seen.insert(dir.as_os_str().to_owned());
                        pending.push(dir.clone());
                    }
                }
                members.push(package);
            }
        }
        members.sort_by(|a, b| path_order(&a.dir, &b.dir));
        // Cargo refuses two members of one name; every lookup by name here would take the first.
        let mut by_name: FastMap<&str, &Package> = FastMap::default();
        for member in &members {
            if let Some(first) = by_name.insert(&member.name, member) {
                return Err(Diagnostic::error(
                    "manifest",
                    format!(
                        "two packages named `{}` in this workspace: {} and {}",
                        member.name, first.manifest_rel, member.manifest_rel
                    ),
                )
                .in_file(loader.shown(absolute)));
            }
        }

        // `[patch.<source>]` and `[replace]` of the root: a dependency on a patched package is built from the path.
        let patches = loader.patches(doc.as_table());
        let patch = |package: &mut Package| {
            for decl in package.decls.iter_mut().filter(|d| d.path.is_none()) {
                decl.patch = patches.get(&decl.package).cloned();
            }
        };
        members.iter_mut().for_each(patch);

        // Non-member path crates (patches included): read their manifests too, to follow the graph through them.
        let mut others: Vec<Package> = Vec::new();
        let mut queue: Vec<PathBuf> = members.iter().flat_map(|m| m.decls.iter().filter_map(Decl::dir)).collect();
        queue.extend(patches.values().cloned());
        while let Some(dir) = queue.pop() {
            if seen.contains(dir.as_os_str()) {
                continue;
            }
            seen.insert(dir.as_os_str().to_owned());
            let mut package = loader.package(&dir, &root_text, None, false)?;
            patch(&mut package);
            queue.extend(package.decls.iter().filter_map(Decl::dir));
            others.push(package);
        }
        others.sort_by(|a, b| path_order(&a.dir, &b.dir));

        let needs_lock = members.iter().chain(&others).any(|p| p.decls.iter().any(|d| d.dir().is_none()));
        let lock = match (lock_job, lock_text) {
            (Some(job), _) if needs_lock => job.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            (None, Some(Ok(text))) if needs_lock => loader.lock(&lock_path, &text)?,
            (None, Some(Err(err))) if needs_lock => {
                return Err(loader.error("io", &lock_path, None, format!("cannot read: {err}")));
            }
            _ => Lock::default(),
        };

        if let Some((start, start_shown)) = &located.start
            && let Some(dir) = start.parent()
            && !members.iter().any(|member| member.dir == dir)
        {
            // Cargo refuses this too ("current package believes it's in a workspace when it's not").
            return Err(Diagnostic::error(
                "manifest",
                format!(
                    "the package is inside the workspace of `{}`, which does not list it: add it to \
                     `workspace.members` or `workspace.exclude` there, or give the package an empty `[workspace]` \
                     table",
                    absolute.display()
                ),
            )
            .in_file(start_shown.clone()));
        }
        Ok(Workspace { root, root_shown, root_text, config, members, others, lock })
    }
}

/// Reads and parses files, naming them in errors relative to the root as the user wrote it.
#[derive(Clone)]
struct Loader {
    root: PathBuf,
    root_shown: PathBuf,
}

impl Loader {
    /// The path to show for an absolute path: under the root as the user wrote it when inside the root.
    fn shown(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(rel) => self.root_shown.join(rel).display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }

    fn rel(&self, path: &Path) -> String {
        rel_path(&self.root, path)
    }

    /// An error about `path`, at `line` when it is known.
    fn error(&self, code: &'static str, path: &Path, line: Option<usize>, message: String) -> Diagnostic {
        let diagnostic = Diagnostic::error(code, message);
        match line {
            Some(line) => diagnostic.at(self.shown(path), line, None),
            None => diagnostic.in_file(self.shown(path)),
        }
    }

    fn read(&self, path: &Path) -> Result<String, Diagnostic> {
        crate::read::read_text(path).map_err(|err| {
            let problem = if err.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_owned()
            } else {
                format!("cannot read: {err}")
            };
            self.error("io", path, None, problem)
        })
    }

    fn parse<'t>(&self, path: &Path, text: &'t str) -> Result<Document<&'t str>, Diagnostic> {
        Document::parse(text).map_err(|err| toml_error(self.shown(path), text, err.message(), err.span()))
    }

    /// The manifest's tables for reading only, by the `toml` crate's parser, which borrows the text and keeps no
    /// formatting: about 0.6x the time of `toml_edit`'s document for the members' manifests and `Cargo.lock`, read on
    /// every check. The root manifest, whose configuration errors point at keys and whose text `--fix` edits, is
    /// read with [`Loader::parse`]. A manifest that does not parse gets `toml_edit`'s error, as every manifest does
    /// (the same parser underneath).
    fn parse_fast<'t>(&self, path: &Path, text: &'t str) -> Result<DeTable<'t>, Diagnostic> {
        match DeTable::parse(text) {
            Ok(table) if numbers_fit(table.get_ref()) => Ok(table.into_inner()),
            // `DeTable` keeps numbers as text; toml_edit (and Cargo) refuse one that overflows.
            Ok(table) => self.parse(path, text).map(|_| table.into_inner()),
            Err(err) => Err(self
                .parse(path, text)
                .err()
                .unwrap_or_else(|| toml_error(self.shown(path), text, err.message(), err.span()))),
        }
    }

    /// A configuration error at `key` of the root manifest.
    fn error_at(&self, text: &str, key: &Key, problem: String) -> Diagnostic {
        self.manifest_error_at("config", text, key, problem)
    }

    /// An error with `code` at `key` of the root manifest.
    fn manifest_error_at(&self, code: &'static str, text: &str, key: &Key, problem: String) -> Diagnostic {
        let line = key.span().map_or(1, |span| line_col(text, span.start).0);
        self.error(code, &self.root.join("Cargo.toml"), Some(line), problem)
    }

    /// The configuration table (`[workspace.metadata.migrate-check]`, or `[package.metadata.migrate-check]` of a
    /// package that is its own workspace) in `owner`: unknown keys and allow entries without a reason are errors.
    fn config(
        &self,
        owner: &dyn TableLike,
        table_name: &'static str,
        text: &str,
        flags: &Names,
        defaults: &Names,
    ) -> Result<Config, Diagnostic> {
        let mut set = Names::default();
        let mut config = Config {
            table: table_name,
            deprecated: String::new(),
            replacement: String::new(),
            allow: Vec::new(),
            replacement_version: None,
            replacement_path: None,
        };
        let manifest = self.root.join("Cargo.toml");
        if let Some(item) = owner.get("metadata").and_then(|m| m.get("migrate-check")) {
            let Some(table) = item.as_table_like() else {
                let line = item.span().map_or(1, |span| line_col(text, span.start).0);
                return Err(self.error("config", &manifest, Some(line), format!("{table_name} must be a table")));
            };
            for (name, value) in table.iter() {
                let key = table.key(name).expect("the key was just listed");
                match name {
                    "deprecated" | "replacement" => {
                        let Some(package) = value.as_str().filter(|s| is_package_name(s)) else {
                            let problem = format!("`{name}` in {table_name} must be a package name");
                            return Err(self.error_at(text, key, problem));
                        };
                        if name == "deprecated" {
                            set.deprecated = Some(package.to_owned());
                        } else {
                            set.replacement = Some(package.to_owned());
                        }
                    }
                    "allow" => config.allow = self.allow(value, key, text)?,
                    "replacement-version" | "replacement-path" => {
                        let Some(setting) = value.as_str().filter(|s| !s.is_empty()) else {
                            let problem = format!("`{name}` in {table_name} must be a non-empty string");
                            return Err(self.error_at(text, key, problem));
                        };
                        if name == "replacement-version" {
                            config.replacement_version = Some(setting.to_owned());
                        } else {
                            config.replacement_path = Some(setting.to_owned());
                        }
                    }
                    _ => {
                        let problem = format!(
                            "unknown key `{name}` in {table_name} (expected `deprecated`, `replacement`, `allow`, \
                             `replacement-version` or `replacement-path`)"
                        );
                        return Err(self.error_at(text, key, problem));
                    }
                }
            }
        }
        let pick = |flag: &Option<String>, set: Option<String>, default: &Option<String>| {
            flag.clone().or(set).or_else(|| default.clone())
        };
        let deprecated = pick(&flags.deprecated, set.deprecated, &defaults.deprecated);
        let replacement = pick(&flags.replacement, set.replacement, &defaults.replacement);
        let (deprecated, replacement) = match (deprecated, replacement) {
            (Some(deprecated), Some(replacement)) => (deprecated, replacement),
            (deprecated, replacement) => {
                let missing: Vec<&str> = [("deprecated", deprecated.is_none()), ("replacement", replacement.is_none())]
                    .into_iter()
                    .filter_map(|(name, missing)| missing.then_some(name))
                    .collect();
                let (keys, flags) = match missing.as_slice() {
                    [one] => (format!("`{one}`"), format!("`--{one}`")),
                    _ => ("`deprecated` and `replacement`".to_owned(), "`--deprecated` and `--replacement`".to_owned()),
                };
                let problem = format!(
                    "no {} package to check for: set {keys} in {table_name}, or pass {flags}",
                    missing.join(" or ")
                );
                return Err(self.error("config", &manifest, None, problem));
            }
        };
        if deprecated == replacement {
            let problem = format!("the deprecated crate and its replacement are the same package, `{deprecated}`");
            return Err(self.error("config", &manifest, None, problem));
        }
        config.deprecated = deprecated;
        config.replacement = replacement;
        Ok(config)
    }

    fn allow(&self, value: &Item, allow_key: &Key, text: &str) -> Result<Vec<AllowEntry>, Diagnostic> {
        let entries: Vec<&dyn TableLike> = if let Some(array) = value.as_array() {
            let mut entries = Vec::new();
            for entry in array.iter() {
                let Some(table) = entry.as_inline_table() else {
                    let line = entry.span().map_or(1, |span| line_col(text, span.start).0);
                    let problem = "each `allow` entry must be a table { package = \"..\", reason = \"..\" }";
                    return Err(self.error("config", &self.root.join("Cargo.toml"), Some(line), problem.to_owned()));
                };
                entries.push(table as &dyn TableLike);
            }
            entries
        } else if let Some(array) = value.as_array_of_tables() {
            array.iter().map(|t| t as &dyn TableLike).collect()
        } else {
            return Err(self.error_at(text, allow_key, "`allow` must be an array of tables".to_owned()));
        };
        let mut allow: Vec<AllowEntry> = Vec::new();
        for table in entries {
            let mut package = None;
            let mut reason = None;
            for (name, item) in table.iter() {
                let key = table.key(name).expect("the key was just listed");
                match name {
                    "package" => package = Some((item.as_str(), key)),
                    "reason" => reason = Some((item.as_str(), key)),
                    _ => {
                        return Err(self.error_at(
                            text,
                            key,
                            format!("unknown key `{name}` in an `allow` entry (expected `package` and `reason`)"),
                        ));
                    }
                }
            }
            let Some((Some(package), package_key)) = package else {
                let at = package.map(|(_, key)| key).or(reason.map(|(_, key)| key)).unwrap_or(allow_key);
                return Err(self.error_at(text, at, "an `allow` entry needs `package = \"<name>\"`".to_owned()));
            };
            let reason = match reason {
                Some((Some(reason), _)) if !reason.trim().is_empty() => reason.to_owned(),
                _ => {
                    return Err(self.error_at(
                        text,
                        package_key,
                        format!("the `allow` entry for `{package}` has no `reason` (a non-empty string is required)"),
                    ));
                }
            };
            if allow.iter().any(|entry| entry.package == package) {
                return Err(self.error_at(text, package_key, format!("`{package}` is allowed twice")));
            }
            let (line, column) = package_key.span().map_or((1, 1), |span| line_col(text, span.start));
            allow.push(AllowEntry { package: package.to_owned(), reason, line, column });
        }
        Ok(allow)
    }

    /// An array of strings such as `members` or `exclude`, with the line of each entry.
    fn strings(&self, table: &dyn TableLike, name: &str, text: &str) -> Result<Vec<(String, usize)>, Diagnostic> {
        let Some(item) = table.get(name) else { return Ok(Vec::new()) };
        let bad = || {
            let key = table.key(name).expect("the key exists");
            self.manifest_error_at("manifest", text, key, format!("`workspace.{name}` must be an array of strings"))
        };
        let array = item.as_array().ok_or_else(bad)?;
        let mut strings = Vec::new();
        for value in array.iter() {
            let line = value.span().map_or(1, |span| line_col(text, span.start).0);
            strings.push((value.as_str().ok_or_else(bad)?.to_owned(), line));
        }
        Ok(strings)
    }

    fn ws_deps(&self, workspace: &dyn TableLike, text: &str) -> Result<HashMap<String, WsDep>, Diagnostic> {
        let mut deps = HashMap::new();
        let Some(table) = workspace.get("dependencies").and_then(Item::as_table_like) else { return Ok(deps) };
        for (key, item) in table.iter() {
            let (package, path) = if item.as_str().is_some() {
                (key.to_owned(), None)
            } else if let Some(dep) = item.as_table_like() {
                let package = dep.get("package").and_then(Item::as_str).unwrap_or(key).to_owned();
                (package, dep.get("path").and_then(Item::as_str).map(|p| normalize(&self.root.join(p))))
            } else {
                let key = table.key(key).expect("the key was just listed");
                let problem = "a dependency must be a version string or a table".to_owned();
                return Err(self.manifest_error_at("manifest", text, key, problem));
            };
            deps.insert(key.to_owned(), WsDep { package, path });
        }
        Ok(deps)
    }

    /// Reads the package in `dir`. `ws_deps` resolves `workspace = true` for members; `None` for non-members,
    /// whose inherited entries are taken at their key.
    fn package(
        &self,
        dir: &Path,
        root_text: &str,
        ws_deps: Option<&HashMap<String, WsDep>>,
        is_root: bool,
    ) -> Result<Package, Diagnostic> {
        let manifest = dir.join("Cargo.toml");
        let text = if is_root { root_text.to_owned() } else { self.read(&manifest)? };
        let package = {
            let root = self.parse_fast(&manifest, &text)?;
            let (value, string) = (value_at, string_at);
            let package = value(Some(&root), "package").and_then(DeValue::as_table);
            let lib = value(Some(&root), "lib").and_then(DeValue::as_table);
            let Some(name) = string(package, "name") else {
                return Err(Diagnostic::error("manifest", "no `[package] name`: not a package manifest")
                    .in_file(self.shown(&manifest)));
            };
            let mut explicit_roots = Vec::new();
            if let Some(path) = string(lib, "path") {
                explicit_roots.push(normalize(&dir.join(path)));
            }
            for section in ["bin", "test", "example", "bench"] {
                let targets = value(Some(&root), section).and_then(DeValue::as_array).into_iter().flatten();
                for target in targets.filter_map(|target| target.get_ref().as_table()) {
                    if let Some(path) = string(Some(target), "path") {
                        explicit_roots.push(normalize(&dir.join(path)));
                    }
                }
            }
            let build = value(package, "build");
            if let Some(path) = build.and_then(DeValue::as_str) {
                explicit_roots.push(normalize(&dir.join(path)));
            }
            let lib_root = match string(lib, "path") {
                Some(path) => normalize(&dir.join(path)),
                None => dir.join("src/lib.rs"),
            };

            let mut decls = Vec::new();
            // The dependencies' keys come in the order they are written: their lines are counted as they come.
            let mut lines = LineCursor::new(&text);
            let mut collect = |table: &DeTable<'_>, target: Option<&str>| -> Result<(), Diagnostic> {
                let kinds = [
                    ("dependencies", DepKind::Normal),
                    ("dev-dependencies", DepKind::Dev),
                    ("dev_dependencies", DepKind::Dev),
                    ("build-dependencies", DepKind::Build),
                    ("build_dependencies", DepKind::Build),
                ];
                for (section, kind) in kinds {
                    if let Some(deps) = value(Some(table), section).and_then(DeValue::as_table) {
                        self.decls(deps, kind, target, dir, &mut lines, &manifest, ws_deps, &mut decls)?;
                    }
                }
                Ok(())
            };
            collect(&root, None)?;
            if let Some(targets) = value(Some(&root), "target").and_then(DeValue::as_table) {
                for (target, item) in targets {
                    if let Some(table) = item.get_ref().as_table() {
                        collect(table, Some(target.get_ref()))?;
                    }
                }
            }
            Package {
                name: name.to_owned(),
                version: string(package, "version").map(str::to_owned),
                dir: dir.to_owned(),
                manifest_rel: self.rel(&manifest),
                text: String::new(),
                lib_name: string(lib, "name").map(str::to_owned),
                explicit_roots,
                build_disabled: build.and_then(DeValue::as_bool) == Some(false),
                lib_root,
                doctest: value(lib, "doctest").and_then(DeValue::as_bool) != Some(false),
                decls,
            }
        };
        Ok(Package { text, ..package })
    }

    #[allow(clippy::too_many_arguments)]
    fn decls(
        &self,
        deps: &DeTable<'_>,
        kind: DepKind,
        target: Option<&str>,
        dir: &Path,
        lines: &mut LineCursor<'_>,
        manifest: &Path,
        ws_deps: Option<&HashMap<String, WsDep>>,
        out: &mut Vec<Decl>,
    ) -> Result<(), Diagnostic> {
        for (key, item) in deps {
            let (line, column) = lines.line_col(key.span().start);
            let key = key.get_ref().as_ref();
            let item = item.get_ref();
            let (package, path, optional) = if item.as_str().is_some() {
                (key.to_owned(), None, false)
            } else if let Some(dep) = item.as_table() {
                let optional = value_at(Some(dep), "optional").and_then(DeValue::as_bool).unwrap_or(false);
                if value_at(Some(dep), "workspace").and_then(DeValue::as_bool) == Some(true) {
                    match ws_deps.map(|ws| ws.get(key)) {
                        Some(Some(ws)) => (ws.package.clone(), ws.path.clone(), optional),
                        Some(None) => {
                            let problem = format!(
                                "`{key}` is inherited with `workspace = true`, but [workspace.dependencies] has no \
                                 `{key}`"
                            );
                            return Err(Diagnostic::error("manifest", problem).at(self.shown(manifest), line, None));
                        }
                        None => (key.to_owned(), None, optional),
                    }
                } else {
                    let package = string_at(Some(dep), "package").unwrap_or(key).to_owned();
                    let path = string_at(Some(dep), "path").map(|p| normalize(&dir.join(p)));
                    (package, path, optional)
                }
            } else {
                let problem = format!("dependency `{key}` must be a version string or a table");
                return Err(Diagnostic::error("manifest", problem).at(self.shown(manifest), line, None));
            };
            out.push(Decl {
                key: key.to_owned(),
                package,
                patch: None,
                kind,
                target: target.map(str::to_owned),
                optional,
                path,
                line,
                column,
            });
        }
        Ok(())
    }

    /// The root's `[patch.<source>]` and `[replace]` entries that put a path in place of a package: package name ->
    /// directory. Git and registry patches change no edge of the graph: Cargo.lock has them.
    fn patches(&self, root: &toml_edit::Table) -> HashMap<String, PathBuf> {
        let mut patches = HashMap::new();
        let mut add = |name: &str, item: &Item| {
            if let Some(path) = item.as_table_like().and_then(|entry| entry.get("path")).and_then(Item::as_str) {
                patches.insert(name.to_owned(), normalize(&self.root.join(path)));
            }
        };
        if let Some(sources) = root.get("patch").and_then(Item::as_table_like) {
            for (_, source) in sources.iter() {
                for (name, item) in source.as_table_like().into_iter().flat_map(|t| t.iter()) {
                    add(name, item);
                }
            }
        }
        if let Some(replace) = root.get("replace").and_then(Item::as_table_like) {
            // Keys are package ids: `name:version` or `registry/name:version`.
            for (id, item) in replace.iter() {
                let name = id.split(':').next().unwrap_or(id).rsplit('/').next().unwrap_or(id);
                add(name, item);
            }
        }
        patches
    }

    /// Every package of `Cargo.lock`, with its dependencies as the lockfile writes them.
    fn lock(&self, path: &Path, text: &str) -> Result<Lock, Diagnostic> {
        let doc = self.parse_fast(path, text)?;
        let mut lock = Lock::default();
        let packages = doc.get("package").and_then(|p| p.get_ref().as_array()).into_iter().flatten();
        for package in packages.filter_map(|p| p.get_ref().as_table()) {
            let string = |key: &str| package.get(key).and_then(|v| v.get_ref().as_str());
            let Some(name) = string("name") else { continue };
            let deps = package.get("dependencies").and_then(|d| d.get_ref().as_array()).into_iter().flatten();
            lock.packages.push(LockPackage {
                name: name.to_owned(),
                version: string("version").unwrap_or_default().to_owned(),
                source: string("source").map(str::to_owned),
                deps: deps.filter_map(|d| d.get_ref().as_str().map(str::to_owned)).collect(),
            });
        }
        for (k, package) in lock.packages.iter().enumerate() {
            lock.named.entry(package.name.clone()).or_default().push(k);
        }
        Ok(lock)
    }
}

/// `TOML does not parse: ..` at the parser's error in `text`, the manifest shown as `shown`.
fn toml_error(shown: String, text: &str, message: &str, span: Option<std::ops::Range<usize>>) -> Diagnostic {
    let (line, column) = span.map_or((1, 1), |span| line_col(text, span.start));
    let message = message.trim_end().replace('\n', "; ");
    Diagnostic::error("manifest", format!("TOML does not parse: {message}")).at(shown, line, Some(column))
}

/// Whether every integer of `table` fits in an `i64` and every float in an `f64` (`inf` only where written), as
/// toml_edit and Cargo require: `DeTable` keeps numbers as their text. A stack, not recursion: tables may nest
/// deeper than a thread's stack would take.
fn numbers_fit(table: &DeTable<'_>) -> bool {
    let mut values: Vec<&DeValue<'_>> = table.values().map(|value| value.get_ref()).collect();
    while let Some(value) = values.pop() {
        let fits = match value {
            DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix()).is_ok(),
            DeValue::Float(f) => f.as_str().parse::<f64>().is_ok_and(|x| x.is_finite() || f.as_str().contains("inf")),
            DeValue::Array(items) => {
                values.extend(items.iter().map(|item| item.get_ref()));
                true
            }
            DeValue::Table(table) => {
                values.extend(table.values().map(|value| value.get_ref()));
                true
            }
            DeValue::String(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => true,
        };
        if !fits {
            return false;
        }
    }
    true
}

/// The value at `key` of `table`, when both are there.
fn value_at<'a, 'i>(table: Option<&'a DeTable<'i>>, key: &str) -> Option<&'a DeValue<'i>> {
    table?.get(key).map(|value| value.get_ref())
}

/// The string at `key` of `table`, when both are there and it is one.
fn string_at<'a>(table: Option<&'a DeTable<'_>>, key: &str) -> Option<&'a str> {
    value_at(table, key)?.as_str()
}

/// `Cargo.lock`, version for version: where a package is locked in several versions, each keeps its own edges.
#[derive(Debug, Default)]
pub(crate) struct Lock {
    /// Every `[[package]]`, in file order.
    pub(crate) packages: Vec<LockPackage>,
    /// The indices in `packages` of each name (a lockfile has hundreds of packages, each naming several).
    named: FastMap<String, Vec<usize>>,
}

/// One `[[package]]` of `Cargo.lock`.
#[derive(Debug)]
pub(crate) struct LockPackage {
    pub(crate) name: String,
    pub(crate) version: String,
    /// `registry+..` or `git+..`; `None` for a path package (a member or a path crate).
    pub(crate) source: Option<String>,
    /// As written: `name`, `name version` or `name version (source)`.
    pub(crate) deps: Vec<String>,
}

impl Lock {
    /// The packages a dependency of the lockfile names: `name` (the only package of that name), `name version`, or
    /// `name version (source)`.
    pub(crate) fn resolve(&self, dep: &str) -> impl Iterator<Item = usize> + '_ {
        let mut parts = dep.splitn(3, ' ');
        let name = parts.next().unwrap_or_default().to_owned();
        let version = parts.next().map(str::to_owned);
        let source = parts.next().map(|s| s.trim_start_matches('(').trim_end_matches(')').to_owned());
        self.named(&name).iter().copied().filter(move |&i| {
            let p = &self.packages[i];
            version.as_ref().is_none_or(|v| *v == p.version)
                && source.as_ref().is_none_or(|s| p.source.as_ref() == Some(s))
        })
    }

    /// The indices of the packages named `name`, in file order.
    pub(crate) fn named(&self, name: &str) -> &[usize] {
        self.named.get(name).map_or(&[], Vec::as_slice)
    }

    /// The entry of the path package `name` (locked without a source).
    pub(crate) fn path_package(&self, name: &str) -> Option<&LockPackage> {
        self.named(name).iter().map(|&i| &self.packages[i]).find(|p| p.source.is_none())
    }

    /// The name of the package a dependency string names.
    pub(crate) fn dep_name(dep: &str) -> &str {
        dep.split(' ').next().unwrap_or(dep)
    }
}

/// The order of `Path::cmp` (component by component) for normalized paths, cheaper to compute: the first byte that
/// differs decides, with the separator below every other byte.
fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    let (a, b) = (a.as_os_str().as_encoded_bytes(), b.as_os_str().as_encoded_bytes());
    let common = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let key = |byte: Option<&u8>| byte.map(|&byte| if byte == b'/' { 0 } else { u16::from(byte) + 1 });
    key(a.get(common)).cmp(&key(b.get(common)))
}

/// Expands a `members` glob (`*`, `?`, `[..]`, `**`) below `base`, one path component at a time, into directories
/// only: a listed directory's entries say which are directories, so only a literal last component needs a `stat`.
fn expand_glob(base: &Path, parts: &[&str], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(base.to_owned());
        return;
    };
    if rest.is_empty() && !first.contains(['*', '?', '[']) && *first != "**" {
        let dir = base.join(first);
        if dir.is_dir() {
            out.push(dir);
        }
        return;
    }
    if *first == "**" {
        // `**` matches `base` itself, when it is a directory.
        if !base.is_dir() {
            return;
        }
        expand_glob(base, rest, out);
        for entry in read_dirs(base) {
            expand_glob(&entry, parts, out);
        }
    } else if first.contains(['*', '?', '[']) {
        for entry in read_dirs(base) {
            let name = entry.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
            if !glob_match(first.as_bytes(), name.as_bytes()) {
                continue;
            }
            if rest.is_empty() {
                out.push(entry);
            } else {
                expand_glob(&entry, rest, out);
            }
        }
    } else {
        expand_glob(&base.join(first), rest, out);
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(Result::ok).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
}

/// Matches one path component against a glob component.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return name.first() == Some(&b'[') && glob_match(rest, &name[1..]);
            };
            let (class, after) = (&rest[..close], &rest[close + 1..]);
            let Some((&c, name_rest)) = name.split_first() else { return false };
            let (negated, class) = match class.split_first() {
                Some((b'!', class)) => (true, class),
                _ => (false, class),
            };
            let mut matched = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    matched |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    matched |= class[i] == c;
                    i += 1;
                }
            }
            matched != negated && glob_match(after, name_rest)
        }
        Some((&literal, rest)) => name.first() == Some(&literal) && glob_match(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_order_sorts_like_path_cmp() {
        let paths: Vec<PathBuf> =
            ["/w/a-b", "/w/a/b", "/w/a", "/w/a/b/c", "/w/a.b", "/w/ab", "/w/a/\u{e9}", "/w/a/z", "/w/long-name-0001/x"]
                .map(PathBuf::from)
                .into();
        for a in &paths {
            for b in &paths {
                assert_eq!(path_order(a, b), a.cmp(b), "{} vs {}", a.display(), b.display());
            }
        }
        let mut sorted = paths.clone();
        sorted.reverse();
        sorted.sort_unstable_by(|a, b| path_order(a, b));
        assert!(sorted.is_sorted(), "{sorted:?}");
    }

    #[test]
    fn globs_match_one_component() {
        assert!(glob_match(b"*", b"app"));
        assert!(glob_match(b"a*p", b"app"));
        assert!(glob_match(b"?pp", b"app"));
        assert!(glob_match(b"[a-c]pp", b"bpp"));
        assert!(!glob_match(b"[!a-c]pp", b"bpp"));
        assert!(!glob_match(b"b*", b"app"));
    }

    /// Every form a member manifest declares targets and dependencies in, read by the fast parser: keys at their line
    /// and column (found here by searching the text), packages through `package` and `workspace = true`, kinds,
    /// targets, optional, paths; `[[bin]]` and an inline array of target tables alike (Cargo takes both).
    #[test]
    fn a_member_manifest_in_every_form() {
        let dir = std::env::temp_dir().join(format!("migrate-check-manifest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("app")).expect("a temporary directory");
        let text = r#"test = [{ name = "t", path = "tests/t.rs" }]

[package]
name = "app"
version = "0.3.0"
build = false

[lib]
name = "app_lib"
path = "src/the_lib.rs"
doctest = false

[[bin]]
name = "one"
path = "src/bin/one.rs"

[dependencies]
plain = "1"
old-core = { path = "../old", optional = true }
renamed = { package = "real-name", version = "2" }
dotted.workspace = true
inherited = { workspace = true, optional = true }

[dependencies.header]
path = "../header"

[dev-dependencies]
dev_one = "1"

[build_dependencies]
b = "1"

[target.'cfg(unix)'.dependencies]
unixy = "1"

[target.x86_64-unknown-linux-gnu.dev-dependencies.deep]
version = "1"
"#;
        std::fs::write(dir.join("app/Cargo.toml"), text).expect("write the manifest");
        let loader = Loader { root: dir.clone(), root_shown: PathBuf::from("ws") };
        let ws_deps = HashMap::from([
            ("dotted".to_owned(), WsDep { package: "dotted-real".to_owned(), path: None }),
            ("inherited".to_owned(), WsDep { package: "inh".to_owned(), path: Some(dir.join("inh")) }),
        ]);
        let app = dir.join("app");
        let package = loader.package(&app, "", Some(&ws_deps), false).expect("the manifest is read");
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!((package.name.as_str(), package.version.as_deref()), ("app", Some("0.3.0")));
        assert_eq!(package.lib_name.as_deref(), Some("app_lib"));
        assert!(package.build_disabled && !package.doctest);
        assert_eq!(package.lib_root, app.join("src/the_lib.rs"));
        let mut roots = package.explicit_roots.clone();
        roots.sort();
        assert_eq!(roots, ["src/bin/one.rs", "src/the_lib.rs", "tests/t.rs"].map(|p| app.join(p)));
        assert_eq!(package.text, text);

        // Where a key is written: its line, and its column found by searching that line.
        let at = |line_start: &str, key: &str| {
            let (k, line) = text.lines().enumerate().find(|(_, l)| l.starts_with(line_start)).expect("the line");
            (k + 1, line.find(key).expect("the key") + 1)
        };
        use DepKind::{Build, Dev, Normal};
        let expected = [
            ("plain", "plain", Normal, None, false, None, at("plain", "plain")),
            ("old-core", "old-core", Normal, None, true, Some(dir.join("old")), at("old-core", "old-core")),
            ("renamed", "real-name", Normal, None, false, None, at("renamed", "renamed")),
            ("dotted", "dotted-real", Normal, None, false, None, at("dotted", "dotted")),
            ("inherited", "inh", Normal, None, true, Some(dir.join("inh")), at("inherited", "inherited")),
            ("header", "header", Normal, None, false, Some(dir.join("header")), at("[dependencies.header]", "header")),
            ("dev_one", "dev_one", Dev, None, false, None, at("dev_one", "dev_one")),
            ("b", "b", Build, None, false, None, at("b =", "b")),
            ("unixy", "unixy", Normal, Some("cfg(unix)"), false, None, at("unixy", "unixy")),
            ("deep", "deep", Dev, Some("x86_64-unknown-linux-gnu"), false, None, at("[target.x86_64", "deep")),
        ];
        let found: Vec<_> = package
            .decls
            .iter()
            .map(|d| {
                let target = d.target.as_deref();
                (d.key.as_str(), d.package.as_str(), d.kind, target, d.optional, d.path.clone(), (d.line, d.column))
            })
            .collect();
        // In the order they are written, table by table (a transitive violation's place, and which of two errors is
        // reported, follow it).
        assert_eq!(found, expected.to_vec());
    }

    /// `Cargo.lock`'s packages, as `[[package]]` tables or as an inline array (Cargo reads both; the inline form
    /// used to be skipped, so a member reaching the deprecated crate only through it was reported ok).
    #[test]
    fn cargo_lock_packages_in_both_forms() {
        let loader = Loader { root: PathBuf::from("/w"), root_shown: PathBuf::from("w") };
        let tables = "version = 4\n\n[[package]]\nname = \"svc\"\nversion = \"1.0.0\"\nsource = \"registry+x\"\n\
                      dependencies = [\"old-core\"]\n\n[[package]]\nname = \"old-core\"\nversion = \"0.1.0\"\n";
        let inline = "version = 4\npackage = [\n  { name = \"svc\", version = \"1.0.0\", source = \"registry+x\", \
                      dependencies = [\"old-core\"] },\n  { name = \"old-core\", version = \"0.1.0\" },\n]\n";
        for text in [tables, inline] {
            let lock = loader.lock(Path::new("/w/Cargo.lock"), text).expect("the lockfile is read");
            let packages: Vec<_> = lock
                .packages
                .iter()
                .map(|p| (p.name.as_str(), p.version.as_str(), p.source.as_deref(), p.deps.clone()))
                .collect();
            assert_eq!(
                packages,
                [
                    ("svc", "1.0.0", Some("registry+x"), vec!["old-core".to_owned()]),
                    ("old-core", "0.1.0", None, Vec::new())
                ],
                "{text}"
            );
        }
    }

    /// What toml_edit (and Cargo) refuse, the fast parser refuses too: numbers that overflow (it keeps them as text)
    /// give toml_edit's error; and of two errors in one manifest, the first written is reported.
    #[test]
    fn member_manifests_are_refused_as_toml_edit_refuses_them() {
        let dir = std::env::temp_dir().join(format!("migrate-check-refused-{}", std::process::id()));
        let loader = Loader { root: dir.clone(), root_shown: PathBuf::from("ws") };
        let read = |body: &str| {
            std::fs::create_dir_all(dir.join("app")).expect("a temporary directory");
            let text = format!("[package]\nname = \"app\"\n\n[package.metadata]\n{body}\n");
            std::fs::write(dir.join("app/Cargo.toml"), text).expect("write the manifest");
            loader.package(&dir.join("app"), "", Some(&HashMap::new()), false).map(|_| ()).map_err(|d| d.to_string())
        };
        for (body, problem) in [
            ("big = 99999999999999999999", "integer number overflowed"),
            ("small = -9223372036854775809", "integer number overflowed"),
            ("hex = 0xFFFFFFFFFFFFFFFFFF", "integer number overflowed"),
            ("huge = 1e999", "floating-point number overflowed"),
            ("nested = [[1, { deep = 0o7777777777777777777777 }]]", "integer number overflowed"),
        ] {
            let err = read(body).expect_err(body);
            assert!(err.contains("TOML does not parse") && err.contains(problem), "{body}: {err}");
        }
        for body in ["max = 9223372036854775807", "min = -9223372036854775808", "inf = -inf", "nan = nan", "f = 1e308"]
        {
            assert_eq!(read(body), Ok(()), "{body}");
        }
        let err = read("\n[dependencies]\nzeta.workspace = true\nalpha.workspace = true").expect_err("two errors");
        assert!(err.contains("`zeta` is inherited"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
