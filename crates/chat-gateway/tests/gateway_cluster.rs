//! Several gateways sharing one Redis (`serve --event-log redis://...`): a session opened on one node resumes on
//! any other, cancel and `duplicate_request` reach across nodes, a node killed with SIGKILL has each of its open
//! runs ended exactly once (`failed`, `gateway node lost`) by a survivor, the resume window holds on every node,
//! takeover works across nodes, `/v1/ws/check` answers on any node, a Redis restart is survived, and a Redis that
//! cannot be reached at start is one line and exit status 2.
//!
//! Everything is a real process: each test starts its own `redis-server` (no persistence, a free loopback port, a
//! directory of its own) and its own `chat-gateway serve` processes, and kills them all when it ends, passed or
//! not. `redis-server` must be on `PATH`: `cargo xtask test` installs it (Debian's `redis-server`); without it these
//! tests fail and say so, they never pass silently. Every wait has a deadline ([`PATIENCE`] unless said), and what
//! can be awaited (a message, a close frame, a log line) is awaited; a state with no event of its own (a metric, a
//! resume window running out) is polled every few milliseconds under a deadline.

#![cfg(unix)]

mod support;

use std::io::{BufRead as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, PATIENCE, SECRET, steps, token_for};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
const REDIS_SERVER: &str = "redis-server";
/// The lease of every node of these tests (`--node-lease`, also the default): renewed every third of it, checked by
/// the peers about every second.
const LEASE: Duration = Duration::from_secs(3);
/// How often the peers check the leases (the interface's "about every second").
const PEER_CHECK: Duration = Duration::from_secs(1);
/// How often a polled condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------------------------
// Redis

/// A `redis-server` of this test alone: loopback, a free port, no persistence, its directory a fresh temporary one.
/// Killed (SIGKILL) and its directory removed on drop.
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Its stdout, line by line (it logs there): drained by a thread, kept so that nothing blocks the server.
    _log: Option<Receiver<String>>,
}

impl Redis {
    /// Starts one on a free port and waits until it accepts connections.
    fn start() -> Redis {
        // Made first, so that its drop removes the directory whatever happens next.
        let mut redis = Redis { port: 0, dir: scratch_dir("redis"), child: None, _log: None };
        // The port is free when picked and taken by redis-server a moment later; another process may take it in
        // between, so a start that fails to bind is tried again on another port.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_redis(port, &redis.dir) {
                Ok((child, log)) => {
                    (redis.port, redis.child, redis._log) = (port, Some(child), Some(log));
                    return redis;
                }
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL, and waits until the process is gone (its port then refuses connections).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self._log = None;
    }

    /// Starts it again on the same port, empty (nothing persisted), and waits until it accepts connections.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after kill");
        let (child, log) = spawn_redis(self.port, &self.dir)
            .unwrap_or_else(|why| panic!("redis-server did not restart on port {}: {why}", self.port));
        self.child = Some(child);
        self._log = Some(log);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-server` on `port`, once its log says it accepts connections; else why not, with its log.
fn spawn_redis(port: u16, dir: &std::path::Path) -> Result<(Child, Receiver<String>), String> {
    let spawned = Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--loglevel", "notice", "--logfile", ""])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{REDIS_SERVER}` is not on PATH: these tests need a real Redis; run `cargo xtask test`, which installs \
             it (Debian's redis-server: `apt-get install -y redis-server`, as root)"
        ),
        Err(err) => panic!("cannot run {REDIS_SERVER}: {err}"),
    };
    let log = support::lines(child.stdout.take().unwrap());
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("Ready to accept connections") => return Ok((child, log)),
            Ok(line) => seen.push(line),
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_or_else(|err| err.to_string(), |status| status.to_string());
                return Err(format!("exited ({status}) before it was ready:\n{}", seen.join("\n")));
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not ready within {PATIENCE:?}:\n{}", seen.join("\n")));
            }
        }
    }
}

