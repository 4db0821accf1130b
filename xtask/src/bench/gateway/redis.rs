//! The gateway with its event log in Redis (`serve --event-log redis://...`, issue 17) beside itself with the
//! in-memory log, each its own process, with a fresh `redis-server` of its own for every run.
//!
//! - **Live**: the same closed-loop `gateway-load` run (100 and 1,000 users for 5 s; `--quick`: 20 users for 1 s)
//!   against `chat-gateway serve` and `chat-gateway serve --event-log redis://127.0.0.1:P --node-id a`, alternating
//!   (the order flips every repetition), three repetitions each (`--quick`: one), medians. `redis-server`'s CPU is
//!   read beside the gateway's (`gateway-load --store-pid`).
//! - **Replay and follow** (`gateway-load --replay`): one session of 4,000 messages (`--quick`: 400) made on node A,
//!   then resumed with `after=0` on A (its memory) and on node B (a second `serve --event-log` process on the same
//!   Redis, reading the Stream with `XRANGE`), five times each, alternating; then `echo` runs one at a time on each,
//!   200 per connection (`--quick`: 20), for the time from `run` to `agent_started`. The same against a gateway
//!   without Redis (A alone), for the cost of the Redis write on the owner's path. Three repetitions of the pair,
//!   alternating (`--quick`: one).
//!
//! Skipped, with one line saying so, where `redis-server` is not on the `PATH`. Every Redis listens on a free
//! loopback port (never 6379) with no persistence (`--save "" --appendonly no`) and its files in a directory of its
//! own, and is killed, its directory removed, when its run ends, however it ends.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Binaries, GATEWAY_ARGS, Load, Row, Server, load, median_of, ratio_row, run_load, sum_of, yes};

/// What the table and the log say where `redis-server` is missing.
const SKIPPED: &str = "skipped: redis-server not found (cargo xtask test installs it)";

/// How long a `redis-server` may take to answer `PING`.
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Tries at a free port (another process may take the one picked before Redis binds it).
const REDIS_START_ATTEMPTS: usize = 3;

/// The port no benchmark uses: a developer's own Redis may be there.
const DEFAULT_REDIS_PORT: u16 = 6379;

/// `program` in one of the `PATH`'s directories.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|meta| {
            use std::os::unix::fs::PermissionsExt as _;
            meta.is_file() && meta.permissions().mode() & 0o111 != 0
        })
    })
}

/// A `redis-server` of the benchmark's own: killed and its directory removed when this is dropped.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static REDIS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// A free loopback port, not Redis's default one.
fn free_port() -> Result<u16, String> {
    for _ in 0..10 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|err| format!("no free port: {err}"))?;
        let port = listener.local_addr().map_err(|err| err.to_string())?.port();
        if port != DEFAULT_REDIS_PORT {
            return Ok(port);
        }
    }
    Err("no free port other than 6379".to_owned())
}

/// Whether a Redis answers `PING` on `port` (an inline command: this is a probe, not a client).
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

