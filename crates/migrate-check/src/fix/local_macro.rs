//! A `macro_rules!` of a member that pastes one of its fragments after the old crate's path (`old::$kind`), rewritten
//! together with its calls when the rewrite is certain.
//!
//! No rewrite of such a body alone is right: each argument's item has its own new path (`old::EVENT_COMPLETED`
//! becomes `new::EventKind::COMPLETED`, `old::BUFFER` becomes `new::DEFAULT_BUFFER`). So the macro is rewritten only
//! where every call of it is in sight and each pasted argument is a literal name of an item with a note:
//!
//! - the macro is defined at the top level of its file, once, and not `#[macro_export]`ed (then only this crate can
//!   call it, and only after the definition, in this file or in the files of modules declared after it);
//! - its name appears in the file only as the definition and as direct calls after it (`name!(..)` where an item,
//!   statement, expression, pattern or type goes, not inside another macro's tokens, where that macro decides what
//!   the tokens become), and in no other Rust file of any member;
//! - in each rule that pastes a fragment after the old path, the fragment is an `ident` (outside repetitions) used
//!   only so, always after the same path;
//! - which rule each call matches can be told from its tokens (literal tokens, `ident`, `tt` and simple `path`
//!   fragments; a repetition or another fragment kind where a call is tried stops the rewrite), and each pasted
//!   argument is a name whose old path has a path-for-path note.
//!
//! Then the pasted path is swapped, one of two ways, and every call is matched again against the new rules with the
//! new arguments: it must match the same rule, binding what was written. When the new paths of a fragment's arguments
//! share everything but their last segment, the body's old path becomes that prefix and each argument the new name
//! (`new::EventKind::$kind`, `name!(COMPLETED)`), the macro's shape kept. Otherwise the fragment becomes a `path`, the
//! body uses it alone, and each argument is the item's full new path (`$kind:path` => `$kind`,
//! `name!(new::EventKind::COMPLETED)`), which needs the fragment to be followed by what may follow a `path` fragment
//! and not to be extended in the body (`$kind::x`, `$kind<T>`, `$kind!`). Anything else leaves the macro and its calls
//! as they are, with the reason in the occurrence's help.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use proc_macro2::{Delimiter, LineColumn, Spacing, TokenStream, TokenTree};
use syn::visit::{self, Visit};

use super::{Action, Edit, Mapping, key, name};
use crate::paths::LineIndex;

/// Where an occurrence of the old crate is: (line, column), as the check reports it.
type Hit = (usize, usize);

/// What [`rewrite`] decided for the macros of one file.
#[derive(Debug, Default)]
pub(super) struct Rewrites {
    /// The edits (bodies, matchers and calls), in no order.
    pub(super) edits: Vec<Edit>,
    /// The occurrences of the old crate in macro bodies that the edits rewrite.
    pub(super) claimed: HashSet<Hit>,
    /// The occurrences in macro bodies left in place, with the reason the macro was not rewritten.
    pub(super) refused: HashMap<Hit, String>,
}

/// Plans the rewrite of every `macro_rules!` in `file` that pastes a fragment after a path through the old crate (an
/// occurrence of `hits`). `elsewhere(name)` names a Rust file of the workspace other than this one whose code has the
/// word `name`, if there is one.
pub(super) fn rewrite(
    file: &syn::File,
    text: &str,
    hits: &HashSet<Hit>,
    map: &Mapping,
    replacement_lib: &str,
    elsewhere: &dyn Fn(&str) -> Option<String>,
) -> Rewrites {
    let mut defs = Definitions::default();
    defs.visit_file(file);
    let top_level: HashSet<Hit> = file
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Macro(m) if m.mac.path.is_ident("macro_rules") => m.ident.as_ref().map(key),
            _ => None,
        })
        .collect();
    let mut out = Rewrites::default();
    let mut mentions: Option<Option<Vec<(usize, usize, String)>>> = None;
    for def in &defs.0 {
        let Some(ident) = &def.ident else { continue };
        let tokens: Vec<TokenTree> = def.mac.tokens.clone().into_iter().collect();
        let mut uses = Vec::new();
        dollar_uses(&tokens, hits, false, &mut uses);
        let pasted: Vec<Hit> = uses.iter().filter_map(|u| u.pasted.as_ref()).map(|p| p.root).collect();
        if pasted.is_empty() {
            continue;
        }
        let macro_name = name(ident);
        let planned = match mentions.get_or_insert_with(|| idents(text)) {
            Some(mentions) => {
                let sight = Sight { file, text, defs: &defs, top_level: &top_level, mentions, elsewhere };
                plan_macro(def, &sight, hits, map, replacement_lib)
            }
            None => Err("its file does not lex as tokens here".to_owned()),
        };
        match planned {
            Ok((edits, claimed)) => {
                out.edits.extend(edits);
                out.claimed.extend(claimed);
            }
            Err(reason) => {
                let help = format!(
                    "the rest of this path comes from macro tokens; rewrite it by hand with `{replacement_lib}` \
                     (--fix rewrites `{macro_name}!` with its calls only when every call is in sight and passes an \
                     old item by name, but {reason})"
                );
                out.refused.extend(pasted.into_iter().map(|at| (at, help.clone())));
            }
        }
    }
    out
}

/// Every `macro_rules!` definition of a file, wherever it is (nested ones too: they take a name in their scope).
#[derive(Default)]
struct Definitions<'ast>(Vec<&'ast syn::ItemMacro>);

