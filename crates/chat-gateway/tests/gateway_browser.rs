//! The chat page in a real headless Chromium, driven by Playwright (`tests/browser/run.mjs`), against the real
//! `chat-gateway` binary behind a TCP proxy that this test controls, so that a case can cut the connection mid-run.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`), Node.js and `npm ci` in `tests/browser`: `cargo xtask test`
//! installs what is missing. Without them these tests fail and say so; they never skip.
//!
//! Each case starts its own gateway (with `CHAT_GATEWAY_LOG=trace`, and checks that no token ever reaches its log),
//! its own proxy and its own browser; the cases run one at a time, each bounded by [`CASE_TIMEOUT`].

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chat_gateway::auth::{self, Secret};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc as tokio_mpsc};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");
const CHROMIUM: &str = "/usr/bin/chromium";
const SECRET: &str = "browser-test-secret-0123456789abcdef";

/// The longest one case may take, browser start included.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// One browser at a time: the machine has two cores, and each case starts a gateway, a proxy and a Chromium.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails (never skips) when what the browser tests need is missing, saying how to get it.
fn check_prerequisites() {
    let fix = "run `cargo xtask test` (it installs Debian's chromium and runs `npm ci` in \
               crates/chat-gateway/tests/browser, then runs the tests)";
    assert!(Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: {fix}");
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|out| out.status.success()), "node is not on PATH: {fix}");
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(playwright.exists(), "{} is missing: {fix}", playwright.display());
}

fn token(user: &str, ttl: Duration, now: u64) -> String {
    auth::mint_token(&Secret::new(SECRET).unwrap(), user, ttl, now)
}

/// Reads a pipe line by line on a thread.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

/// A `chat-gateway serve` process on a free loopback port; its whole log is kept.
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    /// The dev token, with `--dev`.
    dev_token: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    fn start(args: &[&str], log: Arc<Mutex<Vec<String>>>) -> GatewayProcess {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env("CHAT_GATEWAY_LOG", "trace");
        if args.contains(&"--dev") {
            command.env_remove("CHAT_GATEWAY_SECRET");
        } else {
            command.env("CHAT_GATEWAY_SECRET", SECRET);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let dev_token = args.contains(&"--dev").then(|| stdout.recv_timeout(support::PATIENCE).expect("no dev token"));
        let addr = loop {
            let line = stderr.recv_timeout(support::PATIENCE).expect("no `listening on` log line");
            log.lock().unwrap().push(line.clone());
            if let Some((_, addr)) = line.split_once("listening on ") {
                break addr.trim().parse().unwrap();
            }
        };
        // Keep every later log line, to check that no token is ever logged.
        let keep = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stderr {
                keep.lock().unwrap().push(line);
            }
        });
        GatewayProcess { child, addr, dev_token, log }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node process of a case; stopped if the case ends early (a timeout, a panic), so that neither it nor its
/// browser outlives the test.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // SIGTERM first: Playwright closes its browser on it; SIGKILL would leave Chromium behind.
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A TCP proxy on a loopback port in front of the gateway, that the browser case steers through [`Proxy::command`].
struct Proxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    stop: CancellationToken,
}

