//! Molt's data plane: routes users' HTTP by host to App containers, swaps
//! an App's targets atomically, drains the old ones, and keeps its routes on
//! disk. `molt server` drives it over the admin socket (see `admin`).
//!
//! - `run(ProxyConfig)` is `molt proxy`: serves until SIGTERM/SIGINT.
//! - `Proxy::start` / `Proxy::shutdown` run it in-process (tests), and
//!   `run_until` stops on any future.
//! - `AdminClient` is how the server sets routes, pauses and resumes them,
//!   and waits for drains: over the Unix socket, or (`AdminClient::tcp`)
//!   over TLS to a proxy on another node that runs with
//!   `ProxyConfig::admin_listen` and the same `AdminToken`.
//! - `ProxyConfig::takeover` starts a proxy that takes the listening
//!   sockets over from the running one (an upgrade without a refused
//!   connection); `exe_id` tells whether a running proxy is another build.

pub mod admin;
mod admin_server;
mod admin_tls;
mod admin_token;
mod body;
mod edge;
mod errors;
mod fdpass;
mod forward;
mod handover;
mod headers;
mod hold;
mod host;
mod instance;
mod memory;
mod metrics;
mod metrics_server;
mod persist;
mod pool;
mod route;
mod routes;
mod server;
mod target;
pub mod tls;

pub use admin::{AdminClient, AdminError, AdminToken, DrainOutcome, Paused, PingInfo};
pub use edge::{Cidr, EdgeConfig, DEFAULT_MAX_CONNECTIONS};
pub use instance::exe_id;
pub use server::{default_threads, run, run_until, Proxy, ProxyConfig};
pub use tls::{Certs, TlsCert};
