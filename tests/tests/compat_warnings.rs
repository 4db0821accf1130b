//! The deprecated shims warn where they should: `cargo check` on the legacy-consumer fixture (a standalone
//! workspace written against the 0.9 API, `tests/fixtures/legacy-consumer`) reports a `deprecated` warning on
//! exactly the lines marked `// expect: deprecated`, none on the lines marked `// gap: <why>`, each naming the new
//! `core_registry::` path; with its feature `deny-deprecated` the build fails on those same lines.
//!
//! A marker at the end of a line marks that line; a marker alone on its line marks the next line that is not a
//! comment (for lines where rustfmt will not keep a trailing comment, such as those ending in `{`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A source line of the fixture: its path relative to the fixture root and its 1-based number.
type Line = (String, usize);

const EXPECT: &str = "// expect: deprecated";
const GAP: &str = "// gap: ";

#[derive(Debug)]
struct Diagnostic {
    level: String,
    message: String,
    column: usize,
}

struct Check {
    success: bool,
    stderr: String,
    // Every `deprecated` diagnostic of the fixture's own code, by primary line.
    deprecated: BTreeMap<Line, Vec<Diagnostic>>,
}

struct Markers {
    expect: BTreeSet<Line>,
    // The reason written after `// gap: `.
    gaps: BTreeMap<Line, String>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy-consumer")
}

/// Runs `cargo check` on the fixture's library with `--message-format=json`.
fn cargo_check(features: &[&str]) -> Check {
    // A target dir of its own under this workspace's, so reruns are incremental and never wait on the outer build.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("fixtures/legacy-consumer");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["check", "--lib", "--locked", "--message-format=json", "--manifest-path"])
        .arg(fixture_dir().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir)
        // Outer flags such as `-D warnings` would change what this test observes.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let output = command.output().expect("cannot run cargo");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stderr.contains("--locked"),
        "the fixture's Cargo.lock is stale: run `cargo check --manifest-path tests/fixtures/legacy-consumer/Cargo.toml` \
         and commit tests/fixtures/legacy-consumer/Cargo.lock\n{stderr}"
    );

    let mut deprecated: BTreeMap<Line, Vec<Diagnostic>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let json: Value = serde_json::from_str(line).expect("cargo printed a line that is not JSON");
        if json["reason"] != "compiler-message" || !json["package_id"].as_str().unwrap().contains("legacy-consumer") {
            continue;
        }
        let message = &json["message"];
        if message["code"]["code"] != "deprecated" {
            continue;
        }
        let spans = message["spans"].as_array().unwrap();
        let primary = spans.iter().find(|span| span["is_primary"] == true).expect("a diagnostic without primary span");
        let file = primary["file_name"].as_str().unwrap().to_owned();
        let line = primary["line_start"].as_u64().unwrap() as usize;
        deprecated.entry((file, line)).or_default().push(Diagnostic {
            level: message["level"].as_str().unwrap().to_owned(),
            message: message["message"].as_str().unwrap().to_owned(),
            column: primary["column_start"].as_u64().unwrap() as usize,
        });
    }
    Check { success: output.status.success(), stderr, deprecated }
}

/// Reads the markers of every `.rs` file under the fixture's `src/`.
fn markers() -> Markers {
    let mut markers = Markers { expect: BTreeSet::new(), gaps: BTreeMap::new() };
    let mut files = Vec::new();
    collect_rs_files(&fixture_dir().join("src"), &mut files);
    for path in files {
        let relative = path.strip_prefix(fixture_dir()).unwrap().to_str().unwrap().replace('\\', "/");
        let text = std::fs::read_to_string(&path).unwrap();
        // A standalone marker waiting for the next code line.
        let mut pending: Option<Option<String>> = None;
        for (index, line) in text.lines().enumerate() {
            let here = (relative.clone(), index + 1);
            let trimmed = line.trim();
            if trimmed.starts_with("//!") || trimmed.starts_with("///") {
                // Doc comments describe the markers; they never are one.
                continue;
            }
            let marker = if let Some(at) = line.find(GAP) {
                Some(Some(line[at + GAP.len()..].trim().to_owned()))
            } else if trimmed.ends_with(EXPECT) {
                Some(None)
            } else {
                None
            };
            let standalone = trimmed.starts_with("//");
            match (marker, standalone) {
                (Some(marker), true) => pending = Some(marker),
                (Some(marker), false) => record(&mut markers, here, marker),
                (None, true) => {}
                (None, false) => {
                    if let Some(marker) = pending.take() {
                        record(&mut markers, here, marker);
                    }
                }
            }
        }
    }
    markers
}

