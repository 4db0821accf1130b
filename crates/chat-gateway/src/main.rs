//! The `chat-gateway` command: `serve` the gateway, or mint a `token`.
//!
//! Usage mistakes print one line on stderr and exit with status 2; a server that cannot start exits with 1.

// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chat_gateway::auth::{self, Secret};
use chat_gateway::cluster::{DEFAULT_NODE_LEASE, RedisEventLog};
use chat_gateway::limits::{
    DEFAULT_FAILED_UPGRADES_PER_WINDOW, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_USER, DEFAULT_MAX_SESSIONS_PER_USER, DEFAULT_QUIET_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
use chat_gateway::replay::{DEFAULT_REPLAY_BYTES, DEFAULT_REPLAY_LIMIT, MemoryReplayLog};
use chat_gateway::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_RUNS_PER_CONNECTION, DEFAULT_RESUME_WINDOW, Gateway, builtin_registry,
};

const SECRET_VAR: &str = "CHAT_GATEWAY_SECRET";
const LOG_VAR: &str = "CHAT_GATEWAY_LOG";

const USAGE: &str = "\
chat-gateway: WebSocket chat gateway over the agent registry

Usage:
  chat-gateway serve [--addr 127.0.0.1:8080] [--metrics-addr 127.0.0.1:9464] [--dev]
                     [--drain-timeout 5s] [--resume-window 30s] [--replay-limit 4096]
                     [--replay-bytes 1MiB]
                     [--max-connections-per-user 8] [--max-sessions-per-user 16]
                     [--max-connections 10000]
                     [--idle-timeout 20s] [--write-timeout 10s] [--quiet-timeout 60s]
                     [--max-sockets-per-address N] [--failed-upgrades-per-minute 20]
                     [--allowed-origin https://chat.example.com]...
                     [--event-log redis://127.0.0.1:6379] [--node-id ID] [--node-lease 3s]
  chat-gateway token --user <id> [--ttl 1h]

serve   Serves GET /v1/ws, /healthz and the chat page (GET /) on --addr, GET /metrics on --metrics-addr.
        Tokens are checked with the HS256 secret in CHAT_GATEWAY_SECRET; --dev makes a random secret
        instead and prints a token for user `dev` (the page offers it too). Port 0 picks a free port (the log says which). SIGTERM or Ctrl-C drains:
        runs get up to --drain-timeout to finish, then are cancelled; clients get every terminal event,
        then a close frame; a second signal ends the drain at once. A session whose connection drops
        stays resumable for --resume-window, keeping up to --replay-limit of its latest messages and
        --replay-bytes of their text (its runs wait rather than lose one).
        Limits: connections per user (429 beyond) and in all (503 beyond); sessions per user (a new one
        closes the user's oldest waiting for a resume, 429 if none waits); a silent connection is
        pinged after --idle-timeout and closed (4002) after another; a client that accepts no frame
        for --write-timeout is cut off; a socket the gateway writes nothing to for --quiet-timeout (a
        request that never ends) is closed, and one address may hold --max-sockets-per-address (no cap
        of its own by default: behind a proxy every user has its address); an address with more failed
        upgrade requests per minute gets
        429 until the minute ends; a browser page may connect from the gateway's own origin or an
        --allowed-origin (403 otherwise).
        --event-log shares the sessions with every gateway process using the same Redis: a client
        resumes on any of them; runs stay on the node that started them (--node-id, random by
        default), which holds a lease of --node-lease in Redis: when it lapses, another node ends
        that node's runs (`agent_completed`, failed). Redis unreachable at start: exit 2.
token   Prints a token for --user, valid for --ttl (s, m, h or d; default 1h), signed with
        CHAT_GATEWAY_SECRET, alone on stdout.

Logs go to stderr; set CHAT_GATEWAY_LOG=debug (error, warn, info, debug, trace) for more.";

/// A mistake on the command line or in the environment: one line on stderr, exit status 2.
struct UsageError(String);

enum Command {
    Help,
    Version,
    Serve(Box<ServeOptions>),
    Token { user: String, ttl: Duration },
}

/// Everything `serve` takes from the command line.
#[derive(Debug)]
struct ServeOptions {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    dev: bool,
    drain_timeout: Duration,
    resume_window: Duration,
    replay_limit: usize,
    replay_bytes: usize,
    max_connections_per_user: usize,
    max_sessions_per_user: usize,
    max_connections: usize,
    idle_timeout: Duration,
    write_timeout: Duration,
    quiet_timeout: Duration,
    max_sockets_per_address: Option<usize>,
    failed_upgrades_per_minute: u32,
    allowed_origins: Vec<String>,
    event_log: Option<String>,
    node_id: Option<String>,
    node_lease: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            dev: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            resume_window: DEFAULT_RESUME_WINDOW,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            replay_bytes: DEFAULT_REPLAY_BYTES,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            quiet_timeout: DEFAULT_QUIET_TIMEOUT,
            max_sockets_per_address: None,
            failed_upgrades_per_minute: DEFAULT_FAILED_UPGRADES_PER_WINDOW,
            allowed_origins: Vec::new(),
            event_log: None,
            node_id: None,
            node_lease: DEFAULT_NODE_LEASE,
        }
    }
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(UsageError(message)) => {
            eprintln!("error: {message}; see `chat-gateway --help`");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("chat-gateway {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Token { user, ttl } => token(&user, ttl),
        Command::Serve(options) => serve(*options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// The user can fix it (exit 2).
    Usage(String),
    /// The server failed (exit 1).
    Runtime(String),
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Command, UsageError> {
    let mut args = args.peekable();
    let Some(subcommand) = args.next() else {
        return Err(UsageError("missing command: expected `serve` or `token`".into()));
    };
    let mut flags = Vec::new();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(UsageError(format!("unexpected argument `{arg}`")));
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None if flag == "dev" || flag == "help" => (flag.to_owned(), None),
            None => (flag.to_owned(), args.next_if(|value| !value.starts_with("--"))),
        };
        flags.push((name, value));
    }
    let value =
        |name: &str, value: Option<String>| value.ok_or_else(|| UsageError(format!("`--{name}` needs a value")));
    match subcommand.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "serve" => {
            let mut options = ServeOptions::default();
            for (name, given) in flags {
                match name.as_str() {
                    "help" => return Ok(Command::Help),
                    "dev" => options.dev = true,
                    "addr" => options.addr = parse_addr(&name, &value(&name, given)?)?,
                    "metrics-addr" => options.metrics_addr = parse_addr(&name, &value(&name, given)?)?,
                    "drain-timeout" => options.drain_timeout = parse_duration(&name, &value(&name, given)?)?,
                    "resume-window" => options.resume_window = parse_duration(&name, &value(&name, given)?)?,
                    "replay-limit" => options.replay_limit = parse_count(&name, &value(&name, given)?, "messages")?,
                    "replay-bytes" => options.replay_bytes = parse_bytes(&name, &value(&name, given)?)?,
                    "event-log" => options.event_log = Some(parse_event_log(&name, value(&name, given)?)?),
                    "node-id" => options.node_id = Some(parse_node_id(&name, value(&name, given)?)?),
                    "node-lease" => options.node_lease = parse_timeout(&name, &value(&name, given)?)?,
                    "max-connections-per-user" => {
                        options.max_connections_per_user = parse_count(&name, &value(&name, given)?, "connections")?;
                    }
                    "max-sessions-per-user" => {
                        options.max_sessions_per_user = parse_count(&name, &value(&name, given)?, "sessions")?;
                    }
                    "max-connections" => {
                        options.max_connections = parse_count(&name, &value(&name, given)?, "connections")?;
                    }
                    "idle-timeout" => options.idle_timeout = parse_timeout(&name, &value(&name, given)?)?,
                    "write-timeout" => options.write_timeout = parse_timeout(&name, &value(&name, given)?)?,
                    "quiet-timeout" => options.quiet_timeout = parse_timeout(&name, &value(&name, given)?)?,
                    "max-sockets-per-address" => {
                        options.max_sockets_per_address = Some(parse_count(&name, &value(&name, given)?, "sockets")?);
                    }
                    "failed-upgrades-per-minute" => {
                        let text = value(&name, given)?;
                        options.failed_upgrades_per_minute = text.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            UsageError(format!("`--{name} {text}` is not a number of requests above zero"))
                        })?;
                    }
                    "allowed-origin" => {
                        let text = value(&name, given)?;
                        let origin = text.trim_end_matches('/');
                        let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
                            matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
                        });
                        if !valid {
                            return Err(UsageError(format!(
                                "`--allowed-origin {text}` is not an origin like https://chat.example.com"
                            )));
                        }
                        options.allowed_origins.push(origin.to_owned());
                    }
                    other => return Err(UsageError(format!("unknown flag `--{other}` for `serve`"))),
                }
            }
            Ok(Command::Serve(Box::new(options)))
        }
        "token" => {
            let (mut user, mut ttl) = (None, Duration::from_secs(3600));
            for (name, given) in flags {
                match name.as_str() {
                    "help" => return Ok(Command::Help),
                    "user" => user = Some(value(&name, given)?).filter(|user| !user.is_empty()),
                    "ttl" => ttl = parse_duration(&name, &value(&name, given)?)?,
                    other => return Err(UsageError(format!("unknown flag `--{other}` for `token`"))),
                }
            }
            let user = user.ok_or_else(|| UsageError("`token` needs `--user <id>` (a non-empty user id)".into()))?;
            if user.len() > auth::MAX_SUBJECT_BYTES {
                return Err(UsageError(format!(
                    "`--user` has {} bytes; a user id may have at most {}",
                    user.len(),
                    auth::MAX_SUBJECT_BYTES
                )));
            }
            if ttl.is_zero() {
                return Err(UsageError("`--ttl` must be more than zero".into()));
            }
            Ok(Command::Token { user, ttl })
        }
        other => Err(UsageError(format!("unknown command `{other}`: expected `serve` or `token`"))),
    }
}

