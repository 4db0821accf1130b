//! Users never see each other: own agent instances, own events; registries never see each other.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use core_registry::{Agent, AgentError, AgentRegistry, EventKind, Outcome, RegistryError, RunContext, async_trait};

use common::{Scripted, check_stream, outcome_of, recv_until_terminals};

/// Counts its own runs: an instance shared across sessions would count past the session's runs.
#[derive(Debug, Default)]
struct Counter {
    runs: AtomicUsize,
}

#[async_trait]
impl Agent for Counter {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.thinking(format!("{} run {n}", ctx.user())).await?;
        tokio::task::yield_now().await;
        ctx.call_tool("whoami", input.as_str(), async { Ok(input.clone()) }).await?.map_err(AgentError::failed)?;
        Ok(format!("{}:{n}", ctx.user()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_users_twenty_runs_each_never_cross() {
    const USERS: usize = 100;
    const RUNS: usize = 20;
    let registry = AgentRegistry::builder()
        .register("counter", Counter::default)
        .register("scripted", || Scripted)
        .max_runs_per_session(RUNS * 2)
        .event_buffer(8)
        .build()
        .unwrap();

    let mut users = Vec::new();
    for user in 0..USERS {
        let registry = registry.clone();
        users.push(tokio::spawn(async move {
            let user = format!("user-{user}");
            let (session, mut events) = registry.open_session(&user).unwrap();
            let mut run_ids = BTreeSet::new();
            for run in 0..RUNS {
                let agent = if run % 2 == 0 { "counter" } else { "scripted" };
                run_ids.insert(session.run(agent, "toyt").unwrap());
            }
            let received = recv_until_terminals(&mut events, RUNS).await;
            (user, session, run_ids, received)
        }));
    }

    for user in users {
        let (user, session, run_ids, received) = user.await.unwrap();
        let runs = check_stream(&received);
        assert_eq!(runs.keys().copied().collect::<BTreeSet<_>>(), run_ids, "{user} got another user's runs");
        let mut counts = Vec::new();
        for event in &received {
            assert_eq!(event.user(), user);
            assert_eq!(event.session_id(), session.id());
            if let EventKind::AgentThinking { text } = event.kind() {
                assert!(text.starts_with(&format!("{user} ")) || text.starts_with("step"), "{user} saw {text:?}");
            }
        }
        for run_events in runs.values() {
            match outcome_of(run_events) {
                Outcome::Succeeded { output } if run_events[0].agent() == "counter" => {
                    let (owner, n) = output.split_once(':').unwrap();
                    assert_eq!(owner, user);
                    counts.push(n.parse::<usize>().unwrap());
                }
                Outcome::Succeeded { output } => assert_eq!(output, "toyt"),
                other => panic!("{user}: unexpected outcome {other:?}"),
            }
        }
        counts.sort_unstable();
        assert_eq!(counts, (1..=RUNS / 2).collect::<Vec<_>>(), "{user}'s agent instance was shared");
    }
    assert_eq!(registry.live_runs(), 0);
    assert_eq!(registry.live_sessions(), 0);
}

#[derive(Debug)]
struct Named(&'static str);

#[async_trait]
impl Agent for Named {
    async fn run(&self, _ctx: &mut RunContext, _input: String) -> Result<String, AgentError> {
        Ok(self.0.to_owned())
    }
}

#[tokio::test]
async fn two_registries_share_nothing() {
    let first = AgentRegistry::builder().register("alpha", || Named("alpha")).build().unwrap();
    let second = AgentRegistry::builder().register("beta", || Named("beta")).build().unwrap();

    let (session, mut events) = first.open_session("alice").unwrap();
    assert_eq!((first.live_sessions(), second.live_sessions()), (1, 0));
    assert!(!second.contains_agent("alpha"));
    assert_eq!(
        session.run("beta", "").unwrap_err(),
        RegistryError::UnknownAgent { name: "beta".into(), known: vec!["alpha".into()] }
    );

    let (other_session, _other_events) = second.open_session("alice").unwrap();
    let err = other_session.run("alpha", "").unwrap_err();
    assert_eq!(err.to_string(), "unknown agent `alpha`; known agents: beta");

    session.run("alpha", "").unwrap();
    let received = recv_until_terminals(&mut events, 1).await;
    assert_eq!(outcome_of(&received.iter().collect::<Vec<_>>()), &Outcome::Succeeded { output: "alpha".into() });
    assert_eq!(second.live_runs(), 0);

    drop(session);
    drop(events);
    assert_eq!((first.live_sessions(), second.live_sessions()), (0, 1));
}
