//! [`Session`]: one user's isolated set of agent instances and runs, and its [`EventStream`].

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::agent::{Agent, RunContext};
use crate::error::{CancelError, RunError, TryRecvError};
use crate::event::{Event, EventKind, Outcome, RunId, RunInfo, SessionId};
use crate::few::Few;
use crate::raw::RawEvent;
use crate::registry::RegistryInner;

/// One user's session: runs agents on their behalf, with agent instances of its own.
///
/// Every event of the session's runs goes to the [`EventStream`] returned beside it, and nowhere else.
/// Closing or dropping the session cancels its runs; each still emits its `agent_completed` (`cancelled`), then
/// the stream ends and everything the session held is freed.
pub struct Session {
    shared: Arc<SessionShared>,
}

/// What a session's runs share with it. Held by the [`Session`] and by each run task, so it is freed when the
/// session is gone and its last run has ended.
pub(crate) struct SessionShared {
    id: SessionId,
    user: Arc<str>,
    registry: Arc<RegistryInner>,
    span: tracing::Span,
    state: Mutex<SessionState>,
}

/// The cancellation tree is two levels deep: the session is its root, and each run in progress has a
/// `CancellationToken` in `runs`. `Session::cancel` cancels one run's token; closing the session cancels all of them,
/// under the same lock under which runs are registered, so no run can start unseen by a close. (A root token with
/// `child_token` per run would cost two more allocations per session for the same guarantee.)
struct SessionState {
    // Invariant: `Some` exactly while the session is open; the stream ends once this and every run's clone are gone.
    events: Option<mpsc::Sender<RawEvent>>,
    // Invariant: holds exactly the runs that have not begun to emit their terminal event, with their tokens; every
    // token here is cancelled once `events` is `None`. A session has few runs at once, so a list beats a map here.
    runs: Few<(RunId, CancellationToken)>,
    // This session's agent instances, at most one per registered agent, created on first use.
    // Each keyed by the address of the agent's name in the registry, which the session keeps alive: no reference
    // count to touch on a name that every session of the registry shares (a cache line bouncing between workers).
    agents: Few<(usize, Arc<dyn Agent>)>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.shared.id)
            .field("user", &self.shared.user)
            .field("closed", &self.is_closed())
            .field("live_runs", &self.live_runs())
            .finish()
    }
}

impl SessionShared {
    fn lock(&self) -> MutexGuard<'_, SessionState> {
        // The state stays consistent across a panic (no user code runs under the lock), so poison is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.lock().events.is_none()
    }
}

impl Drop for SessionShared {
    fn drop(&mut self) {
        self.registry.live_sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Session {
    pub(crate) fn open(registry: Arc<RegistryInner>, user: &str) -> (Session, EventStream) {
        let id = SessionId(registry.last_session.fetch_add(1, Ordering::Relaxed) + 1);
        let (sender, receiver) = mpsc::channel(registry.event_buffer);
        registry.live_sessions.fetch_add(1, Ordering::AcqRel);
        // Debug level, like everything logged inside it: disabled (free) at the default level of an application.
        let span = tracing::debug_span!("session", session = %id, user);
        tracing::debug!(parent: &span, "session opened");
        let shared = Arc::new(SessionShared {
            id,
            user: Arc::from(user),
            registry,
            span,
            state: Mutex::new(SessionState { events: Some(sender), runs: Few::new(), agents: Few::new() }),
        });
        (Session { shared }, EventStream { events: receiver, runs: Few::new(), last_seq: 0, session: id })
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.shared.id
    }

    /// The user who owns this session.
    pub fn user(&self) -> &str {
        &self.shared.user
    }

    /// Whether [`close`](Session::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// This session's runs in progress (those that have not begun to emit their terminal event).
    pub fn live_runs(&self) -> usize {
        self.shared.lock().runs.len()
    }

    /// Starts a run of `agent` on `input` and returns its id; its events arrive on this session's stream, starting
    /// with `agent_started`.
    ///
    /// Must be called within a tokio runtime, which runs the agent. Fails if the session is closed, its event stream
    /// was dropped, the agent is unknown (the error lists the known ones), or the session is at its limit of runs in
    /// progress. To correlate the run's events with something of the caller's without a map, use
    /// [`run_tagged`](Session::run_tagged).
    pub fn run(&self, agent: &str, input: impl Into<String>) -> Result<RunId, RunError> {
        self.start(agent, input.into(), None)
    }

    /// Like [`run`](Session::run), and every event of the run carries `tag` ([`Event::tag`]), so a consumer can
    /// tell whose run an event belongs to (a request id, say) from the event alone, even for the run's first event,
    /// which may arrive before this call returns.
    ///
    /// ```
    /// # use core_registry::{async_trait, Agent, AgentError, AgentRegistry, RunContext};
    /// # struct Echo;
    /// # #[async_trait]
    /// # impl Agent for Echo {
    /// #     async fn run(&self, _: &mut RunContext, input: String) -> Result<String, AgentError> { Ok(input) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = AgentRegistry::builder().register("echo", || Echo).build()?;
    /// let (session, mut events) = registry.open_session("alice")?;
    /// session.run_tagged("echo", "hi", "request-1")?;
    /// let started = events.recv().await.unwrap();
    /// assert_eq!(started.tag(), Some("request-1"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn run_tagged(
        &self,
        agent: &str,
        input: impl Into<String>,
        tag: impl Into<Box<str>>,
    ) -> Result<RunId, RunError> {
        self.start(agent, input.into(), Some(tag.into()))
    }

    fn start(&self, agent: &str, input: String, tag: Option<Box<str>>) -> Result<RunId, RunError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RunError::NoRuntime)?;
        let shared = &self.shared;
        let registry = &shared.registry;
        let Some((agent_name, factory)) = registry.agents.get_key_value(agent) else {
            return Err(registry.unknown_agent(agent));
        };
        let key = agent_name.as_ptr() as usize;
        let find = |state: &SessionState| state.agents.iter().find(|(k, _)| *k == key).map(|it| it.1.clone());

