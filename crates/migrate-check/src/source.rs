//! The source scan: finds each occurrence of the deprecated crate's names as the root of a path, a `use` tree or an
//! `extern crate` item in a member's Rust files, also inside macro invocations and `macro_rules!` bodies.
//!
//! Files are the member's target roots and their module trees (`mod x;`, `#[path]`), found with a small lexer that
//! skips comments and literals; where a module's file is comes from the one resolver, [`crate::modules`]. Only files in which one of the names occurs as an identifier are parsed with `syn`;
//! comments, string literals and doc text never match because they are not identifiers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::visit::{self, Visit};

use crate::diag::Diagnostic;
use crate::modules::ModuleFile;
use crate::paths::rel_path;
use crate::workspace::Package;

/// One occurrence of the deprecated crate in a source file.
#[derive(Debug)]
pub(crate) struct Hit {
    /// Relative to the workspace root.
    pub(crate) file: String,
    pub(crate) line: usize,
    /// 1-based, in characters.
    pub(crate) column: usize,
    /// The name as written (the library name or an alias).
    pub(crate) name: String,
    /// The source line, for human output.
    pub(crate) line_text: String,
}

/// Scans a member's sources for `names` (identifiers, `-` already turned into `_`).
pub(crate) fn scan(
    package: &Package,
    root: &Path,
    root_shown: &Path,
    names: &[String],
) -> Result<Vec<Hit>, Diagnostic> {
    let shown = |path: &Path| match path.strip_prefix(root) {
        Ok(rel) => root_shown.join(rel).display().to_string(),
        Err(_) => path.display().to_string(),
    };
    let mut names: Vec<String> = names.to_vec();
    // (path, text, one of the names occurs as an identifier)
    let mut files: Vec<(PathBuf, String, bool)> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    // Each entry: the candidate files of one module, the first that exists being the module's.
    let mut queue: Vec<Vec<ModuleFile>> =
        target_roots(package).into_iter().map(|p| vec![ModuleFile::root(p)]).collect();
    while let Some(candidates) = queue.pop() {
        // A module whose file does not exist may be cfg'd out: skipped. A file that exists but cannot be read is
        // not checked, so that is an error (rustc could not read it either).
        let mut found_file = None;
        for candidate in candidates {
            match std::fs::read_to_string(&candidate.path) {
                Ok(text) => {
                    found_file = Some((candidate, text));
                    break;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound || candidate.path.is_dir() => {}
                Err(err) => {
                    let problem = if err.kind() == std::io::ErrorKind::InvalidData {
                        "cannot check it: it is not UTF-8 (rustc rejects it too)".to_owned()
                    } else {
                        format!("cannot read: {err}")
                    };
                    return Err(Diagnostic::error("io", problem).in_file(shown(&candidate.path)));
                }
            }
        }
        let Some((file, text)) = found_file else { continue };
        if !seen.insert(file.path.clone()) {
            continue;
        }
        let mut found = false;
        if text.contains("mod") || names.iter().any(|n| text.contains(n.as_str())) {
            let tokens = lex(&text);
            found = mentions(&tokens, &names);
            find_mods(&tokens, &file, &mut queue);
        }
        files.push((file.path, text, found));
    }
    files.sort();

    // `extern crate x as y` adds `y` for the whole member: collect aliases first, until no new one appears.
    loop {
        let mut added = Vec::new();
        for (path, text, found) in &files {
            if *found && text.contains("extern") {
                added.extend(parse(path, text, &names, &shown)?.aliases.into_iter().filter(|a| !names.contains(a)));
            }
        }
        if added.is_empty() {
            break;
        }
        names.extend(added);
        names.dedup();
        for (_, text, found) in &mut files {
            *found = *found || mentions(&lex(text), &names);
        }
    }

    let mut hits = Vec::new();
    for (path, text, _) in files.iter().filter(|(_, _, found)| *found) {
        let finder = parse(path, text, &names, &shown)?;
        let lines: Vec<&str> = text.lines().collect();
        let file = rel_path(root, path);
        for (line, column, name) in finder.hits {
            let line_text = lines.get(line.wrapping_sub(1)).copied().unwrap_or("").to_owned();
            hits.push(Hit { file: file.clone(), line, column, name, line_text });
        }
    }
    Ok(hits)
}

/// A token of the cheap lexical pass: enough to find `mod` items and identifiers, with comments skipped and
/// literals kept apart from code.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    /// The contents of a string literal, between its quotes.
    Str(&'a str),
    Punct(u8),
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Splits Rust source into identifiers, string literals and punctuation; skips whitespace, comments (nested block
/// comments too), char and byte literals and numbers. It never fails: `syn` reports broken files later.
fn lex(text: &str) -> Vec<Tok<'_>> {
    let bytes = text.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    // Index just past the closing quote of a string starting at `i` (after the opening quote).
    let end_of_string = |mut i: usize| {
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        (i.min(bytes.len()), (i + 1).min(bytes.len()))
    };
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' if at(i + 1) == b'/' => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if at(i + 1) == b'*' => {
                let mut depth = 1;
                i += 2;
                while i < bytes.len() && depth > 0 {
                    match (bytes[i], at(i + 1)) {
                        (b'/', b'*') => (depth, i) = (depth + 1, i + 2),
                        (b'*', b'/') => (depth, i) = (depth - 1, i + 2),
                        _ => i += 1,
                    }
                }
            }
            b'"' => {
                let (close, next) = end_of_string(i + 1);
                tokens.push(Tok::Str(&text[i + 1..close]));
                i = next;
            }
            b'\'' => {
                // A char literal ('a', '\n', 'é') or a lifetime ('a), whose name is then lexed as an identifier.
                if at(i + 1) == b'\\' {
                    i += 3;
                    while i < bytes.len() && bytes[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    i += if at(i + 1 + width) == b'\'' { width + 2 } else { 1 };
                }
            }
            b'0'..=b'9' => {
                while i < bytes.len() && is_ident_byte(bytes[i]) {
                    i += 1;
                }
            }
            _ if is_ident_byte(b) => {
                let start = i;
                while i < bytes.len() && is_ident_byte(bytes[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                match (word, at(i)) {
                    ("r" | "br" | "cr", b'"' | b'#') => {
                        let hashes = bytes[i..].iter().take_while(|&&c| c == b'#').count();
                        if at(i + hashes) == b'"' {
                            let closing = format!("\"{}", "#".repeat(hashes));
                            let body = i + hashes + 1;
                            let close = text[body..].find(&closing).map_or(bytes.len(), |n| body + n);
                            tokens.push(Tok::Str(&text[body..close]));
                            i = (close + closing.len()).min(bytes.len());
                        } else if word == "r" && hashes == 1 {
                            // A raw identifier: r#name.
                            let start = i + 1;
                            i = start;
                            while i < bytes.len() && is_ident_byte(bytes[i]) {
                                i += 1;
                            }
                            tokens.push(Tok::Ident(&text[start..i]));
                        } else {
                            tokens.push(Tok::Ident(word));
                        }
                    }
                    ("b" | "c", b'"') => {
                        let (close, next) = end_of_string(i + 1);
                        tokens.push(Tok::Str(&text[i + 1..close]));
                        i = next;
                    }
                    ("b", b'\'') => {
                        i += if at(i + 1) == b'\\' { 3 } else { 2 };
                        while i < bytes.len() && bytes[i] != b'\'' {
                            i += 1;
                        }
                        i += 1;
                    }
                    _ => tokens.push(Tok::Ident(word)),
                }
            }
            _ if b.is_ascii_whitespace() => i += 1,
            _ => {
                tokens.push(Tok::Punct(b));
                i += 1;
            }
        }
    }
    tokens
}

/// Whether one of `names` occurs as an identifier (so the file is worth a full parse).
fn mentions(tokens: &[Tok<'_>], names: &[String]) -> bool {
    tokens.iter().any(|t| matches!(t, Tok::Ident(word) if names.iter().any(|n| n == word)))
}

fn parse<'n>(
    path: &Path,
    text: &str,
    names: &'n [String],
    shown: &dyn Fn(&Path) -> String,
) -> Result<Finder<'n>, Diagnostic> {
    let file = syn::parse_file(text).map_err(|err| {
        let start = err.span().start();
        let mut problem = err.to_string();
        if problem == "cannot parse string into token stream" {
            problem = "unbalanced delimiters or an invalid token".to_owned();
        }
        Diagnostic::error("syntax", format!("Rust source does not parse: {problem}")).at(
            shown(path),
            start.line,
            Some(start.column + 1),
        )
    });
    let mut finder = Finder { names, hits: Vec::new(), aliases: Vec::new() };
    if let Ok(file) = &file {
        finder.visit_file(file);
    }
    proc_macro2::extra::invalidate_current_thread_spans();
    file.map(|_| finder)
}

/// Target roots: the Cargo conventions (`src/lib.rs`, `src/main.rs`, `src/bin/`, `tests/`, `examples/`, `benches/`,
/// `build.rs`) plus the paths the manifest names. Over-including a target that auto-discovery turned off is harmless;
/// a root that does not exist is skipped when it cannot be read. Directory listings instead of `stat` calls keep this
/// cheap on large workspaces.
fn target_roots(package: &Package) -> Vec<PathBuf> {
    // (name, is a directory) of each entry of `dir`.
    let list = |dir: &Path| -> Vec<(String, bool)> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .filter_map(Result::ok)
            .map(|entry| {
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir() || (t.is_symlink() && entry.path().is_dir()));
                (entry.file_name().to_string_lossy().into_owned(), is_dir)
            })
            .collect()
    };
    let dir = &package.dir;
    let top = list(dir);
    let has = |entries: &[(String, bool)], name: &str, want_dir: bool| {
        entries.iter().any(|(n, is_dir)| n == name && *is_dir == want_dir)
    };
    let mut roots = Vec::new();
    // Every `.rs` file of a target directory, and `<dir>/main.rs` of its subdirectories.
    let targets_in = |sub: PathBuf, roots: &mut Vec<PathBuf>| {
        for (name, is_dir) in list(&sub) {
            if is_dir {
                roots.push(sub.join(name).join("main.rs"));
            } else if name.ends_with(".rs") {
                roots.push(sub.join(name));
            }
        }
    };
    if has(&top, "src", true) {
        let src = list(&dir.join("src"));
        for file in ["lib.rs", "main.rs"] {
            if has(&src, file, false) {
                roots.push(dir.join("src").join(file));
            }
        }
        if has(&src, "bin", true) {
            targets_in(dir.join("src/bin"), &mut roots);
        }
    }
    if !package.build_disabled && has(&top, "build.rs", false) {
        roots.push(dir.join("build.rs"));
    }
    for sub in ["tests", "examples", "benches"] {
        if has(&top, sub, true) {
            targets_in(dir.join(sub), &mut roots);
        }
    }
    roots.extend(package.explicit_roots.iter().cloned());
    roots.sort();
    roots.dedup();
    roots
}

