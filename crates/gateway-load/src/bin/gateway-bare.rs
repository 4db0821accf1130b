//! `gateway-bare`: a bare tokio-tungstenite server that sends the frames `chat-gateway` sends, and nothing else.
//!
//! ```text
//! gateway-bare [--addr 127.0.0.1:0] [--read-buffer 2048] [--write-buffer 8192] [--idle-timeout 20]
//!              [--write-timeout 10] [--nagle]
//! ```
//!
//! No authentication (the token is ignored), no registry, no sessions, no replay log: for each connection to
//! `/v1/ws` it sends the `session` frame, then answers each `run` with the events the built-in agent would produce
//! (`gateway_load::script`: `echo`, `tools`, `fail` and `panic` at once, `slow` with its 10 ms steps), numbered per
//! connection from 1, with the run's `request_id` echoed and a `run-N` id from one counter for the process, in the
//! gateway's bytes (`gateway_load::frame`). It is the transport's limit for the benchmark: the same frames, the same
//! timers, the same WebSocket settings.
//!
//! WebSocket settings and timers, as the gateway sets them (`READ_BUFFER`, `WRITE_BUFFER` in
//! `crates/chat-gateway/src/server.rs`, its limits' defaults): a 2 KiB read buffer (tungstenite's default is 128 KiB,
//! allocated up front for every connection), an 8 KiB write buffer (the size at which buffered frames are written
//! out; a flush writes everything anyway), messages and frames up to 1 MiB; a ping after 20 s without a frame from
//! the client and a close (4002) after 20 s more; every write under a 10 s deadline; Nagle's algorithm off
//! (`TCP_NODELAY`, as the gateway's listener sets it; `--nagle` leaves it on, as the gateway did before). The
//! gateway also sizes each socket's kernel send buffer (64 KiB); this server leaves the kernel's default, which is
//! kernel memory, not the process's. Each connection has a reader task and a writer task, as the gateway's has: the
//! writer numbers and writes what the reader and the `slow` runs hand it, in batches of up to 64 frames per flush.
//! Keep these in step with the gateway.
//!
//! It prints `listening on ADDR` on stderr once it listens, and runs until it is killed.
// A command-line program talks to its user on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use gateway_load::frame::{error_frame, event_frame, session_frame};
use gateway_load::script::{Event, script, unknown_agent_message};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

const USAGE: &str = "\
gateway-bare: a bare tokio-tungstenite server sending the frames chat-gateway sends (the benchmark's baseline)

