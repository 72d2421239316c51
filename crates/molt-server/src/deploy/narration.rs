//! How a deploy tells its story: the short ids, names and phrases of its
//! timeline.

use super::*;

/// `molt-APP-DEPLOY` for the first replica, `molt-APP-DEPLOY-N` for the others.
pub(super) fn container_name(app: &str, deploy: &str, replica: u32) -> String {
    if replica == 0 {
        format!("molt-{app}-{deploy}")
    } else {
        format!("molt-{app}-{deploy}-{replica}")
    }
}

pub(super) fn health_message(app: &AppRow) -> String {
    let what = match &app.health.path {
        Some(p) => format!("GET {p} on port {}", app.port),
        None => format!("TCP connect to port {}", app.port),
    };
    format!(
        "checking health: {what} every {} ms, for up to {} s",
        app.health.interval_ms, app.health.deploy_timeout_secs
    )
}

/// Short container ids, comma-separated.
pub(super) fn list_short(rows: &[ReplicaRow]) -> String {
    rows.iter()
        .map(|r| short(&r.container_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container abc` or `containers abc, def`.
pub(super) fn describe_containers(rows: &[ReplicaRow]) -> String {
    let noun = if rows.len() == 1 {
        "container"
    } else {
        "containers"
    };
    format!("{noun} {}", list_short(rows))
}

/// `replica 2` or `replicas 1, 2`.
pub(super) fn describe_replicas(rows: &[ReplicaRow]) -> String {
    let noun = if rows.len() == 1 {
        "replica"
    } else {
        "replicas"
    };
    let list = rows
        .iter()
        .map(|r| r.replica.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!("{noun} {list}")
}

/// ` on N replicas` when there are several.
pub(super) fn on_replicas(n: u32) -> String {
    if n > 1 {
        format!(" on {n} replicas")
    } else {
        String::new()
    }
}

/// The first 12 characters of a container id, as the engine shows them.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub(super) fn short_digest(d: &str) -> &str {
    &d[..d.len().min(19)]
}

pub(crate) fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
