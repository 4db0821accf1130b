//! What the integration tests share: multi-file fixtures written to a temporary directory, and the built binary.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fixture written to its own directory under the system's temporary directory (outside any Cargo workspace, so
/// that finding the workspace from a directory behaves as on a user's machine). Removed on drop.
#[derive(Debug)]
pub struct Fixture {
    pub root: PathBuf,
}

impl Fixture {
    /// Writes `text`: files separated by `//- /path` header lines, as rust-analyzer's fixtures are. Paths are relative
    /// to the fixture's root; only blank lines may come before the first header.
    #[track_caller]
    pub fn new(text: &str) -> Fixture {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "migrate-check-fixture-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let mut current: Option<(PathBuf, String)> = None;
        let flush = |current: &mut Option<(PathBuf, String)>| {
            if let Some((path, contents)) = current.take() {
                std::fs::create_dir_all(path.parent().expect("a file has a directory")).expect("create a directory");
                std::fs::write(&path, contents).expect("write a fixture file");
            }
        };
        for line in text.lines() {
            if let Some(path) = line.strip_prefix("//- /") {
                flush(&mut current);
                current = Some((root.join(path.trim()), String::new()));
            } else if current.is_none() && line.trim().is_empty() {
                continue;
            } else {
                let (_, contents) = current.as_mut().expect("a fixture starts with a `//- /path` line");
                contents.push_str(line);
                contents.push('\n');
            }
        }
        flush(&mut current);
        Fixture { root }
    }

    /// A path inside the fixture.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The text of a file of the fixture.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).expect("read a fixture file")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The target directory for the compiles `--fix` runs on fixtures: one of its own under this build's, so that they
/// never wait on the outer build's lock, shared by every fixture so their dependencies build once.
pub fn fixture_target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fix-verify")
}

/// The target directory for the compiles of the fixture in `dir`: its own, under [`fixture_target`].
pub fn target_for(dir: &Path) -> PathBuf {
    fixture_target().join(dir.file_name().expect("a fixture directory has a name"))
}

/// Runs `cargo-migrate-check <args>` in `dir` (the compile `--fix` runs afterwards is offline, in a directory of
/// [`fixture_target`] of this fixture's own: Cargo hashes a path package by its place in its workspace, so two
/// fixtures of the same layout would share artefacts, and a test that changes a crate's text could build against
/// another test's copy of it).
pub fn migrate_check(dir: &Path, args: &[&str]) -> Run {
    let target = target_for(dir);
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-migrate-check"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("the binary runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("output is UTF-8");
    Run { code: output.status.code().expect("not killed"), stdout: text(output.stdout), stderr: text(output.stderr) }
}

/// Runs `git <args>` in `dir`, asserting success.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A workspace where `app` uses `old-core` (in its manifest and its source; `old-core`'s one shim forwards to
/// `new-core`) and `clean` uses `new-core`. `config` is the text of `[workspace.metadata.migrate-check]`;
/// `app_extra` is appended to `app`'s source.
pub fn old_core_workspace(config: &str, app_extra: &str) -> Fixture {
    Fixture::new(&format!(
        r#"
//- /Cargo.toml
[workspace]
resolver = "2"
members = ["crates/*"]

[workspace.metadata.migrate-check]
{config}
//- /crates/old-core/Cargo.toml
[package]
name = "old-core"
version = "1.0.0"
edition = "2021"

[dependencies]
new-core = {{ path = "../new-core" }}
//- /crates/old-core/src/lib.rs
#[deprecated(note = "use new_core::helper")]
pub fn helper() {{
    new_core::helper()
}}
//- /crates/new-core/Cargo.toml
[package]
name = "new-core"
version = "2.0.0"
edition = "2021"
//- /crates/new-core/src/lib.rs
pub fn helper() {{}}
//- /crates/app/Cargo.toml
[package]
name = "app"
version = "0.1.0"
edition = "2021"

[dependencies]
old-core = {{ path = "../old-core" }}
//- /crates/app/src/lib.rs
pub fn run() {{
    old_core::helper();
}}
{app_extra}
//- /crates/clean/Cargo.toml
[package]
name = "clean"
version = "0.1.0"
edition = "2021"

[dependencies]
new-core = {{ path = "../new-core" }}
//- /crates/clean/src/lib.rs
pub use new_core::helper;
"#
    ))
}
