//! `--fix`'s safety rails, after `cargo fix`'s: version control before writing, all files or none, and a compile of
//! the result that backs every file out when it fails. Also rustfmt, for files that were formatted before.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::diag::Diagnostic;
use crate::render::plural;

/// What the user allows `--fix` to write over.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// Write even if the work tree has uncommitted changes (`--allow-dirty`).
    pub dirty: bool,
    /// Write even if the index has staged changes, as long as nothing else is uncommitted (`--allow-staged`).
    pub staged: bool,
    /// Write even outside version control, or over files that git ignores (`--allow-no-vcs`).
    pub no_vcs: bool,
}

fn git(root: &Path, args: &[&str]) -> Option<std::process::Output> {
    Command::new("git").arg("-C").arg(root).args(args).stderr(Stdio::null()).output().ok()
}

/// Refuses to write `files` (absolute) under `root` unless version control can give them back: the root is in a git
/// work tree, none of the files is ignored by git, and the work tree has no uncommitted changes under the root.
/// `shown` is the root manifest as the user named it, for the message.
pub(crate) fn ensure_vcs(root: &Path, files: &[PathBuf], allow: Allow, shown: &str) -> Result<(), Diagnostic> {
    let refuse = |message: String| Err(Diagnostic::error("fix", message).in_file(shown.to_owned()));
    let in_work_tree = git(root, &["rev-parse", "--is-inside-work-tree"])
        .is_some_and(|out| out.status.success() && out.stdout.starts_with(b"true"));
    if !in_work_tree {
        if allow.no_vcs {
            return Ok(());
        }
        return refuse(
            "the workspace is not in a git work tree, so nothing could give the files back if the fix goes wrong; \
             put it under version control and commit, or pass --allow-no-vcs to fix anyway"
                .to_owned(),
        );
    }
    if !allow.no_vcs {
        let mut args = vec!["check-ignore".to_owned(), "--".to_owned()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Some(out) = git(root, &args).filter(|out| out.status.success()) {
            let ignored = String::from_utf8_lossy(&out.stdout);
            let first = ignored.lines().next().unwrap_or_default();
            let first =
                Path::new(first).strip_prefix(root).map_or_else(|_| first.to_owned(), |p| p.display().to_string());
            return refuse(format!(
                "git ignores `{first}`, which --fix would rewrite, so version control could not give it back; \
                 commit the workspace where git tracks it, or pass --allow-no-vcs to fix anyway"
            ));
        }
    }
    if allow.dirty {
        return Ok(());
    }
    let Some(out) = git(root, &["status", "--porcelain", "--untracked-files=all", "--", "."]) else {
        return Ok(());
    };
    let status = String::from_utf8_lossy(&out.stdout);
    // `XY path`: X is the index, Y the work tree. Staged-only changes pass with --allow-staged.
    let dirty: Vec<&str> = status
        .lines()
        .filter(|l| l.len() > 3)
        .filter(|l| !(allow.staged && l.as_bytes()[1] == b' '))
        .map(|l| l[3..].trim())
        .collect();
    match dirty.first() {
        None => Ok(()),
        Some(first) => {
            let staged = if allow.staged { "" } else { " (--allow-staged for changes already staged)" };
            refuse(format!(
                "the git work tree has uncommitted changes ({}, first `{first}`); commit them, or pass \
                 --allow-dirty{staged} to fix anyway",
                plural(dirty.len(), "file")
            ))
        }
    }
}

/// The files written by [`write_all`], with what they held before, so that they can be put back.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// (path, text before; `None` when the file did not exist).
    saved: Vec<(PathBuf, Option<String>)>,
}

impl Written {
    /// Also saves `path` (which the compile afterwards may change, such as `Cargo.lock`) so that a rollback restores it.
    pub(crate) fn save(&mut self, path: PathBuf) {
        if !self.saved.iter().any(|(p, _)| *p == path) {
            let text = std::fs::read_to_string(&path).ok();
            self.saved.push((path, text));
        }
    }

    /// Puts every file back as it was. Returns the files that could not be restored, with the error.
    pub(crate) fn restore(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for (path, text) in self.saved.iter().rev() {
            let result = match text {
                Some(text) => write_atomically(path, text),
                None => match std::fs::remove_file(path) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        Err(Diagnostic::error("io", format!("cannot remove: {err}")))
                    }
                    _ => Ok(()),
                },
            };
            if let Err(err) = result {
                failed.push(format!("{}: {}", path.display(), err.message));
            }
        }
        failed
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.migrate-fix.tmp"))
}

fn write_temp(path: &Path, contents: &str) -> std::io::Result<PathBuf> {
    let temp = temp_path(path);
    let result = std::fs::write(&temp, contents).and_then(|()| match std::fs::metadata(path) {
        Ok(meta) => std::fs::set_permissions(&temp, meta.permissions()),
        Err(_) => Ok(()),
    });
    match result {
        Ok(()) => Ok(temp),
        Err(err) => {
            let _ = std::fs::remove_file(&temp);
            Err(err)
        }
    }
}

/// Writes one file through a temporary file next to it and a rename.
pub(crate) fn write_atomically(path: &Path, contents: &str) -> Result<(), Diagnostic> {
    write_temp(path, contents).and_then(|temp| std::fs::rename(&temp, path)).map_err(|err| {
        let _ = std::fs::remove_file(temp_path(path));
        Diagnostic::error("io", format!("cannot write: {err}")).in_file(path.display().to_string())
    })
}

