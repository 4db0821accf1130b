//! Paths and positions, computed without touching the file system: one `normalize`, one way to show a path relative
//! to the workspace root, one byte offset -> line and column conversion.

use std::path::{Component, Path, PathBuf};

/// Resolves `.` and `..` lexically (symlinks are taken as written, as Cargo does). A `..` with nothing left to pop
/// is kept, so a relative path that climbs out stays correct: `../a/./b` stays `../a/b`.
pub fn normalize(path: &Path) -> PathBuf {
    if is_normal(path) {
        return path.to_owned();
    }
    // Where `/` is the separator, on the text: `Path::components` re-parses what it has built at every `..`.
    if std::path::MAIN_SEPARATOR == '/'
        && let Some(text) = path.to_str()
    {
        let absolute = text.starts_with('/');
        let start = usize::from(absolute);
        // Built in place: a `..` removes the component before it, unless that is a `..` kept at the start of a
        // relative path.
        let mut out = String::with_capacity(text.len());
        if absolute {
            out.push('/');
        }
        let (mut kept, mut ups) = (0usize, 0usize);
        for component in components(text) {
            match component {
                "" | "." => {}
                ".." if kept > ups => {
                    let cut = out[start..].rfind('/').map_or(start, |k| start + k);
                    out.truncate(cut);
                    kept -= 1;
                }
                // Nothing above the root; above the start of a relative path, `..` stays.
                ".." if absolute => {}
                other => {
                    if kept > 0 {
                        out.push('/');
                    }
                    out.push_str(other);
                    kept += 1;
                    ups += usize::from(other == "..");
                }
            }
        }
        return PathBuf::from(out);
    }
    by_components(path)
}

/// [`normalize`] for a path the caller owns: a path already in normal form (the common case) is returned as it is,
/// without a copy.
pub(crate) fn normalize_owned(path: PathBuf) -> PathBuf {
    if is_normal(&path) { path } else { normalize(&path) }
}

/// Whether `path` has no empty, `.` or `..` component (the common case: its own normal form), where `/` is the
/// separator (elsewhere: never, so that [`normalize`] decides).
fn is_normal(path: &Path) -> bool {
    let Some(text) = path.to_str().filter(|_| std::path::MAIN_SEPARATOR == '/') else { return false };
    text.len() > usize::from(text.starts_with('/')) && components(text).all(|c| !matches!(c, "" | "." | ".."))
}

/// The `/`-separated components of `text` after a leading `/`, empty ones included, found with a byte loop (paths
/// are short: a `memchr` call per component cost more).
fn components(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut from = usize::from(text.starts_with('/'));
    (from..=bytes.len()).filter_map(move |i| {
        (i == bytes.len() || bytes[i] == b'/').then(|| std::mem::replace(&mut from, i + 1)).map(|s| &text[s..i])
    })
}

/// Whether `path` is `dir` or inside it, both normalized ([`normalize`]): on their bytes where `/` is the separator
/// (`Path::starts_with` compares component by component, the cost of a check's hundreds of calls).
pub fn within(path: &Path, dir: &Path) -> bool {
    let (bytes, prefix) = (path.as_os_str().as_encoded_bytes(), dir.as_os_str().as_encoded_bytes());
    // The root, an empty path and a trailing `/` are left to `starts_with`.
    if std::path::MAIN_SEPARATOR == '/' && !prefix.is_empty() && !prefix.ends_with(b"/") {
        return bytes.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest[0] == b'/');
    }
    path.starts_with(dir)
}

/// [`normalize`] the long way: `.` dropped, each `..` taking the component before it off.
fn by_components(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped = matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped && !matches!(out.components().next_back(), Some(Component::RootDir | Component::Prefix(_))) {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to `root` with `/` separators; as it is (absolute) when outside `root`.
pub fn rel_path(root: &Path, path: &Path) -> String {
    // Where `/` is the separator, the text after the root's, when no component of it is empty or `.` (what
    // `components` would drop): the common case, without walking components.
    if std::path::MAIN_SEPARATOR == '/'
        && let (Some(path), Some(root)) = (path.to_str(), root.to_str())
        && let Some(rest) = path.strip_prefix(root.trim_end_matches('/')).and_then(|rest| rest.strip_prefix('/'))
        && rest.split('/').all(|c| !c.is_empty() && c != ".")
    {
        return rest.to_owned();
    }
    match path.strip_prefix(root) {
        Ok(rel) => rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
        Err(_) => path.display().to_string(),
    }
}

/// A relative path from the directory `from` to `to` (both absolute and normalized), `/` separated.
pub fn relative(from: &Path, to: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".to_owned(); from.len() - common];
    parts.extend(to[common..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()));
    if parts.is_empty() { ".".to_owned() } else { parts.join("/") }
}

/// 1-based line and 1-based character column of a byte offset of `text` (clamped to the text).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.bytes().filter(|&b| b == b'\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// Line starts of a text, for many conversions of lines and columns (as a parse reports them) to byte offsets.
#[derive(Debug)]
pub(crate) struct LineIndex<'t> {
    pub(crate) text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(crate) fn new(text: &'t str) -> LineIndex<'t> {
        let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1)).collect();
        LineIndex { text, starts }
    }

    /// The byte offset of the 1-based `line` and 0-based character `column` (as proc-macro2 spans count them),
    /// clamped to the text.
    pub(crate) fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else { return self.text.len() };
        let rest = &self.text[start..];
        start + rest.char_indices().nth(column).map_or(rest.len(), |(i, _)| i)
    }
}

