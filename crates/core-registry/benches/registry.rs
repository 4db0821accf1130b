//! core-registry benchmarks: event delivery against a bare `tokio::sync::mpsc` channel, memory per idle session and
//! per running run (counted by a global allocator, not estimated), session churn, backpressure from one stalled
//! consumer, and how delivery cost scales with sessions and events.
//!
//! `cargo bench -p core-registry --bench registry -- [--quick]`
//!
//! The machines are shared and noisy, so every figure that has a target is a ratio of two measurements taken side
//! by side in the same process, on the same runtime (multi-thread, 2 workers), alternating the two sides and taking
//! medians over several repetitions. Absolute times are printed beside them as indicative only.
//!
//! Output: a human-readable table, then one machine-readable line per figure on stdout:
//! `BENCH\t<figure>\t<measured>\t<ratio or value>\t<target>\t<yes|no|n/a>`. Progress goes to stderr.

use std::alloc::System;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use core_registry::{Agent, AgentError, AgentRegistry, EventKind, EventStream, RunContext, Session, async_trait};
use stats_alloc::StatsAlloc;

#[path = "support/emitter.rs"]
mod emitter;
use emitter::{Payloads, payloads};
use tokio::runtime::Runtime;

/// Counts the heap allocations and live bytes of the whole process (requested sizes; the allocator's own per-chunk
/// overhead is not included). `stats_alloc` is used because implementing `GlobalAlloc` needs `unsafe impl`, which the
/// workspace forbids.
#[global_allocator]
static ALLOC: StatsAlloc<System> = StatsAlloc::system();

/// The live heap bytes of the whole process.
fn live_bytes() -> usize {
    let stats = ALLOC.stats();
    (stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated).max(0) as usize
}

/// Allocations (including reallocations) made by the whole process so far.
fn allocations() -> usize {
    let stats = ALLOC.stats();
    stats.allocations + stats.reallocations
}

/// The event buffer of every session, and the capacity of every bare channel it is compared with.
const EVENT_BUFFER: usize = core_registry::DEFAULT_EVENT_BUFFER;
/// Worker threads of the one runtime that runs everything.
const WORKERS: usize = 2;
/// The user id of every benchmark session (10 bytes, held once per session as an `Arc<str>`).
const USER: &str = "bench-user";
/// Allowed growth of live bytes after the churn: runtime-internal structures that keep a high-water mark.
const CHURN_ALLOWANCE: usize = 64 * 1024;
/// The delivery target: registry time per event at most this multiple of a bare channel's (issue 14).
const DELIVERY_TARGET: f64 = 1.2;
/// The per-session target: open, run, close at most this multiple of a bare channel and two tasks (issue 14).
const SESSION_TARGET: f64 = 1.5;
/// How long any wait for the registry to reach a state may take before the benchmark gives up.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Sizes of one benchmark run: the full run, or `--quick`.
#[derive(Debug)]
struct Config {
    /// Whether this is the quick smoke run.
    quick: bool,
    /// Repetitions of each side per delivery size (after one discarded warm-up round each).
    reps: usize,
    /// Delivery sizes, as (sessions, events per session).
    delivery: Vec<(usize, usize)>,
    /// Sessions held open to measure bytes per idle session and per running run.
    idle_sessions: usize,
    /// Sessions opened and closed in the churn.
    churn_sessions: usize,
    /// Active sessions beside the stalled one, and events each emits.
    backpressure: (usize, usize),
    /// Repetitions of each backpressure case (after one discarded warm-up round each); single rounds vary by
    /// about 15% on a shared machine, so this takes more than the delivery figures.
    backpressure_reps: usize,
    /// Repetitions of the scaling sizes.
    scaling_reps: usize,
    /// Scaling sizes, as (sessions, events per session).
    scaling: Vec<(usize, usize)>,
    /// Sessions opened, run with no payload event and closed, to isolate the fixed cost per session.
    overhead_sessions: usize,
}

