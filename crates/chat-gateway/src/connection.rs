//! One WebSocket connection, attached to one gateway session: a receive task and a send task.
//!
//! The receive task parses client messages and starts or cancels the session's runs; refusals go to the session's
//! pump, which numbers them with the events. The send task is the connection's only writer: the `session` frame
//! first, then every message of the session's replay log after the client's `after`, then live ones as the pump
//! appends them. When the connection ends for any reason, the session detaches (its runs go on and their messages
//! wait in the log) unless the client said `close`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use core_registry::{CancelError, RunError, RunId};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::cluster::{Feed, FeedEnd};
use crate::limits::Slot;
use crate::metrics::Disconnect;
use crate::protocol::{Body, ClientMessage, ErrorCode, MAX_FRAME_BYTES, ProtocolError, session_frame};
use crate::replay::{Attached, ReplayError, SessionKey, Utf8Bytes};
use crate::server::Gateway;
use crate::sessions::{LiveSession, Refusal, RunStart};

/// The most messages written before one flush.
const BATCH: usize = 64;

/// The most messages read from the shared log (Redis) at once, for a session owned by another process: each read
/// is a round trip, so a replay reads more at a time than from memory.
const REMOTE_BATCH: usize = 512;

/// How long a draining connection may take to write its last events and close frame.
const FINAL_WRITE_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the client's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Close code: another connection resumed the session.
pub(crate) const CLOSE_TAKEN_OVER: u16 = 4000;

/// Close code: the connection's token expired.
pub(crate) const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// Close code: no frame from the client within the idle timeout, even after a ping.
pub(crate) const CLOSE_IDLE: u16 = 4002;

impl From<ProtocolError> for Refusal {
    fn from(err: ProtocolError) -> Self {
        Refusal { request_id: err.request_id, body: Body::Error { code: err.code, message: err.message, run_id: None } }
    }
}

/// The session a connection serves: one of this process, or one owned by another gateway process (read from the
/// shared log, its client's frames forwarded to the owner).
#[derive(Clone)]
pub(crate) enum Held {
    Local { live: Arc<LiveSession>, attached: Attached },
    Remote(Arc<Feed>),
}

impl Held {
    fn key(&self) -> SessionKey {
        match self {
            Held::Local { live, .. } => live.key,
            Held::Remote(feed) => feed.key,
        }
    }
}

/// Which session a connection serves, and from where its client reads.
pub(crate) struct Attachment {
    pub(crate) gateway: Gateway,
    pub(crate) held: Held,
    /// The seq of the last message the client has.
    pub(crate) after: u64,
    pub(crate) resumed: bool,
    /// Set when the client said `close`: the session is closed as the connection ends.
    pub(crate) close_now: bool,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // However the connection ends (also when the upgrade never completes), the session detaches.
        match &self.held {
            Held::Local { live, attached } => self.gateway.sessions.detach(live.key, *attached, self.close_now),
            Held::Remote(feed) => feed.detach(self.close_now),
        }
    }
}

/// Opens a new session for `user` and attaches to it, or explains why not.
pub(crate) fn open(gateway: &Gateway, user: &str) -> Option<Attachment> {
    match gateway.sessions.open(&gateway.registry, &gateway.metrics, user) {
        Ok((live, attached)) => Some(Attachment {
            gateway: gateway.clone(),
            held: Held::Local { live, attached },
            after: 0,
            resumed: false,
            close_now: false,
        }),
        Err(err) => {
            tracing::warn!(%err, user, "cannot open a session for a new connection");
            None
        }
    }
}

/// What the receive task, which judges whether the client is still there, shares with the send task.
#[derive(Default)]
struct Liveness {
    /// Asks the send task for a ping.
    ping: Notify,
    /// How many writes to the client have completed: a client that accepts frames is there, even while a ping
    /// waits behind them.
    writes: AtomicU64,
    /// Whether a write is in progress: then the write deadline, not the idle timeout, decides.
    writing: AtomicBool,
}

/// Why the receive task ended.
enum Leave {
    /// The connection ended or broke.
    Gone,
    /// The client sent `{"type":"close"}`.
    Close,
    /// No frame within the idle timeout after a ping.
    Idle,
    /// A text frame that is not UTF-8.
    NotUtf8,
}

