//! What each built-in agent emits, exactly.

use std::fmt::Write as _;
use std::time::Duration;

use core_registry::{AgentRegistry, Event, EventKind, Outcome};

/// Runs `agent` on `input` in a fresh session and returns its events.
async fn run(agent: &str, input: &str) -> Vec<Event> {
    let registry = agents::register_builtin(AgentRegistry::builder()).build().unwrap();
    let (session, mut stream) = registry.open_session("alice").unwrap();
    session.run(agent, input).unwrap();
    let mut events = Vec::new();
    while let Some(event) = stream.recv().await {
        let last = event.kind().is_terminal();
        events.push(event);
        if last {
            break;
        }
    }
    events
}

/// One line per event: `seq name fields`.
fn render(events: &[Event]) -> String {
    let mut out = String::new();
    for event in events {
        let _ = write!(out, "{:>2} {:<15} ", event.seq(), event.kind().name());
        let _ = match event.kind() {
            EventKind::AgentStarted { input } => {
                writeln!(out, "agent={} user={} input={input:?}", event.agent(), event.user())
            }
            EventKind::AgentThinking { text } => writeln!(out, "{text:?}"),
            EventKind::ToolExecuting { call, tool, input } => writeln!(out, "{call} {tool} input={input:?}"),
            EventKind::ToolCompleted { call, tool, result } => writeln!(out, "{call} {tool} result={result:?}"),
            EventKind::AgentCompleted { outcome } => writeln!(out, "{outcome:?}"),
        };
    }
    out
}

fn outcome(events: &[Event]) -> &Outcome {
    match events.last().map(Event::kind) {
        Some(EventKind::AgentCompleted { outcome }) => outcome,
        other => panic!("no terminal event: {other:?}"),
    }
}

#[tokio::test]
async fn tools_agent_full_event_sequence() {
    insta::assert_snapshot!(render(&run("tools", "hello agent world").await));
}

#[tokio::test]
async fn echo_answers_with_its_input() {
    let events = run("echo", "hi there").await;
    assert_eq!(events.len(), 2);
    assert_eq!(outcome(&events), &Outcome::Succeeded { output: "hi there".into() });
}

#[tokio::test(start_paused = true)]
async fn slow_takes_its_steps_in_order() {
    let started = tokio::time::Instant::now();
    let events = run("slow", "3").await;
    let steps: Vec<_> = events
        .iter()
        .filter_map(|event| match event.kind() {
            EventKind::AgentThinking { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["step 1/3", "step 2/3", "step 3/3"]);
    assert_eq!(outcome(&events), &Outcome::Succeeded { output: "done after 3 steps".into() });
    assert_eq!(started.elapsed(), Duration::from_millis(30), "three steps of 10 ms on the paused clock");
}

#[tokio::test]
async fn slow_refuses_a_bad_step_count() {
    let events = run("slow", "many").await;
    assert_eq!(
        outcome(&events),
        &Outcome::Failed { error: "`many` is not a step count; send a whole number from 0 to 100000".into() }
    );
}

#[tokio::test]
async fn fail_and_panic_end_as_failed() {
    let events = run("fail", "x").await;
    assert_eq!(outcome(&events), &Outcome::Failed { error: "the fail agent always fails (input: \"x\")".into() });
    let events = run("panic", "").await;
    assert_eq!(events.len(), 3, "started, thinking, completed");
    assert_eq!(outcome(&events), &Outcome::Failed { error: "agent panicked: the panic agent always panics".into() });
}
