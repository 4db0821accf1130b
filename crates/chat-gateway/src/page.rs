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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::auth::{self, AuthError, Claims};
use crate::metrics::Refused;
use crate::replay::{AttachError, SessionKey};
use crate::server::Gateway;

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

/// Counts a refusal that a prober could learn from, against its address too, as `GET /v1/ws` does: these
/// endpoints answer what the upgrade would, so they must not be a way around its failed-upgrade throttle.
fn failed(gateway: &Gateway, peer: Option<IpAddr>, reason: Refused) {
    gateway.metrics.refused(reason);
    if let Some(peer) = peer {
        gateway.throttle.failed(peer, Instant::now());
    }
}

/// The checks `GET /v1/ws` makes before it looks at the session: the failed-upgrade throttle (`429`), the `Origin`
/// (`403`) and the `Authorization: Bearer` token (`401`). Gives the token's claims.
#[allow(clippy::result_large_err)]
fn admit(gateway: &Gateway, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<Claims, Response> {
    let limits = &gateway.limits;
    if let Some(wait) =
        peer.and_then(|peer| gateway.throttle.retry_after(peer, limits.failed_upgrades_per_window, Instant::now()))
    {
        gateway.metrics.refused(Refused::Throttled);
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let message = "too many failed upgrade requests from this address; try again later\n";
        let mut response = answer(StatusCode::TOO_MANY_REQUESTS, "text/plain; charset=utf-8", message.into());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        return Err(response);
    }
    if !crate::limits::origin_allowed(headers, &limits.allowed_origins) {
        failed(gateway, peer, Refused::Origin);
        let message = "this origin may not open a WebSocket here\n";
        return Err(answer(StatusCode::FORBIDDEN, "text/plain; charset=utf-8", message.into()));
    }
    let token = bearer_token(headers).ok_or(AuthError::Missing);
    match token.and_then(|token| auth::verify_token(&gateway.secret, token, auth::now_unix())) {
        Ok(claims) => Ok(claims),
        Err(err) => {
            // A client mistake: answered and counted, not logged (nor is the token, ever).
            failed(gateway, peer, Refused::Unauthorized);
            let challenge = match err {
                AuthError::Missing => HeaderValue::from_static("Bearer"),
                _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
            };
            let mut response = answer(StatusCode::UNAUTHORIZED, "text/plain; charset=utf-8", format!("{err}\n"));
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            Err(response)
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// The query parameter `name`, percent-decoded, if present and not empty (as `GET /v1/ws` reads it).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        .filter(|value| !value.is_empty())?;
    percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|value| value.into_owned())
}

/// `GET /v1/agents`: the names the page offers in its agent list.
async fn agents(State(gateway): State<Gateway>, peer: Peer, headers: HeaderMap) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer.ip());
    if let Err(response) = admit(&gateway, peer, &headers) {
        return response;
    }
    let mut names: Vec<&str> = gateway.registry.agent_names().collect();
    names.sort_unstable();
    json(StatusCode::OK, serde_json::json!({ "agents": names }).to_string())
}

/// `GET /v1/ws/check`: what `GET /v1/ws` with the same token and query would answer before the upgrade.
///
/// A resume that would be accepted is carried out and ended at once, as if its connection had dropped right
/// away: a connection still attached to the session is taken over (close code 4000, which is what the real resume
/// would do too), and the session's resume window starts again. That is how the answer is exact whatever the
/// replay log is.
async fn check(State(gateway): State<Gateway>, peer: Peer, headers: HeaderMap, uri: Uri) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(peer))| peer.ip());
    let claims = match admit(&gateway, peer, &headers) {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    if gateway.shutdown.is_cancelled() {
        gateway.metrics.refused(Refused::Draining);
        return answer(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", "server shutting down\n".into());
    }
    let bad_request = |message: &str| answer(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", message.into());
    let after = query_param(uri.query(), "after");
    let Some(session) = query_param(uri.query(), "session") else {
        if after.is_some() {
            return bad_request("`after` needs `session`: resume with ?session=<id>&after=<seq>\n");
        }
        return json(StatusCode::OK, serde_json::json!({ "user": claims.user }).to_string());
    };
    let after = match after.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(after)) => after,
        Some(Err(_)) => return bad_request("`after` must be a whole number: the seq of the last message you have\n"),
    };
    let Ok(key) = session.parse::<SessionKey>() else {
        failed(&gateway, peer, Refused::UnknownSession);
        return unknown_session();
    };
    match gateway.sessions.resume(&claims.user, key, after) {
        Ok((_live, attached)) => {
            gateway.sessions.detach(key, attached, false);
            let body = serde_json::json!({ "user": claims.user, "last_seq": attached.last_seq });
            json(StatusCode::OK, body.to_string())
        }
        Err(AttachError::Gap { first_seq }) => {
            gateway.metrics.refused(Refused::ResumeGap);
            json(StatusCode::CONFLICT, format!("{{\"error\":\"resume_gap\",\"first_seq\":{first_seq}}}\n"))
        }
        Err(_) => {
            failed(&gateway, peer, Refused::UnknownSession);
            unknown_session()
        }
    }
}

/// The same answer as `GET /v1/ws` for an unknown, expired or another user's session.
fn unknown_session() -> Response {
    json(StatusCode::NOT_FOUND, "{\"error\":\"unknown_session\"}\n".into())
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