/// Serves one upgraded connection until the client leaves, the token expires, another connection takes the session
/// over, or the gateway shuts down. `slot` is the connection's place under the connection caps.
pub(crate) async fn run(mut attachment: Attachment, socket: WebSocket, expires_at: u64, slot: Slot) {
    let gateway = attachment.gateway.clone();
    gateway.metrics.connection_opened();
    let counted = Counted { metrics: Arc::clone(&gateway.metrics), slot: Some(slot) };
    // Debug level: at the default (info) the span is disabled, so polling the connection's tasks costs nothing for it.
    let span = tracing::debug_span!("connection", session = %attachment.held.key(), resumed = attachment.resumed);
    serve(&gateway, &mut attachment, socket, expires_at).instrument(span).await;
    drop(attachment);
    drop(counted);
}

/// An open connection in the counters, until dropped (however `run` ends, a panic included). Its place under the
/// caps is freed first, so that once `connections_open` says it is gone, its place can be taken.
struct Counted {
    metrics: Arc<crate::metrics::Metrics>,
    slot: Option<Slot>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        drop(self.slot.take());
        self.metrics.connection_closed();
    }
}

/// How long until `expires_at` (seconds since the Unix epoch); an `exp` past what the clock can hold never comes.
fn until(expires_at: u64) -> Duration {
    match UNIX_EPOCH.checked_add(Duration::from_secs(expires_at)) {
        Some(deadline) => deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO),
        None => Duration::MAX,
    }
}

async fn serve(gateway: &Gateway, attachment: &mut Attachment, socket: WebSocket, expires_at: u64) {
    tracing::debug!("connected");
    let held = attachment.held.clone();
    let (sink, stream) = socket.split();
    let (stop, stop_rx) = oneshot::channel();
    // The receive task asks the send task (the only writer) for a ping when the client has been silent.
    let ping = Arc::new(Liveness::default());
    let mut send_task = tokio::spawn(
        send_loop(
            sink,
            gateway.clone(),
            held.clone(),
            Cursor { after: attachment.after, resumed: attachment.resumed },
            stop_rx,
            Arc::clone(&ping),
        )
        .instrument(tracing::Span::current()),
    );
    let mut receive_task =
        tokio::spawn(receive_loop(stream, held.clone(), gateway.clone(), ping).instrument(tracing::Span::current()));
    let token_expiry = tokio::time::sleep(until(expires_at));

    // A JoinHandle must not be polled again once it has completed: track which task has ended.
    let (mut sent_all, mut client_left) = (false, false);
    let stop_with = |code: u16, reason: &'static str| {
        let _ = stop.send(CloseFrame { code, reason: reason.into() });
    };
    tokio::select! {
        _ = &mut send_task => sent_all = true,
        leave = &mut receive_task => {
            client_left = true;
            let close = match leave {
                Ok(Leave::Close) => {
                    attachment.close_now = true;
                    Some((close_code::NORMAL, "session closed"))
                }
                Ok(Leave::Idle) => {
                    gateway.metrics.disconnected(Disconnect::Idle);
                    Some((CLOSE_IDLE, "no frame within the idle timeout"))
                }
                Ok(Leave::NotUtf8) => {
                    gateway.metrics.disconnected(Disconnect::NotUtf8);
                    Some((close_code::INVALID, "a text frame was not UTF-8"))
                }
                Ok(Leave::Gone) | Err(_) => None,
            };
            if let Some((code, reason)) = close {
                stop_with(code, reason);
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut send_task).await;
            }
        }
        () = token_expiry => {
            tracing::debug!("token expired");
            gateway.metrics.disconnected(Disconnect::TokenExpired);
            stop_with(CLOSE_TOKEN_EXPIRED, "token expired");
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut send_task).await;
        }
        () = gateway.shutdown.cancelled(), if matches!(held, Held::Remote(_)) => {
            // The session's runs go on where it is owned: this connection ends now, and its client resumes on
            // another node.
            stop_with(close_code::AWAY, "server shutting down");
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut send_task).await;
        }
        () = gateway.shutdown.cancelled(), if matches!(held, Held::Local { .. }) => {
            let Held::Local { live, .. } = &held else { unreachable!("guarded by the branch condition") };
            // Drain: the receive task refuses new runs from now on; runs in progress may finish, up to the timeout
            // (or not at all once the drain is ended at once).
            tokio::select! {
                _ = tokio::time::timeout(gateway.drain_timeout, live.runs_done()) => {}
                () = gateway.stop_now.cancelled() => {}
                _ = &mut send_task => sent_all = true,
                _ = &mut receive_task => client_left = true,
            }
            if !sent_all && !client_left {
                // Cancel what still runs: the log ends after their terminal events, then the send task writes the
                // close frame. A client that stops reading is cut off after the grace period, shorter once the
                // drain is ended at once.
                live.core.close();
                let cut_short = async {
                    gateway.stop_now.cancelled().await;
                    tokio::time::sleep(CLOSE_GRACE).await;
                };
                let written = tokio::select! {
                    written = tokio::time::timeout(FINAL_WRITE_GRACE, &mut send_task) => written.is_ok(),
                    () = cut_short => false,
                };
                if written {
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut receive_task).await;
                }
            }
        }
    }
    tracing::debug!(sent_all, client_left, "connection ending");
    send_task.abort();
    receive_task.abort();
    tracing::debug!("disconnected");
}

