//! Limits that hold under abuse: connection caps, the failed-upgrade throttle, `Origin`, ping / idle timeout, the
//! write deadline, close code 1007, and the drain (`/healthz` 503 with the listener up; ended at once on demand).

mod support;

use std::time::Duration;

use chat_gateway::auth::Secret;
use chat_gateway::metrics::{Disconnect, Refused};
use chat_gateway::replay::MemoryReplayLog;
use chat_gateway::{Gateway, builtin_registry};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use support::{Client, PATIENCE, SECRET, TestServer, http_get};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::Response;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Error, Message};

fn gateway() -> Gateway {
    Gateway::new(builtin_registry(4).unwrap(), Secret::new(SECRET).unwrap())
}

/// Attempts an upgrade as `user` with extra `headers` and `query`; the response of a refusal, or 101.
async fn attempt(server: &TestServer, token: &str, query: &str, headers: &[(&str, &str)]) -> Response<String> {
    let mut request = format!("{}{query}", server.url()).into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.map(|_| String::new()),
        Err(Error::Http(response)) => {
            response.map(|body| String::from_utf8_lossy(&body.unwrap_or_default()).into_owned())
        }
        Err(err) => panic!("unexpected error: {err}"),
    }
}

/// Polls `done` every few milliseconds until it holds, or fails the test after [`PATIENCE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("never happened: {what}"));
}

#[tokio::test]
async fn connections_are_capped_per_user_and_in_all() {
    let server = TestServer::start_gateway(gateway().max_connections_per_user(2).max_connections(3)).await;
    let alice_one = server.connect("alice").await;
    let _alice_two = server.connect("alice").await;
    let refused = attempt(&server, &server.token("alice"), "", &[]).await;
    assert_eq!(refused.status(), 429, "{}", refused.body());
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.body().contains("already holds 2 connections"), "{}", refused.body());
    let _bob = server.connect("bob").await;
    let full = attempt(&server, &server.token("carol"), "", &[]).await;
    assert_eq!(full.status(), 503, "{}", full.body());

    // A connection that ends frees its place, for its user and in all.
    drop(alice_one);
    let gateway = server.gateway.clone();
    eventually("alice's first connection is counted out", || gateway.metrics().connections_open == 2).await;
    let _carol = server.connect("carol").await;
    let metrics = server.gateway.metrics();
    assert_eq!((metrics.refused(Refused::UserConnections), metrics.refused(Refused::Connections)), (1, 1));
}

#[tokio::test]
async fn failed_upgrades_are_throttled_per_address_and_valid_tokens_still_pass() {
    let server = TestServer::start_gateway(gateway().failed_upgrades_per_minute(3)).await;
    for _ in 0..2 {
        assert_eq!(attempt(&server, "not-a-token", "", &[]).await.status(), 401);
    }
    // Another origin counts too; an unknown session (with a valid token: 128-bit ids are nothing to guess) does not.
    assert_eq!(attempt(&server, &server.token("alice"), "", &[("origin", "https://evil.example")]).await.status(), 403);
    let unknown = format!("?session={}&after=0", "ab".repeat(16));
    assert_eq!(attempt(&server, &server.token("alice"), &unknown, &[]).await.status(), 404);
    // Used up: a bad token is answered 429 until the window ends, without checking it...
    let throttled = attempt(&server, "not-a-token", "", &[]).await;
    assert_eq!(throttled.status(), 429, "{}", throttled.body());
    let retry: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // ...but the users behind the same address (a proxy, a NAT) are not locked out.
    assert_eq!(attempt(&server, &server.token("alice"), "", &[]).await.status(), 101);
    assert_eq!(http_get(server.addr, "/healthz").await.0, 200);
    let metrics = server.gateway.metrics();
    assert_eq!(metrics.refused(Refused::Throttled), 1);
    assert_eq!((metrics.refused(Refused::Unauthorized), metrics.refused(Refused::Origin)), (2, 1));
    assert_eq!((metrics.refused(Refused::UnknownSession), metrics.connections_total), (1, 1));
}

