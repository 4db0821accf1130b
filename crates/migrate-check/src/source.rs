//! The source scan: finds each occurrence of the deprecated crate's names as the root of a path, a `use` tree or an
//! `extern crate` item in a member's Rust files (also inside macro invocations and `macro_rules!` bodies, and in the
//! code blocks of its library's doc comments, which rustdoc compiles as doctests).
//!
//! Everything runs on the tokens of [`crate::lex`], not on a parse: a file is read once, lexed only when it names
//! one of the crate's names or may declare modules (a `memchr` pre-filter), and a path root is a token pattern.
//! Module files are found by the rules of `docs/migrate-check.md` ("Source files"): `mod name;` wherever it appears
//! in a reached file's tokens (item level, inline modules, macro invocations), `#[path]` and every
//! `#[cfg_attr(.., path = "..")]` alternative, `include!("file.rs")`; where a module's file is comes from the one
//! resolver, [`crate::modules`].

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use memchr::memmem;

use crate::FastSet;
use crate::diag::Diagnostic;
use crate::lex::{self, DocComment, Tok, Token};
use crate::modules::ModuleFile;
use crate::paths::{LineCursor, line_col, normalize, rel_path};
use crate::read::ReadBuffer;
use crate::workspace::Package;

/// Searchers for the fixed words the scan looks for in every file, built once: building one costs about as much as
/// searching a small file with it.
static MOD: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"mod"));
static INCLUDE: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"include"));
static INCLUDE_STR: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"include_str"));
static DOC: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(b"doc"));

/// One occurrence of the deprecated crate in a source file.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    /// Relative to the workspace root.
    pub(crate) file: String,
    pub(crate) line: usize,
    /// 1-based, in characters.
    pub(crate) column: usize,
    /// The name as written (the library name or an alias).
    pub(crate) name: String,
    /// The segments after the name, joined with `::` (`registry::Registry` for `old::registry::Registry`), as far
    /// as they are plain identifiers; empty for the name alone.
    pub(crate) path: String,
    /// In a code block of a doc comment (or of a Markdown file included as documentation).
    pub(crate) doctest: bool,
    /// The source line, for human output.
    pub(crate) line_text: String,
}

/// A module (or included file) waiting to be read.
struct Pending {
    /// Its candidate files: the first that exists is the module's.
    candidates: Vec<ModuleFile>,
    /// For an `include!`d file: the module file it belongs to, whose directory its `mod` items use.
    context: Option<ModuleFile>,
    lib: bool,
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
    loop {
        let (hits, aliases) = scan_with(package, root, &shown, &names)?;
        // `extern crate x as y` adds `y` for the whole member: with a new alias, everything is scanned again (rare).
        let mut added: Vec<String> = aliases.into_iter().filter(|alias| !names.contains(alias)).collect();
        if added.is_empty() {
            return Ok(hits);
        }
        added.sort();
        added.dedup();
        names.extend(added);
    }
}

thread_local! {
    static BUFFER: std::cell::RefCell<ReadBuffer> = std::cell::RefCell::new(ReadBuffer::default());
}

/// One pass over the member's files: each is read once and lexed at most once, for its modules and for its
/// occurrences of `names`. Returns the occurrences and the `extern crate` aliases seen.
fn scan_with(
    package: &Package,
    root: &Path,
    shown: &dyn Fn(&Path) -> String,
    names: &[String],
) -> Result<(Vec<Hit>, Vec<String>), Diagnostic> {
    let finders: Vec<memmem::Finder<'_>> = names.iter().map(|n| memmem::Finder::new(n.as_bytes())).collect();
    let mut hits = Vec::new();
    let mut aliases = Vec::new();
    let mut seen: FastSet<PathBuf> = FastSet::default();
    // A stack: the library root is pushed last, so its whole tree is read before any other target and a file shared
    // with another target is known to be the library's.
    let mut queue: Vec<Pending> = target_roots(package)
        .into_iter()
        .filter(|root| *root != package.lib_root)
        .map(|root| Pending { candidates: vec![ModuleFile::root(root)], context: None, lib: false })
        .collect();
    queue.push(Pending { candidates: vec![ModuleFile::root(package.lib_root.clone())], context: None, lib: true });
    // One buffer for every file a thread reads: no allocation (nor fresh pages) per file or per member.
    BUFFER.with_borrow_mut(|buffer| -> Result<(), Diagnostic> {
        while let Some(pending) = queue.pop() {
            let Some((file, text)) = read_first(pending.candidates, shown, buffer)? else { continue };
            if !seen.insert(file.path.clone()) {
                continue;
            }
            let bytes = text.as_bytes();
            let declarations = declarations(bytes);
            let scan_docs = pending.lib && package.doctest;
            let found = occurrences(&finders, bytes);
            let mentioned =
                mentions_outside_comments(bytes, &found, scan_docs) || (scan_docs && INCLUDE_STR.find(bytes).is_some());
            if declarations.is_empty() && !mentioned {
                continue;
            }
            let skim = lex::skim(text);
            let mut tokens = Vec::with_capacity(256);
            if !declarations.is_empty() {
                let context = pending.context.as_ref().unwrap_or(&file);
                declared_files(text, &skim, &declarations, &file.path, context, pending.lib, &mut tokens, &mut queue);
            }
            if mentioned {
                let rel = rel_path(root, &file.path);
                let mut lines = LineCursor::new(text);
                if let Some(at) = lex::unbalanced(text, &skim.spans) {
                    let (line, column) = line_col(text, at);
                    let problem = "Rust source does not parse: unbalanced delimiters or an invalid token";
                    return Err(Diagnostic::error("syntax", problem).at(shown(&file.path), line, Some(column)));
                }
                for at in in_code(bytes, &found, &skim) {
                    let Some(found) = window_root(text, &skim, at, &mut tokens) else { continue };
                    let (line, column) = lines.line_col(found.at);
                    aliases.extend(found.alias.map(str::to_owned));
                    hits.push(Hit {
                        file: rel.clone(),
                        line,
                        column,
                        name: found.name.to_owned(),
                        path: found.path.join("::"),
                        doctest: false,
                        line_text: lines.line_text(found.at).to_owned(),
                    });
                }
                if scan_docs {
                    doctest_hits(&file.path, text, &mut lines, &skim, &found, names, &finders, root, shown, &mut hits)?;
                }
            }
        }
        Ok(())
    })?;
    Ok((hits, aliases))
}

