//! Load for `chat-gateway` from a separate process, beside a bare tokio-tungstenite server that sends the same
//! frames (the transport's limit).
//!
//! Two binaries:
//! - `gateway-bare`: a WebSocket server with no authentication and no registry that answers each `run` with the
//!   frames the gateway would send for it (the `session` frame first, then each run's events, numbered per
//!   connection), with the built-in agents' timing ([`script`], [`frame`]).
//! - `gateway-load`: the load generator. Closed-loop, paced or idle connections; every message checked
//!   ([`check`]); latency, events/s, the server's CPU per event and memory ([`procfs`]), fairness between users.
//!   Or one session (`--replay`) resumed and followed on its own node and on another sharing its Redis event log.
//!
//! `cargo xtask bench` (group `chat-gateway`) starts both servers as processes and runs the load against each in
//! turn; see BENCHMARKS.md.
// A library reports through its return values; only the binaries print.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod check;
pub mod frame;
pub mod procfs;
pub mod script;
pub mod stats;
