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
    describe_health(&app.health, app.port)
}

/// `checking health: GET /healthz on port 8080 every 100 ms, for up to 60 s`,
/// with the start period that comes first, and without a path the image's
/// own `HEALTHCHECK` that decides when the image declares one.
fn describe_health(health: &HealthCheck, port: u16) -> String {
    let every = health.interval_ms;
    let what = match &health.path {
        Some(p) => format!("GET {p} on port {port} every {every} ms"),
        None => format!(
            "TCP connect to port {port} every {every} ms (and the image's own HEALTHCHECK, when it declares one)"
        ),
    };
    let start = match health.start_period_ms {
        0 => String::new(),
        ms if ms % 1000 == 0 => format!(" after a start period of {} s", ms / 1000),
        ms => format!(" after a start period of {ms} ms"),
    };
    format!(
        "checking health: {what}, for up to {} s{start}",
        health.deploy_timeout_secs
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_line_says_what_decides_and_for_how_long() {
        let http = HealthCheck {
            path: Some("/healthz".into()),
            ..HealthCheck::default()
        };
        assert_eq!(
            describe_health(&http, 8080),
            "checking health: GET /healthz on port 8080 every 100 ms, for up to 60 s"
        );
        let slow = HealthCheck {
            start_period_ms: 8_000,
            deploy_timeout_secs: 3,
            ..http
        };
        assert_eq!(
            describe_health(&slow, 8080),
            "checking health: GET /healthz on port 8080 every 100 ms, for up to 3 s after a start period of 8 s"
        );
        let tcp = describe_health(&HealthCheck::default(), 8080);
        assert!(tcp.contains("TCP connect to port 8080"), "{tcp}");
        assert!(tcp.contains("the image's own HEALTHCHECK"), "{tcp}");
    }
}
