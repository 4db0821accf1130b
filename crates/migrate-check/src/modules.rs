//! Where the file of an out-of-line module (`mod name;`) is, as the Rust Reference says ("Modules": module source
//! filenames and the `path` attribute). This is the one resolver: the source scan and the deprecations reader both
//! ask it, so they cannot disagree.
//!
//! - A *mod-rs* file (a crate root, a `mod.rs`, or a file loaded through `#[path]`) keeps its child modules in its
//!   own directory; any other file in a directory named after its stem: `src/a.rs` declares `src/a/b.rs`.
//! - Without `#[path]`, `mod name;` is `name.rs`, else `name/mod.rs`, in that directory plus one directory per
//!   enclosing inline module (`mod inner { mod name; }` is `inner/name.rs`), named by the inline module's own
//!   `#[path]` when it has one.
//! - `#[path = "p"]` outside any inline module is relative to the directory of the file that holds it, whatever its
//!   kind; inside inline modules it is relative to the same directory as a default child would be.

use std::path::{Path, PathBuf};

use crate::paths::normalize;

/// A file that declares modules: its path and whether it is a mod-rs file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleFile {
    /// The file.
    pub path: PathBuf,
    /// A crate root, a `mod.rs`, or a file loaded through `#[path]`: its children live next to it.
    pub mod_rs: bool,
}

impl ModuleFile {
    /// A target's root file (`src/lib.rs`, `src/bin/x.rs`, `tests/t.rs`, ...), which is mod-rs.
    pub fn root(path: PathBuf) -> ModuleFile {
        ModuleFile { path, mod_rs: true }
    }

    /// The directory that holds the children of this file's item-level `mod name;` items.
    pub fn child_dir(&self) -> PathBuf {
        let parent = self.path.parent().unwrap_or(Path::new("")).to_owned();
        if self.mod_rs { parent } else { parent.join(self.path.file_stem().unwrap_or_default()) }
    }

    /// The candidate files of `mod name;` declared in this file inside the inline modules `inline` (outermost first,
    /// each with its own `#[path]` if any), with the module's `#[path]` value if any. The module is the first
    /// candidate that exists; none may exist (a module that is cfg'd out, say).
    pub fn child(&self, inline: &[(&str, Option<&str>)], name: &str, path_attr: Option<&str>) -> Vec<ModuleFile> {
        let mut dir = self.child_dir();
        for (inline_name, inline_path) in inline {
            dir.push(inline_path.unwrap_or(inline_name));
        }
        match path_attr {
            Some(path) => {
                let base = if inline.is_empty() { self.path.parent().unwrap_or(Path::new("")).to_owned() } else { dir };
                vec![ModuleFile { path: normalize(&base.join(path)), mod_rs: true }]
            }
            None => vec![
                ModuleFile { path: dir.join(format!("{name}.rs")), mod_rs: false },
                ModuleFile { path: dir.join(name).join("mod.rs"), mod_rs: true },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(candidates: Vec<ModuleFile>) -> Vec<(String, bool)> {
        candidates.into_iter().map(|m| (m.path.display().to_string(), m.mod_rs)).collect()
    }

    #[test]
    fn default_files_of_mod_rs_and_other_files() {
        let root = ModuleFile::root("/c/src/lib.rs".into());
        assert_eq!(
            paths(root.child(&[], "a", None)),
            [("/c/src/a.rs".into(), false), ("/c/src/a/mod.rs".into(), true)]
        );
        let a = ModuleFile { path: "/c/src/a.rs".into(), mod_rs: false };
        assert_eq!(paths(a.child(&[], "b", None))[0], ("/c/src/a/b.rs".into(), false));
        assert_eq!(paths(a.child(&[("inner", None)], "b", None))[0], ("/c/src/a/inner/b.rs".into(), false));
    }

    /// The examples of the Reference's section on the `path` attribute.
    #[test]
    fn path_attributes_as_the_reference_says() {
        let lib = ModuleFile::root("/c/src/lib.rs".into());
        let a_rs = ModuleFile { path: "/c/src/a/b.rs".into(), mod_rs: false };
        let a_mod = ModuleFile { path: "/c/src/a/mod.rs".into(), mod_rs: true };
        // Outside inline modules: relative to the file's own directory, for both kinds.
        assert_eq!(paths(a_rs.child(&[], "c", Some("foo.rs"))), [("/c/src/a/foo.rs".into(), true)]);
        assert_eq!(paths(a_mod.child(&[], "c", Some("foo.rs"))), [("/c/src/a/foo.rs".into(), true)]);
        // Inside inline modules: the file's child directory plus the inline modules.
        assert_eq!(paths(a_rs.child(&[("inline", None)], "c", Some("other.rs")))[0].0, "/c/src/a/b/inline/other.rs");
        assert_eq!(paths(a_mod.child(&[("inline", None)], "c", Some("other.rs")))[0].0, "/c/src/a/inline/other.rs");
        // An inline module's own `#[path]` names its directory.
        assert_eq!(
            paths(lib.child(&[("thread", Some("thread_files"))], "local_data", Some("tls.rs")))[0].0,
            "/c/src/thread_files/tls.rs"
        );
        assert_eq!(paths(lib.child(&[], "x", Some("../shared/x.rs")))[0].0, "/c/shared/x.rs");
    }

    #[test]
    fn files_loaded_through_path_keep_children_next_to_them() {
        let loaded = &lib_child("/c/src/lib.rs", "x", "platform/unix.rs")[0];
        assert!(loaded.mod_rs);
        assert_eq!(loaded.child(&[], "y", None)[0].path, Path::new("/c/src/platform/y.rs"));
    }

    fn lib_child(root: &str, name: &str, path: &str) -> Vec<ModuleFile> {
        ModuleFile::root(root.into()).child(&[], name, Some(path))
    }
}
