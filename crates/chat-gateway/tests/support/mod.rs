//! A real gateway on a loopback port and a real WebSocket client, shared by the gateway tests.
#![allow(dead_code)] // Each test file uses a different part of this module.

use std::net::SocketAddr;
use std::time::Duration;

use chat_gateway::auth::{self, Secret};
use chat_gateway::{Gateway, builtin_registry};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub(crate) const SECRET: &str = "gateway-test-secret-0123456789abcdef";

/// How long a test waits for something that should happen at once before failing (never a sleep).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    /// Where `GET /metrics` is served (a listener of its own, as the binary's `--metrics-addr`).
    pub(crate) metrics_addr: SocketAddr,
    pub(crate) gateway: Gateway,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// A server with the built-in agents and a limit of 4 runs per connection.
    pub(crate) async fn start() -> TestServer {
        TestServer::start_with(4, Duration::from_secs(5)).await
    }

    pub(crate) async fn start_with(max_runs: usize, drain_timeout: Duration) -> TestServer {
        let registry = builtin_registry(max_runs).unwrap();
        TestServer::start_gateway(Gateway::new(registry, Secret::new(SECRET).unwrap()).drain_timeout(drain_timeout))
            .await
    }

    /// A server over `gateway`, which must use [`SECRET`].
    pub(crate) async fn start_gateway(gateway: Gateway) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics_listener.local_addr().unwrap();
        tokio::spawn(std::future::IntoFuture::into_future(axum::serve(metrics_listener, gateway.metrics_router())));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(gateway.clone().serve(listener, shutdown.clone().cancelled_owned()));
        TestServer { addr, metrics_addr, gateway, shutdown, server }
    }

    pub(crate) fn token(&self, user: &str) -> String {
        token_for(user, Duration::from_secs(600))
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Connects as `user` with an `Authorization: Bearer` header, to a new session.
    pub(crate) async fn connect(&self, user: &str) -> Client {
        self.connect_with(&self.token(user), "").await.unwrap_or_else(|(status, body)| panic!("{status}: {body}"))
    }

    /// Connects with `token` and `query` (`?session=...&after=...` or empty); see [`connect_to`].
    pub(crate) async fn connect_with(&self, token: &str, query: &str) -> Result<Client, (u16, String)> {
        connect_to(self.addr, token, query).await
    }

    /// Resumes `session` after `after` as `user`.
    pub(crate) async fn resume(&self, user: &str, session: &str, after: u64) -> Result<Client, (u16, String)> {
        self.connect_with(&self.token(user), &format!("?session={session}&after={after}")).await
    }

    /// Signals shutdown and waits for the server to finish draining.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub(crate) async fn join(self) -> std::io::Result<()> {
        tokio::time::timeout(PATIENCE, self.server).await.expect("server did not shut down").unwrap()
    }

    /// Waits until no session, run or connection is left (polling the counters every few milliseconds).
    pub(crate) async fn wait_idle(&self) {
        let idle = async {
            loop {
                let metrics = self.gateway.metrics();
                if (metrics.live_sessions, metrics.live_runs, metrics.connections_open) == (0, 0, 0) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(PATIENCE, idle).await.is_err() {
            panic!("the gateway did not become idle: {:?}", self.gateway.metrics());
        }
    }
}

/// Connects to the gateway at `addr` (this process's [`TestServer`] or a `chat-gateway serve` process) with `token`
/// in an `Authorization: Bearer` header and `query` (`?session=...&after=...` or empty); reads the `session` frame
/// and checks it. A refused upgrade gives back its status and its content type and body.
pub(crate) async fn connect_to(addr: SocketAddr, token: &str, query: &str) -> Result<Client, (u16, String)> {
    let mut request = format!("ws://{addr}/v1/ws{query}").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let connect = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request));
    let (ws, response) = match connect.await.expect("no answer to the upgrade request") {
        Ok(pair) => pair,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            return Err((response.status().as_u16(), format!("{} {body}", content_type.unwrap_or_default())));
        }
        Err(err) => panic!("cannot connect: {err}"),
    };
    assert_eq!(response.status(), 101);
    let mut client = Client { ws, last_seq: 0, session: Value::Null };
    let frame = client.recv_raw().await;
    assert_eq!(frame["type"], "session", "the first frame must be the session frame: {frame}");
    assert!(frame.get("seq").is_none(), "the session frame has no seq: {frame}");
    client.last_seq = query.split("after=").nth(1).map_or(0, |after| after.parse().unwrap());
    client.session = frame;
    Ok(client)
}

