//! [`Gateway`]: the HTTP routes, authentication before the upgrade, and graceful shutdown.

use std::future::{Future, IntoFuture as _};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::{Extension, Router};
use core_registry::{AgentRegistry, BuildError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, AuthError, Claims, Secret};
use crate::cluster::{RedisEventLog, ResumeError};
use crate::connection::{Attachment, Held};
use crate::limits::{Admission, Full, Limits, Throttle};
use crate::metrics::{Metrics, MetricsSnapshot, Refused};
use crate::protocol::HARD_FRAME_LIMIT;
use crate::replay::{MemoryReplayLog, ReplayLog, SessionKey};
use crate::sessions::{DEFAULT_RESUME_WINDOW, Sessions};

/// How many runs one session may have in progress at once, unless the registry says otherwise.
pub const DEFAULT_MAX_RUNS_PER_CONNECTION: usize = 16;

/// How long [`Gateway::serve`] lets runs in progress finish after the shutdown signal before cancelling them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a drain ended at once still waits for the connections' last writes (each gets one second for its send
/// task and one for its receive task).
const END_DRAIN_GRACE: Duration = Duration::from_secs(3);

/// The WebSocket read buffer of each connection. tungstenite's default (128 KiB, allocated per connection) made an
/// idle connection cost 145 KiB. Client messages are small (64 KiB at most), and a frame longer than the buffer
/// still reads: the buffer grows to the frame's length once its header is in. Measured from a separate process at
/// 10,000 idle connections: 16.8 KB each with 4 KiB, 14.7 KB with 2 KiB, 13.7 KB with 1 KiB.
const READ_BUFFER: usize = 2 * 1024;

/// How many bytes of frames a connection gathers before writing them to the socket (tungstenite's default:
/// 128 KiB). The send task flushes after each batch anyway; this bounds what one connection keeps buffered.
const WRITE_BUFFER: usize = 8 * 1024;

/// A registry with the built-in agents (`echo`, `tools`, `slow`, `fail`, `panic`) that allows
/// `max_runs_per_connection` runs in progress per session (a session outlives its connections).
pub fn builtin_registry(max_runs_per_connection: usize) -> Result<AgentRegistry, BuildError> {
    agents::register_builtin(AgentRegistry::builder()).max_runs_per_session(max_runs_per_connection).build()
}

