//! Deterministic built-in agents for the agent registry: no network, no LLM, the same events for the same input.
//!
//! | name | what it does |
//! |---|---|
//! | `echo` | answers with its input |
//! | `tools` | thinks, calls the `word_count` and `reverse` tools, then answers with both results |
//! | `slow` | takes `N` steps (input `N`, default 5), each after [`Slow::step`], emitting one `agent_thinking` per step |
//! | `fail` | thinks once, then fails with an error |
//! | `panic` | thinks once, then panics (the registry turns it into a `failed` outcome) |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use core_registry::{AgentRegistry, EventKind, Outcome};
//!
//! let registry = agents::register_builtin(AgentRegistry::builder()).build()?;
//! let (session, mut events) = registry.open_session("alice")?;
//! session.run("echo", "hi")?;
//! while let Some(event) = events.recv().await {
//!     if let EventKind::AgentCompleted { outcome } = event.into_kind() {
//!         assert_eq!(outcome, Outcome::Succeeded { output: "hi".into() });
//!         break;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
// A library logs through `tracing`; it never prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use core_registry::{Agent, AgentError, AgentRegistryBuilder, RunContext, async_trait};

/// Registers every built-in agent under its name (see the crate docs). A name already taken in `builder` is
/// reported by its `build`.
pub fn register_builtin<E>(builder: AgentRegistryBuilder<E>) -> AgentRegistryBuilder<E> {
    builder
        .register("echo", || Echo)
        .register("tools", || Tools)
        .register("slow", Slow::default)
        .register("fail", || Fail)
        .register("panic", || Panic)
}

/// Answers with its input, emitting nothing in between.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

#[async_trait]
impl Agent for Echo {
    async fn run(&self, _ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        Ok(input)
    }
}

/// Thinks, calls two tools (`word_count`, then `reverse`), and answers with both results.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tools;

#[async_trait]
impl Agent for Tools {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        ctx.thinking(format!("analysing {} characters", input.chars().count())).await?;
        let words = ctx
            .call_tool("word_count", input.as_str(), async { Ok(input.split_whitespace().count().to_string()) })
            .await?;
        let words = words.map_err(AgentError::failed)?;
        let reversed = ctx.call_tool("reverse", input.as_str(), async { Ok(input.chars().rev().collect()) }).await?;
        let reversed = reversed.map_err(AgentError::failed)?;
        ctx.thinking("composing the answer").await?;
        Ok(format!("{words} words; reversed: {reversed}"))
    }
}

/// Takes `N` steps (its input, a whole number; empty means [`Slow::DEFAULT_STEPS`]), waiting [`Slow::step`]
/// before each and emitting `agent_thinking` `step i/N` after it. For cancellation and backpressure tests.
#[derive(Debug, Clone, Copy)]
pub struct Slow {
    /// How long each step takes.
    pub step: Duration,
}

impl Slow {
    /// The number of steps when the input is empty.
    pub const DEFAULT_STEPS: u32 = 5;
    /// The most steps one run may take.
    pub const MAX_STEPS: u32 = 100_000;
}

impl Default for Slow {
    fn default() -> Self {
        Slow { step: Duration::from_millis(10) }
    }
}

#[async_trait]
impl Agent for Slow {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        let steps = match input.trim() {
            "" => Slow::DEFAULT_STEPS,
            text => text.parse().ok().filter(|n| *n <= Slow::MAX_STEPS).ok_or_else(|| {
                AgentError::failed(format!(
                    "`{text}` is not a step count; send a whole number from 0 to {}",
                    Slow::MAX_STEPS
                ))
            })?,
        };
        for step in 1..=steps {
            if !self.step.is_zero() {
                tokio::time::sleep(self.step).await;
            }
            ctx.thinking(format!("step {step}/{steps}")).await?;
        }
        Ok(format!("done after {steps} steps"))
    }
}

/// Thinks once, then fails with an error naming its input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fail;

#[async_trait]
impl Agent for Fail {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        ctx.thinking("about to fail").await?;
        Err(AgentError::failed(format!("the fail agent always fails (input: {input:?})")))
    }
}

/// Thinks once, then panics. The registry reports the run as `failed`, and the session carries on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Panic;

#[async_trait]
impl Agent for Panic {
    async fn run(&self, ctx: &mut RunContext, _input: String) -> Result<String, AgentError> {
        ctx.thinking("about to panic").await?;
        panic!("the panic agent always panics");
    }
}