fn parse_event_log(flag: &str, url: String) -> Result<String, UsageError> {
    if url.starts_with("rediss://") {
        // The crate is built without TLS: say so, rather than fail later as if the URL were wrong.
        return Err(UsageError(format!("`--{flag}`: this build speaks to Redis without TLS; use a redis:// URL")));
    }
    if url.starts_with("redis://") || url.starts_with("redis+unix://") {
        Ok(url)
    } else {
        // Not echoed: a URL may carry a password.
        Err(UsageError(format!("`--{flag}` is not a Redis URL like redis://127.0.0.1:6379")))
    }
}

fn parse_node_id(flag: &str, id: String) -> Result<String, UsageError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if (1..=64).contains(&id.len()) && id.chars().all(allowed) {
        Ok(id)
    } else {
        Err(UsageError(format!("`--{flag} {id}` is not a node id: 1 to 64 letters, digits, `-`, `_` or `.`")))
    }
}

fn parse_addr(flag: &str, text: &str) -> Result<SocketAddr, UsageError> {
    text.parse().map_err(|_| UsageError(format!("`--{flag} {text}` is not an address like 127.0.0.1:8080")))
}

/// A whole number above zero, of `what`.
fn parse_count(flag: &str, text: &str, what: &str) -> Result<usize, UsageError> {
    text.parse()
        .ok()
        .filter(|count| *count > 0)
        .ok_or_else(|| UsageError(format!("`--{flag} {text}` is not a number of {what} above zero")))
}