/// Finds `mod x;` items (outside function bodies) in `file`'s tokens and queues the candidate files of each.
fn find_mods(tokens: &[Tok<'_>], file: &ModuleFile, queue: &mut Vec<Vec<ModuleFile>>) {
    // One entry per open brace: the name and `#[path]` of an inline module, or `None` for any other block.
    let mut blocks: Vec<Option<(&str, Option<&str>)>> = Vec::new();
    let mut path_attr: Option<&str> = None;
    let mut i = 0;
    while i < tokens.len() {
        let in_items = blocks.iter().all(Option::is_some);
        match tokens[i..] {
            [
                Tok::Punct(b'#'),
                Tok::Punct(b'['),
                Tok::Ident("path"),
                Tok::Punct(b'='),
                Tok::Str(path),
                Tok::Punct(b']'),
                ..,
            ] => {
                path_attr = Some(path);
                i += 6;
                continue;
            }
            [Tok::Ident("mod"), Tok::Ident(name), Tok::Punct(b';'), ..] => {
                if in_items {
                    let inline: Vec<(&str, Option<&str>)> = blocks.iter().flatten().copied().collect();
                    let path = path_attr.map(|p| p.replace("\\\\", "\\"));
                    queue.push(file.child(&inline, name, path.as_deref()));
                }
                i += 3;
            }
            [Tok::Ident("mod"), Tok::Ident(name), Tok::Punct(b'{'), ..] => {
                blocks.push(in_items.then_some((name, path_attr)));
                i += 3;
            }
            [Tok::Punct(b'{'), ..] => {
                blocks.push(None);
                i += 1;
            }
            [Tok::Punct(b'}'), ..] => {
                blocks.pop();
                i += 1;
            }
            _ => i += 1,
        }
        if matches!(tokens[i - 1], Tok::Punct(b';' | b'{' | b'}')) {
            path_attr = None;
        }
    }
}

/// The syntax-tree visitor: paths, `use` trees and `extern crate` items; macro token streams go to [`scan_tokens`].
struct Finder<'n> {
    names: &'n [String],
    /// (line, 1-based column, name)
    hits: Vec<(usize, usize, String)>,
    aliases: Vec<String>,
}

