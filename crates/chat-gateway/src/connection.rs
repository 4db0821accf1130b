//! One WebSocket connection: one registry session, a receive task and a send task.
//!
//! The receive task parses client messages and starts or cancels runs; refusals go to the send task as `error`
//! messages. The send task is the only writer: it merges the session's events with those errors, numbers every
//! message with the connection's `seq`, and writes them out. When either task ends, the other is aborted and the
//! session is closed, which cancels the connection's runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use core_registry::{CancelError, EventStream, RunError, RunId, Session};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument as _;

use crate::protocol::{Body, ClientMessage, ErrorCode, MAX_FRAME_BYTES, ProtocolError, ServerMessage};
use crate::server::Gateway;

/// How many refusals may wait for the send task before the receive task stops reading (backpressure on a client
/// that floods bad messages without reading the answers).
const ERROR_BUFFER: usize = 16;

/// The most messages written before one flush.
const BATCH: usize = 64;

/// How long a draining connection may take to write its last events and close frame.
const FINAL_WRITE_GRACE: Duration = Duration::from_secs(5);

/// How long to wait for the client's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the connection's two tasks share.
///
/// Each run is started with its request id as its tag (`Session::run_tagged`), so every event names its request
/// itself: no map from run to request id, and no lock between starting a run and sending its events.
struct Shared {
    session: Session,
    // Invariant: at least the number of runs started on this connection whose terminal event has not been sent yet.
    // Incremented before a run is started (and decremented again if it was refused), so that the send task, which
    // decrements on each terminal event, never sees a terminal event before the increment.
    runs_in_flight: AtomicUsize,
    // Notified when `runs_in_flight` drops to zero.
    runs_idle: Notify,
}

impl Shared {
    /// Counts a run about to be started.
    fn run_starting(&self) {
        self.runs_in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Uncounts a run that was refused or has had its terminal event sent.
    fn run_done(&self) {
        if self.runs_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.runs_idle.notify_waiters();
        }
    }

    /// Waits until no run of this connection is in progress.
    async fn runs_done(&self) {
        loop {
            let notified = self.runs_idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.runs_in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// An `error` message on its way to the send task.
#[derive(Debug)]
struct Refusal {
    request_id: Option<String>,
    body: Body,
}

impl From<ProtocolError> for Refusal {
    fn from(err: ProtocolError) -> Self {
        Refusal { request_id: err.request_id, body: Body::Error { code: err.code, message: err.message, run_id: None } }
    }
}

/// Serves one upgraded connection for `user` until the client leaves or the gateway shuts down.
pub(crate) async fn run(gateway: Gateway, socket: WebSocket, user: String) {
    gateway.metrics.connection_opened();
    let (session, events) = match gateway.registry.open_session(&user) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::warn!(%err, user, "cannot open a session for a new connection");
            let mut socket = socket;
            let frame = CloseFrame { code: close_code::ERROR, reason: "cannot open a session".into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
            gateway.metrics.connection_closed();
            return;
        }
    };
    let span = tracing::info_span!("connection", user, session = %session.id());
    serve(&gateway, socket, session, events).instrument(span).await;
    gateway.metrics.connection_closed();
}

async fn serve(gateway: &Gateway, socket: WebSocket, session: Session, events: EventStream) {
    tracing::debug!("connected");
    let shared = Arc::new(Shared { session, runs_in_flight: AtomicUsize::new(0), runs_idle: Notify::new() });
    let (sink, stream) = socket.split();
    let (refusals, refusals_rx) = mpsc::channel(ERROR_BUFFER);
    let mut send_task = tokio::spawn(
        send_loop(sink, events, refusals_rx, Arc::clone(&shared), gateway.clone()).instrument(tracing::Span::current()),
    );
    let mut receive_task = tokio::spawn(
        receive_loop(stream, refusals, Arc::clone(&shared), gateway.clone()).instrument(tracing::Span::current()),
    );

    // A JoinHandle must not be polled again once it has completed: track which task has ended.
    let (mut sent_all, mut client_left) = (false, false);
    tokio::select! {
        _ = &mut send_task => sent_all = true,
        _ = &mut receive_task => client_left = true,
        () = gateway.shutdown.cancelled() => {
            // Drain: the receive task refuses new runs from now on; runs in progress may finish, up to the timeout.
            tokio::select! {
                _ = tokio::time::timeout(gateway.drain_timeout, shared.runs_done()) => {}
                _ = &mut send_task => sent_all = true,
                _ = &mut receive_task => client_left = true,
            }
            if !sent_all && !client_left {
                // Cancel what still runs: the stream ends after their terminal events, then the send task writes the
                // close frame. A client that stops reading is cut off after the grace period.
                shared.session.close();
                if tokio::time::timeout(FINAL_WRITE_GRACE, &mut send_task).await.is_ok() {
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut receive_task).await;
                }
            }
        }
    }
    tracing::debug!(sent_all, client_left, "connection ending");
    send_task.abort();
    receive_task.abort();
    // Cancels the runs still in progress (if the client left) and frees the session once they are done.
    shared.session.close();
    tracing::debug!("disconnected");
}

async fn receive_loop(
    mut stream: SplitStream<WebSocket>,
    refusals: mpsc::Sender<Refusal>,
    shared: Arc<Shared>,
    gateway: Gateway,
) {
    while let Some(message) = stream.next().await {
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                // The client broke the protocol or the connection dropped: not our error.
                tracing::debug!(%err, "websocket read ended");
                return;
            }
        };
        let refusal = match message {
            Message::Text(text) if text.len() > MAX_FRAME_BYTES => Some(Refusal::from(ProtocolError::new(
                ErrorCode::FrameTooLarge,
                format!("the message has {} bytes; the limit is {MAX_FRAME_BYTES}", text.len()),
            ))),
            Message::Text(text) => handle_text(text.as_str(), &shared, &gateway).await,
            Message::Binary(_) => Some(Refusal::from(ProtocolError::new(
                ErrorCode::BinaryFrame,
                "binary frames are not supported; send JSON messages as text frames",
            ))),
            // Pings are answered by the WebSocket layer. After a close frame, the next read sends the reply and
            // ends the stream.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => None,
        };
        if let Some(refusal) = refusal {
            if let Body::Error { code, .. } = &refusal.body {
                tracing::debug!(code = code.as_str(), "refused a client message");
            }
            if refusals.send(refusal).await.is_err() {
                return;
            }
        }
    }
}

