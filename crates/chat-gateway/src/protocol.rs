//! The wire protocol: client messages in, server messages out, one JSON object per WebSocket text frame.
//!
//! See the crate documentation for the full description and an example exchange.

use core_registry::{Event, EventKind, Outcome, RunId};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// The largest text frame the gateway reads as a message: 64 KiB. Larger ones get [`ErrorCode::FrameTooLarge`]
/// (up to [`HARD_FRAME_LIMIT`], beyond which the WebSocket layer closes the connection).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The longest `request_id` a message may carry: 128 bytes. It is echoed on every message about its run (and kept
/// for the session's life, for `duplicate_request`), so a longer one is refused with [`ErrorCode::InvalidField`] and
/// not echoed.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The longest agent name a `run` may ask for: 64 bytes (longer ones are [`ErrorCode::InvalidField`]).
pub const MAX_AGENT_BYTES: usize = 64;

/// The largest message the WebSocket layer accepts at all (1 MiB). A larger one ends the connection without a close
/// frame (the WebSocket layer stops reading and drops it; its runs are cancelled), since reading it would already
/// cost the memory the limit protects.
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;

/// The stable `code` of an `error` message. Clients may match on [`ErrorCode::as_str`]; codes are never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `malformed_json`: the frame is not a JSON object.
    MalformedJson,
    /// `unknown_type`: `type` is not `run`, `cancel` or `close`.
    UnknownType,
    /// `missing_field`: a required field (`type`, `agent`, `run_id`) is absent.
    MissingField,
    /// `invalid_field`: a field has the wrong JSON type (e.g. `"input": 3`), or is longer than its limit
    /// ([`MAX_REQUEST_ID_BYTES`], [`MAX_AGENT_BYTES`]).
    InvalidField,
    /// `unknown_agent`: no agent is registered under that name; the message lists the known ones.
    UnknownAgent,
    /// `frame_too_large`: the text frame exceeds [`MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// `too_many_runs`: the connection already has as many runs in progress as allowed.
    TooManyRuns,
    /// `unknown_run`: `cancel` named a run that is not in progress in this session.
    UnknownRun,
    /// `duplicate_request`: a `run` reused a `request_id` already used in the session; nothing was started, and
    /// the error's `run_id` names the run that request started.
    DuplicateRequest,
    /// `binary_frame`: the protocol is JSON text; binary frames are refused.
    BinaryFrame,
    /// `shutting_down`: the server is draining and starts no new runs.
    ShuttingDown,
    /// `internal`: the gateway failed; the message says what, and the connection carries on if it can.
    Internal,
}

impl ErrorCode {
    /// The wire name, e.g. `malformed_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::TooManyRuns => "too_many_runs",
            ErrorCode::UnknownRun => "unknown_run",
            ErrorCode::DuplicateRequest => "duplicate_request",
            ErrorCode::BinaryFrame => "binary_frame",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A message from the client, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type":"run","agent":"echo","input":"hi","request_id":"r1"}`: start a run. `input` defaults to `""`;
    /// `request_id` is optional and echoed on every message about the run.
    Run {
        /// The agent's registered name.
        agent: String,
        /// The agent's input.
        input: String,
        /// The client's correlation id.
        request_id: Option<String>,
    },
    /// `{"type":"cancel","run_id":"run-3"}`: cancel a run of this session; it ends with `outcome: cancelled`.
    Cancel {
        /// The run to cancel, as sent (it may not name a run at all).
        run_id: String,
        /// The client's correlation id, echoed on an error.
        request_id: Option<String>,
    },
    /// `{"type":"close"}`: the client is leaving for good; the session is closed at once (its runs cancelled)
    /// instead of waiting for a resume, and the connection ends.
    Close,
}

/// A client message the gateway refused; it becomes an `error` message and the connection carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The stable error code.
    pub code: ErrorCode,
    /// A human-readable explanation, naming what to fix.
    pub message: String,
    /// The `request_id` of the refused message, if it had one.
    pub request_id: Option<String>,
}

impl ProtocolError {
    /// An error with no request id.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError { code, message: message.into(), request_id: None }
    }
}