/// The first of a module's candidate files that exists, read. A module whose file does not exist may be cfg'd out:
/// `None`. A file that exists but cannot be read is not checked, so that is an error (rustc could not read it either).
fn read_first<'b>(
    candidates: Vec<ModuleFile>,
    shown: &dyn Fn(&Path) -> String,
    buffer: &'b mut ReadBuffer,
) -> Result<Option<(ModuleFile, &'b str)>, Diagnostic> {
    let mut read = None;
    for candidate in candidates {
        match std::fs::File::open(&candidate.path).and_then(|mut file| buffer.fill(&mut file)) {
            Ok(()) => {
                read = Some(candidate);
                break;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound || candidate.path.is_dir() => {}
            Err(err) => {
                return Err(Diagnostic::error("io", format!("cannot read: {err}")).in_file(shown(&candidate.path)));
            }
        }
    }
    let Some(file) = read else { return Ok(None) };
    match buffer.text() {
        Ok(text) => Ok(Some((file, text))),
        Err(_) => Err(Diagnostic::error("io", "cannot check it: it is not UTF-8 (rustc rejects it too)")
            .in_file(shown(&file.path))),
    }
}

/// The texts that may declare an out-of-line module or include a file, in order, as `(start, end)`: `mod <name>;`
/// and `include`, even in a comment. Tokens are made of the text, so a file without either declares neither and need
/// not be lexed to find its modules.
fn declarations(bytes: &[u8]) -> Vec<(usize, usize)> {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let space = |b: &u8| b.is_ascii_whitespace();
    let items = MOD.find_iter(bytes).filter_map(|at| {
        if at > 0 && ident(bytes[at - 1]) {
            return None;
        }
        let rest = &bytes[at + 3..];
        let gap = rest.iter().take_while(|b| space(b)).count();
        if gap == 0 {
            return None;
        }
        let name_at = at + 3 + gap + if rest[gap..].starts_with(b"r#") { 2 } else { 0 };
        let name = bytes[name_at..].iter().take_while(|b| ident(**b)).count();
        let semicolon = bytes[name_at + name..].iter().position(|b| !space(b)).map(|k| name_at + name + k)?;
        (name > 0 && bytes[semicolon] == b';').then_some((at, semicolon + 1))
    });
    let mut found: Vec<(usize, usize)> = items.collect();
    found.extend(INCLUDE.find_iter(bytes).map(|at| (at, at + "include".len())));
    found.sort_unstable();
    found
}

/// Queues what a file declares ([`find_mods`]) from as few of its tokens as it can. Most files declare their
/// modules first, and many a `mod tests;` last: the tokens up to a little past the last declaration that sits inside
/// braces, then, for each one after it at the top level (no brace open around it), the tokens from the `;` or `}`
/// before it (its attributes) to a little past it. Where a brace closes what is not open, or a window is too short,
/// the whole file's tokens.
#[allow(clippy::too_many_arguments)] // The scan's state, passed as it is.
fn declared_files<'t>(
    text: &'t str,
    skim: &lex::Skim<'_>,
    declarations: &[(usize, usize)],
    file: &Path,
    context: &ModuleFile,
    lib: bool,
    tokens: &mut Vec<Token<'t>>,
    queue: &mut Vec<Pending>,
) {
    let bytes = text.as_bytes();
    let in_code: Vec<(usize, usize)> =
        declarations.iter().copied().filter(|&(start, _)| skim.span_at(start).is_none()).collect();
    if in_code.is_empty() {
        return;
    }
    let past = |at: usize| {
        let margin = (at + 256).min(bytes.len());
        memchr::memchr(b'\n', &bytes[margin..]).map_or(bytes.len(), |k| margin + k + 1)
    };
    // On a fallback, what was queued from a part of the tokens goes, and everything comes from all of them.
    let queued = queue.len();
    let whole = |tokens: &mut Vec<Token<'t>>, queue: &mut Vec<Pending>| {
        queue.truncate(queued);
        tokens.clear();
        lex::tokens(text, &skim.spans, 0, bytes.len(), tokens);
        let _ = find_mods(tokens, true, usize::MAX, file, context, lib, queue);
    };
    // The depth of braces (in code) at each declaration: the braces after the last one change nothing before it.
    let mut depths = Vec::with_capacity(in_code.len());
    let (mut depth, mut k, mut next) = (0usize, 0, 0);
    for at in memchr::memchr2_iter(b'{', b'}', bytes) {
        while next < in_code.len() && in_code[next].0 < at {
            depths.push(depth);
            next += 1;
        }
        if next == in_code.len() {
            break;
        }
        while spans_before(skim, &mut k, at) {}
        if skim.spans.get(k).is_some_and(|span| span.start <= at) {
            continue;
        }
        if bytes[at] == b'{' {
            depth += 1;
        } else if let Some(less) = depth.checked_sub(1) {
            depth = less;
        } else {
            return whole(tokens, queue);
        }
    }
    // Past the last brace, the depth stays what it is.
    depths.resize(in_code.len(), depth);
    // Everything up to the last declaration inside braces, at once.
    let deep = in_code.iter().zip(&depths).filter(|(_, depth)| **depth > 0).map(|((_, end), _)| *end).max();
    let mut done = 0;
    if let Some(last) = deep {
        let to = past(last);
        tokens.clear();
        lex::tokens(text, &skim.spans, 0, to, tokens);
        if find_mods(tokens, to == bytes.len(), last, file, context, lib, queue).is_err() {
            return whole(tokens, queue);
        }
        done = last;
    }
    for &(start, end) in in_code.iter().filter(|(start, _)| *start >= done) {
        // The last `;` or `}` in code before it (never a `{`: no brace is open around it).
        let mut boundary = start;
        let from = loop {
            match memchr::memrchr3(b';', b'{', b'}', &bytes[..boundary]) {
                None => break 0,
                Some(at) if skim.span_at(at).is_some() => boundary = at,
                Some(at) if bytes[at] == b'{' => return whole(tokens, queue),
                Some(at) => break at + 1,
            }
        };
        let to = past(end);
        tokens.clear();
        lex::tokens(text, &skim.spans, from, to, tokens);
        if find_mods(tokens, to == bytes.len(), end, file, context, lib, queue).is_err() {
            return whole(tokens, queue);
        }
    }
}

/// Moves `k` past the spans that end at or before `at`; whether it moved.
fn spans_before(skim: &lex::Skim<'_>, k: &mut usize, at: usize) -> bool {
    let moved = skim.spans.get(*k).is_some_and(|span| span.end <= at);
    if moved {
        *k += 1;
    }
    moved
}

/// Every occurrence of one of the names in `bytes`, anywhere (code, comments, literals, or inside a longer word):
/// `(offset, length)`, in order.
fn occurrences(finders: &[memmem::Finder<'_>], bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut found: Vec<(usize, usize)> = Vec::new();
    for finder in finders {
        found.extend(finder.find_iter(bytes).map(|at| (at, finder.needle().len())));
    }
    found.sort_unstable();
    found
}

/// Whether one of the `found` occurrences is other than on a line that is a plain comment: a line whose first
/// non-blank characters are `//` holds no code whatever comes before it (if it is inside a string or a block comment,
/// it is not code either). Lines of doc comments (`///`, `//!`) count where `docs` says they are doctested.
fn mentions_outside_comments(bytes: &[u8], found: &[(usize, usize)], docs: bool) -> bool {
    found.iter().any(|&(at, _)| {
        let start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |n| n + 1);
        let line = &bytes[start..at];
        let code = line.iter().position(|b| !b.is_ascii_whitespace()).map_or(&line[line.len()..], |n| &line[n..]);
        match code {
            [b'/', b'/', b'/', b'/', ..] => false,
            [b'/', b'/', b'/' | b'!', ..] => docs,
            [b'/', b'/', ..] => false,
            _ => true,
        }
    })
}

/// The offsets of the `found` occurrences that are in code as whole words (not inside a longer identifier, a
/// comment or a literal).
fn in_code(bytes: &[u8], found: &[(usize, usize)], skim: &lex::Skim<'_>) -> Vec<usize> {
    let inside_a_word = |at: usize, len: usize| {
        (at > 0 && lex::is_ident_byte(bytes[at - 1])) || bytes.get(at + len).is_some_and(|b| lex::is_ident_byte(*b))
    };
    let mut code: Vec<usize> = found
        .iter()
        .filter(|&&(at, len)| !inside_a_word(at, len) && skim.span_at(at).is_none())
        .map(|&(at, _)| at)
        .collect();
    code.dedup();
    code
}