impl Config {
    /// The sizes of the full or the quick run.
    fn new(quick: bool) -> Self {
        if quick {
            Config {
                quick,
                reps: 3,
                delivery: vec![(1, 20_000), (10, 1_000), (100, 100)],
                idle_sessions: 1_000,
                churn_sessions: 5_000,
                backpressure: (100, 200),
                backpressure_reps: 3,
                scaling_reps: 1,
                scaling: vec![(10, 100), (100, 100), (1_000, 100), (1, 5_000), (1, 50_000)],
                overhead_sessions: 1_000,
            }
        } else {
            Config {
                quick,
                reps: 7,
                delivery: vec![(1, 1_000_000), (100, 10_000), (10_000, 100)],
                idle_sessions: 10_000,
                churn_sessions: 100_000,
                backpressure: (1_000, 1_000),
                backpressure_reps: 15,
                scaling_reps: 3,
                scaling: vec![(1_000, 100), (10_000, 100), (50_000, 100), (1, 100_000), (1, 4_000_000)],
                overhead_sessions: 10_000,
            }
        }
    }
}

/// One reported figure: a table row and a `BENCH` line.
#[derive(Debug)]
struct Figure {
    /// What was measured.
    name: String,
    /// The measurement, in words, with absolute numbers.
    measured: String,
    /// The ratio or value that the target is about.
    value: f64,
    /// Decimals to print the value with: 2 for ratios, 0 for byte counts and nanoseconds.
    decimals: usize,
    /// The target, in words, or `n/a`.
    target: String,
    /// Whether the target is met; `None` when the figure has no target.
    met: Option<bool>,
}

impl Figure {
    /// `yes`, `no` or `n/a`.
    fn met_text(&self) -> &'static str {
        match self.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "n/a",
        }
    }

    /// The value as a plain number.
    fn value_text(&self) -> String {
        format!("{:.*}", self.decimals, self.value)
    }
}

/// An agent that emits one empty `agent_thinking`, then waits until it is cancelled.
#[derive(Debug)]
struct Park;

#[async_trait]
impl Agent for Park {
    async fn run(&self, ctx: &mut RunContext, _input: String) -> Result<String, AgentError> {
        ctx.thinking(String::new()).await?;
        std::future::pending().await
    }
}

/// A registry with the `emit` agent over `payloads`.
fn emitter_registry(payloads: Payloads) -> AgentRegistry {
    emitter::emitter_registry(payloads, EVENT_BUFFER)
}

/// A registry with the `park` agent.
fn park_registry() -> AgentRegistry {
    AgentRegistry::builder()
        .register("park", || Park)
        .event_buffer(EVENT_BUFFER)
        .build()
        .expect("the benchmark registry is valid")
}

/// Runs `future` as a task on the runtime's workers and waits for its output.
fn on_workers<F>(rt: &Runtime, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async { tokio::spawn(future).await.expect("benchmark task panicked") })
}

/// Waits (on the runtime) until `done` holds, checking every millisecond; panics after [`WAIT_LIMIT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Receives a session's events until its run's terminal event; returns (thinking events, their bytes).
async fn consume(mut stream: EventStream) -> (usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    while let Some(event) = stream.recv().await {
        match event.kind() {
            EventKind::AgentThinking { text } => {
                count += 1;
                bytes += text.len();
            }
            kind if kind.is_terminal() => break,
            _ => {}
        }
    }
    (count, bytes)
}

/// Delivers `events` payloads in each of `sessions` registry sessions (one run, one consumer task each) and returns
/// the elapsed time. With `stalled`, one more session whose consumer never reads has a full buffer throughout.
fn registry_round(rt: &Runtime, sessions: usize, events: usize, stalled: bool) -> Duration {
    let stalled_payloads = payloads(1, EVENT_BUFFER * 2);
    let stalled_registry = emitter_registry(stalled_payloads);
    let registry = emitter_registry(payloads(sessions, events));
    on_workers(rt, async move {
        let stalled = if stalled {
            let (session, stream) = stalled_registry.open_session(USER).expect("open");
            session.run("emit", "0").expect("run");
            wait_until("the stalled session's buffer is full", || stream.len() == EVENT_BUFFER).await;
            Some((session, stream))
        } else {
            None
        };
        // The same pause in both cases, so that only the stalled session differs between them.
        tokio::time::sleep(Duration::from_millis(5)).await;

        let start = Instant::now();
        let mut consumers = Vec::with_capacity(sessions);
        for index in 0..sessions {
            let (session, stream) = registry.open_session(USER).expect("open");
            session.run("emit", index.to_string()).expect("run");
            consumers.push(tokio::spawn(async move {
                let received = consume(stream).await;
                drop(session);
                received
            }));
        }
        let mut received = 0;
        for consumer in consumers {
            received += consumer.await.expect("consumer").0;
        }
        let elapsed = start.elapsed();
        assert_eq!(received, sessions * events, "the registry lost events");

        if let Some((session, stream)) = stalled {
            assert_eq!(stream.len(), EVENT_BUFFER, "the stalled session was read");
            drop(stream);
            drop(session);
        }
        wait_until("every run has ended", || registry.live_runs() == 0 && stalled_registry.live_runs() == 0).await;
        elapsed
    })
}

