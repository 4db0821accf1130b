//! The browser chat page: `GET /` and its assets (static files under `static/`, embedded with `include_str!`), and
//! the small JSON endpoints the page uses besides `GET /v1/ws`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page (`static/index.html`) |
//! | `GET /static/app.js`, `/static/style.css`, `/static/favicon.svg` | its script, style sheet and icon |
//! | `GET /v1/agents` | `{"agents":["echo",...]}`, the registry's agents, sorted; `401` without a valid token |
//! | `GET /v1/ws/check[?session=<id>&after=<seq>]` | what `GET /v1/ws` would answer before the upgrade: `429`, `403`, `401`, `503`, `400`, `404`, `409` with the same bodies, or `200` `{"user":...}` (with `"last_seq"` for a resume) |
//! | `GET /dev-token` | only on a gateway given [`Gateway::dev_token`] (`serve --dev`): that token, as text |
//!
//! The JSON endpoints take the token in `Authorization: Bearer <token>` only, never in the URL. They check the
//! `Origin`, count their refusals and feed the failed-upgrade throttle as `GET /v1/ws` does, so that they are no way
//! around it. A browser cannot
//! read the status of a refused WebSocket handshake, so the page asks `/v1/ws/check` after a failed (re)connection
//! to tell a bad token (`401`) from a session that is gone (`404`) or a replay gap (`409`).
//!
//! Every page response carries a strict `Content-Security-Policy` (`CONTENT_SECURITY_POLICY`: scripts, styles and
//! connections to this origin only, no inline script or style, no framing) and `X-Content-Type-Options: nosniff`.
//! The page loads nothing from another host.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::auth::Claims;
use crate::cluster::ResumeError;
use crate::server::{self, Gateway};

/// The caller's address, when the gateway serves with `ConnectInfo` (as [`Gateway::serve`] does).
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");
const FAVICON_SVG: &str = include_str!("../static/favicon.svg");

/// The `Content-Security-Policy` of every page response: nothing by default; scripts, styles, images and
/// connections (`fetch` and the WebSocket, same host and port) from this origin only; no inline script or style,
/// no `<base>`, no form submission, no framing.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's settings, kept in the [`Gateway`].
#[derive(Clone, Default)]
pub(crate) struct PageConfig {
    /// The token `GET /dev-token` offers; `None` (the default) leaves the route out.
    dev_token: Option<Arc<str>>,
}

impl fmt::Debug for PageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dev_token = self.dev_token.as_ref().map(|_| "[redacted]");
        f.debug_struct("PageConfig").field("dev_token", &dev_token).finish()
    }
}

impl Gateway {
    /// Offers `token` to the browser page at `GET /dev-token`, so that a developer can sign in with one click; this
    /// is what `chat-gateway serve --dev` does with the token it prints. Without it (the default) the route does not
    /// exist. Never use it with a real user's token: anyone who can reach the gateway and names it by an IP address
    /// or `localhost` can read it (requests for any other host name are refused, against DNS rebinding).
    #[must_use]
    pub fn dev_token(mut self, token: impl Into<String>) -> Gateway {
        self.page.dev_token = Some(Arc::from(token.into()));
        self
    }
}

/// The page's routes, merged into [`Gateway::router`].
pub(crate) fn routes(gateway: &Gateway) -> Router<Gateway> {
    let router = Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/static/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/static/style.css", get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }))
        .route("/static/favicon.svg", get(|| async { asset(FAVICON_SVG, "image/svg+xml") }))
        .route("/v1/agents", get(agents))
        .route("/v1/ws/check", get(check));
    if gateway.page.dev_token.is_some() { router.route("/dev-token", get(dev_token)) } else { router }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // Embedded in the binary: a new binary may serve new files under the same names.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A small answer for the page's script, never cached (it may carry a token or a session's state).
fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    answer(status, "application/json", body)
}

/// Adds the page's security headers to a response of the checks it shares with `GET /v1/ws`.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The checks `GET /v1/ws` makes before it looks at the session, with the token from `Authorization: Bearer` only.
#[allow(clippy::result_large_err)]
fn admit(gateway: &Gateway, peer: Peer, headers: &HeaderMap) -> Result<Claims, Response> {
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer.ip());
    server::preflight(gateway, peer, headers, server::bearer_token(headers)).map_err(secure)
}

