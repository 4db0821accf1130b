//! Replay mode (`--replay M`): one session's messages replayed to a resuming client on the node that owns the
//! session and on another one, and runs followed live from both.
//!
//! 1. **Produce.** A new session on `--url` (node A): `tools` runs (8 messages each), 16 in flight, until M messages
//!    (rounded up to whole runs) have arrived, each checked ([`Checker`]); their texts are kept. The connection is
//!    then dropped without `close`, so the session waits for a resume.
//! 2. **Replay**, `--repeats` times: resume with `after=0` on A (from its memory log) and, with `--resume-url`, on
//!    node B (another `serve --event-log` process sharing A's Redis: it reads the session's Stream with `XRANGE`),
//!    alternating, the order flipping every repetition. Each is timed from the start of the connect to the arrival
//!    of message M; every frame is compared byte for byte with the one produced, the `session` frame must say
//!    `resumed: true` and `last_seq: M`; the connection is then dropped.
//! 3. **Follow**, `--repeats` times, alternating the same way: resume after the session's last seq and start
//!    `--follow-runs` `echo` runs, one at a time: the time from sending each run to its `agent_started`. On A that is
//!    the owner's path with the Redis write in it; on B the run goes to A's inbox in Redis, A runs it and writes its
//!    events to the Stream, and B reads them from there.
//!
//! Every wait is bounded (`--finish-timeout` for the production, 30 s per replay, 10 s per run).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use gateway_load::check::{Checker, Received, RunPlan, Tally};
use gateway_load::stats::{median, percentile};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{Fatal, MachineLines, Options, Table, Ws, handshake, receive, user_id};

/// The gateway's limit on runs in progress per session.
const IN_FLIGHT: usize = 16;

/// Messages per `tools` run.
const TOOLS_MESSAGES: u64 = 8;

/// The longest one replay may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest one follow run may take to complete.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// The two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// `--url`: the session's owner, replaying from its memory.
    Owner,
    /// `--resume-url`: another node, replaying from Redis.
    Other,
}

impl Node {
    fn key(self) -> &'static str {
        match self {
            Node::Owner => "local",
            Node::Other => "remote",
        }
    }
}

/// A node, and what its resumes measured.
#[derive(Debug)]
struct Target {
    node: Node,
    addr: SocketAddr,
    /// The endpoint's path (and query).
    path: String,
    /// Each replay: from the connect to message M, and to the `session` frame.
    replays: Vec<(Duration, Duration)>,
    /// Every follow run's time from `run` to `agent_started`, in microseconds.
    follow: Tally,
}

/// Failures other than the checker's.
#[derive(Debug, Default)]
struct Faults {
    /// Replayed frames that differ from the produced ones (the `session` frame included).
    mismatched: u64,
    /// Messages a replay never delivered.
    missing: u64,
    /// Connections that failed, and the first reason.
    broken: u64,
    first: Option<String>,
}

impl Faults {
    fn broke(&mut self, why: String) {
        self.broken += 1;
        self.first.get_or_insert(why);
    }
}

/// The next text frame, within `deadline`; pings and pongs are skipped (tungstenite answers pings itself).
async fn next_text(ws: &mut Ws, deadline: tokio::time::Instant) -> Result<String, String> {
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.as_str().to_owned()),
            Ok(Some(Ok(Message::Close(frame)))) => return Err(format!("the server closed the connection: {frame:?}")),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => return Err(format!("the connection failed: {err}")),
            Ok(None) => return Err("the connection ended".to_owned()),
            Err(_) => return Err("no message within the time allowed".to_owned()),
        }
    }
}

fn resume_path(path: &str, session: &str, after: u64) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}session={session}&after={after}")
}

/// Produces the session's messages; their texts in `seq` order, and the time it took.
async fn produce(
    options: &Options,
    messages: u64,
    tally: &mut Tally,
) -> Result<(String, Vec<String>, Duration), Fatal> {
    let user = user_id(0);
    let (mut ws, first) = handshake(options, options.addr, &options.path, &user).await.map_err(|err| {
        Fatal::Usage(format!("cannot open a session at ws://{}{}: {err}", options.addr, options.path))
    })?;
    let mut checker = Checker::new(user.as_str());
    checker.receive(&first, Instant::now());
    let session = checker
        .session_id()
        .map(str::to_owned)
        .ok_or_else(|| Fatal::Failed(format!("the first frame is not a session frame with a session_id: {first}")))?;
    let plan = RunPlan::new("tools", "replay benchmark input").ok_or(Fatal::Usage("no tools agent".to_owned()))?;
    let runs = messages.div_ceil(TOOLS_MESSAGES);
    let mut produced = Vec::with_capacity((runs * TOOLS_MESSAGES) as usize);
    let deadline = tokio::time::Instant::now() + options.finish_timeout;
    let started = Instant::now();
    let mut sent = 0;
    while sent < runs || checker.outstanding() > 0 {
        while sent < runs && checker.outstanding() < IN_FLIGHT {
            let text = checker.start_run(&plan, Instant::now());
            ws.send(Message::text(text)).await.map_err(|err| Fatal::Failed(format!("cannot send a run: {err}")))?;
            sent += 1;
        }
        let text = next_text(&mut ws, deadline)
            .await
            .map_err(|err| Fatal::Failed(format!("while producing the session's messages: {err}")))?;
        checker.receive(&text, Instant::now());
        produced.push(text);
    }
    let took = started.elapsed();
    // Dropped without `close`: the session waits for a resume.
    drop(ws);
    let last = checker.last_seq();
    tally.merge(checker.finish());
    if last != produced.len() as u64 {
        return Err(Fatal::Failed(format!("{} messages arrived but the last seq is {last}", produced.len())));
    }
    Ok((session, produced, took))
}

