//! [`Gateway`]: the HTTP routes, authentication before the upgrade, and graceful shutdown.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use core_registry::{AgentRegistry, BuildError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, AuthError, Secret};
use crate::connection::Attachment;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::protocol::HARD_FRAME_LIMIT;
use crate::replay::{AttachError, MemoryReplayLog, ReplayLog, SessionKey};
use crate::sessions::{DEFAULT_RESUME_WINDOW, Sessions};

/// How many runs one session may have in progress at once, unless the registry says otherwise.
pub const DEFAULT_MAX_RUNS_PER_CONNECTION: usize = 16;

/// How long [`Gateway::serve`] lets runs in progress finish after the shutdown signal before cancelling them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A registry with the built-in agents (`echo`, `tools`, `slow`, `fail`, `panic`) that allows
/// `max_runs_per_connection` runs in progress per session (a session outlives its connections).
pub fn builtin_registry(max_runs_per_connection: usize) -> Result<AgentRegistry, BuildError> {
    agents::register_builtin(AgentRegistry::builder()).max_runs_per_session(max_runs_per_connection).build()
}

/// The WebSocket chat gateway: routes `GET /v1/ws`, `GET /healthz` and `GET /metrics` over an [`AgentRegistry`].
///
/// Cloning yields a handle on the same gateway (same registry, sessions, counters and shutdown state). Configure it
/// ([`resume_window`](Gateway::resume_window), [`replay_limit`](Gateway::replay_limit),
/// [`replay_log`](Gateway::replay_log), [`drain_timeout`](Gateway::drain_timeout)) before serving.
///
/// ```no_run
/// use chat_gateway::{auth::Secret, builtin_registry, Gateway, DEFAULT_MAX_RUNS_PER_CONNECTION};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = builtin_registry(DEFAULT_MAX_RUNS_PER_CONNECTION)?;
/// let gateway = Gateway::new(registry, Secret::new("change me").unwrap());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// gateway.serve(listener, async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) registry: AgentRegistry,
    pub(crate) secret: Secret,
    pub(crate) metrics: Arc<Metrics>,
    // Invariant: cancelled exactly once the shutdown signal has fired; from then on no new runs start.
    pub(crate) shutdown: CancellationToken,
    // Every WebSocket connection holds a token of this tracker until its task ends.
    pub(crate) connections: TaskTracker,
    pub(crate) drain_timeout: Duration,
    // The gateway sessions and their replay logs; replaced by the configuration methods, before serving.
    pub(crate) sessions: Arc<Sessions>,
    // The browser page's settings (the dev token it may offer).
    pub(crate) page: crate::page::PageConfig,
}

impl Gateway {
    /// A gateway that runs agents from `registry` for users holding tokens signed with `secret`.
    pub fn new(registry: AgentRegistry, secret: Secret) -> Gateway {
        Gateway {
            registry,
            secret,
            metrics: Arc::default(),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            sessions: Arc::new(Sessions::new(Arc::new(MemoryReplayLog::default()), DEFAULT_RESUME_WINDOW)),
            page: crate::page::PageConfig::default(),
        }
    }

    /// Sets how long a session whose connection ended stays resumable (default 30 s): its runs go on and their
    /// messages wait in its replay log; after the window it is closed, its runs cancelled, everything freed.
    #[must_use]
    pub fn resume_window(mut self, window: Duration) -> Gateway {
        self.sessions = Arc::new(Sessions::new(Arc::clone(&self.sessions.log), window));
        self
    }

    /// Keeps up to `limit` messages per session in an in-memory replay log (default
    /// [`DEFAULT_REPLAY_LIMIT`](crate::replay::DEFAULT_REPLAY_LIMIT)). While a log is full of messages its client has
    /// not been sent, the session's runs wait.
    #[must_use]
    pub fn replay_limit(self, limit: usize) -> Gateway {
        self.replay_log(Arc::new(MemoryReplayLog::new(limit)))
    }

    /// Keeps the sessions' replay logs and attach state in `log` instead of the in-memory default.
    #[must_use]
    pub fn replay_log(mut self, log: Arc<dyn ReplayLog>) -> Gateway {
        self.sessions = Arc::new(Sessions::new(log, self.sessions.resume_window));
        self
    }

    /// Sets how long runs in progress may go on after the shutdown signal before they are cancelled (default
    /// [`DEFAULT_DRAIN_TIMEOUT`]). Zero cancels them at once; either way each gets its terminal event.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Gateway {
        self.drain_timeout = timeout;
        self
    }

    /// The registry the gateway runs agents from.
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }

    /// The gateway's counters now, as `GET /metrics` reports them.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot { resumable_sessions: self.sessions.len() as u64, ..self.metrics.snapshot(&self.registry) }
    }

    /// The routes, for embedding the gateway in a larger axum application. [`Gateway::serve`] uses them as they are.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/ws", get(ws_handler))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .merge(crate::page::routes(self))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then drains: no new connections or runs; runs in progress
    /// get up to the [drain timeout](Gateway::drain_timeout) to finish, then are cancelled; every client receives
    /// each of its runs' terminal event, then a close frame (1001, going away). Sessions without a connection are
    /// closed at the end. Returns once every connection has ended.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops accepting connections at once; connections already upgraded keep running on their
    /// own tasks until they end. Complete `shutdown` instead for an orderly stop.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let address = listener.local_addr()?;
        tracing::info!("listening on {address}");
        let token = self.shutdown.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: draining connections");
            token.cancel();
        };
        axum::serve(listener, self.router()).with_graceful_shutdown(signal).await?;
        // Upgraded connections run on their own tasks, outside axum's graceful shutdown: wait for them here.
        self.connections.close();
        self.connections.wait().await;
        // Sessions that no connection holds: their runs are cancelled; nobody is there to drain them to.
        self.sessions.close_all();
        tracing::info!("shut down");
        Ok(())
    }
}