/// Whether one of the names occurs in `text` at all (in code, a comment or a literal: the lexer decides which).
fn mentions(finders: &[memmem::Finder<'_>], text: &str) -> bool {
    finders.iter().any(|finder| finder.find(text.as_bytes()).is_some())
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

/// What an open brace opened, for module discovery.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Block<'a> {
    /// `mod name {`, with the module's own `#[path]`.
    Inline(&'a str, Option<&'a str>),
    /// The token tree of a macro invocation or definition: `mod` items in it are the enclosing module's.
    Macro,
    /// Any other block (a function body, an `impl`, a struct): no module can be declared in it.
    Opaque,
}

/// The identifier at `i` (raw or not).
fn ident<'a>(tokens: &[Token<'a>], i: usize) -> Option<&'a str> {
    match tokens.get(i) {
        Some(Token { tok: Tok::Ident(word) | Tok::RawIdent(word), .. }) => Some(word),
        _ => None,
    }
}

fn string<'a>(tokens: &[Token<'a>], i: usize) -> Option<&'a str> {
    match tokens.get(i) {
        Some(Token { tok: Tok::Str(text), .. }) => Some(text),
        _ => None,
    }
}

fn punct(tokens: &[Token<'_>], i: usize, c: u8) -> bool {
    matches!(tokens.get(i), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
}

fn path_sep(tokens: &[Token<'_>], i: usize) -> bool {
    matches!(tokens.get(i), Some(Token { tok: Tok::PathSep, .. }))
}

/// The index just past a balanced group that opens at `open` (a `(`), or the end.
fn close_of(tokens: &[Token<'_>], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token.tok {
            Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
            Tok::Punct(b')' | b']' | b'}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    tokens.len()
}

/// Finds the `mod name;` items of a file (in `context`'s module: the file itself, or the module that `include!`s
/// it) and its `include!("..")` files, and queues their candidate files. `tokens` may be the first of the file's
/// (`whole: false`), reaching past `last`, the end of the last text that may declare something: `Err(Short)` when
/// the rules look past them (and then nothing is queued).
fn find_mods(
    tokens: &[Token<'_>],
    whole: bool,
    last: usize,
    file: &Path,
    context: &ModuleFile,
    lib: bool,
    queue: &mut Vec<Pending>,
) -> Result<(), Short> {
    let queued = queue.len();
    let short = |queue: &mut Vec<Pending>| {
        queue.truncate(queued);
        Err(Short)
    };
    let mut blocks: Vec<Block<'_>> = Vec::new();
    // The `#[path]` and `#[cfg_attr(.., path = ..)]` values of the item being read.
    let mut path_attr: Option<&str> = None;
    let mut alternatives: Vec<&str> = Vec::new();
    let unescape = |path: &str| path.replace("\\\\", "\\");
    let mut i = 0;
    while i < tokens.len() {
        // Nothing after the last candidate declares anything. The rules read up to six tokens from an attribute's
        // `#` (and to the end of a `cfg_attr`), three from a `mod`, four from an `include`.
        if tokens[i].at >= last {
            break;
        }
        let reads = match tokens[i].tok {
            Tok::Punct(b'#') => 6,
            Tok::Ident("mod") => 3,
            Tok::Ident("include") => 4,
            _ => 0,
        };
        if !whole && i + reads > tokens.len() {
            return short(queue);
        }
        let in_items = !blocks.contains(&Block::Opaque);
        if punct(tokens, i, b'#') {
            let open = if punct(tokens, i + 1, b'!') { i + 2 } else { i + 1 };
            if punct(tokens, open, b'[') {
                if ident(tokens, open + 1) == Some("path")
                    && punct(tokens, open + 2, b'=')
                    && let Some(path) = string(tokens, open + 3)
                {
                    path_attr = Some(path);
                    i = open + 4;
                    continue;
                }
                if ident(tokens, open + 1) == Some("cfg_attr") && punct(tokens, open + 2, b'(') {
                    let end = close_of(tokens, open + 2);
                    if !whole && end >= tokens.len() {
                        return short(queue);
                    }
                    for j in open + 3..end {
                        if ident(tokens, j) == Some("path")
                            && punct(tokens, j + 1, b'=')
                            && let Some(path) = string(tokens, j + 2)
                        {
                            alternatives.push(path);
                        }
                    }
                    i = end;
                    continue;
                }
            }
        }
        match tokens[i].tok {
            Tok::Ident("mod") if ident(tokens, i + 1).is_some() && punct(tokens, i + 2, b';') => {
                let name = ident(tokens, i + 1).unwrap_or_default();
                if in_items {
                    let inline: Vec<(&str, Option<&str>)> = blocks
                        .iter()
                        .filter_map(|block| if let Block::Inline(n, p) = block { Some((*n, *p)) } else { None })
                        .collect();
                    // The default file (or the `#[path]` one), and each `cfg_attr` alternative that exists.
                    let default = path_attr.map(unescape);
                    queue.push(Pending {
                        candidates: context.child(&inline, name, default.as_deref()),
                        context: None,
                        lib,
                    });
                    for alternative in alternatives.drain(..) {
                        let candidates = context.child(&inline, name, Some(&unescape(alternative)));
                        queue.push(Pending { candidates, context: None, lib });
                    }
                }
                i += 3;
            }
            Tok::Ident("mod") if ident(tokens, i + 1).is_some() && punct(tokens, i + 2, b'{') => {
                let name = ident(tokens, i + 1).unwrap_or_default();
                blocks.push(if in_items { Block::Inline(name, path_attr) } else { Block::Opaque });
                i += 3;
            }
            Tok::Ident("include")
                if punct(tokens, i + 1, b'!') && punct(tokens, i + 2, b'(') && string(tokens, i + 3).is_some() =>
            {
                // `include!("x.rs")` is relative to the file that has it; its items belong to this module.
                let included = string(tokens, i + 3).unwrap_or_default();
                let path = normalize(&file.parent().unwrap_or(Path::new("")).join(unescape(included)));
                let candidates = vec![ModuleFile { path, mod_rs: context.mod_rs }];
                queue.push(Pending { candidates, context: Some(context.clone()), lib });
                i += 4;
            }
            Tok::Punct(b'{') => {
                let after_bang = punct(tokens, i.wrapping_sub(1), b'!')
                    || (ident(tokens, i.wrapping_sub(1)).is_some() && punct(tokens, i.wrapping_sub(2), b'!'));
                let macro_tree = blocks.last() == Some(&Block::Macro) || after_bang;
                blocks.push(if macro_tree { Block::Macro } else { Block::Opaque });
                i += 1;
            }
            Tok::Punct(b'}') => {
                blocks.pop();
                i += 1;
            }
            _ => i += 1,
        }
        if matches!(tokens[i - 1].tok, Tok::Punct(b';' | b'{' | b'}')) {
            path_attr = None;
            alternatives.clear();
        }
    }
    Ok(())
}

/// The index just past the `<..>` that opens at `open`.
fn after_generics(tokens: &[Token<'_>], open: usize) -> usize {
    let mut depth = 0usize;
    // `(` and `[` inside the arguments (`[u8; 4]`, `Fn(A) -> B`), where `;` and `>` are not the arguments' own.
    let mut nested = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token.tok {
            Tok::Punct(b'(' | b'[') => nested += 1,
            Tok::Punct(b')' | b']') if nested > 0 => nested -= 1,
            _ if nested > 0 => {}
            Tok::Punct(b'<') => depth += 1,
            // `->` inside generics (`Fn() -> T`) is not a closing angle.
            Tok::Punct(b'>') if !(i > 0 && punct(tokens, i - 1, b'-') && tokens[i - 1].at + 1 == token.at) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            Tok::Punct(b';' | b'{' | b'}') => return i,
            _ => {}
        }
    }
    tokens.len()
}

/// One path root found in tokens.
#[derive(Debug)]
struct Root<'a> {
    at: usize,
    name: &'a str,
    /// The segments after the name, as far as they are plain identifiers.
    path: Vec<&'a str>,
    /// `extern crate name as alias`.
    alias: Option<&'a str>,
}

/// Where a token group sits, for deciding what a path root is inside it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Group {
    Plain,
    /// `use {a, b}` or `use ::{a, b}`: each item's first identifier is a root.
    UseRoot,
    /// `a::{b, c}`: items continue a path, nothing at their start is a root.
    Relative,
    /// Opened before the window's first tokens, or too close to them to tell.
    Unknown,
}

/// Keywords that can stand right before a leading `::` (so the path after them is rooted).
const KEYWORDS: &[&str] = &[
    "as", "box", "break", "const", "continue", "dyn", "else", "enum", "fn", "for", "if", "impl", "in", "let", "loop",
    "match", "move", "mut", "pub", "ref", "return", "static", "struct", "type", "unsafe", "use", "where", "while",
    "yield",
];

/// Which ends of a file a run of tokens reaches: the token rules look a few tokens back and forward, and a window
/// that stops short of what they look at cannot decide.
#[derive(Debug, Clone, Copy)]
struct Reach {
    start: bool,
    end: bool,
}

/// The window around an occurrence is too short for the token rules to decide.
struct Short;

/// The token before the `::` at `i - 1` ends a path segment (so the `::` continues a path).
fn continues_path(tokens: &[Token<'_>], i: usize) -> bool {
    match i.checked_sub(2).map(|j| tokens[j].tok) {
        Some(Tok::Ident(word)) => !KEYWORDS.contains(&word),
        Some(Tok::RawIdent(_)) => true,
        // `Vec<T>::x` continues a path; `-> ::x` and `=> ::x` start one.
        Some(Tok::Punct(b'>')) => {
            !(i >= 3
                && matches!(tokens[i - 3].tok, Tok::Punct(b'-' | b'='))
                && tokens[i - 3].at + 1 == tokens[i - 2].at)
        }
        _ => false,
    }
}

/// What the group that opens at token `i` (a delimiter) is.
fn group_at(tokens: &[Token<'_>], i: usize, reach: Reach) -> Group {
    let Tok::Punct(open) = tokens[i].tok else { return Group::Plain };
    if open != b'{' {
        return Group::Plain;
    }
    // The rules below look three tokens back.
    if i < 3 && !reach.start {
        return Group::Unknown;
    }
    let prev = i.checked_sub(1);
    let after_sep = prev.is_some_and(|p| path_sep(tokens, p));
    let use_at = |j: Option<usize>| j.and_then(|j| ident(tokens, j)) == Some("use");
    if after_sep && continues_path(tokens, i) {
        Group::Relative
    } else if use_at(prev) || (after_sep && use_at(i.checked_sub(2))) {
        Group::UseRoot
    } else {
        Group::Plain
    }
}

/// Each occurrence of one of `names` as the root of a path, a `use` tree or an `extern crate` item in `tokens` (a
/// whole file): see [`root_at`].
fn path_roots<'a>(tokens: &[Token<'a>], names: &[String]) -> Vec<Root<'a>> {
    let reach = Reach { start: true, end: true };
    let mut roots = Vec::new();
    let mut groups: Vec<(Group, usize)> = Vec::new();
    for i in 0..tokens.len() {
        match tokens[i].tok {
            Tok::Punct(b'{' | b'(' | b'[') => groups.push((group_at(tokens, i, reach), i)),
            Tok::Punct(b'}' | b')' | b']') => _ = groups.pop(),
            Tok::Ident(word) | Tok::RawIdent(word) if names.iter().any(|n| n == word) => {
                let group = groups.last().copied().unwrap_or((Group::Plain, usize::MAX));
                if let Ok(Some(root)) = root_at(tokens, i, group, reach) {
                    roots.push(root);
                }
            }
            _ => {}
        }
    }
    roots
}

/// Whether the identifier at token `i` is the root of a path, a `use` tree or an `extern crate` item: an identifier
/// that starts a `::` path (not one after `x::`, `.` or `$`), follows `use` or `extern crate`, starts an item of a
/// `use {..}` group, or follows `as` and starts a path (`<T as name::Trait>`). The same rules hold in code, macro
/// arguments and `macro_rules!` bodies: they are all tokens. `group` is the innermost group around it and the token
/// that opens it; `Err(Short)` when `tokens` (a window that does not `reach` the file's ends) stop short of what the
/// rules look at.
fn root_at<'a>(tokens: &[Token<'a>], i: usize, group: (Group, usize), reach: Reach) -> Result<Option<Root<'a>>, Short> {
    let (Tok::Ident(word) | Tok::RawIdent(word)) = tokens[i].tok else { return Ok(None) };
    // The rules look three tokens back, and forward as far as `short` is asked.
    if i < 3 && !reach.start {
        return Err(Short);
    }
    let short = |k: usize| !reach.end && k >= tokens.len();
    if short(i + 3) {
        return Err(Short);
    }
    let prev = i.checked_sub(1);
    let ident_at = |i: Option<usize>, word: &str| i.and_then(|i| ident(tokens, i)) == Some(word);
    let (group, open) = group;
    let item_start = prev.is_none_or(|p| p == open || punct(tokens, p, b','));
    // After `.` (a field or method) or `$` (a macro variable), not a root; after `..` (a range or a struct's base),
    // it may be.
    let range = prev.is_some_and(|p| p > 0 && punct(tokens, p - 1, b'.') && tokens[p - 1].at + 1 == tokens[p].at);
    if prev.is_some_and(|p| (punct(tokens, p, b'.') && !range) || punct(tokens, p, b'$')) {
        return Ok(None);
    }
    // `name::x` starts a path; `name::<T>` is one segment with generic arguments, unless `::x` follows.
    let next_sep = if path_sep(tokens, i + 1) && punct(tokens, i + 2, b'<') {
        let after = after_generics(tokens, i + 2);
        if short(after) {
            return Err(Short);
        }
        path_sep(tokens, after)
    } else {
        path_sep(tokens, i + 1)
    };
    // After `as`, a name is an alias (`use x as name;`) unless a path goes on from it: `as name::Trait`, or
    // `<T as name>::Item`, which is the path `name::Item` with a self type.
    let after_name = if punct(tokens, i + 1, b'<') { after_generics(tokens, i + 1) } else { i + 1 };
    if short(after_name + 1) {
        return Err(Short);
    }
    let qualified = punct(tokens, after_name, b'>') && path_sep(tokens, after_name + 1);
    if ident_at(prev, "as") && !next_sep && !qualified {
        return Ok(None);
    }
    if item_start && (group == Group::Unknown || (group == Group::Plain && !reach.start && open == usize::MAX)) {
        return Err(Short);
    }
    if group == Group::Relative && item_start {
        return Ok(None);
    }
    let is_extern = ident_at(prev, "crate") && ident_at(i.checked_sub(2), "extern");
    let root = if prev.is_some_and(|p| path_sep(tokens, p)) {
        !continues_path(tokens, i)
    } else {
        is_extern
            || ident_at(prev, "use")
            || (group == Group::UseRoot && item_start)
            || next_sep
            || (qualified && ident_at(prev, "as"))
    };
    if !root {
        return Ok(None);
    }
    let mut path = Vec::new();
    let mut j = i;
    loop {
        if short(j + 2) {
            return Err(Short);
        }
        let Some(segment) = ident(tokens, j + 2).filter(|_| path_sep(tokens, j + 1)) else { break };
        path.push(segment);
        j += 2;
    }
    let alias = if is_extern && ident(tokens, i + 1) == Some("as") { ident(tokens, i + 2) } else { None };
    Ok(Some(Root { at: tokens[i].at, name: word, path, alias }))
}

