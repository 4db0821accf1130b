//! The browser page's routes over HTTP, without a browser: the assets and their security headers, `/v1/agents`,
//! `/v1/ws/check` (answers like the upgrade would) and `/dev-token` (only with a dev token, only to a local `Host`).
//! The page itself, in Chromium, is tested in `gateway_browser.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use chat_gateway::auth::Secret;
use chat_gateway::{Gateway, builtin_registry};
use serde_json::{Value, json};
use support::{PATIENCE, SECRET, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn gateway() -> Gateway {
    Gateway::new(builtin_registry(8).unwrap(), Secret::new(SECRET).unwrap())
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }
}

/// `GET path` over plain HTTP/1.1 with `extra` header lines (each ending in `\r\n`).
async fn get(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response)).await.unwrap().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Answer { status, headers, body: body.to_owned() }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

#[tokio::test]
async fn the_page_and_its_assets_carry_a_strict_policy() {
    let server = TestServer::start_gateway(gateway()).await;
    let assets = [
        ("/", "text/html; charset=utf-8", "data-testid=\"events\""),
        ("/static/app.js", "text/javascript; charset=utf-8", "'use strict';"),
        ("/static/style.css", "text/css; charset=utf-8", ".event"),
        ("/static/favicon.svg", "image/svg+xml", "<svg"),
    ];
    for (path, content_type, sample) in assets {
        let answer = get(server.addr, path, "").await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), Some(content_type), "{path}");
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"), "{path}");
        let policy = answer.header("content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"] {
            assert!(policy.split("; ").any(|part| part == directive), "{path}: `{directive}` missing in {policy}");
        }
        assert!(!policy.contains("unsafe"), "{path}: {policy}");
        assert!(answer.body.contains(sample), "{path}");
    }
    // The hooks that tests and scripts rely on are in the page.
    let page = get(server.addr, "/", "").await.body;
    for hook in ["agent", "input", "send", "events", "status"] {
        assert!(page.contains(&format!("data-testid=\"{hook}\"")), "data-testid={hook}");
    }
    assert_eq!(get(server.addr, "/static/nope.js", "").await.status, 404);
}

#[tokio::test]
async fn the_agent_list_needs_a_token() {
    let server = TestServer::start_gateway(gateway()).await;
    let refused = get(server.addr, "/v1/agents", "").await;
    assert_eq!((refused.status, refused.header("www-authenticate")), (401, Some("Bearer")));
    let bad = get(server.addr, "/v1/agents", &bearer("a.b.c")).await;
    assert_eq!((bad.status, bad.header("www-authenticate")), (401, Some("Bearer error=\"invalid_token\"")));
    // Tokens go in the header only: a token in the URL is not read here.
    let in_query = get(server.addr, &format!("/v1/agents?token={}", server.token("alice")), "").await;
    assert_eq!(in_query.status, 401);
    let answer = get(server.addr, "/v1/agents", &bearer(&server.token("alice"))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        (answer.header("content-type"), answer.header("cache-control")),
        (Some("application/json"), Some("no-store"))
    );
    assert_eq!(answer.json(), json!({"agents": ["echo", "fail", "panic", "slow", "tools"]}));
    assert_eq!(server.gateway.metrics().auth_failures_total, 3);
}

/// A refused WebSocket upgrade, as `(status, "<content type> <body>")`, like `TestServer::connect_with` gives it.
fn as_refusal(answer: &Answer) -> (u16, String) {
    (answer.status, format!("{} {}", answer.header("content-type").unwrap_or_default(), answer.body))
}

