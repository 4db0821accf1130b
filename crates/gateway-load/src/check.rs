//! The load generator's checks: every message a connection receives is checked against what its runs must produce.
//!
//! One [`Checker`] per connection. It numbers the connection's runs, writes their `run` messages with a
//! `request_id` of the form `<user id>/r<n>` (so an event names the user and the run it is about), and checks every
//! message that comes back:
//! - the first frame is the `session` frame, and only the first;
//! - `seq` is consecutive: a jump is a **gap** (the numbers skipped are counted), a repeat or a step back is
//!   **misordered**;
//! - the event's `request_id` names this connection's user and a run this connection started, and its `run_id` is
//!   that run's (the one its first event carried, used by no other run of the connection); otherwise it is
//!   **cross-user**;
//! - within a run the events are the agent's script, in order: each event takes the first unreceived place of the
//!   script that it matches; one that arrives after a later place was filled is **misordered**, one whose type
//!   fits but whose fields differ is **wrong**, a second `agent_completed` is a **duplicate terminal**;
//! - when the connection is done ([`Checker::finish`]), every place of every script that was never filled is
//!   **lost** (a run without its terminal event loses at least that one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::frame::push_json_string;
use crate::script::{Event, Outcome, events};

/// A kind of run the load cycles through: an agent, its input and the events it must produce.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The agent's name.
    pub agent: String,
    /// The run's input.
    pub input: String,
    /// The events the run must produce, in order.
    pub expected: Arc<[Event]>,
}

impl RunPlan {
    /// The plan for a run of `agent` on `input`, or `None` if no built-in agent has that name.
    pub fn new(agent: &str, input: &str) -> Option<RunPlan> {
        let expected = events(agent, input)?.into();
        Some(RunPlan { agent: agent.to_owned(), input: input.to_owned(), expected })
    }

    /// The load's three plans: `echo`, `tools`, and `slow` with three 10 ms steps.
    pub fn defaults() -> Vec<RunPlan> {
        [("echo", "hello"), ("tools", "load test input"), ("slow", "3")]
            .into_iter()
            .filter_map(|(agent, input)| RunPlan::new(agent, input))
            .collect()
    }
}

/// What one or more connections observed. Every counter but `events`, `runs_*` and the latencies is a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Lifecycle events received.
    pub events: u64,
    /// Runs started.
    pub runs_started: u64,
    /// Runs whose `agent_completed` arrived.
    pub runs_completed: u64,
    /// Events a run should have produced that never arrived.
    pub lost: u64,
    /// `seq` numbers skipped.
    pub gaps: u64,
    /// Messages out of order: a `seq` repeated or going back, an event before an earlier one of its run, a
    /// `session` frame that is not the first frame, or a first frame that is not `session`.
    pub misordered: u64,
    /// Events about another user's run, a run this connection did not start, or with another run's `run_id`.
    pub cross_user: u64,
    /// Events whose fields differ from the agent's script.
    pub wrong: u64,
    /// A second `agent_completed` for one run.
    pub duplicate_terminals: u64,
    /// `error` messages (the load sends nothing the gateway should refuse).
    pub errors: u64,
    /// Frames that are not a JSON object with a known `type` and a `seq`.
    pub malformed: u64,
    /// Client-side time from sending each run to receiving its `agent_started`, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Tally {
    /// The number of failed checks: lost, gaps, misordered, cross-user, wrong, duplicate terminals, errors and
    /// malformed frames together. Zero is the only passing value.
    pub fn failures(&self) -> u64 {
        self.lost
            + self.gaps
            + self.misordered
            + self.cross_user
            + self.wrong
            + self.duplicate_terminals
            + self.errors
            + self.malformed
    }

    /// Adds `other`'s counts (and latencies) to these.
    pub fn merge(&mut self, other: Tally) {
        self.events += other.events;
        self.runs_started += other.runs_started;
        self.runs_completed += other.runs_completed;
        self.lost += other.lost;
        self.gaps += other.gaps;
        self.misordered += other.misordered;
        self.cross_user += other.cross_user;
        self.wrong += other.wrong;
        self.duplicate_terminals += other.duplicate_terminals;
        self.errors += other.errors;
        self.malformed += other.malformed;
        self.latencies_us.extend(other.latencies_us);
    }
}

