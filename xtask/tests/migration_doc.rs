//! `cargo xtask migration-doc --check` passes on the repository and fails on a copy of MIGRATION.md with a stale
//! table; without `--check` it rewrites the table to match.

use std::path::{Path, PathBuf};

mod support;

use support::root;

fn migration_doc(args: &[&str]) -> (i32, String) {
    support::xtask("migration-doc", args)
}

/// A copy of the repository's MIGRATION.md, edited by `edit`, in a directory of its own.
fn stale_copy(name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("migration-doc").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("MIGRATION.md");
    let original = std::fs::read_to_string(root().join("MIGRATION.md")).unwrap();
    std::fs::write(&file, edit(original)).unwrap();
    file
}

#[test]
fn the_repository_table_is_up_to_date() {
    let (code, output) = migration_doc(&["--check"]);
    assert_eq!(code, 0, "{output}");
}

#[test]
fn every_deprecated_item_has_a_row() {
    let text = std::fs::read_to_string(root().join("MIGRATION.md")).unwrap();
    for row in [
        "| `registry_compat::AgentRegistry` | type alias | `core_registry::AgentRegistry` |",
        "| `registry_compat::registry::AgentRegistry` | type alias | `core_registry::AgentRegistry` |",
        "| `registry_compat::supervisor::agent_registry::AgentRegistry` | type alias | `core_registry::AgentRegistry` |",
        "| `registry_compat::Agent` | re-export (warns at `use` only) | `core_registry::Agent` |",
        "| `registry_compat::register_agent!` | macro | `core_registry::AgentRegistryBuilder::try_register` |",
        "| `registry_compat::next_event` | async function | `core_registry::EventStream::recv` |",
    ] {
        assert!(text.contains(row), "MIGRATION.md lacks the row {row}");
    }
    assert!(!text.contains("__private"), "hidden items must not be listed");
}

#[test]
fn a_stale_table_fails_the_check_and_is_rewritten() {
    let file = stale_copy("stale", |text| {
        text.replace("| `registry_compat::Session` | type alias | `core_registry::Session` |  |\n", "")
    });
    let file_arg = file.to_str().unwrap();
    let (code, output) = migration_doc(&["--check", "--file", file_arg]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("run `cargo xtask migration-doc`"), "{output}");
    assert!(output.contains("expected: | `registry_compat::Session` |"), "{output}");

    let (code, output) = migration_doc(&["--file", file_arg]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), std::fs::read_to_string(root().join("MIGRATION.md")).unwrap());
    let (code, output) = migration_doc(&["--check", "--file", file_arg]);
    assert_eq!(code, 0, "{output}");
}

#[test]
fn a_document_without_markers_is_an_error() {
    let file = stale_copy("no-markers", |text| text.replace("<!-- END GENERATED -->", ""));
    let (code, output) = migration_doc(&["--check", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("no `<!-- END GENERATED -->` line"), "{output}");
}
