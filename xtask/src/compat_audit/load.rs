//! Reading a compat crate and the core-registry it forwards to: manifests, module trees, parsed sources, and the
//! paths core-registry exports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a crate could not be read: the audit could not run (exit 2).
#[derive(Debug)]
pub(crate) struct LoadError(pub(crate) String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One parsed source file of the compat crate.
pub(crate) struct SourceFile {
    /// The path as shown to the user (relative to the workspace root when inside it).
    pub(crate) display: String,
    pub(crate) text: String,
    pub(crate) ast: syn::File,
}

/// A compat crate, parsed, with what core-registry exports.
pub(crate) struct CompatCrate {
    /// The crate's library name, such as `registry_compat`.
    pub(crate) lib_name: String,
    /// The crate root's file and every module file reached from it, in the order they were reached.
    pub(crate) files: Vec<SourceFile>,
    /// Module file paths by the module path they hold (`["registry"]` -> index into `files`); the root is `[]`.
    pub(crate) module_files: BTreeMap<Vec<String>, usize>,
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
pub(crate) fn load(crate_dir: &Path) -> Result<CompatCrate, LoadError> {
    let manifest_path = crate_dir.join("Cargo.toml");
    let manifest = read_manifest(&manifest_path)?;
    let package_name = manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(|name| name.as_str())
        .ok_or_else(|| LoadError(format!("{}: no [package] name", display(&manifest_path))))?;
    let lib_name = manifest
        .get("lib")
        .and_then(|lib| lib.get("name"))
        .and_then(|name| name.as_str())
        .unwrap_or(package_name)
        .replace('-', "_");

    let (files, module_files) = read_module_tree(&lib_root(crate_dir, &manifest))?;
    let core_dir = core_registry_dir(crate_dir, &manifest)?;
    let core = core_exports(&core_dir)?;
    Ok(CompatCrate { lib_name, files, module_files, core })
}

fn read_manifest(path: &Path) -> Result<toml_edit::DocumentMut, LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|err| LoadError(format!("cannot read {}: {err}", display(path))))?;
    text.parse().map_err(|err: toml_edit::TomlError| {
        LoadError(format!("{} is not valid TOML: {}", display(path), err.message()))
    })
}

fn lib_root(crate_dir: &Path, manifest: &toml_edit::DocumentMut) -> PathBuf {
    let custom = manifest.get("lib").and_then(|lib| lib.get("path")).and_then(|path| path.as_str());
    crate_dir.join(custom.unwrap_or("src/lib.rs"))
}

/// Finds core-registry's directory from the compat crate's `core-registry` dependency: a `path`, or
/// `workspace = true` resolved through the enclosing workspace's `[workspace.dependencies]`.
fn core_registry_dir(crate_dir: &Path, manifest: &toml_edit::DocumentMut) -> Result<PathBuf, LoadError> {
    let missing = || {
        LoadError(format!(
            "{}: no `core-registry` dependency with a path; the compat crate must depend on core-registry",
            display(&crate_dir.join("Cargo.toml"))
        ))
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

fn parse_file(path: &Path) -> Result<(String, syn::File), LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|err| LoadError(format!("cannot read {}: {err}", display(path))))?;
    let ast = syn::parse_file(&text).map_err(|err| {
        let start = err.span().start();
        LoadError(format!("cannot parse {}:{}:{}: {err}", display(path), start.line, start.column + 1))
    })?;
    Ok((text, ast))
}

type ModuleTree = (Vec<SourceFile>, BTreeMap<Vec<String>, usize>);

/// Parses the crate root and every out-of-line module it declares (`mod x;`), recursively.
fn read_module_tree(root: &Path) -> Result<ModuleTree, LoadError> {
    let mut files = Vec::new();
    let mut module_files = BTreeMap::new();
    // (file, module path, directory that holds its child modules)
    let mut queue = vec![(root.to_owned(), Vec::new(), root.parent().unwrap_or(Path::new(".")).to_owned())];
    while let Some((path, module_path, child_dir)) = queue.pop() {
        let (text, ast) = parse_file(&path)?;
        let mut children = Vec::new();
        collect_out_of_line_mods(&ast.items, &module_path, &child_dir, &mut children)?;
        module_files.insert(module_path, files.len());
        files.push(SourceFile { display: display(&path), text, ast });
        queue.extend(children.into_iter().rev());
    }
    Ok((files, module_files))
}

fn collect_out_of_line_mods(
    items: &[syn::Item],
    module_path: &[String],
    dir: &Path,
    out: &mut Vec<(PathBuf, Vec<String>, PathBuf)>,
) -> Result<(), LoadError> {
    for item in items {
        let syn::Item::Mod(module) = item else { continue };
        let name = module.ident.to_string();
        let mut child_path = module_path.to_vec();
        child_path.push(name.clone());
        match &module.content {
            Some((_, inner)) => collect_out_of_line_mods(inner, &child_path, &dir.join(&name), out)?,
            None => {
                let custom = module.attrs.iter().find(|attr| attr.path().is_ident("path")).and_then(|attr| {
                    let syn::Meta::NameValue(value) = &attr.meta else { return None };
                    let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(path), .. }) = &value.value else {
                        return None;
                    };
                    Some(path.value())
                });
                let (file, child_dir) = match custom {
                    Some(custom) => {
                        let file = dir.join(custom);
                        let child_dir = file.with_extension("");
                        (file, child_dir)
                    }
                    None if dir.join(format!("{name}.rs")).is_file() => {
                        (dir.join(format!("{name}.rs")), dir.join(&name))
                    }
                    None => (dir.join(&name).join("mod.rs"), dir.join(&name)),
                };
                if !file.is_file() {
                    return Err(LoadError(format!("module `{}` has no file: {} not found", name, display(&file))));
                }
                out.push((file, child_path, child_dir));
            }
        }
    }
    Ok(())
}

/// Collects core-registry's exports: the `pub` items and `pub use` names of its crate root (a glob re-export of a
/// module contributes that module's `pub` items), and the members of every type and trait in its module tree.
fn core_exports(core_dir: &Path) -> Result<CoreExports, LoadError> {
    let manifest = read_manifest(&core_dir.join("Cargo.toml"))?;
    let (files, module_files) = read_module_tree(&lib_root(core_dir, &manifest))?;
    let mut exports = CoreExports::default();
    let root = &files[module_files[&Vec::new()]].ast;
    for item in &root.items {
        if let syn::Item::Use(use_item) = item {
            if matches!(use_item.vis, syn::Visibility::Public(_)) {
                add_use_names(&use_item.tree, &[], &files, &module_files, &mut exports.names);
            }
        } else if let Some(name) = public_item_name(item) {
            exports.names.insert(name);
        }
    }
    for file in &files {
        collect_members(&file.ast.items, &mut exports.members);
    }
    Ok(exports)
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
    let shown = normalize(&absolute);
    shown.strip_prefix(&root).unwrap_or(&shown).to_string_lossy().replace('\\', "/")
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