/// `GET /v1/agents`: the names the page offers in its agent list.
async fn agents(State(gateway): State<Gateway>, peer: Peer, headers: HeaderMap) -> Response {
    if let Err(response) = admit(&gateway, peer, &headers) {
        return response;
    }
    let mut names: Vec<&str> = gateway.registry.agent_names().collect();
    names.sort_unstable();
    json(StatusCode::OK, serde_json::json!({ "agents": names }).to_string())
}

/// `GET /v1/ws/check`: what `GET /v1/ws` with the same token and query would answer before the upgrade.
///
/// It changes nothing: a connection attached to the session stays attached, and a detached session's resume window
/// goes on ([`ReplayLog::probe`](crate::replay::ReplayLog::probe)).
async fn check(State(gateway): State<Gateway>, peer: Peer, headers: HeaderMap, uri: Uri) -> Response {
    let claims = match admit(&gateway, peer, &headers) {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if gateway.shutdown.is_cancelled() {
        return secure(server::draining(&gateway));
    }
    let resume = match server::resume_request(uri.query()) {
        Ok(resume) => resume,
        Err(response) => return secure(response),
    };
    if let Err(full) = server::would_admit(&gateway, &claims.user) {
        return secure(server::refuse_full(&gateway, full));
    }
    let response = match resume {
        None => json(StatusCode::OK, serde_json::json!({ "user": claims.user }).to_string()),
        Some((key, after)) => {
            let probed = match (key, &gateway.sessions.cluster) {
                (None, _) => Err(ResumeError::Unknown),
                (Some(key), Some(cluster)) if !gateway.sessions.holds(key) => {
                    cluster.probe_remote(&claims.user, key, after).await.map(|probe| probe.last_seq)
                }
                (Some(key), _) => gateway.sessions.probe(&claims.user, key, after).map_err(ResumeError::from),
            };
            match probed {
                Ok(last_seq) => {
                    let body = serde_json::json!({ "user": claims.user, "last_seq": last_seq });
                    json(StatusCode::OK, body.to_string())
                }
                Err(err) => server::resume_refused(&gateway, err),
            }
        }
    };
    secure(response)
}

/// `GET /dev-token`, on a `--dev` gateway only.
async fn dev_token(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or_default();
    if !is_local_host(host) {
        let message = "the dev token is only offered to http://127.0.0.1, http://[::1] or http://localhost\n";
        return answer(StatusCode::FORBIDDEN, "text/plain; charset=utf-8", message.into());
    }
    match &gateway.page.dev_token {
        Some(token) => answer(StatusCode::OK, "text/plain; charset=utf-8", token.to_string()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Whether a `Host` header names an IP address or `localhost` (with or without a port): a name that DNS rebinding
/// could point at this machine is anything else.
fn is_local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`: an IPv6 literal.
        Some(rest) => return rest.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_are_ip_literals_and_localhost() {
        for host in ["127.0.0.1:8080", "127.0.0.1", "localhost:1", "LOCALHOST", "[::1]:8080", "10.0.0.2:80"] {
            assert!(is_local_host(host), "{host}");
        }
        for host in ["", "evil.example:8080", "127.0.0.1.evil.example", "[::1", "localhost.evil:1", "[nope]:1"] {
            assert!(!is_local_host(host), "{host}");
        }
    }

    #[test]
    fn the_dev_token_is_redacted_in_debug_output() {
        let config = PageConfig { dev_token: Some(Arc::from("secret.token.value")) };
        assert_eq!(format!("{config:?}"), "PageConfig { dev_token: Some(\"[redacted]\") }");
    }

    #[test]
    fn the_page_loads_nothing_from_another_host_and_nothing_inline() {
        for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS), ("style.css", STYLE_CSS)] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} contains `{needle}`");
            }
        }
        // No inline script or style: the policy would block them.
        assert!(!INDEX_HTML.contains("<style"), "inline style");
        assert!(!INDEX_HTML.contains(" style="), "inline style attribute");
        let handler = INDEX_HTML.match_indices(" on").any(|(at, _)| {
            let rest = &INDEX_HTML[at + 3..];
            let name = rest.find(|c: char| !c.is_ascii_lowercase()).unwrap_or(rest.len());
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
        assert!(INDEX_HTML.contains("<script src=\"/static/app.js\" defer></script>"));
    }
}
