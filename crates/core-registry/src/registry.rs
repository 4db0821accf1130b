//! [`AgentRegistry`] and its builder.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::agent::Agent;
use crate::error::{BuildError, BuildProblem, OpenError, RegistryError, RunError};
use crate::session::{EventStream, Session};

pub(crate) type Factory = Arc<dyn Fn() -> Arc<dyn Agent> + Send + Sync>;

/// The default capacity of a session's event buffer.
pub const DEFAULT_EVENT_BUFFER: usize = 64;
/// The default limit of runs in progress per session.
pub const DEFAULT_MAX_RUNS_PER_SESSION: usize = 32;

/// The agent registry: a value, built once and passed explicitly; there is no global instance.
///
/// Cloning is cheap and yields a handle on the same registry. Two registries built separately share nothing:
/// neither agents nor sessions nor counters.
#[derive(Clone)]
pub struct AgentRegistry {
    pub(crate) inner: Arc<RegistryInner>,
}

pub(crate) struct RegistryInner {
    pub(crate) agents: BTreeMap<Arc<str>, Factory>,
    pub(crate) event_buffer: usize,
    pub(crate) max_runs_per_session: usize,
    pub(crate) last_session: AtomicU64,
    pub(crate) last_run: AtomicU64,
    // Invariant: the number of `SessionShared` values alive.
    pub(crate) live_sessions: AtomicUsize,
    // Invariant: the number of run tasks that have not finished.
    pub(crate) live_runs: AtomicUsize,
}

impl fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRegistry")
            .field("agents", &self.agent_names().collect::<Vec<_>>())
            .field("live_sessions", &self.live_sessions())
            .field("live_runs", &self.live_runs())
            .finish()
    }
}

impl AgentRegistry {
    /// Starts building a registry.
    pub fn builder() -> AgentRegistryBuilder {
        AgentRegistryBuilder {
            agents: BTreeMap::new(),
            problems: Vec::new(),
            event_buffer: DEFAULT_EVENT_BUFFER,
            max_runs_per_session: DEFAULT_MAX_RUNS_PER_SESSION,
            error: PhantomData,
        }
    }

    /// Opens an isolated session for `user` and returns it with its event stream.
    ///
    /// The session gets its own agent instances; its runs' events go to this stream only. Dropping or
    /// [closing](Session::close) the session cancels its runs; the stream then yields their last events and ends.
    pub fn open_session(&self, user: &str) -> Result<(Session, EventStream), OpenError> {
        if user.is_empty() {
            return Err(OpenError::EmptyUserId);
        }
        Ok(Session::open(Arc::clone(&self.inner), user))
    }

    /// The registered agent names, sorted.
    pub fn agent_names(&self) -> impl Iterator<Item = &str> {
        self.inner.agents.keys().map(|name| &**name)
    }

    /// Whether an agent is registered under `name`.
    pub fn contains_agent(&self, name: &str) -> bool {
        self.inner.agents.contains_key(name)
    }

    /// Sessions whose resources are still held: open ones, and closed ones whose runs are still finishing.
    pub fn live_sessions(&self) -> usize {
        self.inner.live_sessions.load(Ordering::Acquire)
    }

    /// Runs that have started and not yet finished, across all sessions.
    pub fn live_runs(&self) -> usize {
        self.inner.live_runs.load(Ordering::Acquire)
    }
}

impl RegistryInner {
    pub(crate) fn unknown_agent(&self, name: &str) -> RunError {
        RunError::UnknownAgent {
            name: name.to_owned(),
            known: self.agents.keys().map(|name| name.to_string()).collect(),
        }
    }
}

/// Builds an [`AgentRegistry`]: register agents, adjust limits, then [`build`](AgentRegistryBuilder::build).
///
/// No setter fails: [`build`](AgentRegistryBuilder::build) checks the whole configuration and reports every
/// problem at once in a [`BuildError`].
///
/// ```
/// use core_registry::{async_trait, Agent, AgentError, AgentRegistry, BuildProblem, RunContext};
///
/// struct Echo;
///
/// #[async_trait]
/// impl Agent for Echo {
///     async fn run(&self, _ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
///         Ok(input)
///     }
/// }
///
/// let registry = AgentRegistry::builder().register("echo", || Echo).event_buffer(16).build()?;
/// assert_eq!(registry.agent_names().collect::<Vec<_>>(), ["echo"]);
///
/// let err = AgentRegistry::builder().register("echo", || Echo).register("echo", || Echo).register("", || Echo).build();
/// let problems = err.unwrap_err().into_problems();
/// assert_eq!(problems, [BuildProblem::DuplicateAgent("echo".into()), BuildProblem::EmptyAgentName]);
/// # Ok::<(), core_registry::BuildError>(())
/// ```
///
/// The type parameter is the error `build` returns: [`BuildError`], unless the builder came from
/// [`try_register`](AgentRegistryBuilder::try_register), which keeps core-registry 0.10's single
/// [`RegistryError`] for code written against it.
#[must_use = "a builder does nothing until `build` is called"]
pub struct AgentRegistryBuilder<E = BuildError> {
    agents: BTreeMap<Arc<str>, Factory>,
    // Every problem found by the setters so far, in call order; `build` adds those of the limits.
    problems: Vec<BuildProblem>,
    event_buffer: usize,
    max_runs_per_session: usize,
    error: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for AgentRegistryBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRegistryBuilder")
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .field("problems", &self.problems)
            .field("event_buffer", &self.event_buffer)
            .field("max_runs_per_session", &self.max_runs_per_session)
            .finish()
    }
}