/// `65536`, `64KiB` or `1MiB`: a number of bytes above zero.
fn parse_bytes(flag: &str, text: &str) -> Result<usize, UsageError> {
    let (digits, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, ""), |at| text.split_at(at));
    let multiplier = match unit {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => 0,
    };
    digits
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0 && multiplier > 0)
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| UsageError(format!("`--{flag} {text}` is not a size above zero like 65536, 64KiB or 1MiB")))
}

/// A duration above zero.
fn parse_timeout(flag: &str, text: &str) -> Result<Duration, UsageError> {
    let timeout = parse_duration(flag, text)?;
    if timeout.is_zero() {
        return Err(UsageError(format!("`--{flag}` must be more than zero")));
    }
    Ok(timeout)
}

/// `90`, `90s`, `15m`, `1h` or `7d`.
fn parse_duration(flag: &str, text: &str) -> Result<Duration, UsageError> {
    let (digits, unit) = text.find(|c: char| !c.is_ascii_digit()).map_or((text, ""), |at| text.split_at(at));
    let multiplier = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| multiplier > 0)
        .and_then(|n| n.checked_mul(multiplier))
        .map(Duration::from_secs)
        .ok_or_else(|| UsageError(format!("`--{flag} {text}` is not a duration like 30s, 15m, 1h or 7d")))
}