impl Finder<'_> {
    fn check(&mut self, ident: &proc_macro2::Ident) -> bool {
        let name = ident.unraw().to_string();
        if !self.names.contains(&name) {
            return false;
        }
        let start = ident.span().start();
        self.hits.push((start.line, start.column + 1, name));
        true
    }

    fn use_root(&mut self, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => _ = self.check(&p.ident),
            syn::UseTree::Name(n) => _ = self.check(&n.ident),
            syn::UseTree::Rename(r) => _ = self.check(&r.ident),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_root(t)),
            syn::UseTree::Glob(_) => {}
        }
    }
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if (path.leading_colon.is_some() || path.segments.len() > 1)
            && let Some(first) = path.segments.first()
        {
            self.check(&first.ident);
        }
        visit::visit_path(self, path);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_root(&item.tree);
        visit::visit_item_use(self, item);
    }

    fn visit_item_extern_crate(&mut self, item: &'ast syn::ItemExternCrate) {
        if self.check(&item.ident)
            && let Some((_, alias)) = &item.rename
        {
            self.aliases.push(alias.unraw().to_string());
        }
        visit::visit_item_extern_crate(self, item);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        scan_tokens(mac.tokens.clone(), Group::Plain, self);
    }

    fn visit_meta_list(&mut self, list: &'ast syn::MetaList) {
        visit::visit_meta_list(self, list);
        scan_tokens(list.tokens.clone(), Group::Plain, self);
    }
}

