//! Every misuse is a clear error, never a panic.

use core_registry::{AgentRegistry, EventStream, RegistryError, Session};

#[derive(Debug)]
struct Echo;

#[core_registry::async_trait]
impl core_registry::Agent for Echo {
    async fn run(&self, _: &mut core_registry::RunContext, input: String) -> Result<String, core_registry::AgentError> {
        Ok(input)
    }
}

#[track_caller]
fn check(err: RegistryError, expected: &str) {
    assert_eq!(err.to_string(), expected);
}

#[test]
fn registration_errors() {
    check(
        AgentRegistry::builder().register("", || Echo).unwrap_err(),
        "agent name must not be empty; register the agent under a non-empty name such as \"echo\"",
    );
    check(
        AgentRegistry::builder().register("echo", || Echo).unwrap().register("echo", || Echo).unwrap_err(),
        "agent `echo` is already registered; every agent needs a unique name",
    );
    check(
        AgentRegistry::builder().event_buffer(0).build().unwrap_err(),
        "invalid registry setting `event_buffer`: must be at least 1",
    );
    check(
        AgentRegistry::builder().max_runs_per_session(0).build().unwrap_err(),
        "invalid registry setting `max_runs_per_session`: must be at least 1",
    );
}

#[test]
fn session_errors() {
    let registry = AgentRegistry::builder()
        .register("echo", || Echo)
        .unwrap()
        .register("answer", || Echo)
        .unwrap()
        .max_runs_per_session(1)
        .build()
        .unwrap();
    check(
        registry.open_session("").unwrap_err(),
        "user id must not be empty; open the session with the authenticated user's id",
    );
    let (session, _events) = registry.open_session("alice").unwrap();
    check(
        session.run("echo", "hi").unwrap_err(),
        "no tokio runtime: start runs from within a tokio runtime (e.g. inside #[tokio::main])",
    );

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let _entered = runtime.enter();
    check(session.run("nope", "").unwrap_err(), "unknown agent `nope`; known agents: answer, echo");
    session.run("echo", "hi").unwrap();
    check(
        session.run("echo", "again").unwrap_err(),
        &format!("{} already has 1 runs in progress; wait for one to complete or cancel one", session.id()),
    );
    let (orphaned, events) = registry.open_session("carol").unwrap();
    drop(events);
    check(
        orphaned.run("echo", "hi").unwrap_err(),
        &format!(
            "the event stream of {} was dropped, so no run can report to anyone; open a new session",
            orphaned.id()
        ),
    );
    session.close();
    check(
        session.run("echo", "hi").unwrap_err(),
        &format!("session-{} is closed; open a new session with AgentRegistry::open_session", session.id().get()),
    );
    check(
        session.cancel("run-999".parse().unwrap()).unwrap_err(),
        &format!("run-999 is not in progress in {}; it has completed or belongs to another session", session.id()),
    );

    let empty = AgentRegistry::builder().build().unwrap();
    let (session, _events) = empty.open_session("bob").unwrap();
    check(
        session.run("echo", "").unwrap_err(),
        "unknown agent `echo`; known agents: none (register agents with AgentRegistry::builder().register(..))",
    );
}

fn require_send_sync<T: Send + Sync>(_: &T) {}
fn require_send<T: Send>(_: &T) {}

#[tokio::test]
async fn public_handles_and_futures_are_send() {
    let registry = AgentRegistry::builder().register("echo", || Echo).unwrap().build().unwrap();
    let (session, mut events): (Session, EventStream) = registry.open_session("alice").unwrap();
    require_send_sync(&registry);
    require_send_sync(&session);
    require_send_sync(&events);
    require_send(&events.recv());
}