#[derive(Debug)]
struct Run {
    expected: Arc<[Event]>,
    // Invariant: one flag per event of `expected`; set once an event has filled that place.
    got: Vec<bool>,
    sent_at: Instant,
    run_id: Option<String>,
    // Set once the run is over for the client: its `agent_completed` came, or an `error` refused it.
    over: bool,
    refused: bool,
}

/// Checks the messages of one connection. See the [module docs](self).
#[derive(Debug)]
pub struct Checker {
    user: String,
    session_id: Option<String>,
    session_seen: bool,
    first_frame_seen: bool,
    last_seq: u64,
    next_run: u64,
    outstanding: usize,
    runs: HashMap<u64, Run>,
    // Invariant: maps each run id this connection has seen to the run (its number) it belongs to.
    run_ids: HashMap<String, u64>,
    tally: Tally,
}

/// What a received message meant for the connection's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Nothing ended.
    Nothing,
    /// One of the connection's runs is over (its terminal event, or an error that refused it): one fewer in
    /// flight.
    RunOver,
}

impl Checker {
    /// A checker for a connection of `user` (the token's `sub`, which goes into every `request_id`).
    pub fn new(user: impl Into<String>) -> Checker {
        Checker {
            user: user.into(),
            session_id: None,
            session_seen: false,
            first_frame_seen: false,
            last_seq: 0,
            next_run: 0,
            outstanding: 0,
            runs: HashMap::new(),
            run_ids: HashMap::new(),
            tally: Tally::default(),
        }
    }

    /// A checker for a connection that resumes a session after `after` (its client holds every message up to that
    /// seq): the first frame must be the `session` frame, the next message `after + 1`. `user` names this
    /// connection's runs in their `request_id`s; it must differ from the prefix of every earlier connection of the
    /// session (the session refuses a `request_id` used before with `duplicate_request`).
    pub fn resumed(user: impl Into<String>, after: u64) -> Checker {
        Checker { last_seq: after, ..Checker::new(user) }
    }

    /// The `session_id` of the `session` frame, once it has arrived.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The `seq` of the last message received in order (the `after` to resume with).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Runs started whose end has not arrived.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Whether the `session` frame has arrived.
    pub fn session_seen(&self) -> bool {
        self.session_seen
    }