        // The factory is user code: call it outside the lock. Instances are never removed, so one found now is
        // found again below.
        let fresh = if find(&shared.lock()).is_none() { Some(factory()) } else { None };

        let mut state = shared.lock();
        let Some(events) = state.events.clone() else {
            return Err(RunError::SessionClosed(shared.id));
        };
        if events.is_closed() {
            return Err(RunError::StreamDropped(shared.id));
        }
        if state.runs.len() >= registry.max_runs_per_session {
            return Err(RunError::TooManyRuns { session: shared.id, limit: registry.max_runs_per_session });
        }
        let instance = match find(&state) {
            // Made earlier, or by another thread since the check above; the first instance stays.
            Some(instance) => instance,
            None => {
                let instance = fresh.unwrap_or_else(|| factory());
                state.agents.push((key, Arc::clone(&instance)));
                instance
            }
        };
        let run_id = RunId(registry.last_run.fetch_add(1, Ordering::Relaxed) + 1);
        let cancel = CancellationToken::new();
        state.runs.push((run_id, cancel.clone()));
        drop(state);
        registry.live_runs.fetch_add(1, Ordering::AcqRel);

        let info = Arc::new(RunInfo {
            run_id,
            session_id: shared.id,
            user: Arc::clone(&shared.user),
            agent: Arc::clone(agent_name),
            tag,
        });
        // Debug level: at info, every run formatted its fields into a span slot for nothing logged inside it.
        let span = tracing::debug_span!(parent: &shared.span, "run", run = %run_id, agent = %agent_name);
        let ctx = RunContext::new(info, events, cancel);
        let guard = RunGuard { session: Arc::clone(shared), run_id, registered: true };
        runtime.spawn(run_task(instance, ctx, input, guard).instrument(span));
        Ok(run_id)
    }

    /// Cancels a run in progress. It ends with `agent_completed` (`cancelled`) unless it completes first.
    ///
    /// Fails, handing the id back, if the run is not in progress in this session (it has begun its terminal event,
    /// or it belongs to another session); there is nothing to undo then.
    pub fn cancel(&self, run: RunId) -> Result<(), CancelError> {
        match self.shared.lock().runs.iter().find(|(id, _)| *id == run) {
            Some((_, token)) => {
                token.cancel();
                Ok(())
            }
            None => Err(CancelError::UnknownRun { run, session: self.shared.id }),
        }
    }

    /// Closes the session: no new runs; runs in progress are cancelled and emit their terminal event; the event
    /// stream ends after the last of them. Closing twice is harmless. Dropping the session closes it too.
    pub fn close(&self) {
        let sender = {
            let mut state = self.shared.lock();
            for (_, token) in state.runs.iter() {
                token.cancel();
            }
            state.events.take()
        };
        if sender.is_some() {
            tracing::debug!(parent: &self.shared.span, "session closed");
        }
    }

    #[cfg(test)]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<SessionShared> {
        Arc::downgrade(&self.shared)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Unregisters a run when its task ends, however it ends (also when the runtime drops the task).
