//! The single agent registry: register agents, open an isolated session per user, run agents, and receive every
//! run's lifecycle events in order, on that user's stream only.
//!
//! - No global state: an [`AgentRegistry`] is a value built once and passed explicitly.
//! - Isolation: each [`Session`] gets its own agent instances, and its runs' events go to its own [`EventStream`].
//! - Order: a stream numbers its events with a gap-free `seq`; each run emits `agent_started` first and exactly
//!   one `agent_completed` last (`succeeded`, `failed` or `cancelled`, also when the agent panics), and every
//!   `tool_executing` is followed by its `tool_completed`.
//! - Backpressure, never a silent drop: a full stream makes that session's runs wait; other sessions go on.
//! - No leaks: closing or dropping a session cancels its runs and frees everything;
//!   [`AgentRegistry::live_sessions`] and [`AgentRegistry::live_runs`] show it.
//! - One error per operation, each saying what to do: [`BuildError`] (every problem of the configuration at once),
//!   [`OpenError`], [`RunError`], [`CancelError`], [`TryRecvError`]; [`RegistryError`] is 0.10's single error, into
//!   which each converts.
//! - Cancellation is a `tokio_util::sync::CancellationToken` per run, cancelled by [`Session::cancel`] or by
//!   closing the session; an agent sees it through [`RunContext::is_cancelled`] and [`RunContext::cancelled`].
//! - [`Session::run_tagged`] tags a run, and every event of it carries the tag ([`Event::tag`]), so a consumer
//!   correlates events with its own requests without a map or a lock.
//! - [`EventStream`] is a [`futures_core::Stream`], with [`EventStream::poll_recv`] for hand-written futures.
//!
//! ```
//! use core_registry::{async_trait, Agent, AgentError, AgentRegistry, EventKind, Outcome, RunContext};
//!
//! struct Greeter;
//!
//! #[async_trait]
//! impl Agent for Greeter {
//!     async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
//!         ctx.thinking("looking up a greeting").await?;
//!         let greeting = ctx.call_tool("dictionary", "hello", async { Ok("hello".to_owned()) }).await?;
//!         Ok(format!("{}, {input}", greeting.map_err(AgentError::failed)?))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = AgentRegistry::builder().register("greeter", || Greeter).build()?;
//! let (session, mut events) = registry.open_session("alice")?;
//! let run = session.run("greeter", "alice")?;
//!
//! let mut names = Vec::new();
//! while let Some(event) = events.recv().await {
//!     assert_eq!((event.user(), event.run_id(), event.seq()), ("alice", run, names.len() as u64 + 1));
//!     names.push(event.kind().name());
//!     if let EventKind::AgentCompleted { outcome } = event.kind() {
//!         assert_eq!(outcome, &Outcome::Succeeded { output: "hello, alice".into() });
//!         break;
//!     }
//! }
//! assert_eq!(names, ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]);
//!
//! drop(session); // or session.close(): either cancels what still runs
//! assert!(events.recv().await.is_none());
//! assert_eq!((registry.live_sessions(), registry.live_runs()), (0, 0));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
// A library logs through `tracing`; it never prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod agent;
mod error;
mod event;
mod few;
mod raw;
mod registry;
mod session;

pub use agent::{Agent, RunContext};
pub use error::{
    AgentError, BuildError, BuildProblem, CancelError, EmitError, OpenError, ParseRunIdError, RegistryError, RunError,
    TryRecvError,
};
pub use event::{Event, EventKind, Outcome, RunId, SessionId, ToolCallId};
pub use registry::{AgentRegistry, AgentRegistryBuilder, DEFAULT_EVENT_BUFFER, DEFAULT_MAX_RUNS_PER_SESSION};
pub use session::{EventStream, Session};

/// Re-exported so agents can be written without depending on `async-trait` directly.
pub use async_trait::async_trait;
