//! `gateway-load`: load for `chat-gateway` (or `gateway-bare`) from a separate process, every message checked.
//!
//! ```text
//! gateway-load --url ws://127.0.0.1:PORT/v1/ws [--users 1000] [--in-flight 3] [--seconds 5] [--server-pid PID]
//! gateway-load --url ... --users N --rate R [--seconds S]       # paced: R runs per user per second
//! gateway-load --url ... --idle N --server-pid PID              # memory per idle connection
//! gateway-load --url ws://A/v1/ws --replay M [--resume-url ws://B/v1/ws]  # one session replayed and followed
//! ```
//!
//! Each user opens one connection with its own token (HS256, minted with `--secret` or `CHAT_GATEWAY_SECRET`; the
//! bare server ignores it) and cycles `echo`, `tools` and `slow 3`. Closed loop (the default): each keeps
//! `--in-flight` runs going and starts a new one whenever one completes, for `--seconds`. Paced (`--rate`): each
//! starts a run every 1/R s (users spread evenly over the period), at most 16 in flight (the gateway's limit per
//! session). Then every outstanding run is awaited, up to `--finish-timeout`. Idle (`--idle N`): N connections
//! that only answer pings; the server's resident memory before opening them and after they are all open and
//! settled gives the memory per connection. Replay (`--replay M`, the [`replay`] module): one session of M
//! messages resumed with `after=0` on its own node and, with `--resume-url`, on another node sharing its Redis event
//! log; then runs followed live on both.
//!
//! Every message is checked (`gateway_load::check`): gaps and order of `seq`, each run's events against the
//! agent's script, every event's `request_id` (which names the user and the run) and `run_id`, one
//! `agent_completed` per run, and at the end every expected event that never came is lost. Any failure makes the
//! exit status 1; bad flags or an unreachable server, 2.
//!
//! Figures: p50 and p99 of the client-side time from sending a run to receiving its `agent_started`, events/s
//! (from the start to the last run's end), the server's CPU per event (`utime + stime` of `--server-pid` from
//! `/proc`, over the same span, divided by the events received), the server's resident memory, the load
//! generator's own CPU, and fairness: runs completed per user, the slowest user against the median; with
//! `--store-pid` (a process the server depends on, such as its `redis-server`), that process's CPU per event over
//! the same span. They are printed as a table, then as `LOAD\t<key>\t<value>` lines for scripts.
// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_gateway::auth::{Secret, mint_token, now_unix};
use futures_util::{SinkExt as _, StreamExt as _};
use gateway_load::check::{Checker, Received, RunPlan, Tally};
use gateway_load::procfs;
use gateway_load::stats::{median, percentile};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

// Beside this file, not in `src/bin/` itself, where cargo would take it for a binary of its own.
#[path = "gateway-load/replay.rs"]
mod replay;

const USAGE: &str = "\
gateway-load: load for chat-gateway from a separate process, every message checked

Usage:
  gateway-load --url ws://127.0.0.1:PORT/v1/ws [--users 1000] [--in-flight 3] [--seconds 5] [options]
  gateway-load --url ws://127.0.0.1:PORT/v1/ws --users N --rate R [--seconds 5] [options]
  gateway-load --url ws://127.0.0.1:PORT/v1/ws --idle N --server-pid PID [options]
  gateway-load --url ws://127.0.0.1:PORT/v1/ws --replay M [--resume-url ws://127.0.0.1:PORT2/v1/ws] [options]

Modes:
  (default)            closed loop: each user keeps --in-flight runs going (echo, tools, slow 3 in turn)
  --rate R             paced: each user starts R runs per second (at most 16 in flight)
  --idle N             N idle connections; reports the server's memory per connection (needs --server-pid)
  --replay M           one session: M messages (tools runs, 16 in flight), then resumed with after=0 and timed
                       until the last one arrives, on --url and on --resume-url (another node sharing the
                       session's Redis event log), alternating; then --follow-runs echo runs on each, one at a time

Options:
  --url URL            the server's WebSocket endpoint; only ws://127.0.0.1:PORT/... is accepted
  --secret S           the HS256 secret to mint tokens with (default: $CHAT_GATEWAY_SECRET)
  --users N            connections, one user each (default 1000)
  --in-flight K        runs each user keeps going in the closed loop, 1 to 16 (default 3)
  --seconds S          how long runs are started (default 5)
  --server-pid PID     the server process, for its CPU time and memory (from /proc)
  --store-pid PID      a process the server depends on (its redis-server), for its CPU time too
  --threads T          the load generator's runtime threads (default 1)
  --connect-concurrency C  handshakes at a time (default 64)
  --finish-timeout S   how long to wait for outstanding runs once the time is up (default 30)
  --settle S           idle mode: the wait after the last connection opened before memory is read (default 2)
  --label NAME         a name for the server in the report (default: server)
  --resume-url URL     replay mode: the other node's WebSocket endpoint (without it, only --url is measured)
  --repeats R          replay mode: resumes and follow connections per node, alternating (default 3)
  --follow-runs K      replay mode: echo runs per follow connection (default 100)

Exit status: 0 if every check passed, 1 if an event was lost, misordered, out of place or a connection failed,
2 for a usage mistake or a server that cannot be reached.";

/// The gateway's default limit on runs in progress per session.
const MAX_IN_FLIGHT: usize = 16;

/// The longest a handshake, or the first frame after it, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take to close once the load is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tokens outlive every run: the gateway closes a connection at its token's expiry.
const TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);