fn record(markers: &mut Markers, line: Line, marker: Option<String>) {
    match marker {
        None => markers.expect.insert(line),
        Some(reason) => {
            assert!(!reason.is_empty(), "{}:{}: a gap marker needs a reason", line.0, line.1);
            markers.gaps.insert(line, reason).is_none()
        }
    };
}

fn collect_rs_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

fn source_line(line: &Line) -> String {
    let text = std::fs::read_to_string(fixture_dir().join(&line.0)).unwrap();
    text.lines().nth(line.1 - 1).unwrap_or_default().trim().to_owned()
}

/// The marked lines and the diagnosed lines must be the same set; describes every difference.
fn compare(markers: &Markers, check: &Check) -> String {
    let mut problems = String::new();
    for line in &markers.expect {
        if !check.deprecated.contains_key(line) {
            writeln!(
                problems,
                "{}:{}: marked `{EXPECT}` but rustc reported nothing: {}",
                line.0,
                line.1,
                source_line(line)
            )
            .unwrap();
        }
    }
    for (line, diagnostics) in &check.deprecated {
        if let Some(reason) = markers.gaps.get(line) {
            writeln!(
                problems,
                "{}:{}: rustc now warns at a known gap ({reason}): mark it `{EXPECT}` and drop it from MIGRATION.md's \
                 known gaps: {}",
                line.0, line.1, diagnostics[0].message
            )
            .unwrap();
        } else if !markers.expect.contains(line) {
            writeln!(problems, "{}:{}: unmarked `deprecated` diagnostic: {}", line.0, line.1, diagnostics[0].message)
                .unwrap();
        }
    }
    problems
}

#[test]
fn every_old_api_use_warns_with_the_new_path() {
    let markers = markers();
    assert!(markers.expect.len() >= 50, "the fixture lost its markers: {} left", markers.expect.len());
    assert_eq!(markers.gaps.len(), 3, "the known gaps changed: update MIGRATION.md's list too: {:?}", markers.gaps);

    let check = cargo_check(&[]);
    assert!(check.success, "the legacy consumer must compile unchanged (warnings only):\n{}", check.stderr);
    let problems = compare(&markers, &check);
    assert!(problems.is_empty(), "warnings and markers differ:\n{problems}");

    for ((file, line), diagnostics) in &check.deprecated {
        for diagnostic in diagnostics {
            assert_eq!(diagnostic.level, "warning", "{file}:{line}:{}", diagnostic.column);
            // Every note reads "use core_registry::<path>...": the reader can fix the line without the docs.
            assert!(
                diagnostic.message.contains("use core_registry::"),
                "{file}:{line}:{}: the message does not name the new path: {}",
                diagnostic.column,
                diagnostic.message
            );
        }
    }
    let n_warnings: usize = check.deprecated.values().map(Vec::len).sum();
    assert!(n_warnings >= markers.expect.len());
}

#[test]
fn deny_deprecated_fails_the_build_at_every_marked_line() {
    let markers = markers();
    let check = cargo_check(&["deny-deprecated"]);
    assert!(!check.success, "the legacy consumer built with deny(deprecated):\n{}", check.stderr);
    let problems = compare(&markers, &check);
    assert!(problems.is_empty(), "errors and markers differ:\n{problems}");
    for ((file, line), diagnostics) in &check.deprecated {
        assert!(diagnostics.iter().all(|it| it.level == "error"), "{file}:{line}: {diagnostics:?}");
    }
}