Usage:
  gateway-bare [--addr 127.0.0.1:0] [--read-buffer 2048] [--write-buffer 8192] [--idle-timeout 20]
               [--write-timeout 10] [--nagle]

  --addr ADDR            where to listen (default 127.0.0.1:0: a free port; `listening on ADDR` on stderr says which)
  --read-buffer BYTES    tungstenite's read buffer per connection (default 2048, as the gateway's)
  --write-buffer BYTES   tungstenite's write buffer threshold per connection (default 8192, as the gateway's)
  --idle-timeout SECS    a ping after this long without a frame from the client, a close (4002) after as long
                         again (default 20, as the gateway's; 0: never)
  --write-timeout SECS   the deadline of every write; a client that accepts nothing for this long is cut off
                         (default 10, as the gateway's; 0: none)
  --nagle                leave Nagle's algorithm on (by default TCP_NODELAY turns it off, as the gateway does)

Serves GET /v1/ws with no authentication: the session frame, then each run's events as the built-in agents
produce them. Runs until it is killed.";

/// The gateway's limits on what it reads (its `HARD_FRAME_LIMIT`) and on a text message it accepts as a message.
const HARD_FRAME_LIMIT: usize = 1024 * 1024;
const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The most frames written before one flush, as the gateway's send task does.
const BATCH: usize = 64;

/// Frames waiting for a connection's writer (the readers and `slow` runs wait while it is full).
const QUEUE: usize = 64;

struct Options {
    addr: SocketAddr,
    read_buffer: usize,
    write_buffer: usize,
    idle_timeout: Duration,
    write_timeout: Duration,
    nodelay: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        read_buffer: 2048,
        write_buffer: 8192,
        idle_timeout: Duration::from_secs(20),
        write_timeout: Duration::from_secs(10),
        nodelay: true,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if flag == "--nagle" {
            options.nodelay = false;
            continue;
        }
        let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("`{flag}` needs a value"));
        let number = |text: String, min: u64| {
            text.parse::<u64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| format!("`{flag} {text}` is not a whole number of at least {min}"))
        };
        match flag.as_str() {
            "--addr" => {
                let text = value()?;
                options.addr =
                    text.parse().map_err(|_| format!("`--addr {text}` is not an address like 127.0.0.1:8080"))?;
            }
            // tungstenite needs room for a frame header in its read buffer.
            "--read-buffer" => options.read_buffer = number(value()?, 64)? as usize,
            "--write-buffer" => options.write_buffer = number(value()?, 0)? as usize,
            "--idle-timeout" => options.idle_timeout = Duration::from_secs(number(value()?, 0)?),
            "--write-timeout" => options.write_timeout = Duration::from_secs(number(value()?, 0)?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}; see `gateway-bare --help`");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What every connection shares.
struct Shared {
    config: WebSocketConfig,
    idle_timeout: Duration,
    write_timeout: Duration,
    nodelay: bool,
    /// The last run id handed out: one counter for the process, as the registry's.
    last_run: AtomicU64,
    last_session: AtomicU64,
    seed: u64,
}

async fn serve(options: Options) -> Result<(), String> {
    let listener =
        TcpListener::bind(options.addr).await.map_err(|err| format!("cannot listen on {}: {err}", options.addr))?;
    let addr = listener.local_addr().map_err(|err| format!("no local address: {err}"))?;
    eprintln!("listening on {addr}");
    let config = WebSocketConfig::default()
        .read_buffer_size(options.read_buffer)
        .write_buffer_size(options.write_buffer)
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT));
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |now| now.as_nanos() as u64);
    let shared = Arc::new(Shared {
        config,
        idle_timeout: options.idle_timeout,
        write_timeout: options.write_timeout,
        nodelay: options.nodelay,
        last_run: AtomicU64::new(0),
        last_session: AtomicU64::new(0),
        seed: seed ^ u64::from(std::process::id()),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, Arc::clone(&shared)));
            }
            Err(err) => {
                // Out of file descriptors, most likely: wait for some to be freed rather than spin.
                eprintln!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A 64-bit mix (splitmix64): session ids that look like the gateway's (32 hex digits) without a dependency.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A frame on its way to the connection's writer, which numbers it. Boxed in the channel, whose first block of 32
/// slots every connection allocates up front (80 bytes a slot unboxed).
enum Out {
    Event { run: u64, request_id: Option<Arc<str>>, event: Event },
    Error { request_id: Option<String>, code: &'static str, message: String },
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    if shared.nodelay {
        let _ = stream.set_nodelay(true);
    }
    // The callback's type is tungstenite's: its error is the whole refusal response.
    #[allow(clippy::result_large_err)]
    let only_v1_ws = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() == "/v1/ws" {
            Ok(response)
        } else {
            let mut refused = ErrorResponse::new(Some("not found\n".to_owned()));
            *refused.status_mut() = StatusCode::NOT_FOUND;
            Err(refused)
        }
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async_with_config(stream, only_v1_ws, Some(shared.config)).await
    else {
        return;
    };
    let number = shared.last_session.fetch_add(1, Ordering::Relaxed);
    let session_id = format!("{:016x}{:016x}", mix(shared.seed ^ number), mix(!shared.seed ^ number));
    let (sink, stream) = socket.split();
    let (frames, queue) = mpsc::channel(QUEUE);
    let (stop, stop_rx) = oneshot::channel();
    // The reader asks the writer (the only writer) for a ping when the client has been silent.
    let ping = Arc::new(Notify::new());
    let writer = tokio::spawn(write_loop(sink, queue, stop_rx, Arc::clone(&ping), session_id, shared.write_timeout));
    let close = read_loop(stream, frames, &ping, &shared).await;
    let _ = stop.send(close);
    let _ = writer.await;
}

/// Reads client messages until the client leaves; `Some(frame)` if the server should close with that frame.
async fn read_loop(
    mut stream: SplitStream<WebSocketStream<TcpStream>>,
    frames: mpsc::Sender<Box<Out>>,
    ping: &Notify,
    shared: &Shared,
) -> Option<CloseFrame> {
    let mut pinged = false;
    loop {
        let next = if shared.idle_timeout.is_zero() {
            Ok(stream.next().await)
        } else {
            tokio::time::timeout(shared.idle_timeout, stream.next()).await
        };
        let message = match next {
            Ok(Some(Ok(message))) => {
                pinged = false;
                message
            }
            Ok(Some(Err(_)) | None) => return None,
            Err(_) if !pinged => {
                // Silent for a whole idle timeout: ask for a pong (any frame will do), and give it another one.
                ping.notify_one();
                pinged = true;
                continue;
            }
            Err(_) => {
                return Some(CloseFrame {
                    code: CloseCode::from(4002),
                    reason: "no frame within the idle timeout".into(),
                });
            }
        };
        let refusal = match message {
            Message::Text(text) if text.len() > MAX_FRAME_BYTES => Out::Error {
                request_id: None,
                code: "frame_too_large",
                message: format!("the message has {} bytes; the limit is {MAX_FRAME_BYTES}", text.len()),
            },
            Message::Text(text) => match handle(text.as_str(), &frames, shared).await {
                Handled::Done => continue,
                Handled::Refused(refusal) => refusal,
                Handled::Close => {
                    return Some(CloseFrame { code: CloseCode::Normal, reason: "session closed".into() });
                }
                Handled::Gone => return None,
            },
            Message::Binary(_) => Out::Error {
                request_id: None,
                code: "binary_frame",
                message: "binary frames are not supported; send JSON messages as text frames".to_owned(),
            },
            // Pings are answered by tungstenite; after a close frame the stream ends.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => continue,
        };
        if frames.send(Box::new(refusal)).await.is_err() {
            return None;
        }
    }
}

enum Handled {
    Done,
    Refused(Out),
    Close,
    Gone,
}

async fn handle(text: &str, frames: &mpsc::Sender<Box<Out>>, shared: &Shared) -> Handled {
    let message = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(message)) => message,
        Ok(_) => return refuse(None, "malformed_json", "the message is not a JSON object".to_owned()),
        Err(err) => return refuse(None, "malformed_json", format!("the message is not a JSON object: {err}")),
    };
    let request_id = message.get("request_id").and_then(Value::as_str).map(str::to_owned);
    let field = |name: &str| message.get(name).and_then(Value::as_str);
    match field("type") {
        Some("run") => {}
        Some("close") => return Handled::Close,
        Some("cancel") => {
            // The bare server keeps no runs to cancel.
            let run_id = field("run_id").unwrap_or_default();
            return refuse(request_id, "unknown_run", format!("{run_id} is not in progress in this session"));
        }
        Some(other) => {
            let message = format!("unknown message type `{other}`; expected `run`, `cancel` or `close`");
            return refuse(request_id, "unknown_type", message);
        }
        None => return refuse(request_id, "missing_field", "missing field `type`".to_owned()),
    }
    let Some(agent) = field("agent") else {
        return refuse(request_id, "missing_field", "missing field `agent`".to_owned());
    };
    let input = field("input").unwrap_or_default();
    let Some(steps) = script(agent, input) else {
        return refuse(request_id, "unknown_agent", unknown_agent_message(agent));
    };
    let run = shared.last_run.fetch_add(1, Ordering::Relaxed) + 1;
    let request_id: Option<Arc<str>> = request_id.map(Into::into);
    if steps.iter().all(|step| step.delay.is_zero()) {
        // No waits: the events go out at once, in order.
        for step in steps {
            let out = Out::Event { run, request_id: request_id.clone(), event: step.event };
            if frames.send(Box::new(out)).await.is_err() {
                return Handled::Gone;
            }
        }
    } else {
        let frames = frames.clone();
        tokio::spawn(async move {
            for step in steps {
                if !step.delay.is_zero() {
                    tokio::time::sleep(step.delay).await;
                }
                let out = Out::Event { run, request_id: request_id.clone(), event: step.event };
                if frames.send(Box::new(out)).await.is_err() {
                    return;
                }
            }
        });
    }
    Handled::Done
}

