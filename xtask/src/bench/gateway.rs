//! The chat-gateway load figures: the gateway and a bare tokio-tungstenite server (`gateway-bare`, the transport's
//! limit), each run as its own process, under load from a third (`gateway-load`), alternating, medians.
//!
//! Sizes: 100, 1,000 and 10,000 users, closed loop (3 runs in flight per user, `echo` / `tools` / `slow 3`) for 5 s;
//! paced (2 runs per user per second at 1,000 users, 0.5 at 10,000: loads both servers sustain, so that the tail is
//! theirs rather than a queue of runs); three repetitions per server; plus the server's memory per idle connection
//! at 10,000 idle connections. `--quick`: 50 users for 1 s (closed loop, and paced at 2 per second) and 100 idle
//! connections, once each. Every server process is started fresh for each run and
//! killed when the run ends, however it ends (a guard kills it on every return path and on a panic).
//!
//! Then, where `redis-server` is installed, the gateway with a shared event log in Redis beside itself with its
//! in-memory log (the [`redis`] module, issue 17).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Row, cargo};

mod redis;

/// How the bare server is configured: as the gateway's transport is (`READ_BUFFER` 2 KiB and `WRITE_BUFFER` 8 KiB in
/// `crates/chat-gateway/src/server.rs`, a ping after 20 s of silence and a close after 20 s more, a 10 s write
/// deadline; `TCP_NODELAY`, its default, as the gateway's listener sets it). Keep these in step with the gateway.
const BARE_ARGS: &[&str] =
    &["--read-buffer", "2048", "--write-buffer", "8192", "--idle-timeout", "20", "--write-timeout", "10"];

/// The gateway, as `chat-gateway serve` runs by default, but with its metrics on a free port (the default, 9464, may
/// be taken by another gateway on the machine).
const GATEWAY_ARGS: &[&str] = &["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"];

/// How long a server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Targets (DESIGN.md, "Performance targets"), which hold at 1,000 users and more.
const P99_TARGET: f64 = 1.3;
const CPU_TARGET: f64 = 1.15;
const FAIRNESS_TARGET: f64 = 0.5;
const IDLE_TARGET_BYTES: f64 = 16.0 * 1024.0;

/// The two servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Gateway,
    Bare,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Gateway => "gateway",
            Side::Bare => "bare",
        }
    }
}

struct Binaries {
    gateway: PathBuf,
    bare: PathBuf,
    load: PathBuf,
}

/// Builds the three release binaries into `target_dir`.
fn build(target_dir: &Path) -> Result<Binaries, String> {
    eprintln!("bench: building chat-gateway, gateway-bare and gateway-load with --release");
    let status = Command::new(cargo())
        .current_dir(crate::project_root())
        .args(["build", "--release", "--quiet", "-p", "chat-gateway", "-p", "gateway-load", "--bins", "--target-dir"])
        .arg(target_dir)
        .status()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !status.success() {
        return Err("`cargo build --release -p chat-gateway -p gateway-load --bins` failed".to_owned());
    }
    let release = target_dir.join("release");
    let binary = |name: &str| release.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    Ok(Binaries { gateway: binary("chat-gateway"), bare: binary("gateway-bare"), load: binary("gateway-load") })
}

