//! Sessions that survive the network: drops, resumes, the replay log, takeover, token expiry, idempotent runs.
//! A real server on a loopback port and a real WebSocket client; a drop is the client's TCP connection going away
//! without a close frame.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chat_gateway::auth::Secret;
use chat_gateway::{Gateway, builtin_registry};
use core_registry::{AgentError, AgentRegistry, RunContext, async_trait};
use serde_json::{Value, json};
use support::{Client, PATIENCE, SECRET, TestServer, steps, token_for};
use tokio::sync::Semaphore;

fn gateway() -> Gateway {
    Gateway::new(builtin_registry(8).unwrap(), Secret::new(SECRET).unwrap())
}

/// Waits until the gateway has no connection open (the last one's end has been seen and its session detached).
async fn wait_disconnected(server: &TestServer) {
    let wait = async {
        while server.gateway.metrics().connections_open > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("the connection did not end");
}

#[tokio::test]
async fn abrupt_drop_mid_run_then_resume_delivers_the_rest_exactly_once() {
    let server = TestServer::start_gateway(gateway()).await;
    let mut client = server.connect("alice").await;
    let session = client.session_id();
    client.run("slow", "30", "r1").await;
    let mut seen = client.recv_until("agent_thinking", None).await;
    seen.extend(client.recv_until("agent_thinking", None).await);
    let after = client.last_seq;
    drop(client);
    wait_disconnected(&server).await;

    let mut client = server.resume("alice", &session, after).await.unwrap();
    assert_eq!(client.session["resumed"], true);
    assert_eq!(client.session["session_id"], session.as_str());
    assert!(client.session["last_seq"].as_u64().unwrap() >= after, "{}", client.session);
    // `recv` checks that each seq is the previous one plus one, starting right after `after`.
    seen.extend(client.recv_until("agent_completed", None).await);
    let expected: Vec<String> = std::iter::once("agent_started".to_owned())
        .chain((1..=30).map(|step| format!("step {step}/30")))
        .chain(std::iter::once(r#""succeeded": "done after 30 steps""#.to_owned()))
        .collect();
    assert_eq!(steps(&seen), expected);
    // Nothing after the terminal event: the next message is the answer to the next request.
    let next = client.run_to_end("echo", "after", "r2").await;
    assert_eq!(next[0]["seq"], 33);
}

#[tokio::test]
async fn resume_after_zero_replays_everything_then_goes_live() {
    let server = TestServer::start_gateway(gateway()).await;
    let mut client = server.connect("alice").await;
    let first = client.run_to_end("tools", "a b", "r1").await;
    let session = client.session_id();
    drop(client);
    wait_disconnected(&server).await;
    let mut client = server.resume("alice", &session, 0).await.unwrap();
    assert_eq!(client.session["last_seq"], 8);
    let mut replayed = Vec::new();
    for _ in 0..8 {
        replayed.push(client.recv().await);
    }
    assert_eq!(replayed, first);
    let live = client.run_to_end("echo", "live", "r2").await;
    assert_eq!(live[0]["seq"], 9);
}

#[tokio::test]
async fn unknown_foreign_and_expired_sessions_get_one_404() {
    let server = TestServer::start_gateway(gateway().resume_window(Duration::from_millis(50))).await;
    let mut alice = server.connect("alice").await;
    alice.run_to_end("echo", "hi", "r").await;
    let session = alice.session_id();
    // Alice's session, attached or not, is not Bob's.
    let foreign = server.resume("bob", &session, 0).await.err().expect("bob must not resume alice's session");
    let unknown = server.resume("alice", &"0".repeat(32), 0).await.err().unwrap();
    let malformed = server.resume("alice", "session-1", 0).await.err().unwrap();
    drop(alice);
    server.wait_idle().await;
    let expired = server.resume("alice", &session, 0).await.err().unwrap();
    let expected = (404, r#"application/json {"error":"unknown_session"}"#.to_owned() + "\n");
    for (name, answer) in [("foreign", foreign), ("unknown", unknown), ("malformed", malformed), ("expired", expired)] {
        assert_eq!(answer, expected, "{name}");
    }
    assert_eq!(server.gateway.metrics().resumes_total, 0);
}

#[tokio::test]
async fn a_gap_is_409_naming_the_first_seq_held() {
    let server = TestServer::start_gateway(gateway().replay_limit(4)).await;
    let mut client = server.connect("alice").await;
    let all = client.run_to_end("tools", "a b", "r1").await;
    let session = client.session_id();
    drop(client);
    wait_disconnected(&server).await;
    // The log holds the last 4 of the 8 messages: 5..=8.
    for after in [0, 3] {
        let refused = server.resume("alice", &session, after).await.err().unwrap();
        assert_eq!(refused, (409, r#"application/json {"error":"resume_gap","first_seq":5}"#.to_owned() + "\n"));
    }
    // Claiming more than the session produced is refused the same way.
    assert_eq!(server.resume("alice", &session, 9).await.err().unwrap().0, 409);
    let mut client = server.resume("alice", &session, 4).await.unwrap();
    let mut replayed = Vec::new();
    for _ in 0..4 {
        replayed.push(client.recv().await);
    }
    assert_eq!(replayed, all[4..]);
}

#[tokio::test]
async fn resuming_elsewhere_takes_over_with_close_4000() {
    let server = TestServer::start_gateway(gateway()).await;
    let mut first = server.connect("alice").await;
    first.run("slow", "100000", "r1").await;
    first.recv().await;
    let mut second = server.resume("alice", &first.session_id(), first.last_seq).await.unwrap();
    assert_eq!(first.recv_close_skipping_text().await, 4000);
    // The run goes on, now on the second connection only.
    assert_eq!(second.recv().await["type"], "agent_thinking");
    assert_eq!(server.gateway.metrics().resumes_total, 1);
}

#[tokio::test]
async fn token_expiry_closes_with_4001_and_a_fresh_token_resumes_without_loss() {
    let server = TestServer::start_gateway(gateway()).await;
    // Expires 1 to 2 s from now (`exp` is in whole seconds).
    let short = token_for("alice", Duration::from_secs(2));
    let mut client = server.connect_with(&short, "").await.unwrap();
    client.run("slow", "250", "r1").await;
    let mut seen = Vec::new();
    let code = loop {
        match client.next_or_close().await {
            Ok(message) => seen.push(message),
            Err(code) => break code,
        }
    };
    assert_eq!(code, 4001);
    assert!(seen.last().is_none_or(|last| last["type"] != "agent_completed"), "the run must still be in flight");
    let mut client = server.resume("alice", &client.session_id(), client.last_seq).await.unwrap();
    seen.extend(client.recv_until("agent_completed", None).await);
    let texts = steps(&seen);
    assert_eq!(texts.len(), 252, "every step exactly once: {texts:?}");
    assert_eq!(texts[250], "step 250/250");
}

#[tokio::test]
async fn a_reused_request_id_is_a_duplicate_request_also_after_resume() {
    let server = TestServer::start_gateway(gateway()).await;
    let mut client = server.connect("alice").await;
    client.run("slow", "100000", "r1").await;
    let run_id = client.recv().await["run_id"].clone();
    client.run("slow", "100000", "r1").await;
    let error = client.recv_until("error", None).await.pop().unwrap();
    assert_eq!(
        (&error["code"], &error["run_id"], &error["request_id"]),
        (&json!("duplicate_request"), &run_id, &json!("r1"))
    );
    let session = client.session_id();
    let after = client.last_seq;
    drop(client);
    // Unsure whether its run arrived, the client sends it again after the resume.
    let mut client = server.resume("alice", &session, after).await.unwrap();
    client.run("slow", "100000", "r1").await;
    let error = client.recv_until("error", None).await.pop().unwrap();
    assert_eq!((&error["code"], &error["run_id"]), (&json!("duplicate_request"), &run_id));
    assert_eq!((server.gateway.metrics().runs_started_total, server.gateway.metrics().live_runs), (1, 1));
}

#[tokio::test]
async fn cancel_after_resume_ends_the_run() {
    let server = TestServer::start_gateway(gateway()).await;
    let mut client = server.connect("alice").await;
    client.run("slow", "100000", "r1").await;
    let run_id = client.recv().await["run_id"].as_str().unwrap().to_owned();
    let (session, after) = (client.session_id(), client.last_seq);
    drop(client);
    wait_disconnected(&server).await;
    let mut client = server.resume("alice", &session, after).await.unwrap();
    client.send(json!({"type": "cancel", "run_id": run_id})).await;
    let messages = client.recv_until("agent_completed", Some(&run_id)).await;
    assert_eq!(messages.last().unwrap()["outcome"], "cancelled");
    assert_eq!(server.gateway.metrics().live_runs, 0);
}

/// Emits `N` `agent_thinking` events as fast as it can, once the test lets it go.
struct Gated(Arc<Semaphore>);

#[async_trait]
impl core_registry::Agent for Gated {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        let n: u32 = input.parse().map_err(|_| AgentError::failed("input: a number of events"))?;
        let _permit = self.0.acquire().await.map_err(|_| AgentError::failed("gate closed"))?;
        for step in 1..=n {
            ctx.thinking(format!("step {step}/{n}")).await?;
        }
        Ok(format!("done after {n} steps"))
    }
}

#[tokio::test]
async fn a_fast_run_while_detached_waits_for_room_and_loses_nothing() {
    let gate = Arc::new(Semaphore::new(0));
    let agent_gate = Arc::clone(&gate);
    let registry =
        AgentRegistry::builder().register("gated", move || Gated(Arc::clone(&agent_gate))).event_buffer(4).build();
    let gateway = Gateway::new(registry.unwrap(), Secret::new(SECRET).unwrap()).replay_limit(4);
    let server = TestServer::start_gateway(gateway).await;
    let mut client = server.connect("alice").await;
    client.run("gated", "1000", "r1").await;
    let started = client.recv().await;
    let session = client.session_id();
    drop(client);
    wait_disconnected(&server).await;
    gate.add_permits(1);
    // The log fills with 4 unsent messages (seq 2..=5), then the run waits instead of pushing one out.
    let produced = async {
        while server.gateway.metrics().events_sent_total < 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(PATIENCE, produced).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let metrics = server.gateway.metrics();
    assert_eq!((metrics.events_sent_total, metrics.live_runs), (5, 1), "the detached run must wait");

    let mut client = server.resume("alice", &session, 1).await.unwrap();
    let mut messages = vec![started];
    messages.extend(client.recv_until("agent_completed", None).await);
    assert_eq!(messages.len(), 1002);
    assert_eq!(steps(&messages)[1000], "step 1000/1000");
    assert_eq!(steps(&messages)[1001], r#""succeeded": "done after 1000 steps""#);
}

#[tokio::test]
async fn the_window_ending_frees_everything() {
    let server = TestServer::start_gateway(gateway().resume_window(Duration::from_millis(100))).await;
    let mut client = server.connect("alice").await;
    client.run("slow", "100000", "r1").await;
    client.recv().await;
    let session = client.session_id();
    drop(client);
    wait_disconnected(&server).await;
    assert_eq!((server.gateway.metrics().resumable_sessions, server.gateway.metrics().live_runs), (1, 1));
    server.wait_idle().await;
    assert_eq!(server.gateway.metrics().resumable_sessions, 0);
    assert_eq!(server.resume("alice", &session, 1).await.err().unwrap().0, 404);
}

/// A small deterministic generator (xorshift64*), so that a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Random runs, random reads, random drops and resumes (sometimes from further back than the client has), with the
/// client doing what the README asks (resend each run it has no answer to, with the same request id): the stream
/// it reassembles by seq equals the session's own stream, replayed whole at the end, and every run ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_drops_and_resumes_lose_nothing_and_repeat_nothing() {
    const SEEDS: u64 = 12;
    const STEPS: usize = 40;
    // Room for every run of a scenario at once, so that no run is refused with `too_many_runs`.
    let gateway = Gateway::new(builtin_registry(STEPS).unwrap(), Secret::new(SECRET).unwrap());
    let server = TestServer::start_gateway(gateway.replay_limit(100_000)).await;
    for seed in 1..=SEEDS {
        let user = format!("user-{seed}");
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut client = server.connect(&user).await;
        let session = client.session_id();
        // Every message received, by seq; a replayed one must be identical to the first copy.
        let mut stream: BTreeMap<u64, Value> = BTreeMap::new();
        // Every run sent: request id -> (agent, input).
        let mut sent: BTreeMap<String, (&str, &str)> = BTreeMap::new();
        for step in 0..STEPS {
            match rng.below(4) {
                0 | 1 => {
                    let (agent, input) =
                        [("echo", "e"), ("tools", "x y"), ("slow", "3"), ("fail", "f")][rng.below(4) as usize];
                    let request_id = format!("s{seed}-r{step}");
                    client.run(agent, input, &request_id).await;
                    sent.insert(request_id, (agent, input));
                }
                2 => {
                    for _ in 0..rng.below(6) {
                        if all_ended(&stream, &sent) {
                            break;
                        }
                        record(&mut stream, client.recv().await);
                    }
                }
                _ => {
                    let have = client.last_seq;
                    drop(client);
                    // Resume after what it has, or from a little further back (it then sees repeats, by seq).
                    let after = have.saturating_sub(rng.below(3));
                    client = server
                        .resume(&user, &session, after)
                        .await
                        .unwrap_or_else(|refused| panic!("seed {seed}: resume after {after} refused: {refused:?}"));
                    // A run may have been lost with the connection: send again each one without an answer yet.
                    for (request_id, (agent, input)) in &sent {
                        if !answered(&stream, request_id) {
                            client.run(agent, input, request_id).await;
                        }
                    }
                }
            }
        }
        // Read until every run has ended: each read is bounded by the client's patience.
        while !all_ended(&stream, &sent) {
            record(&mut stream, client.recv().await);
        }
        // The session's stream, from its own log.
        drop(client);
        let mut whole = server.resume(&user, &session, 0).await.unwrap();
        let last = whole.session["last_seq"].as_u64().unwrap();
        let mut truth = BTreeMap::new();
        for _ in 0..last {
            record(&mut truth, whole.recv().await);
        }
        // The client stopped reading once every run had ended; what the session produced after that can only be
        // answers to runs it sent again (`duplicate_request`), which it did not wait for. Up to there, its stream has
        // no gap and equals the session's.
        let seen = stream.keys().next_back().copied().unwrap_or(0);
        assert_eq!(stream.keys().copied().collect::<Vec<_>>(), (1..=seen).collect::<Vec<_>>(), "seed {seed}");
        let after_seen: Vec<&Value> = truth.range(seen + 1..).map(|(_, message)| message).collect();
        for message in &after_seen {
            assert_eq!(message["code"], "duplicate_request", "seed {seed}: the client missed {message}");
        }
        let head: BTreeMap<u64, Value> = truth.range(..=seen).map(|(seq, message)| (*seq, message.clone())).collect();
        assert_eq!(stream, head, "seed {seed}");
        assert_eq!(seen + after_seen.len() as u64, last, "seed {seed}");
        check_runs(&truth, sent.len(), seed);
        whole.send(json!({"type": "close"})).await;
        assert_eq!(whole.recv_close().await, 1000);
    }
    // The scenarios did drop and resume (about 10 times per seed, plus the final whole replay).
    let resumes = server.gateway.metrics().resumes_total;
    assert!(resumes >= 5 * SEEDS, "only {resumes} resumes");
    server.wait_idle().await;
}

/// Whether the run sent with `request_id` was answered: it started, or was refused as a duplicate.
fn answered(stream: &BTreeMap<u64, Value>, request_id: &str) -> bool {
    stream.values().any(|message| message["request_id"] == request_id)
}

/// Whether every run sent has its terminal event.
fn all_ended(stream: &BTreeMap<u64, Value>, sent: &BTreeMap<String, (&str, &str)>) -> bool {
    sent.keys().all(|request_id| {
        stream
            .values()
            .any(|message| message["request_id"] == request_id.as_str() && message["type"] == "agent_completed")
    })
}

/// Keeps `message` under its seq; a second copy must be identical.
fn record(stream: &mut BTreeMap<u64, Value>, message: Value) {
    let seq = message["seq"].as_u64().unwrap();
    if let Some(first) = stream.get(&seq) {
        assert_eq!(first, &message, "seq {seq} replayed differently");
    } else {
        stream.insert(seq, message);
    }
}

/// Each run: `agent_started` first, one terminal event last, in between only its own events; the only errors are
/// `duplicate_request`s for runs that did start.
fn check_runs(stream: &BTreeMap<u64, Value>, runs_started: usize, seed: u64) {
    let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in stream.values() {
        if message["type"] == "error" {
            assert_eq!(message["code"], "duplicate_request", "seed {seed}: {message}");
            continue;
        }
        runs.entry(message["run_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(message["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(runs.len(), runs_started, "seed {seed}");
    for (run, kinds) in runs {
        assert_eq!(kinds.first().map(String::as_str), Some("agent_started"), "seed {seed} {run}");
        assert_eq!(kinds.iter().filter(|kind| *kind == "agent_completed").count(), 1, "seed {seed} {run}");
        assert_eq!(kinds.last().map(String::as_str), Some("agent_completed"), "seed {seed} {run}");
    }
}

impl Client {
    /// Like `recv_close`, but skips the text messages that were on their way before the close frame.
    async fn recv_close_skipping_text(&mut self) -> u16 {
        loop {
            match self.next_or_close().await {
                Ok(_) => continue,
                Err(code) => return code,
            }
        }
    }
}
