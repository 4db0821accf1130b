//! The `chat-gateway` command: `serve` the gateway, or mint a `token`.
//!
//! Usage mistakes print one line on stderr and exit with status 2; a server that cannot start exits with 1.

// A command-line program talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use chat_gateway::auth::{self, Secret};
use chat_gateway::replay::DEFAULT_REPLAY_LIMIT;
use chat_gateway::{
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_RUNS_PER_CONNECTION, DEFAULT_RESUME_WINDOW, Gateway, builtin_registry,
};

const SECRET_VAR: &str = "CHAT_GATEWAY_SECRET";
const LOG_VAR: &str = "CHAT_GATEWAY_LOG";

const USAGE: &str = "\
chat-gateway: WebSocket chat gateway over the agent registry

Usage:
  chat-gateway serve [--addr 127.0.0.1:8080] [--dev] [--drain-timeout 5s] [--resume-window 30s]
                     [--replay-limit 4096]
  chat-gateway token --user <id> [--ttl 1h]

serve   Serves GET /v1/ws, /healthz and /metrics. Tokens are checked with the HS256 secret in
        CHAT_GATEWAY_SECRET; --dev makes a random secret instead and prints a token for user `dev`.
        --addr 127.0.0.1:0 picks a free port (the log says which). SIGTERM or Ctrl-C drains: runs get
        up to --drain-timeout to finish, then are cancelled; clients get every terminal event, then a
        close frame. A session whose connection drops stays resumable for --resume-window, keeping up
        to --replay-limit of its latest messages (its runs wait rather than lose one).
token   Prints a token for --user, valid for --ttl (s, m, h or d; default 1h), signed with
        CHAT_GATEWAY_SECRET, alone on stdout.

Logs go to stderr; set CHAT_GATEWAY_LOG=debug (error, warn, info, debug, trace) for more.";

/// A mistake on the command line or in the environment: one line on stderr, exit status 2.
struct UsageError(String);

enum Command {
    Help,
    Version,
    Serve { addr: SocketAddr, dev: bool, drain_timeout: Duration, resume_window: Duration, replay_limit: usize },
    Token { user: String, ttl: Duration },
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
        Command::Serve { addr, dev, drain_timeout, resume_window, replay_limit } => {
            serve(addr, dev, drain_timeout, resume_window, replay_limit)
        }
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
            let mut addr = SocketAddr::from(([127, 0, 0, 1], 8080));
            let (mut dev, mut drain_timeout) = (false, DEFAULT_DRAIN_TIMEOUT);
            let (mut resume_window, mut replay_limit) = (DEFAULT_RESUME_WINDOW, DEFAULT_REPLAY_LIMIT);
            for (name, given) in flags {
                match name.as_str() {
                    "help" => return Ok(Command::Help),
                    "dev" => dev = true,
                    "addr" => {
                        let text = value(&name, given)?;
                        addr = text.parse().map_err(|_| {
                            UsageError(format!("`--addr {text}` is not an address like 127.0.0.1:8080"))
                        })?;
                    }
                    "drain-timeout" => drain_timeout = parse_duration(&name, &value(&name, given)?)?,
                    "resume-window" => resume_window = parse_duration(&name, &value(&name, given)?)?,
                    "replay-limit" => {
                        let text = value(&name, given)?;
                        replay_limit = text.parse().ok().filter(|limit| *limit > 0).ok_or_else(|| {
                            UsageError(format!("`--replay-limit {text}` is not a number of messages above zero"))
                        })?;
                    }
                    other => return Err(UsageError(format!("unknown flag `--{other}` for `serve`"))),
                }
            }
            Ok(Command::Serve { addr, dev, drain_timeout, resume_window, replay_limit })
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
            if ttl.is_zero() {
                return Err(UsageError("`--ttl` must be more than zero".into()));
            }
            Ok(Command::Token { user, ttl })
        }
        other => Err(UsageError(format!("unknown command `{other}`: expected `serve` or `token`"))),
    }
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

fn serve(
    addr: SocketAddr,
    dev: bool,
    drain_timeout: Duration,
    resume_window: Duration,
    replay_limit: usize,
) -> Result<(), Failure> {
    let (secret, dev_token) = if dev {
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
    let registry = builtin_registry(DEFAULT_MAX_RUNS_PER_CONNECTION)
        .map_err(|err| Failure::Runtime(format!("cannot build the agent registry: {err}")))?;
    let gateway = Gateway::new(registry, secret)
        .drain_timeout(drain_timeout)
        .resume_window(resume_window)
        .replay_limit(replay_limit);
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
        let shutdown =
            shutdown_signal().map_err(|err| Failure::Runtime(format!("cannot listen for signals: {err}")))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|err| Failure::Runtime(format!("cannot listen on {addr}: {err}")))?;
        gateway.serve(listener, shutdown).await.map_err(|err| Failure::Runtime(format!("server failed: {err}")))
    })
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

/// Registers for Ctrl-C and SIGTERM now, and returns a future that completes on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(args: &str, expect: &str) {
        let actual = match parse_args(args.split_whitespace().map(str::to_owned)) {
            Ok(Command::Help) => "help".to_owned(),
            Ok(Command::Version) => "version".to_owned(),
            Ok(Command::Serve { addr, dev, drain_timeout, resume_window, replay_limit }) => {
                format!("serve {addr} dev={dev} drain={drain_timeout:?} window={resume_window:?} log={replay_limit}")
            }
            Ok(Command::Token { user, ttl }) => format!("token {user} {ttl:?}"),
            Err(UsageError(message)) => format!("error: {message}"),
        };
        assert_eq!(actual, expect);
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
            "token --user a --ttl 99999999999999999d",
            "error: `--ttl 99999999999999999d` is not a duration like 30s, 15m, 1h or 7d",
        );
    }
}
