//! Closing or dropping a session cancels its runs and frees everything.

mod common;

use std::time::Duration;

use core_registry::{AgentRegistry, EventKind, Outcome, RegistryError};

use common::{Scripted, check_stream, eventually, outcome_of};

fn registry() -> AgentRegistry {
    AgentRegistry::builder().register("scripted", || Scripted).build().unwrap()
}

#[tokio::test]
async fn closing_mid_run_cancels_every_run_and_ends_the_stream() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    let runs: Vec<_> = ["tW", "uW", "otW"].iter().map(|script| session.run("scripted", *script).unwrap()).collect();
    assert_eq!((session.live_runs(), registry.live_runs()), (3, 3));

    // Wait until every run is parked in `W`: its last scripted event has arrived.
    let mut received = Vec::new();
    while received.len() < 2 + 2 + 4 {
        received.push(events.recv().await.unwrap());
    }
    session.close();
    assert!(session.is_closed());
    assert_eq!(session.run("scripted", "t").unwrap_err(), RegistryError::SessionClosed(session.id()));

    while let Some(event) = events.recv().await {
        received.push(event);
    }
    let by_run = check_stream(&received);
    assert_eq!(by_run.keys().copied().collect::<Vec<_>>(), runs);
    for run_events in by_run.values() {
        assert_eq!(outcome_of(run_events), &Outcome::Cancelled);
    }
    assert_eq!((session.live_runs(), registry.live_runs()), (0, 0));
    assert_eq!(registry.live_sessions(), 1, "the session value itself is still alive");
    drop(session);
    assert_eq!(registry.live_sessions(), 0);
}

#[tokio::test]
async fn dropping_the_session_cancels_its_runs() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    session.run("scripted", "W").unwrap();
    assert_eq!(events.recv().await.unwrap().kind().name(), "agent_started");
    drop(session);
    let last = events.recv().await.unwrap();
    assert_eq!(last.kind(), &EventKind::AgentCompleted { outcome: Outcome::Cancelled });
    assert!(events.recv().await.is_none());
    assert_eq!((registry.live_sessions(), registry.live_runs()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_ends_the_runs() {
    let registry = registry();
    let (session, events) = registry.open_session("alice").unwrap();
    session.run("scripted", "tttttttt").unwrap();
    // One run that would emit, one that waits without emitting: both end.
    session.run("scripted", "W").unwrap();
    drop(events);
    eventually(Duration::from_secs(5), || registry.live_runs() == 0).await;
    drop(session);
    assert_eq!(registry.live_sessions(), 0);
}

#[tokio::test]
async fn cancel_ends_one_run_with_cancelled() {
    let registry = registry();
    let (session, mut events) = registry.open_session("alice").unwrap();
    let waiting = session.run("scripted", "W").unwrap();
    assert_eq!(events.recv().await.unwrap().run_id(), waiting);
    session.cancel(waiting).unwrap();
    let last = events.recv().await.unwrap();
    assert_eq!((last.run_id(), last.kind()), (waiting, &EventKind::AgentCompleted { outcome: Outcome::Cancelled }));
    eventually(Duration::from_secs(5), || session.live_runs() == 0).await;
    assert_eq!(session.cancel(waiting).unwrap_err(), RegistryError::UnknownRun { run: waiting, session: session.id() });
}

#[tokio::test]
async fn ten_thousand_sessions_leave_nothing_behind() {
    let registry = registry();
    for n in 0..10_000 {
        let (session, mut events) = registry.open_session(&format!("user-{n}")).unwrap();
        if n % 10 == 0 {
            session.run("scripted", "tW").unwrap();
            events.recv().await.unwrap();
        }
        if n % 2 == 0 {
            drop(session);
        } else {
            session.close();
        }
        while events.recv().await.is_some() {}
    }
    assert_eq!((registry.live_sessions(), registry.live_runs()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_down_when_the_stream_ends() {
    // The stream ends when the last event sender goes away; by then the run must be unregistered and the session
    // freed, also when the run task finishes on another worker thread.
    let registry = registry();
    for _ in 0..2_000 {
        let (session, mut events) = registry.open_session("alice").unwrap();
        session.run("scripted", "ty").unwrap();
        drop(session);
        while events.recv().await.is_some() {}
        assert_eq!((registry.live_sessions(), registry.live_runs()), (0, 0));
    }
}
