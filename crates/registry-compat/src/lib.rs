//! **Deprecated since 0.10.0: use [`core_registry`] instead. This crate is removed in 0.11.0.** The old -> new
//! table, the step-by-step migration and the version policy are in `MIGRATION.md` at the root of the repository.
//!
//! This is the 0.9 API of the agent registry, kept so that downstream code compiles unchanged while it migrates.
//! Every item is a `#[deprecated]` forwarding shim onto `core_registry`, and every deprecation note names the exact
//! path to write instead:
//!
//! - types are `pub type` aliases, so a value built through an old path *is* the `core_registry` value (type
//!   identity: it can be passed wherever the new type is required);
//! - functions, including `async` ones, are wrappers that make one forwarding call;
//! - constants refer to the new constants;
//! - the three old import paths of the registry, [`AgentRegistry`], [`registry::AgentRegistry`] and
//!   [`supervisor::agent_registry::AgentRegistry`], are aliases of the one [`core_registry::AgentRegistry`];
//! - the [`Agent`] trait and [`async_trait`] are re-exported (a trait alias does not exist on stable Rust), with a
//!   hidden deprecated twin of the same name so that `use registry_compat::Agent;` warns;
//! - [`register_agent!`] and [`register_agent`](fn@register_agent) forward to
//!   [`core_registry::AgentRegistryBuilder::try_register`], which fails at once on a bad name as 0.9 did
//!   (core-registry's own `register` reports problems from `build`).
//!
//! There is no global registry any more: the helpers take the registry, session or stream explicitly.
//!
//! ```
//! // This example shows the old API on purpose; each use warns (here silenced) with the new path in its note.
//! #![allow(deprecated)]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), registry_compat::RegistryError> {
//! use registry_compat::{async_trait, Agent, AgentError, AgentContext, EventKind, Outcome};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl Agent for Echo {
//!     async fn run(&self, _ctx: &mut AgentContext, input: String) -> Result<String, AgentError> {
//!         Ok(input)
//!     }
//! }
//!
//! let registry = registry_compat::register_agent(registry_compat::create_registry(), "echo", || Echo)?.build()?;
//! let (session, mut events) = registry_compat::create_session(&registry, "alice")?;
//! registry_compat::run_agent(&session, "echo", "hi")?;
//! while let Some(event) = registry_compat::next_event(&mut events).await {
//!     if let EventKind::AgentCompleted { outcome } = event.into_kind() {
//!         assert_eq!(outcome, Outcome::Succeeded { output: "hi".into() });
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![deprecated(
    since = "0.10.0",
    note = "registry-compat is deprecated: depend on core-registry and use core_registry::AgentRegistry and its \
            siblings directly; removed in 0.11.0, see MIGRATION.md"
)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

// The trait and the attribute macro cannot be aliased on stable Rust, so they are re-exported; a `pub use` never
// warns (rust-lang/rust#30827), hence the deprecated twins of the same name further down, which make
// `use registry_compat::Agent;` warn. A fully qualified `impl registry_compat::Agent for X` stays silent: see the
// known gaps in MIGRATION.md.
pub use core_registry::Agent;
pub use core_registry::async_trait;

/// The path that [`register_agent!`] expands to. Not part of the API.
#[doc(hidden)]
pub use core_registry as __private;

// The registry, its builder, sessions and streams.

/// The agent registry (the 0.9 top-level path).
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry")]
pub type AgentRegistry = core_registry::AgentRegistry;

/// Builds an [`AgentRegistry`].
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistryBuilder")]
pub type AgentRegistryBuilder = core_registry::AgentRegistryBuilder;

/// One user's session.
#[deprecated(since = "0.10.0", note = "use core_registry::Session")]
pub type Session = core_registry::Session;

/// A session's ordered events.
#[deprecated(since = "0.10.0", note = "use core_registry::EventStream")]
pub type EventStream = core_registry::EventStream;

// Events and identifiers.

/// One lifecycle event.
#[deprecated(since = "0.10.0", note = "use core_registry::Event")]
pub type Event = core_registry::Event;

/// One lifecycle event, under its 0.8 name.
#[deprecated(since = "0.10.0", note = "use core_registry::Event")]
pub type AgentEvent = core_registry::Event;

/// What happened in a run.
#[deprecated(since = "0.10.0", note = "use core_registry::EventKind")]
pub type EventKind = core_registry::EventKind;

/// How a run ended.
#[deprecated(since = "0.10.0", note = "use core_registry::Outcome")]
pub type Outcome = core_registry::Outcome;

/// Identifies a run.
#[deprecated(since = "0.10.0", note = "use core_registry::RunId")]
pub type RunId = core_registry::RunId;

/// Identifies a session.
#[deprecated(since = "0.10.0", note = "use core_registry::SessionId")]
pub type SessionId = core_registry::SessionId;

/// Identifies a tool call within its run.
#[deprecated(since = "0.10.0", note = "use core_registry::ToolCallId")]
pub type ToolCallId = core_registry::ToolCallId;

// The agent side.

/// A run's handle on its session's event stream.
#[deprecated(since = "0.10.0", note = "use core_registry::RunContext")]
pub type RunContext = core_registry::RunContext;

/// A run's handle on its session's event stream, under its 0.8 name.
#[deprecated(since = "0.10.0", note = "use core_registry::RunContext")]
pub type AgentContext = core_registry::RunContext;

/// Makes `use registry_compat::Agent;` warn; the trait itself is the re-export of [`core_registry::Agent`].
#[deprecated(since = "0.10.0", note = "use core_registry::Agent")]
#[doc(hidden)]
#[allow(non_upper_case_globals)] // Must be spelled like the trait it shadows in the value namespace.
pub const Agent: () = ();

/// Makes `use registry_compat::async_trait;` warn; the attribute is the re-export of
/// [`core_registry::async_trait`].
#[deprecated(since = "0.10.0", note = "use core_registry::async_trait")]
#[doc(hidden)]
#[allow(non_upper_case_globals)] // Must be spelled like the attribute it shadows in the value namespace.
pub const async_trait: () = ();

// Errors.

/// How an agent's run failed.
#[deprecated(since = "0.10.0", note = "use core_registry::AgentError")]
pub type AgentError = core_registry::AgentError;

/// Why an event could not be emitted.
#[deprecated(since = "0.10.0", note = "use core_registry::EmitError")]
pub type EmitError = core_registry::EmitError;

/// What went wrong in the registry.
#[deprecated(since = "0.10.0", note = "use core_registry::RegistryError")]
pub type RegistryError = core_registry::RegistryError;

/// Why no event was taken.
#[deprecated(since = "0.10.0", note = "use core_registry::TryRecvError")]
pub type TryRecvError = core_registry::TryRecvError;

/// A string that is not a run id.
#[deprecated(since = "0.10.0", note = "use core_registry::ParseRunIdError")]
pub type ParseRunIdError = core_registry::ParseRunIdError;

// Constants.

/// How many events a session buffers by default.
#[deprecated(since = "0.10.0", note = "use core_registry::DEFAULT_EVENT_BUFFER")]
pub const EVENT_BUFFER_SIZE: usize = core_registry::DEFAULT_EVENT_BUFFER;

/// How many runs a session may have in progress by default.
#[deprecated(since = "0.10.0", note = "use core_registry::DEFAULT_MAX_RUNS_PER_SESSION")]
pub const MAX_RUNS_PER_SESSION: usize = core_registry::DEFAULT_MAX_RUNS_PER_SESSION;

// The wire names of the events.

/// The wire name of the first event of a run.
#[deprecated(since = "0.10.0", note = "use core_registry::EventKind::AGENT_STARTED")]
pub const EVENT_AGENT_STARTED: &str = core_registry::EventKind::AGENT_STARTED;

/// The wire name of a progress report.
#[deprecated(since = "0.10.0", note = "use core_registry::EventKind::AGENT_THINKING")]
pub const EVENT_AGENT_THINKING: &str = core_registry::EventKind::AGENT_THINKING;

/// The wire name of a tool call.
#[deprecated(since = "0.10.0", note = "use core_registry::EventKind::TOOL_EXECUTING")]
pub const EVENT_TOOL_EXECUTING: &str = core_registry::EventKind::TOOL_EXECUTING;

/// The wire name of a tool call's end.
#[deprecated(since = "0.10.0", note = "use core_registry::EventKind::TOOL_COMPLETED")]
pub const EVENT_TOOL_COMPLETED: &str = core_registry::EventKind::TOOL_COMPLETED;

/// The wire name of the last event of a run.
#[deprecated(since = "0.10.0", note = "use core_registry::EventKind::AGENT_COMPLETED")]
pub const EVENT_AGENT_COMPLETED: &str = core_registry::EventKind::AGENT_COMPLETED;

// Helper functions. There is no global registry: each takes what it works on explicitly.

/// Starts building a registry.
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry::builder")]
pub fn create_registry() -> core_registry::AgentRegistryBuilder {
    core_registry::AgentRegistry::builder()
}

/// Registers an agent under `name`; `factory` makes one instance per session. Fails at once on an empty or
/// duplicate name, as in 0.9; the builder it returns reports [`RegistryError`] from `build`.
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistryBuilder::try_register")]
pub fn register_agent<A, F>(
    builder: core_registry::AgentRegistryBuilder,
    name: &str,
    factory: F,
) -> Result<core_registry::AgentRegistryBuilder<core_registry::RegistryError>, core_registry::RegistryError>
where
    A: core_registry::Agent,
    F: Fn() -> A + Send + Sync + 'static,
{
    builder.try_register(name, factory)
}

/// Opens an isolated session for `user`, with its event stream. The error converts into [`RegistryError`] with `?`
/// and compares equal to it.
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry::open_session")]
pub fn create_session(
    registry: &core_registry::AgentRegistry,
    user: &str,
) -> Result<(core_registry::Session, core_registry::EventStream), core_registry::OpenError> {
    registry.open_session(user)
}

/// Starts a run of `agent` on `input` in `session`. The error converts into [`RegistryError`] with `?` and
/// compares equal to it.
#[deprecated(since = "0.10.0", note = "use core_registry::Session::run")]
pub fn run_agent(
    session: &core_registry::Session,
    agent: &str,
    input: impl Into<String>,
) -> Result<core_registry::RunId, core_registry::RunError> {
    session.run(agent, input)
}

/// Cancels a run in progress. The error converts into [`RegistryError`] with `?` and compares equal to it.
#[deprecated(since = "0.10.0", note = "use core_registry::Session::cancel")]
pub fn cancel_run(
    session: &core_registry::Session,
    run: core_registry::RunId,
) -> Result<(), core_registry::CancelError> {
    session.cancel(run)
}

/// Closes a session, cancelling its runs.
#[deprecated(since = "0.10.0", note = "use core_registry::Session::close")]
pub fn close_session(session: &core_registry::Session) {
    session.close()
}

/// Waits for the next event of a session.
///
/// # Cancel safety
///
/// Cancel safe, like [`core_registry::EventStream::recv`].
#[deprecated(since = "0.10.0", note = "use core_registry::EventStream::recv")]
pub async fn next_event(events: &mut core_registry::EventStream) -> Option<core_registry::Event> {
    events.recv().await
}

/// Takes the next event of a session if one is buffered.
#[deprecated(since = "0.10.0", note = "use core_registry::EventStream::try_recv")]
pub fn try_next_event(
    events: &mut core_registry::EventStream,
) -> Result<core_registry::Event, core_registry::TryRecvError> {
    events.try_recv()
}

/// Registers an agent: `register_agent!(builder, "echo", || Echo)` registers like
/// `builder.register("echo", || Echo)`, but fails at once on an empty or duplicate name, as in 0.9, and returns a
/// `Result` (it forwards to [`core_registry::AgentRegistryBuilder::try_register`]).
///
/// ```
/// // The old macro on purpose; its use warns (here silenced) with the new path in the note.
/// #![allow(deprecated)]
/// struct Echo;
///
/// #[core_registry::async_trait]
/// impl core_registry::Agent for Echo {
///     async fn run(&self, _: &mut core_registry::RunContext, input: String) -> Result<String, core_registry::AgentError> {
///         Ok(input)
///     }
/// }
///
/// let builder = registry_compat::register_agent!(core_registry::AgentRegistry::builder(), "echo", || Echo)?;
/// assert!(builder.build()?.contains_agent("echo"));
/// # Ok::<(), core_registry::RegistryError>(())
/// ```
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistryBuilder::try_register")]
#[macro_export]
macro_rules! register_agent {
    ($builder:expr, $name:expr, $factory:expr $(,)?) => {
        $crate::__private::AgentRegistryBuilder::try_register($builder, $name, $factory)
    };
}

/// The 0.9 "compatibility wrapper" module.
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry")]
pub mod registry {
    /// The agent registry (the 0.9 `registry` module's path).
    #[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry")]
    pub type AgentRegistry = core_registry::AgentRegistry;

    /// Another handle on `registry`. There is no global registry any more: pass the registry explicitly.
    #[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry and pass it explicitly (clone the handle)")]
    pub fn get_agent_registry(registry: &core_registry::AgentRegistry) -> core_registry::AgentRegistry {
        registry.clone()
    }
}

/// The 0.9 "enhanced" registry's modules.
#[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry")]
pub mod supervisor {
    /// The 0.9 "enhanced" registry module.
    #[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry")]
    pub mod agent_registry {
        /// The agent registry (the 0.9 `supervisor::agent_registry` module's path).
        #[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry")]
        pub type AgentRegistry = core_registry::AgentRegistry;

        /// Starts building a registry (the 0.9 "enhanced" constructor).
        #[deprecated(since = "0.10.0", note = "use core_registry::AgentRegistry::builder")]
        pub fn create_enhanced_registry() -> core_registry::AgentRegistryBuilder {
            core_registry::AgentRegistry::builder()
        }
    }
}
