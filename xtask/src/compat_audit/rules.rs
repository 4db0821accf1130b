//! The audit's rules. The inventory of shims (old path -> new path) is `migrate_check::deprecations`'s.

use std::collections::BTreeSet;

use migrate_check::Diagnostic;
use migrate_check::deprecations::{
    Deprecation, Note, SourceFile, deprecation, is_doc_hidden, is_unit, note_paths, reexport_names, twin_consts,
    use_leaves,
};
use proc_macro2::{Span, TokenTree};
use syn::spanned::Spanned;

use migrate_check::deprecations::ShimKind;

use super::load::{CompatCrate, CoreExports};

/// Everything the audit found.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    /// One diagnostic per problem, sorted by file, line and column.
    pub(crate) findings: Vec<Diagnostic>,
}

/// Checks every item of the compat crate.
pub(crate) fn analyze(krate: &CompatCrate) -> Analysis {
    let mut cx = Cx { krate, analysis: Analysis::default() };
    let root = krate.source.root();
    cx.check_crate_root(root);
    cx.check_items(root, &root.ast.items, &[]);
    cx.analysis.findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    cx.analysis
}

const FORWARD_HELP: &str = "make the body one call that passes the parameters on, such as \
                            `core_registry::AgentRegistry::builder()` or `session.run(agent, input)`; logic belongs in \
                            core-registry";
const NOTE_HELP: &str = "write `#[deprecated(since = \"0.10.0\", note = \"use core_registry::<Path>\")]` with the \
                         exact new path";

struct Cx<'a> {
    krate: &'a CompatCrate,
    analysis: Analysis,
}

