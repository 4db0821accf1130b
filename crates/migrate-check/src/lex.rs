//! The cheap lexical passes over Rust source that the scan runs instead of a parse.
//!
//! [`skim`] is the one place that knows Rust's lexical rules for what is not code: comments (nested block comments
//! included; doc comments kept aside, since doctests are code), string literals of every form (plain, byte, C, raw
//! with any number of hashes), char and byte literals (told from lifetimes), a shebang line. It jumps (`memchr`) from
//! one byte that can open one of those to the next, and records each as a [`Span`]. Everything between spans is code
//! made of identifiers, numbers, lifetimes and punctuation only, which [`tokens`] turns into [`Token`]s for any range
//! that starts at a token boundary: the whole file ([`lex`]) or a window around one occurrence of a name. The
//! delimiters of that code are checked by [`unbalanced`]. None of them fails: input that is not Rust gives some
//! tokens.

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

/// What a [`Span`] of text that is not code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanKind {
    /// A comment (doc comments included) or a shebang line: no token.
    Comment,
    /// A char or byte literal: no token (nothing the scan looks for is one).
    Char,
    /// A string literal of any form, prefix and hashes included; its contents are `body..close`.
    Str { body: usize, close: usize },
}

/// A stretch of a file that is not code: `start..end` in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: SpanKind,
}

/// What [`skim`] finds in a file.
#[derive(Debug, Default)]
pub(crate) struct Skim<'a> {
    /// Comments and literals, in order, never overlapping.
    pub(crate) spans: Vec<Span>,
    pub(crate) docs: Vec<DocComment<'a>>,
}

impl Skim<'_> {
    /// The span that holds byte `at`, if `at` is not code.
    pub(crate) fn span_at(&self, at: usize) -> Option<&Span> {
        let k = self.spans.partition_point(|span| span.end <= at);
        self.spans.get(k).filter(|span| span.start <= at)
    }
}

/// Byte classes: identifier bytes (ASCII letters, digits, `_`, and every byte of a non-ASCII character),
/// whitespace and delimiters, looked up once per byte.
const IDENT: u8 = 1;
const SPACE: u8 = 2;
const DELIMITER: u8 = 3;
static CLASS: [u8; 256] = {
    let mut class = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            class[b] = IDENT;
        } else if c.is_ascii_whitespace() {
            class[b] = SPACE;
        } else if matches!(c, b'(' | b')' | b'[' | b']' | b'{' | b'}') {
            class[b] = DELIMITER;
        }
        b += 1;
    }
    class
};

pub(crate) fn is_ident_byte(b: u8) -> bool {
    CLASS[b as usize] == IDENT
}

/// The index of the first byte at or after `i` (and before `end`) that is not of `class`.
fn skip(bytes: &[u8], mut i: usize, end: usize, class: u8) -> usize {
    while i < end && CLASS[bytes[i] as usize] == class {
        i += 1;
    }
    i
}

/// The identifier-like word that ends right before `i`.
fn word_before(bytes: &[u8], i: usize) -> &[u8] {
    let mut start = i;
    while start > 0 && is_ident_byte(bytes[start - 1]) {
        start -= 1;
    }
    &bytes[start..i]
}