/// Where a token group sits, for deciding what a path root is inside it.
#[derive(Clone, Copy, PartialEq)]
enum Group {
    Plain,
    /// `use {a, b}` or `use ::{a, b}`: each item's first identifier is a root.
    UseRoot,
    /// `a::{b, c}`: items continue a path, nothing at their start is a root.
    Relative,
}

/// Token-level matching for macro arguments and `macro_rules!` bodies, where there is no syntax tree: an identifier is
/// a root when it starts a `::` path (not after `x::`, `.`, `$` or `'`), follows `use`, or follows `extern crate`.
fn scan_tokens(tokens: TokenStream, group: Group, finder: &mut Finder<'_>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let colons_before = |i: usize| {
        i >= 2
            && matches!(&tokens[i - 2], TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
            && matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == ':')
    };
    let ident_at =
        |i: Option<usize>, word: &str| matches!(i.map(|i| &tokens[i]), Some(TokenTree::Ident(id)) if id == word);
    // After `x::`, the token before the `::` ends a path segment unless it is a keyword such as `use` or `return`.
    let continues_path = |i: usize| match i.checked_sub(3).map(|j| &tokens[j]) {
        Some(TokenTree::Ident(id)) => !KEYWORDS.contains(&id.to_string().as_str()),
        Some(TokenTree::Punct(p)) => p.as_char() == '>',
        _ => false,
    };
    for i in 0..tokens.len() {
        let prev = i.checked_sub(1);
        let item_start = prev.is_none() || matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == ',');
        match &tokens[i] {
            TokenTree::Group(inner) => {
                let kind = if colons_before(i) && continues_path(i) {
                    Group::Relative
                } else if ident_at(prev, "use") || (colons_before(i) && ident_at(i.checked_sub(3), "use")) {
                    Group::UseRoot
                } else {
                    Group::Plain
                };
                scan_tokens(inner.stream(), kind, finder);
            }
            TokenTree::Ident(ident) => {
                if !finder.names.contains(&ident.unraw().to_string()) {
                    continue;
                }
                if matches!(prev.map(|j| &tokens[j]), Some(TokenTree::Punct(p)) if matches!(p.as_char(), '.' | '$' | '\''))
                    || ident_at(prev, "as")
                    || (group == Group::Relative && item_start)
                {
                    continue;
                }
                let is_extern = ident_at(prev, "crate") && ident_at(i.checked_sub(2), "extern");
                let root = if colons_before(i) {
                    !continues_path(i)
                } else {
                    let colons_after = matches!(tokens.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
                        && matches!(tokens.get(i + 2), Some(TokenTree::Punct(p)) if p.as_char() == ':');
                    is_extern || ident_at(prev, "use") || (group == Group::UseRoot && item_start) || colons_after
                };
                if root
                    && finder.check(ident)
                    && is_extern
                    && ident_at(Some(i + 1).filter(|&j| j < tokens.len()), "as")
                    && let Some(TokenTree::Ident(alias)) = tokens.get(i + 2)
                {
                    finder.aliases.push(alias.unraw().to_string());
                }
            }
            _ => {}
        }
    }
}

