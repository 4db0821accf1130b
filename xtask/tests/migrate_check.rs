//! `cargo xtask migrate-check` end to end: the built binary on the standalone workspaces in
//! `tests/fixtures/migrate-check/<case>/`, one case per clause of the contract (docs/migrate-check.md).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const FORMATS: [&str; 4] = ["human", "json", "github", "sarif"];

/// The cases that find something, with their exit code.
const VIOLATING: [&str; 7] = ["dependency", "transitive", "source", "allow", "config", "layout", "revisions"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/migrate-check")
}

/// Runs `migrate-check` with `args` from the fixtures directory; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(fixtures())
        .arg("migrate-check")
        .args(args)
        .output()
        .expect("the xtask binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("output is UTF-8");
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// Checks fixture `case` in `format`, asserts the exit code and, for the JSON formats, that stdout is exactly one
/// JSON object (returned pretty-printed). Returns stdout.
#[track_caller]
fn check(case: &str, format: &str, expected_exit: i32) -> String {
    let manifest = format!("{case}/Cargo.toml");
    let (code, stdout, stderr) = run(&["--manifest-path", &manifest, "--format", format]);
    assert_eq!(code, Some(expected_exit), "`{case}` --format {format}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stderr, "", "`{case}` --format {format}: nothing on stderr when the check ran");
    if matches!(format, "json" | "sarif") {
        let value: Value = serde_json::from_str(&stdout).expect("stdout is exactly one JSON value");
        assert!(value.is_object(), "`{case}`: the JSON output is one object");
        return serde_json::to_string_pretty(&value).expect("JSON prints") + "\n";
    }
    stdout
}

/// Snapshots every format of `case`.
#[track_caller]
fn snapshots(case: &str, expected_exit: i32) {
    for format in FORMATS {
        let output = check(case, format, expected_exit);
        insta::assert_snapshot!(format!("{case}-{format}"), output);
    }
}

/// Asserts that `case` cannot be checked: exit 2, nothing on stdout, exactly `expected` (one line) on stderr.
#[track_caller]
fn bad_input(manifest: &str, expected: &str) {
    let (code, stdout, stderr) = run(&["--manifest-path", manifest]);
    assert_eq!(code, Some(2), "`{manifest}`: stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr, format!("{expected}\n"));
}

fn json(case: &str) -> Value {
    serde_json::from_str(&check(case, "json", 1)).expect("JSON output")
}

#[test]
fn clean_workspace_passes() {
    for format in FORMATS {
        check("clean", format, 0);
    }
    insta::assert_snapshot!("clean-human", check("clean", "human", 0));
    insta::assert_snapshot!("clean-json", check("clean", "json", 0));
    assert_eq!(check("clean", "github", 0), "");
}

#[test]
fn comments_strings_docs_lookalikes_and_renamed_keys_are_not_violations() {
    insta::assert_snapshot!("traps-human", check("traps", "human", 0));
    let report: Value = serde_json::from_str(&check("traps", "json", 0)).expect("JSON output");
    assert_eq!(report["violations"], Value::Array(Vec::new()));
    assert_eq!(report["packages_checked"], 4);
}

#[test]
fn dependency_in_every_table_renamed_inherited_optional_and_target_specific() {
    snapshots("dependency", 1);
}

#[test]
fn transitive_through_members_path_crates_and_registry_crates() {
    snapshots("transitive", 1);
}

#[test]
fn source_paths_use_trees_extern_crates_and_macros() {
    snapshots("source", 1);
}

#[test]
fn allowlist_needs_reasons_and_only_shrinks() {
    snapshots("allow", 1);
}

#[test]
fn configured_names_and_library_name() {
    snapshots("config", 1);
}

#[test]
fn members_are_what_cargo_says() {
    snapshots("layout", 1);
}

#[test]
fn modules_wherever_declared_the_graph_cargo_builds_doctests_and_help_with_the_new_path() {
    snapshots("revisions", 1);
    let report = json("revisions");
    let violations = report["violations"].as_array().expect("violations");
    let at = |v: &Value| format!("{}:{}", v["file"].as_str().unwrap_or_default(), v["line"]);
    let sources: Vec<String> = violations.iter().filter(|v| v["kind"] == "source").map(at).collect();
    // Macro-declared modules, `#[path]` in a non-mod.rs file and in an inline module, every `cfg_attr` alternative
    // with the default file, `include!`.
    for file in [
        "crates/macros/src/unix.rs",
        "crates/macros/src/other.rs",
        "crates/macros/src/rt.rs",
        "crates/macros/src/paren.rs",
        "crates/paths/src/b_impl.rs",
        "crates/paths/src/a/inline/deep.rs",
        "crates/paths/src/os.rs",
        "crates/paths/src/os/unix.rs",
        "crates/paths/src/os/windows.rs",
        "crates/paths/src/generated.rs",
    ] {
        assert!(sources.iter().any(|s| s.starts_with(&format!("{file}:"))), "{file} is scanned: {sources:?}");
    }
    // Doctests: each compiled info string, a hidden line, a block comment, a doc attribute, the included README;
    // never `ignore`, `text` or another language, prose, a binary's or a test's doc comments.
    let doctests: Vec<String> = violations.iter().filter(|v| v["doctest"] == true).map(at).collect();
    let lines = |file: &str, lines: &[u64]| lines.iter().map(|l| format!("{file}:{l}")).collect::<Vec<_>>();
    let mut expected = lines("crates/docs/README.md", &[4]);
    expected.extend(lines("crates/docs/src/lib.rs", &[3, 9, 12, 15, 18, 21, 24, 27, 46, 51]));
    assert_eq!(doctests, expected);
    assert!(violations.iter().filter(|v| v["doctest"] != true).all(|v| v.get("doctest").is_none()));
    // `[patch]` onto a path crate, and version-exact lockfile edges: `sdk 1` reaches nothing, `sdk 2` does.
    let via = |package: &str| {
        violations.iter().find(|v| v["package"] == package && v["kind"] == "transitive").map(|v| v["via"].clone())
    };
    assert_eq!(via("patched-user"), Some(serde_json::json!(["patched-user", "legacy-sdk"])));
    assert_eq!(via("pinned-new"), Some(serde_json::json!(["pinned-new", "sdk", "sdk-compat-layer"])));
    assert!(!violations.iter().any(|v| v["package"] == "pinned-old" || v["package"] == "tool"));
    // The help names the item's new path, read from the deprecation notes.
    let unix = violations.iter().find(|v| v["file"] == "crates/macros/src/unix.rs").expect("unix.rs");
    assert_eq!(
        unix["help"],
        "use `core_registry::DEFAULT_EVENT_BUFFER` instead of `registry_compat::EVENT_BUFFER_SIZE`, and depend on \
         `core-registry`"
    );
}

#[test]
fn json_fields_and_order_follow_the_contract() {
    for case in VIOLATING {
        let report = json(case);
        assert!(report["deprecated"].is_string() && report["replacement"].is_string(), "{case}");
        assert!(report["packages_checked"].is_u64(), "{case}");
        let mut all: Vec<&Value> = report["violations"].as_array().expect("violations").iter().collect();
        for allowed in report["allowed"].as_array().expect("allowed") {
            assert!(allowed["reason"].as_str().is_some_and(|r| !r.is_empty()), "{case}: allowed entries have reasons");
            all.extend(allowed["violations"].as_array().expect("allowed violations"));
        }
        let key = |v: &Value| {
            (
                v["package"].as_str().unwrap_or_default().to_owned(),
                v["file"].as_str().unwrap_or_default().to_owned(),
                v["line"].as_u64().unwrap_or_default(),
                v["column"].as_u64().unwrap_or_default(),
                v["kind"].as_str().unwrap_or_default().to_owned(),
            )
        };
        let violations = report["violations"].as_array().expect("violations");
        assert!(violations.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "{case}: sorted by package, file, line");
        for v in all {
            assert!(v["message"].is_string() && v["line"].as_u64().is_some_and(|l| l >= 1), "{case}: {v}");
            assert!(!v["file"].as_str().unwrap_or("/").starts_with('/'), "{case}: paths are relative: {v}");
            match v["kind"].as_str() {
                Some("dependency") => {
                    assert!(matches!(v["dependency_kind"].as_str(), Some("normal" | "dev" | "build")), "{v}");
                    assert!(v["optional"].is_boolean() && (v["target"].is_null() || v["target"].is_string()));
                    assert!(v["rename"].is_null() || v["rename"].is_string());
                    assert!(v["file"].as_str().is_some_and(|f| f.ends_with("Cargo.toml")));
                }
                Some("transitive") => {
                    let via = v["via"].as_array().expect("via");
                    assert!(via.len() >= 2 && via[0] == v["package"], "{v}");
                }
                Some("source") => assert!(v["column"].as_u64().is_some_and(|c| c >= 1), "{v}"),
                Some("stale-allow") => assert!(v["package"].is_string()),
                other => panic!("unknown kind {other:?}"),
            }
        }
    }
}

#[test]
fn sarif_has_one_rule_per_kind_and_suppresses_allowed_results() {
    let sarif: Value = serde_json::from_str(&check("allow", "sarif", 1)).expect("SARIF is JSON");
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules: Vec<&str> =
        run["tool"]["driver"]["rules"].as_array().expect("rules").iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(rules, ["dependency", "transitive", "source", "stale-allow"]);
    let results = run["results"].as_array().expect("results");
    let suppressed = results.iter().filter(|r| r.get("suppressions").is_some()).count();
    assert_eq!((results.len(), suppressed), (7, 3));
}

#[test]
fn allowing_a_package_does_not_hide_its_dependents() {
    let report = json("allow");
    let downstream = report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .find(|v| v["package"] == "downstream")
        .expect("downstream is reported");
    assert_eq!(downstream["kind"], "transitive");
    assert_eq!(downstream["via"], serde_json::json!(["downstream", "legacy-bridge"]));
}

#[test]
fn no_source_checks_manifests_only() {
    let (code, stdout, _) = run(&["--manifest-path", "source/Cargo.toml", "--format", "json", "--no-source"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&stdout).expect("JSON output");
    let kinds: Vec<&str> =
        report["violations"].as_array().expect("violations").iter().filter_map(|v| v["kind"].as_str()).collect();
    assert_eq!(kinds, ["dependency"; 4]);
}

#[test]
fn bad_input_is_exit_2_with_one_line_naming_the_file() {
    bad_input("missing/Cargo.toml", "error: missing/Cargo.toml: no such file");
    bad_input("clean", "error: clean: is a directory; --manifest-path takes a Cargo.toml");
    bad_input(
        "broken-toml/Cargo.toml",
        "error: broken-toml/Cargo.toml:5:30: TOML does not parse: invalid basic string, expected `\"`",
    );
    bad_input(
        "broken-member/Cargo.toml",
        "error: broken-member/app/Cargo.toml:5:14: TOML does not parse: unclosed table, expected `]`",
    );
    bad_input(
        "unknown-key/Cargo.toml",
        "error: unknown-key/Cargo.toml:6: unknown key `allowlist` in [workspace.metadata.migrate-check] \
         (expected `deprecated`, `replacement`, `allow`, `replacement-version` or `replacement-path`)",
    );
    bad_input(
        "allow-without-reason/Cargo.toml",
        "error: allow-without-reason/Cargo.toml:7: the `allow` entry for `tests` has no `reason` \
         (a non-empty string is required)",
    );
    bad_input("missing-member/Cargo.toml", "error: missing-member/Cargo.toml:2: member `crates/app` has no Cargo.toml");
    bad_input(
        "bad-rust/Cargo.toml",
        "error: bad-rust/app/src/lib.rs:1:9: Rust source does not parse: unbalanced delimiters or an invalid token",
    );
}

#[test]
fn a_package_inside_a_workspace_that_does_not_list_it_is_refused_as_cargo_does() {
    // `not-a-workspace` has `[package]` and no `[workspace]`, and this repository's workspace, above it, names
    // `tests` as a member (which makes its `exclude = ["tests/fixtures"]` not apply): Cargo refuses it too.
    let root = std::fs::canonicalize(fixtures().join("../../..")).expect("the repository root");
    bad_input(
        "not-a-workspace/Cargo.toml",
        &format!(
            "error: not-a-workspace/Cargo.toml: the package is inside the workspace of `{}`, which does not list it: \
             add it to `workspace.members` or `workspace.exclude` there, or give the package an empty `[workspace]` \
             table",
            root.join("Cargo.toml").display()
        ),
    );
}

#[test]
fn bad_arguments_are_exit_2() {
    for args in [&["--format", "xml"][..], &["--bogus"], &["--manifest-path"], &["--format"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!((code, stdout.as_str()), (Some(2), ""), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains("--help"), "{args:?}: {stderr}");
    }
}

#[test]
fn help_describes_flags_and_exit_codes() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for needle in ["--manifest-path", "--format", "--no-source", "EXIT CODES", "stale-allow", "reason"] {
        assert!(stdout.contains(needle), "--help mentions {needle}");
    }
}
