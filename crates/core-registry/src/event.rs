//! Identifiers and the lifecycle events a run emits.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::ParseRunIdError;

/// Identifies a session within its registry. Displayed as `session-<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(crate) u64);

impl SessionId {
    /// The number behind the id, unique within one registry.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session-{}", self.0)
    }
}

/// Identifies a run within its registry. Displayed and parsed as `run-<n>`.
///
/// ```
/// # use core_registry::RunId;
/// let id: RunId = "run-7".parse().unwrap();
/// assert_eq!(id.to_string(), "run-7");
/// assert!("7".parse::<RunId>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(pub(crate) u64);

impl RunId {
    /// The number behind the id, unique within one registry.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run-{}", self.0)
    }
}

impl FromStr for RunId {
    type Err = ParseRunIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("run-")
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
            .map(RunId)
            .ok_or_else(|| ParseRunIdError(s.to_owned()))
    }
}

/// Identifies one tool call within its run. Displayed as `call-<n>`, numbered from 1 per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolCallId(pub(crate) u32);

impl ToolCallId {
    /// The number behind the id, unique within one run.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ToolCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// Who a run belongs to: its immutable identity, one allocation per run, shared by all events of the run, so
/// events carry it without copying. Cancellation lives in the run's `CancellationToken`, never here.
#[derive(Debug)]
pub(crate) struct RunInfo {
    pub(crate) run_id: RunId,
    pub(crate) session_id: SessionId,
    pub(crate) user: Arc<str>,
    pub(crate) agent: Arc<str>,
    pub(crate) tag: Option<Box<str>>,
}

/// How a run ended. Exactly one per run, in its last event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The agent returned an answer.
    Succeeded {
        /// The agent's answer.
        output: String,
    },
    /// The agent returned an error or panicked.
    Failed {
        /// What went wrong, for the user.
        error: String,
    },
    /// The run was cancelled, directly or by closing its session.
    Cancelled,
}

impl Outcome {
    /// The wire name: `succeeded`, `failed` or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// What happened in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// Always the first event of a run.
    AgentStarted {
        /// The input the run was started with.
        input: String,
    },
    /// The agent reports progress.
    AgentThinking {
        /// The agent's words.
        text: String,
    },
    /// The agent calls a tool. Always followed, later in the same run, by the matching [`EventKind::ToolCompleted`].
    ToolExecuting {
        /// The call's id within the run.
        call: ToolCallId,
        /// The tool's name.
        tool: Arc<str>,
        /// What the tool was given.
        input: String,
    },
    /// A tool call ended. If the run ended first, the registry emits this with an error on the agent's behalf.
    ToolCompleted {
        /// The call's id within the run.
        call: ToolCallId,
        /// The tool's name.
        tool: Arc<str>,
        /// The tool's output, or why it failed.
        result: Result<String, String>,
    },
    /// Always the last event of a run, exactly once.
    AgentCompleted {
        /// How the run ended.
        outcome: Outcome,
    },
}

impl EventKind {
    /// The wire name of [`EventKind::AgentStarted`].
    pub const AGENT_STARTED: &'static str = "agent_started";
    /// The wire name of [`EventKind::AgentThinking`].
    pub const AGENT_THINKING: &'static str = "agent_thinking";
    /// The wire name of [`EventKind::ToolExecuting`].
    pub const TOOL_EXECUTING: &'static str = "tool_executing";
    /// The wire name of [`EventKind::ToolCompleted`].
    pub const TOOL_COMPLETED: &'static str = "tool_completed";
    /// The wire name of [`EventKind::AgentCompleted`].
    pub const AGENT_COMPLETED: &'static str = "agent_completed";

    /// The wire name: `agent_started`, `agent_thinking`, `tool_executing`, `tool_completed` or `agent_completed`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::AgentStarted { .. } => EventKind::AGENT_STARTED,
            EventKind::AgentThinking { .. } => EventKind::AGENT_THINKING,
            EventKind::ToolExecuting { .. } => EventKind::TOOL_EXECUTING,
            EventKind::ToolCompleted { .. } => EventKind::TOOL_COMPLETED,
            EventKind::AgentCompleted { .. } => EventKind::AGENT_COMPLETED,
        }
    }

    /// Whether this is the run's last event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, EventKind::AgentCompleted { .. })
    }
}

/// One lifecycle event, as received from a session's [`EventStream`](crate::EventStream).
#[derive(Debug, Clone)]
pub struct Event {
    // Invariant: per stream, seq starts at 1 and has no gaps.
    pub(crate) seq: u64,
    pub(crate) run: Arc<RunInfo>,
    pub(crate) kind: EventKind,
}

impl Event {
    /// Position in the session's stream: 1 for the first event, then +1 per event, no gaps.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The run that emitted the event.
    pub fn run_id(&self) -> RunId {
        self.run.run_id
    }

    /// The session the run belongs to.
    pub fn session_id(&self) -> SessionId {
        self.run.session_id
    }

    /// The user who owns the session.
    pub fn user(&self) -> &str {
        &self.run.user
    }

    /// The name of the agent the run executes.
    pub fn agent(&self) -> &str {
        &self.run.agent
    }

    /// The tag the run was started with by [`Session::run_tagged`](crate::Session::run_tagged), on every event of
    /// the run; `None` for a run started with [`Session::run`](crate::Session::run).
    pub fn tag(&self) -> Option<&str> {
        self.run.tag.as_deref()
    }

    /// What happened.
    pub fn kind(&self) -> &EventKind {
        &self.kind
    }

    /// What happened, by value.
    pub fn into_kind(self) -> EventKind {
        self.kind
    }
}