impl Cx<'_> {
    fn report(&mut self, file: &SourceFile, span: Span, kind: &'static str, message: String, help: impl Into<String>) {
        let start = span.start();
        let end = span.end();
        let source_line = file.text.lines().nth(start.line.saturating_sub(1)).unwrap_or_default().to_owned();
        let width = if end.line == start.line && end.column > start.column {
            end.column - start.column
        } else {
            source_line.chars().count().saturating_sub(start.column).max(1)
        };
        let diagnostic = Diagnostic::error(kind, message)
            .at(&file.display, start.line, Some(start.column + 1))
            .with_source(source_line, width)
            .with_help(help);
        self.analysis.findings.push(diagnostic);
    }

    fn check_crate_root(&mut self, root: &SourceFile) {
        let name = self.krate.source.lib_name.clone();
        match deprecation(&root.ast.attrs) {
            Some((attr, deprecation)) => {
                self.check_deprecation(root, attr.span(), &deprecation, &format!("crate `{name}`"));
            }
            None => {
                let span = root.ast.items.first().map_or_else(Span::call_site, |item| item.span());
                self.report(
                    root,
                    span,
                    "crate-not-deprecated",
                    format!("crate `{name}` has no `#![deprecated]` at its root"),
                    "add `#![deprecated(since = \"0.10.0\", note = \"use core_registry::... instead; see MIGRATION.md\")]` \
                     so that `extern crate`, glob imports and renames of the crate warn",
                );
            }
        }
    }

    fn check_items(&mut self, file: &SourceFile, items: &[syn::Item], module_path: &[String]) {
        let twins = twin_consts(items);
        let reexports = reexport_names(items);
        for item in items {
            self.check_item(file, item, module_path, &twins, &reexports);
        }
    }

    fn check_item(
        &mut self,
        file: &SourceFile,
        item: &syn::Item,
        module_path: &[String],
        twins: &BTreeSet<String>,
        reexports: &BTreeSet<String>,
    ) {
        match item {
            syn::Item::Type(alias) => {
                self.check_type_target(file, &alias.ident, &alias.ty);
                self.check_public(file, &alias.attrs, &alias.vis, &alias.ident, ShimKind::TypeAlias, "type");
            }
            syn::Item::Fn(function) => {
                let ident = &function.sig.ident;
                self.check_fn_body(file, function);
                let kind = if function.sig.asyncness.is_some() { ShimKind::AsyncFunction } else { ShimKind::Function };
                self.check_public(file, &function.attrs, &function.vis, ident, kind, "fn");
            }
            syn::Item::Const(constant) => {
                let ident = &constant.ident;
                let is_twin = twins.contains(&ident.to_string()) && reexports.contains(&ident.to_string());
                if !(is_twin && is_unit(&constant.expr)) {
                    self.check_value(file, "const", ident, &constant.expr);
                }
                // A twin is listed as the re-export it stands for.
                let kind = if is_twin { ShimKind::ReExport } else { ShimKind::Constant };
                self.check_public(file, &constant.attrs, &constant.vis, ident, kind, "const");
            }
            syn::Item::Static(static_item) => {
                let ident = &static_item.ident;
                if matches!(static_item.mutability, syn::StaticMutability::Mut(_)) {
                    self.report(
                        file,
                        ident.span(),
                        "not-forwarding",
                        format!("`static mut {ident}` is global state"),
                        "core-registry has no global state: pass the registry explicitly",
                    );
                } else {
                    self.check_value(file, "static", ident, &static_item.expr);
                }
                self.check_public(file, &static_item.attrs, &static_item.vis, ident, ShimKind::Static, "static");
            }
            syn::Item::Mod(module) => {
                let ident = &module.ident;
                self.check_public(file, &module.attrs, &module.vis, ident, ShimKind::Module, "mod");
                let mut child_path = module_path.to_vec();
                child_path.push(ident.to_string());
                match &module.content {
                    Some((_, items)) => self.check_items(file, items, &child_path),
                    None => {
                        let krate = self.krate;
                        let child = &krate.source.files[krate.source.module_files[&child_path]];
                        self.check_items(child, &child.ast.items, &child_path);
                    }
                }
            }
            syn::Item::Use(use_item) => self.check_use(file, use_item, twins),
            syn::Item::Macro(macro_item) => self.check_macro(file, macro_item, module_path),
            other => {
                let (what, help) = match other {
                    syn::Item::Struct(_) | syn::Item::Enum(_) | syn::Item::Union(_) => (
                        "defines a type of its own",
                        "move the type into core-registry and alias it here: `pub type X = core_registry::X;`",
                    ),
                    syn::Item::Impl(_) => (
                        "adds behaviour with an `impl` block",
                        "add the method to core-registry (or a deprecated wrapper fn that forwards to it)",
                    ),
                    syn::Item::Trait(_) | syn::Item::TraitAlias(_) => (
                        "defines a trait of its own",
                        "re-export core-registry's trait with `pub use core_registry::X;` plus a deprecated \
                         `#[doc(hidden)] pub const X: () = ();` twin",
                    ),
                    _ => ("is not a forwarding item", "the compat crate holds only deprecated forwarding shims"),
                };
                let span = item_head_span(other);
                self.report(file, span, "not-forwarding", format!("this item {what}"), help);
            }
        }
    }

    /// Requires `#[deprecated]` with `since` and a resolvable note on a public item.
    #[allow(clippy::too_many_arguments)] // One call per item kind; a struct would only rename the arguments.
    fn check_public(
        &mut self,
        file: &SourceFile,
        attrs: &[syn::Attribute],
        vis: &syn::Visibility,
        ident: &syn::Ident,
        kind: ShimKind,
        keyword: &str,
    ) {
        if !matches!(vis, syn::Visibility::Public(_)) {
            return;
        }
        let what = if kind == ShimKind::Macro {
            format!("`macro_rules! {ident}`")
        } else {
            format!("`pub {keyword} {ident}`")
        };
        match deprecation(attrs) {
            Some((attr, deprecation)) => self.check_deprecation(file, attr.span(), &deprecation, &what),
            None => self.report(
                file,
                ident.span(),
                "missing-deprecated",
                format!("{what} is public but not `#[deprecated]`"),
                NOTE_HELP,
            ),
        }
    }

    /// Checks `since` and the note: it must name paths core-registry exports.
    fn check_deprecation(&mut self, file: &SourceFile, attr_span: Span, deprecation: &Deprecation, what: &str) {
        if !deprecation.since {
            self.report(
                file,
                attr_span,
                "missing-since",
                format!("the deprecation of {what} does not say since when"),
                NOTE_HELP,
            );
        }
        let Some(note) = &deprecation.note else {
            self.report(
                file,
                attr_span,
                "note-without-path",
                format!("the deprecation of {what} has no note, so the warning cannot say what to use instead"),
                NOTE_HELP,
            );
            return;
        };
        let paths = note_paths(&note.value, "core_registry");
        if paths.is_empty() {
            self.report(
                file,
                note.literal.span(),
                "note-without-path",
                format!("the note of {what} names no `core_registry::` path"),
                NOTE_HELP,
            );
            return;
        }
        let core: &CoreExports = &self.krate.core;
        let mut unknown = Vec::new();
        for (offset, path) in &paths {
            let segments: Vec<&str> = path.split("::").skip(1).collect();
            if !core.resolves(&segments) {
                unknown.push((*offset, path.clone(), core.suggest(&segments)));
            }
        }
        for (offset, path, suggestion) in unknown {
            let help = match suggestion {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => "name a path that core-registry's lib.rs exports (a `pub use` or `pub` item), optionally \
                         followed by one of its methods or variants"
                    .to_owned(),
            };
            let span = span_in_literal(note, offset, path.len());
            self.report(
                file,
                span,
                "unknown-path",
                format!("the note of {what} names `{path}`, which core-registry does not export"),
                help,
            );
        }
    }

    fn check_type_target(&mut self, file: &SourceFile, ident: &syn::Ident, ty: &syn::Type) {
        let target = match ty {
            syn::Type::Path(path) if path.qself.is_none() => Some(&path.path),
            _ => None,
        };
        let Some(path) = target.filter(|path| path_starts_with_core(path)) else {
            self.report(
                file,
                ty.span(),
                "not-forwarding",
                format!("`type {ident}` does not alias a core_registry type"),
                "alias the core-registry type itself: `pub type X = core_registry::X;`",
            );
            return;
        };
        self.check_core_path(file, path);
    }

    fn check_core_path(&mut self, file: &SourceFile, path: &syn::Path) {
        let segments: Vec<String> = path.segments.iter().skip(1).map(|segment| segment.ident.to_string()).collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        if !self.krate.core.resolves(&segments) {
            let shown = format!("core_registry::{}", segments.join("::"));
            let help = match self.krate.core.suggest(&segments) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => "forward to a path that core-registry exports".to_owned(),
            };
            self.report(file, path.span(), "unknown-path", format!("`{shown}` is not exported by core-registry"), help);
        }
    }

    /// A const or static must be a core_registry path or a literal.
    fn check_value(&mut self, file: &SourceFile, keyword: &str, ident: &syn::Ident, expr: &syn::Expr) {
        match strip_reference(expr) {
            syn::Expr::Path(path) if path.qself.is_none() && path_starts_with_core(&path.path) => {
                self.check_core_path(file, &path.path);
            }
            syn::Expr::Lit(_) => {}
            other => self.report(
                file,
                other.span(),
                "not-forwarding",
                format!("`{keyword} {ident}` computes its value instead of referring to core-registry's"),
                "refer to the core_registry constant (`= core_registry::X;`) or, if core-registry has none, a literal \
                 that a test compares with core-registry's behaviour",
            ),
        }
    }

    fn check_fn_body(&mut self, file: &SourceFile, function: &syn::ItemFn) {
        let ident = &function.sig.ident;
        let params: BTreeSet<String> = function
            .sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                syn::FnArg::Typed(typed) => match &*typed.pat {
                    syn::Pat::Ident(pat) => Some(pat.ident.to_string()),
                    _ => None,
                },
                syn::FnArg::Receiver(_) => Some("self".to_owned()),
            })
            .collect();
        let stmts = &function.block.stmts;
        let [syn::Stmt::Expr(expr, _)] = stmts.as_slice() else {
            let span = stmts.first().map_or_else(|| function.block.span(), Spanned::span);
            let message = match stmts.len() {
                0 => format!("`fn {ident}` has an empty body"),
                1 => format!("`fn {ident}` does more than forward: its body is a `let` or an item, not one call"),
                n => format!("`fn {ident}` does more than forward: its body has {n} statements"),
            };
            self.report(file, span, "not-forwarding", message, FORWARD_HELP);
            return;
        };
        let call = match expr {
            syn::Expr::Await(awaited) => &*awaited.base,
            other => other,
        };
        let args = match call {
            syn::Expr::Call(call) => {
                let syn::Expr::Path(callee) = &*call.func else {
                    self.report(
                        file,
                        call.func.span(),
                        "not-forwarding",
                        format!("`fn {ident}` calls a computed function"),
                        FORWARD_HELP,
                    );
                    return;
                };
                if callee.qself.is_some() || !path_starts_with_core(&callee.path) {
                    self.report(
                        file,
                        callee.span(),
                        "not-forwarding",
                        format!(
                            "`fn {ident}` calls `{}`, which is not a core_registry path",
                            snippet(file, callee.span())
                        ),
                        FORWARD_HELP,
                    );
                    return;
                }
                self.check_core_path(file, &callee.path);
                &call.args
            }
            syn::Expr::MethodCall(call) => {
                if !is_param(&call.receiver, &params) {
                    self.report(
                        file,
                        call.receiver.span(),
                        "not-forwarding",
                        format!(
                            "`fn {ident}` calls a method on `{}`, which is not one of its parameters",
                            snippet(file, call.receiver.span())
                        ),
                        FORWARD_HELP,
                    );
                    return;
                }
                &call.args
            }
            other => {
                self.report(
                    file,
                    other.span(),
                    "not-forwarding",
                    format!("`fn {ident}` does more than forward: its body is not a single call"),
                    FORWARD_HELP,
                );
                return;
            }
        };
        for arg in args {
            if !is_param(arg, &params) {
                self.report(
                    file,
                    arg.span(),
                    "not-forwarding",
                    format!("`fn {ident}` passes `{}`, which is not one of its parameters", snippet(file, arg.span())),
                    FORWARD_HELP,
                );
            }
        }
    }

    fn check_use(&mut self, file: &SourceFile, use_item: &syn::ItemUse, twins: &BTreeSet<String>) {
        if !matches!(use_item.vis, syn::Visibility::Public(_)) {
            return;
        }
        let mut leaves = Vec::new();
        use_leaves(&use_item.tree, &mut Vec::new(), &mut leaves);
        for (path, name, span) in leaves {
            let Some(name) = name else {
                self.report(
                    file,
                    span,
                    "bare-reexport",
                    "a glob re-export warns nobody (rust-lang/rust#30827)".to_owned(),
                    "write one deprecated `pub type` alias or wrapper fn per item instead",
                );
                continue;
            };
            // The documented exception: the hidden path the macros expand to.
            if path == ["core_registry"] {
                if name != "__private" || !is_doc_hidden(&use_item.attrs) {
                    self.report(
                        file,
                        span,
                        "bare-reexport",
                        "a public re-export of the whole core_registry crate warns nobody".to_owned(),
                        "the only allowed form is the macros' hidden path: \
                         `#[doc(hidden)] pub use core_registry as __private;`",
                    );
                }
                continue;
            }
            if path.first().map(String::as_str) != Some("core_registry") {
                self.report(
                    file,
                    span,
                    "not-forwarding",
                    format!("`pub use` of `{}` re-exports something other than core-registry", path.join("::")),
                    "the compat crate forwards only to core_registry",
                );
                continue;
            }
            let segments: Vec<&str> = path.iter().skip(1).map(String::as_str).collect();
            if !self.krate.core.resolves(&segments) {
                self.report(
                    file,
                    span,
                    "unknown-path",
                    format!("`{}` is not exported by core-registry", path.join("::")),
                    "re-export a path that core-registry exports",
                );
            }
            if !twins.contains(&name) {
                self.report(
                    file,
                    span,
                    "bare-reexport",
                    format!("`pub use` of `{}` warns nobody, even with `#[deprecated]` (rust-lang/rust#30827)", path.join("::")),
                    format!(
                        "for a type, write `#[deprecated(since = \"0.10.0\", note = \"use {0}\")] pub type {name} = {0};`; \
                         for a trait or macro that cannot be aliased, add a deprecated `#[doc(hidden)] pub const {name}: () \
                         = ();` twin",
                        path.join("::")
                    ),
                );
            }
        }
    }

    fn check_macro(&mut self, file: &SourceFile, macro_item: &syn::ItemMacro, module_path: &[String]) {
        let Some(ident) = macro_item.ident.as_ref().filter(|_| macro_item.mac.path.is_ident("macro_rules")) else {
            self.report(
                file,
                macro_item.mac.path.span(),
                "not-forwarding",
                format!(
                    "the macro invocation `{}!` at item level is not a forwarding item",
                    snippet(file, macro_item.mac.path.span())
                ),
                "the compat crate holds only deprecated forwarding shims; global state (`thread_local!`, statics) \
                 does not belong anywhere",
            );
            return;
        };
        let exported = macro_item.attrs.iter().any(|attr| attr.path().is_ident("macro_export"));
        if !exported {
            self.report(
                file,
                ident.span(),
                "not-forwarding",
                format!("`macro_rules! {ident}` is a private helper macro"),
                "the compat crate holds only exported, deprecated forwarding macros",
            );
            return;
        }
        let vis = syn::Visibility::Public(Default::default());
        self.check_public(file, &macro_item.attrs, &vis, ident, ShimKind::Macro, "macro");
        let _ = module_path; // `#[macro_export]` macros live at the crate root whatever their module.

        let mut targets = Vec::new();
        crate_paths(macro_item.mac.tokens.clone(), &mut targets);
        if targets.is_empty() {
            self.report(
                file,
                ident.span(),
                "not-forwarding",
                format!("`macro_rules! {ident}` does not expand to `$crate::__private::...`"),
                "forward through the hidden re-export: `$crate::__private::AgentRegistryBuilder::register(...)`",
            );
        }
        for (name, span) in targets.into_iter().filter(|(name, _)| name != "__private") {
            self.report(
                file,
                span,
                "not-forwarding",
                format!("`macro_rules! {ident}` expands to `$crate::{name}`, a compat item, instead of core-registry"),
                "forward through the hidden re-export: `$crate::__private::...`",
            );
        }
    }
}

