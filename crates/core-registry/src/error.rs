//! Error types, one per operation, named after it as tokio names its own (`SendError`, `TrySendError`):
//! [`BuildError`] for [`AgentRegistryBuilder::build`](crate::AgentRegistryBuilder::build), [`OpenError`] for
//! [`AgentRegistry::open_session`](crate::AgentRegistry::open_session), [`RunError`] for
//! [`Session::run`](crate::Session::run), [`CancelError`] for [`Session::cancel`](crate::Session::cancel),
//! [`TryRecvError`] for [`EventStream::try_recv`](crate::EventStream::try_recv), [`EmitError`] and [`AgentError`]
//! inside a run.
//!
//! [`RegistryError`] is the single error of core-registry 0.10, kept so that code written against it still compiles:
//! every per-operation error converts into it with `?` and compares equal to the variant it used to be.

use crate::{RunId, SessionId, ToolCallId};

/// Why [`AgentRegistryBuilder::build`](crate::AgentRegistryBuilder::build) refused: every problem of the
/// configuration, found at once, in the order the builder's methods were called.
///
/// ```
/// # use core_registry::{AgentRegistry, BuildProblem};
/// let err = AgentRegistry::builder().event_buffer(0).max_runs_per_session(0).build().unwrap_err();
/// assert_eq!(err.problems().len(), 2);
/// assert!(matches!(err.problems()[0], BuildProblem::InvalidConfig { setting: "event_buffer", .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problem_list(.problems))]
pub struct BuildError {
    // Invariant: never empty.
    problems: Vec<BuildProblem>,
}

impl BuildError {
    /// `None` when there is no problem.
    pub(crate) fn new(problems: Vec<BuildProblem>) -> Option<Self> {
        if problems.is_empty() { None } else { Some(BuildError { problems }) }
    }

    /// Every problem found, at least one.
    pub fn problems(&self) -> &[BuildProblem] {
        &self.problems
    }

    /// Every problem found, at least one, by value.
    pub fn into_problems(self) -> Vec<BuildProblem> {
        self.problems
    }
}

fn problem_list(problems: &[BuildProblem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let list: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!("{} problems with the registry: {}", many.len(), list.join("; "))
        }
    }
}

/// One problem of a registry's configuration, reported by [`BuildError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildProblem {
    /// [`AgentRegistryBuilder::register`](crate::AgentRegistryBuilder::register) was given an empty name.
    #[error("agent name must not be empty; register the agent under a non-empty name such as \"echo\"")]
    EmptyAgentName,
    /// Two agents were registered under the same name; the first registration stays.
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
}

/// Why [`AgentRegistry::open_session`](crate::AgentRegistry::open_session) opened no session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The user id was empty.
    #[error("user id must not be empty; open the session with the authenticated user's id")]
    EmptyUserId,
}

/// Why [`Session::run`](crate::Session::run) (or [`run_tagged`](crate::Session::run_tagged)) started no run.
///
/// Nothing was started and no event was emitted; the input was not consumed by any agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The run was requested outside a tokio runtime.
    #[error("no tokio runtime: start runs from within a tokio runtime (e.g. inside #[tokio::main])")]
    NoRuntime,
    /// No agent is registered under the name asked for.
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
    /// The session's [`EventStream`](crate::EventStream) was dropped, so nobody could receive the run's events.
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
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none (register agents with AgentRegistry::builder().register(..))".to_owned()
    } else {
        known.join(", ")
    }
}

/// Why [`Session::cancel`](crate::Session::cancel) cancelled nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// The run is not in progress in this session: it has begun its terminal event already (so it ends as it was
    /// going to), or it belongs to another session. Nothing needs undoing.
    #[error("{run} is not in progress in {session}; it has completed or belongs to another session")]
    UnknownRun {
        /// The run that was named, handed back.
        run: RunId,
        /// The session that was asked.
        session: SessionId,
    },
}