/// Writes every `(path, old, new)` or none: each new text goes to a temporary file next to its file first (which
/// proves the directory writable), a file that is read-only is refused, and only then are the temporary files renamed
/// over the originals. If a rename fails, the files already renamed are put back. `rel` names a path for messages.
pub(crate) fn write_all(files: &[(&Path, &str, &str)], rel: impl Fn(&Path) -> String) -> Result<Written, Diagnostic> {
    let fail = |path: &Path, what: String| {
        Diagnostic::error("io", format!("cannot write: {what}; nothing was written")).in_file(rel(path))
    };
    for (path, _, _) in files {
        if std::fs::metadata(path).is_ok_and(|meta| meta.permissions().readonly()) {
            return Err(fail(path, "the file is read-only".to_owned()));
        }
    }
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    for (path, _, new) in files {
        match write_temp(path, new) {
            Ok(temp) => temps.push(temp),
            Err(err) => {
                temps.iter().for_each(|t| _ = std::fs::remove_file(t));
                return Err(fail(path, err.to_string()));
            }
        }
    }
    let mut written = Written::default();
    for ((path, old, _), temp) in files.iter().zip(&temps) {
        if let Err(err) = std::fs::rename(temp, path) {
            let failed = written.restore();
            temps.iter().for_each(|t| _ = std::fs::remove_file(t));
            let mut what = err.to_string();
            if !failed.is_empty() {
                what = format!(
                    "{what}, and {} could not be restored: {}",
                    plural(failed.len(), "file"),
                    failed.join("; ")
                );
                return Err(Diagnostic::error("io", format!("cannot write: {what}")).in_file(rel(path)));
            }
            return Err(fail(path, what));
        }
        written.saved.push((path.to_path_buf(), Some((*old).to_owned())));
    }
    Ok(written)
}

/// The cargo to compile with: `$CARGO` (the cargo that runs `cargo migrate-check`), else `cargo` on the `PATH`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Compiles the workspace at `root` as a reviewer would: `cargo check --workspace --all-targets`, then the doctests
/// of `doctest_packages`. Returns `Err` with the compiler's first errors when either fails.
pub(crate) fn verify(root: &Path, doctest_packages: &[String]) -> Result<(), String> {
    let manifest = root.join("Cargo.toml");
    let output = cargo()
        .args(["check", "--workspace", "--all-targets", "--message-format=short", "--manifest-path"])
        .arg(&manifest)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !output.status.success() {
        return Err(first_errors("cargo check --workspace --all-targets", &String::from_utf8_lossy(&output.stderr)));
    }
    if doctest_packages.is_empty() {
        return Ok(());
    }
    let mut command = cargo();
    command.args(["test", "--doc", "--manifest-path"]).arg(&manifest).current_dir(root).stdin(Stdio::null());
    for package in doctest_packages {
        command.args(["-p", package]);
    }
    let output = command.output().map_err(|err| format!("cannot run cargo: {err}"))?;
    if !output.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        return Err(first_errors("cargo test --doc", &text));
    }
    Ok(())
}

/// The first few error lines of a compiler's output, one per line, behind `what` failed.
fn first_errors(what: &str, output: &str) -> String {
    let errors: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| l.contains("error") && !l.starts_with("error: could not compile") && !l.starts_with("warning"))
        .take(5)
        .collect();
    let errors = if errors.is_empty() { output.lines().rev().take(5).collect::<Vec<_>>() } else { errors };
    format!("`{what}` failed:\n  {}", errors.join("\n  "))
}

/// rustfmt, when it is installed.
#[derive(Debug)]
pub(crate) struct Rustfmt {
    program: PathBuf,
}

impl Rustfmt {
    /// Finds `rustfmt` (`$RUSTFMT`, else on the `PATH`); `None` when it does not run.
    pub(crate) fn find() -> Option<Rustfmt> {
        let program = std::env::var_os("RUSTFMT").map_or_else(|| PathBuf::from("rustfmt"), PathBuf::from);
        let runs = Command::new(&program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        runs.then_some(Rustfmt { program })
    }

    /// `text` formatted as rustfmt would format a file in `dir` (whose `rustfmt.toml` applies) with `edition`, or
    /// `None` when rustfmt fails on it (it does not parse, say). (`rustfmt --check` on standard input exits 0 either
    /// way, so a file is clean when this gives it back unchanged.)
    pub(crate) fn format(&self, text: &str, dir: &Path, edition: &str) -> Option<String> {
        let mut command = Command::new(&self.program);
        command.args(["--edition", edition, "--emit", "stdout"]);
        // On standard input rustfmt does not look for the file's configuration: name it, as `cargo fmt` would find it.
        let config = dir.ancestors().find_map(|dir| {
            ["rustfmt.toml", ".rustfmt.toml"].into_iter().map(|name| dir.join(name)).find(|path| path.is_file())
        });
        if let Some(config) = config {
            command.arg("--config-path").arg(config);
        }
        let mut child =
            command.current_dir(dir).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
        let mut stdin = child.stdin.take()?;
        let input = text.to_owned();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output().ok()?;
        let _ = writer.join();
        (output.status.success()).then(|| String::from_utf8(output.stdout).ok()).flatten()
    }
}