/// Lines and columns of offsets of a text asked mostly in increasing order, as a scan asks them: the line breaks
/// between one offset and the next are counted then, so nothing is indexed up front (a [`LineIndex`] costs a
/// search per line of the file).
#[derive(Debug)]
pub(crate) struct LineCursor<'t> {
    text: &'t str,
    /// The last offset asked, and its 1-based line.
    at: usize,
    line: usize,
}

impl<'t> LineCursor<'t> {
    pub(crate) fn new(text: &'t str) -> LineCursor<'t> {
        LineCursor { text, at: 0, line: 1 }
    }

    pub(crate) fn text(&self) -> &'t str {
        self.text
    }

    /// 1-based line and 1-based character column of a byte offset.
    pub(crate) fn line_col(&mut self, at: usize) -> (usize, usize) {
        let bytes = self.text.as_bytes();
        if at < self.at {
            (self.at, self.line) = (0, 1);
        }
        // `memchr`'s count is vectorized.
        self.line += memchr::memchr_iter(b'\n', &bytes[self.at..at]).count();
        self.at = at;
        (self.line, self.text[self.line_start(at)..at].chars().count() + 1)
    }

    /// The text of the line that holds byte `at`, without its line break.
    pub(crate) fn line_text(&self, at: usize) -> &'t str {
        let start = self.line_start(at);
        let end = memchr::memchr(b'\n', &self.text.as_bytes()[at..]).map_or(self.text.len(), |k| at + k);
        self.text[start..end].strip_suffix('\r').unwrap_or(&self.text[start..end])
    }

    fn line_start(&self, at: usize) -> usize {
        memchr::memrchr(b'\n', &self.text.as_bytes()[..at]).map_or(0, |k| k + 1)
    }
}

/// The 1-based `line` of `text`, or `""` past its end.
pub fn line_text(text: &str, line: usize) -> &str {
    text.lines().nth(line.wrapping_sub(1)).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_on_the_text_agrees_with_the_component_walk() {
        for path in [
            "/w/a/b.rs",
            "/w/a//b.rs",
            "/w/./a",
            "/w/a/",
            "/w/a/.",
            "/w/a/..",
            "/",
            "",
            "a/b",
            "a/./b",
            "./a",
            "../a",
            "a/",
            "//w",
            "/w/.hidden",
            "/w/a..b",
            "/w/...",
            "/w/a/../b",
            "a",
        ] {
            assert_eq!(normalize(Path::new(path)), by_components(Path::new(path)), "{path}");
        }
        // Every path of up to five components made of these, absolute and relative.
        let parts = ["a", "b", ".", "..", ""];
        let mut paths = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> =
                paths.iter().flat_map(|p| parts.iter().map(move |c| format!("{p}/{c}"))).collect();
            for path in &longer {
                for path in [path.as_str(), &path[1..]] {
                    assert_eq!(normalize(Path::new(path)), by_components(Path::new(path)), "{path:?}");
                }
            }
            paths = longer;
        }
    }

    #[test]
    fn within_agrees_with_starts_with_on_normalized_paths() {
        let paths = ["/", "/w", "/w/a", "/w/ab", "/w/a/b", "/wa", "/w/a.b", "a", "a/b", "ab", "", "../a", ".."];
        for path in paths {
            for dir in paths {
                let (path, dir) = (Path::new(path), Path::new(dir));
                assert_eq!(within(path, dir), path.starts_with(dir), "{path:?} in {dir:?}");
            }
        }
    }

    #[test]
    fn normalize_keeps_leading_parent_dirs() {
        assert_eq!(normalize(Path::new("/w/a/../b/./c")), Path::new("/w/b/c"));
        assert_eq!(normalize(Path::new("../a/./b")), Path::new("../a/b"));
        assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
        assert_eq!(normalize(Path::new("/..")), Path::new("/"));
    }

    #[test]
    fn paths_relative_to_the_root_as_components_give_them() {
        let paths = ["/w/a/b.rs", "/w/a//b.rs", "/w/./a/b.rs", "/w/a/", "/w", "/w/../x.rs", "/wx/c.rs", "/e/c.rs"];
        for root in ["/w", "/w/", "/"] {
            for path in paths {
                let by_components = match Path::new(path).strip_prefix(root) {
                    Ok(rel) => rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
                    Err(_) => path.to_owned(),
                };
                assert_eq!(rel_path(Path::new(root), Path::new(path)), by_components, "{root} {path}");
            }
        }
    }

    #[test]
    fn relative_paths_between_directories() {
        assert_eq!(relative(Path::new("/w/crates/a"), Path::new("/w/crates/core")), "../core");
        assert_eq!(relative(Path::new("/w"), Path::new("/w/crates/core")), "crates/core");
        assert_eq!(relative(Path::new("/w/t/f/c"), Path::new("/w/crates/core")), "../../../crates/core");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("a\néé x", 6), (2, 3));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    #[test]
    fn the_cursor_agrees_with_a_count_from_the_start_in_any_order() {
        let text = "fn a() {}\r\n\néé x\nlast";
        let mut cursor = LineCursor::new(text);
        let offsets: Vec<usize> = (0..=text.len()).filter(|&at| text.is_char_boundary(at)).collect();
        for &at in offsets.iter().chain(offsets.iter().rev()) {
            assert_eq!(cursor.line_col(at), line_col(text, at), "at {at}");
            let line = line_text(text, line_col(text, at).0);
            assert_eq!(cursor.line_text(at), line.strip_suffix('\r').unwrap_or(line), "at {at}");
        }
    }
}
