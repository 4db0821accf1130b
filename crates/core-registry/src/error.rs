//! Error types, one enum per concern.

use crate::{RunId, SessionId, ToolCallId};

/// What went wrong when building a registry, opening a session or starting, cancelling a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// [`AgentRegistryBuilder::register`](crate::AgentRegistryBuilder::register) was given an empty name.
    #[error("agent name must not be empty; register the agent under a non-empty name such as \"echo\"")]
    EmptyAgentName,
    /// Two agents were registered under the same name.
    #[error("agent `{0}` is already registered; every agent needs a unique name")]
    DuplicateAgent(String),
    /// A builder setting that cannot work, such as an event buffer of zero.
    #[error("invalid registry setting `{setting}`: {reason}")]
    InvalidConfig {
        /// The builder method that received the bad value.
        setting: &'static str,
        /// Why the value was refused.
        reason: &'static str,
    },
    /// [`AgentRegistry::open_session`](crate::AgentRegistry::open_session) was given an empty user id.
    #[error("user id must not be empty; open the session with the authenticated user's id")]
    EmptyUserId,
    /// A run was requested for an agent that is not registered.
    #[error("unknown agent `{name}`; known agents: {}", known_list(.known))]
    UnknownAgent {
        /// The name that was asked for.
        name: String,
        /// Every registered agent name, sorted.
        known: Vec<String>,
    },
    /// The session was closed; it accepts no more runs.
    #[error("{0} is closed; open a new session with AgentRegistry::open_session")]
    SessionClosed(SessionId),
    /// The session's [`EventStream`](crate::EventStream) was dropped, so nobody could receive a run's events.
    #[error("the event stream of {0} was dropped, so no run can report to anyone; open a new session")]
    StreamDropped(SessionId),
    /// The session already runs as many agents as the registry allows at once.
    #[error("{session} already has {limit} runs in progress; wait for one to complete or cancel one")]
    TooManyRuns {
        /// The session that is at its limit.
        session: SessionId,
        /// The limit set with `AgentRegistryBuilder::max_runs_per_session`.
        limit: usize,
    },
    /// [`Session::cancel`](crate::Session::cancel) named a run that is not in progress in this session.
    #[error("{run} is not in progress in {session}; it has completed or belongs to another session")]
    UnknownRun {
        /// The run that was named.
        run: RunId,
        /// The session that was asked.
        session: SessionId,
    },
    /// A run was started outside a tokio runtime.
    #[error("no tokio runtime: start runs from within a tokio runtime (e.g. inside #[tokio::main])")]
    NoRuntime,
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none (register agents with AgentRegistry::builder().register(..))".to_owned()
    } else {
        known.join(", ")
    }
}

/// Why an event could not be emitted from inside a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The session's [`EventStream`](crate::EventStream) was dropped, so nobody can receive the event.
    #[error("the session's event stream was dropped; the run can no longer report events")]
    StreamClosed,
    /// `tool_completed` named a call that is not open in this run.
    #[error("{0} is not open in this run; call tool_completed exactly once per tool_executing")]
    UnknownToolCall(ToolCallId),
}

/// How an agent's run failed. Its `Display` text becomes the `error` of the `failed` outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The agent gave up with a message for the user.
    #[error("{0}")]
    Failed(String),
    /// An event could not be emitted.
    #[error(transparent)]
    Emit(#[from] EmitError),
}

impl AgentError {
    /// An [`AgentError::Failed`] with the given message.
    pub fn failed(message: impl Into<String>) -> Self {
        AgentError::Failed(message.into())
    }
}

/// Why [`EventStream::try_recv`](crate::EventStream::try_recv) returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is buffered now; more may come.
    #[error("no event is buffered yet")]
    Empty,
    /// The session is closed and every run has delivered its last event.
    #[error("the session is closed and all its events were delivered")]
    Closed,
}

/// A string that is not a run id of the form `run-<number>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a run id; run ids look like `run-42`")]
pub struct ParseRunIdError(pub(crate) String);