/// The path root at byte `at` of `text`, an occurrence of a name in code, decided on the tokens of a window of lines
/// around it, widened until the rules have every token they look at (the whole file at worst, so the answer is
/// always the whole file's).
fn window_root<'a>(text: &'a str, skim: &lex::Skim<'_>, at: usize, tokens: &mut Vec<Token<'a>>) -> Option<Root<'a>> {
    let bytes = text.as_bytes();
    let line_start = |at: usize| memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |k| k + 1);
    let (mut back, mut forward) = (2, 2);
    loop {
        // From the start of the line `back` lines up to that of the line `forward` lines down. A line start is a
        // token boundary unless a comment or a literal runs over it; then the span's start is.
        let mut from = line_start(at);
        for _ in 0..back {
            if from == 0 {
                break;
            }
            from = line_start(from - 1);
        }
        if let Some(span) = skim.span_at(from) {
            from = span.start;
        }
        let mut to = at;
        for _ in 0..forward {
            match memchr::memchr(b'\n', &bytes[to..]) {
                Some(k) => to += k + 1,
                None => {
                    to = bytes.len();
                    break;
                }
            }
        }
        let reach = Reach { start: from == 0, end: to >= text.len() };
        tokens.clear();
        lex::tokens(text, &skim.spans, from, to, tokens);
        // The occurrence's token: `name` or `r#name`.
        let next = tokens.partition_point(|token| token.at < at);
        let i = if tokens.get(next).is_some_and(|token| token.at == at) {
            next
        } else {
            // `r#name`: the token starts at the `r`.
            next.checked_sub(1).filter(|&i| matches!(tokens[i].tok, Tok::RawIdent(_)) && tokens[i].at + 2 == at)?
        };
        let mut groups: Vec<(Group, usize)> = Vec::new();
        for k in 0..i {
            match tokens[k].tok {
                Tok::Punct(b'{' | b'(' | b'[') => groups.push((group_at(tokens, k, reach), k)),
                Tok::Punct(b'}' | b')' | b']') => _ = groups.pop(),
                _ => {}
            }
        }
        let group = groups.last().copied().unwrap_or((Group::Plain, usize::MAX));
        match root_at(tokens, i, group, reach) {
            Ok(root) => return root,
            Err(Short) => (back, forward) = (back * 4, forward * 4),
        }
    }
}