/// The same deliveries over bare channels: per session one producer task sending the payloads into a
/// `tokio::sync::mpsc` channel of the same capacity, and one consumer task receiving them.
fn bare_round(rt: &Runtime, sessions: usize, events: usize) -> Duration {
    let payloads = payloads(sessions, events);
    on_workers(rt, async move {
        let start = Instant::now();
        let mut consumers = Vec::with_capacity(sessions);
        for index in 0..sessions {
            let mut receiver = emitter::bare_producer(&payloads, index, EVENT_BUFFER);
            consumers.push(tokio::spawn(async move {
                let (mut count, mut bytes) = (0, 0);
                while let Some(text) = receiver.recv().await {
                    count += 1;
                    bytes += text.len();
                }
                (count, bytes)
            }));
        }
        let mut received = 0;
        for consumer in consumers {
            received += consumer.await.expect("consumer").0;
        }
        let elapsed = start.elapsed();
        assert_eq!(received, sessions * events, "the bare channel lost events");
        elapsed
    })
}

/// The median of `values` (which must not be empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 }
}

/// Registry and bare-channel delivery measured side by side.
#[derive(Debug)]
struct Comparison {
    /// Median registry time per payload event (per session when there are no events), in nanoseconds.
    registry_ns: f64,
    /// Median bare-channel time per payload event (per session when there are no events), in nanoseconds.
    bare_ns: f64,
    /// Median of the per-repetition ratios registry / bare.
    ratio: f64,
}

/// Measures one size `reps` times per side, alternating which side goes first, after one warm-up round each.
fn compare(rt: &Runtime, sessions: usize, events: usize, reps: usize) -> Comparison {
    // Per payload event; per session when there are none.
    let units = if events == 0 { sessions } else { sessions * events } as f64;
    let per_event = |elapsed: Duration| elapsed.as_nanos() as f64 / units;
    bare_round(rt, sessions, events);
    registry_round(rt, sessions, events, false);
    let (mut registry, mut bare, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let (r, b) = if rep % 2 == 0 {
            let b = per_event(bare_round(rt, sessions, events));
            (per_event(registry_round(rt, sessions, events, false)), b)
        } else {
            let r = per_event(registry_round(rt, sessions, events, false));
            (r, per_event(bare_round(rt, sessions, events)))
        };
        registry.push(r);
        bare.push(b);
        ratios.push(r / b);
    }
    Comparison { registry_ns: median(registry), bare_ns: median(bare), ratio: median(ratios) }
}

/// `n` sessions, in words.
fn sessions_text(n: usize) -> String {
    if n == 1 { "1 session".to_owned() } else { format!("{} sessions", thousands(n)) }
}

/// `1000000` as `1,000,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Figure 1: event delivery, registry vs bare channel, at each delivery size.
fn delivery(rt: &Runtime, config: &Config, figures: &mut Vec<Figure>) {
    for &(sessions, events) in &config.delivery {
        eprintln!("bench: delivery {sessions} x {events}");
        let c = compare(rt, sessions, events, config.reps);
        figures.push(Figure {
            name: format!("delivery {} x {} events", sessions_text(sessions), thousands(events)),
            measured: format!(
                "registry {:.0} ns/event, bare mpsc {:.0} ns/event (median of {})",
                c.registry_ns, c.bare_ns, config.reps
            ),
            value: c.ratio,
            decimals: 2,
            target: format!("<= {DELIVERY_TARGET}x"),
            met: Some(c.ratio <= DELIVERY_TARGET),
        });
    }
}

/// Waits until the registry holds nothing and the live byte count is steady; returns it.
fn settle(rt: &Runtime, registry: &AgentRegistry) -> usize {
    let registry = registry.clone();
    rt.block_on(async move {
        wait_until("every session and run is freed", || registry.live_sessions() == 0 && registry.live_runs() == 0)
            .await;
        let mut last = live_bytes();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = live_bytes();
            if now == last {
                break;
            }
            last = now;
        }
        last
    })
}

/// Signed difference `after - before` of two byte counts.
fn delta(before: usize, after: usize) -> i64 {
    after as i64 - before as i64
}