/// Finds the comments and literals of `text` (see the module's documentation). It looks only at the bytes that can
/// open one (`/`, `"`, `'`), found with `memchr`, and skips what each one opens.
pub(crate) fn skim(text: &str) -> Skim<'_> {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    // Index of the closing quote of a string whose contents start at `i`, and the index just past it.
    let end_of_string = |mut i: usize| {
        while let Some(k) = memchr::memchr2(b'"', b'\\', &bytes[i.min(n)..]) {
            i += k;
            if bytes[i] == b'"' {
                return (i, i + 1);
            }
            i += 2;
        }
        (n, n)
    };
    let mut out = Skim { spans: Vec::with_capacity(n / 16), docs: Vec::with_capacity(n / 64) };
    let span = |out: &mut Skim<'_>, start: usize, end: usize, kind: SpanKind| {
        out.spans.push(Span { start, end: end.min(n), kind });
    };
    // Where the code goes on: the bytes before it are in a span already recorded.
    let mut resume = 0;
    // A shebang line is not Rust (`#![attr]` is).
    if text.starts_with("#!") && !text[2..].trim_start().starts_with('[') {
        resume = text.find('\n').unwrap_or(n);
        span(&mut out, 0, resume, SpanKind::Comment);
    }
    // A search from where the code goes on each time: an iterator would also stop at each such byte inside the
    // comments and literals it skips.
    while let Some(k) = memchr::memchr3(b'/', b'"', b'\'', &bytes[resume..]) {
        let mut i = resume + k;
        match bytes[i] {
            b'/' if at(i + 1) == b'/' => {
                let end = memchr::memchr(b'\n', &bytes[i..]).map_or(n, |k| i + k);
                // `///` (not `////`) and `//!` are doc comments.
                let outer = at(i + 2) == b'/' && at(i + 3) != b'/';
                let inner = at(i + 2) == b'!';
                if outer || inner {
                    let body_end = if bytes[..end].ends_with(b"\r") { end - 1 } else { end };
                    let body = &text[(i + 3).min(body_end)..body_end];
                    out.docs.push(DocComment { body, at: i + 3, block: false, inner });
                }
                span(&mut out, i, end, SpanKind::Comment);
                i = end;
            }
            b'/' if at(i + 1) == b'*' => {
                let start = i;
                let mut depth = 1;
                i += 2;
                while i < n && depth > 0 {
                    match memchr::memchr2(b'/', b'*', &bytes[i..]) {
                        None => i = n,
                        Some(k) => {
                            i += k;
                            match (bytes[i], at(i + 1)) {
                                (b'/', b'*') => (depth, i) = (depth + 1, i + 2),
                                (b'*', b'/') => (depth, i) = (depth - 1, i + 2),
                                _ => i += 1,
                            }
                        }
                    }
                }
                // `/**` (not `/***` nor `/**/`) and `/*!` are doc comments.
                let outer = at(start + 2) == b'*' && !matches!(at(start + 3), b'*' | b'/');
                let inner = at(start + 2) == b'!';
                if (outer || inner) && i >= start + 5 {
                    let body_end = if depth == 0 { i - 2 } else { i };
                    out.docs.push(DocComment { body: &text[start + 3..body_end], at: start + 3, block: true, inner });
                }
                span(&mut out, start, i, SpanKind::Comment);
            }
            b'"' => {
                // The prefix decides the form: `r`, `br`, `cr` (with hashes or none) are raw; `b` and `c` are not.
                let hashes = bytes[..i].iter().rev().take_while(|&&c| c == b'#').count();
                let word = word_before(bytes, i - hashes);
                let body = i + 1;
                let (start, close, end) = if matches!(word, b"r" | b"br" | b"cr") {
                    let close = find_raw_end(&bytes[body..], hashes).map_or(n, |k| body + k);
                    (i - hashes - word.len(), close, close + 1 + hashes)
                } else {
                    let (close, end) = end_of_string(body);
                    let start = if hashes == 0 && matches!(word, b"b" | b"c") { i - 1 } else { i };
                    (start, close, end)
                };
                span(&mut out, start, end, SpanKind::Str { body, close });
                i = end;
            }
            b'\'' => {
                // A char or byte literal ('a', '\n', '\u{e9}', 'é', b'a') or a lifetime or label ('a, 'static).
                let byte = word_before(bytes, i) == b"b";
                if byte || at(i + 1) == b'\\' {
                    let start = if byte { i - 1 } else { i };
                    i += if at(i + 1) == b'\\' { 3 } else { 2 };
                    while i < n && bytes[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                    span(&mut out, start, i, SpanKind::Char);
                } else {
                    let width = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if at(i + 1 + width) == b'\'' {
                        span(&mut out, i, i + width + 2, SpanKind::Char);
                        i += width + 2;
                    } else {
                        // A lifetime: code, its name is identifier bytes.
                        i += 1;
                    }
                }
            }
            _ => i += 1,
        }
        // An unterminated literal or comment ends with the text.
        resume = i.min(n);
    }
    out
}