#[tokio::test]
async fn origin_must_be_the_gateways_own_or_allowed() {
    let server = TestServer::start_gateway(gateway().allowed_origins(["https://chat.example.com"])).await;
    let token = server.token("alice");
    let own = format!("http://{}", server.addr);
    let evil = attempt(&server, &token, "", &[("origin", "https://evil.example")]).await;
    assert_eq!(evil.status(), 403, "{}", evil.body());
    assert_eq!(attempt(&server, &token, "", &[("origin", "null")]).await.status(), 403);
    assert_eq!(attempt(&server, &token, "", &[("origin", &own)]).await.status(), 101);
    assert_eq!(attempt(&server, &token, "", &[("origin", "https://chat.example.com")]).await.status(), 101);
    assert_eq!(attempt(&server, &token, "", &[]).await.status(), 101, "no Origin: not a browser, not checked");
    assert_eq!(server.gateway.metrics().refused(Refused::Origin), 2);
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_gets_1007_and_the_session_detaches() {
    let server = TestServer::start().await;
    let mut client = server.connect("alice").await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(client.recv_close().await, 1007);
    assert_eq!(server.gateway.metrics().disconnects(Disconnect::NotUtf8), 1);
    // The session was not closed: it resumes, and works.
    let mut resumed = server.resume("alice", &client.session_id(), 0).await.unwrap();
    resumed.run_to_end("echo", "still here", "r1").await;
}

#[tokio::test]
async fn a_silent_connection_is_pinged_then_closed_with_4002() {
    let server = TestServer::start_gateway(gateway().idle_timeout(Duration::from_millis(100))).await;
    // This client reads nothing (so it answers no ping) until the gateway has given up on it.
    let mut silent = server.connect("alice").await;
    let gateway = server.gateway.clone();
    eventually("the silent connection is closed", || gateway.metrics().disconnects(Disconnect::Idle) == 1).await;
    let mut pinged = false;
    let code = loop {
        match tokio::time::timeout(PATIENCE, silent.ws.next()).await.unwrap() {
            Some(Ok(Message::Ping(_))) => pinged = true,
            Some(Ok(Message::Close(frame))) => break frame.map(|frame| u16::from(frame.code)),
            other => panic!("expected a ping, then the close frame: {other:?}"),
        }
    };
    assert!(pinged, "pinged before being closed");
    assert_eq!(code, Some(4002));
    assert_eq!(server.gateway.metrics().resumable_sessions, 1, "the session detached, resumable");
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    // Long enough that a scheduling stall between a ping and the next read cannot close the connection.
    let server = TestServer::start_gateway(gateway().idle_timeout(Duration::from_millis(250))).await;
    let mut client = server.connect("alice").await;
    // Reading answers each ping with a pong; count the pings over several idle timeouts.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(message) = tokio::time::timeout_at(until, client.ws.next()).await {
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected only pings from an idle session, got {other:?}"),
        }
    }
    assert!(pings >= 2, "pinged after each silent idle timeout, got {pings}");
    client.run_to_end("echo", "still connected", "r1").await;
    assert_eq!(server.gateway.metrics().disconnects(Disconnect::Idle), 0);
}

#[tokio::test]
async fn a_slow_reader_that_sends_nothing_is_not_taken_for_idle() {
    let gateway = Gateway::new(builtin_registry(32).unwrap(), Secret::new(SECRET).unwrap());
    let server = TestServer::start_gateway(gateway.idle_timeout(Duration::from_millis(300))).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(socket.connect(server.addr).await.unwrap());
    let mut request = server.url().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", server.token("alice")).parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    let mut client = Client { ws, last_seq: 0, session: serde_json::Value::Null };
    client.session = client.recv_raw().await;
    // A backlog far larger than the socket buffers (the gateway's send buffer holds about two of these messages),
    // read slowly for more than five idle timeouts, sending nothing: the writes the client accepts keep it alive.
    let runs = 8;
    for n in 0..runs {
        client.run("echo", &"x".repeat(60_000), &format!("r{n}")).await;
    }
    let mut received = 0;
    while received < 2 * runs {
        tokio::time::sleep(Duration::from_millis(100)).await;
        received += 1;
        let message = client.next_or_close().await.unwrap_or_else(|code| panic!("closed with {code} while reading"));
        assert!(message["type"] == "agent_started" || message["type"] == "agent_completed", "{message}");
    }
    assert_eq!(server.gateway.metrics().disconnects(Disconnect::Idle), 0);
}