fn secret_from_env() -> Result<Secret, Failure> {
    let value = std::env::var_os(SECRET_VAR).unwrap_or_default();
    Secret::new(value.into_encoded_bytes()).ok_or_else(|| {
        Failure::Usage(format!(
            "{SECRET_VAR} is not set or empty: export the HS256 secret (e.g. `export {SECRET_VAR}=$(openssl rand -hex 32)`), \
             or run `chat-gateway serve --dev` for a throwaway one"
        ))
    })
}

fn token(user: &str, ttl: Duration) -> Result<(), Failure> {
    let secret = secret_from_env()?;
    println!("{}", auth::mint_token(&secret, user, ttl, auth::now_unix()));
    Ok(())
}

fn serve(options: ServeOptions) -> Result<(), Failure> {
    let (secret, dev_token) = if options.dev {
        let secret = Secret::random();
        let token = auth::mint_token(&secret, "dev", Duration::from_secs(86_400), auth::now_unix());
        eprintln!("dev mode: random secret; a token for user `dev`, valid 24h, follows on stdout");
        println!("{token}");
        (secret, Some(token))
    } else {
        (secret_from_env()?, None)
    };
    init_logging()?;
    if secret.len() < 32 {
        tracing::warn!("{SECRET_VAR} has {} bytes; use at least 32 random bytes for HS256", secret.len());
    }
    if let Some(limit) = open_file_limit()
        && limit < options.max_connections as u64 + 64
    {
        tracing::warn!(
            "the open-file limit ({limit}) is below --max-connections ({}) plus some to spare: connections beyond it \
             will fail to be accepted; raise it (`ulimit -n`) or lower --max-connections",
            options.max_connections
        );
    }
    let registry = builtin_registry(DEFAULT_MAX_RUNS_PER_CONNECTION)
        .map_err(|err| Failure::Runtime(format!("cannot build the agent registry: {err}")))?;
    let gateway = Gateway::new(registry, secret)
        .drain_timeout(options.drain_timeout)
        .resume_window(options.resume_window)
        .replay_log(Arc::new(MemoryReplayLog::new(options.replay_limit).byte_limit(options.replay_bytes)))
        .max_connections_per_user(options.max_connections_per_user)
        .max_sessions_per_user(options.max_sessions_per_user)
        .max_connections(options.max_connections)
        .idle_timeout(options.idle_timeout)
        .write_timeout(options.write_timeout)
        .quiet_timeout(options.quiet_timeout)
        .max_sockets_per_address(options.max_sockets_per_address.unwrap_or(usize::MAX))
        .failed_upgrades_per_minute(options.failed_upgrades_per_minute)
        .allowed_origins(options.allowed_origins);
    // With --dev, the browser page offers the dev token (GET /dev-token).
    let gateway = match dev_token {
        Some(token) => gateway.dev_token(token),
        None => gateway,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::Runtime(format!("cannot start the async runtime: {err}")))?;
    runtime.block_on(async move {
        // Listen for signals before binding: a supervisor may send SIGTERM as soon as it sees `listening on`.
        let mut signals =
            Signals::new().map_err(|err| Failure::Runtime(format!("cannot listen for signals: {err}")))?;
        let bind = |addr: SocketAddr, flag: &'static str| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|err| Failure::Runtime(format!("cannot listen on {addr} (--{flag}): {err}")))
        };
        let gateway = match &options.event_log {
            None => gateway,
            Some(url) => {
                let lease = options.node_lease;
                let log = RedisEventLog::connect(url, options.node_id.as_deref(), lease, options.replay_limit)
                    .await
                    .map_err(|err| Failure::Usage(err.to_string()))?;
                gateway.redis_event_log(log)
            }
        };
        let metrics_listener = bind(options.metrics_addr, "metrics-addr").await?;
        let listener = bind(options.addr, "addr").await?;
        let metrics_addr = metrics_listener.local_addr().map_err(|err| Failure::Runtime(err.to_string()))?;
        tracing::info!("metrics on http://{metrics_addr}/metrics");
        // Lives as long as the runtime: the counters stay readable through the whole drain.
        tokio::spawn(axum::serve(metrics_listener, gateway.metrics_router()).into_future());
        let (first, first_rx) = tokio::sync::oneshot::channel::<()>();
        let handle = gateway.clone();
        tokio::spawn(async move {
            signals.next().await;
            let _ = first.send(());
            signals.next().await;
            tracing::warn!("second signal: ending the drain now");
            handle.end_drain();
        });
        let shutdown = async move {
            let _ = first_rx.await;
        };
        gateway.serve(listener, shutdown).await.map_err(|err| Failure::Runtime(format!("server failed: {err}")))
    })
}