async fn receive_loop(
    mut stream: SplitStream<WebSocket>,
    held: Held,
    gateway: Gateway,
    liveness: Arc<Liveness>,
) -> Leave {
    let idle_timeout = gateway.limits.idle_timeout;
    // The number of completed writes when the ping was asked for, while waiting for an answer.
    let mut pinged: Option<u64> = None;
    loop {
        let message = match tokio::time::timeout(idle_timeout, stream.next()).await {
            Ok(Some(message)) => {
                pinged = None;
                message
            }
            Ok(None) => return Leave::Gone,
            Err(_) => {
                let writes = liveness.writes.load(Ordering::Relaxed);
                match pinged {
                    None => {
                        // Silent for a whole idle timeout: ask for a pong (any frame will do), and give it another.
                        liveness.ping.notify_one();
                        pinged = Some(writes);
                    }
                    // Still accepting frames (a slow reader, the ping behind them), or a write in progress (which the
                    // write deadline bounds): there; wait for the answer.
                    Some(before) if writes != before || liveness.writing.load(Ordering::Relaxed) => {
                        pinged = Some(writes);
                    }
                    Some(_) => {
                        tracing::debug!("no frame from the client, and no write accepted, within the idle timeout");
                        return Leave::Idle;
                    }
                }
                continue;
            }
        };
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                let err = err.into_inner();
                if let Some(tungstenite::Error::Utf8(_)) = err.downcast_ref::<tungstenite::Error>() {
                    tracing::debug!("a text frame was not UTF-8");
                    return Leave::NotUtf8;
                }
                // The client broke the protocol or the connection dropped: not our error.
                tracing::debug!(%err, "websocket read ended");
                return Leave::Gone;
            }
        };
        let frame = match message {
            Message::Text(text) => Frame::Text(text),
            Message::Binary(_) => Frame::Binary,
            // Pings are answered by the WebSocket layer. After a close frame, the next read sends the reply and
            // ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
        };
        let live = match &held {
            Held::Local { live, .. } => live,
            Held::Remote(feed) => {
                // The owner judges the frame, as it does its own connections' frames; only `close` is ours.
                if let Frame::Text(text) = &frame
                    && text.len() <= MAX_FRAME_BYTES
                    && let Ok(ClientMessage::Close) = ClientMessage::parse(text.as_str())
                {
                    return Leave::Close;
                }
                feed.forward(frame).await;
                continue;
            }
        };
        let Ok(refusal) = judge(&frame, live, &gateway) else { return Leave::Close };
        if let Some(refusal) = refusal {
            if let Body::Error { code, .. } = &refusal.body {
                tracing::debug!(code = code.as_str(), "refused a client message");
            }
            if live.refusals.send(Box::new(refusal)).await.is_err() {
                return Leave::Gone;
            }
        }
    }
}

/// A client frame, as the receive task reads it (or another node forwards it).
pub(crate) enum Frame {
    Text(Utf8Bytes),
    /// A text frame over the size limit, of this many bytes (forwarded by another node without its text).
    TooLarge(usize),
    Binary,
}

/// The client said `close`.
pub(crate) struct Close;

/// Does what a client frame asks of its session: gives the refusal to send back, if any, or `Err` for `close`.
pub(crate) fn judge(frame: &Frame, live: &LiveSession, gateway: &Gateway) -> Result<Option<Refusal>, Close> {
    Ok(match frame {
        Frame::Text(text) if text.len() > MAX_FRAME_BYTES => Some(too_large(text.len())),
        Frame::TooLarge(len) => Some(too_large(*len)),
        Frame::Text(text) => match ClientMessage::parse(text.as_str()) {
            Ok(ClientMessage::Close) => return Err(Close),
            Ok(message) => handle(message, live, gateway),
            Err(err) => Some(err.into()),
        },
        Frame::Binary => Some(Refusal::from(ProtocolError::new(
            ErrorCode::BinaryFrame,
            "binary frames are not supported; send JSON messages as text frames",
        ))),
    })
}

