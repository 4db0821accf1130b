//! `cargo xtask test [ARGS...]`: every test of the workspace, on a fresh machine too.
//!
//! First installs what the tests need and the machine lacks, with Debian's packages (`apt-get install -y`, after
//! `apt-get update` when the package lists are empty or the install fails without it): `chromium` for the browser
//! tests of chat-gateway (`crates/chat-gateway/tests/gateway_browser.rs`), when `/usr/bin/chromium` is missing, and
//! `redis-server` for its cluster tests (`crates/chat-gateway/tests/gateway_cluster.rs`), when no `redis-server` is
//! on `PATH`. Those tests start their own `redis-server` on free loopback ports, so a system Redis that the package
//! starts (on a machine whose init system runs services) is stopped again (and disabled, under systemd). Then the npm packages of
//! `crates/chat-gateway/tests/browser` (`npm ci`, when `node_modules` is missing or was installed from another
//! lockfile). Nothing downloads a browser of its own. Then runs `cargo test --workspace ARGS...` and exits with its
//! status.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const HELP: &str = "\
cargo xtask test: install what the tests need, then run every test of the workspace

USAGE:
    cargo xtask test [ARGS...]

Installs what is missing, then runs `cargo test --workspace ARGS...` and exits with its status:
    - Debian's chromium at /usr/bin/chromium, for the browser tests (apt-get install -y chromium; as root)
    - Debian's redis-server on PATH, for the gateway's cluster tests (apt-get install -y redis-server; as root);
      the tests start their own servers, so a system Redis the install started is stopped again
    - the npm packages of crates/chat-gateway/tests/browser (npm ci, from the committed package-lock.json),
      when node_modules is missing or stale; needs Node.js 20 or newer and npm
Every argument goes to `cargo test`, e.g. `cargo xtask test -p chat-gateway -- --nocapture` (with a `-p`, only
that package is tested; without, the whole workspace).

OPTIONS:
    -h, --help      print this help (only as the first argument; `cargo xtask test -- --help` asks cargo test)
";

const CHROMIUM: &str = "/usr/bin/chromium";
const REDIS_SERVER: &str = "redis-server";
/// Where Debian's system Redis listens (`/etc/redis/redis.conf`); the tests never use this port.
const SYSTEM_REDIS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 6379);
/// The oldest Node.js that the pinned playwright-core supports.
const NODE_MAJOR_MIN: u32 = 20;
/// Where `npm ci` last ran from a lockfile, with a copy of that lockfile: `node_modules` is fresh while they match.
const STAMP: &str = ".xtask-package-lock.json";

