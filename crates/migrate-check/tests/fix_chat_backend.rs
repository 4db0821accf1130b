//! The proof on a downstream workspace written against the old API (`tests/fixtures/chat-backend`, three crates):
//! its copy, committed to a git repository of its own, is migrated with `--fix`, and then `cargo test --workspace
//! --all-targets` and the doctests pass, `cargo check --all-targets` gives no `deprecated` warning, `migrate-check`
//! reports nothing left (no member keeps or reaches the old crate), the rewritten files are rustfmt-clean, and a
//! second `--fix` changes nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{git, migrate_check};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy at `target/fix-fixtures/chat-backend` of the repository (the fixture's depth, so its `path`s resolve, also
/// when `CARGO_TARGET_DIR` points elsewhere), committed to git.
fn copy() -> PathBuf {
    let dir = repository().join("target/fix-fixtures/chat-backend");
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&repository().join("tests/fixtures/chat-backend"), &dir);
    git(&dir, &["init", "-q"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "the chat backend on the old API"]);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read the fixture") {
        let entry = entry.expect("an entry");
        if entry.file_type().expect("a file type").is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &to.join(entry.file_name()));
            }
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
        }
    }
}

/// `cargo <args>` in `dir`, offline, in the target directory `--fix` compiles in; (success, stdout, stderr).
fn cargo(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", support::target_for(dir))
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("cargo runs");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// The `deprecated` warnings of `cargo check --workspace --all-targets`, as `file:line` of their primary spans.
fn deprecated_warnings(dir: &Path) -> Vec<String> {
    let (built, stdout, stderr) = cargo(dir, &["check", "--workspace", "--all-targets", "--message-format=json"]);
    assert!(built, "{stderr}");
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-message")
        .filter(|message| message["message"]["code"]["code"] == "deprecated")
        .filter_map(|message| {
            let spans = message["message"]["spans"].as_array()?;
            let span = spans.iter().find(|span| span["is_primary"] == true)?;
            Some(format!("{}:{}", span["file_name"].as_str()?, span["line_start"]))
        })
        .collect()
}

/// (package, kind, help) of each violation of a JSON report.
fn violations(report: &str) -> Vec<(String, String, String)> {
    let report: Value = serde_json::from_str(report).expect("a JSON report");
    let field = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| (field(v, "package"), field(v, "kind"), field(v, "help")))
        .collect()
}

#[test]
fn the_chat_backend_migrates_to_code_that_builds_tests_and_is_formatted() {
    let dir = copy();
    assert!(cargo(&dir, &["test", "--workspace", "--all-targets"]).0, "its tests pass on the old API");
    let warnings_before = deprecated_warnings(&dir).len();
    let violations_before = violations(&migrate_check(&dir, &["--format", "json"]).stdout).len();
    assert!(warnings_before > 100 && violations_before > 40, "{warnings_before} warnings, {violations_before}");

    let dry = migrate_check(&dir, &["--fix", "--dry-run"]);
    assert_eq!(dry.code, 0, "the dry run exits as the real run will: {}", dry.stderr);
    let fixed = migrate_check(&dir, &["--fix", "--format", "json"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert!(fixed.stderr.starts_with("migrate-check --fix: rewrote 8 files: "), "{}", fixed.stderr);
    // Nothing is left, so no member keeps the old crate (and `chat-server` and `chat-session` no longer reach it
    // through `chat-protocol`).
    let left = violations(&fixed.stdout);
    assert_eq!(left, [], "{}", fixed.stdout);
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).expect("read a file");
    for member in ["chat-protocol", "chat-server", "chat-session"] {
        let manifest = read(&format!("crates/{member}/Cargo.toml"));
        assert!(!manifest.contains("registry-compat"), "{member}:\n{manifest}");
    }
    assert!(!read("Cargo.toml").contains("registry-compat = {"), "the workspace entry goes too");
    let protocol = read("crates/chat-protocol/Cargo.toml");
    assert!(!protocol.contains("[dev-dependencies]"), "the table emptied goes with its last entry:\n{protocol}");
    // The local `macro_rules!` that pasted its argument after the old path: every call is in its file and passes an
    // old constant by name, and their new paths share `core_registry::EventKind`, so that prefix goes into the body
    // and each call passes the new name.
    let protocol = read("crates/chat-protocol/src/lib.rs");
    assert!(protocol.contains("($kind:ident) => {\n        core_registry::EventKind::$kind\n"), "{protocol}");
    assert!(protocol.contains("[old_name!(started), old_name!(AGENT_COMPLETED)]"), "{protocol}");
    // `#[macro_use] extern crate` goes once the bare calls it enabled are calls of the new path.
    let server = read("crates/chat-server/src/lib.rs");
    assert!(!server.contains("macro_use") && !server.contains("register_agent!"), "{server}");
    // They forward to a method: method calls, as a reviewer would write them.
    assert_eq!(server.matches("builder.try_register(\"").count(), 3, "{server}");
    println!("before: {warnings_before} deprecated warnings, {violations_before} violations");
    let warnings_after = deprecated_warnings(&dir);
    println!("after: {} deprecated warnings, {} violations", warnings_after.len(), left.len());

    // Cargo's verdict on the result: no warning, and nothing in the resolved graph needs the old crate.
    assert_eq!(warnings_after, [] as [String; 0], "not one `deprecated` warning is left");
    assert!(!read("Cargo.lock").contains("name = \"registry-compat\""), "no package reaches the old crate");
    let (passed, _, stderr) = cargo(&dir, &["test", "--workspace", "--all-targets"]);
    assert!(passed, "the tests pass after the fix: {stderr}");
    let (passed, _, stderr) = cargo(&dir, &["test", "--workspace", "--doc"]);
    assert!(passed, "the doctests pass after the fix: {stderr}");
    let manifest_path = dir.join("Cargo.toml").display().to_string();
    let (formatted, stdout, _) = cargo(&dir, &["fmt", "--all", "--check", "--manifest-path", &manifest_path]);
    assert!(formatted, "rustfmt-clean after the fix:\n{stdout}");
    let lib = std::fs::read_to_string(dir.join("crates/chat-session/src/lib.rs")).expect("read a source");
    assert!(lib.contains("self.events.recv().await"), "method calls, not calls through the type:\n{lib}");
    let manifest = std::fs::read_to_string(dir.join("crates/chat-session/Cargo.toml")).expect("read a manifest");
    assert!(manifest.contains("version = \"0.11\""), "the version is kept:\n{manifest}");

    // A second run has nothing to do.
    let status = |dir: &Path| {
        let out = Command::new("git").arg("-C").arg(dir).args(["status", "--porcelain"]).output().expect("git");
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let after = status(&dir);
    let again = migrate_check(&dir, &["--fix", "--allow-dirty"]);
    assert_eq!((again.code, again.stderr.as_str()), (0, "migrate-check --fix: nothing to change\n"));
    assert_eq!(status(&dir), after, "a second --fix changes nothing");
}
