//! Every misuse is a clear error, never a panic.

use core_registry::{
    AgentRegistry, BuildError, BuildProblem, CancelError, EventStream, OpenError, RegistryError, RunError, Session,
};

#[derive(Debug)]
struct Echo;

#[core_registry::async_trait]
impl core_registry::Agent for Echo {
    async fn run(&self, _: &mut core_registry::RunContext, input: String) -> Result<String, core_registry::AgentError> {
        Ok(input)
    }
}

#[track_caller]
fn check(err: impl std::error::Error, expected: &str) {
    assert_eq!(err.to_string(), expected);
}

#[test]
fn build_errors() {
    check(
        AgentRegistry::builder().register("", || Echo).build().unwrap_err(),
        "agent name must not be empty; register the agent under a non-empty name such as \"echo\"",
    );
    check(
        AgentRegistry::builder().register("echo", || Echo).register("echo", || Echo).build().unwrap_err(),
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
fn build_reports_every_problem_at_once() {
    let err = AgentRegistry::builder()
        .max_runs_per_session(0)
        .register("echo", || Echo)
        .register("", || Echo)
        .register("echo", || Echo)
        .event_buffer(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.problems(),
        [
            BuildProblem::EmptyAgentName,
            BuildProblem::DuplicateAgent("echo".into()),
            BuildProblem::InvalidConfig { setting: "event_buffer", reason: "must be at least 1" },
            BuildProblem::InvalidConfig { setting: "max_runs_per_session", reason: "must be at least 1" },
        ]
    );
    check(
        err,
        "4 problems with the registry: agent name must not be empty; register the agent under a non-empty name \
         such as \"echo\"; agent `echo` is already registered; every agent needs a unique name; invalid registry \
         setting `event_buffer`: must be at least 1; invalid registry setting `max_runs_per_session`: must be at \
         least 1",
    );
}

#[test]
fn try_register_fails_at_once_with_the_umbrella_error() {
    let err = AgentRegistry::builder().try_register("", || Echo).unwrap_err();
    assert_eq!(err, RegistryError::EmptyAgentName);
    let builder = AgentRegistry::builder().try_register("echo", || Echo).unwrap();
    assert_eq!(builder.try_register("echo", || Echo).unwrap_err(), RegistryError::DuplicateAgent("echo".into()));
    let err: RegistryError =
        AgentRegistry::builder().try_register("echo", || Echo).unwrap().event_buffer(0).build().unwrap_err();
    assert_eq!(err, RegistryError::InvalidConfig { setting: "event_buffer", reason: "must be at least 1" });
}

#[test]
fn session_errors() {
    let registry = AgentRegistry::builder()
        .register("echo", || Echo)
        .register("answer", || Echo)
        .max_runs_per_session(1)
        .build()
        .unwrap();
    let err = registry.open_session("").unwrap_err();
    assert_eq!(err, OpenError::EmptyUserId);
    check(err, "user id must not be empty; open the session with the authenticated user's id");
    let (session, _events) = registry.open_session("alice").unwrap();
    let err = session.run("echo", "hi").unwrap_err();
    assert_eq!(err, RunError::NoRuntime);
    check(err, "no tokio runtime: start runs from within a tokio runtime (e.g. inside #[tokio::main])");

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let _entered = runtime.enter();
    let err = session.run("nope", "").unwrap_err();
    assert_eq!(err, RunError::UnknownAgent { name: "nope".into(), known: vec!["answer".into(), "echo".into()] });
    check(err, "unknown agent `nope`; known agents: answer, echo");
    session.run("echo", "hi").unwrap();
    let err = session.run("echo", "again").unwrap_err();
    assert_eq!(err, RunError::TooManyRuns { session: session.id(), limit: 1 });
    check(err, &format!("{} already has 1 runs in progress; wait for one to complete or cancel one", session.id()));
    let (orphaned, events) = registry.open_session("carol").unwrap();
    drop(events);
    let err = orphaned.run("echo", "hi").unwrap_err();
    assert_eq!(err, RunError::StreamDropped(orphaned.id()));
    check(
        err,
        &format!(
            "the event stream of {} was dropped, so no run can report to anyone; open a new session",
            orphaned.id()
        ),
    );
    session.close();
    let err = session.run_tagged("echo", "hi", "tag").unwrap_err();
    assert_eq!(err, RunError::SessionClosed(session.id()));
    check(
        err,
        &format!("session-{} is closed; open a new session with AgentRegistry::open_session", session.id().get()),
    );
    let err = session.cancel("run-999".parse().unwrap()).unwrap_err();
    assert_eq!(err, CancelError::UnknownRun { run: "run-999".parse().unwrap(), session: session.id() });
    assert_eq!(err.run_id().to_string(), "run-999", "the run id is handed back");
    check(
        err,
        &format!("run-999 is not in progress in {}; it has completed or belongs to another session", session.id()),
    );

    let empty = AgentRegistry::builder().build().unwrap();
    let (session, _events) = empty.open_session("bob").unwrap();
    check(
        session.run("echo", "").unwrap_err(),
        "unknown agent `echo`; known agents: none (register agents with AgentRegistry::builder().register(..))",
    );
}

/// Code written against 0.10, where every operation returned `RegistryError`, still compiles and sees the same
/// values: `?` converts, `==` compares across the two.
#[test]
fn every_error_converts_into_the_umbrella_error() -> Result<(), RegistryError> {
    let registry = AgentRegistry::builder().register("echo", || Echo).max_runs_per_session(1).build()?;
    assert_eq!(registry.open_session("").unwrap_err(), RegistryError::EmptyUserId);
    let (session, _events) = registry.open_session("alice")?;
    assert_eq!(RegistryError::from(session.run("echo", "").unwrap_err()), RegistryError::NoRuntime);
    let run = "run-7".parse().unwrap();
    assert_eq!(session.cancel(run).unwrap_err(), RegistryError::UnknownRun { run, session: session.id() });
    let one = AgentRegistry::builder().event_buffer(0).build().unwrap_err();
    assert_eq!(
        RegistryError::from(one),
        RegistryError::InvalidConfig { setting: "event_buffer", reason: "must be at least 1" }
    );
    let two = AgentRegistry::builder().event_buffer(0).max_runs_per_session(0).build().unwrap_err();
    assert_eq!(RegistryError::from(two.clone()), RegistryError::Build(two.clone()));
    assert_eq!(two, RegistryError::Build(two.clone()));
    assert_ne!(two, RegistryError::InvalidConfig { setting: "event_buffer", reason: "must be at least 1" });
    assert_eq!(RegistryError::from(two.clone()).to_string(), two.to_string());
    Ok(())
}

fn require_send_sync<T: Send + Sync>(_: &T) {}
fn require_send<T: Send>(_: &T) {}

#[tokio::test]
async fn public_handles_and_futures_are_send() {
    let registry = AgentRegistry::builder().register("echo", || Echo).build().unwrap();
    let (session, mut events): (Session, EventStream) = registry.open_session("alice").unwrap();
    require_send_sync(&registry);
    require_send_sync(&session);
    require_send_sync(&events);
    require_send(&events.recv());
}

#[test]
fn errors_are_send_sync_and_static() {
    fn require_error<T: std::error::Error + Send + Sync + 'static>() {}
    require_error::<BuildError>();
    require_error::<BuildProblem>();
    require_error::<OpenError>();
    require_error::<RunError>();
    require_error::<CancelError>();
    require_error::<RegistryError>();
    require_error::<core_registry::TryRecvError>();
    require_error::<core_registry::EmitError>();
    require_error::<core_registry::AgentError>();
    fn require_send_sync<T: Send + Sync>() {}
    require_send_sync::<core_registry::AgentRegistryBuilder>();
    require_send_sync::<core_registry::AgentRegistryBuilder<RegistryError>>();
    require_send_sync::<core_registry::Event>();
    require_send_sync::<core_registry::RunContext>();
}
