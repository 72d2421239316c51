//! The admin protocol between `molt server` and `molt proxy`: one JSON
//! object per line over a Unix socket in the data dir (mode 0600).

use serde::{Deserialize, Serialize};

/// The file names the proxy keeps in its data dir.
pub const SOCKET_FILE: &str = "proxy.sock";
pub const ROUTES_FILE: &str = "routes.json";

/// One upstream of an App: a container's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// `ip:port` the proxy connects to.
    pub addr: String,
    /// Who this is (the container id), for logs and stats.
    pub id: String,
}

/// Everything the proxy knows about one App.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub app: String,
    /// Host names (lowercase, no port) routed to this App.
    pub hosts: Vec<String>,
    /// The current target set; replaced whole and atomically by `set_route`.
    pub targets: Vec<Target>,
    /// How long a request to the upstream may take before a 504.
    pub upstream_timeout_ms: u64,
    /// How long a retired target keeps its in-flight requests and upgraded
    /// connections before they are closed.
    pub drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Creates or replaces an App's route; targets that leave the set start
    /// draining at once.
    SetRoute {
        route: Route,
    },
    RemoveRoute {
        app: String,
    },
    ListRoutes,
    /// Waits until the target `addr` (retired from `app`) has no request in
    /// flight and no upgraded connection, or `timeout_ms` passed; then closes
    /// what is left of it.
    WaitDrained {
        app: String,
        addr: String,
        timeout_ms: u64,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    /// For `ping`: the proxy's process id and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For `wait_drained`: whether it drained before the timeout, and what
    /// was cut when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<u64>,
}
