//! Differential test with Cargo as the oracle: on every fixture workspace that `cargo metadata --no-deps` accepts,
//! migrate-check's members are Cargo's members, manifest for manifest. A member the tool missed would be a member it
//! never checks: a false "ok".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use migrate_check::{CheckOptions, Names};
use serde_json::Value;

/// Fixtures whose configuration table is broken on purpose: Cargo ignores `[workspace.metadata]`, the tool refuses
/// them (exit 2, never an "ok").
const BROKEN_CONFIG: [&str; 2] = ["allow-without-reason", "unknown-key"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_owned()
}

/// Every `Cargo.toml` directly in a fixture directory: `tests/fixtures/<group>/<case>/`, `tests/fixtures/<case>/`,
/// and the migrate-check crate's own on-disk fixtures.
fn fixture_manifests() -> Vec<PathBuf> {
    let mut manifests = Vec::new();
    let roots = [repository().join("tests/fixtures"), repository().join("crates/migrate-check/tests/fixtures")];
    for root in roots {
        for entry in std::fs::read_dir(&root).expect("read the fixtures") {
            let dir = entry.expect("an entry").path();
            if dir.join("Cargo.toml").is_file() {
                manifests.push(dir.join("Cargo.toml"));
            } else if dir.is_dir() {
                for case in std::fs::read_dir(&dir).expect("read a fixture group") {
                    let case = case.expect("an entry").path();
                    if case.join("Cargo.toml").is_file() {
                        manifests.push(case.join("Cargo.toml"));
                    }
                }
            }
        }
    }
    manifests.sort();
    manifests
}

/// Cargo's members of the workspace of `manifest`, or `None` when Cargo refuses it.
fn cargo_members(manifest: &Path) -> Option<BTreeSet<PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(manifest)
        .output()
        .expect("cargo runs");
    if !output.status.success() {
        return None;
    }
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let members: BTreeSet<&str> = metadata["workspace_members"].as_array()?.iter().filter_map(Value::as_str).collect();
    let packages = metadata["packages"].as_array()?;
    Some(
        packages
            .iter()
            .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
            .filter_map(|p| p["manifest_path"].as_str())
            .map(|path| std::fs::canonicalize(path).expect("a member manifest exists"))
            .collect(),
    )
}

#[test]
fn members_are_cargo_members_on_every_fixture_cargo_accepts() {
    let defaults = Names { deprecated: Some("registry-compat".into()), replacement: Some("core-registry".into()) };
    let mut compared = Vec::new();
    for manifest in fixture_manifests() {
        let Some(expected) = cargo_members(&manifest) else { continue };
        let case = manifest.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let options = CheckOptions {
            manifest_path: Some(manifest.clone()),
            defaults: defaults.clone(),
            ..CheckOptions::default()
        };
        match migrate_check::members(&options) {
            Ok(members) => {
                let found: BTreeSet<PathBuf> = members
                    .iter()
                    .map(|m| std::fs::canonicalize(&m.manifest_path).expect("a member manifest exists"))
                    .collect();
                assert_eq!(found, expected, "{}: migrate-check's members differ from Cargo's", manifest.display());
            }
            Err(diagnostic) => {
                assert!(
                    diagnostic.code == "config" && BROKEN_CONFIG.contains(&case.as_str()),
                    "{}: Cargo accepts it, migrate-check refused it: {diagnostic}",
                    manifest.display()
                );
            }
        }
        compared.push(case);
    }
    // The fixtures that give members their shape must all have been compared (`dependency` is not among them: Cargo
    // refuses its `g-target`, whose target tables give one dependency two paths on purpose).
    for case in ["layout", "transitive", "source", "allow", "workspace", "legacy-consumer", "old-core"] {
        assert!(compared.iter().any(|c| c == case), "`{case}` was not compared; compared: {compared:?}");
    }
}
