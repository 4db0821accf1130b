//! `cargo xtask migrate-check --fix` end to end: each fixture is copied to `target/fix-fixtures/<name>` (ignored by
//! git, at the same depth as `tests/fixtures/<name>` so relative paths still resolve) and fixed there. The proof:
//! after `--fix`, `migrate-check` finds nothing (or only what is documented as unfixable), the legacy consumer builds
//! without a single `deprecated` warning and its own tests pass before and after, and a second `--fix` changes
//! nothing. The `--dry-run` diffs are snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is in the workspace").to_owned()
}

/// A fresh copy of `tests/fixtures/<fixture>` at `target/fix-fixtures/<name>`.
fn scratch(fixture: &str, name: &str) -> PathBuf {
    let dir = root().join("target/fix-fixtures").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&root().join("tests/fixtures").join(fixture), &dir);
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the scratch directory");
    for entry in std::fs::read_dir(from).expect("read the fixture") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).expect("copy a fixture file");
        }
    }
}

/// Every file under `dir` (but `target/`) with its contents.
fn contents(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if !path.ends_with("target") && !path.ends_with(".git") {
                    stack.push(path);
                }
            } else {
                files.insert(path.clone(), std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// Runs `migrate-check --manifest-path <dir>/Cargo.toml <args>`; returns (exit code, stdout, stderr). The compile
/// that `--fix` runs afterwards is offline and shares the target directory of the test's own compiles of `dir`.
fn xtask(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let name = dir.file_name().expect("a fixture directory").to_string_lossy();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("migrate-check")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .args(args)
        .env("CARGO_TARGET_DIR", fixture_target(&name))
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("the xtask binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("output is UTF-8");
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// The check's JSON report of `dir`.
fn report(dir: &Path) -> Value {
    let (_, stdout, stderr) = xtask(dir, &["--format", "json"]);
    serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("JSON report; stderr: {stderr}"))
}

/// (package, kind) of each violation left.
fn left(dir: &Path) -> Vec<(String, String)> {
    let report = report(dir);
    report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            (v["package"].as_str().unwrap_or_default().to_owned(), v["kind"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The flags these fixtures need: their copies are under `target/`, which git ignores, and the check's fixtures are not
/// meant to compile (`VERIFY` is for those that are).
const NO_VCS: &[&str] = &["--allow-no-vcs", "--no-verify"];
const VERIFY: &[&str] = &["--allow-no-vcs"];

/// `--fix --dry-run` with `flags`, expecting the exit code the real run has; nothing written; returns the diff.
#[track_caller]
fn dry_run(dir: &Path, flags: &[&str], expected_exit: i32) -> String {
    let before = contents(dir);
    let (code, stdout, stderr) = xtask(dir, &[&["--fix", "--dry-run"], flags].concat());
    assert_eq!(code, Some(expected_exit), "stderr: {stderr}");
    assert_eq!(contents(dir), before, "--dry-run changes nothing");
    stdout
}

/// `--fix` with `flags` and the expected exit code, then a second `--fix` that changes nothing. Returns the first
/// run's stdout.
#[track_caller]
fn fix(dir: &Path, flags: &[&str], expected_exit: i32) -> String {
    let args = [&["--fix"], flags].concat();
    let (code, stdout, stderr) = xtask(dir, &args);
    assert_eq!(code, Some(expected_exit), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let after = contents(dir);
    let (code, _, stderr) = xtask(dir, &args);
    assert_eq!(code, Some(expected_exit));
    assert_eq!(stderr, "migrate-check --fix: nothing to change\n", "a second --fix is a no-op");
    assert_eq!(contents(dir), after, "a second --fix changes nothing");
    assert_eq!(dry_run(dir, flags, expected_exit), "", "nothing left to diff");
    stdout
}

/// The target directory shared with the compat tests, so the legacy consumer's dependencies are built once.
fn fixture_target(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").join("fixtures").join(name)
}

/// `cargo <command> --message-format=json` on `dir`; returns whether it succeeded and the number of `deprecated`
/// warnings in local crates.
fn cargo(dir: &Path, command: &str, target: &str) -> (bool, usize) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([command, "--all-targets", "--message-format=json", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", fixture_target(target))
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let deprecated = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-message")
        .filter(|message| message["message"]["code"]["code"] == "deprecated")
        .count();
    (output.status.success(), deprecated)
}

#[test]
fn legacy_consumer_migrates_completely_and_keeps_its_behaviour() {
    let dir = scratch("legacy-consumer", "legacy-consumer");
    let (built, warnings_before) = cargo(&dir, "check", "legacy-consumer");
    assert!(built && warnings_before > 50, "the old API builds, with its warnings ({warnings_before})");
    assert!(cargo(&dir, "test", "legacy-consumer").0, "the consumer's tests pass before the fix");

    insta::assert_snapshot!("legacy-consumer", dry_run(&dir, VERIFY, 0));
    let stdout = fix(&dir, VERIFY, 0);
    // The compile after writing updated Cargo.lock, so the compat crate is gone from sight: the note says so.
    assert_eq!(
        stdout,
        "migrate-check: ok: 1 checked package, none depends on or imports `registry-compat`\nnote[migrate-check]: no \
         package named `registry-compat` is a member, a dependency or in Cargo.lock: if the migration is not finished, \
         check the name\n"
    );
    assert_eq!(left(&dir), []);

    let (built, warnings_after) = cargo(&dir, "check", "legacy-consumer");
    assert!(built, "the migrated consumer builds");
    assert_eq!(warnings_after, 0, "not one `deprecated` warning is left");
    assert!(cargo(&dir, "test", "legacy-consumer").0, "the consumer's tests pass after the fix");
}

#[test]
fn small_workspace_swaps_what_is_safe_and_reports_the_rest() {
    let dir = scratch("migrate-fix/workspace", "workspace");
    assert!(cargo(&dir, "test", "workspace").0, "the fixture's tests pass before the fix");
    insta::assert_snapshot!("workspace", dry_run(&dir, VERIFY, 1));
    insta::assert_snapshot!("workspace-after", fix(&dir, VERIFY, 1));
    // `app` keeps the old crate for the one use that is not a path swap, and gained the replacement (the local
    // macro that pastes after the old path is rewritten with its call).
    assert_eq!(left(&dir), [("app", "dependency"), ("app", "source")].map(|(p, k)| (p.into(), k.into())));
    // Another `--fix` (a no-op now) says why each is left, naming the new path.
    let (code, stdout, _) = xtask(&dir, &["--fix", "--allow-no-vcs", "--format", "json"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&stdout).expect("JSON report");
    let helps: Vec<&str> = report["violations"].as_array().expect("violations")[1..]
        .iter()
        .map(|v| v["help"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(helps.len(), 1, "{helps:?}");
    assert!(helps[0].contains("core_registry::Registry::open"), "the help names the new path: {}", helps[0]);
    let (built, _) = cargo(&dir, "check", "workspace");
    assert!(built, "the fixed workspace builds");
    assert!(cargo(&dir, "test", "workspace").0, "the fixture's tests pass after the fix");
}

#[test]
fn every_fixable_check_fixture_is_clean_after_fix() {
    let dir = scratch("migrate-check/dependency", "check-dependency");
    insta::assert_snapshot!("dependency", dry_run(&dir, NO_VCS, 0));
    fix(&dir, NO_VCS, 0);
    assert_eq!(left(&dir), []);

    // What is left goes through packages --fix does not edit: an excluded path crate and a registry crate.
    let dir = scratch("migrate-check/transitive", "check-transitive");
    insta::assert_snapshot!("transitive", dry_run(&dir, NO_VCS, 1));
    fix(&dir, NO_VCS, 1);
    assert_eq!(left(&dir), [("cli", "transitive"), ("sdk-user", "transitive")].map(|(p, k)| (p.into(), k.into())));

    // Allowlisted members are left alone; stale entries are the author's to remove.
    let dir = scratch("migrate-check/allow", "check-allow");
    assert_eq!(dry_run(&dir, NO_VCS, 1), "");
    fix(&dir, NO_VCS, 1);

    for case in ["clean", "traps"] {
        let dir = scratch(&format!("migrate-check/{case}"), &format!("check-{case}"));
        assert_eq!(dry_run(&dir, NO_VCS, 0), "", "{case}");
        fix(&dir, NO_VCS, 0);
    }
}

#[test]
fn replacement_version_from_the_configuration() {
    let dir = scratch("migrate-fix/registry-only", "registry-only");
    insta::assert_snapshot!("registry-only", dry_run(&dir, NO_VCS, 0));
    fix(&dir, NO_VCS, 0);
}

#[test]
fn without_the_compat_crate_source_or_its_notes_nothing_is_changed() {
    let cases = [
        ("migrate-fix/no-compat-source", "no-compat-source", "no package declares it with a `path`"),
        // The checker's fixtures have compat crates without deprecation notes.
        ("migrate-check/source", "check-source", "could not read the deprecated crate's deprecation notes"),
        ("migrate-check/config", "check-config", "could not read the deprecated crate's deprecation notes"),
        ("migrate-check/layout", "check-layout", "could not read the deprecated crate's deprecation notes"),
    ];
    for (fixture, name, problem) in cases {
        let dir = scratch(fixture, name);
        let before = contents(&dir);
        let (code, stdout, stderr) = xtask(&dir, &["--fix", "--allow-no-vcs"]);
        assert_eq!((code, stdout.as_str()), (Some(2), ""), "{fixture}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{fixture}: one line: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(problem), "{fixture}: {stderr}");
        assert_eq!(contents(&dir), before, "{fixture}: nothing written");
    }
}

#[test]
fn a_dirty_git_work_tree_is_refused_unless_allowed() {
    let dir = std::env::temp_dir().join(format!("migrate-fix-dirty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&root().join("tests/fixtures/migrate-check/dependency"), &dir);
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .expect("git runs");
        assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "fixture"]);
    std::fs::write(dir.join("crates/a-normal/src/lib.rs"), "// an uncommitted change\n").expect("edit a file");
    let before = contents(&dir);

    let (code, stdout, stderr) = xtask(&dir, &["--fix"]);
    assert_eq!((code, stdout.as_str()), (Some(2), ""), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("uncommitted changes") && stderr.contains("--allow-dirty"), "{stderr}");
    assert_eq!(contents(&dir), before, "nothing written");
    // A dry run writes nothing, but exits as the real run would, with the same line.
    let (code, diff, dry_stderr) = xtask(&dir, &["--fix", "--dry-run", "--no-verify"]);
    assert_eq!(code, Some(2), "{dry_stderr}");
    assert_ne!(diff, "");
    assert!(dry_stderr.ends_with(&stderr), "{dry_stderr}");
    assert_eq!(contents(&dir), before, "nothing written");

    let (code, _, stderr) = xtask(&dir, &["--fix", "--allow-dirty", "--no-verify"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(left(&dir), []);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fix_flags_are_checked_and_documented() {
    let dir = root().join("tests/fixtures/migrate-check/clean");
    let lone = ["--dry-run", "--allow-dirty", "--allow-staged", "--allow-no-vcs", "--broken-code", "--no-verify"];
    let mut cases: Vec<Vec<&str>> = lone.iter().map(|flag| vec![*flag]).collect();
    cases.extend([vec!["--fix", "--no-source"], vec!["--fix=yes"], vec!["--fix", "--broken-code", "--no-verify"]]);
    for args in &cases {
        let (code, stdout, stderr) = xtask(&dir, args);
        assert_eq!((code, stdout.as_str()), (Some(2), ""), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("--help"), "{args:?}: {stderr}");
    }
    let (code, stdout, _) = xtask(&dir, &["--help"]);
    assert_eq!(code, Some(0));
    for needle in
        ["--fix", "--dry-run", "--allow-dirty", "--allow-staged", "--allow-no-vcs", "--broken-code", "--no-verify"]
    {
        assert!(stdout.contains(needle), "--help mentions {needle}");
    }
}
