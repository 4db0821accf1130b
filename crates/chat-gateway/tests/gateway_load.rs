//! Many users at once: every event reaches its own user only, in order, with gap-free seq and exactly one terminal
//! event per run.

mod support;

use std::collections::HashMap;

use serde_json::Value;
use support::{Client, TestServer};

const USERS: usize = 200;

/// The runs each user starts at once, with the events each must produce, in order (`type` or `type:text`).
const RUNS: &[(&str, &str, &[&str])] = &[
    ("echo", "hello", &["agent_started", "agent_completed:succeeded"]),
    (
        "tools",
        "one two three",
        &[
            "agent_started",
            "agent_thinking:analysing 13 characters",
            "tool_executing:word_count",
            "tool_completed:word_count",
            "tool_executing:reverse",
            "tool_completed:reverse",
            "agent_thinking:composing the answer",
            "agent_completed:succeeded",
        ],
    ),
    (
        "slow",
        "3",
        &[
            "agent_started",
            "agent_thinking:step 1/3",
            "agent_thinking:step 2/3",
            "agent_thinking:step 3/3",
            "agent_completed:succeeded",
        ],
    ),
    ("fail", "x", &["agent_started", "agent_thinking:about to fail", "agent_completed:failed"]),
    ("panic", "", &["agent_started", "agent_thinking:about to panic", "agent_completed:failed"]),
];

fn describe(message: &Value) -> String {
    let kind = message["type"].as_str().unwrap();
    let detail = match kind {
        "agent_thinking" => &message["text"],
        "tool_executing" | "tool_completed" => &message["tool"],
        "agent_completed" => &message["outcome"],
        _ => return kind.to_owned(),
    };
    format!("{kind}:{}", detail.as_str().unwrap())
}

/// Runs every agent of [`RUNS`] concurrently for `user` and checks what comes back.
async fn exercise(mut client: Client, user: usize) {
    for (n, (agent, input, _)) in RUNS.iter().enumerate() {
        client.run(agent, input, &format!("u{user}-r{n}")).await;
    }
    // run_id -> (index into RUNS, events seen so far)
    let mut runs: HashMap<String, (usize, Vec<String>)> = HashMap::new();
    let mut completed = 0;
    while completed < RUNS.len() {
        // `recv` checks seq: 1, 2, 3, ... with no gap.
        let message = client.recv().await;
        let request_id = message["request_id"].as_str().unwrap_or_else(|| panic!("user {user} got {message}"));
        let (owner, index) = request_id.trim_start_matches('u').split_once("-r").unwrap();
        assert_eq!(owner.parse::<usize>().unwrap(), user, "user {user} got another user's event: {message}");
        let index: usize = index.parse().unwrap();
        let run = runs.entry(message["run_id"].as_str().unwrap().to_owned()).or_insert((index, Vec::new()));
        assert_eq!(run.0, index, "one run, one request id: {message}");
        assert!(
            !run.1.last().is_some_and(|last| last.starts_with("agent_completed")),
            "event after the end: {message}"
        );
        run.1.push(describe(&message));
        if message["type"] == "agent_completed" {
            completed += 1;
            assert_eq!(run.1, RUNS[index].2, "run {index} of user {user}");
        }
    }
    assert_eq!(runs.len(), RUNS.len());
    let total: usize = RUNS.iter().map(|(_, _, events)| events.len()).sum();
    assert_eq!(client.last_seq, total as u64, "user {user} received extra messages");
    // Leave for good, so the session does not wait for a resume.
    client.send(serde_json::json!({"type": "close"})).await;
    assert_eq!(client.recv_close().await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_gets_their_own_events_in_order() {
    let server = TestServer::start_with(RUNS.len(), std::time::Duration::from_secs(5)).await;
    let mut clients = Vec::with_capacity(USERS);
    for user in 0..USERS {
        clients.push(server.connect(&format!("user-{user}")).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (user, client) in clients.into_iter().enumerate() {
        tasks.spawn(exercise(client, user));
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let metrics = server.gateway.metrics();
    let events: usize = RUNS.iter().map(|(_, _, events)| events.len()).sum();
    assert_eq!(metrics.events_sent_total, (USERS * events) as u64);
    assert_eq!((metrics.runs_started_total, metrics.errors_sent_total), ((USERS * RUNS.len()) as u64, 0));
    drop(tasks);
    server.wait_idle().await;
}
