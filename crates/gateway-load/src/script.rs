//! What the built-in agents of `crates/agents` send for one run, and when: the bare server plays these scripts,
//! the load generator expects them.
//!
//! The agents are deterministic, so a run's events follow from its agent and input alone. A test runs the real
//! agents through `core-registry` and compares their events with these scripts.

use std::time::Duration;

/// The agents the scripts know, in the order the gateway lists them in an `unknown_agent` error.
pub const AGENTS: [&str; 5] = ["echo", "fail", "panic", "slow", "tools"];

/// The wait before each step of the `slow` agent (`agents::Slow::default().step`).
pub const SLOW_STEP: Duration = Duration::from_millis(10);

/// The number of steps of a `slow` run whose input is empty (`agents::Slow::DEFAULT_STEPS`).
pub const SLOW_DEFAULT_STEPS: u32 = 5;

/// The most steps a `slow` run may take (`agents::Slow::MAX_STEPS`).
pub const SLOW_MAX_STEPS: u32 = 100_000;

/// How a run ended (the load never cancels, so there is no `cancelled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `outcome: succeeded`, with the agent's `output`.
    Succeeded(String),
    /// `outcome: failed`, with its `error`.
    Failed(String),
}

/// One lifecycle event of a run, without the fields every message has (`seq`, `run_id`, `request_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `agent_started`: the first event of every run.
    Started {
        /// The agent's name.
        agent: String,
        /// The run's input.
        input: String,
    },
    /// `agent_thinking`.
    Thinking {
        /// The agent's words.
        text: String,
    },
    /// `tool_executing`.
    ToolExecuting {
        /// The call's number within the run (`call-1` is 1).
        call: u32,
        /// The tool's name.
        tool: &'static str,
        /// What the tool was given.
        input: String,
    },
    /// `tool_completed`, with an `output` (the built-in tools never fail).
    ToolCompleted {
        /// The call's number within the run.
        call: u32,
        /// The tool's name.
        tool: &'static str,
        /// The tool's output.
        output: String,
    },
    /// `agent_completed`: the last event of every run.
    Completed(Outcome),
}

impl Event {
    /// The event's `type` on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Started { .. } => "agent_started",
            Event::Thinking { .. } => "agent_thinking",
            Event::ToolExecuting { .. } => "tool_executing",
            Event::ToolCompleted { .. } => "tool_completed",
            Event::Completed(_) => "agent_completed",
        }
    }
}

/// One event of a script and how long the agent waits before emitting it (after the previous one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The wait before this event.
    pub delay: Duration,
    /// The event.
    pub event: Event,
}

fn now(event: Event) -> Step {
    Step { delay: Duration::ZERO, event }
}

/// The events a run of `agent` on `input` produces, in order, or `None` for an agent the gateway does not have.
///
/// ```
/// use gateway_load::script::{script, Event, Outcome};
///
/// let steps = script("echo", "hi").unwrap();
/// assert_eq!(steps.len(), 2);
/// assert_eq!(steps[1].event, Event::Completed(Outcome::Succeeded("hi".into())));
/// assert!(script("nope", "").is_none());
/// ```
pub fn script(agent: &str, input: &str) -> Option<Vec<Step>> {
    let started = now(Event::Started { agent: agent.to_owned(), input: input.to_owned() });
    let thinking = |text: String| now(Event::Thinking { text });
    let done = |outcome: Outcome| now(Event::Completed(outcome));
    let steps = match agent {
        "echo" => vec![started, done(Outcome::Succeeded(input.to_owned()))],
        "tools" => {
            let words = input.split_whitespace().count().to_string();
            let reversed: String = input.chars().rev().collect();
            let answer = format!("{words} words; reversed: {reversed}");
            vec![
                started,
                thinking(format!("analysing {} characters", input.chars().count())),
                now(Event::ToolExecuting { call: 1, tool: "word_count", input: input.to_owned() }),
                now(Event::ToolCompleted { call: 1, tool: "word_count", output: words }),
                now(Event::ToolExecuting { call: 2, tool: "reverse", input: input.to_owned() }),
                now(Event::ToolCompleted { call: 2, tool: "reverse", output: reversed }),
                thinking("composing the answer".to_owned()),
                done(Outcome::Succeeded(answer)),
            ]
        }
        "slow" => {
            let steps = match input.trim() {
                "" => Some(SLOW_DEFAULT_STEPS),
                text => text.parse().ok().filter(|n| *n <= SLOW_MAX_STEPS),
            };
            let Some(steps) = steps else {
                let error =
                    format!("`{}` is not a step count; send a whole number from 0 to {SLOW_MAX_STEPS}", input.trim());
                return Some(vec![started, done(Outcome::Failed(error))]);
            };
            let mut script = Vec::with_capacity(steps as usize + 2);
            script.push(started);
            for step in 1..=steps {
                script.push(Step { delay: SLOW_STEP, event: Event::Thinking { text: format!("step {step}/{steps}") } });
            }
            script.push(done(Outcome::Succeeded(format!("done after {steps} steps"))));
            script
        }
        "fail" => vec![
            started,
            thinking("about to fail".to_owned()),
            done(Outcome::Failed(format!("the fail agent always fails (input: {input:?})"))),
        ],
        "panic" => vec![
            started,
            thinking("about to panic".to_owned()),
            done(Outcome::Failed("agent panicked: the panic agent always panics".to_owned())),
        ],
        _ => return None,
    };
    Some(steps)
}