struct RunGuard {
    session: Arc<SessionShared>,
    run_id: RunId,
    // Whether the run is still in its session's list.
    registered: bool,
}

impl RunGuard {
    /// Frees the run's place in its session: it can no longer be cancelled and no longer counts against the limit
    /// of runs in progress. Idempotent.
    fn unregister(&mut self) {
        if std::mem::take(&mut self.registered) {
            let mut state = self.session.lock();
            state.runs.remove_where(|(id, _)| *id == self.run_id);
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.unregister();
        self.session.registry.live_runs.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A run's task: drives the agent to its terminal event, then releases what the run holds.
///
/// One `async` block over the values it owns, not an `async fn`: an `async fn`'s future keeps its arguments twice
/// (as captured and as locals), and every wait emits by reserving a slot before building the event, so no event is
/// held across a wait either. The task's future with its span is 472 bytes instead of 688 (`-Zprint-type-sizes`),
/// which the runtime moves a few times per run.
#[expect(clippy::manual_async_fn, reason = "an async fn would keep its arguments twice in the task's future")]
fn run_task(
    agent: Arc<dyn Agent>,
    mut ctx: RunContext,
    input: String,
    mut guard: RunGuard,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        'run: {
            let Ok(permit) = ctx.events().reserve().await else {
                tracing::debug!("event stream dropped before the run started");
                break 'run;
            };
            permit.send(ctx.started(input.clone()));

            // Nobody can receive this run's events once the stream is dropped: treat that as a cancellation, so
            // that an agent that is waiting (not emitting) does not outlive its consumer.
            let (events, cancel) = ctx.channel_and_token();
            let outcome = {
                let mut run = pin!(AssertUnwindSafe(agent.run(&mut ctx, input)).catch_unwind());
                // Cancelled by `Session::cancel`, or by closing the session.
                let mut cancelled = pin!(cancel.cancelled());
                let mut closed = pin!(events.closed());
                // What a biased `select!` over (cancelled, closed, run) would do, but the two wake-ups are
                // registered only once the agent has returned `Pending`: a run that completes in its first poll
                // never takes the locks of the two `Notify` lists (callgrind: about 600 instructions per run).
                std::future::poll_fn(|cx| {
                    if cancel.is_cancelled() || events.is_closed() {
                        return Poll::Ready(Outcome::Cancelled);
                    }
                    if let Poll::Ready(result) = run.as_mut().poll(cx) {
                        return Poll::Ready(match result {
                            Ok(Ok(output)) => Outcome::Succeeded { output },
                            Ok(Err(error)) => Outcome::Failed { error: error.to_string() },
                            Err(panic) => {
                                Outcome::Failed { error: format!("agent panicked: {}", panic_message(&*panic)) }
                            }
                        });
                    }
                    if cancelled.as_mut().poll(cx).is_ready() || closed.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Outcome::Cancelled);
                    }
                    Poll::Pending
                })
                .await
            };
            drop((events, cancel));
            tracing::debug!(outcome = outcome.as_str(), "run ended");

            // Invariant: every tool_executing gets its tool_completed before the terminal event.
            for (call, tool) in ctx.take_open_calls() {
                let Ok(permit) = ctx.events().reserve().await else {
                    break 'run;
                };
                let result = Err(format!("aborted: the run was {} before the tool completed", outcome.as_str()));
                permit.send(RawEvent::next(ctx.run_id(), EventKind::ToolCompleted { call, tool, result }));
            }
            // Unregister before the terminal event, so that a consumer who sees it can start a new run at once
            // without finding this one still counted against the session's limit.
            guard.unregister();
            match ctx.events().reserve().await {
                Ok(permit) => permit.send(RawEvent::next(ctx.run_id(), EventKind::AgentCompleted { outcome })),
                Err(_) => tracing::debug!("event stream dropped before the terminal event"),
            }
        }
        // Release in this order: everything that keeps the session alive or counts the run, and only then the event
        // sender, which may be the stream's last. So a consumer who sees the stream end finds the counters already
        // down.
        let events = ctx.into_sender();
        drop(guard);
        drop(events);
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "non-string panic payload"
    }
}

