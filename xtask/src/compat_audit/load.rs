//! Reading a compat crate (through `migrate_check::deprecations`, the one reader of deprecated crates) and the
//! core-registry it forwards to, with the paths core-registry exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use migrate_check::Diagnostic;
use migrate_check::deprecations::{CrateSource, SourceFile};

/// A compat crate, parsed, with what core-registry exports.
#[derive(Debug)]
pub(crate) struct CompatCrate {
    /// The crate's files, parsed.
    pub(crate) source: CrateSource,
    pub(crate) core: CoreExports,
}

/// What `core_registry::...` paths exist: the crate's public names and, per type or trait, its members.
#[derive(Debug, Default)]
pub(crate) struct CoreExports {
    pub(crate) names: BTreeSet<String>,
    /// Inherent and trait-impl methods and associated consts of a type, variants of an enum, items of a trait.
    pub(crate) members: BTreeMap<String, BTreeSet<String>>,
}

impl CoreExports {
    /// Whether `segments` (after `core_registry::`) name something core-registry exports.
    pub(crate) fn resolves(&self, segments: &[&str]) -> bool {
        match segments {
            [name] => self.names.contains(*name),
            [name, member] => {
                self.names.contains(*name) && self.members.get(*name).is_some_and(|members| members.contains(*member))
            }
            _ => false,
        }
    }

    /// The closest existing path to an unknown one, for a `help:` line.
    pub(crate) fn suggest(&self, segments: &[&str]) -> Option<String> {
        match segments {
            [name] => closest(name, self.names.iter()).map(|it| format!("core_registry::{it}")),
            [name, member] if self.names.contains(*name) => {
                closest(member, self.members.get(*name)?.iter()).map(|it| format!("core_registry::{name}::{it}"))
            }
            [name, ..] => closest(name, self.names.iter()).map(|it| format!("core_registry::{it}")),
            [] => None,
        }
    }
}

fn closest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    candidates
        .map(|candidate| (edit_distance(&wanted.to_lowercase(), &candidate.to_lowercase()), candidate))
        .filter(|(distance, candidate)| *distance <= candidate.len().max(wanted.len()) / 2)
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// Reads and parses the compat crate in `crate_dir` and the core-registry its manifest points at.
pub(crate) fn load(crate_dir: &Path) -> Result<CompatCrate, Diagnostic> {
    let root = crate::project_root();
    let crate_dir = &std::path::absolute(crate_dir).unwrap_or_else(|_| crate_dir.to_owned());
    let source = CrateSource::load(crate_dir, &root)?;
    let manifest = read_manifest(&crate_dir.join("Cargo.toml"))?;
    let core = core_exports(&CrateSource::load(&core_registry_dir(crate_dir, &manifest)?, &root)?);
    Ok(CompatCrate { source, core })
}

fn read_manifest(path: &Path) -> Result<toml_edit::DocumentMut, Diagnostic> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Diagnostic::error("io", format!("cannot read: {err}")).in_file(display(path)))?;
    text.parse().map_err(|err: toml_edit::TomlError| {
        Diagnostic::error("manifest", format!("TOML does not parse: {}", err.message().trim_end()))
            .in_file(display(path))
    })
}

/// Finds core-registry's directory from the compat crate's `core-registry` dependency: a `path`, or
/// `workspace = true` resolved through the enclosing workspace's `[workspace.dependencies]`.
fn core_registry_dir(crate_dir: &Path, manifest: &toml_edit::DocumentMut) -> Result<PathBuf, Diagnostic> {
    let missing = || {
        Diagnostic::error(
            "no-core-dependency",
            "no `core-registry` dependency with a path; the compat crate must depend on core-registry",
        )
        .in_file(display(&crate_dir.join("Cargo.toml")))
    };
    let dependency = manifest.get("dependencies").and_then(|deps| deps.get("core-registry")).ok_or_else(missing)?;
    if let Some(path) = dependency.get("path").and_then(|path| path.as_str()) {
        return Ok(crate_dir.join(path));
    }
    if dependency.get("workspace").and_then(|it| it.as_bool()) != Some(true) {
        return Err(missing());
    }
    for root in crate_dir.ancestors().skip(1) {
        let root_manifest = root.join("Cargo.toml");
        if !root_manifest.is_file() {
            continue;
        }
        let root_doc = read_manifest(&root_manifest)?;
        let Some(workspace) = root_doc.get("workspace") else { continue };
        let path = workspace
            .get("dependencies")
            .and_then(|deps| deps.get("core-registry"))
            .and_then(|dep| dep.get("path"))
            .and_then(|path| path.as_str())
            .ok_or_else(missing)?;
        return Ok(root.join(path));
    }
    Err(missing())
}