/// One line of documentation text: where it is written and what it says.
#[derive(Debug, Clone, Copy)]
struct DocLine<'t> {
    /// 1-based line in the file that holds the text.
    line: usize,
    /// 1-based column (in characters) of `text`'s first character.
    column: usize,
    text: &'t str,
}

/// The documentation of a file, in runs of lines that rustdoc reads as one Markdown text: consecutive line doc
/// comments of one style, each block doc comment, each `#[doc = ".."]` string, each Markdown file included with
/// `#[doc = include_str!("..")]` (returned with its path and text). Runs of doc comments are made only where
/// `wanted` says the byte range they span holds something to look for.
/// `tokens` are the file's, or none when it has no `doc =` in code.
fn doc_runs<'t>(
    index: &mut LineCursor<'t>,
    docs: &[DocComment<'t>],
    tokens: &[Token<'t>],
    wanted: &dyn Fn(usize, usize) -> bool,
) -> (Vec<Vec<DocLine<'t>>>, Vec<PathBuf>) {
    let text = index.text();
    let mut runs: Vec<Vec<DocLine<'t>>> = Vec::new();
    let end_of = |doc: &DocComment<'_>| doc.at + doc.body.len();
    // The next line doc comment continues the run: of the same style, on the next line, nothing but blanks between.
    let continues = |before: &DocComment<'_>, next: &DocComment<'_>| {
        let between = &text.as_bytes()[end_of(before)..next.at - 3];
        // Blanks, one line break among them (looked at only as far as it can be true).
        let blanks = between.iter().position(|b| !b.is_ascii_whitespace()).is_none();
        !next.block && next.inner == before.inner && blanks && memchr::memchr_iter(b'\n', between).count() == 1
    };
    let mut k = 0;
    while k < docs.len() {
        let first = docs[k];
        if !first.block {
            let mut end = k + 1;
            while end < docs.len() && continues(&docs[end - 1], &docs[end]) {
                end += 1;
            }
            if wanted(first.at, end_of(&docs[end - 1])) {
                let lines = docs[k..end].iter().map(|doc| {
                    let (line, column) = index.line_col(doc.at);
                    DocLine { line, column, text: doc.body.strip_suffix('\r').unwrap_or(doc.body) }
                });
                runs.push(lines.collect());
            }
            k = end;
            continue;
        }
        k += 1;
        let DocComment { body, at, .. } = first;
        if !wanted(at, at + body.len()) {
            continue;
        }
        let (line, column) = index.line_col(at);
        let mut lines: Vec<DocLine<'t>> = body
            .split('\n')
            .enumerate()
            .map(|(k, part)| DocLine {
                line: line + k,
                column: if k == 0 { column } else { 1 },
                text: part.strip_suffix('\r').unwrap_or(part),
            })
            .collect();
        // rustdoc drops a ` * ` decoration when every line after the first has one.
        let decorated = lines.len() > 1
            && lines[1..].iter().filter(|l| !l.text.trim().is_empty()).all(|l| l.text.trim_start().starts_with('*'));
        if decorated {
            for l in lines[1..].iter_mut().filter(|l| !l.text.trim().is_empty()) {
                let lead = l.text.len() - l.text.trim_start().len();
                l.column += l.text[..lead].chars().count() + 1;
                l.text = &l.text[lead + 1..];
            }
        }
        runs.push(lines);
    }
    let mut included = Vec::new();
    for i in 0..tokens.len() {
        if !punct(tokens, i, b'#') {
            continue;
        }
        let open = if punct(tokens, i + 1, b'!') { i + 2 } else { i + 1 };
        if !(punct(tokens, open, b'[') && ident(tokens, open + 1) == Some("doc") && punct(tokens, open + 2, b'=')) {
            continue;
        }
        if let Some(body) = string(tokens, open + 3) {
            runs.push(attribute_lines(index, body, tokens[open + 3].at));
        } else if ident(tokens, open + 3) == Some("include_str")
            && punct(tokens, open + 4, b'!')
            && punct(tokens, open + 5, b'(')
            && let Some(file) = string(tokens, open + 6)
        {
            included.push(PathBuf::from(file.replace("\\\\", "\\")));
        }
    }
    (runs, included)
}

/// The lines of a `#[doc = ".."]` string as rustdoc reads them: a `\n` escape breaks a line like a newline does.
/// Other escapes stay as written (two characters), so that columns stay those of the file.
fn attribute_lines<'t>(index: &mut LineCursor<'_>, body: &'t str, at: usize) -> Vec<DocLine<'t>> {
    let (mut line, mut column) = index.line_col(at);
    let mut lines = Vec::new();
    let mut start = 0;
    let mut start_column = column;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let char_width = body[i..].chars().next().map_or(1, char::len_utf8);
        let (breaks, width) = match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'n')) => (true, 2),
            (b'\n', _) => (true, 1),
            (b'\\', Some(b'\\' | b'"' | b'\'' | b't' | b'r' | b'0')) => (false, 2),
            _ => (false, char_width),
        };
        if breaks {
            lines.push(DocLine { line, column: start_column, text: &body[start..i] });
            if width == 1 {
                (line, column) = (line + 1, 1);
            } else {
                column += 2;
            }
            start = i + width;
            start_column = column;
        } else {
            column += body[i..i + width].chars().count();
        }
        i += width;
    }
    lines.push(DocLine { line, column: start_column, text: &body[start..] });
    lines
}