/// File descriptors this process needs besides one per connection.
const SPARE_FDS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Closed {
        in_flight: usize,
    },
    Paced {
        rate: f64,
    },
    Idle,
    /// One session of `messages` messages, replayed and followed ([`replay`]).
    Replay {
        messages: u64,
    },
}

#[derive(Debug)]
struct Options {
    addr: SocketAddr,
    /// Path and query of the endpoint, e.g. `/v1/ws`.
    path: String,
    secret: Option<Secret>,
    mode: Mode,
    users: usize,
    seconds: f64,
    server_pid: Option<u32>,
    threads: usize,
    connect_concurrency: usize,
    finish_timeout: Duration,
    settle: Duration,
    label: String,
    store_pid: Option<u32>,
    /// Replay mode: the other node's address and path.
    resume: Option<(SocketAddr, String)>,
    repeats: usize,
    follow_runs: usize,
}

/// `ws://127.0.0.1:PORT/path?query` -> the address and `/path?query`. Only 127.0.0.1: the load stays on this machine.
fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| format!("`--url {url}` must start with ws://"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let addr: SocketAddr =
        authority.parse().map_err(|_| format!("`--url {url}` needs an address like 127.0.0.1:8080 after ws://"))?;
    if addr.ip() != std::net::Ipv4Addr::LOCALHOST || addr.port() == 0 {
        return Err(format!("`--url {url}`: only ws://127.0.0.1:PORT is allowed (the load never leaves this machine)"));
    }
    Ok((addr, path.to_owned()))
}

fn parse_args(mut args: impl Iterator<Item = String>, env_secret: Option<String>) -> Result<Option<Options>, String> {
    let mut url = None;
    let mut secret = env_secret;
    let (mut users, mut in_flight, mut rate, mut idle) = (None, None, None, None);
    let (mut replay, mut resume_url, mut repeats, mut follow_runs) = (None, None, None, None);
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        path: String::new(),
        secret: None,
        mode: Mode::Closed { in_flight: 3 },
        users: 1000,
        seconds: 5.0,
        server_pid: None,
        threads: 1,
        connect_concurrency: 64,
        finish_timeout: Duration::from_secs(30),
        settle: Duration::from_secs(2),
        label: "server".to_owned(),
        store_pid: None,
        resume: None,
        repeats: 3,
        follow_runs: 100,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("`{flag}` needs a value"));
        let whole = |text: String, range: std::ops::RangeInclusive<u64>| {
            text.parse::<u64>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                format!("`{flag} {text}` is not a whole number from {} to {}", range.start(), range.end())
            })
        };
        let seconds = |text: String, max: f64| {
            text.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= max)
                .ok_or_else(|| format!("`{flag} {text}` is not a number of seconds above 0 and at most {max}"))
        };
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--secret" => secret = Some(value()?),
            "--users" => users = Some(whole(value()?, 1..=100_000)? as usize),
            "--in-flight" => in_flight = Some(whole(value()?, 1..=MAX_IN_FLIGHT as u64)? as usize),
            "--rate" => {
                let text = value()?;
                rate = Some(
                    text.parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1000.0)
                        .ok_or_else(|| format!("`--rate {text}` is not a number of runs per second from 0 to 1000"))?,
                );
            }
            "--idle" => idle = Some(whole(value()?, 1..=100_000)? as usize),
            "--seconds" => options.seconds = seconds(value()?, 3600.0)?,
            "--server-pid" => options.server_pid = Some(whole(value()?, 1..=u64::from(u32::MAX))? as u32),
            "--threads" => options.threads = whole(value()?, 1..=64)? as usize,
            "--connect-concurrency" => options.connect_concurrency = whole(value()?, 1..=10_000)? as usize,
            "--finish-timeout" => options.finish_timeout = Duration::from_secs_f64(seconds(value()?, 3600.0)?),
            "--settle" => options.settle = Duration::from_secs_f64(seconds(value()?, 600.0)?),
            "--label" => options.label = value()?,
            "--store-pid" => options.store_pid = Some(whole(value()?, 1..=u64::from(u32::MAX))? as u32),
            "--replay" => replay = Some(whole(value()?, 1..=1_000_000)?),
            "--resume-url" => resume_url = Some(value()?),
            "--repeats" => repeats = Some(whole(value()?, 1..=1000)? as usize),
            "--follow-runs" => follow_runs = Some(whole(value()?, 0..=100_000)? as usize),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let url = url.ok_or("`--url ws://127.0.0.1:PORT/v1/ws` is required: the server's WebSocket endpoint")?;
    (options.addr, options.path) = parse_url(&url)?;
    options.secret = match secret {
        Some(secret) => Some(Secret::new(secret).ok_or("the secret (--secret or CHAT_GATEWAY_SECRET) is empty")?),
        None => None,
    };
    if options.secret.is_none() {
        return Err("no secret to mint tokens with: pass --secret or set CHAT_GATEWAY_SECRET (the server's; \
                    gateway-bare accepts any)"
            .to_owned());
    }
    if let Some(messages) = replay {
        if users.is_some() || idle.is_some() || rate.is_some() || in_flight.is_some() {
            return Err(
                "`--replay` drives one session: it takes no `--users`, `--idle`, `--rate` or `--in-flight`".to_owned()
            );
        }
        options.resume = resume_url.as_deref().map(parse_url).transpose()?;
        options.repeats = repeats.unwrap_or(options.repeats);
        options.follow_runs = follow_runs.unwrap_or(options.follow_runs);
        options.mode = Mode::Replay { messages };
        options.users = 1;
        return Ok(Some(options));
    }
    if resume_url.is_some() || repeats.is_some() || follow_runs.is_some() {
        return Err("`--resume-url`, `--repeats` and `--follow-runs` belong to `--replay M`".to_owned());
    }
    options.mode = match (idle, rate, in_flight) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err("`--idle` holds idle connections: it takes no `--rate` or `--in-flight`".to_owned());
        }
        (Some(_), None, None) if users.is_some() => {
            return Err("`--idle N` is the number of connections: leave out `--users`".to_owned());
        }
        (Some(n), None, None) => {
            if options.server_pid.is_none() {
                return Err("`--idle` measures the server's memory: pass `--server-pid PID`".to_owned());
            }
            users = Some(n);
            Mode::Idle
        }
        (None, Some(_), Some(_)) => {
            return Err("`--rate` starts runs on a clock, at most 16 in flight: it takes no `--in-flight`".to_owned());
        }
        (None, Some(rate), None) => Mode::Paced { rate },
        (None, None, in_flight) => Mode::Closed { in_flight: in_flight.unwrap_or(3) },
    };
    options.users = users.unwrap_or(options.users);
    Ok(Some(options))
}