impl ClientMessage {
    /// Parses one text frame.
    ///
    /// ```
    /// use chat_gateway::protocol::{ClientMessage, ErrorCode};
    ///
    /// let run = ClientMessage::parse(r#"{"type":"run","agent":"echo","input":"hi","request_id":"r1"}"#).unwrap();
    /// assert_eq!(run, ClientMessage::Run { agent: "echo".into(), input: "hi".into(), request_id: Some("r1".into()) });
    ///
    /// let err = ClientMessage::parse(r#"{"type":"run","request_id":"r2"}"#).unwrap_err();
    /// assert_eq!((err.code, err.request_id.as_deref()), (ErrorCode::MissingField, Some("r2")));
    /// ```
    pub fn parse(text: &str) -> Result<ClientMessage, ProtocolError> {
        // Each field's JSON is kept as written and only the known ones are read: an unknown field is ignored
        // whatever its value, even one no number type holds (`1e400`).
        let mut raw: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).map_err(|err| {
            ProtocolError::new(ErrorCode::MalformedJson, format!("the message is not a JSON object: {err}"))
        })?;
        let mut fields = |name: &str| -> Option<Value> {
            let raw = raw.remove(name)?;
            // Valid JSON that no Rust value holds (`1e400`) is not a string: the wrong type for every known field.
            Some(serde_json::from_str(raw.get()).unwrap_or(Value::Bool(false)))
        };
        let request_id = match fields("request_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if id.len() > MAX_REQUEST_ID_BYTES => {
                let message = format!("`request_id` is {} bytes long; at most {MAX_REQUEST_ID_BYTES}", id.len());
                return Err(ProtocolError::new(ErrorCode::InvalidField, message));
            }
            Some(Value::String(id)) => Some(id),
            Some(_) => {
                return Err(ProtocolError::new(ErrorCode::InvalidField, "`request_id` must be a string"));
            }
        };
        let refuse = |code, message: String| ProtocolError { code, message, request_id: request_id.clone() };
        let mut take_string = |name: &'static str, required: bool| match fields(name) {
            Some(Value::String(text)) => Ok(Some(text)),
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(refuse(ErrorCode::MissingField, format!("missing field `{name}`"))),
            Some(_) => Err(refuse(ErrorCode::InvalidField, format!("`{name}` must be a string"))),
        };
        let kind = take_string("type", true)?.unwrap_or_default();
        match kind.as_str() {
            "run" => {
                let agent = take_string("agent", true)?.unwrap_or_default();
                if agent.len() > MAX_AGENT_BYTES {
                    let message = format!("`agent` is {} bytes long; at most {MAX_AGENT_BYTES}", agent.len());
                    return Err(refuse(ErrorCode::InvalidField, message));
                }
                let input = take_string("input", false)?.unwrap_or_default();
                Ok(ClientMessage::Run { agent, input, request_id })
            }
            "cancel" => {
                let run_id = take_string("run_id", true)?.unwrap_or_default();
                Ok(ClientMessage::Cancel { run_id, request_id })
            }
            "close" => Ok(ClientMessage::Close),
            other => Err(refuse(
                ErrorCode::UnknownType,
                format!("unknown message type `{other}`; expected `run`, `cancel` or `close`"),
            )),
        }
    }
}

/// The first frame on every connection, without a `seq` of its own: which session this is, whether it was
/// resumed, and the seq of the last message it has produced so far.
pub(crate) fn session_frame(session_id: &str, resumed: bool, last_seq: u64) -> String {
    // Written by hand so that the field order is the documented one whatever serde_json's features; the id is hex.
    format!(r#"{{"type":"session","session_id":"{session_id}","resumed":{resumed},"last_seq":{last_seq}}}"#)
}

/// The `agent_completed` (`failed`, with `error`) that a surviving node appends for a run of a lost node, in the
/// field order of every other server message, as the text before its seq and the text after it (the seq is only
/// known inside Redis, where the two are joined around it).
pub(crate) fn lost_run_completed_around_seq(run_id: &str, request_id: Option<&str>, error: &str) -> (String, String) {
    #[derive(serde::Serialize)]
    struct Completed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        seq: u64,
        run_id: &'a str,
        request_id: Option<&'a str>,
        outcome: &'static str,
        error: &'a str,
    }
    let completed = Completed { kind: "agent_completed", seq: 0, run_id, request_id, outcome: "failed", error };
    // A struct of strings and numbers always serializes.
    let text = serde_json::to_string(&completed).unwrap_or_else(|_| unreachable!("server messages serialize"));
    const BEFORE: &str = r#"{"type":"agent_completed","seq":"#;
    let after = text.strip_prefix(BEFORE).and_then(|rest| rest.strip_prefix('0')).unwrap_or_default();
    (BEFORE.to_owned(), after.to_owned())
}