/// A server process, killed (and reaped) when this is dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `program` and waits for its `listening on ADDR` line on stderr.
    fn start(program: &Path, args: &[&str], secret: &str) -> Result<Server, String> {
        let mut child = Command::new(program)
            .args(args)
            .env("CHAT_GATEWAY_SECRET", secret)
            .env_remove("CHAT_GATEWAY_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", program.display()))?;
        let stderr = child.stderr.take();
        // From here on, every way out kills the process.
        let mut server = Server { child, addr: String::new() };
        let (lines_tx, lines) = mpsc::channel();
        if let Some(stderr) = stderr {
            // Reads every line until the process ends, so the pipe never fills; the first ones go to `lines`.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let _ = lines_tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = listening_on(&line) {
                        server.addr = addr;
                        return Ok(server);
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{} did not say where it listens within {START_TIMEOUT:?}", program.display()));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().map(|status| status.to_string()).unwrap_or_default();
                    return Err(format!("{} exited ({status}): {}", program.display(), seen.join(" / ")));
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The address in a `listening on 127.0.0.1:PORT` log line (the gateway's comes after a timestamp and a level).
fn listening_on(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let addr = rest.split_whitespace().next()?;
    addr.parse::<std::net::SocketAddr>().ok().map(|addr| addr.to_string())
}

/// The `LOAD` lines of one run of the load generator, and whether every check passed.
struct Load {
    values: HashMap<String, String>,
    passed: bool,
}

impl Load {
    fn number(&self, key: &str) -> Option<f64> {
        self.values.get(key)?.parse().ok()
    }
}

/// Runs the load generator against `server`, with `args`, within `bound`; its table goes to stderr.
fn load(
    binaries: &Binaries,
    server: &Server,
    label: &str,
    args: &[String],
    secret: &str,
    bound: Duration,
) -> Result<Load, String> {
    let mut all = vec![
        "--url".to_owned(),
        format!("ws://{}/v1/ws", server.addr),
        "--server-pid".to_owned(),
        server.pid().to_string(),
    ];
    all.extend(args.iter().cloned());
    run_load(binaries, label, &all, secret, bound)
}

/// Runs the load generator with `args` (its `--url` among them) and `--label label`, within `bound`; its table goes
/// to stderr.
fn run_load(binaries: &Binaries, label: &str, args: &[String], secret: &str, bound: Duration) -> Result<Load, String> {
    let mut child = Command::new(&binaries.load)
        .args(args)
        .args(["--label", label])
        .env("CHAT_GATEWAY_SECRET", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", binaries.load.display()))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + bound;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("gateway-load did not finish within {bound:?}"));
            }
            Err(err) => return Err(format!("cannot wait for gateway-load: {err}")),
        }
    };
    let text = reader.join().unwrap_or_default();
    let mut values = HashMap::new();
    for line in text.lines() {
        match line.strip_prefix("LOAD\t").and_then(|rest| rest.split_once('\t')) {
            Some((key, value)) => {
                values.insert(key.to_owned(), value.to_owned());
            }
            None => eprintln!("  {line}"),
        }
    }
    match status.code() {
        Some(0) => Ok(Load { values, passed: true }),
        // Checks failed: the figures are still there.
        Some(1) if values.contains_key("failures") => Ok(Load { values, passed: false }),
        _ => Err(format!("gateway-load against the {label} server failed ({status})")),
    }
}

/// A fresh server for `side`, one load run against it, the server killed.
fn one_run(binaries: &Binaries, side: Side, args: &[String], secret: &str, bound: Duration) -> Result<Load, String> {
    let server = match side {
        Side::Gateway => Server::start(&binaries.gateway, GATEWAY_ARGS, secret)?,
        Side::Bare => Server::start(&binaries.bare, BARE_ARGS, secret)?,
    };
    load(binaries, &server, side.label(), args, secret, bound)
    // `server` is dropped here: killed.
}

/// `runs` repetitions against both servers, alternating (the order flips every repetition), each side's loads.
fn alternate(
    binaries: &Binaries,
    args: &[String],
    runs: usize,
    secret: &str,
    bound: Duration,
) -> Result<(Vec<Load>, Vec<Load>), String> {
    let (mut gateway, mut bare) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let order = if run % 2 == 0 { [Side::Gateway, Side::Bare] } else { [Side::Bare, Side::Gateway] };
        for side in order {
            let load = one_run(binaries, side, args, secret, bound)?;
            match side {
                Side::Gateway => gateway.push(load),
                Side::Bare => bare.push(load),
            }
        }
    }
    Ok((gateway, bare))
}

/// The median of `key` over the loads (`NaN` if none has it).
fn median_of(loads: &[Load], key: &str) -> f64 {
    let mut values: Vec<f64> = loads.iter().filter_map(|load| load.number(key)).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied().unwrap_or(f64::NAN)
}

fn sum_of(loads: &[Load], key: &str) -> u64 {
    loads.iter().filter_map(|load| load.number(key)).sum::<f64>() as u64
}

fn yes(met: bool) -> String {
    if met { "yes" } else { "no" }.to_owned()
}

/// A figure comparing the gateway's median with the bare server's; `target` `None` for a report.
fn ratio_row(figure: String, measured: String, ratio: f64, target: Option<(&str, bool)>) -> Row {
    let (target, met) = match target {
        Some((target, met)) => (target.to_owned(), yes(met)),
        None => ("report".to_owned(), "n/a".to_owned()),
    };
    Row { figure, measured, ratio: format!("{ratio:.2}"), target, met }
}

/// Which of the gateway's figures to run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parts {
    /// The gateway beside the bare server (issue 16).
    pub(super) load: bool,
    /// The gateway with its event log in Redis beside itself with the in-memory log (issue 17).
    pub(super) redis: bool,
}

