//! A deprecated crate's `#[deprecated]` items, turned into the old -> new map that `--fix` applies and that a
//! migration guide prints as a table.
//!
//! The crate is read with `syn`: its manifest (`[package] name`, `[lib] name` and `path`), its library root and every
//! out-of-line module it declares (found by the one module resolver, [`crate::modules`]). A deprecated public item is
//! a *shim*; the first path in its note that starts with the replacement's library name is its new path. Hidden
//! items (`#[doc(hidden)]`) are left out, except the deprecated unit-const *twin* of a `pub use` of the same name,
//! which stands for that re-export (a trait or a macro that cannot be aliased).
//!
//! The syntax trees are `syn` 2 types: a tool that audits the crate further (this repository's `compat-audit` does)
//! walks the same files instead of parsing them again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::Span;

use crate::diag::Diagnostic;
use crate::modules::ModuleFile;
use crate::paths::rel_path;

/// One parsed source file of a crate.
pub struct SourceFile {
    /// The file.
    pub path: PathBuf,
    /// The path as shown to the user: relative to the root given to [`CrateSource::load`] when inside it.
    pub display: String,
    /// Its text.
    pub text: String,
    /// Its syntax tree.
    pub ast: syn::File,
}

impl std::fmt::Debug for SourceFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The syntax tree has no `Debug` without syn's `extra-traits`, which this crate does not build.
        f.debug_struct("SourceFile").field("path", &self.path).field("bytes", &self.text.len()).finish_non_exhaustive()
    }
}

/// A library crate's sources, parsed: the root file and every out-of-line module reached from it.
#[derive(Debug)]
pub struct CrateSource {
    /// The package name (`[package] name`).
    pub package: String,
    /// The library name as written in source (`[lib] name`, else the package name, with `-` as `_`).
    pub lib_name: String,
    /// The root file first, then every module file in the order it was reached.
    pub files: Vec<SourceFile>,
    /// Index into `files` by module path (`["registry"]`); the root is `[]`.
    pub module_files: BTreeMap<Vec<String>, usize>,
}

impl CrateSource {
    /// Reads the package in `dir` and parses its library's module tree. Paths in errors are shown relative to
    /// `shown_from` when inside it.
    pub fn load(dir: &Path, shown_from: &Path) -> Result<CrateSource, Diagnostic> {
        let show = |path: &Path| shown(shown_from, path);
        let manifest_path = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|err| Diagnostic::error("io", format!("cannot read: {err}")).in_file(show(&manifest_path)))?;
        let manifest: toml_edit::DocumentMut = text.parse().map_err(|err: toml_edit::TomlError| {
            let (line, column) = err.span().map_or((1, 1), |span| crate::paths::line_col(&text, span.start));
            Diagnostic::error("manifest", format!("TOML does not parse: {}", err.message().trim_end())).at(
                show(&manifest_path),
                line,
                Some(column),
            )
        })?;
        let package = manifest
            .get("package")
            .and_then(|package| package.get("name"))
            .and_then(|name| name.as_str())
            .ok_or_else(|| {
                Diagnostic::error("manifest", "no `[package] name`: not a package manifest")
                    .in_file(show(&manifest_path))
            })?
            .to_owned();
        let lib = manifest.get("lib");
        let lib_name = lib.and_then(|lib| lib.get("name")).and_then(|name| name.as_str()).unwrap_or(&package);
        let lib_name = lib_name.replace('-', "_");
        let root = dir.join(lib.and_then(|lib| lib.get("path")).and_then(|path| path.as_str()).unwrap_or("src/lib.rs"));

        let mut files = Vec::new();
        let mut module_files = BTreeMap::new();
        let mut queue = vec![(ModuleFile::root(root), Vec::new())];
        while let Some((file, module_path)) = queue.pop() {
            let source = parse(&file.path, &show(&file.path))?;
            let mut children = Vec::new();
            out_of_line_mods(&file, &source.ast.items, &mut Vec::new(), &module_path, &show, &mut children)?;
            module_files.insert(module_path, files.len());
            files.push(source);
            queue.extend(children.into_iter().rev());
        }
        Ok(CrateSource { package, lib_name, files, module_files })
    }

    /// The root file.
    pub fn root(&self) -> &SourceFile {
        &self.files[self.module_files[&Vec::new()]]
    }

    /// Calls `f` with every item of the crate, in source order, with the file it is written in and its module path
    /// (`[]` for the root). Modules are passed before their items.
    pub fn walk<'a>(&'a self, mut f: impl FnMut(&'a SourceFile, &[String], &'a syn::Item)) {
        self.walk_items(self.root(), &self.root().ast.items, &mut Vec::new(), &mut f);
    }

    fn walk_items<'a>(
        &'a self,
        file: &'a SourceFile,
        items: &'a [syn::Item],
        module_path: &mut Vec<String>,
        f: &mut impl FnMut(&'a SourceFile, &[String], &'a syn::Item),
    ) {
        for item in items {
            f(file, module_path, item);
            if let syn::Item::Mod(module) = item {
                module_path.push(module.ident.to_string());
                match &module.content {
                    Some((_, inner)) => self.walk_items(file, inner, module_path, f),
                    None => {
                        if let Some(&index) = self.module_files.get(module_path.as_slice()) {
                            let child = &self.files[index];
                            self.walk_items(child, &child.ast.items, module_path, f);
                        }
                    }
                }
                module_path.pop();
            }
        }
    }
}