    /// Records a new run of `plan` sent at `at`, and returns the `run` message to send for it.
    pub fn start_run(&mut self, plan: &RunPlan, at: Instant) -> String {
        let number = self.next_run;
        self.next_run += 1;
        let got = vec![false; plan.expected.len()];
        let run =
            Run { expected: Arc::clone(&plan.expected), got, sent_at: at, run_id: None, over: false, refused: false };
        self.runs.insert(number, run);
        self.outstanding += 1;
        self.tally.runs_started += 1;
        let mut text = String::with_capacity(96);
        text.push_str(r#"{"type":"run","agent":"#);
        push_json_string(&mut text, &plan.agent);
        text.push_str(r#","input":"#);
        push_json_string(&mut text, &plan.input);
        text.push_str(r#","request_id":"#);
        push_json_string(&mut text, &format!("{}/r{number}", self.user));
        text.push('}');
        text
    }

    /// The run a `request_id` names, if it is one of this user's (`Ok(None)`: not a request id of this form; `Err`:
    /// another user's).
    fn request_number(&self, request_id: &str) -> Result<Option<u64>, ()> {
        let Some((user, number)) = request_id.rsplit_once("/r") else { return Ok(None) };
        if user != self.user {
            return Err(());
        }
        Ok(number.parse().ok())
    }

    /// Checks one text frame received at `at`.
    pub fn receive(&mut self, text: &str, at: Instant) -> Received {
        let Ok(Value::Object(message)) = serde_json::from_str::<Value>(text) else {
            self.tally.malformed += 1;
            return Received::Nothing;
        };
        let message = Value::Object(message);
        let kind = message["type"].as_str().unwrap_or_default();
        let first_frame = !std::mem::replace(&mut self.first_frame_seen, true);
        if kind == "session" {
            if !first_frame {
                self.tally.misordered += 1;
            }
            self.session_seen = true;
            self.session_id = message["session_id"].as_str().map(str::to_owned);
            return Received::Nothing;
        }
        if first_frame {
            // The first frame must be the session frame.
            self.tally.misordered += 1;
        }
        let is_event = matches!(
            kind,
            "agent_started" | "agent_thinking" | "tool_executing" | "tool_completed" | "agent_completed"
        );
        let Some(seq) = message["seq"].as_u64().filter(|_| is_event || kind == "error") else {
            self.tally.malformed += 1;
            return Received::Nothing;
        };
        if seq == self.last_seq + 1 {
            self.last_seq = seq;
        } else if seq > self.last_seq {
            self.tally.gaps += seq - self.last_seq - 1;
            self.last_seq = seq;
        } else {
            self.tally.misordered += 1;
        }
        let number = match message["request_id"].as_str().map(|id| self.request_number(id)) {
            Some(Ok(Some(number))) if self.runs.contains_key(&number) => Some(number),
            // Another user's request, or one of this user's runs that this connection never started.
            Some(Err(())) | Some(Ok(Some(_))) => {
                self.tally.cross_user += 1;
                if kind == "error" {
                    self.tally.errors += 1;
                }
                return Received::Nothing;
            }
            // No request id, or not one of ours at all: this connection started every run with one.
            Some(Ok(None)) | None => None,
        };
        if kind == "error" {
            self.tally.errors += 1;
            // A refused run is over (it produced nothing): the load goes on.
            if let Some(run) = number.and_then(|number| self.runs.get_mut(&number))
                && !run.over
                && run.run_id.is_none()
            {
                run.over = true;
                run.refused = true;
                self.outstanding -= 1;
                return Received::RunOver;
            }
            return Received::Nothing;
        }
        self.tally.events += 1;
        let Some(number) = number else {
            self.tally.cross_user += 1;
            return Received::Nothing;
        };
        let run_id = message["run_id"].as_str().unwrap_or_default();
        match self.run_ids.get(run_id) {
            Some(owner) if *owner != number => {
                self.tally.cross_user += 1;
                return Received::Nothing;
            }
            Some(_) => {}
            None => {
                let run = self.runs.get_mut(&number).unwrap_or_else(|| unreachable!("checked above"));
                if run.run_id.is_some() {
                    // The run's events came with another run id before.
                    self.tally.cross_user += 1;
                    return Received::Nothing;
                }
                run.run_id = Some(run_id.to_owned());
                self.run_ids.insert(run_id.to_owned(), number);
            }
        }
        let run = self.runs.get_mut(&number).unwrap_or_else(|| unreachable!("checked above"));
        let open = |i: &usize| !run.got[*i];
        let place = (0..run.expected.len()).filter(open).find(|&i| matches(&message, &run.expected[i]));
        let place = match place {
            Some(place) => place,
            None => match (0..run.expected.len()).filter(open).find(|&i| run.expected[i].name() == kind) {
                Some(place) => {
                    self.tally.wrong += 1;
                    place
                }
                None if kind == "agent_completed" && run.over => {
                    self.tally.duplicate_terminals += 1;
                    return Received::Nothing;
                }
                None => {
                    // An event the script has no (more) place for.
                    self.tally.misordered += 1;
                    return Received::Nothing;
                }
            },
        };
        // Late: a later event of the script came first. (One that never comes is lost, not misordered.)
        if run.got[place + 1..].iter().any(|got| *got) {
            self.tally.misordered += 1;
        }
        run.got[place] = true;
        if place == 0 {
            let latency = at.saturating_duration_since(run.sent_at).as_micros();
            self.tally.latencies_us.push(u32::try_from(latency).unwrap_or(u32::MAX));
        }
        if matches!(run.expected[place], Event::Completed(_)) && !run.over {
            run.over = true;
            self.outstanding -= 1;
            self.tally.runs_completed += 1;
            return Received::RunOver;
        }
        Received::Nothing
    }

    /// Ends the checks: every event of a run that never arrived is lost. Returns what the connection observed.
    pub fn finish(mut self) -> Tally {
        for run in self.runs.values().filter(|run| !run.refused) {
            self.tally.lost += run.got.iter().filter(|got| !**got).count() as u64;
        }
        self.tally
    }
}

/// Whether `message` is `event` (its `type` and every field of its payload).
fn matches(message: &Value, event: &Event) -> bool {
    let field = |name: &str| message[name].as_str();
    let call_id = |call: u32| {
        field("call_id").and_then(|id| id.strip_prefix("call-")).and_then(|n| n.parse::<u32>().ok()) == Some(call)
    };
    field("type") == Some(event.name())
        && match event {
            Event::Started { agent, input } => field("agent") == Some(agent) && field("input") == Some(input),
            Event::Thinking { text } => field("text") == Some(text),
            Event::ToolExecuting { call, tool, input } => {
                call_id(*call) && field("tool") == Some(tool) && field("input") == Some(input)
            }
            Event::ToolCompleted { call, tool, output } => {
                call_id(*call) && field("tool") == Some(tool) && field("output") == Some(output)
            }
            Event::Completed(Outcome::Succeeded(output)) => {
                field("outcome") == Some("succeeded") && field("output") == Some(output)
            }
            Event::Completed(Outcome::Failed(error)) => {
                field("outcome") == Some("failed") && field("error") == Some(error)
            }
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{error_frame, event_frame, session_frame};

    const SESSION: &str = "0123456789abcdef0123456789abcdef";

    /// A checker for `alice` that has received its session frame and started one run of each plan; the frames a
    /// correct server sends for them (run ids 10, 11, 12), interleaved as the server may send them.
    fn setup() -> (Checker, Vec<String>) {
        let mut checker = Checker::new("alice");
        let now = Instant::now();
        assert_eq!(checker.receive(&session_frame(SESSION, false, 0), now), Received::Nothing);
        let plans = RunPlan::defaults();
        for plan in &plans {
            checker.start_run(plan, now);
        }
        let mut frames = Vec::new();
        let mut seq = 0;
        let mut next = |run: usize, place: usize| {
            seq += 1;
            let request_id = format!("alice/r{run}");
            event_frame(seq, 10 + run as u64, Some(&request_id), &plans[run].expected[place])
        };
        // echo (2 events), tools (8) and slow (5), interleaved.
        let order = [(0, 0), (1, 0), (2, 0), (1, 1), (0, 1), (1, 2), (1, 3), (2, 1), (1, 4), (1, 5), (2, 2)];
        let order = order.into_iter().chain([(1, 6), (1, 7), (2, 3), (2, 4)]);
        for (run, place) in order {
            frames.push(next(run, place));
        }
        (checker, frames)
    }

    fn feed(checker: &mut Checker, frames: &[String]) -> usize {
        let now = Instant::now();
        frames.iter().filter(|frame| checker.receive(frame, now) == Received::RunOver).count()
    }

    #[test]
    fn a_correct_stream_passes() {
        let (mut checker, frames) = setup();
        assert_eq!(checker.outstanding(), 3);
        assert_eq!(feed(&mut checker, &frames), 3);
        assert_eq!(checker.outstanding(), 0);
        let tally = checker.finish();
        assert_eq!(tally.failures(), 0, "{tally:?}");
        assert_eq!((tally.events, tally.runs_started, tally.runs_completed), (15, 3, 3));
        assert_eq!(tally.latencies_us.len(), 3);
    }

    #[test]
    fn the_run_message_names_the_user_and_the_run() {
        let mut checker = Checker::new("user \"7\"");
        let text = checker.start_run(&RunPlan::new("echo", "a\nb").unwrap(), Instant::now());
        assert_eq!(text, r#"{"type":"run","agent":"echo","input":"a\nb","request_id":"user \"7\"/r0"}"#);
    }

    #[test]
    fn a_gap_is_detected() {
        let (mut checker, frames) = setup();
        // The server skipped seq 5: frame i has seq i + 1, and from the fifth on, i + 2.
        let frames: Vec<String> = frames
            .into_iter()
            .enumerate()
            .map(|(i, frame)| match i {
                0..4 => frame,
                _ => frame.replacen(&format!("\"seq\":{},", i + 1), &format!("\"seq\":{},", i + 2), 1),
            })
            .collect();
        feed(&mut checker, &frames);
        let tally = checker.finish();
        assert_eq!((tally.gaps, tally.lost, tally.misordered), (1, 0, 0), "{tally:?}");
    }

    #[test]
    fn a_lost_event_is_detected() {
        let (mut checker, mut frames) = setup();
        // tools' first tool_completed (seq 7) never comes: a gap, and a loss once the connection is done.
        frames.remove(6);
        assert_eq!(feed(&mut checker, &frames), 3);
        let tally = checker.finish();
        assert_eq!((tally.lost, tally.gaps, tally.misordered, tally.cross_user), (1, 1, 0, 0), "{tally:?}");
    }

    #[test]
    fn a_lost_event_is_detected_even_when_the_server_numbers_around_it() {
        let mut checker = Checker::new("alice");
        let now = Instant::now();
        checker.receive(&session_frame(SESSION, false, 0), now);
        checker.start_run(&RunPlan::new("slow", "3").unwrap(), now);
        let expected = events("slow", "3").unwrap();
        // "step 2/3" is missing but the seq has no gap: the server dropped it before numbering.
        for (seq, place) in [0, 1, 3, 4].into_iter().enumerate() {
            checker.receive(&event_frame(seq as u64 + 1, 1, Some("alice/r0"), &expected[place]), now);
        }
        let tally = checker.finish();
        assert_eq!((tally.lost, tally.gaps, tally.misordered), (1, 0, 0), "{tally:?}");
    }

    #[test]
    fn a_run_without_its_terminal_event_loses_it() {
        let (mut checker, mut frames) = setup();
        frames.pop();
        assert_eq!(feed(&mut checker, &frames), 2);
        assert_eq!(checker.outstanding(), 1);
        let tally = checker.finish();
        assert_eq!((tally.lost, tally.runs_completed), (1, 2), "{tally:?}");
    }

    #[test]
    fn misordered_events_are_detected() {
        // Two events of one run swapped, with their seqs: the per-run order is wrong.
        let (mut checker, frames) = setup();
        let mut swapped = frames.clone();
        let (a, b) = (frames[5].clone(), frames[6].clone()); // tools' tool_executing, then its tool_completed
        swapped[5] = b.replace("\"seq\":7,", "\"seq\":6,");
        swapped[6] = a.replace("\"seq\":6,", "\"seq\":7,");
        feed(&mut checker, &swapped);
        let tally = checker.finish();
        assert_eq!((tally.misordered, tally.lost, tally.gaps), (1, 0, 0), "{tally:?}");

        // Two frames swapped as they were numbered: the seq goes back.
        let (mut checker, mut frames) = setup();
        frames.swap(3, 4);
        feed(&mut checker, &frames);
        let tally = checker.finish();
        assert!(tally.misordered >= 1, "{tally:?}");
        assert_eq!(tally.lost, 0, "{tally:?}");

        // The first frame is not the session frame.
        let mut checker = Checker::new("alice");
        checker.receive(&error_frame(1, None, "internal", "oops"), Instant::now());
        checker.receive(&session_frame(SESSION, false, 0), Instant::now());
        assert_eq!(checker.finish().misordered, 2);
    }

    #[test]
    fn cross_user_events_are_detected() {
        let plans = RunPlan::defaults();
        let now = Instant::now();
        let echo_started = &plans[0].expected[0];
        // Another user's request id.
        let (mut checker, frames) = setup();
        feed(&mut checker, &frames);
        checker.receive(&event_frame(16, 99, Some("bob/r0"), echo_started), now);
        // This user's, but a run this connection never started.
        checker.receive(&event_frame(17, 98, Some("alice/r7"), echo_started), now);
        // A prefix of this user's id is not this user.
        checker.receive(&event_frame(18, 97, Some("alic/r0"), echo_started), now);
        // No request id at all.
        checker.receive(&event_frame(19, 96, None, echo_started), now);
        let tally = checker.finish();
        assert_eq!(tally.cross_user, 4, "{tally:?}");
        assert_eq!((tally.gaps, tally.misordered, tally.lost), (0, 0, 0), "{tally:?}");

        // A right request id with another run's run id (run-11 is tools').
        let (mut checker, mut frames) = setup();
        frames[4] = frames[4].replace("\"run_id\":\"run-10\"", "\"run_id\":\"run-11\"");
        feed(&mut checker, &frames);
        let tally = checker.finish();
        assert_eq!(tally.cross_user, 1, "{tally:?}");
        assert_eq!(tally.lost, 1, "the echo run's terminal event went astray: {tally:?}");
    }

    #[test]
    fn wrong_fields_duplicates_and_errors_are_failures() {
        let (mut checker, mut frames) = setup();
        frames[0] = frames[0].replace("\"input\":\"hello\"", "\"input\":\"hellO\"");
        feed(&mut checker, &frames);
        let duplicate = frames[4].replace("\"seq\":5,", "\"seq\":16,");
        assert_eq!(checker.receive(&duplicate, Instant::now()), Received::Nothing);
        checker.receive(&error_frame(17, Some("alice/r1"), "too_many_runs", "slow down"), Instant::now());
        checker.receive("not json", Instant::now());
        let tally = checker.finish();
        assert_eq!(
            (tally.wrong, tally.duplicate_terminals, tally.errors, tally.malformed, tally.lost),
            (1, 1, 1, 1, 0),
            "{tally:?}"
        );
    }

    #[test]
    fn a_resumed_connection_goes_on_from_its_seq() {
        let plans = RunPlan::defaults();
        let now = Instant::now();
        let mut checker = Checker::resumed("alice-2", 40);
        checker.receive(&session_frame(SESSION, true, 40), now);
        assert_eq!(checker.session_id(), Some(SESSION));
        checker.start_run(&plans[0], now);
        for (place, seq) in [(0, 41), (1, 42)] {
            checker.receive(&event_frame(seq, 9, Some("alice-2/r0"), &plans[0].expected[place]), now);
        }
        assert_eq!(checker.last_seq(), 42);
        // A message from before the resume point is out of order; one after a hole, a gap.
        checker.receive(&error_frame(40, None, "internal", "old"), now);
        checker.receive(&error_frame(44, None, "internal", "new"), now);
        let tally = checker.finish();
        assert_eq!((tally.misordered, tally.gaps, tally.errors, tally.lost), (1, 1, 2, 0), "{tally:?}");
    }

    #[test]
    fn a_refused_run_is_over_and_counted_as_an_error() {
        let mut checker = Checker::new("alice");
        let now = Instant::now();
        checker.receive(&session_frame(SESSION, false, 0), now);
        checker.start_run(&RunPlan::new("echo", "x").unwrap(), now);
        let refused = checker.receive(&error_frame(1, Some("alice/r0"), "too_many_runs", "wait"), now);
        assert_eq!(refused, Received::RunOver);
        assert_eq!(checker.outstanding(), 0);
        let tally = checker.finish();
        assert_eq!((tally.errors, tally.lost, tally.failures()), (1, 0, 1));
    }
}
