//! Paths and positions, computed without touching the file system: one `normalize`, one way to show a path relative
//! to the workspace root, one byte offset -> line and column conversion.

use std::path::{Component, Path, PathBuf};

/// Resolves `.` and `..` lexically (symlinks are taken as written, as Cargo does). A `..` with nothing left to pop
/// is kept, so a relative path that climbs out stays correct: `../a/./b` stays `../a/b`.
pub fn normalize(path: &Path) -> PathBuf {
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

/// Line starts of a text, for many conversions between byte offsets and lines and columns ([`line_col`] scans from
/// the start each time).
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

    /// 1-based line and 1-based character column of a byte offset.
    pub(crate) fn line_col(&self, at: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|start| *start <= at);
        let start = self.starts[line - 1];
        (line, self.text[start..at].chars().count() + 1)
    }

    /// The text of the 1-based `line`, without its line break.
    pub(crate) fn line_text(&self, line: usize) -> &'t str {
        let start = self.starts[line - 1];
        let end = self.starts.get(line).map_or(self.text.len(), |next| next - 1);
        self.text[start..end].strip_suffix('\r').unwrap_or(&self.text[start..end])
    }

    /// The byte offset of the 1-based `line` and 0-based character `column` (as proc-macro2 spans count them),
    /// clamped to the text.
    pub(crate) fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else { return self.text.len() };
        let rest = &self.text[start..];
        start + rest.char_indices().nth(column).map_or(rest.len(), |(i, _)| i)
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
    fn normalize_keeps_leading_parent_dirs() {
        assert_eq!(normalize(Path::new("/w/a/../b/./c")), Path::new("/w/b/c"));
        assert_eq!(normalize(Path::new("../a/./b")), Path::new("../a/b"));
        assert_eq!(normalize(Path::new("a/../../b")), Path::new("../b"));
        assert_eq!(normalize(Path::new("/..")), Path::new("/"));
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
}