/// The body of one server message, before it gets its `seq`.
#[derive(Debug)]
pub(crate) enum Body {
    /// A lifecycle event of one of the connection's runs.
    Event(Event),
    /// A refused client message or a gateway failure.
    Error { code: ErrorCode, message: String, run_id: Option<RunId> },
}

impl Body {
    /// The tag of an event's run: the request id it was started with (`Session::run_tagged`). `None` for an error,
    /// whose request id travels beside it.
    pub(crate) fn run_tag(&self) -> Option<&str> {
        match self {
            Body::Event(event) => event.tag(),
            Body::Error { .. } => None,
        }
    }
}

/// One server message as it goes on the wire: `type`, `seq`, `run_id`, `request_id`, then the payload.
#[derive(Debug)]
pub(crate) struct ServerMessage<'a> {
    pub(crate) seq: u64,
    pub(crate) request_id: Option<&'a str>,
    pub(crate) body: &'a Body,
}

thread_local! {
    /// Where messages are serialized before they get an allocation of their own, of exactly their length (the
    /// replay log may hold them a while): one allocation per message instead of serde_json's growing buffer.
    static SERIALIZED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ServerMessage<'_> {
    pub(crate) fn to_json(&self) -> String {
        SERIALIZED.with_borrow_mut(|buffer| {
            buffer.clear();
            // Serializing a map of strings and numbers into memory cannot fail, and serde_json writes UTF-8.
            serde_json::to_writer(&mut *buffer, self).unwrap_or_else(|_| unreachable!("server messages serialize"));
            let text = std::str::from_utf8(buffer).unwrap_or_else(|_| unreachable!("serde_json writes UTF-8"));
            text.to_owned()
        })
    }
}

/// Serializes a value through its `Display`, written straight into the output (no `String` in between).
struct Displayed<T>(T);

impl<T: std::fmt::Display> Serialize for Displayed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl Serialize for ServerMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self.body {
            Body::Event(event) => {
                map.serialize_entry("type", event.kind().name())?;
                map.serialize_entry("seq", &self.seq)?;
                map.serialize_entry("run_id", &Displayed(event.run_id()))?;
                map.serialize_entry("request_id", &self.request_id)?;
                match event.kind() {
                    EventKind::AgentStarted { input } => {
                        map.serialize_entry("agent", event.agent())?;
                        map.serialize_entry("input", input)?;
                    }
                    EventKind::AgentThinking { text } => map.serialize_entry("text", text)?,
                    EventKind::ToolExecuting { call, tool, input } => {
                        map.serialize_entry("call_id", &Displayed(call))?;
                        map.serialize_entry("tool", &**tool)?;
                        map.serialize_entry("input", input)?;
                    }
                    EventKind::ToolCompleted { call, tool, result } => {
                        map.serialize_entry("call_id", &Displayed(call))?;
                        map.serialize_entry("tool", &**tool)?;
                        match result {
                            Ok(output) => map.serialize_entry("output", output)?,
                            Err(error) => map.serialize_entry("error", error)?,
                        }
                    }
                    EventKind::AgentCompleted { outcome } => {
                        map.serialize_entry("outcome", outcome.as_str())?;
                        match outcome {
                            Outcome::Succeeded { output } => map.serialize_entry("output", output)?,
                            Outcome::Failed { error } => map.serialize_entry("error", error)?,
                            Outcome::Cancelled => {}
                        }
                    }
                }
            }
            Body::Error { code, message, run_id } => {
                map.serialize_entry("type", "error")?;
                map.serialize_entry("seq", &self.seq)?;
                map.serialize_entry("run_id", &run_id.map(Displayed))?;
                map.serialize_entry("request_id", &self.request_id)?;
                map.serialize_entry("code", code.as_str())?;
                map.serialize_entry("message", message)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expect: Result<ClientMessage, (ErrorCode, Option<&str>)>) {
        let actual = ClientMessage::parse(text).map_err(|err| (err.code, err.request_id));
        let expect = expect.map_err(|(code, request_id)| (code, request_id.map(str::to_owned)));
        assert_eq!(actual, expect);
    }