impl<'ast> Visit<'ast> for Definitions<'ast> {
    fn visit_item_macro(&mut self, item: &'ast syn::ItemMacro) {
        if item.mac.path.is_ident("macro_rules") && item.ident.is_some() {
            self.0.push(item);
        }
        visit::visit_item_macro(self, item);
    }
}

/// What decides whether every call of a macro is in sight.
struct Sight<'a> {
    file: &'a syn::File,
    text: &'a str,
    defs: &'a Definitions<'a>,
    top_level: &'a HashSet<Hit>,
    /// Every identifier token of the file, with its line and column.
    mentions: &'a [(usize, usize, String)],
    elsewhere: &'a dyn Fn(&str) -> Option<String>,
}

/// One direct call of the macro.
struct Call {
    /// Where its name starts.
    at: LineColumn,
    tokens: Vec<TokenTree>,
    /// Its arguments' text: from after the opening delimiter to the closing one.
    inner: (LineColumn, LineColumn),
}

/// The calls `name!(..)` that a syntax tree reaches (not those inside another macro's tokens).
struct Calls<'n> {
    name: &'n str,
    calls: Vec<Call>,
}

impl<'ast> Visit<'ast> for Calls<'_> {
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        if mac.path.leading_colon.is_none()
            && mac.path.segments.len() == 1
            && let Some(segment) = mac.path.segments.first()
            && segment.arguments.is_none()
            && name(&segment.ident) == self.name
        {
            let delimiter = mac.delimiter.span();
            self.calls.push(Call {
                at: segment.ident.span().start(),
                tokens: mac.tokens.clone().into_iter().collect(),
                inner: (delimiter.open().end(), delimiter.close().start()),
            });
        }
        visit::visit_macro(self, mac);
    }
}

/// Every identifier token of `text` as (line, column, name), column 1-based; `None` when it does not lex.
fn idents(text: &str) -> Option<Vec<(usize, usize, String)>> {
    fn walk(stream: TokenStream, out: &mut Vec<(usize, usize, String)>) {
        for tree in stream {
            match tree {
                TokenTree::Group(group) => walk(group.stream(), out),
                TokenTree::Ident(ident) => {
                    let (line, column) = key(&ident);
                    out.push((line, column, name(&ident)));
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(TokenStream::from_str(text).ok()?, &mut out);
    Some(out)
}

// ---------------------------------------------------------------------------------------------------------------------
// The rules.

/// One rule: `(matcher) => {transcriber}`.
struct Rule {
    matcher: Vec<Matcher>,
    transcriber: Vec<TokenTree>,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// An identifier, punctuation or literal to match exactly.
    Token(TokenTree),
    Group(Delimiter, Vec<Matcher>),
    Fragment {
        name: String,
        kind: Fragment,
        /// The `ident` of `$name:ident`.
        kind_token: proc_macro2::Ident,
    },
    /// A repetition, or a `$` form that is no fragment: what it matches is not told here.
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fragment {
    Ident,
    Tt,
    Path,
    /// Any other kind (`expr`, `ty`, `literal`, ...): what it matches is not told here.
    Other,
}

fn punct(tokens: &[TokenTree], i: usize, c: char) -> bool {
    matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == c)
}

/// `::` at `i`.
fn colons(tokens: &[TokenTree], i: usize) -> bool {
    matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && punct(tokens, i + 1, ':')
}

/// The rules of a `macro_rules!` body, if it is a list of `(..) => {..}` separated by `;`.
fn rules(tokens: &[TokenTree]) -> Option<Vec<Rule>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (Some(TokenTree::Group(matcher)), true, Some(TokenTree::Group(transcriber))) =
            (tokens.get(i), fat_arrow(tokens, i + 1), tokens.get(i + 3))
        else {
            return None;
        };
        let matcher_tokens: Vec<TokenTree> = matcher.stream().into_iter().collect();
        out.push(Rule { matcher: matchers(&matcher_tokens), transcriber: transcriber.stream().into_iter().collect() });
        i += 4;
        if punct(tokens, i, ';') {
            i += 1;
        } else if i < tokens.len() {
            return None;
        }
    }
    Some(out)
}

/// `=>` at `i`.
fn fat_arrow(tokens: &[TokenTree], i: usize) -> bool {
    matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == '=' && p.spacing() == Spacing::Joint)
        && punct(tokens, i + 1, '>')
}

fn matchers(tokens: &[TokenTree]) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Punct(p) if p.as_char() == '$' => {
                match (tokens.get(i + 1), punct(tokens, i + 2, ':'), tokens.get(i + 3)) {
                    (Some(TokenTree::Ident(fragment)), true, Some(TokenTree::Ident(kind)))
                        if fragment != "crate" && !colons(tokens, i + 2) =>
                    {
                        let kind_name = kind.to_string();
                        out.push(Matcher::Fragment {
                            name: name(fragment),
                            kind: match kind_name.as_str() {
                                "ident" => Fragment::Ident,
                                "tt" => Fragment::Tt,
                                "path" => Fragment::Path,
                                _ => Fragment::Other,
                            },
                            kind_token: kind.clone(),
                        });
                        i += 4;
                    }
                    _ => {
                        // A repetition `$(..) sep op` or something stranger: the rest of this matcher is opaque.
                        out.push(Matcher::Opaque);
                        return out;
                    }
                }
            }
            TokenTree::Group(group) => {
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                out.push(Matcher::Group(group.delimiter(), matchers(&inner)));
                i += 1;
            }
            other => {
                out.push(Matcher::Token(other.clone()));
                i += 1;
            }
        }
    }
    out
}

