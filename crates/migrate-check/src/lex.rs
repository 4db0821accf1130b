//! The cheap lexical pass over Rust source that the scan runs instead of a parse: identifiers, string literals,
//! lifetimes and punctuation with their byte offsets, comments skipped (doc comments kept aside, since doctests are
//! code), every literal form kept apart from code: nested block comments, raw strings with any number of hashes,
//! byte and C strings, byte and char literals (told from lifetimes), raw identifiers. It never fails: input that is
//! not Rust gives some tokens, and unbalanced delimiters are reported by [`unbalanced`].

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    /// An identifier or keyword.
    Ident(&'a str),
    /// A raw identifier: `r#name` gives `name`, which is never a keyword.
    RawIdent(&'a str),
    /// The contents of a string literal (plain, byte, C or raw), between its quotes, escapes as written.
    Str(&'a str),
    /// `'name` (a lifetime or a label).
    Lifetime,
    /// `::`.
    PathSep,
    /// Any other punctuation byte, delimiters included.
    Punct(u8),
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) tok: Tok<'a>,
    /// Byte offset of the token's first byte; for `Str`, of the contents' first byte.
    pub(crate) at: usize,
}

/// A doc comment: `///`, `//!`, `/** */` or `/*! */`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DocComment<'a> {
    /// The text after the comment's opening (`///`, `/**`, ...), up to its end (before `*/`).
    pub(crate) body: &'a str,
    /// Byte offset of `body` in the file.
    pub(crate) at: usize,
    /// `/** */` or `/*! */`.
    pub(crate) block: bool,
    /// `//!` or `/*! */`: documents the enclosing item.
    pub(crate) inner: bool,
}

/// The tokens and doc comments of a file.
#[derive(Debug, Default)]
pub(crate) struct Lexed<'a> {
    pub(crate) tokens: Vec<Token<'a>>,
    pub(crate) docs: Vec<DocComment<'a>>,
}

/// Byte classes: identifier bytes (ASCII letters, digits, `_`, and every byte of a non-ASCII character) and
/// whitespace, looked up once per byte.
const IDENT: u8 = 1;
const SPACE: u8 = 2;
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            class[b] = IDENT;
        } else if c.is_ascii_whitespace() {
            class[b] = SPACE;
        }
        b += 1;
    }
    class
};

fn is_ident_byte(b: u8) -> bool {
    CLASS[b as usize] == IDENT
}

/// The index of the first byte at or after `i` that is not of `class`.
fn skip(bytes: &[u8], mut i: usize, class: u8) -> usize {
    while i < bytes.len() && CLASS[bytes[i] as usize] == class {
        i += 1;
    }
    i
}