pub(crate) fn main(args: &[String]) -> ExitCode {
    if args.first().is_some_and(|arg| arg == "-h" || arg == "--help") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let root = crate::project_root();
    if let Err(message) = install(&root) {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // `--workspace` would override a `-p` given (cargo then tests every member): only without one.
    let scope: &[&str] = if names_packages(args) { &[] } else { &["--workspace"] };
    eprintln!(
        "xtask test: cargo test {}",
        scope.iter().copied().chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    );
    match Command::new(cargo).arg("test").args(scope).args(args).current_dir(&root).status() {
        Ok(status) => exit_code(status.code()),
        Err(err) => {
            eprintln!("error: cannot run cargo test: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the arguments for `cargo test`, before any `--` (what follows goes to the test binaries), name packages.
fn names_packages(args: &[String]) -> bool {
    args.iter().take_while(|arg| *arg != "--").any(|arg| {
        arg == "-p" || arg == "--package" || arg.starts_with("--package=") || (arg.starts_with("-p") && arg.len() > 2)
    })
}

/// `cargo test`'s exit code as ours; killed by a signal (no code) is a failure.
fn exit_code(code: Option<i32>) -> ExitCode {
    match code {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).ok().filter(|code| *code != 0).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

fn install(root: &Path) -> Result<(), String> {
    if !Path::new(CHROMIUM).exists() {
        timed("apt-get install -y chromium", || {
            apt_install("chromium", &format!("the browser tests need {CHROMIUM}"))
        })?;
    }
    if !on_path(REDIS_SERVER) {
        timed("apt-get install -y redis-server", install_redis)?;
    }
    check_node()?;
    let dir = root.join("crates/chat-gateway/tests/browser");
    if let Some(why) = node_modules_stale(&dir)? {
        timed(&format!("npm ci in {} ({why})", dir.display()), || npm_ci(&dir))?;
    }
    Ok(())
}

fn timed(what: &str, step: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    eprintln!("xtask test: {what}");
    let started = Instant::now();
    step()?;
    eprintln!("xtask test: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// `apt-get install -y package`, as root; `needed` says what needs it, for the error.
fn apt_install(package: &str, needed: &str) -> Result<(), String> {
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|err| format!("{needed}, and apt-get cannot run ({err}): install Debian's {package}"))
    };
    let update_failed = || format!("`apt-get update` failed (are you root?); {needed}");
    // The package lists of a fresh machine may be empty: nothing to install from before an update.
    if apt_lists_empty(Path::new("/var/lib/apt/lists")) && !apt(&["update"])?.success() {
        return Err(update_failed());
    }
    if apt(&["install", "-y", package])?.success() {
        return Ok(());
    }
    // Stale lists name package versions the mirror no longer has.
    eprintln!("xtask test: apt-get install failed; apt-get update, then again");
    if !apt(&["update"])?.success() {
        return Err(update_failed());
    }
    if !apt(&["install", "-y", package])?.success() {
        return Err(format!("`apt-get install -y {package}` failed: {needed}"));
    }
    Ok(())
}

/// Installs redis-server and leaves no system Redis running that it started: the tests start their own, and a
/// server nobody uses should not outlive the install (nor, under systemd, come back at the next boot).
fn install_redis() -> Result<(), String> {
    let already_listening = listening(SYSTEM_REDIS);
    apt_install(REDIS_SERVER, "the gateway's cluster tests need redis-server on PATH")?;
    if !on_path(REDIS_SERVER) {
        return Err(format!("apt-get installed redis-server, yet no `{REDIS_SERVER}` is on PATH"));
    }
    // Debian's package starts its service where the init system allows it (not under a policy-rc.d that forbids
    // it, as in most containers). A server that was already listening is someone else's: leave it alone.
    if already_listening || !listening(SYSTEM_REDIS) {
        return Ok(());
    }
    eprintln!("xtask test: stopping the system redis-server that the install started (the tests start their own)");
    let stop: &[&str] = if Path::new("/run/systemd/system").is_dir() {
        &["systemctl", "disable", "--now", "redis-server"]
    } else {
        &["service", "redis-server", "stop"]
    };
    let stopped = Command::new(stop[0]).args(&stop[1..]).status().is_ok_and(|status| status.success());
    if !stopped || listening(SYSTEM_REDIS) {
        // Not fatal: the tests use free ports of their own, never this one.
        eprintln!("xtask test: warning: `{}` did not stop the system Redis on {SYSTEM_REDIS}", stop.join(" "));
    }
    Ok(())
}

/// Whether something accepts TCP connections on `addr`.
fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Whether `program` is an executable file in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program))))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Whether apt has no package list yet (no `*_Packages` file in `lists`, compressed or not: apt keeps them as
/// `*_Packages.lz4` where it is configured to).
fn apt_lists_empty(lists: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(lists) else { return true };
    !entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.ends_with("_Packages") || name.contains("_Packages.")
    })
}

fn check_node() -> Result<(), String> {
    let fix = format!("the browser tests need Node.js {NODE_MAJOR_MIN} or newer and npm on PATH");
    let output =
        Command::new("node").arg("--version").output().map_err(|err| format!("cannot run node ({err}): {fix}"))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    match node_major(&version) {
        Some(major) if major >= NODE_MAJOR_MIN => {}
        _ => return Err(format!("node --version says `{version}`: {fix}")),
    }
    match Command::new("npm").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err(format!("cannot run npm: {fix}")),
    }
}

/// `v20.20.2` -> 20.
fn node_major(version: &str) -> Option<u32> {
    version.strip_prefix('v')?.split('.').next()?.parse().ok()
}