/// A use `$name` in a transcriber.
struct DollarUse {
    name: String,
    /// Inside a repetition `$( .. )`.
    repeated: bool,
    /// It follows a path through the old crate: `[::]old(::segment)*::$name`.
    pasted: Option<Pasted>,
}

struct Pasted {
    /// Where the old crate's name is (line, column): an occurrence the check reported.
    root: Hit,
    /// Where the path starts (its leading `::`, if any) and where its old crate's name starts.
    start: LineColumn,
    root_start: LineColumn,
    leading_colon: bool,
    /// The end of the last segment before `::$name`, and where the `$` starts.
    prefix_end: LineColumn,
    dollar: LineColumn,
    /// The segments between the old crate's name and `$name`.
    segments: Vec<String>,
    /// What follows `$name`: `::`, `<` or `!` extend or call it as a path.
    extended: bool,
}

fn dollar_uses(tokens: &[TokenTree], hits: &HashSet<Hit>, repeated: bool, out: &mut Vec<DollarUse>) {
    for (i, tree) in tokens.iter().enumerate() {
        match tree {
            TokenTree::Group(group) => {
                let inner: Vec<TokenTree> = group.stream().into_iter().collect();
                let repetition = i > 0 && punct(tokens, i - 1, '$');
                dollar_uses(&inner, hits, repeated || repetition, out);
            }
            TokenTree::Punct(p) if p.as_char() == '$' => {
                let Some(TokenTree::Ident(ident)) = tokens.get(i + 1) else { continue };
                out.push(DollarUse { name: name(ident), repeated, pasted: pasted(tokens, i, hits) });
            }
            _ => {}
        }
    }
}

/// The old path before the `$` at `dollar`, if there is one rooted at an occurrence of the old crate.
fn pasted(tokens: &[TokenTree], dollar: usize, hits: &HashSet<Hit>) -> Option<Pasted> {
    // Back over `segment ::` pairs.
    let mut segments: Vec<&proc_macro2::Ident> = Vec::new();
    let mut at = dollar;
    while at >= 3 && colons(tokens, at - 2) {
        let TokenTree::Ident(segment) = &tokens[at - 3] else { break };
        segments.push(segment);
        at -= 3;
    }
    let root = segments.pop()?;
    if !hits.contains(&key(root)) {
        return None;
    }
    segments.reverse();
    let leading_colon = at >= 2 && colons(tokens, at - 2);
    let start = if leading_colon { tokens[at - 2].span().start() } else { root.span().start() };
    let TokenTree::Punct(dollar_token) = &tokens[dollar] else { return None };
    let prefix_end = segments.last().copied().unwrap_or(root).span().end();
    let extended = colons(tokens, dollar + 2) || punct(tokens, dollar + 2, '<') || punct(tokens, dollar + 2, '!');
    Some(Pasted {
        root: key(root),
        start,
        root_start: root.span().start(),
        leading_colon,
        prefix_end,
        dollar: dollar_token.span().start(),
        segments: segments.iter().map(|s| name(s)).collect(),
        extended,
    })
}

// ---------------------------------------------------------------------------------------------------------------------
// Matching a call, as rustc does for these matchers.

/// The rule a call matches cannot be told from its tokens here.
#[derive(Debug)]
struct Unknown;

type Bindings = HashMap<String, Vec<TokenTree>>;

/// The first rule that `tokens` match and what it binds; `Ok(None)` when none does.
fn first_match(rules: &[Vec<Matcher>], tokens: &[TokenTree]) -> Result<Option<(usize, Bindings)>, Unknown> {
    for (index, matcher) in rules.iter().enumerate() {
        let mut bindings = Bindings::new();
        if match_seq(matcher, tokens, &mut bindings)? {
            return Ok(Some((index, bindings)));
        }
    }
    Ok(None)
}

/// Whether `tokens` match `matcher` whole. Matchers without repetitions match left to right without choices, so the
/// first token that does not match decides.
fn match_seq(matcher: &[Matcher], tokens: &[TokenTree], bindings: &mut Bindings) -> Result<bool, Unknown> {
    let mut at = 0;
    for element in matcher {
        match element {
            Matcher::Opaque => return Err(Unknown),
            Matcher::Token(expected) => {
                let Some(token) = tokens.get(at) else { return Ok(false) };
                if !same_token(expected, token)? {
                    return Ok(false);
                }
                at += 1;
            }
            Matcher::Group(delimiter, inner) => {
                let Some(TokenTree::Group(group)) = tokens.get(at) else { return Ok(false) };
                if group.delimiter() == Delimiter::None {
                    return Err(Unknown);
                }
                let inner_tokens: Vec<TokenTree> = group.stream().into_iter().collect();
                if group.delimiter() != *delimiter || !match_seq(inner, &inner_tokens, bindings)? {
                    return Ok(false);
                }
                at += 1;
            }
            Matcher::Fragment { name, kind, .. } => {
                let len = match kind {
                    Fragment::Ident => match tokens.get(at) {
                        Some(TokenTree::Ident(ident)) if ident != "_" => Some(1),
                        _ => None,
                    },
                    Fragment::Tt => match tokens.get(at) {
                        // A joint punctuation may be glued to the next one into one token tree (`=>`).
                        Some(TokenTree::Punct(p)) if p.spacing() == Spacing::Joint => return Err(Unknown),
                        Some(_) => Some(1),
                        None => None,
                    },
                    Fragment::Path => path_len(tokens, at)?,
                    Fragment::Other => return Err(Unknown),
                };
                let Some(len) = len else { return Ok(false) };
                bindings.insert(name.clone(), tokens[at..at + len].to_vec());
                at += len;
            }
        }
    }
    Ok(at == tokens.len())
}