fn too_large(len: usize) -> Refusal {
    Refusal::from(ProtocolError::new(
        ErrorCode::FrameTooLarge,
        format!("the message has {len} bytes; the limit is {MAX_FRAME_BYTES}"),
    ))
}

fn handle(message: ClientMessage, live: &LiveSession, gateway: &Gateway) -> Option<Refusal> {
    match message {
        ClientMessage::Run { agent, input, request_id } => {
            if gateway.shutdown.is_cancelled() {
                return Some(refuse(ErrorCode::ShuttingDown, "the server is shutting down; no new runs", request_id));
            }
            // The request id travels as the run's tag on every event, so the pump needs nothing from here.
            match live.start_run(&agent, input, request_id.as_deref()) {
                RunStart::Started(run_id) => {
                    gateway.metrics.run_started();
                    tracing::debug!(run = %run_id, agent, "run started");
                    None
                }
                RunStart::Duplicate(run_id) => Some(Refusal {
                    body: Body::Error {
                        code: ErrorCode::DuplicateRequest,
                        message: format!(
                            "request_id `{}` already started {run_id} in this session; nothing new was started \
                             (its events carry this request_id)",
                            request_id.as_deref().unwrap_or_default()
                        ),
                        run_id: Some(run_id),
                    },
                    request_id,
                }),
                RunStart::Refused(err) => Some(refuse_run(err, request_id)),
            }
        }
        ClientMessage::Cancel { run_id, request_id } => {
            let Ok(run) = run_id.parse::<RunId>() else {
                let message = format!("`{run_id}` is not a run id; run ids look like `run-42`");
                return Some(refuse(ErrorCode::UnknownRun, message, request_id));
            };
            match live.core.cancel(run) {
                Ok(()) => None,
                Err(CancelError::UnknownRun { run, .. }) => Some(Refusal {
                    request_id,
                    body: Body::Error {
                        code: ErrorCode::UnknownRun,
                        message: format!("{run} is not in progress in this session"),
                        run_id: Some(run),
                    },
                }),
            }
        }
        // Handled by the receive loop, which ends the connection.
        ClientMessage::Close => None,
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>, request_id: Option<String>) -> Refusal {
    Refusal { request_id, body: Body::Error { code, message: message.into(), run_id: None } }
}

fn refuse_run(err: RunError, request_id: Option<String>) -> Refusal {
    match err {
        RunError::UnknownAgent { .. } => refuse(ErrorCode::UnknownAgent, err.to_string(), request_id),
        RunError::TooManyRuns { limit, .. } => refuse(
            ErrorCode::TooManyRuns,
            format!("this session already has {limit} runs in progress; wait for one to complete or cancel one"),
            request_id,
        ),
        // The session is closed, or its stream is gone because its pump ended: the session is going away.
        RunError::SessionClosed(_) | RunError::StreamDropped(_) => {
            refuse(ErrorCode::ShuttingDown, "the session is closing; no new runs", request_id)
        }
        // The receive task runs on the gateway's runtime, so this is a bug of ours, not the client's.
        RunError::NoRuntime => {
            tracing::warn!(%err, "cannot start a run");
            refuse(ErrorCode::Internal, format!("cannot start the run: {err}"), request_id)
        }
    }
}

/// Where a connection's client starts reading the session.
struct Cursor {
    /// The seq of the last message the client has.
    after: u64,
    resumed: bool,
}

/// Why the send task stopped writing.
enum Cut {
    /// A write did not complete within the write timeout.
    Deadline,
    /// The connection broke.
    Broken,
}

/// Writes with the write deadline: a client that accepts nothing for that long is cut off.
async fn write<F, E>(write: F, timeout: Duration) -> Result<(), Cut>
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            tracing::debug!(%err, "websocket write failed");
            Err(Cut::Broken)
        }
        Err(_) => {
            tracing::debug!(?timeout, "the client accepted no frame within the write timeout");
            Err(Cut::Deadline)
        }
    }
}

async fn send_loop(
    mut sink: SplitSink<WebSocket, Message>,
    gateway: Gateway,
    held: Held,
    start: Cursor,
    stop: oneshot::Receiver<CloseFrame>,
    liveness: Arc<Liveness>,
) {
    let write_timeout = gateway.limits.write_timeout;
    let result = send_messages(&mut sink, &gateway, &held, start, stop, &liveness).await;
    let close = match result {
        Ok(close) => close,
        Err(Cut::Deadline) => {
            gateway.metrics.disconnected(Disconnect::WriteTimeout);
            return;
        }
        Err(Cut::Broken) => return,
    };
    if close.code == CLOSE_TAKEN_OVER {
        gateway.metrics.disconnected(Disconnect::TakenOver);
    }
    if let Err(Cut::Deadline) = write(sink.send(Message::Close(Some(close))), write_timeout).await {
        gateway.metrics.disconnected(Disconnect::WriteTimeout);
    }
}