/// The soft limit on open files of this process, where the system says (Linux: `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn init_logging() -> Result<(), Failure> {
    let level = match std::env::var(LOG_VAR) {
        Ok(level) => level.parse::<tracing_subscriber::filter::LevelFilter>().map_err(|_| {
            Failure::Usage(format!("{LOG_VAR}={level} is not a level: use error, warn, info, debug or trace"))
        })?,
        Err(_) => tracing_subscriber::filter::LevelFilter::INFO,
    };
    tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).init();
    Ok(())
}

/// Ctrl-C and SIGTERM, registered when made (so none is missed between start-up and the first wait).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// Completes on the next Ctrl-C or SIGTERM.
    #[cfg(unix)]
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    /// Completes on the next Ctrl-C.
    #[cfg(not(unix))]
    async fn next(&mut self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(args: &str, expect: &str) {
        let actual = match parse_args(args.split_whitespace().map(str::to_owned)) {
            Ok(Command::Help) => "help".to_owned(),
            Ok(Command::Version) => "version".to_owned(),
            Ok(Command::Serve(options)) => {
                let ServeOptions { addr, dev, drain_timeout, resume_window, replay_limit, .. } = *options;
                format!("serve {addr} dev={dev} drain={drain_timeout:?} window={resume_window:?} log={replay_limit}")
            }
            Ok(Command::Token { user, ttl }) => format!("token {user} {ttl:?}"),
            Err(UsageError(message)) => format!("error: {message}"),
        };
        assert_eq!(actual, expect);
    }

    #[track_caller]
    fn check_limits(args: &str, expect: &str) {
        let actual = match parse_args(args.split_whitespace().map(str::to_owned)) {
            Ok(Command::Serve(options)) => format!(
                "metrics={} bytes={} user={} sessions={} all={} idle={:?} write={:?} quiet={:?} sockets={:?} \
                 failed={} origins={:?}",
                options.metrics_addr,
                options.replay_bytes,
                options.max_connections_per_user,
                options.max_sessions_per_user,
                options.max_connections,
                options.idle_timeout,
                options.write_timeout,
                options.quiet_timeout,
                options.max_sockets_per_address,
                options.failed_upgrades_per_minute,
                options.allowed_origins
            ),
            Ok(_) => "not serve".to_owned(),
            Err(UsageError(message)) => format!("error: {message}"),
        };
        assert_eq!(actual, expect);
    }

    #[test]
    fn parses_the_limits() {
        check_limits(
            "serve",
            "metrics=127.0.0.1:9464 bytes=1048576 user=8 sessions=16 all=10000 idle=20s write=10s quiet=60s sockets=None failed=20 origins=[]",
        );
        check_limits(
            "serve --metrics-addr 127.0.0.1:0 --replay-bytes 64KiB --max-connections-per-user 2 --max-sessions-per-user 3 --max-connections 50 --idle-timeout 1m \
             --write-timeout 3s --quiet-timeout 2m --max-sockets-per-address 64 --failed-upgrades-per-minute 5 --allowed-origin https://a.example/ \
             --allowed-origin=http://b.example:8080",
            "metrics=127.0.0.1:0 bytes=65536 user=2 sessions=3 all=50 idle=60s write=3s quiet=120s sockets=Some(64) failed=5 \
             origins=[\"https://a.example\", \"http://b.example:8080\"]",
        );
        check_limits(
            "serve --max-connections-per-user 0",
            "error: `--max-connections-per-user 0` is not a number of connections above zero",
        );
        check_limits(
            "serve --max-connections x",
            "error: `--max-connections x` is not a number of connections above zero",
        );
        check_limits(
            "serve --replay-bytes 2MiB",
            "metrics=127.0.0.1:9464 bytes=2097152 user=8 sessions=16 all=10000 idle=20s write=10s quiet=60s sockets=None failed=20 origins=[]",
        );
        check_limits(
            "serve --replay-bytes 1GB",
            "error: `--replay-bytes 1GB` is not a size above zero like 65536, 64KiB or 1MiB",
        );
        check_limits("serve --idle-timeout 0s", "error: `--idle-timeout` must be more than zero");
        check_limits(
            "serve --write-timeout soon",
            "error: `--write-timeout soon` is not a duration like 30s, 15m, 1h or 7d",
        );
        check_limits(
            "serve --failed-upgrades-per-minute 0",
            "error: `--failed-upgrades-per-minute 0` is not a number of requests above zero",
        );
        check_limits(
            "serve --allowed-origin chat.example.com",
            "error: `--allowed-origin chat.example.com` is not an origin like https://chat.example.com",
        );
        check_limits(
            "serve --allowed-origin https://a.example/path",
            "error: `--allowed-origin https://a.example/path` is not an origin like https://chat.example.com",
        );
        check_limits("serve --metrics-addr 9464", "error: `--metrics-addr 9464` is not an address like 127.0.0.1:8080");
    }

    #[test]
    fn parses_the_command_line() {
        check("serve", "serve 127.0.0.1:8080 dev=false drain=5s window=30s log=4096");
        check("serve --addr 127.0.0.1:0 --dev", "serve 127.0.0.1:0 dev=true drain=5s window=30s log=4096");
        check(
            "serve --dev --addr=[::1]:9000 --drain-timeout 0",
            "serve [::1]:9000 dev=true drain=0ns window=30s log=4096",
        );
        check(
            "serve --resume-window 2m --replay-limit 16",
            "serve 127.0.0.1:8080 dev=false drain=5s window=120s log=16",
        );
        check("serve --replay-limit 0", "error: `--replay-limit 0` is not a number of messages above zero");
        check(
            "serve --event-log redis://127.0.0.1:6379 --node-id gw-1",
            "serve 127.0.0.1:8080 dev=false drain=5s window=30s log=4096",
        );
        check(
            "serve --event-log http://x:secret@h",
            "error: `--event-log` is not a Redis URL like redis://127.0.0.1:6379",
        );
        check(
            "serve --event-log rediss://h",
            "error: `--event-log`: this build speaks to Redis without TLS; use a redis:// URL",
        );
        check(
            "serve --node-id a/b",
            "error: `--node-id a/b` is not a node id: 1 to 64 letters, digits, `-`, `_` or `.`",
        );
        check("serve --node-lease 0s", "error: `--node-lease` must be more than zero");
        check("token --user alice", "token alice 3600s");
        check("token --ttl 15m --user bob", "token bob 900s");
        check("token --user bob --ttl 2d", "token bob 172800s");
        check("--help", "help");
        check("serve --help", "help");
        check("", "error: missing command: expected `serve` or `token`");
        check("launch", "error: unknown command `launch`: expected `serve` or `token`");
        check("serve --addr", "error: `--addr` needs a value");
        check("serve --addr localhost", "error: `--addr localhost` is not an address like 127.0.0.1:8080");
        check("serve --port 1", "error: unknown flag `--port` for `serve`");
        check("serve extra", "error: unexpected argument `extra`");
        check("token", "error: `token` needs `--user <id>` (a non-empty user id)");
        check("token --user --ttl 1h", "error: `--user` needs a value");
        check("token --user a --ttl 1y", "error: `--ttl 1y` is not a duration like 30s, 15m, 1h or 7d");
        check("token --user a --ttl 0s", "error: `--ttl` must be more than zero");
        check(
            &format!("token --user {}", "u".repeat(257)),
            "error: `--user` has 257 bytes; a user id may have at most 256",
        );
        check(
            "token --user a --ttl 99999999999999999d",
            "error: `--ttl 99999999999999999d` is not a duration like 30s, 15m, 1h or 7d",
        );
    }
}
