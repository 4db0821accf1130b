//! `cargo xtask compat-audit` on the real compat crate (clean) and on small fixture crates under
//! `tests/fixtures/compat-audit/` that each break one rule: exit codes and the human output.

mod support;

fn audit(args: &[&str]) -> (i32, String) {
    support::xtask("compat-audit", args)
}

/// Audits the fixture `case`, checks the exit code, and snapshots the output under the case's name.
#[track_caller]
fn check(case: &str, expected_code: i32) {
    let dir = format!("tests/fixtures/compat-audit/{case}");
    let (code, output) = audit(&["--crate-dir", &dir]);
    assert_eq!(code, expected_code, "{output}");
    insta::assert_snapshot!(case, output);
}

#[test]
fn the_real_compat_crate_is_clean() {
    let (code, output) = audit(&[]);
    assert_eq!(code, 0, "{output}");
    assert!(output.starts_with("compat-audit: crates/registry-compat: "), "{output}");
}

#[test]
fn manifest_path_selects_the_same_crate() {
    let (code, output) = audit(&["--manifest-path", "crates/registry-compat/Cargo.toml"]);
    assert_eq!(code, 0, "{output}");
    assert!(output.starts_with("compat-audit: crates/registry-compat: "), "{output}");
}

#[test]
fn clean() {
    check("clean", 0);
}

#[test]
fn not_forwarding() {
    check("not-forwarding", 1);
}

#[test]
fn missing_deprecated() {
    check("missing-deprecated", 1);
}

#[test]
fn bare_reexport() {
    check("bare-reexport", 1);
}

#[test]
fn bad_notes() {
    check("bad-notes", 1);
}

#[test]
fn unknown_path() {
    check("unknown-path", 1);
}

#[test]
fn unparsable() {
    check("unparsable", 2);
}

#[test]
fn no_core_dependency() {
    check("no-core-dependency", 2);
}

#[test]
fn a_missing_crate_is_one_clear_line() {
    let (code, output) = audit(&["--crate-dir", "crates/no-such-crate"]);
    assert_eq!(code, 2);
    assert_eq!(
        output.trim_end(),
        "error: crates/no-such-crate/Cargo.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn bad_arguments_exit_2() {
    let (code, output) = audit(&["--frobnicate"]);
    assert_eq!(
        (code, output.trim_end()),
        (2, "error: invalid option '--frobnicate'; run `cargo xtask compat-audit --help`")
    );
    let (code, output) = audit(&["--manifest-path", "crates/registry-compat"]);
    assert_eq!(code, 2, "{output}");
}

#[test]
fn every_format_of_the_check_serves_the_audit_too() {
    let dir = "tests/fixtures/compat-audit/bad-notes";
    let (code, human) = audit(&["--crate-dir", dir]);
    assert_eq!(code, 1);
    let located = human.lines().filter(|line| line.trim_start().starts_with("--> ")).count();

    let (code, json) = audit(&["--crate-dir", dir, "--format", "json"]);
    assert_eq!(code, 1, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), located, "one JSON finding per human diagnostic");
    assert!(findings.iter().all(|f| f["file"].as_str().is_some_and(|file| file.starts_with(dir))), "{json}");

    let (code, github) = audit(&["--crate-dir", dir, "--format", "github"]);
    assert_eq!((code, github.lines().count()), (1, located), "{github}");
    assert!(github.lines().all(|line| line.starts_with("::error file=tests/fixtures/compat-audit/bad-notes/")));

    let (code, sarif) = audit(&["--crate-dir", dir, "--format", "sarif"]);
    assert_eq!(code, 1);
    let log: serde_json::Value = serde_json::from_str(&sarif).expect("a SARIF log");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "compat-audit");
    assert_eq!(run["results"].as_array().map(Vec::len), Some(located));
    let rules: Vec<&str> =
        run["tool"]["driver"]["rules"].as_array().expect("rules").iter().filter_map(|r| r["id"].as_str()).collect();
    for result in run["results"].as_array().expect("results") {
        assert!(rules.contains(&result["ruleId"].as_str().unwrap_or_default()), "a rule for {result}");
    }
}
