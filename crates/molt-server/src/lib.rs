//! Molt's control plane: the API, the deployer and everything it
//! drives (the Docker engine, registries, health checks, the proxy, state).

pub mod api;
pub mod build;
pub mod capacity;
pub mod certs;
pub mod confine;
pub mod console;
pub mod converge;
pub mod dashboard;
pub mod datadir;
pub mod debug;
pub mod deploy;
#[cfg(test)]
pub(crate) mod fakes;
pub mod feed;
pub mod health;
pub mod hosted_registry;
pub mod metrics;
pub mod ops;
pub mod ports;
pub mod proxy_link;
pub mod proxy_peers;
pub mod registry;
pub mod release;
pub mod runtime;
pub mod seal;
pub mod server;
pub mod store;
pub mod tls;

// Kept paths: the deployer and the CLI name these.
pub use converge::{autoheal, watch};
