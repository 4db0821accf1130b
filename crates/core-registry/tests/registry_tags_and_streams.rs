//! Tagged runs, the `Stream` implementation and `poll_recv`, and cancellation as the agent sees it.

mod common;

use std::collections::BTreeMap;
use std::task::Poll;

use core_registry::{Agent, AgentError, AgentRegistry, EventKind, Outcome, RunContext, async_trait};
use futures_util::StreamExt as _;

use common::{Scripted, check_stream, outcome_of, recv_until_terminals};

/// Waits for its cancellation through the context, then reports what it saw (the registry ends the run first).
#[derive(Debug)]
struct WaitsForCancel;

#[async_trait]
impl Agent for WaitsForCancel {
    async fn run(&self, ctx: &mut RunContext, _input: String) -> Result<String, AgentError> {
        assert!(!ctx.is_cancelled());
        ctx.thinking(format!("tag {:?}", ctx.tag())).await?;
        ctx.cancelled().await;
        Ok("unreachable: the registry ends a cancelled run at its next await".to_owned())
    }
}

fn registry() -> AgentRegistry {
    AgentRegistry::builder().register("scripted", || Scripted).register("waits", || WaitsForCancel).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_tagged_run_carries_its_tag() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    let mut tags = BTreeMap::new();
    for n in 0..20 {
        let script = if n % 2 == 0 { "toeu" } else { "tytF" };
        let run = if n % 5 == 4 {
            session.run("scripted", script).unwrap()
        } else {
            session.run_tagged("scripted", script, format!("request-{n}")).unwrap()
        };
        tags.insert(run, (n % 5 != 4).then(|| format!("request-{n}")));
    }
    let received = recv_until_terminals(&mut events, 20).await;
    let runs = check_stream(&received);
    assert_eq!(runs.len(), 20);
    for (run, run_events) in runs {
        for event in run_events {
            assert_eq!(event.tag(), tags[&run].as_deref(), "{run}: {:?}", event.kind());
        }
    }
}

#[tokio::test]
async fn the_agent_sees_its_tag_and_its_cancellation() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    let run = session.run_tagged("waits", "", "r1").unwrap();
    let started = events.recv().await.unwrap();
    let thinking = events.recv().await.unwrap();
    assert_eq!((started.kind().name(), started.tag()), ("agent_started", Some("r1")));
    assert_eq!(thinking.kind(), &EventKind::AgentThinking { text: "tag Some(\"r1\")".into() });
    session.cancel(run).unwrap();
    let completed = events.recv().await.unwrap();
    assert_eq!(completed.kind(), &EventKind::AgentCompleted { outcome: Outcome::Cancelled });
    assert_eq!(completed.tag(), Some("r1"));
    assert!(session.cancel(run).is_err(), "a completed run is no longer cancellable");
}

#[tokio::test]
async fn closing_cancels_the_token_of_every_run() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    for _ in 0..3 {
        session.run("waits", "").unwrap();
    }
    // Two events per run (started, thinking) before any of them waits.
    let _ = recv_until_count(&mut events, 6).await;
    session.close();
    let rest: Vec<_> = (&mut events).collect().await;
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|event| event.kind() == &EventKind::AgentCompleted { outcome: Outcome::Cancelled }));
    assert_eq!((registry.live_sessions(), registry.live_runs()), (1, 0), "the session is still held, its runs are not");
    drop(session);
    assert_eq!(registry.live_sessions(), 0);
}

async fn recv_until_count(events: &mut core_registry::EventStream, n: usize) -> Vec<core_registry::Event> {
    let mut received = Vec::new();
    while received.len() < n {
        received.push(events.recv().await.unwrap());
    }
    received
}

#[tokio::test]
async fn the_stream_yields_what_recv_would_and_then_ends() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    session.run("scripted", "toe").unwrap();
    session.run("scripted", "tF").unwrap();
    // A consumer written with stream combinators only: 7 events of the first run, 3 of the second.
    let mut received: Vec<_> = (&mut events).take(10).collect().await;
    drop(session);
    received.extend(events.collect::<Vec<_>>().await);
    let runs = check_stream(&received);
    assert_eq!(runs.len(), 2);
    let outcomes: Vec<_> = runs.values().map(|run| outcome_of(run).as_str()).collect();
    assert_eq!(outcomes, ["succeeded", "failed"]);
}

#[tokio::test]
async fn poll_recv_is_pending_until_an_event_then_ready_and_none_at_the_end() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    std::future::poll_fn(|cx| {
        assert!(events.poll_recv(cx).is_pending(), "no run yet, so no event");
        Poll::Ready(())
    })
    .await;
    session.run("scripted", "t").unwrap();
    let first = std::future::poll_fn(|cx| events.poll_recv(cx)).await.unwrap();
    assert_eq!((first.seq(), first.kind().name()), (1, "agent_started"));
    session.close();
    let mut names = Vec::new();
    while let Some(event) = std::future::poll_fn(|cx| events.poll_recv(cx)).await {
        names.push(event.kind().name());
    }
    // Closed right after the start: the run may or may not have emitted its thinking before it was cancelled.
    assert_eq!(names.last(), Some(&"agent_completed"));
    assert_eq!(std::future::poll_fn(|cx| events.poll_recv(cx)).await.map(|e| e.seq()), None);
}