impl CancelError {
    /// The run that was named.
    pub fn run_id(&self) -> RunId {
        match self {
            CancelError::UnknownRun { run, .. } => *run,
        }
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
    /// No event is buffered now; more may come: wait with [`recv`](crate::EventStream::recv).
    #[error("no event is buffered yet")]
    Empty,
    /// The session is closed and every run has delivered its last event: stop receiving.
    #[error("the session is closed and all its events were delivered")]
    Closed,
}

/// A string that is not a run id of the form `run-<number>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a run id; run ids look like `run-42`")]
pub struct ParseRunIdError(pub(crate) String);

/// The single error of core-registry 0.10, for building, opening, running and cancelling alike.
///
/// New code matches the error of the operation it called ([`BuildError`], [`OpenError`], [`RunError`],
/// [`CancelError`]), each of which converts into this one with `?` (so a function returning
/// `Result<_, RegistryError>` still compiles) and compares equal to the variant it used to be:
///
/// ```
/// # use core_registry::{AgentRegistry, OpenError, RegistryError};
/// let registry = AgentRegistry::builder().build()?;
/// let err = registry.open_session("").unwrap_err();
/// assert_eq!(err, OpenError::EmptyUserId);
/// assert_eq!(err, RegistryError::EmptyUserId);
/// assert_eq!(RegistryError::from(err), RegistryError::EmptyUserId);
/// # Ok::<(), core_registry::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// See [`BuildProblem::EmptyAgentName`].
    #[error("agent name must not be empty; register the agent under a non-empty name such as \"echo\"")]
    EmptyAgentName,
    /// See [`BuildProblem::DuplicateAgent`].
    #[error("agent `{0}` is already registered; every agent needs a unique name")]
    DuplicateAgent(String),
    /// See [`BuildProblem::InvalidConfig`].
    #[error("invalid registry setting `{setting}`: {reason}")]
    InvalidConfig {
        /// The builder method that received the bad value.
        setting: &'static str,
        /// Why the value was refused.
        reason: &'static str,
    },
    /// A [`BuildError`] with several problems (one problem converts into its own variant above).
    #[error(transparent)]
    Build(BuildError),
    /// See [`OpenError::EmptyUserId`].
    #[error("user id must not be empty; open the session with the authenticated user's id")]
    EmptyUserId,
    /// See [`RunError::UnknownAgent`].
    #[error("unknown agent `{name}`; known agents: {}", known_list(.known))]
    UnknownAgent {
        /// The name that was asked for.
        name: String,
        /// Every registered agent name, sorted.
        known: Vec<String>,
    },
    /// See [`RunError::SessionClosed`].
    #[error("{0} is closed; open a new session with AgentRegistry::open_session")]
    SessionClosed(SessionId),
    /// See [`RunError::StreamDropped`].
    #[error("the event stream of {0} was dropped, so no run can report to anyone; open a new session")]
    StreamDropped(SessionId),
    /// See [`RunError::TooManyRuns`].
    #[error("{session} already has {limit} runs in progress; wait for one to complete or cancel one")]
    TooManyRuns {
        /// The session that is at its limit.
        session: SessionId,
        /// The limit set with `AgentRegistryBuilder::max_runs_per_session`.
        limit: usize,
    },
    /// See [`CancelError::UnknownRun`].
    #[error("{run} is not in progress in {session}; it has completed or belongs to another session")]
    UnknownRun {
        /// The run that was named.
        run: RunId,
        /// The session that was asked.
        session: SessionId,
    },
    /// See [`RunError::NoRuntime`].
    #[error("no tokio runtime: start runs from within a tokio runtime (e.g. inside #[tokio::main])")]
    NoRuntime,
}

impl From<BuildProblem> for RegistryError {
    fn from(problem: BuildProblem) -> Self {
        match problem {
            BuildProblem::EmptyAgentName => RegistryError::EmptyAgentName,
            BuildProblem::DuplicateAgent(name) => RegistryError::DuplicateAgent(name),
            BuildProblem::InvalidConfig { setting, reason } => RegistryError::InvalidConfig { setting, reason },
        }
    }
}