/// Whether two tokens are the same token for a matcher.
fn same_token(expected: &TokenTree, token: &TokenTree) -> Result<bool, Unknown> {
    match (expected, token) {
        (TokenTree::Ident(a), TokenTree::Ident(b)) => {
            let (a, b) = (a.to_string(), b.to_string());
            // Whether `r#x` and `x` are the same token to a matcher is not told here.
            if a != b && (a.starts_with("r#") || b.starts_with("r#")) {
                return Err(Unknown);
            }
            Ok(a == b)
        }
        (TokenTree::Punct(a), TokenTree::Punct(b)) => {
            if a.as_char() != b.as_char() {
                return Ok(false);
            }
            // The same character glued to different neighbours may be another token (`=` in `==`).
            if a.spacing() != b.spacing() {
                return Err(Unknown);
            }
            Ok(true)
        }
        (TokenTree::Literal(a), TokenTree::Literal(b)) => Ok(a.to_string() == b.to_string()),
        _ => Ok(false),
    }
}

/// Words that are no path segment a `path` fragment parses plainly (reserved words; `self`, `super`, `crate`, `Self`
/// begin paths of their own).
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self",
    "Self", "static", "struct", "super", "trait", "true", "try", "type", "unsafe", "use", "where", "while", "abstract",
    "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield",
];

fn plain_segment(token: Option<&TokenTree>) -> bool {
    matches!(token, Some(TokenTree::Ident(ident)) if {
        let text = ident.to_string();
        !text.starts_with("r#") && !KEYWORDS.contains(&text.as_str())
    })
}

/// How many tokens a `path` fragment takes at `at`: `[::]a(::b)*` followed by no `::`, `<` or `(` (generic
/// arguments, which are not told here); `None` when no path can start there.
fn path_len(tokens: &[TokenTree], at: usize) -> Result<Option<usize>, Unknown> {
    let mut j = at;
    if colons(tokens, j) {
        j += 2;
    } else if punct(tokens, j, '<') {
        return Err(Unknown);
    }
    if !plain_segment(tokens.get(j)) {
        return match tokens.get(j) {
            Some(TokenTree::Ident(_)) => Err(Unknown),
            _ if j > at => Err(Unknown),
            _ => Ok(None),
        };
    }
    j += 1;
    loop {
        if colons(tokens, j) {
            if !plain_segment(tokens.get(j + 2)) {
                return Err(Unknown);
            }
            j += 3;
            continue;
        }
        if punct(tokens, j, '<')
            || matches!(tokens.get(j), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis)
        {
            return Err(Unknown);
        }
        return Ok(Some(j - at));
    }
}