/// Writes the session frame, then every message after the client's cursor, until the session ends or the
/// connection is told to stop; returns the close frame to send.
async fn send_messages(
    sink: &mut SplitSink<WebSocket, Message>,
    gateway: &Gateway,
    held: &Held,
    start: Cursor,
    mut stop: oneshot::Receiver<CloseFrame>,
    liveness: &Liveness,
) -> Result<CloseFrame, Cut> {
    let timeout = gateway.limits.write_timeout;
    let Cursor { after, resumed } = start;
    let last_seq = match held {
        Held::Local { attached, .. } => attached.last_seq,
        Held::Remote(feed) => feed.last_seq,
    };
    let frame = session_frame(&held.key().to_string(), resumed, last_seq);
    write(sink.send(Message::Text(frame.into())), timeout).await?;
    // Invariant: the client has been sent every message of the session up to `cursor`, in order, once each on this
    // connection.
    let mut cursor = after;
    // Made once, not per batch (each registers with its token or `Notify` when first polled). A remote session
    // ends with the end marker of its log instead.
    let never = CancellationToken::new();
    let finished_token = match held {
        Held::Local { live, .. } => &live.finished,
        Held::Remote(_) => &never,
    };
    let mut finished = std::pin::pin!(finished_token.cancelled());
    let mut ping = std::pin::pin!(liveness.ping.notified());
    loop {
        if let Held::Local { live, .. } = held
            && live.finished.is_cancelled()
            && cursor >= live.last_seq()
        {
            // The session was closed (a shutdown) and its last message is out.
            return Ok(CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() });
        }
        let next = async {
            match held {
                Held::Local { live, attached } => {
                    gateway.sessions.log.replay_after(live.key, attached, cursor, BATCH).await.map_err(
                        |err| match err {
                            ReplayError::TakenOver => FeedEnd::TakenOver,
                            _ => FeedEnd::Ended,
                        },
                    )
                }
                Held::Remote(feed) => feed.read_after(cursor, REMOTE_BATCH).await,
            }
        };
        let batch = tokio::select! {
            biased;
            frame = &mut stop => match frame {
                Ok(frame) => return Ok(frame),
                Err(_) => return Err(Cut::Broken),
            },
            () = ping.as_mut() => {
                ping.set(liveness.ping.notified());
                write(sink.send(Message::Ping(Default::default())), timeout).await?;
                continue;
            }
            batch = next => batch,
            // Once cancelled it stays ready: the check above then ends the loop when the log has nothing more.
            () = finished.as_mut() => continue,
        };
        let messages = match batch {
            Ok(messages) => messages,
            Err(FeedEnd::TakenOver) => {
                tracing::debug!("session resumed elsewhere");
                return Ok(CloseFrame { code: CLOSE_TAKEN_OVER, reason: "session resumed elsewhere".into() });
            }
            Err(FeedEnd::Gap) => {
                tracing::debug!("the shared log lacks messages (not mirrored while Redis was down)");
                return Ok(CloseFrame { code: close_code::AWAY, reason: "session log incomplete".into() });
            }
            Err(FeedEnd::Ended) => {
                tracing::debug!("session ended");
                return Ok(CloseFrame { code: close_code::AWAY, reason: "session closed".into() });
            }
        };
        liveness.writing.store(true, Ordering::Relaxed);
        for message in messages {
            write(sink.feed(Message::Text(message.text)), timeout).await?;
            liveness.writes.fetch_add(1, Ordering::Relaxed);
            cursor = message.seq;
        }
        write(sink.flush(), timeout).await?;
        liveness.writing.store(false, Ordering::Relaxed);
        if let Held::Remote(feed) = held {
            feed.delivered(cursor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_the_clock_cannot_hold_never_comes() {
        assert_eq!(until(u64::MAX), Duration::MAX);
        assert_eq!(until(0), Duration::ZERO);
        let in_a_minute = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |now| now.as_secs()) + 60;
        assert!((Duration::from_secs(50)..=Duration::from_secs(60)).contains(&until(in_a_minute)));
    }
}
