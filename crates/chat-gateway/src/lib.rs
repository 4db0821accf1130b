#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
// A library logs through `tracing`; it never prints. Only the binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod auth;
pub mod cluster;
mod connection;
pub mod limits;
mod listener;
pub mod metrics;
mod page;
pub mod protocol;
pub mod replay;
mod server;
mod sessions;

pub use server::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_RUNS_PER_CONNECTION, Gateway, builtin_registry};
pub use sessions::DEFAULT_RESUME_WINDOW;