fn strip_reference(expr: &syn::Expr) -> &syn::Expr {
    match expr {
        syn::Expr::Reference(reference) => strip_reference(&reference.expr),
        syn::Expr::Paren(paren) => strip_reference(&paren.expr),
        other => other,
    }
}

fn path_starts_with_core(path: &syn::Path) -> bool {
    path.leading_colon.is_none() && path.segments.first().is_some_and(|segment| segment.ident == "core_registry")
}

/// Whether `expr` is one of the function's parameters, possibly borrowed or dereferenced.
fn is_param(expr: &syn::Expr, params: &BTreeSet<String>) -> bool {
    match expr {
        syn::Expr::Path(path) => {
            path.qself.is_none() && path.path.get_ident().is_some_and(|ident| params.contains(&ident.to_string()))
        }
        syn::Expr::Reference(reference) => is_param(&reference.expr, params),
        syn::Expr::Unary(syn::ExprUnary { op: syn::UnOp::Deref(_), expr, .. }) => is_param(expr, params),
        _ => false,
    }
}

/// The span of an item's first line (its keyword and name), for items reported as a whole.
fn item_head_span(item: &syn::Item) -> Span {
    let ident_span = match item {
        syn::Item::Struct(it) => Some(it.ident.span()),
        syn::Item::Enum(it) => Some(it.ident.span()),
        syn::Item::Union(it) => Some(it.ident.span()),
        syn::Item::Trait(it) => Some(it.ident.span()),
        syn::Item::TraitAlias(it) => Some(it.ident.span()),
        syn::Item::Impl(it) => Some(it.impl_token.span),
        syn::Item::ExternCrate(it) => Some(it.ident.span()),
        _ => None,
    };
    ident_span.unwrap_or_else(|| item.span())
}