fn shown(root: &Path, path: &Path) -> String {
    let path = crate::paths::normalize(path);
    if path.starts_with(root) { rel_path(root, &path) } else { path.display().to_string() }
}

fn parse(path: &Path, display: &str) -> Result<SourceFile, Diagnostic> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Diagnostic::error("io", format!("cannot read: {err}")).in_file(display))?;
    let ast = syn::parse_file(&text).map_err(|err| {
        let start = err.span().start();
        Diagnostic::error("syntax", format!("Rust source does not parse: {err}")).at(
            display,
            start.line,
            Some(start.column + 1),
        )
    })?;
    Ok(SourceFile { path: path.to_owned(), display: display.to_owned(), text, ast })
}

/// Queues the out-of-line modules declared in `items` (inside the inline modules `inline`) with their module paths.
fn out_of_line_mods(
    file: &ModuleFile,
    items: &[syn::Item],
    inline: &mut Vec<(String, Option<String>)>,
    module_path: &[String],
    show: &dyn Fn(&Path) -> String,
    out: &mut Vec<(ModuleFile, Vec<String>)>,
) -> Result<(), Diagnostic> {
    for item in items {
        let syn::Item::Mod(module) = item else { continue };
        let mut child_path = module_path.to_vec();
        child_path.push(module.ident.to_string());
        let path_attr = path_attribute(&module.attrs);
        match &module.content {
            Some((_, inner)) => {
                inline.push((module.ident.to_string(), path_attr));
                out_of_line_mods(file, inner, inline, &child_path, show, out)?;
                inline.pop();
            }
            None => {
                let enclosing: Vec<(&str, Option<&str>)> =
                    inline.iter().map(|(n, p)| (n.as_str(), p.as_deref())).collect();
                let candidates = file.child(&enclosing, &module.ident.to_string(), path_attr.as_deref());
                let Some(found) = candidates.iter().find(|candidate| candidate.path.is_file()) else {
                    let tried: Vec<String> = candidates.iter().map(|c| show(&c.path)).collect();
                    return Err(Diagnostic::error(
                        "io",
                        format!("module `{}` has no file: {} not found", module.ident, tried.join(" or ")),
                    )
                    .in_file(show(&file.path)));
                };
                out.push((found.clone(), child_path));
            }
        }
    }
    Ok(())
}

/// The value of a `#[path = "..."]` attribute.
pub fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().filter(|attr| attr.path().is_ident("path")).find_map(|attr| {
        let syn::Meta::NameValue(value) = &attr.meta else { return None };
        let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(path), .. }) = &value.value else { return None };
        Some(path.value())
    })
}

/// What a deprecated public item of the old crate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimKind {
    /// `#![deprecated]` on the crate itself.
    Crate,
    /// A `pub mod` that keeps an old import path.
    Module,
    /// `pub type Old = new::New;`
    TypeAlias,
    /// A wrapper fn.
    Function,
    /// A wrapper `async fn`.
    AsyncFunction,
    /// A `pub const`.
    Constant,
    /// A `pub static`.
    Static,
    /// An exported `macro_rules!`.
    Macro,
    /// A `pub use` of the replacement with a deprecated twin of the same name (a trait or an attribute macro).
    ReExport,
}

impl ShimKind {
    /// How a migration table names it.
    pub fn label(self) -> &'static str {
        match self {
            ShimKind::Crate => "crate",
            ShimKind::Module => "module",
            ShimKind::TypeAlias => "type alias",
            ShimKind::Function => "function",
            ShimKind::AsyncFunction => "async function",
            ShimKind::Constant => "constant",
            ShimKind::Static => "static",
            ShimKind::Macro => "macro",
            ShimKind::ReExport => "re-export (warns at `use` only)",
        }
    }
}

/// One deprecated item of the old API and where its replacement lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shim {
    /// The full old path, such as `old_core::registry::Registry` (macros end in `!`).
    pub old_path: String,
    /// What it is.
    pub kind: ShimKind,
    /// The first path in the note rooted at the replacement's library name, if any.
    pub new_path: Option<String>,
    /// The deprecation note as written (empty without one).
    pub note: String,
}