impl<E> AgentRegistryBuilder<E> {
    /// Registers an agent under `name`. `factory` makes one instance per session that runs it.
    ///
    /// An empty or already registered name is reported by [`build`](AgentRegistryBuilder::build), with every
    /// other problem; the first registration of a name stays.
    pub fn register<A, F>(mut self, name: &str, factory: F) -> Self
    where
        A: Agent,
        F: Fn() -> A + Send + Sync + 'static,
    {
        if let Some(problem) = self.check_name(name) {
            self.problems.push(problem);
            return self;
        }
        let factory: Factory = Arc::new(move || Arc::new(factory()) as Arc<dyn Agent>);
        self.agents.insert(Arc::from(name), factory);
        self
    }

    /// Registers an agent like [`register`](AgentRegistryBuilder::register), but checks `name` now and fails at
    /// once with core-registry 0.10's [`RegistryError`]; the builder it returns reports `RegistryError` from
    /// `build` as well. This is what `registry_compat::register_agent` forwards to, so that code written against
    /// 0.10 compiles unchanged; new code calls `register` and reads every problem from `build`.
    pub fn try_register<A, F>(
        self,
        name: &str,
        factory: F,
    ) -> Result<AgentRegistryBuilder<RegistryError>, RegistryError>
    where
        A: Agent,
        F: Fn() -> A + Send + Sync + 'static,
    {
        if let Some(problem) = self.check_name(name) {
            return Err(problem.into());
        }
        let AgentRegistryBuilder { agents, problems, event_buffer, max_runs_per_session, error: _ } =
            self.register(name, factory);
        Ok(AgentRegistryBuilder { agents, problems, event_buffer, max_runs_per_session, error: PhantomData })
    }

    fn check_name(&self, name: &str) -> Option<BuildProblem> {
        if name.is_empty() {
            Some(BuildProblem::EmptyAgentName)
        } else if self.agents.contains_key(name) {
            Some(BuildProblem::DuplicateAgent(name.to_owned()))
        } else {
            None
        }
    }

    /// How many events a session buffers before its runs wait for the consumer (default
    /// [`DEFAULT_EVENT_BUFFER`]). Must be at least 1, which `build` checks.
    pub fn event_buffer(mut self, capacity: usize) -> Self {
        self.event_buffer = capacity;
        self
    }

    /// How many runs a session may have in progress at once (default [`DEFAULT_MAX_RUNS_PER_SESSION`]).
    /// Must be at least 1, which `build` checks.
    pub fn max_runs_per_session(mut self, limit: usize) -> Self {
        self.max_runs_per_session = limit;
        self
    }
}

impl<E: From<BuildError>> AgentRegistryBuilder<E> {
    /// Builds the registry, or reports every problem of the configuration at once: empty or duplicate agent names
    /// (in the order they were registered), then limits of zero.
    pub fn build(self) -> Result<AgentRegistry, E> {
        let mut problems = self.problems;
        if self.event_buffer == 0 {
            problems.push(BuildProblem::InvalidConfig { setting: "event_buffer", reason: "must be at least 1" });
        }
        if self.max_runs_per_session == 0 {
            problems
                .push(BuildProblem::InvalidConfig { setting: "max_runs_per_session", reason: "must be at least 1" });
        }
        if let Some(err) = BuildError::new(problems) {
            return Err(err.into());
        }
        Ok(AgentRegistry {
            inner: Arc::new(RegistryInner {
                agents: self.agents,
                event_buffer: self.event_buffer,
                max_runs_per_session: self.max_runs_per_session,
                last_session: AtomicU64::new(0),
                last_run: AtomicU64::new(0),
                live_sessions: AtomicUsize::new(0),
                live_runs: AtomicUsize::new(0),
            }),
        })
    }
}