#[tokio::test]
async fn check_answers_what_the_upgrade_would() {
    let server = TestServer::start_gateway(gateway().replay_limit(4)).await;
    let alice = server.token("alice");
    let check = |query: String, token: String| {
        let addr = server.addr;
        async move { get(addr, &format!("/v1/ws/check{query}"), &bearer(&token)).await }
    };

    // Signed in, no session: who the token is for.
    let answer = check(String::new(), alice.clone()).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"user": "alice"})));
    // A bad token: the same 401 and message as the upgrade.
    let answer = check(String::new(), "not-a-token".into()).await;
    assert_eq!(as_refusal(&answer), server.connect_with("not-a-token", "").await.err().unwrap());
    assert!(answer.body.starts_with("malformed token"), "{}", answer.body);
    assert_eq!(check("?after=3".into(), alice.clone()).await.status, 400);
    assert_eq!(check("?session=00&after=x".into(), alice.clone()).await.status, 400);

    // A session whose log lost its first messages: 409 naming the first held, as the upgrade says.
    let mut client = server.connect("alice").await;
    let all = client.run_to_end("tools", "a b", "r1").await;
    let session = client.session_id();
    drop(client);
    let wait = async {
        while server.gateway.metrics().connections_open > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.expect("the connection did not end");
    let gap = check(format!("?session={session}&after=0"), alice.clone()).await;
    assert_eq!(as_refusal(&gap), server.resume("alice", &session, 0).await.err().unwrap());
    assert_eq!(gap.json(), json!({"error": "resume_gap", "first_seq": 5}));
    // Unknown, malformed or another user's session: the one 404 of the upgrade.
    for (query, token) in [
        (format!("?session={}&after=4", "0".repeat(32)), alice.clone()),
        ("?session=session-1".to_owned(), alice.clone()),
        (format!("?session={session}&after=4"), server.token("bob")),
    ] {
        let answer = check(query.clone(), token).await;
        assert_eq!(as_refusal(&answer), server.resume("alice", &"0".repeat(32), 0).await.err().unwrap(), "{query}");
    }
    // A resume that would work: 200 with the session's last seq, and the session is still there to resume.
    let answer = check(format!("?session={session}&after=4"), alice.clone()).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"user": "alice", "last_seq": 8})));
    let mut client = server.resume("alice", &session, 4).await.unwrap();
    let mut replayed = Vec::new();
    for _ in 0..4 {
        replayed.push(client.recv().await);
    }
    assert_eq!(replayed, all[4..]);
    // No resume was counted for the checks.
    assert_eq!(server.gateway.metrics().resumes_total, 1);
}

#[tokio::test]
async fn the_dev_token_is_offered_only_when_given_and_only_to_a_local_host() {
    let server = TestServer::start_gateway(gateway()).await;
    assert_eq!(get(server.addr, "/dev-token", "").await.status, 404);

    let server = TestServer::start_gateway(gateway().dev_token("the.dev.token")).await;
    let answer = get(server.addr, "/dev-token", "").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "the.dev.token"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    // A page of another name (DNS rebinding onto this machine) does not get it.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /dev-token HTTP/1.1\r\nHost: evil.example:8080\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(!response.contains("the.dev.token"));
    // The gateway's Debug output does not show it either.
    assert!(!format!("{:?}", server.gateway).contains("the.dev.token"));
}

#[tokio::test]
async fn the_page_endpoints_are_no_way_around_the_throttle_and_the_origin_check() {
    let server = TestServer::start_gateway(gateway().failed_upgrades_per_minute(2)).await;
    let alice = bearer(&server.token("alice"));
    let foreign = format!("Origin: http://evil.example\r\n{alice}");
    assert_eq!(get(server.addr, "/v1/ws/check", &foreign).await.status, 403);
    assert_eq!(get(server.addr, "/v1/agents", &format!("Origin: http://{}\r\n{alice}", server.addr)).await.status, 200);
    // Two failures (the foreign origin, a bad token) use up this address's allowance, for the upgrade too: bad
    // tokens get 429 everywhere, while a valid one is still served (users behind a shared address keep working).
    assert_eq!(get(server.addr, "/v1/agents", &bearer("a.b.c")).await.status, 401);
    for path in ["/v1/ws/check", "/v1/agents"] {
        let throttled = get(server.addr, path, &bearer("a.b.c")).await;
        assert_eq!(throttled.status, 429, "{path}");
        assert!(throttled.header("retry-after").is_some(), "{path}");
        assert_eq!(get(server.addr, path, &alice).await.status, 200, "{path}");
    }
    assert_eq!(server.connect_with("a.b.c", "").await.err().unwrap().0, 429);
    assert!(server.connect_with(&server.token("alice"), "").await.is_ok());
    // The page itself is never throttled.
    assert_eq!(get(server.addr, "/", "").await.status, 200);
}

#[tokio::test]
async fn the_check_says_when_a_connection_cap_is_reached() {
    let server = TestServer::start_gateway(gateway().max_connections_per_user(1)).await;
    let alice = bearer(&server.token("alice"));
    assert_eq!(get(server.addr, "/v1/ws/check", &alice).await.status, 200);
    let _held = server.connect("alice").await;
    let full = get(server.addr, "/v1/ws/check", &alice).await;
    assert_eq!(full.status, 429);
    assert!(full.header("retry-after").is_some());
    assert!(full.header("content-security-policy").is_some(), "the page's headers on its answers");
    assert_eq!(get(server.addr, "/v1/ws/check", &bearer(&server.token("bob"))).await.status, 200);
}