fn main() -> ExitCode {
    let env_secret = std::env::var("CHAT_GATEWAY_SECRET").ok().filter(|secret| !secret.is_empty());
    let options = match parse_args(std::env::args().skip(1), env_secret) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}; see `gateway-load --help`");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = check_fd_limits(&options) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let runtime = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(options.threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Arc::new(options))) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Fatal::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Fatal::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Why the load could not run at all.
enum Fatal {
    /// A flag or the environment is wrong, or the server cannot be reached (exit 2).
    Usage(String),
    /// The load started but connections failed (exit 1).
    Failed(String),
}

/// One file descriptor per connection here, and one per connection in the server.
fn check_fd_limits(options: &Options) -> Result<(), String> {
    let needed = options.users as u64 + SPARE_FDS;
    let hint = |who: &str, soft: u64, hard: u64| {
        let raise = if hard >= needed {
            format!("raise it with `ulimit -n {needed}` in the shell that starts {who}")
        } else {
            format!("the hard limit is {hard}, so raise that first (/etc/security/limits.conf), or use fewer --users")
        };
        format!("{} connections need about {needed} open files in {who}, whose limit is {soft}; {raise}", options.users)
    };
    if let Ok((soft, hard)) = procfs::open_files_limit("self")
        && soft < needed
    {
        return Err(hint("the load generator", soft, hard));
    }
    if let Some(pid) = options.server_pid {
        match procfs::open_files_limit(&pid.to_string()) {
            Ok((soft, hard)) if soft < needed => return Err(hint(&format!("the server (pid {pid})"), soft, hard)),
            Ok(_) => {}
            Err(err) => return Err(format!("cannot read /proc/{pid}/limits of --server-pid {pid}: {err}")),
        }
    }
    Ok(())
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where the load is. Users watch it change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Connecting,
    Running,
    Stopping,
    Closing,
}

/// A user's connection: its handshake, then its first frame.
async fn connect(options: &Options, user: &str) -> Result<(Ws, Checker), String> {
    let (ws, first) = handshake(options, options.addr, &options.path, user).await?;
    // The first frame is the session frame.
    let mut checker = Checker::new(user);
    checker.receive(&first, Instant::now());
    Ok((ws, checker))
}

/// A connection of `user` to `addr` and `path` (which may carry a query): the WebSocket handshake, and the text of
/// the first frame.
async fn handshake(options: &Options, addr: SocketAddr, path: &str, user: &str) -> Result<(Ws, String), String> {
    let secret = options.secret.as_ref().ok_or("no secret")?;
    let token = mint_token(secret, user, TOKEN_TTL, now_unix());
    let separator = if path.contains('?') { '&' } else { '?' };
    let url = format!("ws://{addr}{path}{separator}token={token}");
    // A small read buffer: 10,000 connections with tungstenite's default 128 KiB would take 1.3 GB here.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map_err(|err| format!("the WebSocket handshake failed: {err}"))?;
        match ws.next().await {
            Some(Ok(Message::Text(text))) => Ok((ws, text.as_str().to_owned())),
            Some(Ok(other)) => Err(format!("the first frame is not text: {other:?}")),
            Some(Err(err)) => Err(format!("the connection failed before its first frame: {err}")),
            None => Err("the server closed the connection before its first frame".to_owned()),
        }
    })
    .await;
    connected.unwrap_or_else(|_| Err(format!("no handshake and first frame within {CONNECT_TIMEOUT:?}")))
}

