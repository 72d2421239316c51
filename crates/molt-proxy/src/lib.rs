//! Molt's data plane: routes users' HTTP by host to App containers, swaps
//! an App's targets atomically, drains the old ones, and keeps its routes on
//! disk. `molt server` drives it over the admin socket (see `admin`).
//!
//! - `run(ProxyConfig)` is `molt proxy`: serves until SIGTERM/SIGINT.
//! - `Proxy::start` / `Proxy::shutdown` run it in-process (tests), and
//!   `run_until` stops on any future.
//! - `AdminClient` is how the server sets routes and waits for drains.

pub mod admin;
mod admin_server;
mod body;
mod errors;
mod forward;
mod headers;
mod host;
mod instance;
mod metrics;
mod metrics_server;
mod persist;
mod routes;
mod server;
mod target;

pub use admin::{AdminClient, AdminError, DrainOutcome, PingInfo};
pub use server::{run, run_until, Proxy, ProxyConfig};
