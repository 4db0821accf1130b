//! Tidy checks, as rust-analyzer's: the tool knows nothing about the repository it is developed in. Its sources
//! never name that repository's crates (the names come from the configuration or the flags), nor find files
//! through `CARGO_MANIFEST_DIR` (the workspace comes from the command line or the current directory), and its
//! manifest depends on no crate of that workspace.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a source directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn sources_name_no_crate_of_this_repository() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Spelled in pieces so that this file does not trip the check it makes.
    let forbidden = [
        ["core", "_registry"].concat(),
        ["core", "-registry"].concat(),
        ["registry", "_compat"].concat(),
        ["registry", "-compat"].concat(),
        ["CARGO_MANIFEST", "_DIR"].concat(),
    ];
    let mut found = Vec::new();
    let files = rust_files(&crate_dir.join("src"));
    assert!(files.len() >= 5, "the walk found the sources: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for (number, line) in text.lines().enumerate() {
            for name in forbidden.iter().filter(|name| line.contains(name.as_str())) {
                let rel = file.strip_prefix(crate_dir).unwrap_or(&file).display();
                found.push(format!("{rel}:{}: `{name}`: take it from the configuration or the caller", number + 1));
            }
        }
    }
    assert!(found.is_empty(), "the tool must not know this repository:\n{}", found.join("\n"));
}

#[test]
fn the_manifest_depends_on_no_workspace_crate() {
    let read = |path: PathBuf| -> toml_edit::DocumentMut {
        std::fs::read_to_string(&path).expect("read a manifest").parse().expect("the manifest parses")
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = read(crate_dir.join("Cargo.toml"));
    let root = read(crate_dir.join("../../Cargo.toml"));
    let shared = root.get("workspace").and_then(|w| w.get("dependencies"));
    let mut checked = 0;
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        for (name, item) in manifest.get(table).and_then(|t| t.as_table_like()).into_iter().flat_map(|t| t.iter()) {
            let inherited = item.get("workspace").and_then(|w| w.as_bool()) == Some(true);
            let declaration = if inherited { shared.and_then(|deps| deps.get(name)) } else { Some(item) };
            let path = declaration.and_then(|d| d.get("path"));
            assert!(path.is_none(), "`{name}` in [{table}] is a path dependency: the tool must build on its own");
            checked += 1;
        }
    }
    assert!(checked >= 5, "the dependency tables were read");
}
