//! What the xtask integration tests share: the workspace root and a way to run the built binary.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The root of this workspace.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Runs `xtask <command> <args>` from the workspace root; returns the exit code and stdout + stderr.
pub fn xtask(command: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg(command)
        .args(args)
        .current_dir(root())
        .output()
        .expect("cannot run xtask");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().expect("xtask was killed"), text)
}