/// What one user reports at the end.
#[derive(Debug, Default)]
struct Report {
    tally: Tally,
    /// Why the connection ended early, if it did.
    broke: Option<String>,
    /// Paced mode: ticks at which no run was started because 16 were in flight.
    skipped: u64,
}

struct User {
    index: usize,
    id: String,
    options: Arc<Options>,
    plans: Arc<[RunPlan]>,
    phase: watch::Receiver<Phase>,
    /// Told once the connection is open (or could not be).
    ready: mpsc::UnboundedSender<Result<(), String>>,
    /// Told once every run of the user is over (or the finish timeout passed).
    done: mpsc::UnboundedSender<Instant>,
    handshakes: Arc<Semaphore>,
    connected: Option<(Ws, Checker)>,
}

/// One user's life: connect, wait for the start, run (closed loop, paced or idle), report, close.
async fn user(mut user: User) -> Report {
    let mut report = Report::default();
    let connected = match user.connected.take() {
        Some(connected) => Ok(connected),
        None => {
            let permit = user.handshakes.acquire().await;
            let connected = connect(&user.options, &user.id).await;
            drop(permit);
            connected
        }
    };
    let (mut ws, mut checker) = match connected {
        Ok(connected) => connected,
        Err(err) => {
            let _ = user.ready.send(Err(err));
            return report;
        }
    };
    let _ = user.ready.send(Ok(()));
    if let Err(err) = read_until(&mut ws, &mut checker, &mut user.phase, Phase::Running).await {
        report.broke = Some(err);
    }
    if report.broke.is_none() && user.options.mode != Mode::Idle {
        let result = drive(&mut user, &mut ws, &mut checker, &mut report.skipped).await;
        report.broke = result.err();
    }
    let _ = user.done.send(Instant::now());
    if report.broke.is_none()
        && let Err(err) = read_until(&mut ws, &mut checker, &mut user.phase, Phase::Closing).await
    {
        report.broke = Some(err);
    }
    report.tally = checker.finish();
    if report.broke.is_none() {
        // Leave for good, so the gateway frees the session at once instead of keeping it for a resume.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = ws.send(Message::text(r#"{"type":"close"}"#)).await;
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
    report
}

/// Keeps reading (and checking, and answering pings) until the load reaches `phase`.
async fn read_until(
    ws: &mut Ws,
    checker: &mut Checker,
    phases: &mut watch::Receiver<Phase>,
    phase: Phase,
) -> Result<(), String> {
    loop {
        if *phases.borrow_and_update() >= phase {
            return Ok(());
        }
        tokio::select! {
            message = ws.next() => { receive(checker, message)?; }
            changed = phases.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

/// Checks one message; `Err` if the connection ended.
fn receive(
    checker: &mut Checker,
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Received, String> {
    match message {
        Some(Ok(Message::Text(text))) => Ok(checker.receive(text.as_str(), Instant::now())),
        Some(Ok(Message::Close(frame))) => Err(format!("the server closed the connection: {frame:?}")),
        Some(Ok(_)) => Ok(Received::Nothing),
        Some(Err(err)) => Err(format!("the connection failed: {err}")),
        None => Err("the connection ended".to_owned()),
    }
}

/// Starts runs until the phase is `Stopping`, then waits for the outstanding ones, up to the finish timeout.
async fn drive(user: &mut User, ws: &mut Ws, checker: &mut Checker, skipped: &mut u64) -> Result<(), String> {
    let plans = Arc::clone(&user.plans);
    let mut next_plan = user.index % plans.len();
    let (cap, mut ticks) = match user.options.mode {
        Mode::Closed { in_flight } => (in_flight, None),
        Mode::Paced { rate } => {
            let period = Duration::from_secs_f64(1.0 / rate);
            // Users spread evenly over one period, so the runs do not all start together.
            let offset = period.mul_f64(user.index as f64 / user.options.users as f64);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            (MAX_IN_FLIGHT, Some(ticks))
        }
        Mode::Idle | Mode::Replay { .. } => return Ok(()),
    };
    let mut start = |checker: &mut Checker| {
        let text = checker.start_run(&plans[next_plan], Instant::now());
        next_plan = (next_plan + 1) % plans.len();
        text
    };
    loop {
        let running = *user.phase.borrow_and_update() == Phase::Running;
        if !running {
            break;
        }
        if ticks.is_none() {
            while checker.outstanding() < cap {
                let text = start(checker);
                ws.send(Message::text(text)).await.map_err(|err| format!("cannot send a run: {err}"))?;
            }
        }
        tokio::select! {
            message = ws.next() => { receive(checker, message)?; }
            changed = user.phase.changed() => if changed.is_err() { break },
            _ = async { ticks.as_mut()?.tick().await; Some(()) }, if ticks.is_some() => {
                if checker.outstanding() < cap {
                    let text = start(checker);
                    ws.send(Message::text(text)).await.map_err(|err| format!("cannot send a run: {err}"))?;
                } else {
                    *skipped += 1;
                }
            }
        }
    }
    // The time is up: await the outstanding runs, up to the finish timeout.
    let deadline = tokio::time::Instant::now() + user.options.finish_timeout;
    while checker.outstanding() > 0 {
        tokio::select! {
            message = ws.next() => { receive(checker, message)?; }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(())
}

/// Reads the server's CPU ticks, if it is known.
fn server_ticks(options: &Options) -> Result<Option<u64>, Fatal> {
    let Some(pid) = options.server_pid else { return Ok(None) };
    procfs::cpu_ticks(pid)
        .map(Some)
        .map_err(|err| Fatal::Usage(format!("cannot read /proc/{pid}/stat of --server-pid {pid}: {err}")))
}

/// Reads the store's CPU ticks, if it is known.
fn store_ticks(options: &Options) -> Result<Option<u64>, Fatal> {
    let Some(pid) = options.store_pid else { return Ok(None) };
    procfs::cpu_ticks(pid)
        .map(Some)
        .map_err(|err| Fatal::Usage(format!("cannot read /proc/{pid}/stat of --store-pid {pid}: {err}")))
}

fn server_rss(options: &Options) -> Option<u64> {
    procfs::rss_kib(options.server_pid?).ok()
}

async fn run(options: Arc<Options>) -> Result<bool, Fatal> {
    // Is anything listening? A clear error before thousands of failed handshakes.
    let url = format!("ws://{}{}", options.addr, options.path);
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(options.addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            return Err(Fatal::Usage(format!(
                "cannot reach the server at {url}: {err}; start it first (`chat-gateway serve --addr 127.0.0.1:0` \
                 or `gateway-bare` logs `listening on ADDR`) and pass that address"
            )));
        }
        Err(_) => return Err(Fatal::Usage(format!("cannot reach the server at {url}: no answer within 10 s"))),
    }
    if let Some(pid) = options.server_pid {
        procfs::cpu_ticks(pid).map_err(|err| Fatal::Usage(format!("--server-pid {pid}: no such process? {err}")))?;
    }
    if let Some(pid) = options.store_pid {
        procfs::cpu_ticks(pid).map_err(|err| Fatal::Usage(format!("--store-pid {pid}: no such process? {err}")))?;
    }
    if let Mode::Replay { messages } = options.mode {
        return replay::run(&options, messages).await;
    }
    // Before any connection: the idle figure's baseline.
    let rss_before = server_rss(&options);
    // The first user alone, so that a wrong secret or path is one clear error.
    let first = connect(&options, &user_id(0)).await.map_err(|err| {
        let hint = if err.contains("401") {
            " (the server refused the token: is --secret / CHAT_GATEWAY_SECRET the server's?)"
        } else if err.contains("404") {
            " (is the path right? the gateway serves /v1/ws)"
        } else {
            ""
        };
        Fatal::Usage(format!("cannot open a connection to {url}: {err}{hint}"))
    })?;

    let plans: Arc<[RunPlan]> = RunPlan::defaults().into();
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let handshakes = Arc::new(Semaphore::new(options.connect_concurrency));
    let mut users = JoinSet::new();
    let mut first = Some(first);
    let connect_started = Instant::now();
    for index in 0..options.users {
        users.spawn(user(User {
            index,
            id: user_id(index),
            options: Arc::clone(&options),
            plans: Arc::clone(&plans),
            phase: phase_rx.clone(),
            ready: ready_tx.clone(),
            done: done_tx.clone(),
            handshakes: Arc::clone(&handshakes),
            connected: first.take(),
        }));
    }
    drop((ready_tx, done_tx, phase_rx));

    // Everyone connected (or failed), within a bound that grows with the number of handshakes.
    let connect_bound = CONNECT_TIMEOUT * (options.users.div_ceil(options.connect_concurrency) as u32 + 1);
    let (mut connected, mut failed, mut first_error) = (0usize, 0usize, None);
    let connect_deadline = tokio::time::Instant::now() + connect_bound;
    while connected + failed < options.users {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => connected += 1,
            Ok(Some(Err(err))) => {
                failed += 1;
                first_error.get_or_insert(err);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let connect_time = connect_started.elapsed();
    let missing = options.users - connected - failed;
    if failed + missing > 0 {
        let _ = phase_tx.send(Phase::Closing);
        close_all(&mut users).await;
        let first_error = first_error.unwrap_or_else(|| format!("no answer within {connect_bound:?}"));
        return Err(Fatal::Failed(format!(
            "{} of {} connections could not be opened (first: {first_error})",
            failed + missing,
            options.users
        )));
    }

    if options.mode == Mode::Idle {
        return idle_figures(&options, rss_before, connect_time, phase_tx, users).await;
    }

    let ticks_before = server_ticks(&options)?;
    let store_before = store_ticks(&options)?;
    let own_before = procfs::cpu_ticks(std::process::id()).ok();
    let rss_before = server_rss(&options).or(rss_before);
    let started = Instant::now();
    let _ = phase_tx.send(Phase::Running);
    tokio::time::sleep(Duration::from_secs_f64(options.seconds)).await;
    let _ = phase_tx.send(Phase::Stopping);
    let finish_deadline = tokio::time::Instant::now() + options.finish_timeout + Duration::from_secs(5);
    let (mut done, mut last_done) = (0, started);
    while done < connected {
        match tokio::time::timeout_at(finish_deadline, done_rx.recv()).await {
            Ok(Some(at)) => {
                done += 1;
                last_done = last_done.max(at);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let elapsed = last_done.duration_since(started).as_secs_f64().max(1e-9);
    let ticks_after = server_ticks(&options)?;
    let store_after = store_ticks(&options)?;
    let own_after = procfs::cpu_ticks(std::process::id()).ok();
    let rss_after = server_rss(&options);

    let _ = phase_tx.send(Phase::Closing);
    let reports = close_all(&mut users).await;
    let unreported = connected - reports.len();

    let mut total = Tally::default();
    let mut runs_per_user = Vec::with_capacity(reports.len());
    let (mut broke, mut first_break, mut skipped) = (0, None, 0);
    for report in reports {
        runs_per_user.push(report.tally.runs_completed);
        skipped += report.skipped;
        if let Some(why) = report.broke {
            broke += 1;
            first_break.get_or_insert(why);
        }
        total.merge(report.tally);
    }
    total.latencies_us.sort_unstable();
    let ms = |us: u32| f64::from(us) / 1000.0;
    let p50 = ms(percentile(&total.latencies_us, 0.50));
    let p99 = ms(percentile(&total.latencies_us, 0.99));
    let events_per_s = total.events as f64 / elapsed;
    let seconds = |ticks: u64| ticks as f64 / procfs::TICKS_PER_SECOND as f64;
    let server_cpu = ticks_before.zip(ticks_after).map(|(before, after)| seconds(after.saturating_sub(before)));
    let own_cpu = own_before.zip(own_after).map(|(before, after)| seconds(after.saturating_sub(before)));
    let cpu_per_event = server_cpu.map(|cpu| cpu * 1e6 / total.events.max(1) as f64);
    let store_cpu = store_before.zip(store_after).map(|(before, after)| seconds(after.saturating_sub(before)));
    let store_per_event = store_cpu.map(|cpu| cpu * 1e6 / total.events.max(1) as f64);
    runs_per_user.sort_unstable();
    let min_runs = runs_per_user.first().copied().unwrap_or(0);
    let median_runs = median(&runs_per_user).unwrap_or(0);
    let fairness = min_runs as f64 / median_runs.max(1) as f64;

    let mode = match options.mode {
        Mode::Closed { in_flight } => format!("closed loop, {in_flight} runs in flight per user"),
        Mode::Paced { rate } => format!("paced, {rate} runs per user per second"),
        Mode::Idle | Mode::Replay { .. } => unreachable!("handled above"),
    };
    let mut table = Table::default();
    println!(
        "gateway-load against {} ({url}): {} users, {mode}, runs started for {:.1} s, over after {:.2} s \
         (connecting took {:.2} s)",
        options.label,
        options.users,
        options.seconds,
        elapsed,
        connect_time.as_secs_f64()
    );
    table.row("runs started / completed", format!("{} / {}", total.runs_started, total.runs_completed));
    table.row("events received", total.events.to_string());
    table.row("events/s", format!("{events_per_s:.0}"));
    table.row("p50 run -> agent_started", format!("{p50:.2} ms"));
    table.row("p99 run -> agent_started", format!("{p99:.2} ms"));
    table.row(
        "server CPU per event",
        match (cpu_per_event, server_cpu) {
            (Some(per_event), Some(cpu)) => {
                format!("{per_event:.2} us ({cpu:.2} s of CPU, {:.2} cores)", cpu / elapsed)
            }
            _ => "n/a (no --server-pid)".to_owned(),
        },
    );
    if let (Some(per_event), Some(cpu)) = (store_per_event, store_cpu) {
        table.row("store CPU per event", format!("{per_event:.2} us ({cpu:.2} s of CPU, {:.2} cores)", cpu / elapsed));
    }
    table.row(
        "server RSS before / after",
        match (rss_before, rss_after) {
            (Some(before), Some(after)) => {
                format!("{:.1} MiB / {:.1} MiB", before as f64 / 1024.0, after as f64 / 1024.0)
            }
            _ => "n/a".to_owned(),
        },
    );
    if let Some(cpu) = own_cpu {
        table.row("load generator CPU", format!("{cpu:.2} s ({:.2} cores)", cpu / elapsed));
    }
    table.row("runs per user: min / median", format!("{min_runs} / {median_runs} (slowest / median {fairness:.2})"));
    if let Mode::Paced { .. } = options.mode {
        table.row("ticks skipped (16 in flight)", skipped.to_string());
    }
    table.row("lost / gaps / misordered", format!("{} / {} / {}", total.lost, total.gaps, total.misordered));
    table.row(
        "cross-user / wrong / duplicate terminals",
        format!("{} / {} / {}", total.cross_user, total.wrong, total.duplicate_terminals),
    );
    table.row("error frames / malformed", format!("{} / {}", total.errors, total.malformed));
    table.row("connections broken / unreported", format!("{broke} / {unreported}"));
    print!("{}", table.render());
    if let Some(why) = &first_break {
        println!("first broken connection: {why}");
    }

    let mut lines = MachineLines::default();
    lines.add("label", &options.label);
    lines.add("users", options.users);
    lines.add("seconds", elapsed);
    lines.add("runs_started", total.runs_started);
    lines.add("runs_completed", total.runs_completed);
    lines.add("events", total.events);
    lines.add("events_per_s", format!("{events_per_s:.0}"));
    lines.add("p50_ms", format!("{p50:.3}"));
    lines.add("p99_ms", format!("{p99:.3}"));
    if let (Some(per_event), Some(cpu)) = (cpu_per_event, server_cpu) {
        lines.add("server_cpu_us_per_event", format!("{per_event:.3}"));
        lines.add("server_cpu_s", format!("{cpu:.2}"));
    }
    if let (Some(per_event), Some(cpu)) = (store_per_event, store_cpu) {
        lines.add("store_cpu_us_per_event", format!("{per_event:.3}"));
        lines.add("store_cpu_s", format!("{cpu:.2}"));
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        lines.add("server_rss_before_kib", before);
        lines.add("server_rss_kib", after);
    }
    if let Some(cpu) = own_cpu {
        lines.add("client_cpu_s", format!("{cpu:.2}"));
    }
    lines.add("runs_per_user_min", min_runs);
    lines.add("runs_per_user_median", median_runs);
    lines.add("fairness", format!("{fairness:.3}"));
    lines.add("skipped", skipped);
    for (key, value) in [
        ("lost", total.lost),
        ("gaps", total.gaps),
        ("misordered", total.misordered),
        ("cross_user", total.cross_user),
        ("wrong", total.wrong),
        ("duplicate_terminals", total.duplicate_terminals),
        ("errors", total.errors),
        ("malformed", total.malformed),
    ] {
        lines.add(key, value);
    }
    lines.add("broken", broke);
    lines.add("unreported", unreported);
    let failures = total.failures() + broke as u64 + unreported as u64;
    lines.add("failures", failures);
    print!("{}", lines.0);
    Ok(failures == 0)
}

/// The idle figure: the server's memory growth per connection, once every connection is open and settled.
async fn idle_figures(
    options: &Options,
    rss_before: Option<u64>,
    connect_time: Duration,
    phase_tx: watch::Sender<Phase>,
    mut users: JoinSet<Report>,
) -> Result<bool, Fatal> {
    let pid = options.server_pid.ok_or_else(|| Fatal::Usage("`--idle` needs `--server-pid`".to_owned()))?;
    let read = || procfs::rss_kib(pid).map_err(|err| Fatal::Usage(format!("cannot read /proc/{pid}/status: {err}")));
    let before = rss_before.map_or_else(read, Ok)?;
    // Settle: wait, then read until two readings a quarter of a second apart agree within 1% (at most 20 readings).
    tokio::time::sleep(options.settle).await;
    let mut after = read()?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = read()?;
        let settled = now.abs_diff(after) * 100 <= after;
        after = now;
        if settled {
            break;
        }
    }
    let own = procfs::rss_kib(std::process::id()).ok();
    let _ = phase_tx.send(Phase::Closing);
    let reports = close_all(&mut users).await;
    let unreported = options.users - reports.len();
    let mut total = Tally::default();
    let mut broke = 0;
    for report in reports {
        broke += usize::from(report.broke.is_some());
        total.merge(report.tally);
    }
    let per_connection = after.saturating_sub(before) * 1024 / options.users as u64;
    println!(
        "gateway-load idle against {} (ws://{}{}): {} connections open in {:.2} s",
        options.label,
        options.addr,
        options.path,
        options.users,
        connect_time.as_secs_f64()
    );
    let mut table = Table::default();
    table.row(
        "server RSS before / after",
        format!("{:.1} MiB / {:.1} MiB", before as f64 / 1024.0, after as f64 / 1024.0),
    );
    table.row("server memory per idle connection", format!("{per_connection} B"));
    if let Some(own) = own {
        table.row("load generator RSS", format!("{:.1} MiB", own as f64 / 1024.0));
    }
    table.row("unexpected messages / broken / unreported", format!("{} / {broke} / {unreported}", total.failures()));
    print!("{}", table.render());
    let mut lines = MachineLines::default();
    lines.add("label", &options.label);
    lines.add("idle_connections", options.users);
    lines.add("server_rss_before_kib", before);
    lines.add("server_rss_kib", after);
    lines.add("idle_bytes_per_connection", per_connection);
    let failures = total.failures() + broke as u64 + unreported as u64;
    lines.add("failures", failures);
    print!("{}", lines.0);
    Ok(failures == 0)
}

/// Ends every user task (the phase is `Closing`), within a bound; the reports of those that ended.
async fn close_all(users: &mut JoinSet<Report>) -> Vec<Report> {
    let mut reports = Vec::with_capacity(users.len());
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT + Duration::from_secs(10);
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, users.join_next()).await {
        if let Ok(report) = joined {
            reports.push(report);
        }
    }
    users.abort_all();
    reports
}

fn user_id(index: usize) -> String {
    format!("load-{index}")
}

/// A two-column table for people.
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, figure: &str, measured: String) {
        self.0.push((figure.to_owned(), measured));
    }

    fn render(&self) -> String {
        let width = self.0.iter().map(|(figure, _)| figure.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (figure, measured) in &self.0 {
            let _ = writeln!(out, "  {figure:<width$}  {measured}");
        }
        out
    }
}

/// `LOAD\t<key>\t<value>` lines for scripts.
#[derive(Default)]
struct MachineLines(String);

impl MachineLines {
    fn add(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "LOAD\t{key}\t{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str, env: Option<&str>) -> Result<String, String> {
        let parsed = parse_args(args.split_whitespace().map(str::to_owned), env.map(str::to_owned))?;
        Ok(parsed.map_or("help".to_owned(), |o| {
            format!("{} {} {:?} users={} s={} pid={:?}", o.addr, o.path, o.mode, o.users, o.seconds, o.server_pid)
        }))
    }

    #[test]
    fn parses_the_command_line() {
        let url = "--url ws://127.0.0.1:9000/v1/ws";
        assert_eq!(
            parse(url, Some("s")).unwrap(),
            "127.0.0.1:9000 /v1/ws Closed { in_flight: 3 } users=1000 s=5 pid=None"
        );
        assert_eq!(
            parse(&format!("{url} --users 10 --in-flight=16 --seconds 0.5 --server-pid 42"), Some("s")).unwrap(),
            "127.0.0.1:9000 /v1/ws Closed { in_flight: 16 } users=10 s=0.5 pid=Some(42)"
        );
        assert_eq!(
            parse(&format!("{url} --users 10 --rate 2 --secret x"), None).unwrap(),
            "127.0.0.1:9000 /v1/ws Paced { rate: 2.0 } users=10 s=5 pid=None"
        );
        assert_eq!(
            parse(&format!("{url} --idle 100 --server-pid 7"), Some("s")).unwrap(),
            "127.0.0.1:9000 /v1/ws Idle users=100 s=5 pid=Some(7)"
        );
        assert_eq!(parse("--help", None).unwrap(), "help");
        assert_eq!(
            parse(&format!("{url} --replay 4000 --store-pid 9"), Some("s")).unwrap(),
            "127.0.0.1:9000 /v1/ws Replay { messages: 4000 } users=1 s=5 pid=None"
        );
        let options = parse_args(
            format!("{url} --replay 8 --resume-url ws://127.0.0.1:9001/v1/ws --repeats 2 --follow-runs=0")
                .split_whitespace()
                .map(str::to_owned),
            Some("s".to_owned()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(options.resume, Some((SocketAddr::from(([127, 0, 0, 1], 9001)), "/v1/ws".to_owned())));
        assert_eq!((options.repeats, options.follow_runs, options.store_pid), (2, 0, None));
    }

    #[test]
    fn refuses_bad_flags_with_a_reason() {
        let url = "--url ws://127.0.0.1:9000/v1/ws";
        let error = |args: &str| parse(args, Some("s")).unwrap_err();
        assert!(error("").contains("`--url ws://127.0.0.1:PORT/v1/ws` is required"));
        assert!(error("--url http://127.0.0.1:1/").contains("must start with ws://"));
        assert!(error("--url ws://10.0.0.1:80/v1/ws").contains("only ws://127.0.0.1:PORT"));
        assert!(error("--url ws://localhost:80/v1/ws").contains("needs an address like"));
        assert!(error("--url ws://127.0.0.1:0/v1/ws").contains("only ws://127.0.0.1:PORT"));
        assert!(error(&format!("{url} --users 0")).contains("from 1 to 100000"));
        assert!(error(&format!("{url} --users many")).contains("`--users many` is not a whole number"));
        assert!(error(&format!("{url} --in-flight 17")).contains("from 1 to 16"));
        assert!(error(&format!("{url} --seconds -1")).contains("above 0"));
        assert!(error(&format!("{url} --rate 0")).contains("`--rate 0`"));
        assert!(error(&format!("{url} --rate 1 --in-flight 2")).contains("takes no `--in-flight`"));
        assert!(error(&format!("{url} --idle 5")).contains("--server-pid"));
        assert!(error(&format!("{url} --idle 5 --users 5 --server-pid 1")).contains("leave out `--users`"));
        assert!(error(&format!("{url} --users")).contains("`--users` needs a value"));
        assert!(error(&format!("{url} --frobnicate")).contains("unknown argument `--frobnicate`"));
        assert!(error(&format!("{url} --replay 0")).contains("from 1 to 1000000"));
        assert!(error(&format!("{url} --replay 10 --users 5")).contains("`--replay` drives one session"));
        assert!(error(&format!("{url} --replay 10 --rate 1")).contains("`--replay` drives one session"));
        assert!(error(&format!("{url} --resume-url ws://127.0.0.1:1/v1/ws")).contains("belong to `--replay M`"));
        assert!(error(&format!("{url} --repeats 2")).contains("belong to `--replay M`"));
        assert!(error(&format!("{url} --replay 10 --resume-url ws://10.0.0.1:1/")).contains("only ws://127.0.0.1"));
        assert!(parse(url, None).unwrap_err().contains("no secret"));
        assert!(parse(&format!("{url} --secret="), None).unwrap_err().contains("empty"));
    }

    #[test]
    fn the_url_keeps_its_path_and_query() {
        assert_eq!(parse_url("ws://127.0.0.1:80").unwrap().1, "/");
        assert_eq!(parse_url("ws://127.0.0.1:80/v1/ws?x=1").unwrap().1, "/v1/ws?x=1");
    }
}