async fn handle_text(text: &str, shared: &Shared, gateway: &Gateway) -> Option<Refusal> {
    let message = match ClientMessage::parse(text) {
        Ok(message) => message,
        Err(err) => return Some(err.into()),
    };
    match message {
        ClientMessage::Run { agent, input, request_id } => {
            if gateway.shutdown.is_cancelled() {
                return Some(refuse(ErrorCode::ShuttingDown, "the server is shutting down; no new runs", request_id));
            }
            shared.run_starting();
            // The request id travels as the run's tag on every event, so the send task needs nothing from here.
            let started = match request_id.as_deref() {
                Some(tag) => shared.session.run_tagged(&agent, input, tag),
                None => shared.session.run(&agent, input),
            };
            match started {
                Ok(run_id) => {
                    gateway.metrics.run_started();
                    tracing::debug!(run = %run_id, agent, "run started");
                    None
                }
                Err(err) => {
                    shared.run_done();
                    Some(refuse_run(err, request_id))
                }
            }
        }
        ClientMessage::Cancel { run_id, request_id } => {
            let Ok(run) = run_id.parse::<RunId>() else {
                let message = format!("`{run_id}` is not a run id; run ids look like `run-42`");
                return Some(refuse(ErrorCode::UnknownRun, message, request_id));
            };
            match shared.session.cancel(run) {
                Ok(()) => None,
                Err(CancelError::UnknownRun { run, .. }) => Some(Refusal {
                    request_id,
                    body: Body::Error {
                        code: ErrorCode::UnknownRun,
                        message: format!("{run} is not in progress on this connection"),
                        run_id: Some(run),
                    },
                }),
            }
        }
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
            format!("this connection already has {limit} runs in progress; wait for one to complete or cancel one"),
            request_id,
        ),
        // The session is closed, or its stream is gone because the send task ended: the connection is going away.
        RunError::SessionClosed(_) | RunError::StreamDropped(_) => {
            refuse(ErrorCode::ShuttingDown, "the connection is closing; no new runs", request_id)
        }
        // The receive task runs on the gateway's runtime, so this is a bug of ours, not the client's.
        RunError::NoRuntime => {
            tracing::warn!(%err, "cannot start a run");
            refuse(ErrorCode::Internal, format!("cannot start the run: {err}"), request_id)
        }
    }
}

/// One message the send task writes.
enum Outgoing {
    Event(core_registry::Event),
    Refusal(Refusal),
}

async fn send_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut events: EventStream,
    mut refusals: mpsc::Receiver<Refusal>,
    shared: Arc<Shared>,
    gateway: Gateway,
) {
    // Invariant: the seq of the last message written; every message (event or error) gets the next one, so the
    // client sees 1, 2, 3, ... with no gaps.
    let mut seq = 0u64;
    loop {
        let first = tokio::select! {
            biased;
            Some(refusal) = refusals.recv() => Outgoing::Refusal(refusal),
            event = events.recv() => match event {
                Some(event) => Outgoing::Event(event),
                // The session was closed and every run has delivered its terminal event.
                None => break,
            },
        };
        // Write what is ready now, then flush once.
        let mut next = Some(first);
        let mut written = 0;
        while let Some(outgoing) = next.take() {
            seq += 1;
            let is_event = matches!(outgoing, Outgoing::Event(_));
            let text = match outgoing {
                Outgoing::Event(event) => {
                    if event.kind().is_terminal() {
                        shared.run_done();
                    }
                    let body = Body::Event(event);
                    ServerMessage { seq, request_id: body.run_tag(), body: &body }.to_json()
                }
                Outgoing::Refusal(refusal) => {
                    ServerMessage { seq, request_id: refusal.request_id.as_deref(), body: &refusal.body }.to_json()
                }
            };
            if let Err(err) = sink.feed(Message::Text(text.into())).await {
                tracing::debug!(%err, "websocket write failed");
                return;
            }
            // Counted as each message is handed to the socket, so a later failed write loses no count.
            gateway.metrics.sent(u64::from(is_event), u64::from(!is_event));
            written += 1;
            if written < BATCH {
                next = refusals
                    .try_recv()
                    .ok()
                    .map(Outgoing::Refusal)
                    .or_else(|| events.try_recv().ok().map(Outgoing::Event));
            }
        }
        if let Err(err) = sink.flush().await {
            tracing::debug!(%err, "websocket write failed");
            return;
        }
    }
    let frame = CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() };
    if let Err(err) = sink.send(Message::Close(Some(frame))).await {
        tracing::debug!(%err, "could not send the close frame");
    }
}