/// `None` when `dir/node_modules` was installed by `npm ci` from the current `dir/package-lock.json`, else why not.
fn node_modules_stale(dir: &Path) -> Result<Option<&'static str>, String> {
    let lockfile = dir.join("package-lock.json");
    let lock = std::fs::read(&lockfile).map_err(|err| format!("cannot read {}: {err}", lockfile.display()))?;
    let modules = dir.join("node_modules");
    if !modules.is_dir() {
        return Ok(Some("node_modules is missing"));
    }
    match std::fs::read(stamp(dir)) {
        Ok(installed) if installed == lock => Ok(None),
        Ok(_) => Ok(Some("package-lock.json changed since the last npm ci")),
        Err(_) => Ok(Some("node_modules was not installed by cargo xtask test")),
    }
}

fn stamp(dir: &Path) -> PathBuf {
    dir.join("node_modules").join(STAMP)
}

fn npm_ci(dir: &Path) -> Result<(), String> {
    // --ignore-scripts: no package runs code at install time (playwright-core needs none, and downloads nothing).
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(dir)
        .status()
        .map_err(|err| format!("cannot run npm: {err}"))?;
    if !status.success() {
        return Err(format!("`npm ci` failed in {}", dir.display()));
    }
    let lock =
        std::fs::read(dir.join("package-lock.json")).map_err(|err| format!("cannot read the lockfile: {err}"))?;
    std::fs::write(stamp(dir), lock).map_err(|err| format!("cannot write {}: {err}", stamp(dir).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_given_narrows_the_run() {
        let args = |text: &str| text.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert!(names_packages(&args("-p chat-gateway")));
        assert!(names_packages(&args("--package=xtask --test a")));
        assert!(names_packages(&args("-pxtask")));
        assert!(!names_packages(&args("--test gateway_cluster")));
        assert!(!names_packages(&args("-- -p")), "after `--`, for the test binaries");
    }

    /// A fresh empty directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn node_modules_is_stale_until_installed_from_this_lockfile() {
        let dir = scratch("stale");
        assert!(node_modules_stale(&dir).unwrap_err().contains("package-lock.json"));
        std::fs::write(dir.join("package-lock.json"), "{\"v\":1}").unwrap();
        assert_eq!(node_modules_stale(&dir).unwrap(), Some("node_modules is missing"));
        std::fs::create_dir(dir.join("node_modules")).unwrap();
        assert_eq!(node_modules_stale(&dir).unwrap(), Some("node_modules was not installed by cargo xtask test"));
        std::fs::write(stamp(&dir), "{\"v\":1}").unwrap();
        assert_eq!(node_modules_stale(&dir).unwrap(), None);
        std::fs::write(dir.join("package-lock.json"), "{\"v\":2}").unwrap();
        assert_eq!(node_modules_stale(&dir).unwrap(), Some("package-lock.json changed since the last npm ci"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn apt_lists_are_empty_without_a_packages_file() {
        let dir = scratch("apt");
        assert!(apt_lists_empty(&dir.join("missing")));
        assert!(apt_lists_empty(&dir));
        std::fs::write(dir.join("lock"), "").unwrap();
        assert!(apt_lists_empty(&dir));
        std::fs::write(dir.join("mirror_debian_dists_bookworm_InRelease"), "").unwrap();
        assert!(apt_lists_empty(&dir));
        std::fs::write(dir.join("mirror_debian_dists_bookworm_main_binary-amd64_Packages"), "").unwrap();
        assert!(!apt_lists_empty(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        // Compressed lists count too.
        let dir = scratch("apt-lz4");
        std::fs::write(dir.join("mirror_debian_dists_bookworm_main_binary-amd64_Packages.lz4"), "").unwrap();
        assert!(!apt_lists_empty(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_programs_on_path() {
        // Whatever runs this test runs cargo, and `sh` is on every unix PATH.
        #[cfg(unix)]
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-for-xtask-test"));
    }

    #[test]
    fn reads_node_major_versions() {
        assert_eq!(node_major("v20.20.2"), Some(20));
        assert_eq!(node_major("v18.19.0"), Some(18));
        assert_eq!(node_major("20.1.0"), None);
        assert_eq!(node_major(""), None);
    }

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_code(Some(0)), ExitCode::SUCCESS);
        assert_eq!(exit_code(Some(101)), ExitCode::from(101));
        assert_eq!(exit_code(Some(256)), ExitCode::from(1));
        assert_eq!(exit_code(None), ExitCode::FAILURE);
    }
}