/// A session's events, in order: `seq` starts at 1 and has no gaps.
///
/// Buffered with a fixed capacity: while it is full, the session's runs wait (other sessions are not affected).
/// Dropping the stream cancels the session's runs (nobody could receive their events); the session itself stays
/// open until it is closed or dropped.
pub struct EventStream {
    events: mpsc::Receiver<RawEvent>,
    // Invariant: the identity of every run whose first event was received and whose terminal event was not.
    runs: Few<Arc<RunInfo>>,
    // Invariant: the seq of the last event handed out; the next gets last_seq + 1.
    last_seq: u64,
    session: SessionId,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").field("session", &self.session).field("last_seq", &self.last_seq).finish()
    }
}

impl EventStream {
    /// The session whose events this stream carries.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// How many events are buffered, waiting to be received (at most the registry's `event_buffer`).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is buffered now.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Waits for the next event. Returns `None` once the session is closed and every run has emitted its last
    /// event.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes (in a `tokio::select!` branch that lost, say), no
    /// event is lost and no `seq` is used; the next call receives that event.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event, for code that implements a future or stream by hand: `Poll::Ready(Some(event))`,
    /// `Poll::Ready(None)` once the stream has ended (as [`recv`](EventStream::recv) returns `None`), or
    /// `Poll::Pending`, after which `cx`'s waker is woken when an event arrives or the stream ends. Only the waker of
    /// the most recent call is woken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(raw)) => Poll::Ready(Some(self.number(raw))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Takes the next event if one is buffered.
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        match self.events.try_recv() {
            Ok(raw) => Ok(self.number(raw)),
            Err(mpsc::error::TryRecvError::Empty) => Err(TryRecvError::Empty),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(TryRecvError::Closed),
        }
    }

    /// Completes a received event: its `seq`, and its run's identity, kept from the run's first event to its
    /// terminal one. One match on the channel form, `agent_thinking` first (the hot path).
    fn number(&mut self, raw: RawEvent) -> Event {
        let (run, kind) = match raw {
            RawEvent::Thinking { run, text } => (self.run(run), EventKind::AgentThinking { text }),
            RawEvent::Started { info, input } => {
                self.runs.push(Arc::clone(&info));
                (info, EventKind::AgentStarted { input })
            }
            RawEvent::Succeeded { run, output } => {
                (self.end_run(run), EventKind::AgentCompleted { outcome: Outcome::Succeeded { output } })
            }
            RawEvent::Failed { run, error } => {
                (self.end_run(run), EventKind::AgentCompleted { outcome: Outcome::Failed { error } })
            }
            RawEvent::Cancelled { run } => {
                (self.end_run(run), EventKind::AgentCompleted { outcome: Outcome::Cancelled })
            }
            RawEvent::Boxed { run, kind } if kind.is_terminal() => (self.end_run(run), *kind),
            RawEvent::Boxed { run, kind } => (self.run(run), *kind),
        };
        self.last_seq += 1;
        Event { seq: self.last_seq, run, kind }
    }

    /// The identity of run `id`, which has had its first event and not its terminal one.
    fn run(&self, id: RunId) -> Arc<RunInfo> {
        // The channel is FIFO and each run sends its first event before any other.
        Arc::clone(self.runs.find(|info| info.run_id == id).expect(FIRST_EVENT_FIRST))
    }

    /// The identity of run `id`, whose terminal event this is: the stream keeps it no longer.
    fn end_run(&mut self, id: RunId) -> Arc<RunInfo> {
        self.runs.remove_where(|info| info.run_id == id).expect(FIRST_EVENT_FIRST)
    }
}

const FIRST_EVENT_FIRST: &str = "invariant: a run's first event, which carries its identity, precedes its others";

