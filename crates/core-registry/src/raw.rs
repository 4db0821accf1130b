//! [`RawEvent`]: what crosses a session's channel, a compact form of an event that the stream completes on receipt.

use std::sync::Arc;

use crate::event::{EventKind, Outcome, RunId, RunInfo};

/// What travels through a session's channel; the stream turns it into an [`Event`](crate::Event), adding `seq` and
/// the run's identity.
///
/// Every slot of the channel has this size (tokio allocates them 32 at a time, the first block when the session
/// opens), and every event is moved through one: so the kinds that carry one `String` are stored inline beside the
/// run's id, and the rest (the tool events: rarer, and twice the size) behind a pointer. 40 bytes, where an
/// `EventKind` (56) beside a run reference (16) took 72.
#[derive(Debug)]
pub(crate) enum RawEvent {
    /// `agent_started`, a run's first event, which carries the run's identity to the stream: later events of the
    /// run carry only its id, so the reference count of the identity is touched by the consumer's thread only.
    Started { info: Arc<RunInfo>, input: String },
    /// `agent_thinking`.
    Thinking { run: RunId, text: String },
    /// `agent_completed` with `succeeded`.
    Succeeded { run: RunId, output: String },
    /// `agent_completed` with `failed`.
    Failed { run: RunId, error: String },
    /// `agent_completed` with `cancelled`.
    Cancelled { run: RunId },
    /// Any other event of a run after its first: the tool events.
    Boxed { run: RunId, kind: Box<EventKind> },
}

impl RawEvent {
    /// A run's first event: `agent_started`, with the run's identity.
    pub(crate) fn first(info: Arc<RunInfo>, input: String) -> Self {
        RawEvent::Started { info, input }
    }

    /// Any later event of run `run`.
    pub(crate) fn next(run: RunId, kind: EventKind) -> Self {
        match kind {
            EventKind::AgentThinking { text } => RawEvent::Thinking { run, text },
            EventKind::AgentCompleted { outcome: Outcome::Succeeded { output } } => RawEvent::Succeeded { run, output },
            EventKind::AgentCompleted { outcome: Outcome::Failed { error } } => RawEvent::Failed { run, error },
            EventKind::AgentCompleted { outcome: Outcome::Cancelled } => RawEvent::Cancelled { run },
            kind => RawEvent::Boxed { run, kind: Box::new(kind) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_kinds_are_inline_and_a_slot_is_smaller_than_the_public_event() {
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<RawEvent>(), 40);
        assert!(std::mem::size_of::<RawEvent>() < std::mem::size_of::<EventKind>() + 16);
        assert!(matches!(
            RawEvent::next(RunId(1), EventKind::AgentThinking { text: "x".into() }),
            RawEvent::Thinking { .. }
        ));
        assert!(matches!(
            RawEvent::next(RunId(1), EventKind::AgentCompleted { outcome: Outcome::Succeeded { output: "y".into() } }),
            RawEvent::Succeeded { .. }
        ));
        assert!(matches!(
            RawEvent::next(RunId(1), EventKind::AgentCompleted { outcome: Outcome::Failed { error: "z".into() } }),
            RawEvent::Failed { .. }
        ));
        assert!(matches!(
            RawEvent::next(RunId(1), EventKind::AgentCompleted { outcome: Outcome::Cancelled }),
            RawEvent::Cancelled { .. }
        ));
    }
}