#[tokio::test]
async fn a_client_that_accepts_nothing_is_cut_off_and_loses_nothing() {
    // Messages written to the socket but never read are lost with it; the log keeps them (the client resumes from
    // what it has) as long as nothing newer needs their room, so it is large enough here for the whole flood.
    let log = MemoryReplayLog::new(4096).byte_limit(256 * 1024 * 1024);
    let gateway = gateway()
        .write_timeout(Duration::from_millis(200))
        .idle_timeout(Duration::from_secs(60))
        .replay_log(std::sync::Arc::new(log));
    let server = TestServer::start_gateway(gateway).await;
    // A client with a tiny receive buffer that never reads after the session frame.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut request = server.url().into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", server.token("alice")).parse().unwrap());
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    let mut client = Client { ws, last_seq: 0, session: serde_json::Value::Null };
    client.session = client.recv_raw().await;
    let big = "x".repeat(60_000);
    let gateway = server.gateway.clone();
    let cut_off = || gateway.metrics().disconnects(Disconnect::WriteTimeout) == 1;
    let flood = async {
        for n in 0..500 {
            if cut_off() {
                return;
            }
            let run = json!({"type": "run", "agent": "echo", "input": big, "request_id": format!("r{n}")});
            // Once the gateway stops reading too, a send waits: keep checking.
            if tokio::time::timeout(Duration::from_millis(500), client.ws.send(Message::text(run.to_string())))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, flood).await.expect("the flood is bounded");
    eventually("the non-reading client is cut off", cut_off).await;

    // Its session detached; a resume from the start gets every message, in order, exactly once.
    let session = client.session["session_id"].as_str().unwrap().to_owned();
    let mut resumed = server.resume("alice", &session, 0).await.unwrap();
    let last_seq = resumed.session["last_seq"].as_u64().unwrap();
    assert!(last_seq >= 2, "the cut-off client had messages waiting: {}", resumed.session);
    while resumed.last_seq < last_seq {
        resumed.recv().await;
    }
}

#[tokio::test]
async fn draining_answers_503_with_the_listener_up_and_can_be_ended_at_once() {
    let server = TestServer::start_with(4, Duration::from_secs(600)).await;
    let mut client = server.connect("alice").await;
    client.run("slow", "100000", "long").await;
    assert_eq!(client.recv().await["type"], "agent_started");
    server.begin_shutdown();
    let addr = server.addr;
    let mut healthz = 0;
    for _ in 0..1000 {
        healthz = http_get(addr, "/healthz").await.0;
        if healthz == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(healthz, 503, "/healthz says the gateway is draining, from a listener still up");
    assert_eq!(attempt(&server, &server.token("bob"), "", &[]).await.status(), 503);
    assert_eq!(server.gateway.metrics().refused(Refused::Draining), 1);

    // The drain timeout is ten minutes; ending the drain cancels the run now, and the client still gets its
    // terminal event, then the close frame.
    server.gateway.end_drain();
    let events = loop {
        match client.next_or_close().await {
            Ok(event) if event["type"] == "agent_completed" => break event,
            Ok(_) => continue,
            Err(code) => panic!("closed ({code}) before the terminal event"),
        }
    };
    assert_eq!(events["outcome"], "cancelled");
    assert_eq!(client.recv_close().await, 1001);
    server.join().await.unwrap();
}

#[tokio::test]
async fn a_new_session_beyond_the_users_cap_closes_the_oldest_waiting_one() {
    let server = TestServer::start_gateway(gateway().max_sessions_per_user(2).max_connections_per_user(3)).await;
    let gateway = server.gateway.clone();
    let mut detached = Vec::new();
    for n in 0..2 {
        let mut client = server.connect("alice").await;
        client.run("slow", "100000", &format!("long{n}")).await;
        assert_eq!(client.recv().await["type"], "agent_started");
        detached.push(client.session_id());
        drop(client);
        eventually("the connection ended", || gateway.metrics().connections_open == 0).await;
    }
    assert_eq!((gateway.metrics().resumable_sessions, gateway.metrics().live_runs), (2, 2));

    // A third session: the oldest waiting one is closed (its run cancelled), the other still resumes.
    let _third = server.connect("alice").await;
    assert_eq!(server.resume("alice", &detached[0], 0).await.err().map(|(status, _)| status), Some(404));
    let _second = server.resume("alice", &detached[1], 0).await.unwrap();
    eventually("the oldest session's run is cancelled", || gateway.metrics().live_runs == 1).await;
    // Both sessions are attached now: nothing can be closed to make room.
    let refused = attempt(&server, &server.token("alice"), "", &[]).await;
    assert_eq!(refused.status(), 429, "{}", refused.body());
    assert!(refused.body().contains("already holds 2 sessions"), "{}", refused.body());
    assert_eq!(gateway.metrics().refused(Refused::UserSessions), 1);
    // Another user is not affected.
    let _bob = server.connect("bob").await;
}

/// Reads from `stream` until the gateway closes it; fails the test after [`PATIENCE`].
async fn closed_by_the_gateway(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = [0; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await.expect("the socket stays open") {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn a_socket_the_gateway_writes_nothing_to_is_closed() {
    let gateway = gateway().idle_timeout(Duration::from_millis(50)).quiet_timeout(Duration::from_millis(200));
    let server = TestServer::start_gateway(gateway).await;
    // Half a request, never finished (slowloris), and a socket that sends nothing at all.
    let mut half = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    closed_by_the_gateway(&mut half).await;
    closed_by_the_gateway(&mut silent).await;
    // A WebSocket connection whose client answers pings is written to (pinged) within each idle timeout: it stays.
    let mut client = server.connect("alice").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(600);
    while let Ok(message) = tokio::time::timeout_at(until, client.ws.next()).await {
        assert!(matches!(message, Some(Ok(Message::Ping(_)))), "only pings, no close: {message:?}");
    }
    client.run_to_end("echo", "still here", "r1").await;
}

#[tokio::test]
async fn one_address_holds_at_most_its_sockets() {
    let server = TestServer::start_gateway(gateway().max_sockets_per_address(16)).await;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // The 17th is accepted and closed at once.
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    closed_by_the_gateway(&mut extra).await;
    // A place is freed once the gateway sees a socket close: a new one is then served (retried until then).
    drop(held.pop());
    let served = async {
        loop {
            let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            let mut response = String::new();
            if tokio::io::AsyncWriteExt::write_all(&mut stream, request).await.is_ok()
                && tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response).await.is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, served).await.expect("the freed place is given to a new socket");
    drop(held);
    let mut client = server.connect("alice").await;
    client.run_to_end("echo", "served", "r1").await;
}

#[tokio::test]
async fn leaving_and_resuming_over_and_over_keeps_one_timer_per_session() {
    let server = TestServer::start_gateway(gateway().resume_window(Duration::from_secs(600))).await;
    let gateway = server.gateway.clone();
    let client = server.connect("alice").await;
    let session = client.session_id();
    drop(client);
    eventually("the first connection ended", || gateway.metrics().connections_open == 0).await;
    let tasks = || tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let before = tasks();
    for _ in 0..20 {
        let client = server.resume("alice", &session, 0).await.unwrap();
        drop(client);
        eventually("the connection ended", || gateway.metrics().connections_open == 0).await;
    }
    // Each detach replaced the previous window's timer instead of adding one (20 more tasks otherwise).
    let after = tasks();
    assert!(after <= before + 2, "{before} tasks before, {after} after 20 detaches");
    assert_eq!(gateway.metrics().resumable_sessions, 1);
}