/// The events as a [`Stream`](futures_core::Stream), for stream combinators (`StreamExt::next`, `map`, `take_while`);
/// it yields what [`EventStream::recv`] would and ends when it returns `None`.
///
/// ```
/// # use core_registry::{async_trait, Agent, AgentError, AgentRegistry, RunContext};
/// use futures_util::StreamExt as _;
/// # struct Echo;
/// # #[async_trait]
/// # impl Agent for Echo {
/// #     async fn run(&self, _: &mut RunContext, input: String) -> Result<String, AgentError> { Ok(input) }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = AgentRegistry::builder().register("echo", || Echo).build()?;
/// let (session, events) = registry.open_session("alice")?;
/// session.run("echo", "hi")?;
/// session.close(); // the stream ends after the run's last event
/// let names: Vec<_> = events.map(|event| event.kind().name()).collect().await;
/// assert_eq!(names, ["agent_started", "agent_completed"]);
/// # Ok(())
/// # }
/// ```
impl futures_core::Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_recv(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.events.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ToolCallId;
    use crate::{AgentError, AgentRegistry};

    /// Every kind of event, as an agent and the registry emit them.
    fn every_kind() -> Vec<EventKind> {
        let tool: Arc<str> = Arc::from("search");
        vec![
            EventKind::AgentStarted { input: "in".into() },
            EventKind::AgentThinking { text: "hmm".into() },
            EventKind::AgentThinking { text: String::new() },
            EventKind::ToolExecuting { call: ToolCallId(1), tool: Arc::clone(&tool), input: "q".into() },
            EventKind::ToolCompleted { call: ToolCallId(1), tool: Arc::clone(&tool), result: Ok("found".into()) },
            EventKind::ToolCompleted { call: ToolCallId(2), tool, result: Err("lost".into()) },
            EventKind::AgentCompleted { outcome: Outcome::Succeeded { output: "out".into() } },
            EventKind::AgentCompleted { outcome: Outcome::Failed { error: "no".into() } },
            EventKind::AgentCompleted { outcome: Outcome::Cancelled },
        ]
    }

    #[test]
    fn every_kind_round_trips_through_the_channel_form() {
        let session = SessionId(1);
        let (sender, events) = mpsc::channel(64);
        let mut stream = EventStream { events, runs: Few::new(), last_seq: 0, session };
        let user: Arc<str> = Arc::from("alice");
        let info = |run: u64| {
            let (user, agent, tag) = (Arc::clone(&user), Arc::from("echo"), Some(format!("tag-{run}").into()));
            Arc::new(RunInfo { run_id: RunId(run), session_id: session, user, agent, tag })
        };
        // One run per terminal kind: each run's first event, then every non-terminal kind, then its terminal one.
        let kinds = every_kind();
        let (terminal, others): (Vec<_>, Vec<_>) = kinds.iter().partition(|kind| kind.is_terminal());
        let mut expected = Vec::new();
        for (n, end) in terminal.iter().enumerate() {
            let run = info(n as u64 + 1);
            sender.try_send(RawEvent::first(Arc::clone(&run), format!("input {n}"))).unwrap();
            expected.push((Arc::clone(&run), EventKind::AgentStarted { input: format!("input {n}") }));
            for kind in others.iter().chain([end]) {
                sender.try_send(RawEvent::next(run.run_id, (*kind).clone())).unwrap();
                expected.push((Arc::clone(&run), (*kind).clone()));
            }
        }
        for (seq, (run, kind)) in expected.into_iter().enumerate() {
            let event = stream.try_recv().unwrap();
            assert_eq!(event.seq(), seq as u64 + 1);
            assert!(Arc::ptr_eq(&event.run, &run), "event {seq} lost its run's identity");
            assert_eq!((event.run_id(), event.tag(), event.kind()), (run.run_id, run.tag.as_deref(), &kind));
        }
        assert_eq!(stream.runs.len(), 0, "a run's identity was kept after its terminal event");
        drop(sender);
        assert!(matches!(stream.try_recv(), Err(TryRecvError::Closed)));
    }

    struct Pending;

    #[async_trait::async_trait]
    impl Agent for Pending {
        async fn run(&self, _ctx: &mut RunContext, _input: String) -> Result<String, AgentError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn closed_sessions_leave_no_reference_behind() {
        let registry = AgentRegistry::builder().register("pending", || Pending).build().unwrap();
        let mut weak_sessions = Vec::new();
        for n in 0..10_000 {
            let (session, mut events) = registry.open_session("user").unwrap();
            if n % 100 == 0 {
                session.run("pending", "").unwrap();
            }
            weak_sessions.push(session.downgrade());
            session.close();
            drop(session);
            while events.recv().await.is_some() {}
        }
        assert!(weak_sessions.iter().all(|weak| weak.upgrade().is_none()), "a closed session is still referenced");
        assert_eq!(registry.live_sessions(), 0);
        assert_eq!(registry.live_runs(), 0);
    }
}
