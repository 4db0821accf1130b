//! The [`Agent`] trait and the [`RunContext`] through which a run reports what it does.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{AgentError, EmitError};
use crate::event::{EventKind, RunId, RunInfo, SessionId, ToolCallId};
use crate::raw::RawEvent;

/// An agent: something a user can run with an input, which reports progress and returns an answer.
///
/// Each session gets its own instance from the factory given to
/// [`AgentRegistryBuilder::register`](crate::AgentRegistryBuilder::register), created on the session's first run
/// of that agent and shared by the session's later runs of it. State kept in an instance (behind a lock, since runs
/// of one session may overlap) is therefore per user session, never shared across users.
///
/// The registry emits `agent_started` before `run` is called and exactly one `agent_completed` after it returns,
/// errors, panics or is cancelled; an agent only reports what happens in between through `ctx`.
///
/// ```
/// use core_registry::{async_trait, Agent, AgentError, RunContext};
///
/// struct Shout;
///
/// #[async_trait]
/// impl Agent for Shout {
///     async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
///         ctx.thinking("raising my voice").await?;
///         Ok(input.to_uppercase())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Agent: Send + Sync + 'static {
    /// Runs the agent on `input` and returns its answer.
    ///
    /// # Cancel safety
    ///
    /// The registry drops this future when the run is cancelled; work in progress is lost, and any tool call left
    /// open gets its `tool_completed` (with an error) from the registry.
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError>;
}

/// A run's handle on its session's event stream and on its cancellation, given to [`Agent::run`].
pub struct RunContext {
    info: Arc<RunInfo>,
    events: mpsc::Sender<RawEvent>,
    // Cancelled by `Session::cancel` for this run, or by closing the session.
    cancel: CancellationToken,
    last_call: u32,
    // Invariant: holds exactly the calls that have a `tool_executing` and no `tool_completed` yet.
    open_calls: Vec<(ToolCallId, Arc<str>)>,
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("run", &self.info.run_id)
            .field("session", &self.info.session_id)
            .field("user", &self.info.user)
            .field("agent", &self.info.agent)
            .field("open_calls", &self.open_calls)
            .finish()
    }
}

impl RunContext {
    pub(crate) fn new(info: Arc<RunInfo>, events: mpsc::Sender<RawEvent>, cancel: CancellationToken) -> Self {
        RunContext { info, events, cancel, last_call: 0, open_calls: Vec::new() }
    }

    /// This run's id.
    pub fn run_id(&self) -> RunId {
        self.info.run_id
    }

    /// The session this run belongs to.
    pub fn session_id(&self) -> SessionId {
        self.info.session_id
    }

    /// The user who owns the session.
    pub fn user(&self) -> &str {
        &self.info.user
    }

    /// The name this agent was registered under.
    pub fn agent(&self) -> &str {
        &self.info.agent
    }

    /// The tag the run was started with ([`Session::run_tagged`](crate::Session::run_tagged)), if any.
    pub fn tag(&self) -> Option<&str> {
        self.info.tag.as_deref()
    }

    /// Whether the run has been asked to stop (by [`Session::cancel`](crate::Session::cancel) or by closing the
    /// session). The registry stops it anyway at its next `.await`; long synchronous work can check this in between.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes once the run has been asked to stop.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing, and a later call completes as soon as the run is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The run's cancellation token, for work the agent hands to other tasks: it is cancelled when the run is.
    /// Cancelling it (or a clone) cancels the run.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Emits `agent_thinking`.
    ///
    /// Waits while the session's event buffer is full (backpressure from a slow consumer).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the event is not emitted.
    pub async fn thinking(&mut self, text: impl Into<String>) -> Result<(), EmitError> {
        // The hot path of most agents: one future level and the 24-byte text held across the wait, the event built
        // in place once a slot is free.
        let text = text.into();
        let permit = self.events.reserve().await.map_err(|_| EmitError::StreamClosed)?;
        permit.send(RawEvent::Thinking { run: self.info.run_id, text });
        Ok(())
    }

    /// Emits `tool_executing` and returns the call's id, to be passed to [`RunContext::tool_completed`].
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the event is not emitted and no call is opened.
    pub async fn tool_executing(&mut self, tool: &str, input: impl Into<String>) -> Result<ToolCallId, EmitError> {
        self.last_call += 1;
        let call = ToolCallId(self.last_call);
        let input = input.into();
        let permit = self.events.reserve().await.map_err(|_| EmitError::StreamClosed)?;
        let tool: Arc<str> = Arc::from(tool);
        let kind = EventKind::ToolExecuting { call, tool: Arc::clone(&tool), input };
        permit.send(RawEvent::next(self.info.run_id, kind));
        self.open_calls.push((call, tool));
        Ok(call)
    }

    /// Emits `tool_completed` for a call opened with [`RunContext::tool_executing`].
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the event is not emitted and the call stays open (the
    /// registry completes it with an error when the run ends).
    pub async fn tool_completed(&mut self, call: ToolCallId, result: Result<String, String>) -> Result<(), EmitError> {
        let Some(index) = self.open_calls.iter().position(|(open, _)| *open == call) else {
            return Err(EmitError::UnknownToolCall(call));
        };
        let permit = self.events.reserve().await.map_err(|_| EmitError::StreamClosed)?;
        let tool = Arc::clone(&self.open_calls[index].1);
        permit.send(RawEvent::next(self.info.run_id, EventKind::ToolCompleted { call, tool, result }));
        self.open_calls.remove(index);
        Ok(())
    }

    /// Runs `tool` as one tool call: emits `tool_executing`, awaits `call`, emits `tool_completed` with its
    /// result, and returns that result.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped while `call` runs, the call stays open and the registry completes it with an error.
    pub async fn call_tool<F>(
        &mut self,
        tool: &str,
        input: impl Into<String>,
        call: F,
    ) -> Result<Result<String, String>, EmitError>
    where
        F: Future<Output = Result<String, String>>,
    {
        let id = self.tool_executing(tool, input).await?;
        let result = call.await;
        self.tool_completed(id, result.clone()).await?;
        Ok(result)
    }

    /// The session's event channel. Events are emitted by reserving a slot, then building the event in place: an
    /// `async fn` taking the event would hold it twice across the wait (its argument and its local), and the
    /// futures of the run's task and of its agent would be larger by that much.
    pub(crate) fn events(&self) -> &mpsc::Sender<RawEvent> {
        &self.events
    }

    /// The run's first event, `agent_started`, which carries the run's identity to the stream.
    pub(crate) fn started(&self, input: String) -> RawEvent {
        RawEvent::first(Arc::clone(&self.info), input)
    }

    /// The tool calls left open, taken out so the registry can complete them.
    pub(crate) fn take_open_calls(&mut self) -> Vec<(ToolCallId, Arc<str>)> {
        std::mem::take(&mut self.open_calls)
    }

    /// A handle on the session's event channel (to notice when the stream is dropped), and the run's token.
    pub(crate) fn channel_and_token(&self) -> (mpsc::Sender<RawEvent>, CancellationToken) {
        (self.events.clone(), self.cancel.clone())
    }

    /// Takes the event sender out, so the caller decides when the stream's last sender is dropped.
    pub(crate) fn into_sender(self) -> mpsc::Sender<RawEvent> {
        self.events
    }
}