#[derive(Default)]
struct ProxyShared {
    upstream: Mutex<Option<SocketAddr>>,
    /// New connections are closed at once (and counted) while set.
    blocked: AtomicBool,
    refused: AtomicUsize,
    /// Open connections stop forwarding from the gateway to the browser while set; the bytes are kept in `dropped`.
    frozen: AtomicBool,
    dropped: Mutex<Vec<u8>>,
    /// Cancelled to cut every open connection; replaced by a fresh one for the connections after.
    cut: Mutex<CancellationToken>,
    /// Notified whenever `refused` or `dropped` grows.
    changed: Notify,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared::default());
        *shared.upstream.lock().unwrap() = Some(upstream);
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, Arc::clone(&shared), stop.clone()));
        Proxy { addr, shared, stop }
    }

    /// Carries out one command of the browser case; the answer is its reply line.
    async fn command(&self, command: &str, gateway: &mut GatewayProcess, restart_args: &[&str]) -> String {
        let shared = &self.shared;
        let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
        match verb {
            "cut" => {
                shared.frozen.store(false, Ordering::SeqCst);
                let old = std::mem::take(&mut *shared.cut.lock().unwrap());
                old.cancel();
                "OK".into()
            }
            "block" => {
                shared.refused.store(0, Ordering::SeqCst);
                shared.blocked.store(true, Ordering::SeqCst);
                "OK".into()
            }
            "unblock" => {
                shared.blocked.store(false, Ordering::SeqCst);
                "OK".into()
            }
            "wait-refused" => {
                let want: usize = arg.parse().unwrap();
                let waited = self.wait_until(|| shared.refused.load(Ordering::SeqCst) >= want).await;
                if waited { "OK".into() } else { format!("ERR only {} refused", shared.refused.load(Ordering::SeqCst)) }
            }
            "freeze" => {
                shared.dropped.lock().unwrap().clear();
                shared.frozen.store(true, Ordering::SeqCst);
                "OK".into()
            }
            "wait-dropped" => {
                let found = || {
                    let dropped = shared.dropped.lock().unwrap();
                    dropped.windows(arg.len()).any(|window| window == arg.as_bytes())
                };
                if self.wait_until(found).await { "OK".into() } else { format!("ERR `{arg}` was never dropped") }
            }
            "restart-gateway" => {
                let log = Arc::clone(&gateway.log);
                // Killed, as by a crash: its sessions are gone with it.
                let started = tokio::task::block_in_place(|| GatewayProcess::start(restart_args, log));
                drop(std::mem::replace(gateway, started));
                *shared.upstream.lock().unwrap() = Some(gateway.addr);
                "OK".into()
            }
            _ => format!("ERR unknown proxy command `{command}`"),
        }
    }

    /// Waits until `condition` holds, woken by every change of the proxy's counters; `false` after the patience.
    async fn wait_until(&self, condition: impl Fn() -> bool) -> bool {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if condition() {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(support::PATIENCE, wait).await.is_ok()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.shared.cut.lock().unwrap().cancel();
    }
}

async fn accept(listener: TcpListener, shared: Arc<ProxyShared>, stop: CancellationToken) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        if shared.blocked.load(Ordering::SeqCst) {
            drop(client);
            shared.refused.fetch_add(1, Ordering::SeqCst);
            shared.changed.notify_waiters();
            continue;
        }
        let cut = shared.cut.lock().unwrap().clone();
        let upstream = shared.upstream.lock().unwrap().expect("the proxy has an upstream");
        tokio::spawn(pipe(client, upstream, cut, Arc::clone(&shared)));
    }
}

/// Forwards one connection both ways until either side closes or the proxy cuts it.
async fn pipe(client: TcpStream, upstream: SocketAddr, cut: CancellationToken, shared: Arc<ProxyShared>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let mut buffer = vec![0; 16 * 1024];
        while let Ok(read) = server_read.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            if shared.frozen.load(Ordering::SeqCst) {
                shared.dropped.lock().unwrap().extend_from_slice(&buffer[..read]);
                shared.changed.notify_waiters();
            } else if client_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = cut.cancelled() => {}
        _ = async { tokio::join!(up, down) } => {}
    }
}

/// How a case's gateway is started.
struct Case {
    name: &'static str,
    gateway_args: &'static [&'static str],
}

/// Runs one case of `tests/browser/run.mjs`: a gateway, a proxy in front of it, and the browser driving the page
/// through the proxy. Panics with the script's output if the case fails.
fn run_case(case: Case) {
    check_prerequisites();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        match tokio::time::timeout(CASE_TIMEOUT, drive(&case)).await {
            Ok(()) => {}
            Err(_) => panic!("browser case `{}` took more than {CASE_TIMEOUT:?}", case.name),
        }
    });
}

