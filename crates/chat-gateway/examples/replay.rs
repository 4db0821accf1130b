//! Replay-log benchmark: what a resumable session costs in memory, and how fast a resume replays.
//!
//! ```text
//! cargo run --release -p chat-gateway --example replay -- [--quick]
//! ```
//!
//! The gateway runs in-process on 127.0.0.1:0; live bytes come from a counting global allocator (`stats_alloc`).
//! - memory per idle session: N clients connect (a new session each) and leave with a close frame; each session,
//!   detached and waiting for a resume, holds its registry session, its pump task and its (empty) log record.
//!   Measured once the connections are gone, minus the same for N clients that said `close` (their sessions freed),
//!   so that what the allocator still counts for ended connections cancels out. N = 2,000 (`--quick`: 100).
//! - replay throughput over a WebSocket: one session whose run produced M messages (`agent_thinking`, all kept in
//!   its log: the limit is 4,096), resumed with `after = 1`: from the upgrade request to the last of the M - 1
//!   messages. M = 4,000 (`--quick`: 200).
//! - the log alone (`MemoryReplayLog`): bytes per session record (N records), bytes per retained message (4,096
//!   `agent_thinking` messages of 83-88 bytes of JSON in one log, the text included), and `replay_after` over
//!   that full log in batches of 64.
//!
//! Prints one line per figure on stdout: `BENCH\t<figure>\t<measured>\t<number>\t<target>\t<met>`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::alloc::System;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chat_gateway::Gateway;
use chat_gateway::auth::{self, Secret};
use chat_gateway::replay::{Attach, LoggedMessage, MemoryReplayLog, ReplayLog, SessionKey};
use core_registry::AgentRegistry;
use futures_util::{SinkExt as _, StreamExt as _};
use stats_alloc::StatsAlloc;
use tokio_tungstenite::tungstenite::Message;

// `stats_alloc` because a counting `GlobalAlloc` needs `unsafe impl`, which the workspace forbids.
#[global_allocator]
static ALLOC: StatsAlloc<System> = StatsAlloc::system();

const SECRET: &str = "replay-bench-secret-0123456789abcdef";

fn live_bytes() -> i64 {
    let stats = ALLOC.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64 + stats.bytes_reallocated as i64
}

fn bench(figure: &str, measured: String, value: f64, target: &str, met: &str) {
    println!("BENCH\t{figure}\t{measured}\t{value:.1}\t{target}\t{met}");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Result<Ws, String> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|err| format!("cannot connect: {err}"))?;
    Ok(ws)
}