/// The byte offset of the first delimiter in the code of `text` (outside its `spans`) that does not match, if any:
/// Rust that does not lex into balanced token trees cannot be checked (rustc rejects it before anything else).
pub(crate) fn unbalanced(text: &str, spans: &[Span]) -> Option<usize> {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let mut open = Delimiters { open: Vec::with_capacity(64), outermost: 0 };
    let mut from = 0;
    for (start, end) in spans.iter().map(|span| (span.start, span.end)).chain([(n, n)]) {
        // The code between two spans, 32 bytes at a time (delimiters are too dense for `memchr` to pay); the last
        // block may reach into the span, whose bytes are masked off.
        let mut i = from;
        while i < start {
            let block: [u8; 32] = match bytes.get(i..i + 32) {
                Some(block) => block.try_into().unwrap_or([0; 32]),
                None => {
                    let mut block = [0u8; 32];
                    block[..n - i].copy_from_slice(&bytes[i..]);
                    block
                }
            };
            let halves: [[u8; 16]; 2] = [0, 16].map(|k| block[k..k + 16].try_into().unwrap_or_default());
            let mut found = delimiter_mask(halves[0]) | delimiter_mask(halves[1]) << 16;
            if start - i < 32 {
                found &= (1 << (start - i)) - 1;
            }
            let base = i;
            i += 32;
            while found != 0 {
                let at = base + found.trailing_zeros() as usize;
                found &= found - 1;
                if let Some(at) = open.visit(bytes[at], at) {
                    return Some(at);
                }
            }
        }
        from = end;
    }
    open.unclosed()
}

/// The delimiters open at some point of a text, and where the outermost one is (the one to report if it is never
/// closed).
#[derive(Debug, Default)]
struct Delimiters {
    open: Vec<u8>,
    outermost: usize,
}

impl Delimiters {
    /// Takes the delimiter `b` at `at`: `Some(at)` if it closes what is not open.
    fn visit(&mut self, b: u8, at: usize) -> Option<usize> {
        match OPENING[b as usize] {
            0 => {
                if self.open.is_empty() {
                    self.outermost = at;
                }
                self.open.push(b);
            }
            opening if self.open.pop() != Some(opening) => return Some(at),
            _ => {}
        }
        None
    }

    /// Where the outermost delimiter left open is, if one is.
    fn unclosed(&self) -> Option<usize> {
        (!self.open.is_empty()).then_some(self.outermost)
    }
}

/// The opening delimiter of each closing one; 0 for every other byte.
static OPENING: [u8; 256] = {
    let mut opening = [0u8; 256];
    opening[b')' as usize] = b'(';
    opening[b']' as usize] = b'[';
    opening[b'}' as usize] = b'{';
    opening
};

/// Bit `k` set for each delimiter `block[k]`, with SSE2 (which every x86-64 processor has) through `safe_arch`:
/// `(` and `)` are `0x28` once bit 0 is cleared, `[` and `{` are `0x5b` once bit 5 is, `]` and `}` are `0x5d`; no
/// other byte is.
#[cfg(target_arch = "x86_64")]
fn delimiter_mask(block: [u8; 16]) -> u32 {
    use safe_arch::{bitand_m128i, bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, move_mask_i8_m128i};
    let splat = |b: u8| safe_arch::set_splat_i8_m128i(b as i8);
    let v = load_unaligned_m128i(&block);
    let parens = cmp_eq_mask_i8_m128i(bitand_m128i(v, splat(0xfe)), splat(0x28));
    let folded = bitand_m128i(v, splat(0xdf));
    let opening = cmp_eq_mask_i8_m128i(folded, splat(0x5b));
    let closing = cmp_eq_mask_i8_m128i(folded, splat(0x5d));
    move_mask_i8_m128i(bitor_m128i(parens, bitor_m128i(opening, closing))) as u32
}

/// Bit `k` set for each delimiter `block[k]`, eight bytes at a time where SSE2 is not known to be there.
#[cfg(not(target_arch = "x86_64"))]
fn delimiter_mask(block: [u8; 16]) -> u32 {
    delimiter_mask_by_words(block)
}