/// Keywords that can stand right before a leading `::` (so the path after them is rooted).
const KEYWORDS: &[&str] = &[
    "as", "box", "break", "const", "continue", "dyn", "else", "enum", "fn", "for", "if", "impl", "in", "let", "loop",
    "match", "move", "mut", "pub", "ref", "return", "static", "struct", "type", "unsafe", "use", "where", "while",
    "yield",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(text: &str) -> Vec<&str> {
        lex(text).into_iter().filter_map(|t| if let Tok::Ident(w) = t { Some(w) } else { None }).collect()
    }

    #[test]
    fn lexing_skips_comments_and_literals() {
        let text = r##"/* a /* nested */ b */ x // y
            let s = "q \" r"; let t = r#"u "v" w"#; let c = '"'; let d = b'\''; fn f<'a>(v: &'a str) {} br"z" é1"##;
        assert_eq!(
            idents(text),
            ["x", "let", "s", "let", "t", "let", "c", "let", "d", "fn", "f", "a", "v", "a", "str", "é1"]
        );
        assert!(lex(text).contains(&Tok::Str(r#"u "v" w"#)));
        assert_eq!(idents("r#type::x"), ["type", "x"]);
    }

    #[test]
    fn mod_items_in_inline_modules_and_path_attributes() {
        let mut queue = Vec::new();
        let text = "mod a; pub(crate) mod b { mod c; fn f() { mod inner; } } #[path = \"x/y.rs\"] mod d;";
        let file = ModuleFile { path: "/d/m.rs".into(), mod_rs: false };
        find_mods(&lex(text), &file, &mut queue);
        let found: Vec<(String, bool)> = queue
            .into_iter()
            .map(|candidates| (candidates[0].path.display().to_string(), candidates[0].mod_rs))
            .collect();
        assert_eq!(
            found,
            [("/d/m/a.rs".to_owned(), false), ("/d/m/b/c.rs".to_owned(), false), ("/d/x/y.rs".to_owned(), true)]
        );
    }
}