/// The next text frame, as JSON.
async fn next(ws: &mut Ws) -> Result<serde_json::Value, String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no message for 30 s".to_owned())?
            .ok_or("the connection ended")?
            .map_err(|err| format!("websocket error: {err}"))?;
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).map_err(|err| format!("bad JSON: {err}"));
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn run(quick: bool) -> Result<(), String> {
    let (sessions, messages) = if quick { (100, 200) } else { (2_000, 4_000) };
    // The built-in agents plus `fast`, a `slow` without the wait between steps.
    let registry = agents::register_builtin(AgentRegistry::builder())
        .register("fast", || agents::Slow { step: Duration::ZERO })
        .build()
        .map_err(|err| err.to_string())?;
    // One user holds every measured session, so the per-user session cap is lifted.
    let gateway = Gateway::new(registry, Secret::new(SECRET).ok_or("empty secret")?)
        .resume_window(Duration::from_secs(600))
        .max_sessions_per_user(usize::MAX);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|err| err.to_string())?;
    let addr = listener.local_addr().map_err(|err| err.to_string())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(gateway.clone().serve(listener, shutdown.clone().cancelled_owned()));
    let token = auth::mint_token(
        &Secret::new(SECRET).ok_or("empty secret")?,
        "bench",
        Duration::from_secs(3600),
        auth::now_unix(),
    );
    let url = format!("ws://{addr}/v1/ws?token={token}");

    // Warm up: one session, so that lazily created runtime and registry state is not counted.
    let mut ws = connect(&url).await?;
    next(&mut ws).await?;
    ws.send(Message::text(r#"{"type":"close"}"#)).await.map_err(|err| err.to_string())?;
    drop(ws);
    wait_until("the warm-up session to close", || gateway.metrics().live_sessions == 0).await?;

    // Idle detached sessions, against as many connections whose sessions were closed: the connections cost the
    // same in both (the allocator still counts about 128 KiB per connection after it ended, a bare tokio-tungstenite
    // server as much), so the difference is what a session waiting for a resume holds.
    let before = live_bytes();
    for _ in 0..sessions {
        let mut ws = connect(&url).await?;
        next(&mut ws).await?;
        ws.send(Message::text(r#"{"type":"close"}"#)).await.map_err(|err| err.to_string())?;
        while next(&mut ws).await.is_ok() {}
    }
    wait_until("the sessions to close", || gateway.metrics().live_sessions == 0).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = live_bytes() - before;
    let before = live_bytes();
    for _ in 0..sessions {
        let mut ws = connect(&url).await?;
        next(&mut ws).await?;
        ws.send(Message::Close(None)).await.map_err(|err| err.to_string())?;
        while next(&mut ws).await.is_ok() {}
    }
    wait_until("the connections to end", || gateway.metrics().connections_open == 0).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let detached = live_bytes() - before;
    let per_session = (detached - closed) as f64 / sessions as f64;
    bench(
        "memory per idle detached session (registry session, pump task, replay log record)",
        format!(
            "{per_session:.0} B/session ({sessions} sessions waiting for a resume, against {sessions} closed ones)"
        ),
        per_session,
        "report",
        "n/a",
    );

    // One session whose run produced `messages` messages, all still in its log.
    let mut ws = connect(&url).await?;
    let session = next(&mut ws).await?["session_id"].as_str().ok_or("no session id")?.to_owned();
    ws.send(Message::text(format!(r#"{{"type":"run","agent":"fast","input":"{}","request_id":"r"}}"#, messages - 2)))
        .await
        .map_err(|err| err.to_string())?;
    let started = next(&mut ws).await?;
    if started["seq"] != 1 {
        return Err(format!("expected agent_started with seq 1, got {started}"));
    }
    drop(ws);
    wait_until("the run to end", || gateway.metrics().live_runs == 0).await?;

    // Replay over the WebSocket.
    let start = Instant::now();
    let mut ws = connect(&format!("{url}&session={session}&after=1")).await?;
    let frame = next(&mut ws).await?;
    let last = frame["last_seq"].as_u64().ok_or("no last_seq")?;
    let mut expected = 2;
    while expected <= last {
        let message = next(&mut ws).await?;
        if message["seq"] != expected {
            return Err(format!("replay gap: expected seq {expected}, got {message}"));
        }
        expected += 1;
    }
    let elapsed = start.elapsed();
    let replayed = last - 1;
    let rate = replayed as f64 / elapsed.as_secs_f64();
    bench(
        "replay throughput over a WebSocket (resume after=1)",
        format!(
            "{rate:.0} messages/s ({replayed} messages in {:.1} ms, upgrade included, 0 gaps)",
            elapsed.as_secs_f64() * 1e3
        ),
        rate,
        "report",
        "n/a",
    );
    ws.send(Message::text(r#"{"type":"close"}"#)).await.map_err(|err| err.to_string())?;
    drop(ws);
    let idle = sessions as u64;
    wait_until("the replayed session to close", || gateway.metrics().resumable_sessions == idle).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The log alone: a record per session, then retained messages of realistic size.
    let log = MemoryReplayLog::new(4096);
    let keys: Vec<SessionKey> = (0..sessions).map(|_| SessionKey::random()).collect();
    let before = live_bytes();
    for key in &keys {
        log.attach(*key, "bench", Attach::Open).map_err(|err| err.to_string())?;
    }
    let per_record = (live_bytes() - before) as f64 / sessions as f64;
    bench(
        "replay log: memory per idle session (its record, no message)",
        format!("{per_record:.0} B/session ({sessions} records in a MemoryReplayLog)"),
        per_record,
        "report",
        "n/a",
    );
    let key = keys[0];
    let before = live_bytes();
    for seq in 1..=4096u64 {
        let text = format!(
            r#"{{"type":"agent_thinking","seq":{seq},"run_id":"run-1","request_id":"r","text":"step {seq}/4096"}}"#
        );
        log.append(key, LoggedMessage::new(seq, text)).await.map_err(|err| err.to_string())?;
    }
    let per_message = (live_bytes() - before) as f64 / 4096.0;
    bench(
        "replay log: memory per retained message (agent_thinking, 83-88 B of JSON)",
        format!("{per_message:.0} B/message (4,096 messages in one session's log, text included)"),
        per_message,
        "report",
        "n/a",
    );

    // Replay in memory, without the network.
    let attached = log.attach(key, "bench", Attach::Resume { after: 0 }).map_err(|err| err.to_string())?;
    let rounds = if quick { 10 } else { 200 };
    let start = Instant::now();
    let mut total = 0usize;
    for _ in 0..rounds {
        let mut after = 0;
        while after < 4096 {
            let batch = log.replay_after(key, &attached, after, 64).await.map_err(|err| err.to_string())?;
            after = batch.last().map_or(after, |message| message.seq);
            total += batch.len();
        }
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    bench(
        "replay throughput in memory (MemoryReplayLog::replay_after, batches of 64)",
        format!("{:.1} M messages/s ({total} messages)", rate / 1e6),
        rate,
        "report",
        "n/a",
    );

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    Ok(())
}

fn main() -> ExitCode {
    let quick = std::env::args().skip(1).any(|arg| arg == "--quick");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(quick)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