/// Whether what follows a fragment in its matcher may follow a `path` fragment: the end of its group, `=>`, `,`, `=`,
/// `|`, `;`, `:`, `>`, `>>`, `[`, `{`, `as` or `where`.
fn may_follow_path(matcher: &[Matcher], index: usize) -> bool {
    let token = |i: usize| match matcher.get(i) {
        Some(Matcher::Token(TokenTree::Punct(p))) => Some((p.as_char(), p.spacing())),
        _ => None,
    };
    match matcher.get(index + 1) {
        None => true,
        Some(Matcher::Group(delimiter, _)) => matches!(delimiter, Delimiter::Bracket | Delimiter::Brace),
        Some(Matcher::Token(TokenTree::Ident(ident))) => ident == "as" || ident == "where",
        Some(Matcher::Token(TokenTree::Punct(p))) => match (p.as_char(), p.spacing()) {
            // `,` and `;` glue to nothing; `||`, `|=`, `::`, `==`, `>=` are other tokens.
            (',' | ';', _) | ('|' | '=' | ':' | '>', Spacing::Alone) => true,
            ('=', Spacing::Joint) => token(index + 2) == Some(('>', Spacing::Alone)),
            ('>', Spacing::Joint) => token(index + 2) == Some(('>', Spacing::Alone)),
            _ => false,
        },
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Planning one macro.

/// A fragment of one rule that is pasted after the old path, and how it is rewritten.
struct Target<'r> {
    rule: usize,
    fragment: String,
    uses: Vec<&'r Pasted>,
}

/// The edits that rewrite `def` and its calls, and the occurrences of the old crate they rewrite; or why it stays.
fn plan_macro(
    def: &syn::ItemMacro,
    sight: &Sight<'_>,
    hits: &HashSet<Hit>,
    map: &Mapping,
    replacement_lib: &str,
) -> Result<(Vec<Edit>, HashSet<Hit>), String> {
    let ident = def.ident.as_ref().expect("a macro_rules! has a name");
    let macro_name = name(ident);
    if def.attrs.iter().any(|a| a.path().is_ident("macro_export")) {
        return Err("it is `#[macro_export]`ed, so crates out of sight may call it".to_owned());
    }
    if !sight.top_level.contains(&key(ident)) {
        return Err("it is defined inside a module or a function".to_owned());
    }
    if sight.defs.0.iter().filter(|d| d.ident.as_ref().is_some_and(|i| name(i) == macro_name)).count() > 1 {
        return Err(format!("this file defines another macro `{macro_name}!`"));
    }
    let tokens: Vec<TokenTree> = def.mac.tokens.clone().into_iter().collect();
    let Some(rules) = rules(&tokens) else { return Err("its rules are not `(..) => {..}` pairs".to_owned()) };

    // The fragments pasted after the old path, rule by rule.
    let mut all_uses: Vec<Vec<DollarUse>> = Vec::new();
    for rule in &rules {
        let mut uses = Vec::new();
        dollar_uses(&rule.transcriber, hits, false, &mut uses);
        all_uses.push(uses);
    }
    let mut targets: Vec<Target<'_>> = Vec::new();
    for (index, (rule, uses)) in rules.iter().zip(&all_uses).enumerate() {
        let mut names: Vec<&str> = uses.iter().filter(|u| u.pasted.is_some()).map(|u| u.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for fragment in names {
            let bound = fragment_of(&rule.matcher, fragment);
            if !matches!(bound, Some(Fragment::Ident)) {
                return Err(format!("`${fragment}` is not an `ident` fragment outside repetitions"));
            }
            let of_it: Vec<&DollarUse> = uses.iter().filter(|u| u.name == fragment).collect();
            if of_it.iter().any(|u| u.repeated || u.pasted.is_none()) {
                return Err(format!("`${fragment}` is used other than after the old crate's path"));
            }
            let pasted: Vec<&Pasted> = of_it.iter().filter_map(|u| u.pasted.as_ref()).collect();
            if pasted.iter().any(|p| p.segments != pasted[0].segments) {
                return Err(format!("`${fragment}` follows different paths"));
            }
            targets.push(Target { rule: index, fragment: fragment.to_owned(), uses: pasted });
        }
    }

    // Every call in sight.
    let mut calls = Calls { name: &macro_name, calls: Vec::new() };
    calls.visit_file(sight.file);
    let def_key = key(ident);
    let def_end = def.mac.delimiter.span().close().end();
    let call_keys: HashSet<Hit> = calls.calls.iter().map(|c| (c.at.line, c.at.column + 1)).collect();
    if let Some((line, _, _)) = sight.mentions.iter().find(|(line, column, n)| {
        *n == macro_name && (*line, *column) != def_key && !call_keys.contains(&(*line, *column))
    }) {
        return Err(format!(
            "line {line} names `{macro_name}` other than in a direct call (in another macro's arguments or body, say)"
        ));
    }
    if let Some(call) = calls.calls.iter().find(|c| (c.at.line, c.at.column) < (def_end.line, def_end.column)) {
        return Err(format!("the call on line {} comes before the definition", call.at.line));
    }
    if let Some(file) = (sight.elsewhere)(&macro_name) {
        return Err(format!("`{macro_name}` also appears in {file}, where a call of it cannot be told apart"));
    }

    // The rule each call matches, and the old items it passes.
    let old_rules: Vec<Vec<Matcher>> = rules.iter().map(|r| r.matcher.clone()).collect();
    let mut matched: Vec<(usize, Bindings)> = Vec::new();
    for call in &calls.calls {
        match first_match(&old_rules, &call.tokens) {
            Ok(Some(found)) => matched.push(found),
            Ok(None) => return Err(format!("the call on line {} matches none of its rules", call.at.line)),
            Err(Unknown) => {
                return Err(format!("which rule the call on line {} matches is not certain", call.at.line));
            }
        }
    }
    let rebase = |new: &str| -> Vec<String> {
        let mut segments: Vec<String> = new.split("::").map(str::to_owned).collect();
        segments[0] = replacement_lib.to_owned();
        segments
    };
    // Per target: the new path of each call's argument (call index, argument token, new segments).
    let mut news: Vec<Vec<(usize, proc_macro2::Ident, Vec<String>)>> = Vec::new();
    for target in &targets {
        let mut of_target = Vec::new();
        for (index, (rule, bindings)) in matched.iter().enumerate() {
            if *rule != target.rule {
                continue;
            }
            let line = calls.calls[index].at.line;
            let Some([TokenTree::Ident(argument)]) = bindings.get(&target.fragment).map(Vec::as_slice) else {
                return Err(format!("the call on line {line} passes no name for `${}`", target.fragment));
            };
            let mut old = vec![map.lib.clone()];
            old.extend(target.uses[0].segments.iter().cloned());
            old.push(argument.to_string());
            let Some(Action::Path(new)) = map.items.get(&old.join("::")) else {
                return Err(format!(
                    "the call on line {line} passes `{argument}`, and `{}` has no path-for-path deprecation note",
                    old.join("::")
                ));
            };
            let new = rebase(new);
            if new.iter().any(|s| s.starts_with("r#")) {
                return Err(format!("the new path of `{}` has a raw identifier", old.join("::")));
            }
            of_target.push((index, argument.clone(), new));
        }
        news.push(of_target);
    }

    // The rewrite, and the check that every call still matches the same rule: the prefix form where it applies,
    // else (or when a call would then match another rule) the `path` form.
    let found = Found {
        text: sight.text,
        rules: &rules,
        old_rules: &old_rules,
        targets: &targets,
        news: &news,
        calls: &calls.calls,
        matched: &matched,
    };
    let edits = found.edits(true).or_else(|err| found.edits(false).map_err(|_| err))?;
    let claimed = targets.iter().flat_map(|t| &t.uses).map(|p| p.root).collect();
    Ok((edits, claimed))
}

/// What [`plan_macro`] found: the rules, the fragments to rewrite, the calls and the new paths of their arguments.
struct Found<'f> {
    text: &'f str,
    rules: &'f [Rule],
    old_rules: &'f [Vec<Matcher>],
    targets: &'f [Target<'f>],
    /// Per target: (call index, argument, new path) of each call of its rule.
    news: &'f [Vec<(usize, proc_macro2::Ident, Vec<String>)>],
    calls: &'f [Call],
    /// The rule each call matches, and its bindings.
    matched: &'f [(usize, Bindings)],
}

