//! Counters behind `GET /metrics`, rendered in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use core_registry::AgentRegistry;

/// Why an upgrade request was refused before the upgrade: the `reason` label of `chat_gateway_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refused {
    /// `401`: the token is missing or not valid.
    Unauthorized,
    /// `429`: the address made too many failed upgrade requests in this window.
    Throttled,
    /// `403`: the request's `Origin` is neither its own nor an allowed one.
    Origin,
    /// `429`: the user holds as many connections as allowed.
    UserConnections,
    /// `429`: the user holds as many sessions as allowed, none of them waiting for a resume.
    UserSessions,
    /// `503`: the gateway holds as many connections as allowed.
    Connections,
    /// `503`: the gateway is draining.
    Draining,
    /// `404`: the session to resume is unknown, expired or another user's.
    UnknownSession,
    /// `409`: the session's replay log no longer holds the next message the client needs.
    ResumeGap,
    /// `503`: the session is another gateway process's, and the shared event log (Redis) cannot be reached.
    EventLog,
}

impl Refused {
    /// Every reason, in the order `GET /metrics` lists them.
    pub const ALL: [Refused; 10] = [
        Refused::Unauthorized,
        Refused::Throttled,
        Refused::Origin,
        Refused::UserConnections,
        Refused::UserSessions,
        Refused::Connections,
        Refused::Draining,
        Refused::UnknownSession,
        Refused::ResumeGap,
        Refused::EventLog,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unauthorized => "unauthorized",
            Refused::Throttled => "throttled",
            Refused::Origin => "origin",
            Refused::UserConnections => "user_connections",
            Refused::UserSessions => "user_sessions",
            Refused::Connections => "connections",
            Refused::Draining => "draining",
            Refused::UnknownSession => "unknown_session",
            Refused::ResumeGap => "resume_gap",
            Refused::EventLog => "event_log",
        }
    }
}

/// Why the gateway ended a connection itself: the `reason` label of `chat_gateway_disconnects_total`. A client
/// that leaves, and a shutdown, are not counted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Disconnect {
    /// No frame from the client within the idle timeout after a ping.
    Idle,
    /// The client accepted no frame within the write timeout.
    WriteTimeout,
    /// The token expired (close code 4001).
    TokenExpired,
    /// Another connection resumed the session (close code 4000).
    TakenOver,
    /// A text frame that is not UTF-8 (close code 1007).
    NotUtf8,
}

impl Disconnect {
    /// Every reason, in the order `GET /metrics` lists them.
    pub const ALL: [Disconnect; 5] = [
        Disconnect::Idle,
        Disconnect::WriteTimeout,
        Disconnect::TokenExpired,
        Disconnect::TakenOver,
        Disconnect::NotUtf8,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::Idle => "idle",
            Disconnect::WriteTimeout => "write_timeout",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::TakenOver => "taken_over",
            Disconnect::NotUtf8 => "not_utf8",
        }
    }
}

/// The gateway's counters. All are monotonic except `connections_open`.
#[derive(Debug, Default)]
pub struct Metrics {
    refused_total: [AtomicU64; Refused::ALL.len()],
    disconnects_total: [AtomicU64; Disconnect::ALL.len()],
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    auth_failures_total: AtomicU64,
    runs_started_total: AtomicU64,
    events_sent_total: AtomicU64,
    errors_sent_total: AtomicU64,
    resumes_total: AtomicU64,
}