fn refuse(request_id: Option<String>, code: &'static str, message: String) -> Handled {
    Handled::Refused(Out::Error { request_id, code, message })
}

/// A write under the deadline (none if zero); `false` if it failed or missed the deadline: the connection ends.
async fn write<F: Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>>(
    write: F,
    deadline: Duration,
) -> bool {
    if deadline.is_zero() {
        return write.await.is_ok();
    }
    matches!(tokio::time::timeout(deadline, write).await, Ok(Ok(())))
}

/// The connection's only writer: the session frame, then every frame it is handed, numbered from 1.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut queue: mpsc::Receiver<Box<Out>>,
    mut stop: oneshot::Receiver<Option<CloseFrame>>,
    ping: Arc<Notify>,
    session_id: String,
    deadline: Duration,
) {
    if !write(sink.send(Message::text(session_frame(&session_id, false, 0))), deadline).await {
        return;
    }
    drop(session_id);
    let mut seq = 0;
    // Allocated by the first batch (`recv_many` reserves what it needs), so an idle connection has none.
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            biased;
            close = &mut stop => {
                if let Ok(Some(frame)) = close {
                    write(sink.send(Message::Close(Some(frame))), deadline).await;
                }
                // Flushes the reply to a close frame the client sent, if any.
                write(sink.close(), deadline).await;
                return;
            }
            () = ping.notified() => {
                if !write(sink.send(Message::Ping(Bytes::new())), deadline).await {
                    return;
                }
            }
            received = queue.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                for out in batch.drain(..) {
                    seq += 1;
                    let text = match *out {
                        Out::Event { run, request_id, event } => event_frame(seq, run, request_id.as_deref(), &event),
                        Out::Error { request_id, code, message } => {
                            error_frame(seq, request_id.as_deref(), code, &message)
                        }
                    };
                    if !write(sink.feed(Message::text(text)), deadline).await {
                        return;
                    }
                }
                if !write(sink.flush(), deadline).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<String, String> {
        parse_args(args.split_whitespace().map(str::to_owned)).map(|options| match options {
            None => "help".to_owned(),
            Some(o) => format!(
                "{} {} {} {:?} {:?} {}",
                o.addr, o.read_buffer, o.write_buffer, o.idle_timeout, o.write_timeout, o.nodelay
            ),
        })
    }

    #[test]
    fn parses_the_command_line() {
        assert_eq!(parse("").unwrap(), "127.0.0.1:0 2048 8192 20s 10s true");
        assert_eq!(
            parse(
                "--addr 127.0.0.1:9000 --read-buffer=4096 --write-buffer 0 --idle-timeout 0 --write-timeout 3 --nagle"
            )
            .unwrap(),
            "127.0.0.1:9000 4096 0 0ns 3s false"
        );
        assert_eq!(parse("--help").unwrap(), "help");
        assert_eq!(parse("--addr").unwrap_err(), "`--addr` needs a value");
        assert_eq!(parse("--addr nowhere").unwrap_err(), "`--addr nowhere` is not an address like 127.0.0.1:8080");
        assert_eq!(parse("--read-buffer 1").unwrap_err(), "`--read-buffer 1` is not a whole number of at least 64");
        assert_eq!(parse("--port 1").unwrap_err(), "unknown argument `--port`");
    }

    #[test]
    fn session_ids_look_like_the_gateways() {
        let id = format!("{:016x}{:016x}", mix(1), mix(!1));
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(mix(1), mix(2));
    }
}
