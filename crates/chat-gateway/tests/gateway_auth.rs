//! Authentication before the upgrade, and the plain HTTP endpoints.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chat_gateway::auth::{self, Secret};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::{SECRET, TestServer, http_get};
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// A token with any header and claims, signed with HMAC-SHA256 under `key`.
fn forge(header: &str, claims: &str, key: &str) -> String {
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn in_an_hour() -> u64 {
    auth::now_unix() + 3600
}

/// Attempts an upgrade with `authorization` as the header value (if any) and `query` appended to the URL; returns
/// the HTTP status.
async fn upgrade_status(server: &TestServer, authorization: Option<&str>, query: &str) -> u16 {
    let mut request = format!("{}{query}", server.url()).into_client_request().unwrap();
    if let Some(value) = authorization {
        request.headers_mut().insert("authorization", value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(Error::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(!body.is_empty(), "a refusal explains itself");
            response.status().as_u16()
        }
        Err(err) => panic!("unexpected error: {err}"),
    }
}

#[track_caller]
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn valid_tokens_upgrade_by_header_or_query() {
    let server = TestServer::start().await;
    let token = server.token("alice");
    assert_eq!(upgrade_status(&server, Some(&bearer(&token)), "").await, 101);
    assert_eq!(upgrade_status(&server, None, &format!("?token={token}")).await, 101);
    // Any HS256 minter works, with a fractional exp.
    let foreign =
        forge(r#"{"typ":"JWT","alg":"HS256"}"#, &format!(r#"{{"exp":{}.5,"sub":"bob"}}"#, in_an_hour()), SECRET);
    assert_eq!(upgrade_status(&server, Some(&bearer(&foreign)), "").await, 101);
}

#[tokio::test]
async fn bad_tokens_get_401_before_the_upgrade() {
    let server = TestServer::start().await;
    let exp = in_an_hour();
    let claims = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
    let cases: Vec<(&str, Option<String>, String)> = vec![
        ("missing", None, String::new()),
        ("empty query", None, "?token=".into()),
        ("not a bearer", Some("Basic YWxpY2U6cHc=".into()), String::new()),
        ("malformed", Some(bearer("not-a-token")), String::new()),
        ("bad signature", Some(bearer(&forge(r#"{"alg":"HS256"}"#, &claims, "wrong-secret"))), String::new()),
        ("bad signature in query", None, format!("?token={}", forge(r#"{"alg":"HS256"}"#, &claims, "wrong"))),
        (
            "alg none",
            Some(bearer(&format!("{}.", forge(r#"{"alg":"none"}"#, &claims, SECRET).rsplit_once('.').unwrap().0))),
            String::new(),
        ),
        ("alg HS512", Some(bearer(&forge(r#"{"alg":"HS512"}"#, &claims, SECRET))), String::new()),
        (
            "expired",
            Some(bearer(&auth::mint_token(
                &Secret::new(SECRET).unwrap(),
                "alice",
                std::time::Duration::from_secs(1),
                1_000,
            ))),
            String::new(),
        ),
        ("no sub", Some(bearer(&forge(r#"{"alg":"HS256"}"#, &format!(r#"{{"exp":{exp}}}"#), SECRET))), String::new()),
        ("no exp", Some(bearer(&forge(r#"{"alg":"HS256"}"#, r#"{"sub":"alice"}"#, SECRET))), String::new()),
    ];
    for (name, authorization, query) in &cases {
        assert_eq!(upgrade_status(&server, authorization.as_deref(), query).await, 401, "{name}");
    }
    let metrics = server.gateway.metrics();
    assert_eq!((metrics.auth_failures_total, metrics.connections_total), (cases.len() as u64, 0));
}

#[tokio::test]
async fn plain_get_without_upgrade_still_checks_the_token_first() {
    let server = TestServer::start().await;
    assert_eq!(http_get(server.addr, "/v1/ws").await.0, 401);
    let (status, _) = http_get(server.addr, &format!("/v1/ws?token={}", server.token("alice"))).await;
    assert!(matches!(status, 400 | 426), "a valid token without an upgrade request is a client error, got {status}");
}

#[tokio::test]
async fn healthz_and_metrics() {
    let server = TestServer::start().await;
    assert_eq!(http_get(server.addr, "/healthz").await, (200, "ok\n".to_owned()));

    let mut client = server.connect("alice").await;
    client.run_to_end("tools", "a b", "r").await;
    client.run("nope", "", "bad").await;
    client.recv_error().await;

    let (status, text) = http_get(server.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "chat_gateway_live_sessions 1",
        "chat_gateway_connections_open 1",
        "chat_gateway_connections_total 1",
        "chat_gateway_runs_started_total 1",
        "chat_gateway_events_sent_total 8",
        "chat_gateway_errors_sent_total 1",
        "# TYPE chat_gateway_events_sent_total counter",
        "# TYPE chat_gateway_live_runs gauge",
        "# TYPE chat_gateway_refused_total counter",
        "chat_gateway_refused_total{reason=\"unauthorized\"} 0",
        "chat_gateway_refused_total{reason=\"user_connections\"} 0",
        "# TYPE chat_gateway_disconnects_total counter",
        "chat_gateway_disconnects_total{reason=\"write_timeout\"} 0",
    ] {
        assert!(text.lines().any(|it| it == line), "missing `{line}` in:\n{text}");
    }
    // The counters are not public wherever the WebSocket port is; the metrics listener serves nothing else.
    assert_eq!(http_get(server.addr, "/metrics").await.0, 404);
    assert_eq!(http_get(server.metrics_addr, "/v1/ws").await.0, 404);
    assert_eq!(http_get(server.addr, "/nope").await.0, 404);
}