async fn drive(case: &Case) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut gateway = GatewayProcess::start(case.gateway_args, Arc::clone(&log));
    let proxy = Proxy::start(gateway.addr).await;
    let now = auth::now_unix();
    let tokens = serde_json::json!({
        "alice": token("alice", Duration::from_secs(600), now),
        "bob": token("bob", Duration::from_secs(600), now),
        "expired": token("alice", Duration::from_secs(60), now - 3600),
    });
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-page.png");
    let child = Command::new("node")
        .arg("run.mjs")
        .current_dir(browser_dir())
        .env("CASE", case.name)
        .env("BASE_URL", format!("http://{}", proxy.addr))
        .env("TOKENS", tokens.to_string())
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOT", &screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start node");
    let mut node = Node(child);
    let mut stdin: ChildStdin = node.0.stdin.take().unwrap();
    let stderr = lines(node.0.stderr.take().unwrap());
    let (sender, mut stdout) = tokio_mpsc::unbounded_channel();
    let pipe = node.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });

    let started = Instant::now();
    let mut output = Vec::new();
    while let Some(line) = stdout.recv().await {
        if let Some(command) = line.strip_prefix("PROXY ") {
            let answer = proxy.command(command, &mut gateway, case.gateway_args).await;
            output.push(format!("[{:>6.2}s] {line} -> {answer}", started.elapsed().as_secs_f64()));
            writeln!(stdin, "{answer}").unwrap();
            stdin.flush().unwrap();
        } else {
            output.push(line);
        }
    }
    // Its stdout has closed: it is exiting.
    let status = tokio::task::block_in_place(|| node.0.wait()).unwrap();
    let errors: Vec<String> = stderr.try_iter().collect();
    let passed = status.success() && output.last().is_some_and(|line| line == &format!("PASS {}", case.name));
    assert!(
        passed,
        "browser case `{}` failed ({status}):\n{}\n--- node stderr:\n{}\n--- gateway log:\n{}",
        case.name,
        output.join("\n"),
        errors.join("\n"),
        log.lock().unwrap().join("\n")
    );

    // The page sends the token in the WebSocket URL (a browser cannot set the header): it must never be logged.
    let log = log.lock().unwrap().join("\n");
    assert!(log.contains("listening on"), "the gateway's log was read");
    let mut secrets: Vec<String> = ["alice", "bob", "expired"].iter().map(|user| tokens[user].to_string()).collect();
    secrets.extend(gateway.dev_token.clone());
    for secret in secrets {
        let secret = secret.trim_matches('"');
        // The signature alone is enough to find a leak, however the token was cut or encoded.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "the gateway logged a token:\n{log}");
    }
}

#[test]
fn log_in_through_the_fragment_and_run_tools() {
    run_case(Case { name: "tools", gateway_args: &[] });
}

#[test]
fn two_users_see_only_their_own_events() {
    run_case(Case { name: "two_users", gateway_args: &[] });
}

#[test]
fn cancel_a_slow_run() {
    run_case(Case { name: "cancel", gateway_args: &[] });
    // The README's screenshot: taken in the middle of the slow run, before its cancel.
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-page.png");
    let png = std::fs::read(&screenshot).expect("the cancel case saves a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", screenshot.display());
    if std::env::var_os("CHAT_GATEWAY_UPDATE_SCREENSHOT").is_some() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/chat-page.png");
        std::fs::create_dir_all(committed.parent().unwrap()).unwrap();
        std::fs::write(&committed, png).unwrap();
    }
}

#[test]
fn cut_the_connection_mid_run_and_resume() {
    run_case(Case { name: "resume", gateway_args: &[] });
}

#[test]
fn a_replay_gap_is_resumed_from_its_first_seq_and_marked() {
    run_case(Case { name: "gap", gateway_args: &["--replay-limit", "4"] });
}

#[test]
fn a_session_gone_with_a_restart_is_replaced_with_a_notice() {
    run_case(Case { name: "restart", gateway_args: &[] });
}

#[test]
fn a_bad_token_shows_a_clear_message() {
    run_case(Case { name: "bad_token", gateway_args: &[] });
}

#[test]
fn serve_dev_offers_the_dev_token() {
    run_case(Case { name: "dev", gateway_args: &["--dev"] });
}