/// A parsed `#[deprecated]` attribute.
#[derive(Debug)]
pub struct Deprecation {
    /// It has `since = ".."`.
    pub since: bool,
    /// Its note.
    pub note: Option<Note>,
}

/// A deprecation note: its value and the literal as written (for spans inside it).
#[derive(Debug)]
pub struct Note {
    /// The note's text.
    pub value: String,
    /// The string literal it was written as.
    pub literal: proc_macro2::Literal,
}

/// The `#[deprecated]` attribute among `attrs`, parsed (`#[deprecated]`, `#[deprecated = ".."]`,
/// `#[deprecated(since = "..", note = "..")]`).
pub fn deprecation(attrs: &[syn::Attribute]) -> Option<(&syn::Attribute, Deprecation)> {
    let attr = attrs.iter().find(|attr| attr.path().is_ident("deprecated"))?;
    let mut deprecation = Deprecation { since: false, note: None };
    let note = |literal: &syn::LitStr| Note { value: literal.value(), literal: literal.token() };
    match &attr.meta {
        syn::Meta::Path(_) => {}
        syn::Meta::NameValue(value) => {
            if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(literal), .. }) = &value.value {
                deprecation.note = Some(note(literal));
            }
        }
        syn::Meta::List(_) => {
            // Unknown keys are rustc's business; this only reads the two it needs.
            let _ = attr.parse_nested_meta(|meta| {
                let value: syn::LitStr = meta.value()?.parse()?;
                if meta.path.is_ident("since") {
                    deprecation.since = true;
                } else if meta.path.is_ident("note") {
                    deprecation.note = Some(note(&value));
                }
                Ok(())
            });
        }
    }
    Some((attr, deprecation))
}

/// Whether `attrs` have `#[doc(hidden)]`.
pub fn is_doc_hidden(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("doc")
            && matches!(&attr.meta, syn::Meta::List(list) if list.tokens.to_string().trim() == "hidden")
    })
}

/// Whether `expr` is `()`.
pub fn is_unit(expr: &syn::Expr) -> bool {
    matches!(expr, syn::Expr::Tuple(tuple) if tuple.elems.is_empty())
}

/// Names of `#[deprecated] #[doc(hidden)] const X: () = ();` items: the twins that make a re-export warn.
pub fn twin_consts(items: &[syn::Item]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Const(constant)
                if is_doc_hidden(&constant.attrs)
                    && deprecation(&constant.attrs).is_some()
                    && matches!(&*constant.ty, syn::Type::Tuple(tuple) if tuple.elems.is_empty())
                    && is_unit(&constant.expr) =>
            {
                Some(constant.ident.to_string())
            }
            _ => None,
        })
        .collect()
}

/// The names `pub use` items among `items` make visible.
pub fn reexport_names(items: &[syn::Item]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for item in items {
        if let syn::Item::Use(use_item) = item
            && matches!(use_item.vis, syn::Visibility::Public(_))
        {
            let mut leaves = Vec::new();
            use_leaves(&use_item.tree, &mut Vec::new(), &mut leaves);
            names.extend(leaves.into_iter().filter_map(|(_, name, _)| name));
        }
    }
    names
}

/// Each imported item of a use tree: (full source path, name it is visible under (`None` for a glob), span).
pub fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Option<String>, Span)>) {
    use syn::spanned::Spanned;
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            use_leaves(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let mut path = prefix.clone();
            path.push(name.ident.to_string());
            out.push((path, Some(name.ident.to_string()), name.ident.span()));
        }
        syn::UseTree::Rename(rename) => {
            let mut path = prefix.clone();
            path.push(rename.ident.to_string());
            // `use new_crate as __private` keeps the crate path itself.
            let span = if path.len() == 1 { rename.rename.span() } else { rename.span() };
            out.push((path, Some(rename.rename.to_string()), span));
        }
        syn::UseTree::Glob(glob) => out.push((prefix.clone(), None, glob.span())),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                use_leaves(tree, prefix, out);
            }
        }
    }
}