/// [`delimiter_mask`] without SSE2: the high bit of each delimiter byte of a word, gathered into the word's top
/// byte by a multiplication (bit `8k + 7` moves to bit `56 + k`; no two partial products overlap).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn delimiter_mask_by_words(block: [u8; 16]) -> u32 {
    let bits = |k: usize| {
        let word = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7].map(|j| block[k + j]));
        ((delimiter_bytes(word) >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    };
    bits(0) | bits(8) << 8
}

/// `b` in every byte of a word.
#[cfg(any(test, not(target_arch = "x86_64")))]
const fn splat(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

/// The high bit of each byte of `word` that is zero, and nothing else.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn zero_bytes(word: u64) -> u64 {
    !(((word & splat(0x7f)) + splat(0x7f)) | word | splat(0x7f))
}

/// The high bit of each byte of `word` that is a delimiter: `(` and `)` are `0x28` once bit 0 is cleared, `[` and
/// `{` are `0x5b` once bit 5 is, `]` and `}` are `0x5d`; no other byte is.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn delimiter_bytes(word: u64) -> u64 {
    zero_bytes((word & splat(0xfe)) ^ splat(0x28))
        | zero_bytes((word & splat(0xdf)) ^ splat(0x5b))
        | zero_bytes((word & splat(0xdf)) ^ splat(0x5d))
}

/// Appends to `out` the tokens of `text` that start in `from..to`. `from` must be a token boundary: the start of the
/// text, a code position right after whitespace, or the start of a span; the last token may end after `to`.
pub(crate) fn tokens<'a>(text: &'a str, spans: &[Span], from: usize, to: usize, out: &mut Vec<Token<'a>>) {
    let to = to.min(text.len());
    let mut k = spans.partition_point(|span| span.end <= from);
    let mut i = from;
    while i < to {
        let next = spans.get(k).map_or(text.len(), |span| span.start);
        if i < next {
            i = code_tokens(text, i, next, to, out);
            continue;
        }
        let span = spans[k];
        if let SpanKind::Str { body, close } = span.kind {
            out.push(Token { tok: Tok::Str(&text[body..close]), at: body });
        }
        i = span.end;
        k += 1;
    }
}

/// The tokens of the code in `i..limit` (no comment or literal in it) that start before `to`; returns where it
/// stopped.
fn code_tokens<'a>(text: &'a str, mut i: usize, limit: usize, to: usize, out: &mut Vec<Token<'a>>) -> usize {
    let bytes = text.as_bytes();
    let at = |i: usize| if i < limit { bytes[i] } else { 0 };
    let end = limit.min(to);
    while i < end {
        let b = bytes[i];
        match CLASS[b as usize] {
            SPACE => i = skip(bytes, i + 1, limit, SPACE),
            IDENT => {
                let start = i;
                i = skip(bytes, i, limit, IDENT);
                if b.is_ascii_digit() {
                    // A number: nothing the scan looks for.
                    continue;
                }
                let word = &text[start..i];
                if word == "r" && at(i) == b'#' && is_ident_byte(at(i + 1)) {
                    // A raw identifier, at the `r#` where rustc (and a parse) place it.
                    i = skip(bytes, i + 1, limit, IDENT);
                    out.push(Token { tok: Tok::RawIdent(&text[start + 2..i]), at: start });
                } else {
                    out.push(Token { tok: Tok::Ident(word), at: start });
                }
            }
            _ if b == b'\'' => {
                out.push(Token { tok: Tok::Lifetime, at: i });
                i = skip(bytes, i + 1, limit, IDENT);
            }
            _ if b == b':' && at(i + 1) == b':' => {
                out.push(Token { tok: Tok::PathSep, at: i });
                i += 2;
            }
            _ => {
                out.push(Token { tok: Tok::Punct(b), at: i });
                i += 1;
            }
        }
    }
    i
}