/// A point-in-time copy of [`Metrics`] plus the registry's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// WebSocket connections open now.
    pub connections_open: u64,
    /// Upgrade requests refused with 401 (also counted in [`refused`](MetricsSnapshot::refused)`(Unauthorized)`).
    pub auth_failures_total: u64,
    /// Runs started since start.
    pub runs_started_total: u64,
    /// Lifecycle events produced for clients since start (each counted once, however often it is replayed).
    pub events_sent_total: u64,
    /// `error` messages produced for clients since start.
    pub errors_sent_total: u64,
    /// The registry's live sessions (one per gateway session, attached or detached, plus closed ones whose runs are
    /// finishing).
    pub live_sessions: u64,
    /// The registry's runs in progress.
    pub live_runs: u64,
    /// Gateway sessions that can be resumed: attached to a connection, or detached within their resume window.
    pub resumable_sessions: u64,
    /// Connections that resumed a session since start.
    pub resumes_total: u64,
    pub(crate) refused_total: [u64; Refused::ALL.len()],
    pub(crate) disconnects_total: [u64; Disconnect::ALL.len()],
    /// With a shared event log (Redis): whether it answered the last command, and how many commands failed.
    pub(crate) event_log: Option<(bool, u64)>,
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts an upgrade request refused for `reason` (a `401` also in `auth_failures_total`).
    pub(crate) fn refused(&self, reason: Refused) {
        if reason == Refused::Unauthorized {
            self.auth_failures_total.fetch_add(1, Ordering::Relaxed);
        }
        self.refused_total[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self, reason: Disconnect) {
        self.disconnects_total[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn resumed(&self) {
        self.resumes_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn run_started(&self) {
        self.runs_started_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, events: u64, errors: u64) {
        if events > 0 {
            self.events_sent_total.fetch_add(events, Ordering::Relaxed);
        }
        if errors > 0 {
            self.errors_sent_total.fetch_add(errors, Ordering::Relaxed);
        }
    }

    /// Reads every counter, and the registry's gauges.
    pub fn snapshot(&self, registry: &AgentRegistry) -> MetricsSnapshot {
        MetricsSnapshot {
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_open: self.connections_open.load(Ordering::Relaxed),
            auth_failures_total: self.auth_failures_total.load(Ordering::Relaxed),
            runs_started_total: self.runs_started_total.load(Ordering::Relaxed),
            events_sent_total: self.events_sent_total.load(Ordering::Relaxed),
            errors_sent_total: self.errors_sent_total.load(Ordering::Relaxed),
            live_sessions: registry.live_sessions() as u64,
            live_runs: registry.live_runs() as u64,
            resumable_sessions: 0,
            resumes_total: self.resumes_total.load(Ordering::Relaxed),
            refused_total: self.refused_total.each_ref().map(|count| count.load(Ordering::Relaxed)),
            disconnects_total: self.disconnects_total.each_ref().map(|count| count.load(Ordering::Relaxed)),
            event_log: None,
        }
    }
}

impl MetricsSnapshot {
    /// Upgrade requests refused for `reason` since start.
    pub fn refused(&self, reason: Refused) -> u64 {
        self.refused_total[reason as usize]
    }

    /// Connections the gateway ended for `reason` since start.
    pub fn disconnects(&self, reason: Disconnect) -> u64 {
        self.disconnects_total[reason as usize]
    }

    /// With a shared event log (`serve --event-log`): whether Redis answered the last command sent to it.
    pub fn event_log_up(&self) -> Option<bool> {
        self.event_log.map(|(up, _)| up)
    }

    /// Renders the Prometheus text format, every metric prefixed `chat_gateway_`.
    ///
    /// ```
    /// let text = chat_gateway::metrics::MetricsSnapshot::default().render();
    /// assert!(text.contains("# TYPE chat_gateway_live_sessions gauge\nchat_gateway_live_sessions 0\n"));
    /// ```
    pub fn render(&self) -> String {
        let mut rows: Vec<(&str, &str, &str, u64)> = vec![
            ("live_sessions", "gauge", "Registry sessions still holding resources.", self.live_sessions),
            ("live_runs", "gauge", "Agent runs in progress.", self.live_runs),
            (
                "resumable_sessions",
                "gauge",
                "Sessions attached or within their resume window.",
                self.resumable_sessions,
            ),
            ("resumes_total", "counter", "Connections that resumed a session.", self.resumes_total),
            ("connections_open", "gauge", "WebSocket connections open.", self.connections_open),
            ("connections_total", "counter", "WebSocket connections accepted.", self.connections_total),
            ("auth_failures_total", "counter", "Upgrade requests refused with 401.", self.auth_failures_total),
            ("runs_started_total", "counter", "Agent runs started.", self.runs_started_total),
            (
                "events_sent_total",
                "counter",
                "Lifecycle events produced for clients (once each, however often replayed).",
                self.events_sent_total,
            ),
            ("errors_sent_total", "counter", "Protocol error messages produced for clients.", self.errors_sent_total),
        ];
        if let Some((up, errors)) = self.event_log {
            rows.push((
                "event_log_up",
                "gauge",
                "Whether the shared event log (Redis) answered the last command.",
                u64::from(up),
            ));
            rows.push((
                "event_log_errors_total",
                "counter",
                "Commands to the shared event log (Redis) that failed.",
                errors,
            ));
        }
        let mut text = String::new();
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = write!(
                text,
                "# HELP chat_gateway_{name} {help}\n# TYPE chat_gateway_{name} {kind}\nchat_gateway_{name} {value}\n"
            );
        }
        let mut family = |name: &str, help: &str, values: &mut dyn Iterator<Item = (&str, u64)>| {
            let _ = write!(text, "# HELP chat_gateway_{name} {help}\n# TYPE chat_gateway_{name} counter\n");
            for (reason, value) in values {
                let _ = writeln!(text, "chat_gateway_{name}{{reason=\"{reason}\"}} {value}");
            }
        };
        family(
            "refused_total",
            "Upgrade requests refused before the upgrade, by reason.",
            &mut Refused::ALL.iter().map(|&reason| (reason.as_str(), self.refused(reason))),
        );
        family(
            "disconnects_total",
            "Connections the gateway ended itself, by reason.",
            &mut Disconnect::ALL.iter().map(|&reason| (reason.as_str(), self.disconnects(reason))),
        );
        text
    }
}