/// Runs the `parts` asked for and appends the rows. `Ok(false)` if an event was lost, misordered or crossed users.
pub(super) fn figures(quick: bool, target_dir: &Path, parts: Parts, rows: &mut Vec<Row>) -> Result<bool, String> {
    let binaries = build(target_dir)?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |now| now.as_nanos());
    let secret = format!("bench-{nanos:032x}-{:08x}", std::process::id());
    let mut all_passed = true;
    if parts.load {
        match load_figures(quick, &binaries, &secret, rows) {
            Ok(passed) => all_passed &= passed,
            // The Redis figures still run.
            Err(message) if parts.redis => {
                eprintln!("bench: chat-gateway load failed: {message}");
                rows.push(Row::skipped("chat-gateway load", format!("failed: {message}")));
            }
            Err(message) => return Err(message),
        }
    }
    if parts.redis {
        all_passed &= redis::figures(quick, &binaries, &secret, rows);
    }
    Ok(all_passed)
}

/// The gateway beside the bare server.
fn load_figures(quick: bool, binaries: &Binaries, secret: &str, rows: &mut Vec<Row>) -> Result<bool, String> {
    let (sizes, runs, seconds, idle): (&[usize], usize, f64, usize) =
        if quick { (&[50], 1, 1.0, 100) } else { (&[100, 1000, 10_000], 3, 5.0, 10_000) };
    let mut all_passed = true;
    for &users in sizes {
        eprintln!("bench: chat-gateway load, {users} users, {seconds} s, {runs} runs per server, alternating");
        let args: Vec<String> =
            ["--users".to_owned(), users.to_string(), "--seconds".to_owned(), seconds.to_string()].into();
        // Connecting, the runs, the finish timeout and closing, with room to spare.
        let bound = Duration::from_secs_f64(seconds) + Duration::from_secs(120 + users as u64 / 50);
        let (gateway, bare) = alternate(binaries, &args, runs, secret, bound)?;
        let first = rows.len();
        let passed = gateway.iter().chain(&bare).all(|load| load.passed);
        all_passed &= passed;
        let targeted = users >= 1000;
        let target = |target: &'static str, met: bool| targeted.then_some((target, met));
        let n = format!("{users} users");

        let counts = |loads: &[Load]| {
            format!(
                "{} / {} / {}",
                sum_of(loads, "lost") + sum_of(loads, "gaps"),
                sum_of(loads, "misordered"),
                sum_of(loads, "cross_user")
            )
        };
        let failures = sum_of(&gateway, "failures") + sum_of(&bare, "failures");
        rows.push(Row {
            figure: format!("gateway load: lost / misordered / cross-user events, {n}"),
            measured: format!(
                "gateway {}, bare {} (all {runs} runs; other failed checks: {})",
                counts(&gateway),
                counts(&bare),
                failures.saturating_sub(
                    ["lost", "gaps", "misordered", "cross_user"]
                        .iter()
                        .map(|key| sum_of(&gateway, key) + sum_of(&bare, key))
                        .sum()
                )
            ),
            ratio: failures.to_string(),
            target: "0".to_owned(),
            met: yes(passed),
        });

        let (p99, bare_p99) = (median_of(&gateway, "p99_ms"), median_of(&bare, "p99_ms"));
        let (p50, bare_p50) = (median_of(&gateway, "p50_ms"), median_of(&bare, "p50_ms"));
        let p99_ratio = p99 / bare_p99;
        rows.push(ratio_row(
            format!("gateway / bare p99 run -> agent_started, {n}"),
            format!("{p99:.1} ms vs {bare_p99:.1} ms (p50 {p50:.1} vs {bare_p50:.1} ms; median of {runs})"),
            p99_ratio,
            target("<= 1.3x", p99_ratio <= P99_TARGET),
        ));

        let (cpu, bare_cpu) =
            (median_of(&gateway, "server_cpu_us_per_event"), median_of(&bare, "server_cpu_us_per_event"));
        let cpu_ratio = cpu / bare_cpu;
        rows.push(ratio_row(
            format!("gateway / bare server CPU per event, {n}"),
            format!("{cpu:.2} us vs {bare_cpu:.2} us (utime+stime / events received; median of {runs})"),
            cpu_ratio,
            target("<= 1.15x", cpu_ratio <= CPU_TARGET),
        ));

        let (rate, bare_rate) = (median_of(&gateway, "events_per_s"), median_of(&bare, "events_per_s"));
        rows.push(ratio_row(
            format!("gateway / bare events/s, {n}"),
            format!("{rate:.0} vs {bare_rate:.0} events/s (median of {runs})"),
            rate / bare_rate,
            None,
        ));

        let fairness = median_of(&gateway, "fairness");
        rows.push(ratio_row(
            format!("gateway slowest user / median user (runs completed), {n}"),
            format!(
                "{:.0} vs {:.0} runs (bare: {:.2}; median of {runs})",
                median_of(&gateway, "runs_per_user_min"),
                median_of(&gateway, "runs_per_user_median"),
                median_of(&bare, "fairness")
            ),
            fairness,
            target(">= 0.5", fairness >= FAIRNESS_TARGET),
        ));

        let (rss, bare_rss) = (median_of(&gateway, "server_rss_kib"), median_of(&bare, "server_rss_kib"));
        rows.push(ratio_row(
            format!("gateway / bare server RSS after the load, {n}"),
            format!("{:.1} MiB vs {:.1} MiB", rss / 1024.0, bare_rss / 1024.0),
            rss / bare_rss,
            None,
        ));
        for row in &rows[first..] {
            println!("{}", row.bench_line());
        }
    }

    // Paced: a load both servers sustain, so that the tail is the servers' and not a queue of runs.
    let paced: &[(usize, f64)] = if quick { &[(50, 2.0)] } else { &[(1000, 2.0), (10_000, 0.5)] };
    for &(users, rate) in paced {
        eprintln!("bench: chat-gateway paced load, {users} users, {rate} runs per user per second, {seconds} s");
        let args: Vec<String> =
            ["--users", &users.to_string(), "--rate", &rate.to_string(), "--seconds", &seconds.to_string()]
                .map(str::to_owned)
                .into();
        let bound = Duration::from_secs_f64(seconds) + Duration::from_secs(120 + users as u64 / 50);
        let (gateway, bare) = alternate(binaries, &args, runs, secret, bound)?;
        let passed = gateway.iter().chain(&bare).all(|load| load.passed);
        all_passed &= passed;
        let (p99, bare_p99) = (median_of(&gateway, "p99_ms"), median_of(&bare, "p99_ms"));
        let (p50, bare_p50) = (median_of(&gateway, "p50_ms"), median_of(&bare, "p50_ms"));
        let (cpu, bare_cpu) =
            (median_of(&gateway, "server_cpu_us_per_event"), median_of(&bare, "server_cpu_us_per_event"));
        let failures = sum_of(&gateway, "failures") + sum_of(&bare, "failures");
        let ratio = p99 / bare_p99;
        let row = ratio_row(
            format!("gateway / bare p99 run -> agent_started, paced {rate} runs per user per second, {users} users"),
            format!(
                "{p99:.2} ms vs {bare_p99:.2} ms (p50 {p50:.2} vs {bare_p50:.2} ms; CPU per event {cpu:.2} vs \
                 {bare_cpu:.2} us; {failures} failed checks; median of {runs})"
            ),
            ratio,
            (users >= 1000).then_some(("<= 1.3x", ratio <= P99_TARGET && passed)),
        );
        println!("{}", row.bench_line());
        rows.push(row);
    }

    eprintln!("bench: chat-gateway idle memory, {idle} connections, {runs} runs per server, alternating");
    let args: Vec<String> = ["--idle".to_owned(), idle.to_string()].into();
    let bound = Duration::from_secs(120 + idle as u64 / 50);
    let (gateway, bare) = alternate(binaries, &args, runs, secret, bound)?;
    let passed = gateway.iter().chain(&bare).all(|load| load.passed);
    all_passed &= passed;
    let (bytes, bare_bytes) =
        (median_of(&gateway, "idle_bytes_per_connection"), median_of(&bare, "idle_bytes_per_connection"));
    let row = Row {
        figure: format!("gateway memory per idle connection, {idle} connections"),
        measured: format!(
            "{bytes:.0} B vs {bare_bytes:.0} B for the bare server (server RSS growth / connections; median of {runs}{})",
            if passed { "" } else { "; some connections failed" }
        ),
        ratio: format!("{bytes:.0}"),
        target: "<= 16384 B".to_owned(),
        met: yes(bytes <= IDLE_TARGET_BYTES),
    };
    println!("{}", row.bench_line());
    rows.push(row);
    Ok(all_passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_both_servers_log_lines() {
        let gateway = "2026-12-01T14:05:45.247981Z  INFO chat_gateway::server: listening on 127.0.0.1:46853";
        assert_eq!(listening_on(gateway).as_deref(), Some("127.0.0.1:46853"));
        assert_eq!(listening_on("listening on 127.0.0.1:9 ").as_deref(), Some("127.0.0.1:9"));
        assert_eq!(listening_on("listening on nowhere"), None);
        assert_eq!(listening_on("starting"), None);
    }

    #[test]
    fn medians_of_loads() {
        let load = |p99: &str| Load { values: HashMap::from([("p99_ms".to_owned(), p99.to_owned())]), passed: true };
        assert_eq!(median_of(&[load("3"), load("1"), load("2")], "p99_ms"), 2.0);
        assert_eq!(median_of(&[load("4"), load("1")], "p99_ms"), 1.0);
        assert!(median_of(&[], "p99_ms").is_nan());
        assert_eq!(sum_of(&[load("1.5"), load("2.5")], "p99_ms"), 4);
    }
}
