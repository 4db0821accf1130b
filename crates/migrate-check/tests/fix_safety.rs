//! `--fix`'s safety rails: each refusal is one line, exit 2, and writes nothing (`--dry-run` exits the same way);
//! a result that does not compile is backed out, unless `--broken-code`.

mod support;

use support::{Fixture, git, migrate_check};

/// The shared fixture ([`support::old_core_workspace`]) migrating `old-core` to `new-core`, with `config` added to
/// its configuration and `extra` appended to `app`'s source.
fn workspace(config: &str, extra: &str) -> Fixture {
    support::old_core_workspace(&format!("deprecated = \"old-core\"\nreplacement = \"new-core\"\n{config}"), extra)
}

/// Every file of the fixture (but `target/` and `.git/`) with its text.
fn contents(ws: &Fixture) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut stack = vec![ws.root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                if !path.ends_with("target") && !path.ends_with(".git") {
                    stack.push(path);
                }
            } else {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                files.push((path.display().to_string(), text));
            }
        }
    }
    files.sort();
    files
}

/// `--fix` and `--fix --dry-run` with `args` both refuse with one line containing `problem`, and write nothing.
#[track_caller]
fn refuses(ws: &Fixture, args: &[&str], problem: &str) {
    let before = contents(ws);
    for dry_run in [true, false] {
        let mut all = vec!["--fix"];
        all.extend(dry_run.then_some("--dry-run"));
        all.extend(args);
        let run = migrate_check(&ws.root, &all);
        assert_eq!(run.code, 2, "{all:?}: {}", run.stderr);
        let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{all:?}: one error line: {}", run.stderr);
        assert!(errors[0].contains(problem), "{all:?}: {}", run.stderr);
        assert_eq!(contents(ws), before, "{all:?}: nothing written");
    }
}

#[test]
fn outside_version_control_it_refuses_unless_allowed() {
    let ws = workspace("", "");
    refuses(&ws, &[], "not in a git work tree");
    let run = migrate_check(&ws.root, &["--fix", "--allow-no-vcs"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(ws.read("crates/app/src/lib.rs").contains("new_core::helper()"));
}

#[test]
fn files_git_ignores_are_not_under_version_control() {
    let ws = workspace("", "");
    std::fs::write(ws.path(".gitignore"), "crates/app/\n").expect("write .gitignore");
    git(&ws.root, &["init", "-q"]);
    git(&ws.root, &["add", "-A"]);
    git(&ws.root, &["commit", "-qm", "fixture"]);
    refuses(&ws, &[], "git ignores `crates/app/");
}

#[test]
fn a_dirty_tree_is_refused_and_staged_changes_pass_only_with_allow_staged() {
    let ws = workspace("", "");
    git(&ws.root, &["init", "-q"]);
    git(&ws.root, &["add", "-A"]);
    git(&ws.root, &["commit", "-qm", "fixture"]);
    std::fs::write(ws.path("notes.txt"), "staged\n").expect("write a file");
    git(&ws.root, &["add", "notes.txt"]);
    refuses(&ws, &[], "uncommitted changes (1 file, first `notes.txt`)");
    let run = migrate_check(&ws.root, &["--fix", "--allow-staged"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn a_replacement_name_one_letter_off_is_refused() {
    let ws = workspace("replacement-version = \"2.0\"", "");
    refuses(&ws, &["--allow-no-vcs", "--replacement", "new-cor"], "but `new-core` is");
    // Far from every package and never named by the notes: refused too.
    refuses(&ws, &["--allow-no-vcs", "--replacement", "other-registry"], "naming a `other_registry::` path");
}

#[test]
fn a_replacement_path_that_does_not_hold_it_is_refused() {
    let ws = workspace("replacement-path = \"crates/old-core\"", "");
    refuses(&ws, &["--allow-no-vcs"], "that directory holds the package `old-core`");
}

#[test]
fn dry_run_exits_1_when_violations_would_be_left() {
    let ws = workspace("", "pub fn left() {\n    old_core::gone();\n}");
    let run = migrate_check(&ws.root, &["--fix", "--dry-run", "--allow-no-vcs"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("+    new_core::helper();"), "{}", run.stdout);
}

#[test]
fn a_macro_that_crates_out_of_sight_may_call_stays_and_the_build_stays_green() {
    // `call!` pastes its argument after the old path; exported, it may be called where `--fix` cannot see.
    let extra = "#[macro_export]\nmacro_rules! call {\n    ($f:ident) => {\n        old_core::$f()\n    };\n}\n\n\
                 pub fn again() {\n    call!(helper);\n}";
    let ws = workspace("", extra);
    let run = migrate_check(&ws.root, &["--fix", "--allow-no-vcs"]);
    assert_eq!(run.code, 1, "left with its help, after a compile that passed: {}", run.stderr);
    assert!(run.stdout.contains("it is `#[macro_export]`ed, so crates out of sight may call it"), "{}", run.stdout);
    let app = ws.read("crates/app/src/lib.rs");
    assert!(
        app.contains("    new_core::helper();\n") && app.contains("old_core::$f()") && app.contains("call!(helper)")
    );
    let manifest = ws.read("crates/app/Cargo.toml");
    assert!(manifest.contains("old-core") && manifest.contains("new-core"), "both, for now:\n{manifest}");
}

#[test]
fn code_that_does_not_compile_is_backed_out_unless_broken_code() {
    // `app` does not compile (before the fix too): the compile afterwards fails, and every file is put back.
    let ws = workspace("", "pub fn broken() -> u8 {\n    \"not a number\"\n}");
    let before = contents(&ws);
    let run = migrate_check(&ws.root, &["--fix", "--allow-no-vcs"]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{}", run.stderr);
    assert!(run.stderr.contains("does not compile, so --fix backed out: every file was put back"), "{}", run.stderr);
    assert!(run.stderr.contains("mismatched types"), "the compiler's first error: {}", run.stderr);
    assert_eq!(contents(&ws), before, "every file restored (Cargo.lock too)");

    let run = migrate_check(&ws.root, &["--fix", "--allow-no-vcs", "--broken-code"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("--broken-code kept the edits"), "{}", run.stderr);
    assert!(ws.read("crates/app/src/lib.rs").contains("new_core::helper()"));

    // --no-verify does not compile at all: the same edits, no word of the error.
    let ws = workspace("", "pub fn broken() -> u8 {\n    \"not a number\"\n}");
    let run = migrate_check(&ws.root, &["--fix", "--allow-no-vcs", "--no-verify"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("compile"), "{}", run.stderr);
}
