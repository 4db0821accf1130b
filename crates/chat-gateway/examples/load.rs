//! Load benchmark: many concurrent WebSocket users on loopback, each running agents for a bounded time.
//!
//! ```text
//! cargo run --release -p chat-gateway --example load -- [--quick] [--users N] [--seconds S]
//! ```
//!
//! Defaults: 1,000 users for 5 s (`--quick`: 50 users for 1 s). The gateway runs in-process on 127.0.0.1:0 with
//! the built-in agents; each user keeps three runs in flight, cycling `echo`, `tools` and `slow` (3 steps of
//! 10 ms), and starts a new run whenever one completes, until the time is up; then every outstanding run is awaited.
//!
//! What is measured:
//! - events/s: lifecycle events received by all clients, divided by the time from the first run request to the
//!   last terminal event.
//! - latency: agents cannot stamp their emit time on the wire, so this is the client-side time from sending `run`
//!   to receiving that run's `agent_started`. It covers parsing, starting the run, the emit, the session's event
//!   buffer, serialisation and the WebSocket round trip, so it bounds the emit-to-receipt latency of the first event
//!   from above.
//! - lost: events a run should have produced (the agents are deterministic) but that never arrived, including runs
//!   without a terminal event. Misordered: a `seq` that is not the previous one plus one, or a run whose events
//!   differ in order from the agent's script. Cross-user: an event whose `request_id` names another user or whose
//!   run this connection never started.
//!
//! Each user needs two file descriptors (client and server side of the socket): 1,000 users need about 2,100. The
//! benchmark reads the soft limit from `/proc/self/limits` and stops with a hint (`ulimit -n 4096`) if it is too low.
//!
//! Besides a small table, it prints one machine-readable line per figure on stdout:
//! `BENCH\t<figure>\t<measured, human text>\t<number>\t<target text>\t<yes|no|n/a>`. It exits with status 1 if
//! any event was lost, misordered or crossed users.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_gateway::auth::{self, Secret};
use chat_gateway::{Gateway, builtin_registry};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// The agents each user cycles through, with the event types each run produces, in order.
const SCRIPTS: &[(&str, &str, &[&str])] = &[
    ("echo", "hello", &["agent_started", "agent_completed"]),
    (
        "tools",
        "load test input",
        &[
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed",
            "tool_executing",
            "tool_completed",
            "agent_thinking",
            "agent_completed",
        ],
    ),
    ("slow", "3", &["agent_started", "agent_thinking", "agent_thinking", "agent_thinking", "agent_completed"]),
];

/// Runs each user keeps in flight.
const IN_FLIGHT: usize = 3;

/// How long to wait for outstanding runs after the time is up.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