/// Every path in `note` rooted at the library `lib` (`lib::X`, `lib::X::member`), with its byte offset.
pub fn note_paths(note: &str, lib: &str) -> Vec<(usize, String)> {
    let prefix = format!("{lib}::");
    let mut paths = Vec::new();
    let mut from = 0;
    while let Some(found) = note[from..].find(&prefix) {
        let start = from + found;
        let preceded_by_ident = note[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        let end = note[start..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(note.len(), |len| start + len);
        let path = note[start..end].trim_end_matches(':');
        if !preceded_by_ident && path.len() > prefix.len() {
            paths.push((start, path.to_owned()));
        }
        from = end.max(start + prefix.len());
    }
    paths
}

/// The crate's shims, in source order, with new paths rooted at `replacement_lib`.
pub fn shims(krate: &CrateSource, replacement_lib: &str) -> Vec<Shim> {
    let mut shims = Vec::new();
    let first_path = |deprecation: &Deprecation| {
        let note = deprecation.note.as_ref()?;
        note_paths(&note.value, replacement_lib).into_iter().next().map(|(_, path)| path)
    };
    let note = |deprecation: &Deprecation| deprecation.note.as_ref().map(|note| note.value.clone()).unwrap_or_default();
    let root = krate.root();
    if let Some((_, deprecation)) = deprecation(&root.ast.attrs) {
        // For the crate, the replacement is the crate itself.
        let new_path = first_path(&deprecation).map(|_| replacement_lib.to_owned());
        shims.push(Shim {
            old_path: krate.lib_name.clone(),
            kind: ShimKind::Crate,
            new_path,
            note: note(&deprecation),
        });
    }
    // Twins and re-exports are per module: computed when the walk enters one.
    let mut scopes: BTreeMap<Vec<String>, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let scope_items = |module_path: &[String]| -> Option<&[syn::Item]> { module_items(krate, module_path) };
    krate.walk(|_, module_path, item| {
        let (twins, reexports) = scopes.entry(module_path.to_vec()).or_insert_with(|| {
            let items = scope_items(module_path).unwrap_or_default();
            (twin_consts(items), reexport_names(items))
        });
        let (attrs, vis, ident, kind) = match item {
            syn::Item::Type(it) => (&it.attrs, &it.vis, &it.ident, ShimKind::TypeAlias),
            syn::Item::Fn(it) => {
                let kind = if it.sig.asyncness.is_some() { ShimKind::AsyncFunction } else { ShimKind::Function };
                (&it.attrs, &it.vis, &it.sig.ident, kind)
            }
            syn::Item::Const(it) => {
                let name = it.ident.to_string();
                let twin = twins.contains(&name) && reexports.contains(&name);
                (&it.attrs, &it.vis, &it.ident, if twin { ShimKind::ReExport } else { ShimKind::Constant })
            }
            syn::Item::Static(it) => (&it.attrs, &it.vis, &it.ident, ShimKind::Static),
            syn::Item::Mod(it) => (&it.attrs, &it.vis, &it.ident, ShimKind::Module),
            syn::Item::Macro(it)
                if it.mac.path.is_ident("macro_rules")
                    && it.attrs.iter().any(|attr| attr.path().is_ident("macro_export")) =>
            {
                let Some(ident) = &it.ident else { return };
                let Some((_, deprecation)) = deprecation(&it.attrs) else { return };
                // `#[macro_export]` macros live at the crate root whatever their module.
                if !is_doc_hidden(&it.attrs) {
                    let old_path = format!("{}::{ident}!", krate.lib_name);
                    let new_path = first_path(&deprecation);
                    shims.push(Shim { old_path, kind: ShimKind::Macro, new_path, note: note(&deprecation) });
                }
                return;
            }
            _ => return,
        };
        if !matches!(vis, syn::Visibility::Public(_)) {
            return;
        }
        let Some((_, deprecation)) = deprecation(attrs) else { return };
        if is_doc_hidden(attrs) && kind != ShimKind::ReExport {
            return;
        }
        let mut old_path = vec![krate.lib_name.clone()];
        old_path.extend(module_path.iter().cloned());
        old_path.push(ident.to_string());
        shims.push(Shim {
            old_path: old_path.join("::"),
            kind,
            new_path: first_path(&deprecation),
            note: note(&deprecation),
        });
    });
    shims
}

/// The items of the module at `module_path` (inline or in its own file).
fn module_items<'k>(krate: &'k CrateSource, module_path: &[String]) -> Option<&'k [syn::Item]> {
    if let Some(&index) = krate.module_files.get(module_path) {
        return Some(&krate.files[index].ast.items);
    }
    let (last, parent) = module_path.split_last()?;
    module_items(krate, parent)?.iter().find_map(|item| match item {
        syn::Item::Mod(module) if module.ident == last => module.content.as_ref().map(|(_, items)| items.as_slice()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_paths_are_rooted_at_the_library() {
        let note = "use new_core::Registry (or new_core::Registry::open); not my_new_core::X, and new_core:: alone";
        assert_eq!(
            note_paths(note, "new_core"),
            [(4, "new_core::Registry".to_owned()), (27, "new_core::Registry::open".to_owned())]
        );
    }
}