/// Reads a pipe (a child process's stdout or stderr) line by line on a thread, so that a test can wait for a line
/// with a timeout.
pub(crate) fn lines(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// A token for `user`, signed with [`SECRET`], valid for `ttl` from now.
pub(crate) fn token_for(user: &str, ttl: Duration) -> String {
    auth::mint_token(&Secret::new(SECRET).unwrap(), user, ttl, auth::now_unix())
}

/// `GET path` over plain HTTP/1.1; returns the status and the body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response)).await.unwrap().unwrap();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

pub(crate) struct Client {
    pub(crate) ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    // Invariant: the seq of the last message received; the next must be last_seq + 1.
    pub(crate) last_seq: u64,
    /// The `session` frame the connection began with.
    pub(crate) session: Value,
}

impl Client {
    pub(crate) async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub(crate) async fn run(&mut self, agent: &str, input: &str, request_id: &str) {
        self.send(json!({"type": "run", "agent": agent, "input": input, "request_id": request_id})).await;
    }

    /// The session id of the `session` frame.
    pub(crate) fn session_id(&self) -> String {
        self.session["session_id"].as_str().unwrap().to_owned()
    }

    /// The next text message, unchecked.
    pub(crate) async fn recv_raw(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("no message from the server");
            match message.expect("the connection ended").expect("websocket error") {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next server message, checking that its seq follows the last one.
    pub(crate) async fn recv(&mut self) -> Value {
        let value = self.recv_raw().await;
        let seq = value["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {value}"));
        assert_eq!(seq, self.last_seq + 1, "seq gap before {value}");
        self.last_seq = seq;
        value
    }

    /// Messages up to and including the first of type `kind` (for run `run_id`, if given).
    pub(crate) async fn recv_until(&mut self, kind: &str, run_id: Option<&str>) -> Vec<Value> {
        let mut messages = Vec::new();
        loop {
            let message = self.recv().await;
            let done = message["type"] == kind && run_id.is_none_or(|run_id| message["run_id"] == run_id);
            messages.push(message);
            if done {
                return messages;
            }
        }
    }

    /// The next message, which must be an error; returns its code.
    pub(crate) async fn recv_error(&mut self) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], "error", "expected an error, got {message}");
        message
    }

    /// Runs `agent` and returns every message of the run, from `agent_started` to `agent_completed`.
    pub(crate) async fn run_to_end(&mut self, agent: &str, input: &str, request_id: &str) -> Vec<Value> {
        self.run(agent, input, request_id).await;
        let started = self.recv().await;
        assert_eq!((&started["type"], &started["request_id"]), (&json!("agent_started"), &json!(request_id)));
        let run_id = started["run_id"].as_str().unwrap().to_owned();
        let mut messages = vec![started];
        messages.extend(self.recv_until("agent_completed", Some(&run_id)).await);
        assert!(messages.iter().all(|message| message["run_id"] == run_id.as_str()), "{messages:#?}");
        messages
    }

    /// The next server message (seq checked), or the code of the close frame that ends the connection.
    pub(crate) async fn next_or_close(&mut self) -> Result<Value, u16> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("no message and no close");
            match message.expect("the connection ended without a close frame").expect("websocket error") {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap();
                    let seq = value["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {value}"));
                    assert_eq!(seq, self.last_seq + 1, "seq gap before {value}");
                    self.last_seq = seq;
                    return Ok(value);
                }
                Message::Close(frame) => return Err(frame.map_or(0, |frame| frame.code.into())),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// Waits for the server's close frame and returns its code.
    pub(crate) async fn recv_close(&mut self) -> u16 {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("no close frame");
            match message {
                Some(Ok(Message::Close(frame))) => return frame.map_or(0, |frame| frame.code.into()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// The `text` of each `agent_thinking`, the terminal outcome, or the type, of `messages`.
pub(crate) fn steps(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|message| match message["type"].as_str().unwrap() {
            "agent_thinking" => message["text"].as_str().unwrap().to_owned(),
            "agent_completed" => format!("{}: {}", message["outcome"], message["output"]),
            other => other.to_owned(),
        })
        .collect()
}