/// A loopback port nothing listens on (the kernel's pick, released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh empty directory under the system's temporary directory, unique to this process and call.
fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("gateway-cluster-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Redis's answer to an inline `PING` on a new connection: `+PONG` when it serves.
fn ping(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"PING\r\n")?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

// ---------------------------------------------------------------------------------------------------------------
// Gateway processes

/// A `chat-gateway serve` process on free loopback ports, with [`SECRET`]. Killed (SIGKILL) on drop.
struct Node {
    id: String,
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    child: Child,
    /// Its stderr (the log), line by line, past the `listening on` line.
    log: Receiver<String>,
}

impl Node {
    /// A node of the cluster on `redis`, with node id `id` and the [`LEASE`], plus `extra` flags.
    fn cluster(id: &str, redis: &Redis, extra: &[&str]) -> Node {
        let (url, lease) = (redis.url(), format!("{}s", LEASE.as_secs()));
        let mut args = vec!["--event-log", &url, "--node-id", id, "--node-lease", &lease];
        args.extend_from_slice(extra);
        Node::start(id, &args)
    }

    /// `serve --addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 ARGS...`, once it logs both addresses.
    fn start(id: &str, args: &[&str]) -> Node {
        let mut child = serve_command(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = support::lines(child.stderr.take().unwrap());
        let deadline = Instant::now() + PATIENCE;
        let (mut addr, mut metrics_addr, mut seen) = (None, None, Vec::new());
        while addr.is_none() {
            match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    // The metrics listener is bound and logged first: `metrics on http://ADDR/metrics`.
                    if let Some((_, rest)) = line.split_once("metrics on http://") {
                        metrics_addr = rest.trim().strip_suffix("/metrics").map(|addr| addr.parse().unwrap());
                    }
                    if let Some((_, rest)) = line.split_once("listening on ") {
                        addr = Some(rest.trim().parse::<SocketAddr>().unwrap());
                    }
                    seen.push(line);
                }
                Err(why) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    panic!(
                        "node {id}: `chat-gateway serve {}` did not log `listening on` ({why:?}, {status}); its \
                         stderr:\n{}",
                        args.join(" "),
                        seen.join("\n")
                    );
                }
            }
        }
        let metrics_addr = metrics_addr.unwrap_or_else(|| panic!("node {id}: no `metrics on` line in {seen:#?}"));
        Node { id: id.to_owned(), addr: addr.unwrap(), metrics_addr, child, log }
    }

    /// Connects as `user` to a new session.
    async fn connect(&self, user: &str) -> Client {
        support::connect_to(self.addr, &token_for(user, Duration::from_secs(600)), "")
            .await
            .unwrap_or_else(|(status, body)| panic!("node {}: {status}: {body}", self.id))
    }

    /// Resumes `session` after `after` as `user`; a refusal gives back its status, content type and body.
    async fn resume(&self, user: &str, session: &str, after: u64) -> Result<Client, (u16, String)> {
        let token = token_for(user, Duration::from_secs(600));
        support::connect_to(self.addr, &token, &format!("?session={session}&after={after}")).await
    }

    /// `GET /v1/ws/check?session=..&after=..` as `user`: what a resume would answer, without resuming (a detached
    /// session's window goes on). Its status and body.
    async fn check(&self, user: &str, session: &str, after: u64) -> (u16, String) {
        let token = token_for(user, Duration::from_secs(600));
        http_get(self.addr, &format!("/v1/ws/check?session={session}&after={after}"), Some(&token)).await
    }

    /// The text of `GET /metrics`.
    async fn metrics(&self) -> String {
        let (status, body) = http_get(self.metrics_addr, "/metrics", None).await;
        assert_eq!(status, 200, "node {}: GET /metrics: {body}", self.id);
        body
    }

    /// The value of the unlabelled metric `name` (`chat_gateway_...`), if the node reports it.
    async fn metric(&self, name: &str) -> Option<f64> {
        metric(&self.metrics().await, name)
    }

    /// Polls `name` until `wanted` holds for its value (absent counts as no value), under [`PATIENCE`].
    async fn wait_metric(&self, name: &str, what: &str, wanted: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.metrics().await;
            if let Some(value) = metric(&text, name).filter(|value| wanted(*value)) {
                return value;
            }
            assert!(Instant::now() < deadline, "node {}: {name} is not {what} after {PATIENCE:?}:\n{text}", self.id);
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the node has `n` connections open (a dropped client's end has been seen, its session detached).
    async fn wait_connections(&self, n: u32) {
        self.wait_metric("chat_gateway_connections_open", &format!("{n}"), |open| open == f64::from(n)).await;
    }

    /// SIGKILL: the node dies at once, without a word to Redis or its clients.
    fn kill9(&mut self) -> ExitStatus {
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }

    /// What the node has logged since it started listening (for failure messages).
    fn log_so_far(&self) -> String {
        self.log.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chat-gateway serve --addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 ARGS...` with [`SECRET`].
fn serve_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .args(args)
        .env("CHAT_GATEWAY_SECRET", SECRET)
        .env_remove("CHAT_GATEWAY_LOG")
        .stdin(Stdio::null());
    command
}

/// The value of the unlabelled metric `name` in the Prometheus text `text`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// `GET path` over HTTP/1.1, with `Authorization: Bearer token` if given; its status and body.
async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(PATIENCE, exchange).await.unwrap_or_else(|_| panic!("GET {path}: no answer"));
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------------------------------
// Messages

/// What a `slow` run of `n` steps sends, as [`steps`] shows it.
fn slow_run(n: u32) -> Vec<String> {
    std::iter::once("agent_started".to_owned())
        .chain((1..=n).map(|step| format!("step {step}/{n}")))
        .chain(std::iter::once(format!(r#""succeeded": "done after {n} steps""#)))
        .collect()
}

/// Starts a `slow` run that would take 1000 s (it is cancelled or outlived) and returns its `run_id`, once its
/// `agent_started` and first step have arrived.
async fn start_endless_run(client: &mut Client, request_id: &str) -> String {
    client.run("slow", "100000", request_id).await;
    let started = client.recv().await;
    assert_eq!((&started["type"], &started["request_id"]), (&json!("agent_started"), &json!(request_id)));
    assert_eq!(client.recv().await["text"], "step 1/100000");
    started["run_id"].as_str().unwrap().to_owned()
}

/// Opens a session of `alice` on `owner`, starts an endless run in it ([`start_endless_run`], request id `r1`),
/// drops the connection and resumes the session on `other`: the client there, the session id and the run id.
async fn endless_run_resumed_elsewhere(owner: &Node, other: &Node) -> (Client, String, String) {
    let mut client = owner.connect("alice").await;
    let run_id = start_endless_run(&mut client, "r1").await;
    let (session, after) = (client.session_id(), client.last_seq);
    drop(client);
    owner.wait_connections(0).await;
    let client = other.resume("alice", &session, after).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    (client, session, run_id)
}

/// Reads `client` until its connection ends, sending each message with the instant it came, then how it ended:
/// a close code, an error, or a gap in the seqs (the message after the gap is not sent).
async fn read_all(mut client: Client, sender: tokio::sync::mpsc::UnboundedSender<(Instant, Result<Value, String>)>) {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let next = match client.ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                match message["seq"].as_u64() {
                    Some(seq) if seq == client.last_seq + 1 => {
                        client.last_seq = seq;
                        Ok(message)
                    }
                    _ => Err(format!("after seq {}: {message}", client.last_seq)),
                }
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(frame))) => Err(format!("close {:?}", frame.map(|frame| u16::from(frame.code)))),
            Some(Ok(other)) => Err(format!("not a text message: {other:?}")),
            Some(Err(err)) => Err(format!("websocket error: {err}")),
            None => Err("ended without a close frame".to_owned()),
        };
        let end = next.is_err();
        if sender.send((Instant::now(), next)).is_err() || end {
            return;
        }
    }
}

/// The next message or close code within `wait`; `None` when nothing came.
async fn within(client: &mut Client, wait: Duration) -> Option<Result<Value, u16>> {
    tokio::time::timeout(wait, client.next_or_close()).await.ok()
}

// ---------------------------------------------------------------------------------------------------------------
// The harness itself: works without the cluster feature.

#[test]
fn the_harness_restarts_redis_on_its_port_and_runs_serve() {
    let mut redis = Redis::start();
    assert_eq!(ping(redis.addr()).unwrap(), "+PONG");
    let port = redis.port;
    redis.kill();
    let refused = TcpStream::connect_timeout(&redis.addr(), Duration::from_secs(2));
    assert!(refused.is_err(), "a killed redis-server still accepts connections");
    redis.restart();
    assert_eq!((redis.port, ping(redis.addr()).unwrap().as_str()), (port, "+PONG"));

    let mut node = Node::start("solo", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = node.connect("alice").await;
        let messages = client.run_to_end("echo", "hi", "r1").await;
        assert_eq!(messages.last().unwrap()["output"], "hi");
        assert_eq!(node.metric("chat_gateway_connections_open").await, Some(1.0));
    });
    let status = node.kill9();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
}

// ---------------------------------------------------------------------------------------------------------------
// The cluster

#[tokio::test]
async fn a_run_on_one_node_resumes_on_another_with_every_message_once() {
    let redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &[]);
    let b = Node::cluster("bravo", &redis, &[]);
    let mut client = a.connect("alice").await;
    let session = client.session_id();
    // 300 steps of 10 ms: about 3 s, so the run is still going when the client is back, on the other node.
    client.run("slow", "300", "r1").await;
    let mut seen = client.recv_until("agent_thinking", None).await;
    seen.extend(client.recv_until("agent_thinking", None).await);
    let after = client.last_seq;
    drop(client);
    a.wait_connections(0).await;

    let mut client = b.resume("alice", &session, after).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    assert_eq!(client.session["resumed"], true, "{}", client.session);
    assert_eq!(client.session["session_id"], session.as_str());
    let last_seq = client.session["last_seq"].as_u64().unwrap();
    assert!(last_seq >= after, "{}", client.session);
    assert!(last_seq < 302, "the run ended before the resume, so nothing was live on B: {}", client.session);
    // `recv` checks that each seq is the last one plus one, from `after` on: gap-free across the two connections.
    seen.extend(client.recv_until("agent_completed", None).await);
    assert_eq!(steps(&seen), slow_run(300));
    assert!(seen.iter().all(|message| message["request_id"] == "r1"), "{seen:#?}");
    // Nothing after the terminal event; a run sent to B runs (on A, the owner) with the next seq.
    let next = client.run_to_end("echo", "after", "r2").await;
    assert_eq!((next[0]["seq"].as_u64(), &next[1]["output"]), (Some(303), &json!("after")));
}

#[tokio::test]
async fn a_cancel_sent_to_another_node_ends_the_run_on_its_owner() {
    let redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &[]);
    let b = Node::cluster("bravo", &redis, &[]);
    let (mut client, _, run_id) = endless_run_resumed_elsewhere(&a, &b).await;
    client.send(json!({"type": "cancel", "run_id": run_id, "request_id": "c1"})).await;
    let messages = client.recv_until("agent_completed", Some(&run_id)).await;
    assert_eq!(messages.last().unwrap()["outcome"], "cancelled", "{:#?}", messages.last());
    assert!(messages.iter().all(|message| message["type"] == "agent_thinking" || message == messages.last().unwrap()));
    // The run really stopped on its owner, and nothing of it follows its terminal event.
    a.wait_metric("chat_gateway_live_runs", "0", |runs| runs == 0.0).await;
    let terminal_seq = client.last_seq;
    let next = client.run_to_end("echo", "after", "r2").await;
    assert_eq!(next[0]["seq"].as_u64(), Some(terminal_seq + 1));
}

#[tokio::test]
async fn a_request_id_used_on_one_node_is_a_duplicate_request_on_another() {
    let redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &[]);
    let b = Node::cluster("bravo", &redis, &[]);
    let mut client = a.connect("alice").await;
    // One run that has ended, one still going.
    let done = client.run_to_end("echo", "one", "x1").await;
    let done_run = done[0]["run_id"].clone();
    let live_run = json!(start_endless_run(&mut client, "x2").await);
    let (session, after) = (client.session_id(), client.last_seq);
    drop(client);
    a.wait_connections(0).await;

    let mut client = b.resume("alice", &session, after).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    // Unsure whether its runs arrived, the client sends both again, on the other node.
    client.run("echo", "one", "x1").await;
    client.run("slow", "100000", "x2").await;
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let message = client.recv().await;
        match message["type"].as_str().unwrap() {
            "error" => errors.push(message),
            "agent_thinking" if message["run_id"] == live_run => {}
            _ => panic!("only the live run's steps and two errors may come, not {message}"),
        }
    }
    let answer = |error: &Value| (error["code"].clone(), error["request_id"].clone(), error["run_id"].clone());
    assert_eq!(answer(&errors[0]), (json!("duplicate_request"), json!("x1"), done_run));
    assert_eq!(answer(&errors[1]), (json!("duplicate_request"), json!("x2"), live_run));
    assert_eq!(a.metric("chat_gateway_live_runs").await, Some(1.0), "nothing new started on the owner");
    assert_eq!(b.metric("chat_gateway_live_runs").await, Some(0.0), "nothing started on the other node");
}

#[tokio::test]
async fn a_node_killed_mid_run_has_its_run_failed_exactly_once_by_a_survivor() {
    let redis = Redis::start();
    let mut a = Node::cluster("alpha", &redis, &[]);
    // Two survivors, both watching alpha's lease: exactly one of them may end its runs.
    let b = Node::cluster("bravo", &redis, &[]);
    let c = Node::cluster("charlie", &redis, &[]);
    let (mut client, session, run_id) = endless_run_resumed_elsewhere(&a, &b).await;
    // The run streams to bravo through Redis.
    for _ in 0..3 {
        assert_eq!(client.recv().await["type"], "agent_thinking");
    }

    let status = a.kill9();
    let killed = Instant::now();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    // Steps alpha sent before it died may still arrive; then the one terminal event, then the close.
    let terminal = loop {
        match client.next_or_close().await {
            Ok(message) if message["type"] == "agent_thinking" && message["run_id"] == run_id.as_str() => {}
            Ok(message) => break message,
            Err(code) => panic!("closed ({code}) without the run's terminal event; bravo's log:\n{}", b.log_so_far()),
        }
    };
    let elapsed = killed.elapsed();
    assert_eq!((&terminal["type"], &terminal["run_id"]), (&json!("agent_completed"), &json!(run_id)), "{terminal}");
    assert_eq!(terminal["outcome"], "failed", "{terminal}");
    assert_eq!(terminal["request_id"], "r1", "{terminal}");
    let error = terminal["error"].as_str().unwrap_or_else(|| panic!("no error in {terminal}"));
    assert!(error.contains("gateway node lost") && error.contains("alpha"), "{terminal}");
    // The lease was renewed at most a third of it before the kill, so it ran out at most LEASE after it; a peer
    // sees that within PEER_CHECK; appending and streaming the event back takes milliseconds. One more second of
    // slack absorbs a loaded 2-core machine (other tests run beside this one) without hiding a real miss: a node
    // that waited for a second lease period, or for the session's resume window, would take 6 s or more.
    let bound = LEASE + PEER_CHECK + Duration::from_secs(1);
    eprintln!("the node-loss terminal came {elapsed:?} after the kill (bound {bound:?})");
    assert!(elapsed <= bound, "the failed terminal came {elapsed:?} after the kill, over {bound:?}");
    match client.next_or_close().await {
        Err(code) => assert_eq!(code, 1001, "the close after a node loss"),
        Ok(message) => panic!("nothing may follow the node-loss terminal but the close, got {message}"),
    }

    // No second terminal from the other survivor: resuming from the start shows the whole log, if the session can
    // still be resumed; then nothing more comes within two peer checks.
    match c.resume("alice", &session, 0).await {
        Err((status, body)) => assert_eq!(status, 404, "{body}"),
        Ok(mut client) => {
            let mut terminals = 0;
            while let Some(next) = within(&mut client, 2 * PEER_CHECK).await {
                match next {
                    Ok(message) => terminals += usize::from(message["type"] == "agent_completed"),
                    Err(_) => break,
                }
            }
            assert_eq!(terminals, 1, "the run ended more than once");
        }
    }
}

#[tokio::test]
async fn draining_an_owner_ends_its_runs_for_a_client_on_another_node_and_frees_its_id() {
    let redis = Redis::start();
    let mut a = Node::cluster("alpha", &redis, &["--drain-timeout", "0s"]);
    let b = Node::cluster("bravo", &redis, &[]);
    let (mut client, session, run_id) = endless_run_resumed_elsewhere(&a, &b).await;
    assert_eq!(client.recv().await["type"], "agent_thinking");

    // SIGTERM: alpha drains. Its session is held from bravo: the run is cancelled (drain timeout 0) and its
    // terminal event reaches bravo's client through Redis, then the session ends there too.
    let status = Command::new("kill").args(["-TERM", &a.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let terminal = loop {
        match client.next_or_close().await {
            Ok(message) if message["type"] == "agent_thinking" => {}
            Ok(message) => break message,
            Err(code) => panic!("closed ({code}) without the run's terminal event; bravo's log:\n{}", b.log_so_far()),
        }
    };
    assert_eq!((&terminal["type"], &terminal["run_id"]), (&json!("agent_completed"), &json!(run_id)), "{terminal}");
    assert_eq!(terminal["outcome"], "cancelled", "{terminal}");
    assert_eq!(client.next_or_close().await, Err(1001), "the close once the owner has drained");
    let exited = a.child.wait().unwrap();
    assert!(exited.success(), "alpha's drain: {exited}; its log:\n{}", a.log_so_far());

    // The session stays readable on bravo for a resume window: its whole log, one terminal, then the close.
    let mut again = b.resume("alice", &session, 0).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    let mut terminals = 0;
    loop {
        match again.next_or_close().await {
            Ok(message) => terminals += usize::from(message["type"] == "agent_completed"),
            Err(code) => {
                assert_eq!(code, 1001);
                break;
            }
        }
    }
    assert_eq!(terminals, 1, "the run ended once");
    // Alpha left cleanly: its id can start again at once, not refused as in use.
    let a = Node::cluster("alpha", &redis, &[]);
    drop(a.connect("alice").await);
}

#[tokio::test]
async fn a_session_whose_log_moved_on_resumes_on_another_node_after_its_last_message() {
    // A replay limit of 4: after a run of 12 messages the owner's memory log no longer holds the first ones.
    let redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &["--replay-limit", "4"]);
    let b = Node::cluster("bravo", &redis, &[]);
    let mut client = a.connect("alice").await;
    client.run_to_end("slow", "10", "r1").await;
    let (session, after) = (client.session_id(), client.last_seq);
    drop(client);
    a.wait_connections(0).await;
    let mut client = b.resume("alice", &session, after).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    assert_eq!(client.session["last_seq"], after);
    let next = client.run_to_end("echo", "again", "r2").await;
    assert_eq!(next[0]["seq"].as_u64(), Some(after + 1));
}

#[tokio::test]
async fn a_session_held_from_a_node_that_dies_detaches_on_its_owner() {
    let redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &["--resume-window", "1s"]);
    let mut b = Node::cluster("bravo", &redis, &[]);
    let client = a.connect("alice").await;
    let session = client.session_id();
    drop(client);
    a.wait_connections(0).await;
    let client = b.resume("alice", &session, 0).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    // Bravo's connection holds the session: it stays resumable however long bravo's client is away.
    assert_eq!(a.metric("chat_gateway_resumable_sessions").await, Some(1.0));
    b.kill9();
    drop(client);
    // Bravo's detach never comes; its lease lapses, alpha lets go of the session, whose window then runs out.
    a.wait_metric("chat_gateway_resumable_sessions", "0", |open| open == 0.0).await;
    assert_eq!(a.resume("alice", &session, 0).await.err().map(|(status, _)| status), Some(404));
}

#[tokio::test]
async fn the_resume_window_runs_out_on_every_node() {
    let redis = Redis::start();
    let window = ["--resume-window", "1s"];
    let a = Node::cluster("alpha", &redis, &window);
    let b = Node::cluster("bravo", &redis, &window);
    // Two sessions of alpha's: one left on alpha, one resumed on bravo and left there.
    let mut sessions = Vec::new();
    for request_id in ["r1", "r2"] {
        let mut client = a.connect("alice").await;
        client.run_to_end("echo", "hi", request_id).await;
        sessions.push(client.session_id());
        drop(client);
        a.wait_connections(0).await;
    }
    let moved = b.resume("alice", &sessions[1], 2).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    drop(moved);
    b.wait_connections(0).await;
    let detached = Instant::now();
    // The windows run out. Polled on the owner with /v1/ws/check, which leaves a window running (a resume would
    // start it again).
    for session in &sessions {
        let deadline = detached + PATIENCE;
        loop {
            let (status, body) = a.check("alice", session, 2).await;
            if status == 404 {
                break;
            }
            assert_eq!(status, 200, "{body}");
            assert!(Instant::now() < deadline, "still resumable on alpha {PATIENCE:?} after the drop");
            tokio::time::sleep(POLL).await;
        }
    }
    assert!(detached.elapsed() >= Duration::from_millis(900), "expired after {:?}", detached.elapsed());
    let expected = (404, r#"application/json {"error":"unknown_session"}"#.to_owned() + "\n");
    for session in &sessions {
        for node in [&b, &a] {
            let refused = node.resume("alice", session, 2).await.err();
            assert_eq!(refused.as_ref(), Some(&expected), "node {}", node.id);
        }
    }
}

#[tokio::test]
async fn a_check_on_another_node_answers_as_its_resume_would() {
    let redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &[]);
    let b = Node::cluster("bravo", &redis, &[]);
    let mut client = a.connect("alice").await;
    client.run_to_end("echo", "hi", "r1").await;
    let session = client.session_id();
    drop(client);
    a.wait_connections(0).await;
    // What `GET /v1/ws?session=..&after=2` would answer on bravo (it resumes there: see the first test).
    let (status, body) = b.check("alice", &session, 2).await;
    assert_eq!((status, body.contains(r#""last_seq":2"#)), (200, true), "bravo's check of alpha's session: {body}");
    assert_eq!(b.check("bob", &session, 2).await.0, 404, "another user's session");
    assert_eq!(b.check("alice", &session, 3).await.0, 409, "beyond the session's last message");
}

#[tokio::test]
async fn a_resume_on_another_node_takes_the_session_over() {
    let redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &[]);
    let b = Node::cluster("bravo", &redis, &[]);
    let mut first = a.connect("alice").await;
    let run_id = start_endless_run(&mut first, "r1").await;
    let mut second =
        b.resume("alice", &first.session_id(), first.last_seq).await.unwrap_or_else(|refused| panic!("{refused:?}"));
    assert_eq!(second.session["resumed"], true);
    let code = loop {
        match first.next_or_close().await {
            Ok(message) => assert_eq!(message["type"], "agent_thinking", "{message}"),
            Err(code) => break code,
        }
    };
    assert_eq!(code, 4000, "the older connection, on alpha, is closed as taken over");
    // The run goes on, now on bravo's connection only (recv checks the seqs).
    for _ in 0..5 {
        let message = second.recv().await;
        assert_eq!((&message["type"], &message["run_id"]), (&json!("agent_thinking"), &json!(run_id)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_is_survived() {
    const UP: &str = "chat_gateway_event_log_up";
    const ERRORS: &str = "chat_gateway_event_log_errors_total";
    let mut redis = Redis::start();
    let a = Node::cluster("alpha", &redis, &[]);
    let b = Node::cluster("bravo", &redis, &[]);
    for node in [&a, &b] {
        node.wait_metric(UP, "1", |up| up == 1.0).await;
    }
    let errors_before = a.metric(ERRORS).await.unwrap_or_else(|| panic!("no {ERRORS} on alpha"));

    // A live connection on alpha, read all along by a task that stamps each message with when it came.
    let mut client = a.connect("alice").await;
    let run_id = start_endless_run(&mut client, "r1").await;
    let session = client.session_id();
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(read_all(client, sender));
    // Waits for `n` messages of the run that came after `since` (steps only, gap-free: the reader checks the seqs)
    // and returns the last one's seq.
    let mut steps_after = async |since: Instant, n: usize, what: &str| {
        let (mut count, mut last_seq) = (0, 0);
        while count < n {
            let next = tokio::time::timeout(PATIENCE, received.recv()).await;
            let (at, next) = next.unwrap_or_else(|_| panic!("{what}: no message")).expect("the reader ended");
            let message = next.unwrap_or_else(|end| panic!("{what}: the live connection ended: {end}"));
            assert_eq!((&message["type"], &message["run_id"]), (&json!("agent_thinking"), &json!(run_id)), "{what}");
            last_seq = message["seq"].as_u64().unwrap();
            count += usize::from(at >= since);
        }
        last_seq
    };

    redis.kill();
    let killed = Instant::now();
    let down = async |node: &Node| node.wait_metric(UP, "0", |up| up == 0.0).await;
    down(&a).await;
    down(&b).await;
    let down_seen = Instant::now();
    // The live connection keeps streaming from alpha's memory while Redis is gone.
    let seq = steps_after(down_seen, 20, "during the outage").await;
    // A resume on bravo of alpha's session cannot be answered without Redis.
    let refused = b.resume("alice", &session, seq).await.err().expect("a resume without Redis must be refused");
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(a.metric(ERRORS).await.unwrap() > errors_before, "alpha counted no event-log error");
    let outage = killed.elapsed();

    redis.restart();
    let restarted = Instant::now();
    for node in [&a, &b] {
        node.wait_metric(UP, "1", |up| up == 1.0).await;
    }
    // Alpha never died: its run and connection carry on (no node-loss terminal, no close).
    steps_after(Instant::now(), 20, "after the restart").await;
    eprintln!("outage {outage:?}; back up on both nodes {:?} after the restart", restarted.elapsed());

    // A new session opened on alpha resumes on bravo, with everything.
    let mut fresh = a.connect("alice").await;
    let all = fresh.run_to_end("tools", "a b", "t1").await;
    let fresh_session = fresh.session_id();
    drop(fresh);
    a.wait_connections(1).await;
    let mut fresh = b.resume("alice", &fresh_session, 0).await.unwrap_or_else(|refused| {
        panic!("{refused:?}; alpha's log:\n{}\nbravo's log:\n{}", a.log_so_far(), b.log_so_far())
    });
    let mut replayed = Vec::new();
    for _ in 0..all.len() {
        replayed.push(fresh.recv().await);
    }
    assert_eq!(replayed, all);
    reader.abort();
}

#[test]
fn redis_unreachable_at_start_is_one_line_and_exit_2() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut child = serve_command(&["--event-log", &url, "--node-id", "alpha"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its stderr ends when it exits: read it to the end, under a deadline.
    let stderr = support::lines(child.stderr.take().unwrap());
    let deadline = Instant::now() + PATIENCE;
    let mut lines = Vec::new();
    loop {
        match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve still running {PATIENCE:?} after a start with Redis unreachable: {lines:#?}");
            }
        }
    }
    let status = child.wait().unwrap();
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(2), "stderr: {text}");
    assert_eq!(lines.len(), 1, "one line: {text}");
    assert!(text.contains("cannot reach Redis"), "{text}");
}