/// `$crate::name` occurrences in a macro body.
fn crate_paths(tokens: proc_macro2::TokenStream, out: &mut Vec<(String, Span)>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for (index, token) in tokens.iter().enumerate() {
        match token {
            TokenTree::Group(group) => crate_paths(group.stream(), out),
            TokenTree::Punct(dollar) if dollar.as_char() == '$' => {
                let rest = &tokens[index + 1..];
                if let [TokenTree::Ident(krate), TokenTree::Punct(c1), TokenTree::Punct(c2), TokenTree::Ident(name), ..] =
                    rest
                    && krate == "crate"
                    && c1.as_char() == ':'
                    && c2.as_char() == ':'
                {
                    out.push((name.to_string(), name.span()));
                }
            }
            _ => {}
        }
    }
}

/// The span of `len` bytes at `offset` inside a string literal written on one line without escapes; otherwise the
/// whole literal.
fn span_in_literal(note: &Note, offset: usize, len: usize) -> Span {
    let span = note.literal.span();
    let written = note.literal.to_string();
    if span.start().line != span.end().line || written.get(1..written.len().saturating_sub(1)) != Some(&*note.value) {
        return span;
    }
    // One byte for the opening quote; the slice is ASCII (a path), so bytes are characters.
    note.literal.subspan(offset + 1..offset + 1 + len).unwrap_or(span)
}

/// The source text of `span` (first line only).
fn snippet(file: &SourceFile, span: Span) -> String {
    span.source_text()
        .or_else(|| {
            let start = span.start();
            let line = file.text.lines().nth(start.line.checked_sub(1)?)?;
            Some(line.chars().skip(start.column).collect())
        })
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