/// Lexes `text`.
pub(crate) fn lex(text: &str) -> Lexed<'_> {
    let bytes = text.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    // Index of the closing quote of a string whose contents start at `i`, and the index just past it.
    let end_of_string = |mut i: usize| {
        while let Some(n) = memchr::memchr2(b'"', b'\\', &bytes[i.min(bytes.len())..]) {
            i += n;
            if bytes[i] == b'"' {
                return (i, i + 1);
            }
            i += 2;
        }
        (bytes.len(), bytes.len())
    };
    let mut out = Lexed { tokens: Vec::with_capacity(text.len() / 4), docs: Vec::new() };
    let mut i = 0;
    // A shebang line is not Rust (`#![attr]` is).
    if text.starts_with("#!") && !text[2..].trim_start().starts_with('[') {
        i = text.find('\n').unwrap_or(text.len());
    }
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' if at(i + 1) == b'/' => {
                let end = memchr::memchr(b'\n', &bytes[i..]).map_or(bytes.len(), |n| i + n);
                // `///` (not `////`) and `//!` are doc comments.
                let outer = at(i + 2) == b'/' && at(i + 3) != b'/';
                let inner = at(i + 2) == b'!';
                if outer || inner {
                    let body_end = if bytes[..end].ends_with(b"\r") { end - 1 } else { end };
                    let body = &text[(i + 3).min(body_end)..body_end];
                    out.docs.push(DocComment { body, at: i + 3, block: false, inner });
                }
                i = end;
            }
            b'/' if at(i + 1) == b'*' => {
                let start = i;
                let mut depth = 1;
                i += 2;
                while i < bytes.len() && depth > 0 {
                    match (bytes[i], at(i + 1)) {
                        (b'/', b'*') => (depth, i) = (depth + 1, i + 2),
                        (b'*', b'/') => (depth, i) = (depth - 1, i + 2),
                        _ => i += 1,
                    }
                }
                // `/**` (not `/***` nor `/**/`) and `/*!` are doc comments.
                let outer = at(start + 2) == b'*' && !matches!(at(start + 3), b'*' | b'/');
                let inner = at(start + 2) == b'!';
                if (outer || inner) && i >= start + 5 {
                    let body_end = if depth == 0 { i - 2 } else { i };
                    out.docs.push(DocComment { body: &text[start + 3..body_end], at: start + 3, block: true, inner });
                }
            }
            b'"' => {
                let (close, next) = end_of_string(i + 1);
                push(&mut out, Tok::Str(&text[i + 1..close]), i + 1);
                i = next;
            }
            b'\'' => {
                // A char literal ('a', '\n', '\u{e9}', 'é') or a lifetime or label ('a, 'static).
                if at(i + 1) == b'\\' {
                    i += 3;
                    while i < bytes.len() && bytes[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if at(i + 1 + width) == b'\'' {
                        i += width + 2;
                    } else {
                        let start = i;
                        i += 1;
                        while i < bytes.len() && is_ident_byte(bytes[i]) {
                            i += 1;
                        }
                        push(&mut out, Tok::Lifetime, start);
                    }
                }
            }
            b'0'..=b'9' => i = skip(bytes, i, IDENT),
            b':' if at(i + 1) == b':' => {
                push(&mut out, Tok::PathSep, i);
                i += 2;
            }
            _ if is_ident_byte(b) => {
                let start = i;
                i = skip(bytes, i, IDENT);
                let word = &text[start..i];
                match (word, at(i)) {
                    ("r" | "br" | "cr", b'"' | b'#') => {
                        let hashes = bytes[i..].iter().take_while(|&&c| c == b'#').count();
                        if at(i + hashes) == b'"' {
                            let body = i + hashes + 1;
                            let close = find_raw_end(&bytes[body..], hashes).map_or(bytes.len(), |n| body + n);
                            push(&mut out, Tok::Str(&text[body..close]), body);
                            i = (close + 1 + hashes).min(bytes.len());
                        } else if word == "r" && hashes == 1 && is_ident_byte(at(i + 1)) {
                            // A raw identifier: r#name.
                            let name_start = i + 1;
                            i = name_start;
                            while i < bytes.len() && is_ident_byte(bytes[i]) {
                                i += 1;
                            }
                            // At the `r#`, where rustc (and a parse) place the identifier.
                            push(&mut out, Tok::RawIdent(&text[name_start..i]), start);
                        } else {
                            push(&mut out, Tok::Ident(word), start);
                        }
                    }
                    ("b" | "c", b'"') => {
                        let (close, next) = end_of_string(i + 1);
                        push(&mut out, Tok::Str(&text[i + 1..close]), i + 1);
                        i = next;
                    }
                    ("b", b'\'') => {
                        i += if at(i + 1) == b'\\' { 3 } else { 2 };
                        while i < bytes.len() && bytes[i] != b'\'' {
                            i += 1;
                        }
                        i += 1;
                    }
                    _ => push(&mut out, Tok::Ident(word), start),
                }
            }
            _ if CLASS[b as usize] == SPACE => i = skip(bytes, i + 1, SPACE),
            _ => {
                push(&mut out, Tok::Punct(b), i);
                i += 1;
            }
        }
    }
    out
}