/// The tokens of the whole of `text`.
pub(crate) fn lex(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::with_capacity(text.len() / 4);
    tokens(text, &skim(text).spans, 0, text.len(), &mut out);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn idents(text: &str) -> Vec<&str> {
        let tokens = lex(text).into_iter();
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
        assert!(lexed.iter().any(|t| t.tok == Tok::Str(r#"u "v" w"#)));
        assert!(lexed.iter().any(|t| t.tok == Tok::Str(r##"a "# b"##)));
        assert_eq!(lexed.iter().filter(|t| t.tok == Tok::Lifetime).count(), 3);
        assert_eq!(idents("r#type::x"), ["type", "x"]);
    }

    #[test]
    fn unterminated_comments_and_literals_end_with_the_text() {
        for text in ["r#\"abc", "br##\"a\"#", "\"abc\\", "'\\", "b'", "/* a /* b */", "// x", "'", "r#"] {
            let skim = skim(text);
            assert!(skim.spans.iter().all(|span| span.end <= text.len()), "{text}: {:?}", skim.spans);
            let _ = lex(text);
            let _ = unbalanced(text, &skim.spans);
        }
    }

    #[test]
    fn doc_comments_are_kept_aside() {
        let text = "//! inner\n/// outer\n//// not doc\n/** block */\n/*** not */\n/**/\n/*! inner block */\nfn f() {}";
        let docs: Vec<(&str, bool, bool)> = skim(text).docs.iter().map(|d| (d.body, d.block, d.inner)).collect();
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
            lexed,
            [
                Token { tok: Tok::Ident("a"), at: 0 },
                Token { tok: Tok::PathSep, at: 1 },
                Token { tok: Tok::Ident("b"), at: 3 }
            ]
        );
    }

    #[test]
    fn delimiter_bytes_are_found_sixteen_at_a_time() {
        for b in 0..=255u8 {
            for k in 0..16 {
                let mut block = *b"abcdefghijklmnop";
                block[k] = b;
                let expected = if CLASS[b as usize] == DELIMITER { 1u32 << k } else { 0 };
                assert_eq!(delimiter_mask(block), expected, "byte {b:#x} at {k}");
                assert_eq!(delimiter_mask_by_words(block), expected, "byte {b:#x} at {k}, by words");
            }
        }
        assert_eq!(delimiter_mask(*b"(){}[]()x(){}[])"), 0xfeff);
        assert_eq!(delimiter_mask_by_words(*b"(){}[]()x(){}[])"), 0xfeff);
    }

    #[test]
    fn unbalanced_delimiters_are_found() {
        let unbalanced = |text: &str| unbalanced(text, &skim(text).spans);
        assert_eq!(unbalanced("fn f() { (a[0]) }"), None);
        assert_eq!(unbalanced("fn f() { (a[0)) }"), Some(13));
        assert_eq!(unbalanced("fn f() {"), Some(7));
        // Past the first eight bytes of a stretch of code, and in its last few.
        assert_eq!(unbalanced("fn long_name() { (x[0]]) }"), Some(22));
        assert_eq!(unbalanced("fn long_name() { (x[0]) }}"), Some(25));
        // Delimiters in comments and literals do not count.
        assert_eq!(unbalanced("fn f() { \"}\"; '{'; /* ( */ // [\n r#\"]\"# }"), None);
        // A span that ends inside the block its delimiter is in, or past it; text shorter than a block.
        assert_eq!(unbalanced("{ \"(\" ] }"), Some(6));
        assert_eq!(unbalanced("{ /* ( a much longer comment than a block ) */ ] }"), Some(47));
        assert_eq!(unbalanced("(\"))))))))))))))))))))))))\")"), None);
        assert_eq!(unbalanced(")"), Some(0));
        assert_eq!(unbalanced(""), None);
        // Every split of a text into blocks gives what a byte-at-a-time walk over its code gives.
        let by_bytes = |text: &str| {
            let spans = skim(text).spans;
            let mut open = Delimiters::default();
            for (at, b) in text.bytes().enumerate() {
                if spans.iter().any(|span| (span.start..span.end).contains(&at)) || CLASS[b as usize] != DELIMITER {
                    continue;
                }
                if let Some(at) = open.visit(b, at) {
                    return Some(at);
                }
            }
            open.unclosed()
        };
        let pieces = ["(", ")", "[", "]", "{", "}", "\"(]\"", "/*{*/", "// )\n", "'['", "x", "r#\"}\"#", "        "];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            assert_eq!(unbalanced(&text), by_bytes(&text), "{text:?}");
        }
    }
}