impl Found<'_> {
    /// The edits of the rewrite (the prefix form where `allow_prefix` and the new paths share a prefix), once every
    /// rewritten call matches the same rule as before, binding what was written.
    fn edits(&self, allow_prefix: bool) -> Result<Vec<Edit>, String> {
        let index = LineIndex::new(self.text);
        let offset = |at: LineColumn| index.offset(at.line, at.column);
        let mut edits: Vec<Edit> = Vec::new();
        let mut argument_edits: Vec<Vec<Edit>> = vec![Vec::new(); self.calls.len()];
        let mut expected: Vec<HashMap<String, String>> = vec![HashMap::new(); self.calls.len()];
        let mut new_rules = self.old_rules.to_vec();
        for (target, of_target) in self.targets.iter().zip(self.news) {
            let prefix = of_target.first().map(|(_, _, new)| &new[..new.len() - 1]);
            let shared = prefix.filter(|p| {
                allow_prefix && !p.is_empty() && of_target.iter().all(|(_, _, new)| &new[..new.len() - 1] == *p)
            });
            let written: Vec<String> = if let Some(prefix) = shared {
                // Keep the shape: the body's path becomes the shared prefix, each argument the new name.
                for pasted in &target.uses {
                    edits.push(Edit {
                        start: offset(pasted.root_start),
                        end: offset(pasted.prefix_end),
                        text: prefix.join("::"),
                    });
                }
                of_target.iter().map(|(_, _, new)| new.last().cloned().unwrap_or_default()).collect()
            } else {
                // The fragment becomes a path, the body uses it alone, each argument is the new path.
                let rule = &self.rules[target.rule];
                let Some(position) = rule.matcher.iter().position(|m| is_fragment(m, &target.fragment)) else {
                    return Err(format!("`${}` is inside a group of its matcher", target.fragment));
                };
                if !may_follow_path(&rule.matcher, position) {
                    return Err(format!("`${}` is followed by what may not follow a `path` fragment", target.fragment));
                }
                if target.uses.iter().any(|p| p.extended) {
                    return Err(format!("`${}` is extended after the old path (`::`, `<` or `!`)", target.fragment));
                }
                let leading = target.uses[0].leading_colon;
                if target.uses.iter().any(|p| p.leading_colon != leading) {
                    return Err(format!("`${}` follows the old path with and without a leading `::`", target.fragment));
                }
                let Matcher::Fragment { kind_token, .. } = &rule.matcher[position] else { unreachable!("a fragment") };
                edits.push(Edit {
                    start: offset(kind_token.span().start()),
                    end: offset(kind_token.span().end()),
                    text: "path".to_owned(),
                });
                if let Matcher::Fragment { kind, .. } = &mut new_rules[target.rule][position] {
                    *kind = Fragment::Path;
                }
                for pasted in &target.uses {
                    edits.push(Edit { start: offset(pasted.start), end: offset(pasted.dollar), text: String::new() });
                }
                let colons = if leading { "::" } else { "" };
                of_target.iter().map(|(_, _, new)| format!("{colons}{}", new.join("::"))).collect()
            };
            for ((call, argument, _), text) in of_target.iter().zip(written) {
                expected[*call].insert(target.fragment.clone(), text.clone());
                if *argument != text {
                    let span = argument.span();
                    argument_edits[*call].push(Edit { start: offset(span.start()), end: offset(span.end()), text });
                }
            }
        }
        for (index, call) in self.calls.iter().enumerate() {
            let line = call.at.line;
            let (start, end) = (offset(call.inner.0), offset(call.inner.1));
            let mut own = argument_edits[index].clone();
            own.sort_by_key(|e| e.start);
            let mut arguments = String::new();
            let mut at = start;
            for edit in &own {
                arguments.push_str(&self.text[at..edit.start]);
                arguments.push_str(&edit.text);
                at = edit.end;
            }
            arguments.push_str(&self.text[at..end]);
            let Ok(stream) = TokenStream::from_str(&arguments) else {
                return Err(format!("the rewritten call on line {line} does not lex"));
            };
            let tokens: Vec<TokenTree> = stream.into_iter().collect();
            let again = match first_match(&new_rules, &tokens) {
                Ok(Some(found)) => found,
                _ => return Err(format!("the rewritten call on line {line} would not match its rule for certain")),
            };
            let same_bindings = expected[index].iter().all(|(fragment, text)| {
                again.1.get(fragment).is_some_and(|bound| {
                    let bound: String = bound.iter().map(ToString::to_string).collect();
                    bound.replace(' ', "") == *text
                })
            });
            if again.0 != self.matched[index].0 || !same_bindings {
                return Err(format!("the rewritten call on line {line} would match another rule"));
            }
            edits.extend(own);
        }
        Ok(edits)
    }
}