fn push<'a>(out: &mut Lexed<'a>, tok: Tok<'a>, at: usize) {
    out.tokens.push(Token { tok, at });
}

/// Where `"` followed by `hashes` `#` first occurs in `bytes`.
fn find_raw_end(bytes: &[u8], hashes: usize) -> Option<usize> {
    let mut from = 0;
    while let Some(n) = memchr::memchr(b'"', &bytes[from..]) {
        let quote = from + n;
        if bytes[quote + 1..].iter().take(hashes).filter(|&&c| c == b'#').count() == hashes {
            return Some(quote);
        }
        from = quote + 1;
    }
    None
}

/// The byte offset of the first delimiter that does not match, if any: Rust that does not lex into balanced token
/// trees cannot be checked (rustc rejects it before anything else).
pub(crate) fn unbalanced(tokens: &[Token<'_>]) -> Option<usize> {
    let mut open: Vec<(u8, usize)> = Vec::new();
    for token in tokens {
        let Tok::Punct(b) = token.tok else { continue };
        match b {
            b'(' | b'[' | b'{' => open.push((b, token.at)),
            b')' | b']' | b'}' => {
                let expected = match b {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                match open.pop() {
                    Some((opening, _)) if opening == expected => {}
                    _ => return Some(token.at),
                }
            }
            _ => {}
        }
    }
    open.first().map(|(_, at)| *at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(text: &str) -> Vec<&str> {
        let tokens = lex(text).tokens.into_iter();
        tokens.filter_map(|t| if let Tok::Ident(w) | Tok::RawIdent(w) = t.tok { Some(w) } else { None }).collect()
    }

    #[test]
    fn comments_and_every_literal_form_are_skipped() {
        let text = r###"/* a /* nested */ b */ x // y
            let s = "q \" r"; let t = r#"u "v" w"#; let c = '"'; let d = b'\''; fn f<'a>(v: &'a str) {} br"z" é1
            let u = r##"a "# b"##; let e = '\u{e9}'; let g = c"k"; 'outer: loop {}"###;
        assert_eq!(
            idents(text),
            [
                "x", "let", "s", "let", "t", "let", "c", "let", "d", "fn", "f", "v", "str", "é1", "let", "u", "let",
                "e", "let", "g", "loop"
            ]
        );
        let lexed = lex(text);
        assert!(lexed.tokens.iter().any(|t| t.tok == Tok::Str(r#"u "v" w"#)));
        assert!(lexed.tokens.iter().any(|t| t.tok == Tok::Str(r##"a "# b"##)));
        assert_eq!(lexed.tokens.iter().filter(|t| t.tok == Tok::Lifetime).count(), 3);
        assert_eq!(idents("r#type::x"), ["type", "x"]);
    }

    #[test]
    fn doc_comments_are_kept_aside() {
        let text = "//! inner\n/// outer\n//// not doc\n/** block */\n/*** not */\n/**/\n/*! inner block */\nfn f() {}";
        let docs: Vec<(&str, bool, bool)> = lex(text).docs.iter().map(|d| (d.body, d.block, d.inner)).collect();
        assert_eq!(
            docs,
            [
                (" inner", false, true),
                (" outer", false, false),
                (" block ", true, false),
                (" inner block ", true, true)
            ]
        );
        assert_eq!(idents(text), ["fn", "f"]);
    }

    #[test]
    fn path_separators_and_offsets() {
        let lexed = lex("a::b");
        assert_eq!(
            lexed.tokens,
            [
                Token { tok: Tok::Ident("a"), at: 0 },
                Token { tok: Tok::PathSep, at: 1 },
                Token { tok: Tok::Ident("b"), at: 3 }
            ]
        );
    }

    #[test]
    fn unbalanced_delimiters_are_found() {
        assert_eq!(unbalanced(&lex("fn f() { (a[0]) }").tokens), None);
        assert_eq!(unbalanced(&lex("fn f() { (a[0)) }").tokens), Some(13));
        assert_eq!(unbalanced(&lex("fn f() {").tokens), Some(7));
    }
}
