//! The generic binary, `cargo migrate-check`, as a user meets it: which workspace it checks, the names it needs,
//! Cargo's subcommand convention, and errors in every output format. Workspaces are inline fixtures written to the
//! system's temporary directory (outside any Cargo workspace).

mod support;

use serde_json::Value;
use support::{Fixture, migrate_check};

/// The shared fixture ([`support::old_core_workspace`]) with `config` as its configuration table.
fn workspace(config: &str) -> Fixture {
    support::old_core_workspace(config, "")
}

const NAMES: &str = "deprecated = \"old-core\"\nreplacement = \"new-core\"";

/// (package, kind) of each violation in a JSON report.
fn violations(stdout: &str) -> Vec<(String, String)> {
    let report: Value = serde_json::from_str(stdout).expect("a JSON report");
    report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| (v["package"].as_str().unwrap_or_default().into(), v["kind"].as_str().unwrap_or_default().into()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, k)| ((*p).to_owned(), (*k).to_owned())).collect()
}

#[test]
fn without_names_it_stops_and_says_which_are_missing() {
    let ws = workspace("");
    let run = migrate_check(&ws.root, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert_eq!(
        run.stderr,
        "error: Cargo.toml: no deprecated or replacement package to check for: set `deprecated` and `replacement` \
         in [workspace.metadata.migrate-check], or pass `--deprecated` and `--replacement`\n"
    );

    let ws = workspace("deprecated = \"old-core\"");
    let run = migrate_check(&ws.root, &[]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "error: Cargo.toml: no replacement package to check for: set `replacement` in \
         [workspace.metadata.migrate-check], or pass `--replacement`\n"
    );
}

#[test]
fn flags_give_the_names_and_win_over_the_configuration() {
    let ws = workspace("");
    let run = migrate_check(&ws.root, &["--deprecated", "old-core", "--replacement", "new-core", "--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(violations(&run.stdout), pairs(&[("app", "dependency"), ("app", "source")]));

    // The table names the replacement as the deprecated crate; the flags turn it around.
    let ws = workspace("deprecated = \"new-core\"\nreplacement = \"old-core\"");
    let run = migrate_check(&ws.root, &["--deprecated=old-core", "--replacement=new-core", "--format=json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(violations(&run.stdout), pairs(&[("app", "dependency"), ("app", "source")]));
}

#[test]
fn it_checks_the_workspace_of_the_current_directory_as_cargo_finds_it() {
    let ws = workspace(NAMES);
    let from_root = migrate_check(&ws.root, &["--format", "json"]);
    for dir in ["crates/clean", "crates/app/src"] {
        let run = migrate_check(&ws.path(dir), &["--format", "json"]);
        assert_eq!((run.code, &run.stdout), (1, &from_root.stdout), "from {dir}: {}", run.stderr);
    }
    // A member's manifest given with --manifest-path means the workspace too, as for Cargo.
    let run = migrate_check(&ws.path("crates"), &["--manifest-path", "clean/Cargo.toml", "--format", "json"]);
    assert_eq!((run.code, &run.stdout), (1, &from_root.stdout), "{}", run.stderr);
}

#[test]
fn cargo_passes_the_subcommand_name_first() {
    let ws = workspace(NAMES);
    let direct = migrate_check(&ws.root, &["--format", "json"]);
    let through_cargo = migrate_check(&ws.root, &["migrate-check", "--format", "json"]);
    assert_eq!((through_cargo.code, &through_cargo.stdout), (1, &direct.stdout));
}

#[test]
fn a_package_that_is_not_in_a_workspace_is_a_workspace_of_one() {
    let package = Fixture::new(
        r#"
//- /Cargo.toml
[package]
name = "solo"
version = "0.1.0"
edition = "2021"

[dependencies]
legacy = { package = "old-core", path = "vendor/old-core" }

[package.metadata.migrate-check]
deprecated = "old-core"
replacement = "new-core"
//- /src/main.rs
fn main() {
    legacy::helper();
}
//- /vendor/old-core/Cargo.toml
[package]
name = "old-core"
version = "1.0.0"
edition = "2021"
//- /vendor/old-core/src/lib.rs
pub fn helper() {}
"#,
    );
    let run = migrate_check(&package.path("src"), &["--format", "json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("a JSON report");
    // The path dependency inside the package's directory is not a member: there is no workspace to join.
    assert_eq!(report["packages_checked"], 1);
    assert_eq!(violations(&run.stdout), pairs(&[("solo", "dependency"), ("solo", "source")]));
}

#[test]
fn outside_any_package_it_says_where_it_looked() {
    let empty = Fixture::new("//- /README.md\nnot a Cargo project\n");
    let run = migrate_check(&empty.root, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert_eq!(
        run.stderr,
        format!(
            "error: could not find `Cargo.toml` in `{}` or any parent directory\n",
            std::fs::canonicalize(&empty.root).expect("the fixture exists").display()
        )
    );
}

#[test]
fn errors_are_rendered_in_the_format_asked_for() {
    let ws = workspace("allowlist = []");
    let expected = "error: Cargo.toml:6: unknown key `allowlist` in [workspace.metadata.migrate-check] (expected \
                    `deprecated`, `replacement`, `allow`, `replacement-version` or `replacement-path`)\n";

    let json = migrate_check(&ws.root, &["--format", "json"]);
    assert_eq!((json.code, json.stderr.as_str()), (2, expected));
    let error: Value = serde_json::from_str(&json.stdout).expect("one JSON object");
    assert_eq!(error["error"]["code"], "config");
    assert_eq!((error["error"]["file"].as_str(), error["error"]["line"].as_u64()), (Some("Cargo.toml"), Some(6)));

    let github = migrate_check(&ws.root, &["--format", "github"]);
    assert_eq!((github.code, github.stderr.as_str()), (2, expected));
    assert!(github.stdout.starts_with("::error file=Cargo.toml,line=6,title=migrate-check config::unknown key"));

    let sarif = migrate_check(&ws.root, &["--format", "sarif"]);
    assert_eq!(sarif.code, 2);
    let log: Value = serde_json::from_str(&sarif.stdout).expect("a SARIF log");
    let invocation = &log["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    assert_eq!(invocation["toolExecutionNotifications"][0]["descriptor"]["id"], "config");
    assert_eq!(log["runs"][0]["results"], serde_json::json!([]));
}

#[test]
fn sarif_names_the_tool_its_version_and_its_documentation() {
    let ws = workspace(NAMES);
    let run = migrate_check(&ws.root, &["--format", "sarif"]);
    assert_eq!(run.code, 1);
    let log: Value = serde_json::from_str(&run.stdout).expect("a SARIF log");
    let driver = &log["runs"][0]["tool"]["driver"];
    assert_eq!(driver["name"], "migrate-check");
    assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
    assert!(driver["informationUri"].as_str().is_some_and(|uri| uri.ends_with("docs/migrate-check.md")), "{driver}");
}

#[test]
fn version_and_help() {
    let ws = workspace(NAMES);
    let run = migrate_check(&ws.root, &["--version"]);
    assert_eq!((run.code, run.stdout), (0, format!("cargo migrate-check {}\n", env!("CARGO_PKG_VERSION"))));
    let help = migrate_check(&ws.root, &["migrate-check", "--help"]);
    assert_eq!(help.code, 0);
    for needle in ["--deprecated", "--replacement", "--manifest-path", "--fix", "EXIT CODES", "docs/migrate-check.md"] {
        assert!(help.stdout.contains(needle), "--help mentions {needle}");
    }
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    let ws = workspace(NAMES);
    for args in [&["--format", "xml"][..], &["--bogus"], &["--deprecated"], &["--deprecated", "no/such"], &["x"]] {
        let run = migrate_check(&ws.root, args);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.ends_with("; run `cargo migrate-check --help`\n"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn a_name_one_dash_away_from_a_package_is_a_misspelling_not_an_ok() {
    let ws = workspace("deprecated = \"old_core\"\nreplacement = \"new-core\"");
    let run = migrate_check(&ws.root, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert_eq!(
        run.stderr,
        "error: Cargo.toml: no package is named `old_core` (the deprecated crate); this workspace has `old-core`; \
         name the package as its manifest does: `old-core`\n"
    );
}

#[test]
fn a_deprecated_crate_seen_nowhere_is_said_so_beside_the_ok() {
    let ws = workspace("deprecated = \"nope\"\nreplacement = \"new-core\"");
    let run = migrate_check(&ws.root, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "migrate-check: ok: 3 checked packages, none depends on or imports `nope`\nnote[migrate-check]: no package \
         named `nope` is a member, a dependency or in Cargo.lock: if the migration is not finished, check the name\n"
    );
    let json = migrate_check(&ws.root, &["--format", "json"]);
    let report: Value = serde_json::from_str(&json.stdout).expect("a JSON report");
    assert_eq!(report["deprecated_found"], false);
    let found = migrate_check(&ws.root, &["--deprecated", "old-core", "--format", "json"]);
    let report: Value = serde_json::from_str(&found.stdout).expect("a JSON report");
    assert_eq!(report["deprecated_found"], true);
}

#[test]
fn a_root_manifest_that_does_not_parse_stops_the_search_from_a_member() {
    let ws = workspace(NAMES);
    let manifest = ws.path("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("read the root manifest");
    std::fs::write(&manifest, format!("{text}[broken\n")).expect("break it");
    let run = migrate_check(&ws.path("crates/app"), &[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert!(run.stderr.starts_with("error: ../../Cargo.toml:8:8: TOML does not parse: "), "{}", run.stderr);
}

#[test]
fn a_source_file_that_cannot_be_read_is_an_error_not_a_skip() {
    let ws = workspace(NAMES);
    std::fs::write(ws.path("crates/clean/src/lib.rs"), b"pub fn f() {}\n// \xff\n").expect("write a non-UTF-8 file");
    let run = migrate_check(&ws.root, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert_eq!(run.stderr, "error: crates/clean/src/lib.rs: cannot check it: it is not UTF-8 (rustc rejects it too)\n");
}

#[test]
fn fix_refuses_a_replacement_path_that_is_not_the_replacement_before_writing() {
    let ws = workspace(&format!("{NAMES}\nreplacement-path = \"crates/nope\""));
    let before = ws.read("crates/app/Cargo.toml");
    for args in [&["--fix", "--dry-run", "--allow-no-vcs"][..], &["--fix", "--allow-no-vcs"]] {
        let run = migrate_check(&ws.root, args);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr,
            "error: Cargo.toml: --fix would point the members at `crates/nope` for `new-core`, but that directory has \
             no package manifest; nothing was written; set `replacement-path` in [workspace.metadata.migrate-check] \
             to the directory of `new-core`\n",
            "{args:?}"
        );
    }
    assert_eq!(ws.read("crates/app/Cargo.toml"), before);
}

#[test]
fn without_the_source_scan_an_allow_entry_is_not_called_stale() {
    let ws = workspace(&format!("{NAMES}\nallow = [{{ package = \"clean\", reason = \"mentions the old crate\" }}]"));
    std::fs::write(
        ws.path("crates/clean/src/lib.rs"),
        "pub use new_core::helper;\npub fn f() { old_core::helper() }\n",
    )
    .expect("write a source");
    let full = migrate_check(&ws.root, &["--format", "json"]);
    let report: Value = serde_json::from_str(&full.stdout).expect("a JSON report");
    assert_eq!(report["allowed"][0]["package"], "clean", "{}", full.stdout);
    // Manifests only: `clean` looks clean, but its entry is not known to be stale.
    let manifests = migrate_check(&ws.root, &["--format", "json", "--no-source"]);
    assert_eq!(violations(&manifests.stdout), pairs(&[("app", "dependency")]));
}

#[test]
fn a_doctest_is_code_the_check_counts_and_fix_rewrites() {
    let ws = workspace(NAMES);
    let lib = "/// ```\n/// old_core::helper();\n/// ```\npub fn run() {}\n";
    std::fs::write(ws.path("crates/app/src/lib.rs"), lib).expect("write a doc comment");
    let run = migrate_check(&ws.root, &["--format", "json"]);
    let report: Value = serde_json::from_str(&run.stdout).expect("a JSON report");
    let doctest = &report["violations"][1];
    assert_eq!((doctest["kind"].as_str(), doctest["doctest"].as_bool()), (Some("source"), Some(true)), "{doctest}");
    assert_eq!((doctest["line"].as_u64(), doctest["column"].as_u64()), (Some(2), Some(5)));
    assert_eq!(doctest["help"], "use `new_core::helper` instead of `old_core::helper`, and depend on `new-core`");

    let fixed = migrate_check(&ws.root, &["--fix", "--allow-no-vcs", "--format", "json"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    // The doc text is code: rewritten like the rest, so the member no longer needs the old crate (and the compile
    // afterwards ran the doctest).
    assert_eq!(ws.read("crates/app/src/lib.rs"), lib.replace("old_core::helper", "new_core::helper"));
    assert!(!ws.read("crates/app/Cargo.toml").contains("old-core"), "{}", ws.read("crates/app/Cargo.toml"));
    assert_eq!(violations(&fixed.stdout), pairs(&[]));
}

#[test]
fn a_doctest_import_under_a_new_name_is_left_with_its_dependency() {
    let ws = workspace(NAMES);
    let lib = "//! ```\n//! use old_core::helper;\n//! helper();\n//! ```\n";
    std::fs::write(
        ws.path("crates/old-core/src/lib.rs"),
        "#[deprecated(note = \"use new_core::help\")]\npub fn helper() {\n    new_core::help()\n}\n",
    )
    .expect("write the shim");
    std::fs::write(ws.path("crates/new-core/src/lib.rs"), "pub fn help() {}\n").expect("write the replacement");
    std::fs::write(ws.path("crates/clean/src/lib.rs"), "pub use new_core::help;\n").expect("write a member");
    std::fs::write(ws.path("crates/app/src/lib.rs"), lib).expect("write a doc comment");
    let fixed = migrate_check(&ws.root, &["--fix", "--allow-no-vcs", "--format", "json"]);
    assert_eq!(fixed.code, 1, "{}", fixed.stderr);
    // `helper()` below the import still needs the old name: the import stays, and so does the old dependency.
    assert_eq!(ws.read("crates/app/src/lib.rs"), lib);
    assert!(ws.read("crates/app/Cargo.toml").contains("old-core = { path = \"../old-core\" }"));
    let report: Value = serde_json::from_str(&fixed.stdout).expect("a JSON report");
    assert_eq!(violations(&fixed.stdout), pairs(&[("app", "dependency"), ("app", "source")]));
    assert_eq!(
        report["violations"][1]["help"],
        "this doctest imports `old_core::helper`; import `new_core::help` instead and rename its uses"
    );
}

#[test]
fn two_members_of_one_name_are_refused_as_cargo_refuses_them() {
    let ws = workspace(NAMES);
    let manifest = ws.read("crates/clean/Cargo.toml").replace("name = \"clean\"", "name = \"app\"");
    std::fs::write(ws.path("crates/clean/Cargo.toml"), manifest).expect("rename a member");
    let run = migrate_check(&ws.root, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""));
    assert_eq!(
        run.stderr,
        "error: Cargo.toml: two packages named `app` in this workspace: crates/app/Cargo.toml and \
         crates/clean/Cargo.toml\n"
    );
}

#[test]
fn macro_use_goes_once_the_bare_macro_calls_it_enabled_call_the_new_path() {
    let shim = "#[doc(hidden)]\npub mod __private {\n    pub use new_core::make;\n}\n\n\
                #[deprecated(note = \"use new_core::make\")]\n#[macro_export]\nmacro_rules! make {\n    \
                ($x:expr) => {\n        $crate::__private::make($x)\n    };\n}\n";
    let lib = "#[macro_use]\nextern crate old_core;\n\npub fn run() -> u32 {\n    make!(1)\n}\n";
    let setup = |with_other_file: bool| {
        let ws = workspace(NAMES);
        std::fs::write(ws.path("crates/old-core/src/lib.rs"), shim).expect("write the shim");
        std::fs::write(ws.path("crates/new-core/src/lib.rs"), "pub fn make(x: u32) -> u32 {\n    x\n}\n")
            .expect("write the replacement");
        std::fs::write(ws.path("crates/clean/src/lib.rs"), "pub use new_core::make;\n").expect("write a member");
        if with_other_file {
            let lib = lib.replace("extern crate old_core;\n", "extern crate old_core;\n\nmod other;\n");
            std::fs::write(ws.path("crates/app/src/lib.rs"), lib).expect("write the library");
            std::fs::write(ws.path("crates/app/src/other.rs"), "pub fn again() -> u32 {\n    make!(2)\n}\n")
                .expect("write a module");
        } else {
            std::fs::write(ws.path("crates/app/src/lib.rs"), lib).expect("write the library");
        }
        ws
    };

    // Every bare call is in the file: each becomes a call of the new path, and the item and the old dependency go.
    let ws = setup(false);
    let fixed = migrate_check(&ws.root, &["--fix", "--allow-no-vcs", "--format", "json"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert_eq!(ws.read("crates/app/src/lib.rs"), "pub fn run() -> u32 {\n    new_core::make(1)\n}\n");
    assert!(!ws.read("crates/app/Cargo.toml").contains("old-core"), "{}", ws.read("crates/app/Cargo.toml"));

    // A bare call in another file of the member (which has no other occurrence): the item stays, with its help,
    // and so does the old dependency, so that the other file still builds.
    let ws = setup(true);
    let fixed = migrate_check(&ws.root, &["--fix", "--allow-no-vcs", "--format", "json"]);
    assert_eq!(fixed.code, 1, "{}", fixed.stderr);
    assert!(ws.read("crates/app/src/lib.rs").contains("#[macro_use]\nextern crate old_core;\n"));
    assert!(ws.read("crates/app/Cargo.toml").contains("old-core = { path = \"../old-core\" }"));
    let report: Value = serde_json::from_str(&fixed.stdout).expect("a JSON report");
    assert_eq!(violations(&fixed.stdout), pairs(&[("app", "dependency"), ("app", "source")]));
    let help = report["violations"][1]["help"].as_str().unwrap_or_default();
    assert!(help.starts_with("`#[macro_use]` brings the old macros in by their bare names"), "{help}");
}

#[test]
fn a_block_level_import_of_a_renamed_item_renames_its_uses_in_that_block_only() {
    let ws = workspace(NAMES);
    let shim = "#[deprecated(note = \"use new_core::Renamed\")]\npub type Old = new_core::Renamed;\n";
    std::fs::write(ws.path("crates/old-core/src/lib.rs"), shim).expect("write the shim");
    std::fs::write(ws.path("crates/new-core/src/lib.rs"), "#[derive(Default)]\npub struct Renamed;\n")
        .expect("write the replacement");
    std::fs::write(ws.path("crates/clean/src/lib.rs"), "pub use new_core::Renamed;\n").expect("write a member");
    // `Old` in `other` is a local variable of that name: the block's rename must not reach it.
    let lib = "pub fn make() -> impl Sized {\n    let made: Old = Old::default();\n    use old_core::Old;\n    made\n}\n\n\
               #[allow(non_snake_case)]\npub fn other() -> u32 {\n    let Old = 1;\n    Old\n}\n";
    std::fs::write(ws.path("crates/app/src/lib.rs"), lib).expect("write the library");
    let fixed = migrate_check(&ws.root, &["--fix", "--allow-no-vcs"]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert_eq!(
        ws.read("crates/app/src/lib.rs"),
        "pub fn make() -> impl Sized {\n    let made: Renamed = Renamed::default();\n    use new_core::Renamed;\n    \
         made\n}\n\n#[allow(non_snake_case)]\npub fn other() -> u32 {\n    let Old = 1;\n    Old\n}\n"
    );
}

#[test]
fn a_member_glob_that_matches_a_directory_without_a_manifest_is_an_error_at_its_line() {
    let ws = Fixture::new(
        "//- /Cargo.toml
[workspace]
members = [
    \"crates/*\",
]
//- /crates/app/Cargo.toml
[package]
name = \"app\"
version = \"0.1.0\"
//- /crates/app/src/lib.rs
//- /crates/notes/README.md
not a package
",
    );
    let names = ["--deprecated", "old-core", "--replacement", "new-core"];
    let expected = "error: Cargo.toml:3: member pattern `crates/*` matches `crates/notes`, which has no Cargo.toml\n";
    let run = migrate_check(&ws.root, &names);
    assert_eq!((run.code, run.stdout.as_str(), run.stderr.as_str()), (2, "", expected));

    // A Cargo.toml that is not a file is none: a directory, or a FIFO (which a read would wait on forever).
    std::fs::create_dir_all(ws.path("crates/notes/Cargo.toml")).expect("a directory named Cargo.toml");
    let run = migrate_check(&ws.root, &names);
    assert_eq!((run.code, run.stderr.as_str()), (2, expected));
    std::fs::remove_dir(ws.path("crates/notes/Cargo.toml")).expect("remove it");
    let mkfifo = std::process::Command::new("mkfifo").arg(ws.path("crates/notes/Cargo.toml")).status();
    assert!(mkfifo.is_ok_and(|status| status.success()), "mkfifo (coreutils) makes a FIFO");
    let run = migrate_check(&ws.root, &names);
    assert_eq!((run.code, run.stderr.as_str()), (2, expected));
    std::fs::remove_file(ws.path("crates/notes/Cargo.toml")).expect("remove it");

    // The first pattern with a problem is reported, before any manifest's own error.
    std::fs::write(ws.path("Cargo.toml"), "[workspace]\nmembers = [\n    \"crates/*\",\n    \"missing\",\n]\n")
        .expect("write the root manifest");
    std::fs::write(ws.path("crates/app/Cargo.toml"), "[package]\nname = \"app\"\nversion = \"0.1.0\n")
        .expect("write a manifest that does not parse");
    let run = migrate_check(&ws.root, &names);
    assert_eq!((run.code, run.stderr.as_str()), (2, expected));
}