/// One resume with `after=0` on `addr`, timed until the last message; the frames compared with `produced`.
async fn replay_once(
    options: &Options,
    target: &Target,
    session: &str,
    produced: &[String],
    faults: &mut Faults,
) -> Option<(Duration, Duration)> {
    let addr = target.addr;
    let started = Instant::now();
    let path = resume_path(&target.path, session, 0);
    let (mut ws, first) = match handshake(options, addr, &path, &user_id(0)).await {
        Ok(connected) => connected,
        Err(err) => {
            faults.broke(format!("resume at {addr}: {err}"));
            return None;
        }
    };
    let upgraded = started.elapsed();
    let frame: Value = serde_json::from_str(&first).unwrap_or_default();
    let last = produced.len() as u64;
    if frame["type"] != "session"
        || frame["session_id"] != session
        || frame["resumed"] != true
        || frame["last_seq"].as_u64() != Some(last)
    {
        faults.mismatched += 1;
    }
    let deadline = tokio::time::Instant::now() + REPLAY_TIMEOUT;
    let mut received = 0;
    while received < produced.len() {
        match next_text(&mut ws, deadline).await {
            Ok(text) => {
                if text != produced[received] {
                    faults.mismatched += 1;
                }
                received += 1;
            }
            Err(err) => {
                faults.missing += (produced.len() - received) as u64;
                faults.broke(format!("replay at {addr}, after {received} of {last} messages: {err}"));
                return None;
            }
        }
    }
    let took = started.elapsed();
    // Dropped without `close`, as a client whose network went away: the session waits for the next resume.
    drop(ws);
    Some((took, upgraded))
}

