//! The shims forward: running agents through the old helpers behaves exactly like core-registry, and the old
//! constants have the new values.

// This file exercises the deprecated shims on purpose; each use would otherwise warn.
#![allow(deprecated)]

use core_registry::{Agent, AgentError, EventKind, Outcome, RunContext, TryRecvError, async_trait};

struct Echo;

#[async_trait]
impl Agent for Echo {
    async fn run(&self, _ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        Ok(input)
    }
}

struct Pending;

#[async_trait]
impl Agent for Pending {
    async fn run(&self, _ctx: &mut RunContext, _input: String) -> Result<String, AgentError> {
        std::future::pending().await
    }
}

fn registry() -> core_registry::AgentRegistry {
    let builder = registry_compat::register_agent(registry_compat::create_registry(), "echo", || Echo).unwrap();
    registry_compat::register_agent!(builder, "pending", || Pending).unwrap().build().unwrap()
}

/// Collects the event names and the outcome of the session's first run, through the old `next_event`.
async fn names_and_outcome(events: &mut core_registry::EventStream) -> (Vec<&'static str>, Outcome) {
    let mut names = Vec::new();
    while let Some(event) = registry_compat::next_event(events).await {
        names.push(event.kind().name());
        if let EventKind::AgentCompleted { outcome } = event.into_kind() {
            return (names, outcome);
        }
    }
    panic!("the stream ended before agent_completed; got {names:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_echo_run_through_the_old_helpers_succeeds() {
    let registry = registry();
    let (session, mut events) = registry_compat::create_session(&registry, "alice").unwrap();
    let run = registry_compat::run_agent(&session, "echo", "hi").unwrap();

    let (names, outcome) = names_and_outcome(&mut events).await;
    assert_eq!(names, ["agent_started", "agent_completed"]);
    assert_eq!(outcome, Outcome::Succeeded { output: "hi".to_owned() });
    assert_eq!(session.live_runs(), 0, "{run} still counted");
}

#[tokio::test(flavor = "current_thread")]
async fn cancel_and_close_through_the_old_helpers() {
    let registry = registry();
    let (session, mut events) = registry_compat::create_session(&registry, "bob").unwrap();
    assert_eq!(registry_compat::try_next_event(&mut events).unwrap_err(), TryRecvError::Empty);

    let run = registry_compat::run_agent(&session, "pending", "").unwrap();
    registry_compat::cancel_run(&session, run).unwrap();
    let (names, outcome) = names_and_outcome(&mut events).await;
    assert_eq!(names, ["agent_started", "agent_completed"]);
    assert_eq!(outcome, Outcome::Cancelled);

    registry_compat::close_session(&session);
    assert!(session.is_closed());
    assert!(registry_compat::next_event(&mut events).await.is_none());
    assert_eq!(registry_compat::try_next_event(&mut events).unwrap_err(), TryRecvError::Closed);
    let err = registry_compat::run_agent(&session, "echo", "late").unwrap_err();
    assert_eq!(err, core_registry::RegistryError::SessionClosed(session.id()));
}

#[test]
fn old_helpers_report_the_new_errors() {
    let registry = registry();
    assert_eq!(registry_compat::create_session(&registry, "").unwrap_err(), core_registry::RegistryError::EmptyUserId);
    let err = registry_compat::register_agent(registry_compat::create_registry(), "", || Echo).unwrap_err();
    assert_eq!(err, core_registry::RegistryError::EmptyAgentName);
}

#[test]
fn old_constants_have_the_new_values() {
    assert_eq!(registry_compat::EVENT_BUFFER_SIZE, core_registry::DEFAULT_EVENT_BUFFER);
    assert_eq!(registry_compat::MAX_RUNS_PER_SESSION, core_registry::DEFAULT_MAX_RUNS_PER_SESSION);
}

struct Tooling;

#[async_trait]
impl Agent for Tooling {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        ctx.thinking("counting").await?;
        let count = ctx.call_tool("len", input.as_str(), async { Ok(input.len().to_string()) }).await?;
        count.map_err(AgentError::failed)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn event_name_constants_are_the_wire_names_of_a_real_run() {
    // core-registry has no name constants, so the shims hold the literals; this keeps them from drifting.
    let registry = core_registry::AgentRegistry::builder().register("tooling", || Tooling).build().unwrap();
    let (session, mut events) = registry.open_session("carol").unwrap();
    session.run("tooling", "four").unwrap();
    let (names, outcome) = names_and_outcome(&mut events).await;
    assert_eq!(outcome, Outcome::Succeeded { output: "4".to_owned() });
    assert_eq!(
        names,
        [
            registry_compat::EVENT_AGENT_STARTED,
            registry_compat::EVENT_AGENT_THINKING,
            registry_compat::EVENT_TOOL_EXECUTING,
            registry_compat::EVENT_TOOL_COMPLETED,
            registry_compat::EVENT_AGENT_COMPLETED,
        ]
    );
}
