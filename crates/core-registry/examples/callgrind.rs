//! Instruction counts of the registry's delivery path against a bare `tokio::sync::mpsc` channel, for
//! `valgrind --tool=callgrind` (repeatable where wall-clock times on a shared machine are not).
//!
//! ```text
//! cargo build --release -p core-registry --example callgrind
//! valgrind --tool=callgrind --toggle-collect='callgrind::measured*' \
//!     target/release/examples/callgrind <registry|bare> SESSIONS EVENTS
//! ```
//!
//! The same work as the benchmark's delivery rounds (`benches/registry.rs`): per session, one run of an agent that
//! emits EVENTS `agent_thinking` events and a consumer task that receives them until the terminal event, or, on
//! the bare side, a producer task sending the same `String`s into a channel of the same capacity and a consumer
//! task. Unlike the benchmark it runs on a current-thread runtime, so that every instruction is in the thread
//! `measured` runs on and the count depends on nothing but the code; payloads are made before the measured region.
//! Per session: the difference between SESSIONS = 2,000 and 1,000 (EVENTS = 0), divided by 1,000; per event: between
//! 1 x 40,000 and 1 x 20,000, divided by 20,000. The measured region's count is callgrind's `Collected` line.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use core_registry::{EventKind, EventStream};
use tokio::runtime::Runtime;

#[path = "../benches/support/emitter.rs"]
mod emitter;
use emitter::{Payloads, emitter_registry, payloads};

/// The event buffer of every session, and the capacity of every bare channel.
const EVENT_BUFFER: usize = core_registry::DEFAULT_EVENT_BUFFER;

/// Receives a session's events until its run's terminal event; returns the `agent_thinking` events.
async fn consume(mut stream: EventStream) -> usize {
    let mut count = 0;
    while let Some(event) = stream.recv().await {
        match event.kind() {
            EventKind::AgentThinking { .. } => count += 1,
            kind if kind.is_terminal() => break,
            _ => {}
        }
    }
    count
}

/// `sessions` registry sessions, one run and one consumer task each; returns the events received.
async fn registry_round(payloads: Payloads, sessions: usize) -> usize {
    let registry = emitter_registry(payloads, EVENT_BUFFER);
    let mut consumers = Vec::with_capacity(sessions);
    for index in 0..sessions {
        let (session, stream) = registry.open_session("bench-user").expect("open");
        session.run("emit", index.to_string()).expect("run");
        consumers.push(tokio::spawn(async move {
            let received = consume(stream).await;
            drop(session);
            received
        }));
    }
    let mut received = 0;
    for consumer in consumers {
        received += consumer.await.expect("consumer");
    }
    received
}

/// The same over bare channels: a producer and a consumer task per session.
async fn bare_round(payloads: Payloads, sessions: usize) -> usize {
    let mut consumers = Vec::with_capacity(sessions);
    for index in 0..sessions {
        let mut receiver = emitter::bare_producer(&payloads, index, EVENT_BUFFER);
        consumers.push(tokio::spawn(async move {
            let mut count = 0;
            while receiver.recv().await.is_some() {
                count += 1;
            }
            count
        }));
    }
    let mut received = 0;
    for consumer in consumers {
        received += consumer.await.expect("consumer");
    }
    received
}

/// The measured region (`--toggle-collect`): runs `round` to completion.
#[inline(never)]
fn measured(rt: &Runtime, round: impl Future<Output = usize> + Send + 'static) -> usize {
    rt.block_on(async { tokio::spawn(round).await.expect("round") })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [side, sessions, events] if side == "registry" || side == "bare" => {
            sessions.parse::<usize>().ok().zip(events.parse::<usize>().ok()).map(|n| (side.as_str(), n))
        }
        _ => None,
    };
    let Some((side, (sessions, events))) = parsed else {
        eprintln!("usage: callgrind <registry|bare> SESSIONS EVENTS");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a tokio runtime");
    // Warm-up outside the measured region: the runtime's and the allocator's first-use paths.
    let round = |payloads, sessions| -> std::pin::Pin<Box<dyn Future<Output = usize> + Send>> {
        if side == "registry" {
            Box::pin(registry_round(payloads, sessions))
        } else {
            Box::pin(bare_round(payloads, sessions))
        }
    };
    rt.block_on(round(payloads(10, 10), 10));
    let payloads = payloads(sessions, events);
    let received = measured(&rt, round(payloads, sessions));
    assert_eq!(received, sessions * events, "events were lost");
    println!("{side}: {sessions} sessions x {events} events");
    ExitCode::SUCCESS
}