/// The kind of the fragment `name` where the matcher binds it outside repetitions (in groups too).
fn fragment_of(matcher: &[Matcher], fragment: &str) -> Option<Fragment> {
    matcher.iter().find_map(|m| match m {
        Matcher::Fragment { name, kind, .. } if name == fragment => Some(*kind),
        Matcher::Group(_, inner) => fragment_of(inner, fragment),
        _ => None,
    })
}

fn is_fragment(matcher: &Matcher, fragment: &str) -> bool {
    matches!(matcher, Matcher::Fragment { name, .. } if name == fragment)
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Mapping, apply, fix_source};
    use super::*;
    use crate::paths::line_col;

    /// The old crate `old`: constants and types whose new homes differ, a module, and a function.
    fn mapping() -> Mapping {
        let items = [
            ("old::EVENT_START", "new::Kind::START"),
            ("old::EVENT_DONE", "new::Kind::DONE"),
            ("old::BUFFER", "new::DEFAULT_BUFFER"),
            ("old::events::DONE", "new::Kind::DONE"),
            ("old::make", "new::Registry::new"),
            ("old::Reg", "new::store::Registry"),
            ("old::Buf", "new::Buffer"),
        ];
        let mut items: HashMap<String, Action> =
            items.iter().map(|(old, new)| ((*old).to_owned(), Action::Path((*new).to_owned()))).collect();
        items.insert("old::events".to_owned(), Action::Module);
        Mapping {
            lib: "old".to_owned(),
            items,
            macros: HashMap::new(),
            consts: ["old::EVENT_START", "old::EVENT_DONE", "old::BUFFER"].map(str::to_owned).into(),
            methods: HashSet::new(),
            method_targets: HashSet::new(),
        }
    }

    /// `src` after `--fix` (every `old` identifier is an occurrence the check reported), then a line per occurrence
    /// left: `left L:C: help`. `elsewhere` is another file whose text names the macro.
    #[track_caller]
    fn check_with(src: &str, elsewhere: Option<&str>, expect: &str) {
        let hits: HashSet<Hit> =
            idents(src).expect("it lexes").into_iter().filter(|(_, _, n)| n == "old").map(|(l, c, _)| (l, c)).collect();
        let elsewhere = |_: &str| elsewhere.map(str::to_owned);
        let (edits, left) = fix_source("lib.rs", src, &hits, &mapping(), "new", false, &elsewhere).expect("it parses");
        let mut actual = apply(src, &edits);
        for (offset, help) in left {
            let (line, column) = line_col(src, offset);
            actual.push_str(&format!("left {line}:{column}: {help}\n"));
        }
        assert_eq!(actual, expect);
    }

    #[track_caller]
    fn check(src: &str, expect: &str) {
        check_with(src, None, expect);
    }

    #[test]
    fn a_shared_prefix_goes_into_the_body_and_the_new_names_into_the_calls() {
        check(
            r#"
use old::*;

macro_rules! name {
    (started) => {
        old::EVENT_START
    };
    ($kind:ident) => {
        old::$kind
    };
}

pub fn both() -> [&'static str; 3] {
    [name!(started), name!(EVENT_DONE), name!(EVENT_START)]
}
"#,
            r#"
use new::*;

macro_rules! name {
    (started) => {
        new::Kind::START
    };
    ($kind:ident) => {
        new::Kind::$kind
    };
}

pub fn both() -> [&'static str; 3] {
    [name!(started), name!(DONE), name!(START)]
}
"#,
        );
    }

    #[test]
    fn new_paths_without_a_shared_prefix_are_passed_whole_to_a_path_fragment() {
        check(
            r#"
macro_rules! item {
    ($name:ident) => {
        ::old::$name
    };
}

pub fn limits() -> (&'static str, usize) {
    (item!(EVENT_DONE), item!(BUFFER))
}
"#,
            r#"
macro_rules! item {
    ($name:path) => {
        $name
    };
}

pub fn limits() -> (&'static str, usize) {
    (item!(::new::Kind::DONE), item!(::new::DEFAULT_BUFFER))
}
"#,
        );
        // A call that the shared prefix would turn into an earlier rule's literal: the `path` form then.
        check(
            r#"
macro_rules! kind {
    (START) => {
        "a literal"
    };
    ($name:ident) => {
        old::$name
    };
}

const K: &str = kind!(EVENT_START);
"#,
            r#"
macro_rules! kind {
    (START) => {
        "a literal"
    };
    ($name:path) => {
        $name
    };
}

const K: &str = kind!(new::Kind::START);
"#,
        );
    }

    #[test]
    fn a_path_through_a_module_of_the_old_crate_is_mapped_whole() {
        check(
            r#"
macro_rules! done {
    ($name:ident) => {
        old::events::$name
    };
}

const K: &str = done!(DONE);
"#,
            r#"
macro_rules! done {
    ($name:ident) => {
        new::Kind::$name
    };
}

const K: &str = done!(DONE);
"#,
        );
    }

    /// A macro as the fixture's `old_name!`, with `attrs` on it and `calls` after it.
    fn pasting(attrs: &str, calls: &str) -> String {
        format!("{attrs}macro_rules! name {{\n    ($kind:ident) => {{\n        old::$kind\n    }};\n}}\n\n{calls}")
    }

    /// `src` stays as it is (but for a `use old::*;`), and its occurrence at `at` is left because of `reason`.
    #[track_caller]
    fn check_left(src: &str, elsewhere: Option<&str>, at: &str, reason: &str) {
        let expect = format!(
            "{}left {at}: the rest of this path comes from macro tokens; rewrite it by hand with `new` (--fix rewrites \
             `name!` with its calls only when every call is in sight and passes an old item by name, but {reason})\n",
            src.replacen("use old::*;", "use new::*;", 1)
        );
        check_with(src, elsewhere, &expect);
    }

    #[test]
    fn a_call_that_passes_no_old_item_by_name_leaves_the_macro_and_its_calls() {
        let other = pasting("", "const A: &str = name!(EVENT_DONE);\nconst B: &str = name!(OTHER);\n");
        let reason = "the call on line 8 passes `OTHER`, and `old::OTHER` has no path-for-path deprecation note";
        check_left(&other, None, "3:9", reason);
        let two = pasting("", "const A: &str = name!(EVENT_DONE);\nconst B: &str = name!(EVENT_DONE, 1);\n");
        check_left(&two, None, "3:9", "the call on line 8 matches none of its rules");
        // A call in another macro's body passes what that macro is given.
        let pair = pasting(
            "",
            "macro_rules! pair {\n    ($k:ident) => {\n        [name!($k), name!(EVENT_DONE)]\n    };\n}\n",
        );
        let reason = "line 9 names `name` other than in a direct call (in another macro's arguments or body, say)";
        check_left(&pair, None, "3:9", reason);
        // Which rule a call matches is not told for other fragment kinds.
        let expr = "macro_rules! name {\n    ($e:expr) => {\n        $e\n    };\n    ($kind:ident) => {\n        old::$kind\n    };\n}\n\nconst A: &str = name!(EVENT_DONE);\n";
        check_left(expr, None, "6:9", "which rule the call on line 10 matches is not certain");
    }

    #[test]
    fn a_macro_with_calls_out_of_sight_is_left_as_it_is() {
        let call = "const A: &str = name!(EVENT_DONE);\n";
        // Other crates may call an exported macro.
        let exported = pasting("#[macro_export]\n", call);
        check_left(&exported, None, "4:9", "it is `#[macro_export]`ed, so crates out of sight may call it");
        // Another file names it: a call there may be one of this macro.
        let reason = "`name` also appears in crates/b/src/lib.rs, where a call of it cannot be told apart";
        check_left(&pasting("", call), Some("crates/b/src/lib.rs"), "3:9", reason);
        // Inside another macro's arguments, that macro decides what becomes of the call (the name there is not taken
        // for one of the glob import's either).
        let nested = pasting("use old::*;\n\n", "#[test]\nfn t() {\n    assert_eq!(name!(EVENT_DONE), \"done\");\n}\n");
        let reason = "line 11 names `name` other than in a direct call (in another macro's arguments or body, say)";
        check_left(&nested, None, "5:9", reason);
        // A call before the definition is another macro's.
        let before = format!("{call}{}", pasting("", ""));
        check_left(&before, None, "4:9", "the call on line 1 comes before the definition");
        // A macro defined inside a module is in scope there only.
        let inside = format!("mod m {{\n{}}}\n", pasting("", call));
        check_left(&inside, None, "4:9", "it is defined inside a module or a function");
    }

    #[test]
    fn the_path_form_is_refused_where_it_would_change_what_rustc_reads() {
        // Two new homes, so a `path` fragment would be needed; a `path` fragment would take the later rule's call.
        let wider = "macro_rules! name {\n    ($kind:ident) => {\n        old::$kind\n    };\n    ($p:path) => {\n        $p\n    };\n}\n\nconst A: (&str, usize, u8) = (name!(EVENT_DONE), name!(BUFFER), name!(other::X));\n";
        check_left(wider, None, "3:9", "the rewritten call on line 10 would match another rule");
        // `+` may follow an `ident` fragment, not a `path` one.
        let plus = "macro_rules! name {\n    ($kind:ident +) => {\n        old::$kind\n    };\n}\n\nconst A: (&str, usize) = (name!(EVENT_DONE +), name!(BUFFER +));\n";
        check_left(plus, None, "3:9", "`$kind` is followed by what may not follow a `path` fragment");
        // A path fragment cannot be extended: `$kind::new` is no path then.
        let extended = "macro_rules! name {\n    ($kind:ident) => {\n        old::$kind::new()\n    };\n}\n\nfn f() {\n    let _ = (name!(Reg), name!(Buf));\n}\n";
        check_left(extended, None, "3:9", "`$kind` is extended after the old path (`::`, `<` or `!`)");
        // With one new home the prefix form keeps the extension.
        check(
            "macro_rules! name {\n    ($kind:ident) => {\n        old::$kind::new()\n    };\n}\n\nfn f() {\n    let _ = name!(Reg);\n}\n",
            "macro_rules! name {\n    ($kind:ident) => {\n        new::store::$kind::new()\n    };\n}\n\nfn f() {\n    let _ = name!(Registry);\n}\n",
        );
    }
}