struct Options {
    users: usize,
    seconds: f64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options { users: 1000, seconds: 5.0 };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options = Options { users: 50, seconds: 1.0 },
            "--users" => {
                options.users = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("`--users` needs a number above 0")?
            }
            "--seconds" => {
                options.seconds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n: &f64| n.is_finite() && *n > 0.0)
                    .ok_or("`--seconds` needs a number above 0")?
            }
            other => {
                return Err(format!("unknown argument `{other}`; usage: load [--quick] [--users N] [--seconds S]"));
            }
        }
    }
    Ok(options)
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` where unknown.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    if soft == "unlimited" { Some(u64::MAX) } else { soft.parse().ok() }
}

/// What one user observed.
#[derive(Default)]
struct Tally {
    events: u64,
    runs: u64,
    lost: u64,
    misordered: u64,
    cross_user: u64,
    failed_connections: u64,
    latencies_us: Vec<u64>,
}

struct Run {
    script: usize,
    sent_at: Instant,
    seen: usize,
    done: bool,
}

struct User {
    addr: std::net::SocketAddr,
    token: String,
    user: usize,
    handshakes: Arc<Semaphore>,
    start: Arc<tokio::sync::Barrier>,
    stop: CancellationToken,
}

async fn user(User { addr, token, user, handshakes, start, stop }: User) -> Tally {
    let mut tally = Tally::default();
    let permit = handshakes.acquire_owned().await;
    let connected = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws?token={token}")).await;
    drop(permit);
    start.wait().await;
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(err) => {
            eprintln!("user {user}: cannot connect: {err}");
            tally.failed_connections = 1;
            return tally;
        }
    };
    // The first frame is the unnumbered `session` frame; anything else is out of order.
    match tokio::time::timeout(FINISH_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.starts_with(r#"{"type":"session","#) => {}
        _ => tally.misordered += 1,
    }

    let mut runs: HashMap<u64, Run> = HashMap::new(); // by request number
    let mut run_ids: HashMap<String, u64> = HashMap::new();
    let (mut next_request, mut outstanding, mut last_seq) = (0u64, 0usize, 0u64);
    loop {
        while outstanding < IN_FLIGHT && !stop.is_cancelled() {
            let script = next_request as usize % SCRIPTS.len();
            let (agent, input, _) = SCRIPTS[script];
            let text = format!(
                r#"{{"type":"run","agent":"{agent}","input":"{input}","request_id":"u{user}-{next_request}"}}"#
            );
            runs.insert(next_request, Run { script, sent_at: Instant::now(), seen: 0, done: false });
            if ws.send(Message::text(text)).await.is_err() {
                break;
            }
            next_request += 1;
            outstanding += 1;
        }
        if outstanding == 0 {
            break;
        }
        let message = if stop.is_cancelled() {
            tokio::time::timeout(FINISH_TIMEOUT, ws.next()).await.ok().flatten()
        } else {
            tokio::select! {
                message = ws.next() => message,
                () = stop.cancelled() => continue,
            }
        };
        let Some(Ok(message)) = message else { break };
        let Message::Text(text) = message else { continue };
        let received_at = Instant::now();
        let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
            tally.misordered += 1;
            continue;
        };
        tally.events += 1;
        let seq = value["seq"].as_u64().unwrap_or(0);
        if seq != last_seq + 1 {
            tally.misordered += 1;
        }
        last_seq = seq;

        let request =
            value["request_id"].as_str().and_then(|id| id.strip_prefix('u')).and_then(|id| id.split_once('-'));
        let Some((owner, number)) = request else {
            tally.cross_user += 1;
            continue;
        };
        let (Ok(owner), Ok(number)) = (owner.parse::<usize>(), number.parse::<u64>()) else {
            tally.cross_user += 1;
            continue;
        };
        let run_id = value["run_id"].as_str().unwrap_or_default().to_owned();
        if owner != user || *run_ids.entry(run_id).or_insert(number) != number {
            tally.cross_user += 1;
            continue;
        }
        let Some(run) = runs.get_mut(&number) else {
            tally.cross_user += 1;
            continue;
        };
        let script = SCRIPTS[run.script].2;
        let kind = value["type"].as_str().unwrap_or_default();
        if run.done || script.get(run.seen) != Some(&kind) {
            tally.misordered += 1;
        }
        if run.seen == 0 {
            tally.latencies_us.push(received_at.duration_since(run.sent_at).as_micros() as u64);
        }
        run.seen += 1;
        if kind == "agent_completed" && !run.done {
            run.done = true;
            outstanding -= 1;
            tally.runs += 1;
        }
    }
    for run in runs.values() {
        tally.lost += SCRIPTS[run.script].2.len().saturating_sub(run.seen) as u64;
    }
    let _ = ws.close(None).await;
    tally
}

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn bench_line(figure: &str, human: &str, number: f64, target: &str, met: &str) {
    println!("BENCH\t{figure}\t{human}\t{number}\t{target}\t{met}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let needed = options.users as u64 * 2 + 100;
    if let Some(limit) = open_files_limit().filter(|limit| *limit < needed) {
        eprintln!(
            "error: {} users need about {needed} open files, the limit is {limit}; raise it with `ulimit -n {}` or pass --users",
            options.users,
            needed.next_power_of_two()
        );
        return ExitCode::from(2);
    }

    let secret = Secret::new("load-benchmark-secret").unwrap_or_else(|| unreachable!());
    let registry = builtin_registry(IN_FLIGHT).unwrap_or_else(|err| panic!("cannot build the registry: {err}"));
    let gateway = Gateway::new(registry, secret.clone()).drain_timeout(Duration::ZERO);
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on 127.0.0.1: {err}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or_else(|err| panic!("no local address: {err}"));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(gateway.clone().serve(listener, shutdown.clone().cancelled_owned()));

    // Connect everyone (at most 100 handshakes at a time), then start all users together.
    let start = Arc::new(tokio::sync::Barrier::new(options.users + 1));
    let stop = CancellationToken::new();
    let handshakes = Arc::new(Semaphore::new(100));
    let mut users = tokio::task::JoinSet::new();
    for n in 0..options.users {
        let token = auth::mint_token(&secret, &format!("user-{n}"), Duration::from_secs(3600), auth::now_unix());
        let (start, stop, handshakes) = (Arc::clone(&start), stop.clone(), Arc::clone(&handshakes));
        users.spawn(user(User { addr, token, user: n, handshakes, start, stop }));
    }
    start.wait().await;
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(options.seconds)).await;
    stop.cancel();
    let mut total = Tally::default();
    while let Some(tally) = users.join_next().await {
        let Ok(tally) = tally else { continue };
        total.events += tally.events;
        total.runs += tally.runs;
        total.lost += tally.lost;
        total.misordered += tally.misordered;
        total.cross_user += tally.cross_user;
        total.failed_connections += tally.failed_connections;
        total.latencies_us.extend(tally.latencies_us);
    }
    let elapsed = began.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = server.await;

    total.latencies_us.sort_unstable();
    let events_per_sec = total.events as f64 / elapsed;
    let p50 = percentile(&total.latencies_us, 0.50) as f64 / 1000.0;
    let p99 = percentile(&total.latencies_us, 0.99) as f64 / 1000.0;

    println!(
        "chat-gateway load: {} users ({} failed to connect), {:.1} s of runs, {:.2} s in all",
        options.users, total.failed_connections, options.seconds, elapsed
    );
    println!("{:<28} {:>14}", "figure", "measured");
    println!("{:<28} {:>14}", "runs completed", total.runs);
    println!("{:<28} {:>14}", "events received", total.events);
    println!("{:<28} {:>14.0}", "events/s", events_per_sec);
    println!("{:<28} {:>11.2} ms", "p50 run->agent_started", p50);
    println!("{:<28} {:>11.2} ms", "p99 run->agent_started", p99);
    println!("{:<28} {:>14}", "lost events", total.lost);
    println!("{:<28} {:>14}", "misordered events", total.misordered);
    println!("{:<28} {:>14}", "cross-user events", total.cross_user);

    let zero = |n: u64| if n == 0 { "yes" } else { "no" };
    bench_line(
        "events/s",
        &format!("{events_per_sec:.0} events/s, {} users", options.users),
        events_per_sec.round(),
        "report",
        "n/a",
    );
    bench_line("p50 latency", &format!("{p50:.2} ms run->agent_started"), p50, "report", "n/a");
    bench_line("p99 latency", &format!("{p99:.2} ms run->agent_started"), p99, "report", "n/a");
    bench_line("lost events", &total.lost.to_string(), total.lost as f64, "0", zero(total.lost));
    bench_line(
        "misordered events",
        &total.misordered.to_string(),
        total.misordered as f64,
        "0",
        zero(total.misordered),
    );
    bench_line(
        "cross-user events",
        &total.cross_user.to_string(),
        total.cross_user as f64,
        "0",
        zero(total.cross_user),
    );

    if total.lost + total.misordered + total.cross_user == 0 && total.failed_connections == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