/// Collects core-registry's exports: the `pub` items and `pub use` names of its crate root (a glob re-export of a
/// module contributes that module's `pub` items), and the members of every type and trait in its module tree.
fn core_exports(core: &CrateSource) -> CoreExports {
    let mut exports = CoreExports::default();
    for item in &core.root().ast.items {
        if let syn::Item::Use(use_item) = item {
            if matches!(use_item.vis, syn::Visibility::Public(_)) {
                add_use_names(&use_item.tree, &[], &core.files, &core.module_files, &mut exports.names);
            }
        } else if let Some(name) = public_item_name(item) {
            exports.names.insert(name);
        }
    }
    for file in &core.files {
        collect_members(&file.ast.items, &mut exports.members);
    }
    exports
}

fn add_use_names(
    tree: &syn::UseTree,
    prefix: &[String],
    files: &[SourceFile],
    module_files: &BTreeMap<Vec<String>, usize>,
    names: &mut BTreeSet<String>,
) {
    match tree {
        syn::UseTree::Path(path) => {
            let mut prefix = prefix.to_vec();
            let segment = path.ident.to_string();
            if segment != "crate" && segment != "self" {
                prefix.push(segment);
            }
            add_use_names(&path.tree, &prefix, files, module_files, names);
        }
        syn::UseTree::Name(name) => {
            names.insert(name.ident.to_string());
        }
        syn::UseTree::Rename(rename) => {
            names.insert(rename.rename.to_string());
        }
        syn::UseTree::Glob(_) => {
            if let Some(index) = module_files.get(prefix) {
                names.extend(files[*index].ast.items.iter().filter_map(public_item_name));
            }
        }
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                add_use_names(tree, prefix, files, module_files, names);
            }
        }
    }
}

fn public_item_name(item: &syn::Item) -> Option<String> {
    let (vis, ident) = match item {
        syn::Item::Const(it) => (&it.vis, &it.ident),
        syn::Item::Enum(it) => (&it.vis, &it.ident),
        syn::Item::Fn(it) => (&it.vis, &it.sig.ident),
        syn::Item::Mod(it) => (&it.vis, &it.ident),
        syn::Item::Static(it) => (&it.vis, &it.ident),
        syn::Item::Struct(it) => (&it.vis, &it.ident),
        syn::Item::Trait(it) => (&it.vis, &it.ident),
        syn::Item::Type(it) => (&it.vis, &it.ident),
        syn::Item::Union(it) => (&it.vis, &it.ident),
        syn::Item::Macro(it) if it.attrs.iter().any(|attr| attr.path().is_ident("macro_export")) => {
            return it.ident.as_ref().map(ToString::to_string);
        }
        _ => return None,
    };
    matches!(vis, syn::Visibility::Public(_)).then(|| ident.to_string())
}

fn collect_members(items: &[syn::Item], members: &mut BTreeMap<String, BTreeSet<String>>) {
    for item in items {
        match item {
            syn::Item::Impl(impl_item) => {
                let syn::Type::Path(self_ty) = &*impl_item.self_ty else { continue };
                let Some(last) = self_ty.path.segments.last() else { continue };
                // Inherent items must be `pub`; trait-impl items are as public as the trait.
                let inherent = impl_item.trait_.is_none();
                let entry = members.entry(last.ident.to_string()).or_default();
                for member in &impl_item.items {
                    let (vis, ident) = match member {
                        syn::ImplItem::Fn(it) => (&it.vis, &it.sig.ident),
                        syn::ImplItem::Const(it) => (&it.vis, &it.ident),
                        syn::ImplItem::Type(it) => (&it.vis, &it.ident),
                        _ => continue,
                    };
                    if !inherent || matches!(vis, syn::Visibility::Public(_)) {
                        entry.insert(ident.to_string());
                    }
                }
            }
            syn::Item::Enum(enum_item) => {
                let entry = members.entry(enum_item.ident.to_string()).or_default();
                entry.extend(enum_item.variants.iter().map(|variant| variant.ident.to_string()));
            }
            syn::Item::Trait(trait_item) => {
                let entry = members.entry(trait_item.ident.to_string()).or_default();
                for member in &trait_item.items {
                    match member {
                        syn::TraitItem::Fn(it) => entry.insert(it.sig.ident.to_string()),
                        syn::TraitItem::Const(it) => entry.insert(it.ident.to_string()),
                        syn::TraitItem::Type(it) => entry.insert(it.ident.to_string()),
                        _ => continue,
                    };
                }
            }
            syn::Item::Mod(syn::ItemMod { content: Some((_, inner)), .. }) => collect_members(inner, members),
            _ => {}
        }
    }
}

/// A path as shown to the user: relative to the workspace root when inside it.
pub(crate) fn display(path: &Path) -> String {
    let root = crate::project_root();
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.to_owned())
    };
    let shown = migrate_check::paths::normalize(&absolute);
    if shown.starts_with(&root) { migrate_check::paths::rel_path(&root, &shown) } else { shown.display().to_string() }
}