    fn run(agent: &str, input: &str, request_id: Option<&str>) -> ClientMessage {
        ClientMessage::Run { agent: agent.into(), input: input.into(), request_id: request_id.map(Into::into) }
    }

    #[test]
    fn parses_run_and_cancel() {
        check(r#"{"type":"run","agent":"echo","input":"hi","request_id":"r1"}"#, Ok(run("echo", "hi", Some("r1"))));
        check(r#"{"type":"run","agent":"slow"}"#, Ok(run("slow", "", None)));
        check(r#"{"type":"run","agent":"echo","input":null,"extra":[1]}"#, Ok(run("echo", "", None)));
        check(
            r#"{"type":"cancel","run_id":"run-3"}"#,
            Ok(ClientMessage::Cancel { run_id: "run-3".into(), request_id: None }),
        );
        check(r#"{"type":"close","reason":"bye"}"#, Ok(ClientMessage::Close));
        // Unknown fields are ignored whatever their value, even one no number type holds.
        check(r#"{"type":"run","agent":"echo","huge":1e400,"deep":[[{"x":-1e999}]]}"#, Ok(run("echo", "", None)));
        check(r#"{"type":"run","agent":"echo","input":1e400}"#, Err((ErrorCode::InvalidField, None)));
    }

    #[test]
    fn refuses_bad_messages() {
        check("{", Err((ErrorCode::MalformedJson, None)));
        check("[]", Err((ErrorCode::MalformedJson, None)));
        check(r#""run""#, Err((ErrorCode::MalformedJson, None)));
        check(r#"{"agent":"echo","request_id":"r"}"#, Err((ErrorCode::MissingField, Some("r"))));
        check(r#"{"type":"walk","request_id":"r"}"#, Err((ErrorCode::UnknownType, Some("r"))));
        check(r#"{"type":7}"#, Err((ErrorCode::InvalidField, None)));
        check(r#"{"type":"run","input":"x"}"#, Err((ErrorCode::MissingField, None)));
        check(r#"{"type":"run","agent":"echo","input":3}"#, Err((ErrorCode::InvalidField, None)));
        check(r#"{"type":"run","agent":"echo","request_id":1}"#, Err((ErrorCode::InvalidField, None)));
        check(r#"{"type":"cancel","request_id":"c"}"#, Err((ErrorCode::MissingField, Some("c"))));
    }

    #[test]
    fn long_request_ids_and_agent_names_are_refused_and_not_echoed() {
        let id = |len: usize| "r".repeat(len);
        let agent = |len: usize| "a".repeat(len);
        let text = |agent: &str, id: &str| format!(r#"{{"type":"run","agent":"{agent}","request_id":"{id}"}}"#);
        check(&text("echo", &id(MAX_REQUEST_ID_BYTES)), Ok(run("echo", "", Some(&id(MAX_REQUEST_ID_BYTES)))));
        check(&text("echo", &id(MAX_REQUEST_ID_BYTES + 1)), Err((ErrorCode::InvalidField, None)));
        let cancel = format!(r#"{{"type":"cancel","run_id":"run-1","request_id":"{}"}}"#, id(60_000));
        check(&cancel, Err((ErrorCode::InvalidField, None)));
        check(&text(&agent(MAX_AGENT_BYTES), "r"), Ok(run(&agent(MAX_AGENT_BYTES), "", Some("r"))));
        check(&text(&agent(MAX_AGENT_BYTES + 1), "r"), Err((ErrorCode::InvalidField, Some("r"))));
    }
}
