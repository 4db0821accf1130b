//! Shared test support: a scripted agent, a seeded generator, and the lifecycle invariant checker.
#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part of this module.

use std::collections::BTreeMap;
use std::time::Duration;

use core_registry::{Agent, AgentError, Event, EventKind, Outcome, RunContext, RunId, async_trait};

/// Interprets its input as a script, one step per character:
/// `t` think, `o` a tool call that succeeds, `e` a tool call that fails, `u` a tool call left open,
/// `y` yield to the scheduler, `F` fail, `P` panic, `W` wait until cancelled. The end of the script succeeds with
/// the script as output.
#[derive(Debug, Default)]
pub struct Scripted;

#[async_trait]
impl Agent for Scripted {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        for (index, step) in input.chars().enumerate() {
            match step {
                't' => ctx.thinking(format!("step {index}")).await?,
                'o' => {
                    let _ok =
                        ctx.call_tool("ok_tool", format!("{index}"), async move { Ok(format!("ok {index}")) }).await?;
                }
                'e' => {
                    let _err = ctx
                        .call_tool("err_tool", format!("{index}"), async move { Err(format!("err {index}")) })
                        .await?;
                }
                'u' => {
                    ctx.tool_executing("open_tool", format!("{index}")).await?;
                }
                'y' => tokio::task::yield_now().await,
                'F' => return Err(AgentError::failed(format!("scripted failure at {index}"))),
                'P' => panic!("scripted panic at {index}"),
                'W' => std::future::pending::<()>().await,
                other => return Err(AgentError::failed(format!("unknown step {other:?}"))),
            }
        }
        Ok(input)
    }
}

/// The step alphabet of [`Scripted`], with the terminal steps last.
pub const STEPS: &[u8] = b"toeuyFPW";

/// A small deterministic generator (xorshift64*), so failures reproduce from the seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// A random script: up to `max_len` non-terminal steps, sometimes followed by a terminal one.
    pub fn script(&mut self, max_len: u64) -> String {
        let len = self.below(max_len + 1);
        let mut script: String = (0..len).map(|_| STEPS[self.below(5) as usize] as char).collect();
        match self.below(8) {
            0 => script.push('F'),
            1 => script.push('P'),
            2 | 3 => script.push('W'),
            _ => {}
        }
        script
    }
}

/// The event names a [`Scripted`] run emits when it runs to its end, uncancelled.
pub fn expected_names(script: &str) -> Vec<&'static str> {
    let mut names = vec!["agent_started"];
    let mut open = 0;
    for step in script.chars() {
        match step {
            't' => names.push("agent_thinking"),
            'o' | 'e' => names.extend(["tool_executing", "tool_completed"]),
            'u' => {
                names.push("tool_executing");
                open += 1;
            }
            'F' | 'P' | 'W' => break,
            _ => {}
        }
    }
    names.extend(std::iter::repeat_n("tool_completed", open));
    names.push("agent_completed");
    names
}

/// The outcome a [`Scripted`] run ends with when it is not cancelled (`None`: it waits for cancellation).
pub fn expected_outcome(script: &str) -> Option<&'static str> {
    match script.chars().find(|step| matches!(step, 'F' | 'P' | 'W')) {
        Some('F' | 'P') => Some("failed"),
        Some(_) => None,
        None => Some("succeeded"),
    }
}

/// Checks a whole stream: gap-free `seq` from 1, and per run `agent_started` first, exactly one
/// `agent_completed` last, and every `tool_executing` followed by its own `tool_completed` before the end.
/// Returns each run's events in order.
#[track_caller]
pub fn check_stream(events: &[Event]) -> BTreeMap<RunId, Vec<&Event>> {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.seq(), index as u64 + 1, "seq must start at 1 and have no gaps");
    }
    let mut runs: BTreeMap<RunId, Vec<&Event>> = BTreeMap::new();
    for event in events {
        runs.entry(event.run_id()).or_default().push(event);
    }
    for (run, run_events) in &runs {
        check_run(*run, run_events);
    }
    runs
}

#[track_caller]
fn check_run(run: RunId, events: &[&Event]) {
    let names: Vec<_> = events.iter().map(|event| event.kind().name()).collect();
    assert_eq!(names.first(), Some(&"agent_started"), "{run}: first event must be agent_started: {names:?}");
    assert_eq!(names.last(), Some(&"agent_completed"), "{run}: last event must be agent_completed: {names:?}");
    assert_eq!(names.iter().filter(|name| **name == "agent_started").count(), 1, "{run}: {names:?}");
    assert_eq!(names.iter().filter(|name| **name == "agent_completed").count(), 1, "{run}: {names:?}");
    let mut open = Vec::new();
    for event in events {
        match event.kind() {
            EventKind::ToolExecuting { call, .. } => {
                assert!(!open.contains(call), "{run}: {call} opened twice");
                open.push(*call);
            }
            EventKind::ToolCompleted { call, .. } => {
                let index = open.iter().position(|open| open == call);
                assert!(index.is_some(), "{run}: {call} completed without tool_executing");
                open.retain(|open| open != call);
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "{run}: tool calls {open:?} never completed");
}

/// The outcome of a run's terminal event.
pub fn outcome_of<'e>(events: &[&'e Event]) -> &'e Outcome {
    match events.last().map(|event| event.kind()) {
        Some(EventKind::AgentCompleted { outcome }) => outcome,
        other => panic!("run does not end with agent_completed: {other:?}"),
    }
}

/// Receives events until `runs` terminal events have arrived.
pub async fn recv_until_terminals(stream: &mut core_registry::EventStream, runs: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut terminals = 0;
    while terminals < runs {
        let event = stream.recv().await.expect("the stream ended before every run completed");
        terminals += usize::from(event.kind().is_terminal());
        events.push(event);
    }
    events
}

/// Polls `condition` until it holds, yielding in between; fails after `limit` of (possibly paused) time.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "condition did not hold within {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