/// Figure 2a/2b: bytes per idle open session, and per running (parked) run.
fn session_memory(rt: &Runtime, config: &Config, figures: &mut Vec<Figure>) {
    eprintln!("bench: memory per session and per run");
    let n = config.idle_sessions;
    let registry = park_registry();
    let _runtime = rt.enter();
    let mut held: Vec<(Session, EventStream)> = Vec::with_capacity(n);

    let base = settle(rt, &registry);
    for _ in 0..n {
        held.push(registry.open_session(USER).expect("open"));
    }
    let opened = live_bytes();

    let wait_buffered = |held: &Vec<(Session, EventStream)>, events: usize| {
        let deadline = Instant::now() + WAIT_LIMIT;
        while !held.iter().all(|(_, stream)| stream.len() == events) {
            assert!(Instant::now() < deadline, "timed out waiting for the parked runs");
            rt.block_on(tokio::time::sleep(Duration::from_millis(1)));
        }
    };
    // First run of a session: also creates the session's agent instance.
    for (session, _) in &held {
        session.run("park", String::new()).expect("run");
    }
    wait_buffered(&held, 2);
    let first_runs = live_bytes();
    // Second run: the marginal cost of one more run in progress.
    for (session, _) in &held {
        session.run("park", String::new()).expect("run");
    }
    wait_buffered(&held, 4);
    let second_runs = live_bytes();
    assert_eq!(registry.live_runs(), 2 * n);

    // Empty the list but keep its buffer, which was allocated before the baseline.
    held.clear();
    let after = settle(rt, &registry);
    drop(held);

    let per_session = delta(base, opened) as f64 / n as f64;
    let first_run = delta(opened, first_runs) as f64 / n as f64;
    let per_run = delta(first_runs, second_runs) as f64 / n as f64;
    figures.push(Figure {
        name: "memory per idle open session".to_owned(),
        measured: format!(
            "{per_session:.0} B/session ({} sessions open, live bytes +{})",
            thousands(n),
            thousands(delta(base, opened).max(0) as usize)
        ),
        value: per_session.round(),
        decimals: 0,
        target: "<= 4096 B".to_owned(),
        met: Some(per_session <= 4096.0),
    });
    figures.push(Figure {
        name: "memory per running run".to_owned(),
        measured: format!(
            "{per_run:.0} B/run (a 2nd parked run in each of {} sessions; the 1st, which also creates the \
             session's agent instance: {first_run:.0} B); after closing all: {:+} B vs before opening",
            thousands(n),
            delta(base, after)
        ),
        value: per_run.round(),
        decimals: 0,
        target: "n/a".to_owned(),
        met: None,
    });
}

/// Opens `count` sessions in batches of 1,000, starts a parked run in every 10th, then closes each and drains its
/// stream to the end.
fn churn(rt: &Runtime, registry: &AgentRegistry, count: usize) {
    let registry = registry.clone();
    on_workers(rt, async move {
        let mut batch = Vec::with_capacity(1_000);
        for first in (0..count).step_by(1_000) {
            for index in first..count.min(first + 1_000) {
                let (session, stream) = registry.open_session(USER).expect("open");
                if index % 10 == 0 {
                    session.run("park", String::new()).expect("run");
                }
                batch.push((session, stream));
            }
            for (session, mut stream) in batch.drain(..) {
                session.close();
                drop(session);
                while stream.recv().await.is_some() {}
            }
        }
    });
}

/// Figure 2c: live bytes after opening and closing many sessions, against the baseline before.
fn churn_memory(rt: &Runtime, config: &Config, figures: &mut Vec<Figure>) {
    let n = config.churn_sessions;
    eprintln!("bench: churn of {n} sessions");
    let registry = park_registry();
    // Warm-up: lazily created runtime and tracing state belongs in the baseline.
    churn(rt, &registry, 1_000);
    let base = settle(rt, &registry);
    churn(rt, &registry, n / 10);
    let tenth = settle(rt, &registry);
    churn(rt, &registry, n - n / 10);
    let after = settle(rt, &registry);
    let growth = delta(base, after);
    figures.push(Figure {
        name: format!("memory after {} sessions opened and closed", thousands(n)),
        measured: format!(
            "{growth:+} B vs baseline ({:+} B after the first {}); every 10th session ran an agent, cancelled \
             by the close",
            delta(base, tenth),
            thousands(n / 10)
        ),
        value: growth as f64,
        decimals: 0,
        target: format!("< {} B (a constant: runtime caches)", thousands(CHURN_ALLOWANCE)),
        met: Some(growth.unsigned_abs() < CHURN_ALLOWANCE as u64),
    });
}