async fn ws_handler(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = bearer_token(&headers).map(std::borrow::Cow::Borrowed).or_else(|| query_param(uri.query(), "token"));
    let claims =
        token.ok_or(AuthError::Missing).and_then(|token| auth::verify_token(&gateway.secret, &token, auth::now_unix()));
    let claims = match claims {
        Ok(claims) => claims,
        Err(err) => {
            // A client mistake: answered, counted, not logged as an error.
            gateway.metrics.auth_failed();
            tracing::debug!(%err, "refused websocket upgrade");
            return unauthorized(&err);
        }
    };
    if gateway.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n").into_response();
    }
    let resume = match resume_request(uri.query()) {
        Ok(resume) => resume,
        Err(response) => return response,
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // Attached before the upgrade, so that a resume is refused with a status; a connection taken over is closed now.
    let attachment = match resume {
        None => None,
        Some((key, after)) => match key.map(|key| gateway.sessions.resume(&claims.user, key, after)) {
            Some(Ok((live, attached))) => {
                gateway.metrics.resumed();
                Some(Attachment { gateway: gateway.clone(), live, attached, after, resumed: true, close_now: false })
            }
            Some(Err(AttachError::Gap { first_seq })) => return resume_gap(first_seq),
            Some(Err(_)) | None => return unknown_session(),
        },
    };
    // Taken before the upgrade completes, so a shutdown that starts now still waits for this connection.
    let tracked = gateway.connections.token();
    let user = claims.user;
    let expires_at = claims.expires_at;
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_failed_upgrade(|err| tracing::debug!(%err, "websocket upgrade failed"))
        .on_upgrade(move |mut socket| async move {
            let attachment = match attachment {
                Some(attachment) => Some(attachment),
                None => crate::connection::open(&gateway, &user),
            };
            match attachment {
                Some(attachment) => crate::connection::run(attachment, socket, expires_at).await,
                None => {
                    let frame = CloseFrame { code: close_code::ERROR, reason: "cannot open a session".into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                }
            }
            drop(tracked);
        })
}

/// The resume parameters: `None` for a new session; `Some((key, after))` for `?session=<id>&after=<seq>`, with
/// `key` `None` if it is not a session id at all (answered like an unknown one).
#[allow(clippy::result_large_err)]
fn resume_request(query: Option<&str>) -> Result<Option<(Option<SessionKey>, u64)>, Response> {
    let session = query_param(query, "session");
    let after = query_param(query, "after");
    let Some(session) = session else {
        if after.is_some() {
            return Err((StatusCode::BAD_REQUEST, "`after` needs `session`: resume with ?session=<id>&after=<seq>\n")
                .into_response());
        }
        return Ok(None);
    };
    let after = match after.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(_)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "`after` must be a whole number: the seq of the last message you have\n",
            )
                .into_response());
        }
    };
    Ok(Some((session.parse().ok(), after)))
}

/// The one answer for an unknown, expired or another user's session: the same status, body and content type.
fn unknown_session() -> Response {
    let json = HeaderValue::from_static("application/json");
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, json)], "{\"error\":\"unknown_session\"}\n").into_response()
}

fn resume_gap(first_seq: u64) -> Response {
    let json = HeaderValue::from_static("application/json");
    let body = format!("{{\"error\":\"resume_gap\",\"first_seq\":{first_seq}}}\n");
    (StatusCode::CONFLICT, [(header::CONTENT_TYPE, json)], body).into_response()
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// The query parameter `name`, percent-decoded, if not empty. Tokens, session ids and seqs are made of URL-safe
/// characters, but a client may encode them anyway (`%2E` for `.`); one that does not decode to UTF-8 is absent.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        .filter(|value| !value.is_empty())?;
    percent_encoding::percent_decode_str(value).decode_utf8().ok()
}

fn unauthorized(err: &AuthError) -> Response {
    let challenge = match err {
        AuthError::Missing => HeaderValue::from_static("Bearer"),
        _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
    };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], format!("{err}\n")).into_response()
}

async fn healthz(State(gateway): State<Gateway>) -> Response {
    if gateway.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(gateway): State<Gateway>) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], gateway.metrics().render()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc.def.ghi"));
        assert_eq!(bearer_token(&headers), Some("abc.def.ghi"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        assert_eq!(bearer_token(&headers), None);
        let param = |query: Option<&str>, name: &str| query_param(query, name).map(|value| value.into_owned());
        assert_eq!(param(Some("a=1&token=x.y.z"), "token").as_deref(), Some("x.y.z"));
        assert_eq!(param(Some("token="), "token"), None);
        assert_eq!(param(Some("notoken=1"), "token"), None);
        assert_eq!(param(Some("tokens=1"), "token"), None);
        assert_eq!(param(None, "token"), None);
        assert_eq!(param(Some("session=ab&after=7"), "after").as_deref(), Some("7"));
        // Percent-encoded, as a client may send it anyway; not UTF-8 once decoded: absent.
        assert_eq!(param(Some("token=x%2Ey%2ez"), "token").as_deref(), Some("x.y.z"));
        assert_eq!(param(Some("token=%FF"), "token"), None);
    }

    fn require_send_sync<T: Send + Sync + 'static>(_: &T) {}

    #[test]
    fn gateway_is_send_and_sync() {
        let gateway = Gateway::new(builtin_registry(1).unwrap(), Secret::new("s").unwrap());
        require_send_sync(&gateway);
    }
}