impl Redis {
    /// Starts `program` on a free loopback port, without persistence, and waits until it answers.
    fn start(program: &Path) -> Result<Redis, String> {
        let mut last_error = String::new();
        for _ in 0..REDIS_START_ATTEMPTS {
            let number = REDIS_STARTED.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("xtask-bench-redis-{}-{number}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
            let port = free_port()?;
            let log = dir.join("redis.log");
            let child = Command::new(program)
                .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(err) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(format!("cannot start {}: {err}", program.display()));
                }
            };
            // From here on, every way out kills it.
            let mut redis = Redis { child, port, dir };
            let deadline = Instant::now() + REDIS_START_TIMEOUT;
            loop {
                if answers_ping(port) {
                    return Ok(redis);
                }
                if let Ok(Some(status)) = redis.child.try_wait() {
                    let said = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = said.lines().rev().take(3).collect();
                    last_error = format!("redis-server exited ({status}): {}", tail.join(" / "));
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "redis-server on port {port} did not answer PING within {REDIS_START_TIMEOUT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last_error)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A gateway whose event log is in `redis`, as node `node`.
fn clustered(binaries: &Binaries, redis: &Redis, node: &str, secret: &str) -> Result<Server, String> {
    let url = redis.url();
    let mut args: Vec<&str> = GATEWAY_ARGS.to_vec();
    args.extend(["--event-log", &url, "--node-id", node]);
    Server::start(&binaries.gateway, &args, secret)
}

/// The two sides compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Log {
    Memory,
    Redis,
}

impl Log {
    fn label(self) -> &'static str {
        match self {
            Log::Memory => "memory",
            Log::Redis => "redis",
        }
    }
}

/// `runs` repetitions of `one` for both sides, alternating (the order flips every repetition).
fn alternate(runs: usize, mut one: impl FnMut(Log) -> Result<Load, String>) -> Result<(Vec<Load>, Vec<Load>), String> {
    let (mut memory, mut redis) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let order = if run % 2 == 0 { [Log::Memory, Log::Redis] } else { [Log::Redis, Log::Memory] };
        for side in order {
            let load = one(side)?;
            match side {
                Log::Memory => memory.push(load),
                Log::Redis => redis.push(load),
            }
        }
    }
    Ok((memory, redis))
}

/// The row of failed checks of both sides.
fn checks_row(figure: String, memory: &[Load], redis: &[Load], keys: &[&str]) -> (Row, bool) {
    let passed = memory.iter().chain(redis).all(|load| load.passed);
    let counts = |loads: &[Load]| keys.iter().map(|key| sum_of(loads, key).to_string()).collect::<Vec<_>>().join(" / ");
    let failures = sum_of(memory, "failures") + sum_of(redis, "failures");
    let row = Row {
        figure,
        measured: format!(
            "memory {}, redis {} ({} and {} runs; failed checks of any kind: {failures})",
            counts(memory),
            counts(redis),
            memory.len(),
            redis.len()
        ),
        ratio: failures.to_string(),
        target: "0".to_owned(),
        met: yes(passed && failures == 0),
    };
    (row, passed)
}

/// Runs the Redis figures where `redis-server` is installed and appends their rows; `false` if an event was lost,
/// misordered or crossed users. A failure to run them is a row of its own.
pub(super) fn figures(quick: bool, binaries: &Binaries, secret: &str, rows: &mut Vec<Row>) -> bool {
    let Some(program) = on_path("redis-server") else {
        eprintln!("chat-gateway redis: {SKIPPED}");
        rows.push(Row::skipped("chat-gateway redis", SKIPPED.to_owned()));
        return true;
    };
    let mut all_passed = true;
    // Each part on its own: one that fails is a row saying why, and the other still runs.
    for (part, figures) in [("live", live_figures as Part), ("replay", replay_figures)] {
        match figures(quick, binaries, &program, secret, rows) {
            Ok(passed) => all_passed &= passed,
            Err(message) => {
                eprintln!("bench: chat-gateway redis {part} failed: {message}");
                rows.push(Row::skipped(&format!("chat-gateway redis, {part}"), format!("failed: {message}")));
            }
        }
    }
    all_passed
}

/// One part of the figures.
type Part = fn(bool, &Binaries, &Path, &str, &mut Vec<Row>) -> Result<bool, String>;

/// The closed-loop load against the gateway with each log.
fn live_figures(
    quick: bool,
    binaries: &Binaries,
    program: &Path,
    secret: &str,
    rows: &mut Vec<Row>,
) -> Result<bool, String> {
    let (sizes, runs, seconds): (&[usize], usize, f64) = if quick { (&[20], 1, 1.0) } else { (&[100, 1000], 3, 5.0) };
    let mut all_passed = true;
    for &users in sizes {
        eprintln!(
            "bench: chat-gateway with its log in memory and in Redis, {users} users, {seconds} s, {runs} runs each, \
             alternating"
        );
        let args: Vec<String> =
            ["--users", &users.to_string(), "--seconds", &seconds.to_string()].map(str::to_owned).into();
        let bound = Duration::from_secs_f64(seconds) + Duration::from_secs(120 + users as u64 / 50);
        let (memory, redis) = alternate(runs, |side| match side {
            Log::Memory => {
                let server = Server::start(&binaries.gateway, GATEWAY_ARGS, secret)?;
                load(binaries, &server, side.label(), &args, secret, bound)
            }
            Log::Redis => {
                let redis = Redis::start(program)?;
                let server = clustered(binaries, &redis, "a", secret)?;
                let mut args = args.clone();
                args.extend(["--store-pid".to_owned(), redis.pid().to_string()]);
                load(binaries, &server, side.label(), &args, secret, bound)
                // `server`, then `redis`, are dropped here: killed.
            }
        })?;
        let first = rows.len();
        let n = format!("{users} users");
        let (row, passed) = checks_row(
            format!("gateway redis / memory log: lost / misordered / cross-user events, {n}"),
            &memory,
            &redis,
            &["lost", "misordered", "cross_user"],
        );
        all_passed &= passed;
        rows.push(row);

        let (rate, memory_rate) = (median_of(&redis, "events_per_s"), median_of(&memory, "events_per_s"));
        rows.push(ratio_row(
            format!("gateway redis / memory log events/s, closed loop, {n}"),
            format!("{rate:.0} vs {memory_rate:.0} events/s (median of {runs})"),
            rate / memory_rate,
            None,
        ));
        let (p50, memory_p50) = (median_of(&redis, "p50_ms"), median_of(&memory, "p50_ms"));
        let (p99, memory_p99) = (median_of(&redis, "p99_ms"), median_of(&memory, "p99_ms"));
        rows.push(ratio_row(
            format!("gateway redis / memory log p99 run -> agent_started, closed loop, {n}"),
            format!(
                "{p99:.2} ms vs {memory_p99:.2} ms, p50 {p50:.2} vs {memory_p50:.2} ms (extra: p50 {:+.2} ms, p99 \
                 {:+.2} ms; median of {runs})",
                p50 - memory_p50,
                p99 - memory_p99
            ),
            p99 / memory_p99,
            None,
        ));
        let (cpu, memory_cpu) =
            (median_of(&redis, "server_cpu_us_per_event"), median_of(&memory, "server_cpu_us_per_event"));
        let store = median_of(&redis, "store_cpu_us_per_event");
        rows.push(ratio_row(
            format!("gateway redis / memory log server CPU per event, {n}"),
            format!(
                "{cpu:.2} us vs {memory_cpu:.2} us, and redis-server {store:.2} us (gateway + redis-server / memory: \
                 {:.2}; utime+stime / events received; median of {runs})",
                (cpu + store) / memory_cpu
            ),
            cpu / memory_cpu,
            None,
        ));
        for row in &rows[first..] {
            println!("{}", row.bench_line());
        }
    }
    Ok(all_passed)
}

/// One session replayed and followed on the gateway without Redis (A alone) and with it (A and B).
fn replay_figures(
    quick: bool,
    binaries: &Binaries,
    program: &Path,
    secret: &str,
    rows: &mut Vec<Row>,
) -> Result<bool, String> {
    let (messages, repeats, follow, runs): (u64, usize, usize, usize) =
        if quick { (400, 1, 20, 1) } else { (4000, 5, 200, 3) };
    eprintln!(
        "bench: chat-gateway replay of {messages} messages and follow ({follow} runs per connection) with the log in \
         memory and in Redis, {runs} runs each, alternating"
    );
    let args: Vec<String> =
        ["--replay", &messages.to_string(), "--repeats", &repeats.to_string(), "--follow-runs", &follow.to_string()]
            .map(str::to_owned)
            .into();
    let bound = Duration::from_secs(120);
    let (memory, redis) = alternate(runs, |side| match side {
        Log::Memory => {
            let server = Server::start(&binaries.gateway, GATEWAY_ARGS, secret)?;
            let mut all = vec!["--url".to_owned(), format!("ws://{}/v1/ws", server.addr)];
            all.extend(args.iter().cloned());
            run_load(binaries, side.label(), &all, secret, bound)
        }
        Log::Redis => {
            let redis = Redis::start(program)?;
            let owner = clustered(binaries, &redis, "a", secret)?;
            let other = clustered(binaries, &redis, "b", secret)?;
            let mut all = vec![
                "--url".to_owned(),
                format!("ws://{}/v1/ws", owner.addr),
                "--resume-url".to_owned(),
                format!("ws://{}/v1/ws", other.addr),
            ];
            all.extend(args.iter().cloned());
            run_load(binaries, side.label(), &all, secret, bound)
        }
    })?;
    let first = rows.len();
    let (row, passed) = checks_row(
        format!("gateway replay and follow, {messages} messages: lost / misordered / mismatched replayed frames"),
        &memory,
        &redis,
        &["lost", "misordered", "replay_mismatched"],
    );
    rows.push(row);

    let remote = median_of(&redis, "replay_remote_msgs_per_s");
    let local = median_of(&redis, "replay_local_msgs_per_s");
    let alone = median_of(&memory, "replay_local_msgs_per_s");
    rows.push(ratio_row(
        format!("gateway replay to a resuming client (after=0, {messages} messages): from Redis on node B / from memory on node A"),
        format!(
            "{remote:.0} vs {local:.0} messages/s ({:.1} vs {:.1} ms, upgrade {:.2} vs {:.2} ms; without Redis: \
             {alone:.0} messages/s; median of {runs} x {repeats})",
            median_of(&redis, "replay_remote_ms"),
            median_of(&redis, "replay_local_ms"),
            median_of(&redis, "replay_remote_upgrade_ms"),
            median_of(&redis, "replay_local_upgrade_ms"),
        ),
        remote / local,
        None,
    ));

    let (produced, produced_alone) =
        (median_of(&redis, "produce_msgs_per_s"), median_of(&memory, "produce_msgs_per_s"));
    rows.push(ratio_row(
        "gateway live messages/s of one session (tools runs, 16 in flight): Redis / memory log".to_owned(),
        format!(
            "{produced:.0} vs {produced_alone:.0} messages/s ({messages} messages in {:.1} vs {:.1} ms; median of \
             {runs})",
            median_of(&redis, "produce_ms"),
            median_of(&memory, "produce_ms")
        ),
        produced / produced_alone,
        None,
    ));

    let (remote_p50, remote_p99) =
        (median_of(&redis, "follow_remote_p50_ms"), median_of(&redis, "follow_remote_p99_ms"));
    let (local_p50, local_p99) = (median_of(&redis, "follow_local_p50_ms"), median_of(&redis, "follow_local_p99_ms"));
    let (alone_p50, alone_p99) = (median_of(&memory, "follow_local_p50_ms"), median_of(&memory, "follow_local_p99_ms"));
    rows.push(ratio_row(
        "gateway run -> agent_started, one run at a time, Redis log: owner node A / no Redis".to_owned(),
        format!(
            "p50 {local_p50:.3} vs {alone_p50:.3} ms, p99 {local_p99:.3} vs {alone_p99:.3} ms (extra p50 {:+.3} ms; \
             median of {runs}, {repeats} x {follow} runs each)",
            local_p50 - alone_p50
        ),
        local_p50 / alone_p50,
        None,
    ));
    rows.push(ratio_row(
        "gateway run -> agent_started, one run at a time: client on node B (via Redis) / on owner node A".to_owned(),
        format!(
            "p50 {remote_p50:.3} vs {local_p50:.3} ms, p99 {remote_p99:.3} vs {local_p99:.3} ms (extra p50 {:+.3} \
             ms, {:+.3} ms over no Redis; median of {runs}, {repeats} x {follow} runs each)",
            remote_p50 - local_p50,
            remote_p50 - alone_p50
        ),
        remote_p50 / local_p50,
        None,
    ));
    for row in &rows[first..] {
        println!("{}", row.bench_line());
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_the_path() {
        assert!(on_path("sh").is_some());
        assert!(on_path("no-such-program-here-7f3a").is_none());
    }

    #[test]
    fn a_port_nobody_listens_on_does_not_answer() {
        let port = free_port().unwrap();
        assert_ne!(port, DEFAULT_REDIS_PORT);
        assert!(!answers_ping(port));
    }

    #[test]
    fn a_redis_of_its_own_answers_and_is_gone_when_dropped() {
        let Some(program) = on_path("redis-server") else {
            eprintln!("redis-server is not installed: nothing to start");
            return;
        };
        let redis = Redis::start(&program).unwrap();
        let (port, dir) = (redis.port, redis.dir.clone());
        assert!(answers_ping(port));
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        drop(redis);
        assert!(!answers_ping(port));
        assert!(!dir.exists());
    }
}
