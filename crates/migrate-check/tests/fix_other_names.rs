//! `--fix` on a workspace whose deprecated crate is `old-core` and whose replacement is `new-core`
//! (`tests/fixtures/old-core`): a forwarding fn, a method wrapper, a type alias, a const, a renamed dependency, an
//! inherited one, a test target, and a local `macro_rules!` that pastes its argument after the old crate's alias
//! (`legacy::$item`) for items whose new paths share no prefix. The proof is Cargo's: after the fix the workspace builds without one
//! `deprecated` warning, its tests pass, the check passes, and a second `--fix` changes nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{git, migrate_check};

/// A copy of the fixture outside any workspace, committed to a fresh git repository.
fn copy_fixture() -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old-core");
    let to = std::env::temp_dir().join(format!("migrate-check-old-core-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    copy_dir(&from, &to);
    git(&to, &["init", "-q"]);
    git(&to, &["add", "-A"]);
    git(&to, &["commit", "-qm", "fixture"]);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read the fixture") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &target);
            }
        } else if entry.file_name() != "Cargo.lock" {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}

/// `cargo <command> --workspace --all-targets --message-format=json --offline` in `dir`: whether it succeeded, and
/// the number of `deprecated` warnings.
fn cargo(dir: &Path, command: &str) -> (bool, usize) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([command, "--workspace", "--all-targets", "--message-format=json", "--offline"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", Path::new(env!("CARGO_TARGET_TMPDIR")).join("old-core-target"))
        .output()
        .expect("cargo runs");
    let deprecated = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-message")
        .filter(|message| message["message"]["code"]["code"] == "deprecated")
        .count();
    (output.status.success(), deprecated)
}

/// `git status --porcelain` of `dir`.
fn status(dir: &Path) -> String {
    let output = Command::new("git").arg("-C").arg(dir).args(["status", "--porcelain"]).output().expect("git runs");
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn fix_migrates_a_workspace_with_other_names_from_a_member_directory() {
    let dir = copy_fixture();
    let (built, warnings) = cargo(&dir, "build");
    assert!(built && warnings >= 7, "the old API builds, with its warnings ({warnings})");
    assert!(cargo(&dir, "test").0, "its tests pass before the fix");
    // The build wrote Cargo.lock: commit it, as a user would, so that the work tree is clean.
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "lockfile"]);

    let member = dir.join("crates/app");
    let before = migrate_check(&member, &["--format", "json"]);
    assert_eq!(before.code, 1, "{}", before.stderr);
    let report: serde_json::Value = serde_json::from_str(&before.stdout).expect("a JSON report");
    assert_eq!((report["deprecated"].as_str(), report["replacement"].as_str()), (Some("old-core"), Some("new-core")));
    assert_eq!(report["violations"].as_array().map(Vec::len), Some(10));

    let dry = migrate_check(&member, &["--fix", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("-legacy = { package = \"old-core\", path = \"../old-core\" }\n"), "{}", dry.stdout);
    assert!(dry.stdout.contains("+    let mut registry = new_core::Registry::new();\n"), "{}", dry.stdout);
    assert_eq!(status(&dir), "", "--dry-run writes nothing");

    // Cargo's convention: `cargo migrate-check --fix` runs the binary with `migrate-check` first.
    let fixed = migrate_check(&member, &["migrate-check", "--fix"]);
    assert_eq!(fixed.code, 0, "stdout:\n{}\nstderr:\n{}", fixed.stdout, fixed.stderr);
    assert_eq!(fixed.stdout, "migrate-check: ok: 2 checked packages, none depends on or imports `old-core`\n");
    assert!(fixed.stderr.starts_with("migrate-check --fix: rewrote 6 files: "), "{}", fixed.stderr);

    // The macro takes each item's new path: `($item:path) => { $item }`.
    let app = std::fs::read_to_string(dir.join("crates/app/src/lib.rs")).expect("read a source");
    assert!(app.contains("    ($item:path) => {\n        $item\n    };\n"), "{app}");
    for call in ["old!(new_core::DEFAULT_LIMIT)", "old!(new_core::Registry::new)()"] {
        assert!(app.contains(call), "{app}");
    }

    let (built, warnings) = cargo(&dir, "build");
    assert!(built, "the migrated workspace builds");
    assert_eq!(warnings, 0, "not one `deprecated` warning is left");
    assert!(cargo(&dir, "test").0, "its tests pass after the fix");
    assert_eq!(migrate_check(&member, &[]).code, 0, "the check passes");

    // The work tree holds the first fix, uncommitted: with nothing to write, the second --fix has nothing to refuse.
    let dirty = status(&dir);
    assert!(!dirty.is_empty());
    let again = migrate_check(&member, &["--fix"]);
    assert_eq!((again.code, again.stderr.as_str()), (0, "migrate-check --fix: nothing to change\n"));
    assert_eq!(status(&dir), dirty, "a second --fix changes nothing");
    let _ = std::fs::remove_dir_all(&dir);
}
