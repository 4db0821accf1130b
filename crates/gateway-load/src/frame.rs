//! Server messages written as the gateway writes them: the same fields in the same order, so the same bytes.
//!
//! See the protocol in `crates/chat-gateway/README.md`; a test renders its example exchange.

use std::fmt::Write as _;

use crate::script::{Event, Outcome};

/// The first frame of every connection: `{"type":"session","session_id":...,"resumed":...,"last_seq":...}`.
pub fn session_frame(session_id: &str, resumed: bool, last_seq: u64) -> String {
    format!(r#"{{"type":"session","session_id":"{session_id}","resumed":{resumed},"last_seq":{last_seq}}}"#)
}

/// Appends `text` as a JSON string, escaped as `serde_json` escapes it (quote, backslash and control characters).
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&text[start..at]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = at + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    push_json_string(out, value);
}

fn push_head(out: &mut String, kind: &str, seq: u64, run_id: Option<u64>, request_id: Option<&str>) {
    out.push_str("{\"type\":\"");
    out.push_str(kind);
    let _ = write!(out, "\",\"seq\":{seq},\"run_id\":");
    match run_id {
        Some(run) => {
            let _ = write!(out, "\"run-{run}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"request_id\":");
    match request_id {
        Some(id) => push_json_string(out, id),
        None => out.push_str("null"),
    }
}

/// One lifecycle event of run `run-<run_id>`, numbered `seq`.
///
/// ```
/// use gateway_load::frame::event_frame;
/// use gateway_load::script::{Event, Outcome};
///
/// let done = Event::Completed(Outcome::Succeeded("hi".into()));
/// assert_eq!(
///     event_frame(2, 7, Some("r1"), &done),
///     r#"{"type":"agent_completed","seq":2,"run_id":"run-7","request_id":"r1","outcome":"succeeded","output":"hi"}"#
/// );
/// ```
pub fn event_frame(seq: u64, run_id: u64, request_id: Option<&str>, event: &Event) -> String {
    let mut out = String::with_capacity(160);
    push_head(&mut out, event.name(), seq, Some(run_id), request_id);
    match event {
        Event::Started { agent, input } => {
            push_field(&mut out, "agent", agent);
            push_field(&mut out, "input", input);
        }
        Event::Thinking { text } => push_field(&mut out, "text", text),
        Event::ToolExecuting { call, tool, input } => {
            push_field(&mut out, "call_id", &format!("call-{call}"));
            push_field(&mut out, "tool", tool);
            push_field(&mut out, "input", input);
        }
        Event::ToolCompleted { call, tool, output } => {
            push_field(&mut out, "call_id", &format!("call-{call}"));
            push_field(&mut out, "tool", tool);
            push_field(&mut out, "output", output);
        }
        Event::Completed(Outcome::Succeeded(output)) => {
            push_field(&mut out, "outcome", "succeeded");
            push_field(&mut out, "output", output);
        }
        Event::Completed(Outcome::Failed(error)) => {
            push_field(&mut out, "outcome", "failed");
            push_field(&mut out, "error", error);
        }
    }
    out.push('}');
    out
}

/// An `error` message about no particular run.
pub fn error_frame(seq: u64, request_id: Option<&str>, code: &str, message: &str) -> String {
    let mut out = String::with_capacity(160);
    push_head(&mut out, "error", seq, None, request_id);
    push_field(&mut out, "code", code);
    push_field(&mut out, "message", message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{events, unknown_agent_message};

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for text in ["", "plain", "a\"b\\c", "line\nbreak\r\t", "\u{0}\u{1f}\u{7f}\u{8}\u{c}", "héllo wörld ✓", "/"]
        {
            let mut out = String::new();
            push_json_string(&mut out, text);
            assert_eq!(out, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn renders_the_readme_example_exchange() {
        let readme = include_str!("../../chat-gateway/README.md");
        let expected: Vec<&str> = readme
            .lines()
            .skip_while(|line| !line.starts_with("## Example exchange"))
            .filter_map(|line| line.strip_prefix("< "))
            .take(10)
            .collect();
        let mut rendered = vec![session_frame("3f9c2a7be1d04c56a8e2b19f0c7d4e21", false, 0)];
        for (seq, event) in events("tools", "hello world").unwrap().iter().enumerate() {
            rendered.push(event_frame(seq as u64 + 1, 1, Some("r1"), event));
        }
        rendered.push(error_frame(9, Some("r2"), "unknown_agent", &unknown_agent_message("nope")));
        assert_eq!(rendered, expected);
    }
}