/// The WebSocket chat gateway: routes `GET /v1/ws`, `GET /healthz` and `GET /metrics` over an [`AgentRegistry`].
///
/// Cloning yields a handle on the same gateway (same registry, sessions, counters and shutdown state). Configure it
/// ([`resume_window`](Gateway::resume_window), [`replay_limit`](Gateway::replay_limit),
/// [`replay_log`](Gateway::replay_log), [`drain_timeout`](Gateway::drain_timeout), the limits from
/// [`max_connections_per_user`](Gateway::max_connections_per_user) to
/// [`allowed_origins`](Gateway::allowed_origins)) before serving. The metrics are served by
/// [`metrics_router`](Gateway::metrics_router), on a listener of their own.
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
    pub(crate) limits: Arc<Limits>,
    admission: Arc<Admission>,
    pub(crate) throttle: Arc<Throttle>,
    // Cancelled when a drain must end at once (a second signal): runs are cancelled without waiting.
    pub(crate) stop_now: CancellationToken,
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
            sessions: Arc::new(Sessions::new(Arc::new(MemoryReplayLog::default()), DEFAULT_RESUME_WINDOW, None)),
            limits: Arc::default(),
            admission: Arc::default(),
            throttle: Arc::default(),
            stop_now: CancellationToken::new(),
            page: crate::page::PageConfig::default(),
        }
    }

    fn limits_mut(&mut self) -> &mut Limits {
        Arc::make_mut(&mut self.limits)
    }

    /// Sets how many connections one user may hold at once (default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_USER`](crate::limits::DEFAULT_MAX_CONNECTIONS_PER_USER)); one more is answered
    /// `429` before the upgrade.
    #[must_use]
    pub fn max_connections_per_user(mut self, limit: usize) -> Gateway {
        self.limits_mut().max_connections_per_user = limit;
        self
    }

    /// Sets how many sessions one user may hold at once, attached or waiting for a resume (default
    /// [`DEFAULT_MAX_SESSIONS_PER_USER`](crate::limits::DEFAULT_MAX_SESSIONS_PER_USER)). A new session beyond it
    /// closes the user's oldest session waiting for a resume (its runs are cancelled); when every one is attached,
    /// the upgrade is answered `429`.
    #[must_use]
    pub fn max_sessions_per_user(mut self, limit: usize) -> Gateway {
        self.limits_mut().max_sessions_per_user = limit;
        self
    }

    /// Sets how many connections the gateway holds at once (default
    /// [`DEFAULT_MAX_CONNECTIONS`](crate::limits::DEFAULT_MAX_CONNECTIONS)); one more is answered `503` before the
    /// upgrade.
    #[must_use]
    pub fn max_connections(mut self, limit: usize) -> Gateway {
        self.limits_mut().max_connections = limit;
        self
    }

    /// Sets how long a connection may stay silent (no frame at all, pongs included) before it is pinged, and then
    /// how long after the ping before it is closed (default
    /// [`DEFAULT_IDLE_TIMEOUT`](crate::limits::DEFAULT_IDLE_TIMEOUT)). Its session detaches.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Gateway {
        self.limits_mut().idle_timeout = timeout;
        self
    }

    /// Sets how long [`Gateway::serve`] keeps a socket open while it writes nothing to it (default
    /// [`DEFAULT_QUIET_TIMEOUT`](crate::limits::DEFAULT_QUIET_TIMEOUT)): a request that never completes, a kept-alive
    /// socket nobody uses. At least twice the [idle timeout](Gateway::idle_timeout) is used, so that a silent
    /// WebSocket connection is pinged (a write) first. `serve` also holds at most
    /// [`max_connections`](Gateway::max_connections) + 1024 sockets in all (more wait to be accepted).
    #[must_use]
    pub fn quiet_timeout(mut self, timeout: Duration) -> Gateway {
        self.limits_mut().quiet_timeout = timeout;
        self
    }

    /// Sets how many sockets one IP address may hold at once under [`Gateway::serve`] (more are closed as soon as
    /// they are accepted). No cap of its own by default: behind a reverse proxy every user comes from the proxy's
    /// address. Set it when clients connect directly.
    #[must_use]
    pub fn max_sockets_per_address(mut self, limit: usize) -> Gateway {
        self.limits_mut().max_sockets_per_address = limit;
        self
    }

    /// Sets how long one write to a client may wait for the client to accept it (default
    /// [`DEFAULT_WRITE_TIMEOUT`](crate::limits::DEFAULT_WRITE_TIMEOUT)). A client that accepts nothing for that
    /// long is disconnected; its session detaches, and its messages wait in the replay log.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Gateway {
        self.limits_mut().write_timeout = timeout;
        self
    }

    /// Sets how many failed upgrade requests (`401`, `403`) one IP address may make per minute (default
    /// [`DEFAULT_FAILED_UPGRADES_PER_WINDOW`](crate::limits::DEFAULT_FAILED_UPGRADES_PER_WINDOW)); after them, every
    /// request from it without a valid token (or from another origin) is answered `429` until the minute ends.
    /// Requests with a valid token are served, so users behind one address with a guesser are not locked out. Needs the peer address:
    /// [`Gateway::serve`] provides it; an application embedding [`Gateway::router`] must serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, or nothing is throttled.
    #[must_use]
    pub fn failed_upgrades_per_minute(mut self, limit: u32) -> Gateway {
        self.limits_mut().failed_upgrades_per_window = limit;
        self
    }

    /// Origins (`https://chat.example.com`) whose pages may open a WebSocket, besides the gateway's own (the request's
    /// scheme and `Host`). A browser request from any other origin is answered `403`; a request without `Origin`
    /// (not from a browser) is not affected.
    #[must_use]
    pub fn allowed_origins(mut self, origins: impl IntoIterator<Item = impl Into<String>>) -> Gateway {
        self.limits_mut().allowed_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Ends a drain at once (as a second shutdown signal does): runs in progress are cancelled now instead of after
    /// the [drain timeout](Gateway::drain_timeout), and each connection gets one second to write its last events and
    /// close frame. Before the shutdown signal it only takes effect once the drain starts.
    pub fn end_drain(&self) {
        self.stop_now.cancel();
    }

    /// Sets how long a session whose connection ended stays resumable (default 30 s): its runs go on and their
    /// messages wait in its replay log; after the window it is closed, its runs cancelled, everything freed.
    #[must_use]
    pub fn resume_window(mut self, window: Duration) -> Gateway {
        let sessions = &self.sessions;
        self.sessions = Arc::new(Sessions::new(Arc::clone(&sessions.log), window, sessions.cluster.clone()));
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
        let sessions = &self.sessions;
        self.sessions = Arc::new(Sessions::new(log, sessions.resume_window, sessions.cluster.clone()));
        self
    }

    /// Shares the sessions with the other gateway processes connected to the same Redis (`serve --event-log`): a
    /// client can resume its session on any of them, and when one dies, another ends its runs. Each session's
    /// messages are still kept in this process's replay log too (so its own connections go on while Redis is
    /// down).
    #[must_use]
    pub fn redis_event_log(mut self, log: RedisEventLog) -> Gateway {
        let sessions = &self.sessions;
        self.sessions = Arc::new(Sessions::new(Arc::clone(&sessions.log), sessions.resume_window, Some(log)));
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
        let event_log = self.sessions.cluster.as_ref().map(|cluster| (cluster.is_up(), cluster.errors()));
        MetricsSnapshot {
            resumable_sessions: self.sessions.len() as u64,
            event_log,
            ..self.metrics.snapshot(&self.registry)
        }
    }

    /// The routes, for embedding the gateway in a larger axum application: `GET /v1/ws`, `GET /healthz` and the
    /// browser page's (`GET /` and its files, `GET /v1/agents`, `GET /v1/ws/check`, and `GET /dev-token` when set).
    /// [`Gateway::serve`] uses them as they are.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/ws", get(ws_handler))
            .route("/healthz", get(healthz))
            .merge(crate::page::routes(self))
            .with_state(self.clone())
    }

    /// `GET /metrics` alone, for a listener of its own (the binary's `--metrics-addr`, loopback by default), so the
    /// counters are not public wherever the WebSocket port is.
    pub fn metrics_router(&self) -> Router {
        Router::new().route("/metrics", get(metrics)).with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then drains: no new connections or runs (upgrade requests
    /// get `503`, and so does `GET /healthz`: the listener stays up until the drain ends); runs in progress get up to
    /// the [drain timeout](Gateway::drain_timeout) to finish (or none, after [`end_drain`](Gateway::end_drain)),
    /// then are cancelled; every client receives each of its runs' terminal event, then a close frame (1001, going
    /// away). Sessions without a connection are closed at the end. Returns once every connection has ended.
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
        let stop_http = CancellationToken::new();
        let limits = &self.limits;
        let sockets = limits.max_connections.saturating_add(crate::listener::SOCKETS_BEYOND_CONNECTIONS);
        let quiet = limits.quiet_timeout.max(limits.idle_timeout.saturating_mul(2));
        // `tap_io` (doing nothing) gives the listener axum's ConnectInfo<SocketAddr>.
        let per_address = limits.max_sockets_per_address;
        let listener = crate::listener::GatewayListener::new(listener, sockets, per_address, quiet).tap_io(|_| {});
        let http = axum::serve(listener, self.router().into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(stop_http.clone().cancelled_owned())
            .into_future();
        let mut http = std::pin::pin!(http);
        // With a shared event log: this node's inbox (requests of other nodes, rings for its remote connections).
        let cluster = self.sessions.cluster.clone();
        let follower = cluster.clone().map(|cluster| tokio::spawn(cluster.follow(self.clone())));
        let never = CancellationToken::new();
        let fenced = cluster.as_ref().map_or(&never, RedisEventLog::fenced).clone();
        let drain_started = std::sync::OnceLock::new();
        let drain = async {
            tokio::select! {
                () = shutdown => {}
                () = fenced.cancelled() => {
                    // Its sessions were ended by another node: nothing here may go on.
                    self.stop_now.cancel();
                }
            }
            tracing::info!("shutting down: draining connections");
            let _ = drain_started.set(Instant::now());
            self.shutdown.cancel();
            // Upgraded connections run on their own tasks, outside axum's graceful shutdown: wait for them here,
            // while the listener still answers `/healthz` (503) and upgrade requests (503).
            self.connections.close();
            tokio::select! {
                () = self.connections.wait() => {}
                // Ended at once: each connection has its own short grace; past it, stop waiting for stragglers.
                () = async {
                    self.stop_now.cancelled().await;
                    tokio::time::sleep(END_DRAIN_GRACE).await;
                } => tracing::warn!("drain ended at once with connections still closing"),
            }
        };
        tokio::select! {
            served = &mut http => served?,
            () = drain => {
                stop_http.cancel();
                // Plain HTTP requests in progress may finish, unless the drain was ended at once.
                tokio::select! {
                    served = &mut http => served?,
                    () = self.stop_now.cancelled() => {}
                }
            }
        }
        match &cluster {
            Some(cluster) if !fenced.is_cancelled() => {
                // Sessions that no connection of this process holds (waiting for a resume, or held from another
                // node) may have clients elsewhere: their runs get the rest of the drain, then are cancelled, and
                // their terminal events go to Redis. Then the node leaves: what still runs ends as a lost node's.
                let deadline = drain_started.get().copied().unwrap_or_else(Instant::now) + self.drain_timeout;
                self.sessions.finish_all(deadline.into(), &self.stop_now).await;
                self.sessions.close_all();
                cluster.leave().await;
            }
            // Sessions that no connection holds: their runs are cancelled; nobody is there to drain them to.
            _ => self.sessions.close_all(),
        }
        if let Some(follower) = follower {
            follower.abort();
        }
        if fenced.is_cancelled() {
            return Err(io::Error::other(
                "this node's lease in Redis expired and another node ended its sessions; start it again",
            ));
        }
        tracing::info!("shut down");
        Ok(())
    }
}

async fn ws_handler(
    State(gateway): State<Gateway>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer.ip());
    let limits = &gateway.limits;
    let token = bearer_token(&headers).map(std::borrow::Cow::Borrowed).or_else(|| query_param(uri.query(), "token"));
    let claims = match preflight(&gateway, peer, &headers, token.as_deref()) {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if gateway.shutdown.is_cancelled() {
        return draining(&gateway);
    }
    let resume = match resume_request(uri.query()) {
        Ok(resume) => resume,
        Err(response) => return response,
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    // Held until the connection ends (or the upgrade fails): the caps count connections, not requests.
    let slot = match gateway.admission.admit(&claims.user, limits) {
        Ok(slot) => slot,
        Err(full) => return refuse_full(&gateway, full),
    };
    // Attached before the upgrade, so that a resume is refused with a status; a connection taken over is closed now.
    // A new session's place under the per-user cap is reserved now, and held until it is open.
    let mut reservation = None;
    let attachment = match resume {
        None => {
            // A new session: one user's sessions waiting for a resume cannot pile up.
            match gateway.sessions.make_room(&claims.user, limits.max_sessions_per_user) {
                Ok(reserved) => reservation = Some(reserved),
                Err(_) => {
                    gateway.metrics.refused(Refused::UserSessions);
                    let message = format!(
                        "this user already holds {} sessions, each attached to a connection; close one (or resume \
                         it)\n",
                        limits.max_sessions_per_user
                    );
                    return too_many(Duration::from_secs(1), message);
                }
            }
            None
        }
        Some((key, after)) => {
            let resumed = match (key, &gateway.sessions.cluster) {
                (None, _) => Err(ResumeError::Unknown),
                // Another process's session, as far as this one knows: its owner attaches it.
                (Some(key), Some(cluster)) if !gateway.sessions.holds(key) => {
                    cluster.attach_remote(&claims.user, key, after).await.map(Held::Remote)
                }
                (Some(key), _) => gateway
                    .sessions
                    .resume(&claims.user, key, after)
                    .map(|(live, attached)| Held::Local { live, attached })
                    .map_err(ResumeError::from),
            };
            match resumed {
                Ok(held) => {
                    gateway.metrics.resumed();
                    Some(Attachment { gateway: gateway.clone(), held, after, resumed: true, close_now: false })
                }
                Err(err) => return resume_refused(&gateway, err),
            }
        }
    };
    // Taken before the upgrade completes, so a shutdown that starts now still waits for this connection.
    let tracked = gateway.connections.token();
    let user = claims.user;
    let expires_at = claims.expires_at;
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_failed_upgrade(|err| tracing::debug!(%err, "websocket upgrade failed"))
        .on_upgrade(move |mut socket| async move {
            let attachment = match attachment {
                Some(attachment) => Some(attachment),
                None => crate::connection::open(&gateway, &user),
            };
            drop(reservation);
            match attachment {
                Some(attachment) => crate::connection::run(attachment, socket, expires_at, slot).await,
                None => {
                    let frame = CloseFrame { code: close_code::ERROR, reason: "cannot open a session".into() };
                    let close = socket.send(Message::Close(Some(frame)));
                    let _ = tokio::time::timeout(gateway.limits.write_timeout, close).await;
                }
            }
            drop(tracked);
        })
}

/// The checks of every request that speaks for a user before the upgrade (`GET /v1/ws` and the page's endpoints):
/// the `Origin` (`403`) and the `token` (`401`), each refusal counted against the address; an address that used up
/// its failures for the minute gets `429` instead of either, without a new count. A valid token from the same
/// origin always passes: the throttle slows down guessing, it never locks out the users behind a shared address (a
/// proxy, a NAT). Gives the token's claims.
#[allow(clippy::result_large_err)]
pub(crate) fn preflight(
    gateway: &Gateway,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<Claims, Response> {
    let limits = &gateway.limits;
    let throttled = || {
        let wait = gateway.throttle.retry_after(peer?, limits.failed_upgrades_per_window, Instant::now())?;
        gateway.metrics.refused(Refused::Throttled);
        tracing::debug!(peer = ?peer, "throttled an upgrade request: too many failed ones from this address");
        Some(too_many(wait, "too many failed upgrade requests from this address; try again later\n"))
    };
    if !crate::limits::origin_allowed(headers, &limits.allowed_origins) {
        if let Some(response) = throttled() {
            return Err(response);
        }
        failed_attempt(gateway, peer, Refused::Origin);
        tracing::debug!("refused websocket upgrade: origin not allowed");
        return Err((StatusCode::FORBIDDEN, "this origin may not open a WebSocket here\n").into_response());
    }
    let claims =
        token.ok_or(AuthError::Missing).and_then(|token| auth::verify_token(&gateway.secret, token, auth::now_unix()));
    claims.map_err(|err| {
        if let Some(response) = throttled() {
            return response;
        }
        // A client mistake: answered, counted, not logged as an error (nor is the token, ever).
        failed_attempt(gateway, peer, Refused::Unauthorized);
        tracing::debug!(%err, "refused websocket upgrade");
        unauthorized(&err)
    })
}

/// Counts a refusal of a request without a valid token (`401`, `403`), against its address too.
pub(crate) fn failed_attempt(gateway: &Gateway, peer: Option<IpAddr>, reason: Refused) {
    gateway.metrics.refused(reason);
    if let Some(peer) = peer {
        gateway.throttle.failed(peer, Instant::now());
    }
}

/// The answer when a connection cap is reached (`429` for the user's, `503` for the gateway's), counted.
pub(crate) fn refuse_full(gateway: &Gateway, full: Full) -> Response {
    match full {
        Full::User => {
            gateway.metrics.refused(Refused::UserConnections);
            let message = format!(
                "this user already holds {} connections, the most allowed; close one (or resume its session)\n",
                gateway.limits.max_connections_per_user
            );
            too_many(Duration::from_secs(1), message)
        }
        Full::Gateway => {
            gateway.metrics.refused(Refused::Connections);
            let retry = [(header::RETRY_AFTER, HeaderValue::from_static("1"))];
            (StatusCode::SERVICE_UNAVAILABLE, retry, "the server holds as many connections as it may\n").into_response()
        }
    }
}

/// Whether a connection of `user` would be admitted now (for the page's `/v1/ws/check`; takes no place).
pub(crate) fn would_admit(gateway: &Gateway, user: &str) -> Result<(), Full> {
    gateway.admission.check(user, &gateway.limits)
}

/// `503` while the gateway drains, counted.
pub(crate) fn draining(gateway: &Gateway) -> Response {
    gateway.metrics.refused(Refused::Draining);
    (StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n").into_response()
}

/// `429 Too Many Requests`, with `Retry-After` in whole seconds (at least one).
fn too_many(wait: Duration, message: impl Into<String>) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let retry = [(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))];
    (StatusCode::TOO_MANY_REQUESTS, retry, message.into()).into_response()
}

/// The resume parameters: `None` for a new session; `Some((key, after))` for `?session=<id>&after=<seq>`, with
/// `key` `None` if it is not a session id at all (answered like an unknown one).
#[allow(clippy::result_large_err)]
pub(crate) fn resume_request(query: Option<&str>) -> Result<Option<(Option<SessionKey>, u64)>, Response> {
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
/// What `GET /v1/ws` (and the page's check) answers a resume that cannot be made, counted.
pub(crate) fn resume_refused(gateway: &Gateway, err: ResumeError) -> Response {
    match err {
        ResumeError::Gap { first_seq } => {
            gateway.metrics.refused(Refused::ResumeGap);
            resume_gap(first_seq)
        }
        ResumeError::Unavailable => {
            gateway.metrics.refused(Refused::EventLog);
            let retry = [(header::RETRY_AFTER, HeaderValue::from_static("1"))];
            let message = "the session is another gateway process's, and the shared event log (Redis) cannot be \
                           reached; try again\n";
            (StatusCode::SERVICE_UNAVAILABLE, retry, message).into_response()
        }
        ResumeError::Unknown => {
            // Not counted against the address: the request has a valid token, and a session id is 128 random bits,
            // nothing to guess; a page reloaded after a restart asks for its old session.
            gateway.metrics.refused(Refused::UnknownSession);
            unknown_session()
        }
    }
}

pub(crate) fn unknown_session() -> Response {
    let json = HeaderValue::from_static("application/json");
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, json)], "{\"error\":\"unknown_session\"}\n").into_response()
}

pub(crate) fn resume_gap(first_seq: u64) -> Response {
    let json = HeaderValue::from_static("application/json");
    let body = format!("{{\"error\":\"resume_gap\",\"first_seq\":{first_seq}}}\n");
    (StatusCode::CONFLICT, [(header::CONTENT_TYPE, json)], body).into_response()
}

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
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