impl From<BuildError> for RegistryError {
    fn from(err: BuildError) -> Self {
        if err.problems.len() == 1 {
            let mut problems = err.problems;
            RegistryError::from(problems.remove(0))
        } else {
            RegistryError::Build(err)
        }
    }
}

impl From<OpenError> for RegistryError {
    fn from(err: OpenError) -> Self {
        match err {
            OpenError::EmptyUserId => RegistryError::EmptyUserId,
        }
    }
}

impl From<RunError> for RegistryError {
    fn from(err: RunError) -> Self {
        match err {
            RunError::NoRuntime => RegistryError::NoRuntime,
            RunError::UnknownAgent { name, known } => RegistryError::UnknownAgent { name, known },
            RunError::SessionClosed(session) => RegistryError::SessionClosed(session),
            RunError::StreamDropped(session) => RegistryError::StreamDropped(session),
            RunError::TooManyRuns { session, limit } => RegistryError::TooManyRuns { session, limit },
        }
    }
}

impl From<CancelError> for RegistryError {
    fn from(err: CancelError) -> Self {
        match err {
            CancelError::UnknownRun { run, session } => RegistryError::UnknownRun { run, session },
        }
    }
}

/// `err == RegistryError::X` keeps compiling for code written against 0.10, where every operation returned
/// [`RegistryError`]: a per-operation error equals the variant it converts into.
macro_rules! eq_registry_error {
    ($($error:ty => $same:ident),* $(,)?) => {$(
        impl PartialEq<RegistryError> for $error {
            fn eq(&self, other: &RegistryError) -> bool {
                $same(self, other)
            }
        }

        impl PartialEq<$error> for RegistryError {
            fn eq(&self, other: &$error) -> bool {
                $same(other, self)
            }
        }
    )*};
}

eq_registry_error!(
    BuildError => build_same,
    OpenError => open_same,
    RunError => run_same,
    CancelError => cancel_same,
);

fn build_same(err: &BuildError, other: &RegistryError) -> bool {
    match (err.problems.as_slice(), other) {
        ([BuildProblem::EmptyAgentName], RegistryError::EmptyAgentName) => true,
        ([BuildProblem::DuplicateAgent(a)], RegistryError::DuplicateAgent(b)) => a == b,
        (
            [BuildProblem::InvalidConfig { setting, reason }],
            RegistryError::InvalidConfig { setting: other_setting, reason: other_reason },
        ) => setting == other_setting && reason == other_reason,
        ([_, _, ..], RegistryError::Build(other)) => err == other,
        _ => false,
    }
}

fn open_same(err: &OpenError, other: &RegistryError) -> bool {
    matches!((err, other), (OpenError::EmptyUserId, RegistryError::EmptyUserId))
}

fn run_same(err: &RunError, other: &RegistryError) -> bool {
    match (err, other) {
        (RunError::NoRuntime, RegistryError::NoRuntime) => true,
        (
            RunError::UnknownAgent { name, known },
            RegistryError::UnknownAgent { name: other_name, known: other_known },
        ) => name == other_name && known == other_known,
        (RunError::SessionClosed(a), RegistryError::SessionClosed(b)) => a == b,
        (RunError::StreamDropped(a), RegistryError::StreamDropped(b)) => a == b,
        (
            RunError::TooManyRuns { session, limit },
            RegistryError::TooManyRuns { session: other_session, limit: other_limit },
        ) => session == other_session && limit == other_limit,
        _ => false,
    }
}

fn cancel_same(err: &CancelError, other: &RegistryError) -> bool {
    match (err, other) {
        (
            CancelError::UnknownRun { run, session },
            RegistryError::UnknownRun { run: other_run, session: other_session },
        ) => run == other_run && session == other_session,
        _ => false,
    }
}