/// The `message` of the gateway's `unknown_agent` error for a run of `name`.
pub fn unknown_agent_message(name: &str) -> String {
    format!("unknown agent `{name}`; known agents: {}", AGENTS.join(", "))
}

/// The events alone, without their timing.
pub fn events(agent: &str, input: &str) -> Option<Vec<Event>> {
    Some(script(agent, input)?.into_iter().map(|step| step.event).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core_registry::{AgentRegistry, EventKind};

    /// Runs the real agent through core-registry and turns its events into script events.
    async fn real_events(agent: &str, input: &str) -> Vec<Event> {
        let registry = agents::register_builtin(AgentRegistry::builder()).build().unwrap();
        let (session, mut stream) = registry.open_session("tester").unwrap();
        session.run(agent, input).unwrap();
        let mut events = Vec::new();
        while let Some(event) = stream.recv().await {
            let name = event.agent().to_owned();
            let kind = event.into_kind();
            let terminal = kind.is_terminal();
            events.push(match kind {
                EventKind::AgentStarted { input } => Event::Started { agent: name, input },
                EventKind::AgentThinking { text } => Event::Thinking { text },
                EventKind::ToolExecuting { call, tool, input } => {
                    Event::ToolExecuting { call: call.get(), tool: leak(&tool), input }
                }
                EventKind::ToolCompleted { call, tool, result } => {
                    Event::ToolCompleted { call: call.get(), tool: leak(&tool), output: result.unwrap() }
                }
                EventKind::AgentCompleted { outcome } => Event::Completed(match outcome {
                    core_registry::Outcome::Succeeded { output } => Outcome::Succeeded(output),
                    core_registry::Outcome::Failed { error } => Outcome::Failed(error),
                    core_registry::Outcome::Cancelled => panic!("nothing cancels these runs"),
                }),
            });
            if terminal {
                break;
            }
        }
        events
    }

    fn leak(tool: &str) -> &'static str {
        match tool {
            "word_count" => "word_count",
            "reverse" => "reverse",
            other => panic!("unknown tool {other}"),
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn scripts_match_the_real_agents() {
        let cases = [
            ("echo", "hello"),
            ("echo", ""),
            ("tools", "load test input"),
            ("tools", "  héllo   wörld \"quoted\" "),
            ("slow", "3"),
            ("slow", ""),
            ("slow", " 2 "),
            ("slow", "x"),
            ("slow", "100001"),
            ("fail", "why"),
            ("panic", ""),
        ];
        for (agent, input) in cases {
            assert_eq!(events(agent, input).unwrap(), real_events(agent, input).await, "{agent} {input:?}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_agent_list_and_constants_match() {
        assert_eq!(SLOW_STEP, agents::Slow::default().step);
        assert_eq!(SLOW_DEFAULT_STEPS, agents::Slow::DEFAULT_STEPS);
        assert_eq!(SLOW_MAX_STEPS, agents::Slow::MAX_STEPS);
        for agent in AGENTS {
            assert!(script(agent, "").is_some(), "{agent}");
        }
        let registry = agents::register_builtin(AgentRegistry::builder()).build().unwrap();
        let (session, _stream) = registry.open_session("tester").unwrap();
        let refused = session.run("nope", "").unwrap_err();
        assert_eq!(refused.to_string(), unknown_agent_message("nope"));
        let slow = script("slow", "2").unwrap();
        let delays: Vec<Duration> = slow.iter().map(|step| step.delay).collect();
        assert_eq!(delays, [Duration::ZERO, SLOW_STEP, SLOW_STEP, Duration::ZERO]);
    }
}