/// Whether rustdoc compiles a fenced block with this info string.
fn compiled(info: &str) -> bool {
    info.split(|c: char| c == ',' || c.is_whitespace()).filter(|word| !word.is_empty()).all(|word| {
        matches!(word, "rust" | "no_run" | "should_panic" | "compile_fail" | "standalone_crate" | "test_harness")
            || word
                .strip_prefix("edition")
                .is_some_and(|year| !year.is_empty() && year.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The code lines of the doctests in one run of documentation, as rustdoc compiles them: fenced blocks whose info
/// string [`compiled`] accepts, with the run's common indentation removed and lines hidden with `# ` kept.
fn doctest_blocks<'t>(run: &[DocLine<'t>]) -> Vec<Vec<DocLine<'t>>> {
    // A fence starts its line (after at most the run's indentation and three spaces).
    let fence = |text: &str| matches!(text.trim_start().as_bytes(), [b'`', b'`', b'`', ..] | [b'~', b'~', b'~', ..]);
    if !run.iter().any(|l| fence(l.text)) {
        return Vec::new();
    }
    let indent = |text: &str| text.len() - text.trim_start_matches([' ', '\t']).len();
    let common = run.iter().filter(|l| !l.text.trim().is_empty()).map(|l| indent(l.text)).min().unwrap_or(0);
    let mut blocks = Vec::new();
    // The open fence: its character, its length, whether it is compiled, and the lines so far.
    let mut open: Option<(u8, usize, bool, Vec<DocLine<'t>>)> = None;
    for l in run {
        let cut = common.min(indent(l.text));
        let line = DocLine { line: l.line, column: l.column + cut, text: &l.text[cut..] };
        let fence_text = line.text.trim_start_matches(' ');
        let fence_indent = line.text.len() - fence_text.len();
        let fence = fence_text.as_bytes().first().copied().filter(|c| *c == b'`' || *c == b'~');
        let fence_len = fence.map_or(0, |c| fence_text.bytes().take_while(|b| *b == c).count());
        match &mut open {
            Some((c, len, is_code, lines)) => {
                if fence == Some(*c) && fence_len >= *len && fence_text[fence_len..].trim().is_empty() {
                    if *is_code {
                        blocks.push(std::mem::take(lines));
                    }
                    open = None;
                } else if *is_code {
                    // `# code` is hidden from the rendered docs but compiled; `##` stands for a literal `#`.
                    let trimmed = line.text.trim_start();
                    let lead = line.text.len() - trimmed.len();
                    let skip = if trimmed == "#" {
                        1
                    } else if trimmed.starts_with("# ") || trimmed.starts_with("##") {
                        if trimmed.starts_with("##") { 1 } else { 2 }
                    } else {
                        0
                    };
                    let shown = if skip > 0 { lead + skip } else { 0 };
                    lines.push(DocLine { line: line.line, column: line.column + shown, text: &line.text[shown..] });
                }
            }
            None if fence_indent <= 3 && fence_len >= 3 => {
                let info = &fence_text[fence_len..];
                open = Some((fence.unwrap_or(b'`'), fence_len, compiled(info), Vec::new()));
            }
            None => {}
        }
    }
    // A block left open ends with the documentation.
    if let Some((_, _, true, lines)) = open {
        blocks.push(lines);
    }
    blocks
}

/// The occurrences of `names` in the doctests of a library file (and of the Markdown files it includes as docs).
#[allow(clippy::too_many_arguments)] // The scan's state, passed as it is; a struct would only rename it.
fn doctest_hits<'t>(
    path: &Path,
    text: &'t str,
    lines: &mut LineCursor<'t>,
    skim: &lex::Skim<'t>,
    found: &[(usize, usize)],
    names: &[String],
    finders: &[memmem::Finder<'_>],
    root: &Path,
    shown: &dyn Fn(&Path) -> String,
    hits: &mut Vec<Hit>,
) -> Result<(), Diagnostic> {
    // `#[doc = ".."]` and `#[doc = include_str!("..")]` are read from tokens, where the file has `doc =` in code.
    let bytes = text.as_bytes();
    let attributes = DOC.find_iter(bytes).any(|at| {
        let after = bytes[at + 3..].iter().find(|b| !b.is_ascii_whitespace());
        after == Some(&b'=') && !(at > 0 && lex::is_ident_byte(bytes[at - 1])) && skim.span_at(at).is_none()
    });
    let mut tokens = Vec::new();
    if attributes {
        lex::tokens(text, &skim.spans, 0, text.len(), &mut tokens);
    }
    // Only the doc comments that hold one of the names can have a doctest that names it.
    let wanted = |start: usize, end: usize| {
        let k = found.partition_point(|&(at, _)| at < start);
        found.get(k).is_some_and(|&(at, _)| at < end)
    };
    let (runs, included) = doc_runs(lines, &skim.docs, &tokens, &wanted);
    let mut found = |runs: &[Vec<DocLine<'_>>], path: &Path, text: &str| {
        let rel = rel_path(root, path);
        for run in runs.iter().filter(|run| run.iter().any(|l| mentions(finders, l.text))) {
            for block in doctest_blocks(run) {
                let code: String = block.iter().map(|l| format!("{}\n", l.text)).collect();
                if !mentions(finders, &code) {
                    continue;
                }
                let starts: Vec<usize> = block
                    .iter()
                    .scan(0, |offset, l| {
                        let start = *offset;
                        *offset += l.text.len() + 1;
                        Some(start)
                    })
                    .collect();
                for found in path_roots(&lex::lex(&code), names) {
                    let k = starts.partition_point(|start| *start <= found.at) - 1;
                    let l = block[k];
                    let column = l.column + code[starts[k]..found.at].chars().count();
                    hits.push(Hit {
                        file: rel.clone(),
                        line: l.line,
                        column,
                        name: found.name.to_owned(),
                        path: found.path.join("::"),
                        doctest: true,
                        line_text: crate::paths::line_text(text, l.line).to_owned(),
                    });
                }
            }
        }
    };
    found(&runs, path, text);
    for markdown in included {
        let path = normalize(&path.parent().unwrap_or(Path::new("")).join(markdown));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            // rustc reports a missing file; a cfg'd-out attribute may name one.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Diagnostic::error("io", format!("cannot read: {err}")).in_file(shown(&path))),
        };
        let lines: Vec<DocLine<'_>> = text
            .split('\n')
            .enumerate()
            .map(|(k, part)| DocLine { line: k + 1, column: 1, text: part.strip_suffix('\r').unwrap_or(part) })
            .collect();
        found(&[lines], &path, &text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mods(text: &str, file: &str, mod_rs: bool) -> Vec<Vec<String>> {
        let mut queue = Vec::new();
        let context = ModuleFile { path: file.into(), mod_rs };
        assert!(find_mods(&lex::lex(text), true, usize::MAX, Path::new(file), &context, false, &mut queue).is_ok());
        queue
            .into_iter()
            .map(|pending| pending.candidates.iter().map(|c| c.path.display().to_string()).collect())
            .collect()
    }

    fn first(text: &str) -> Vec<String> {
        mods(text, "/d/m.rs", false).into_iter().map(|candidates| candidates[0].clone()).collect()
    }

    #[test]
    fn names_on_plain_comment_lines_do_not_make_a_file_worth_lexing() {
        let finders = [memmem::Finder::new(b"old")];
        let mentions = |bytes: &[u8], docs: bool| mentions_outside_comments(bytes, &occurrences(&finders, bytes), docs);
        assert!(!mentions(b"fn f() {}\n  // migrated from old::x\n//// old\n", true));
        assert!(mentions(b"// a\nuse old::x;\n", false));
        assert!(mentions(b"let s = \"old\"; // the lexer decides\n", false));
        assert!(mentions(b"/// ```\n/// old::x();\n", true));
        assert!(!mentions(b"/// ```\n/// old::x();\n", false));
    }

    #[test]
    fn only_files_with_a_mod_item_or_an_include_are_lexed_for_modules() {
        for text in ["mod a;", "pub mod  b ;", "mod\n r#c\n;", "// mod d;", "include!(\"x\");"] {
            assert!(!declarations(text.as_bytes()).is_empty(), "{text}");
        }
        for text in ["mod tests { }", "model;", "fn module() {}", "a.mod_x;", "mod x = 1;"] {
            assert_eq!(declarations(text.as_bytes()), [], "{text}");
        }
    }

    #[test]
    fn mod_items_in_inline_modules_and_path_attributes() {
        let text = "mod a; pub(crate) mod b { mod c; fn f() { mod inner; } } #[path = \"x/y.rs\"] mod d;";
        assert_eq!(first(text), ["/d/m/a.rs", "/d/m/b/c.rs", "/d/x/y.rs"]);
        assert_eq!(mods("mod a;", "/d/m.rs", false), [["/d/m/a.rs", "/d/m/a/mod.rs"]]);
    }

    #[test]
    fn mod_items_in_macro_invocations_of_every_shape() {
        let text = "cfg_if::cfg_if! { if #[cfg(unix)] { mod unix; } else { mod other; } }\n\
                    cfg_rt! { pub(crate) mod rt; }\n\
                    cfg_select! { unix => { mod sel; } _ => {} }\n\
                    m!(mod paren;); m![mod bracket;];\n\
                    macro_rules! local { () => { mod in_def; } }\n\
                    fn f() { g! { mod in_fn_body; } }";
        assert_eq!(
            first(text),
            [
                "/d/m/unix.rs",
                "/d/m/other.rs",
                "/d/m/rt.rs",
                "/d/m/sel.rs",
                "/d/m/paren.rs",
                "/d/m/bracket.rs",
                "/d/m/in_def.rs"
            ]
        );
        // Inside an inline module, a macro's modules are that module's.
        assert_eq!(first("mod outer { cfg_rt! { mod inner; } }"), ["/d/m/outer/inner.rs"]);
    }

    #[test]
    fn every_cfg_attr_path_and_the_default_file() {
        let text = "#[cfg_attr(unix, path = \"os/unix.rs\")]\n#[cfg_attr(windows, path = \"os/windows.rs\")]\nmod os;";
        assert_eq!(first(text), ["/d/m/os.rs", "/d/os/unix.rs", "/d/os/windows.rs"]);
        assert_eq!(
            first("#[cfg_attr(any(a, b), cfg_attr(c, path = \"deep.rs\"))] mod x;"),
            ["/d/m/x.rs", "/d/deep.rs"]
        );
    }

    #[test]
    fn include_is_relative_to_the_file_and_keeps_the_module() {
        let queued = {
            let mut queue = Vec::new();
            let context = ModuleFile { path: "/d/src/lib.rs".into(), mod_rs: true };
            let tokens = lex::lex("include!(\"gen/items.rs\");");
            assert!(find_mods(&tokens, true, usize::MAX, &context.path, &context, true, &mut queue).is_ok());
            queue
        };
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].candidates[0].path, Path::new("/d/src/gen/items.rs"));
        assert_eq!(queued[0].context.as_ref().map(|c| c.path.as_path()), Some(Path::new("/d/src/lib.rs")));
    }

    fn roots(text: &str) -> Vec<(usize, usize, String)> {
        let names = ["old".to_owned(), "alias".to_owned()];
        path_roots(&lex::lex(text), &names)
            .into_iter()
            .map(|root| {
                let (line, column) = line_col(text, root.at);
                (line, column, [root.name].into_iter().chain(root.path).collect::<Vec<_>>().join("::"))
            })
            .collect()
    }

    #[test]
    fn path_roots_in_code() {
        let text = "use old::a::b; use ::old::X as Y; use {old::c, std::fmt}; use old; use x::{old::z};\n\
                    extern crate old as alias; fn f(v: old::T) -> ::old::U { <S as old::Tr>::K; x.old::<u8>(); old }\n\
                    use a::b as old; x::old::y; self::old::y; $old::y; \"old::y\"; // old::y";
        let found: Vec<String> = roots(text).into_iter().map(|(_, _, path)| path).collect();
        assert_eq!(found, ["old::a::b", "old::X", "old::c", "old", "old", "old::T", "old::U", "old::Tr"]);
    }

    #[test]
    fn doctests_by_info_string_with_hidden_lines() {
        let text = "/// ```\n/// old::a();\n/// ```\n/// ```rust,no_run\n/// # use old::b;\n/// ```\n\
                    /// ```ignore\n/// old::c();\n/// ```\n/// ```text\n/// old::d\n/// ```\n\
                    /// ~~~edition2021\n/// old::e();\n/// ~~~\n/// prose about old::f\nfn x() {}\n";
        let (runs, _) = doc_runs(&mut LineCursor::new(text), &lex::skim(text).docs, &lex::lex(text), &|_, _| true);
        let blocks: Vec<Vec<(usize, usize, &str)>> = runs
            .iter()
            .flat_map(|run| doctest_blocks(run))
            .map(|block| block.iter().map(|l| (l.line, l.column, l.text)).collect())
            .collect();
        assert_eq!(blocks, [vec![(2, 5, "old::a();")], vec![(5, 7, "use old::b;")], vec![(14, 5, "old::e();")]]);
    }

    /// The same occurrences, found from a full parse (`syn`) and from tokens, on every Rust file of this repository:
    /// the token rules agree with the grammar on the files that exist; and the scan's windows of tokens around each
    /// occurrence decide as the whole file's tokens do.
    #[test]
    fn path_roots_agree_with_a_parse_on_every_file_of_the_repository() {
        // `MIGRATE_CHECK_AGREEMENT_ROOT` points the test at another tree (a real public workspace, say).
        let repository = std::env::var_os("MIGRATE_CHECK_AGREEMENT_ROOT").map_or_else(
            || std::env::current_dir().expect("the test runs in the package").join("../.."),
            PathBuf::from,
        );
        let mut files = Vec::new();
        let mut stack = vec![repository.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read a directory") {
                let path = entry.expect("an entry").path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if path.is_dir() && name != "target" && !name.starts_with('.') {
                    stack.push(path);
                } else if name.ends_with(".rs") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 100, "the walk found the repository's files");
        // Every identifier of a file is a name to look for, so every path root of the repository is compared.
        const KEYWORDS: &[&str] = &[
            "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false", "fn",
            "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
            "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "yield",
        ];
        fn idents(tokens: proc_macro2::TokenStream, out: &mut Vec<String>) {
            for token in tokens {
                match token {
                    proc_macro2::TokenTree::Group(group) => idents(group.stream(), out),
                    proc_macro2::TokenTree::Ident(ident) => {
                        out.push(syn::ext::IdentExt::unraw(&ident).to_string());
                    }
                    _ => {}
                }
            }
        }
        let (mut compared, mut roots, mut disagreements) = (0, 0, Vec::new());
        for path in files {
            let text = std::fs::read_to_string(&path).expect("read a file");
            let Ok(parsed) = syn::parse_file(&text) else { continue };
            let mut names = Vec::new();
            idents(text.parse().expect("a file that parses lexes"), &mut names);
            names.retain(|name| !KEYWORDS.contains(&name.as_str()));
            names.sort();
            names.dedup();
            let mut finder = syn_finder::Finder { text: &text, names: &names, hits: Vec::new() };
            syn::visit::Visit::visit_file(&mut finder, &parsed);
            proc_macro2::extra::invalidate_current_thread_spans();
            let mut expected: Vec<(usize, usize)> = finder.hits;
            let tokens = lex::lex(&text);
            let whole = path_roots(&tokens, &names);
            // What the scan does: each occurrence decided on a window of tokens around it.
            let skim = lex::skim(&text);
            let mut window = Vec::new();
            let windowed: Vec<Root<'_>> = tokens
                .iter()
                .filter_map(|token| match token.tok {
                    Tok::Ident(word) if names.binary_search_by(|n| n.as_str().cmp(word)).is_ok() => Some(token.at),
                    Tok::RawIdent(word) if names.binary_search_by(|n| n.as_str().cmp(word)).is_ok() => {
                        Some(token.at + 2)
                    }
                    _ => None,
                })
                .filter_map(|at| window_root(&text, &skim, at, &mut window))
                .collect();
            // And module discovery on a few of the tokens, as the scan does it, against all of them.
            let context = ModuleFile { path: path.clone(), mod_rs: path.ends_with("mod.rs") };
            let (mut few, mut all) = (Vec::new(), Vec::new());
            declared_files(&text, &skim, &declarations(text.as_bytes()), &path, &context, true, &mut window, &mut few);
            let _ = find_mods(&tokens, true, usize::MAX, &path, &context, true, &mut all);
            let files = |queue: &[Pending]| -> Vec<Vec<PathBuf>> {
                queue.iter().map(|p| p.candidates.iter().map(|c| c.path.clone()).collect()).collect()
            };
            if files(&few) != files(&all) {
                disagreements.push(format!(
                    "{}: modules from a few tokens {:?}, from all {:?}",
                    path.display(),
                    files(&few),
                    files(&all)
                ));
            }
            let key = |root: &Root<'_>| {
                (root.at, root.path.iter().map(|s| s.to_string()).collect::<Vec<_>>(), root.alias.map(str::to_owned))
            };
            let (whole_keys, windowed_keys): (Vec<_>, Vec<_>) =
                (whole.iter().map(key).collect(), windowed.iter().map(key).collect());
            if whole_keys != windowed_keys {
                disagreements.push(format!(
                    "{}: windows found {windowed_keys:?}, the whole file {whole_keys:?}",
                    path.display()
                ));
            }
            let mut found: Vec<(usize, usize)> = whole.iter().map(|root| line_col(&text, root.at)).collect();
            expected.sort();
            expected.dedup();
            found.sort();
            let only_tokens: Vec<_> = found.iter().filter(|at| !expected.contains(at)).collect();
            let only_parse: Vec<_> = expected.iter().filter(|at| !found.contains(at)).collect();
            if !only_tokens.is_empty() || !only_parse.is_empty() {
                disagreements.push(format!(
                    "{}: (line, column) found only by the token rules: {only_tokens:?}; only by the parse: \
                     {only_parse:?}",
                    path.display()
                ));
            }
            roots += expected.len();
            compared += 1;
        }
        assert!(compared > 100, "{compared} files compared");
        assert!(
            disagreements.is_empty(),
            "{} of {compared} files ({roots} roots):\n{}",
            disagreements.len(),
            disagreements.join("\n")
        );
    }

    /// The syntax-tree finder the scan used before the token rules: paths with two or more segments or a leading
    /// `::`, `use` tree roots and `extern crate` items, and the token rules only inside macros.
    mod syn_finder {
        use syn::ext::IdentExt;
        use syn::visit::{self, Visit};

        pub(super) struct Finder<'n> {
            pub(super) text: &'n str,
            pub(super) names: &'n [String],
            /// (line, 1-based column)
            pub(super) hits: Vec<(usize, usize)>,
        }

        impl Finder<'_> {
            fn check(&mut self, ident: &proc_macro2::Ident) {
                if self.names.contains(&ident.unraw().to_string()) {
                    let start = ident.span().start();
                    self.hits.push((start.line, start.column + 1));
                }
            }

            fn use_root(&mut self, tree: &syn::UseTree) {
                match tree {
                    syn::UseTree::Path(p) => self.check(&p.ident),
                    syn::UseTree::Name(n) => self.check(&n.ident),
                    syn::UseTree::Rename(r) => self.check(&r.ident),
                    syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_root(t)),
                    syn::UseTree::Glob(_) => {}
                }
            }

            /// Macro bodies have no syntax tree: the token rules, on the macro's text between its delimiters.
            fn tokens(&mut self, delimiter: &syn::MacroDelimiter) {
                let span = match delimiter {
                    syn::MacroDelimiter::Paren(d) => d.span,
                    syn::MacroDelimiter::Brace(d) => d.span,
                    syn::MacroDelimiter::Bracket(d) => d.span,
                };
                let (start, end) = (self.offset(span.open().end()), self.offset(span.close().start()));
                let body = &self.text[start..end];
                for root in super::path_roots(&crate::lex::lex(body), self.names) {
                    self.hits.push(crate::paths::line_col(self.text, start + root.at));
                }
            }

            /// Visits `<T>::name` without taking `name` as a root; whether the path was one.
            fn self_type_path(&mut self, qself: Option<&syn::QSelf>, path: &syn::Path) -> bool {
                let Some(qself) = qself.filter(|qself| qself.position == 0) else { return false };
                self.visit_qself(qself);
                path.segments.iter().for_each(|segment| self.visit_path_segment(segment));
                true
            }

            fn offset(&self, at: proc_macro2::LineColumn) -> usize {
                let line_start: usize = self.text.split_inclusive('\n').take(at.line - 1).map(str::len).sum();
                let line = &self.text[line_start..];
                line_start + line.char_indices().nth(at.column).map_or(line.len(), |(i, _)| i)
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

            // `<T>::name` is `name` of the type `T`: syn writes it as a path with a leading `::`, which is no crate
            // root.
            fn visit_expr_path(&mut self, expr: &'ast syn::ExprPath) {
                if !self.self_type_path(expr.qself.as_ref(), &expr.path) {
                    visit::visit_expr_path(self, expr);
                }
            }

            fn visit_type_path(&mut self, ty: &'ast syn::TypePath) {
                if !self.self_type_path(ty.qself.as_ref(), &ty.path) {
                    visit::visit_type_path(self, ty);
                }
            }

            fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
                self.use_root(&item.tree);
                visit::visit_item_use(self, item);
            }

            fn visit_item_extern_crate(&mut self, item: &'ast syn::ItemExternCrate) {
                self.check(&item.ident);
                visit::visit_item_extern_crate(self, item);
            }

            fn visit_macro(&mut self, mac: &'ast syn::Macro) {
                visit::visit_macro(self, mac);
                self.tokens(&mac.delimiter);
            }

            fn visit_meta_list(&mut self, list: &'ast syn::MetaList) {
                visit::visit_meta_list(self, list);
                self.tokens(&list.delimiter);
            }
        }
    }
}