/// One follow connection on `addr`: resumes after `after`, runs `echo` `--follow-runs` times one at a time; the
/// session's last seq afterwards.
async fn follow_once(
    options: &Options,
    target: &Target,
    session: &str,
    after: u64,
    name: &str,
    tally: &mut Tally,
    faults: &mut Faults,
) -> u64 {
    let addr = target.addr;
    let path = resume_path(&target.path, session, after);
    let (mut ws, first) = match handshake(options, addr, &path, &user_id(0)).await {
        Ok(connected) => connected,
        Err(err) => {
            faults.broke(format!("follow at {addr}: {err}"));
            return after;
        }
    };
    // Request ids of its own: the session refuses one used before.
    let mut checker = Checker::resumed(format!("{}-{name}", user_id(0)), after);
    checker.receive(&first, Instant::now());
    let Some(plan) = RunPlan::new("echo", "follow") else { return after };
    'runs: for _ in 0..options.follow_runs {
        let text = checker.start_run(&plan, Instant::now());
        if let Err(err) = ws.send(Message::text(text)).await {
            faults.broke(format!("follow at {addr}: cannot send a run: {err}"));
            break;
        }
        let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
        while checker.outstanding() > 0 {
            let message = match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(message) => message,
                Err(_) => {
                    faults.broke(format!("follow at {addr}: a run did not complete within {RUN_TIMEOUT:?}"));
                    break 'runs;
                }
            };
            match receive(&mut checker, message) {
                Ok(Received::RunOver | Received::Nothing) => {}
                Err(err) => {
                    faults.broke(format!("follow at {addr}: {err}"));
                    break 'runs;
                }
            }
        }
    }
    let last = checker.last_seq();
    drop(ws);
    tally.merge(checker.finish());
    last
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The replay mode: see the [module docs](self).
pub(super) async fn run(options: &Options, messages: u64) -> Result<bool, Fatal> {
    let mut tally = Tally::default();
    let mut faults = Faults::default();
    let (session, produced, produce_time) = produce(options, messages, &mut tally).await?;
    let total = produced.len() as u64;

    let target = |node, addr, path| Target { node, addr, path, replays: Vec::new(), follow: Tally::default() };
    let mut nodes = vec![target(Node::Owner, options.addr, options.path.clone())];
    if let Some((addr, path)) = &options.resume {
        nodes.push(target(Node::Other, *addr, path.clone()));
    }
    // Alternating, the order flipping every repetition.
    let count = nodes.len();
    let order = |repeat: usize| -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        if repeat % 2 == 1 {
            order.reverse();
        }
        order
    };
    for repeat in 0..options.repeats {
        for at in order(repeat) {
            if let Some(timing) = replay_once(options, &nodes[at], &session, &produced, &mut faults).await {
                nodes[at].replays.push(timing);
            }
        }
    }
    let mut last = total;
    if options.follow_runs > 0 {
        for repeat in 0..options.repeats {
            for at in order(repeat) {
                let name = format!("{}{repeat}", nodes[at].node.key());
                let mut follow = Tally::default();
                last = follow_once(options, &nodes[at], &session, last, &name, &mut follow, &mut faults).await;
                nodes[at].follow.merge(follow);
            }
        }
    }

    println!(
        "gateway-load replay against {} (ws://{}{}{}): one session of {total} messages ({} tools runs), {} \
         resumes with after=0 per node, alternating, then {} echo runs followed per connection",
        options.label,
        options.addr,
        options.path,
        options.resume.as_ref().map_or(String::new(), |(addr, path)| format!(", and ws://{addr}{path}")),
        total / TOOLS_MESSAGES,
        options.repeats,
        options.follow_runs,
    );
    let mut table = Table::default();
    let mut lines = MachineLines::default();
    lines.add("label", &options.label);
    lines.add("messages", total);
    let produce_rate = total as f64 / produce_time.as_secs_f64().max(1e-9);
    table.row(
        "produced (one session, 16 runs in flight)",
        format!("{total} messages in {:.1} ms: {produce_rate:.0} messages/s", ms(produce_time)),
    );
    lines.add("produce_ms", format!("{:.2}", ms(produce_time)));
    lines.add("produce_msgs_per_s", format!("{produce_rate:.0}"));
    for measured in &mut nodes {
        let (key, addr) = (measured.node.key(), measured.addr);
        let what = match measured.node {
            Node::Owner => "the owner's memory",
            Node::Other => "Redis, on another node",
        };
        let times: Vec<f64> = measured.replays.iter().map(|(took, _)| ms(*took)).collect();
        let upgrades: Vec<f64> = measured.replays.iter().map(|(_, upgraded)| ms(*upgraded)).collect();
        if let (Some(took), Some(upgraded)) = (median(&times), median(&upgrades)) {
            let rate = total as f64 / (took / 1e3).max(1e-9);
            let fastest = times.iter().copied().fold(f64::INFINITY, f64::min);
            table.row(
                &format!("replay from {what} ({addr})"),
                format!(
                    "{rate:.0} messages/s: {took:.2} ms for {total} (fastest {fastest:.2} ms), upgrade {upgraded:.2} ms; \
                     median of {}",
                    measured.replays.len()
                ),
            );
            lines.add(&format!("replay_{key}_msgs_per_s"), format!("{rate:.0}"));
            lines.add(&format!("replay_{key}_ms"), format!("{took:.3}"));
            lines.add(&format!("replay_{key}_upgrade_ms"), format!("{upgraded:.3}"));
        }
        let latencies = &mut measured.follow.latencies_us;
        latencies.sort_unstable();
        if !latencies.is_empty() {
            let p50 = f64::from(percentile(latencies, 0.50)) / 1e3;
            let p99 = f64::from(percentile(latencies, 0.99)) / 1e3;
            table.row(
                &format!("follow on {} ({addr}): run -> agent_started", key),
                format!("p50 {p50:.3} ms, p99 {p99:.3} ms ({} runs)", latencies.len()),
            );
            lines.add(&format!("follow_{key}_p50_ms"), format!("{p50:.3}"));
            lines.add(&format!("follow_{key}_p99_ms"), format!("{p99:.3}"));
            lines.add(&format!("follow_{key}_runs"), latencies.len());
        }
    }
    for measured in nodes {
        tally.merge(measured.follow);
    }
    table.row("lost / gaps / misordered", format!("{} / {} / {}", tally.lost, tally.gaps, tally.misordered));
    table.row(
        "cross-user / wrong / duplicate terminals / errors",
        format!("{} / {} / {} / {}", tally.cross_user, tally.wrong, tally.duplicate_terminals, tally.errors),
    );
    table.row(
        "replayed frames mismatched / missing",
        format!("{} / {} (against the produced ones, byte for byte)", faults.mismatched, faults.missing),
    );
    table.row("connections broken", faults.broken.to_string());
    print!("{}", table.render());
    if let Some(why) = &faults.first {
        println!("first broken connection: {why}");
    }
    lines.add("last_seq", last);
    for (key, value) in [
        ("lost", tally.lost),
        ("gaps", tally.gaps),
        ("misordered", tally.misordered),
        ("cross_user", tally.cross_user),
        ("wrong", tally.wrong),
        ("duplicate_terminals", tally.duplicate_terminals),
        ("errors", tally.errors),
        ("malformed", tally.malformed),
        ("replay_mismatched", faults.mismatched),
        ("replay_missing", faults.missing),
        ("broken", faults.broken),
    ] {
        lines.add(key, value);
    }
    let failures = tally.failures() + faults.mismatched + faults.missing + faults.broken;
    lines.add("failures", failures);
    print!("{}", lines.0);
    Ok(failures == 0)
}
