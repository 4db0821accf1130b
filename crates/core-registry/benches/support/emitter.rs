//! The payloads and the agent that the registry benchmark and the callgrind example both deliver: one file, included
//! by each with `#[path]`, so that the example counts the instructions of exactly what the benchmark times.

use std::sync::{Arc, Mutex, PoisonError};

use core_registry::{Agent, AgentError, AgentRegistry, RunContext, async_trait};
use tokio::sync::mpsc;

/// Per-session payloads, prepared before the clock starts and taken once by each session's producer.
pub(crate) type Payloads = Arc<Vec<Mutex<Vec<String>>>>;

/// `events` payloads `step N` for each of `sessions` sessions.
pub(crate) fn payloads(sessions: usize, events: usize) -> Payloads {
    Arc::new((0..sessions).map(|_| Mutex::new((0..events).map(|i| format!("step {i}")).collect())).collect())
}

/// Takes session `index`'s payloads.
pub(crate) fn take(payloads: &Payloads, index: usize) -> Vec<String> {
    std::mem::take(&mut *payloads[index].lock().unwrap_or_else(PoisonError::into_inner))
}

/// An agent that emits its session's payloads as `agent_thinking` events; the input is the session's index.
#[derive(Debug)]
pub(crate) struct Emitter {
    /// Where the payloads come from.
    pub(crate) payloads: Payloads,
}

#[async_trait]
impl Agent for Emitter {
    async fn run(&self, ctx: &mut RunContext, input: String) -> Result<String, AgentError> {
        let index: usize = input.parse().map_err(|_| AgentError::failed("the input must be a session index"))?;
        for payload in take(&self.payloads, index) {
            ctx.thinking(payload).await?;
        }
        Ok(String::new())
    }
}

/// A registry with the `emit` agent over `payloads`, sessions buffering `event_buffer` events.
pub(crate) fn emitter_registry(payloads: Payloads, event_buffer: usize) -> AgentRegistry {
    AgentRegistry::builder()
        .register("emit", move || Emitter { payloads: Arc::clone(&payloads) })
        .event_buffer(event_buffer)
        .build()
        .expect("the benchmark registry is valid")
}

/// The bare side's producer: a task sending session `index`'s payloads into a `tokio::sync::mpsc` channel of
/// `capacity`, whose receiver is returned.
pub(crate) fn bare_producer(payloads: &Payloads, index: usize, capacity: usize) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel::<String>(capacity);
    let payloads = Arc::clone(payloads);
    tokio::spawn(async move {
        for payload in take(&payloads, index) {
            if sender.send(payload).await.is_err() {
                break;
            }
        }
    });
    receiver
}