/// Figure 3: throughput of active sessions beside one stalled session, against the all-fast case.
fn backpressure(rt: &Runtime, config: &Config, figures: &mut Vec<Figure>) {
    let (sessions, events) = config.backpressure;
    eprintln!("bench: backpressure, 1 stalled among {sessions}");
    registry_round(rt, sessions, events, false);
    registry_round(rt, sessions, events, true);
    let (mut fast, mut slowed, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..config.backpressure_reps {
        let (f, s) = if rep % 2 == 0 {
            let f = registry_round(rt, sessions, events, false);
            (f, registry_round(rt, sessions, events, true))
        } else {
            let s = registry_round(rt, sessions, events, true);
            (registry_round(rt, sessions, events, false), s)
        };
        let throughput = |elapsed: Duration| (sessions * events) as f64 / elapsed.as_secs_f64();
        fast.push(throughput(f));
        slowed.push(throughput(s));
        ratios.push(throughput(s) / throughput(f));
    }
    let ratio = median(ratios);
    figures.push(Figure {
        name: format!("backpressure: 1 stalled session among {} active", thousands(sessions)),
        measured: format!(
            "others {:.2} M events/s with the stalled one, {:.2} M events/s all fast ({} events each, median of {})",
            median(slowed) / 1e6,
            median(fast) / 1e6,
            thousands(events),
            config.backpressure_reps
        ),
        value: ratio,
        decimals: 2,
        target: ">= 0.9".to_owned(),
        met: Some(ratio >= 0.9),
    });
}

/// Figure 4: delivery cost at several sizes, both sides, so that growth can be judged.
fn scaling(rt: &Runtime, config: &Config, figures: &mut Vec<Figure>) {
    for &(sessions, events) in &config.scaling {
        eprintln!("bench: scaling {sessions} x {events}");
        let c = compare(rt, sessions, events, config.scaling_reps);
        figures.push(Figure {
            name: format!(
                "scaling {} x {} events ({} total)",
                sessions_text(sessions),
                thousands(events),
                thousands(sessions * events)
            ),
            measured: format!(
                "registry {:.0} ns/event, bare mpsc {:.0} ns/event, ratio {:.2}x",
                c.registry_ns, c.bare_ns, c.ratio
            ),
            value: c.registry_ns.round(),
            decimals: 0,
            target: "n/a".to_owned(),
            met: None,
        });
    }
}

/// The fixed cost of a session on the delivery path: open it, start one run that emits no payload event, receive
/// its `agent_started` and `agent_completed`, close it; against a bare channel plus its two tasks.
fn session_overhead(rt: &Runtime, config: &Config, figures: &mut Vec<Figure>) {
    let sessions = config.overhead_sessions;
    eprintln!("bench: per-session overhead, {sessions} sessions");
    let c = compare(rt, sessions, 0, config.reps);
    figures.push(Figure {
        name: format!("per-session overhead ({}, no payload event)", sessions_text(sessions)),
        measured: format!(
            "registry {:.0} ns/session (open, run, 2 lifecycle events, close), bare mpsc {:.0} ns/session \
             (channel, 2 tasks), ratio {:.2}x",
            c.registry_ns, c.bare_ns, c.ratio
        ),
        value: c.ratio,
        decimals: 2,
        target: format!("<= {SESSION_TARGET}x"),
        met: Some(c.ratio <= SESSION_TARGET),
    });
}

/// Allocations made by `round`, which must run to completion.
fn count_allocations(round: impl FnOnce() -> Duration) -> usize {
    let before = allocations();
    let _elapsed = round();
    allocations() - before
}

/// Allocations per session and per event, registry and bare channel, from the counting allocator. Each is a
/// difference of two rounds (2n against n sessions, 2n against n events), so that what a round does once (building
/// the registry, the payload list) cancels out. Both sides include the payload `String`s, made before the clock
/// starts in the timed rounds, and the registry side the run's input `String` that the bench makes per session.
fn allocation_counts(rt: &Runtime, config: &Config, figures: &mut Vec<Figure>) {
    eprintln!("bench: allocations per session and per event");
    let sessions = config.overhead_sessions;
    let events = config.delivery[0].1;
    let per = |small: usize, large: usize, n: usize| (large as f64 - small as f64) / n as f64;
    let registry_session = per(
        count_allocations(|| registry_round(rt, sessions, 0, false)),
        count_allocations(|| registry_round(rt, 2 * sessions, 0, false)),
        sessions,
    );
    let bare_session = per(
        count_allocations(|| bare_round(rt, sessions, 0)),
        count_allocations(|| bare_round(rt, 2 * sessions, 0)),
        sessions,
    );
    let registry_event = per(
        count_allocations(|| registry_round(rt, 1, events, false)),
        count_allocations(|| registry_round(rt, 1, 2 * events, false)),
        events,
    );
    let bare_event = per(
        count_allocations(|| bare_round(rt, 1, events)),
        count_allocations(|| bare_round(rt, 1, 2 * events)),
        events,
    );
    figures.push(Figure {
        name: "allocations per session (open, run, 2 lifecycle events, close)".to_owned(),
        measured: format!(
            "registry {registry_session:.1}, bare mpsc {bare_session:.1} (channel, 2 tasks); consumer task included \
             on both sides"
        ),
        value: registry_session,
        decimals: 1,
        target: "n/a".to_owned(),
        met: None,
    });
    figures.push(Figure {
        name: "allocations per event".to_owned(),
        measured: format!(
            "registry {registry_event:.2}, bare mpsc {bare_event:.2} (both include the payload String, made before \
             the clock)"
        ),
        value: registry_event,
        decimals: 2,
        target: "n/a".to_owned(),
        met: None,
    });
}

/// Prints the table and the `BENCH` lines.
fn report(config: &Config, figures: &[Figure]) {
    let mode = if config.quick { "quick (tiny sizes, a smoke test)" } else { "full" };
    println!("core-registry benchmarks, {mode}; tokio multi-thread runtime, {WORKERS} workers, buffer {EVENT_BUFFER}");
    let name_width = figures.iter().map(|f| f.name.len()).max().unwrap_or(0).max("figure".len());
    let value_width = figures.iter().map(|f| f.value_text().len()).max().unwrap_or(0).max("value".len());
    let target_width = figures.iter().map(|f| f.target.len()).max().unwrap_or(0).max("target".len());
    println!("{:name_width$}  {:>value_width$}  {:target_width$}  met  measured", "figure", "value", "target");
    for f in figures {
        println!(
            "{:name_width$}  {:>value_width$}  {:target_width$}  {:3}  {}",
            f.name,
            f.value_text(),
            f.target,
            f.met_text(),
            f.measured
        );
    }
    println!();
    for f in figures {
        println!("BENCH\t{}\t{}\t{}\t{}\t{}", f.name, f.measured, f.value_text(), f.target, f.met_text());
    }
}

/// One group of figures: measures and appends them.
type Group = fn(&Runtime, &Config, &mut Vec<Figure>);

/// The groups of figures, in the order they run; `--only` picks one.
const GROUPS: [&str; 7] = ["delivery", "memory", "churn", "backpressure", "scaling", "overhead", "allocations"];

/// Parses the arguments, runs every benchmark and prints the report.
fn main() -> ExitCode {
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            // One group of figures, for profiling (`valgrind --tool=callgrind ... --only delivery`).
            "--only" if only.is_none() => match args.next() {
                Some(group) if GROUPS.contains(&group.as_str()) => only = Some(group),
                _ => {
                    eprintln!("error: --only takes one of {}", GROUPS.join(", "));
                    return ExitCode::from(2);
                }
            },
            // `cargo bench` passes `--bench` to every benchmark binary.
            "--bench" => {}
            other => {
                eprintln!("error: unexpected argument `{other}`; usage: registry [--quick] [--only GROUP]");
                return ExitCode::from(2);
            }
        }
    }
    let wanted = |group: &str| only.as_deref().is_none_or(|only| only == group);
    let config = Config::new(quick);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let mut figures = Vec::new();
    let groups: [(&str, Group); 7] = [
        ("delivery", delivery),
        ("memory", session_memory),
        ("churn", churn_memory),
        ("backpressure", backpressure),
        ("scaling", scaling),
        ("overhead", session_overhead),
        ("allocations", allocation_counts),
    ];
    for (group, run) in groups {
        if wanted(group) {
            run(&rt, &config, &mut figures);
        }
    }
    eprintln!("bench: done in {:.1} s", started.elapsed().as_secs_f64());
    report(&config, &figures);
    ExitCode::SUCCESS
}
