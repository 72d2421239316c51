//! Autoheal: after a grace period from its start (at least the App's start
//! period), each serving container is
//! health-checked continuously by the check in force (the health path, else
//! the image's own `HEALTHCHECK`, else a TCP connect); one that fails a threshold of consecutive
//! checks is replaced through the swap (a fresh container of the same
//! digest first, then the sick one drained and removed), and the App's
//! history records why. With several replicas only the sick one is
//! replaced, and it leaves the proxy's rotation at its first failed check
//! (the others take its requests) and comes back if it recovers.

use crate::deploy::{short, Deployer};
use crate::health::Probe;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// When and how often serving containers are checked.
#[derive(Debug, Clone, Copy)]
pub struct AutohealConfig {
    /// No judgement during this long after a container starts.
    pub grace: Duration,
    pub interval: Duration,
    /// Consecutive failed checks that get a container replaced.
    pub threshold: u32,
}

impl Default for AutohealConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            threshold: 3,
        }
    }
}

pub fn spawn(deployer: Arc<Deployer>, config: AutohealConfig) {
    tokio::spawn(async move {
        // Consecutive failures per container.
        let mut failures: HashMap<String, (u32, Probe)> = HashMap::new();
        loop {
            tokio::time::sleep(config.interval).await;
            if let Err(e) = round(&deployer, &config, &mut failures).await {
                tracing::warn!("autoheal round failed: {e:#}");
            }
        }
    });
}

async fn round(
    deployer: &Arc<Deployer>,
    config: &AutohealConfig,
    failures: &mut HashMap<String, (u32, Probe)>,
) -> anyhow::Result<()> {
    let mut checked = Vec::new();
    let mut serving = HashSet::new();
    for app in deployer.store.list_apps()? {
        let rows = deployer.serving_rows(&app)?;
        serving.extend(rows.iter().map(|r| r.container_id.clone()));
        if deployer.in_progress(&app.name).is_some() {
            continue;
        }
        let many = rows.len() > 1;
        for row in &rows {
            let container = &row.container_id;
            let Some(addr) = &row.addr else {
                continue;
            };
            let Some(state) = deployer.runtime.state(container).await? else {
                continue;
            };
            // Never in the App's start period: it may still be booting.
            let grace = config
                .grace
                .max(Duration::from_millis(app.health.start_period_ms));
            if !in_service(state.started_at.as_deref(), grace) {
                continue;
            }
            checked.push(container.clone());
            let probe = deployer
                .check_container(
                    app.health.path.as_deref(),
                    container,
                    addr,
                    Duration::from_millis(app.health.check_timeout_ms),
                )
                .await;
            if probe.is_healthy() {
                if failures.remove(container).is_some() {
                    tracing::info!(app = %app.name, replica = row.replica, "container {} recovered", short(container));
                }
                if deployer.return_to_rotation(container) {
                    tracing::info!(app = %app.name, replica = row.replica, "container {} is back in rotation", short(container));
                    super::watch::resync_app(deployer, &app.name).await;
                }
                continue;
            }
            let entry = failures
                .entry(container.clone())
                .or_insert((0, probe.clone()));
            entry.0 += 1;
            entry.1 = probe.clone();
            tracing::warn!(app = %app.name, replica = row.replica, failures = entry.0, "container {} failed a health check: {probe}", short(container));
            // Out of rotation at once, while the others serve.
            if many && deployer.take_out_of_rotation(container) {
                tracing::warn!(app = %app.name, replica = row.replica, "container {} is out of rotation until it recovers", short(container));
                super::watch::resync_app(deployer, &app.name).await;
            }
            if entry.0 < config.threshold {
                continue;
            }
            let count = entry.0;
            failures.remove(container);
            let started = if many {
                deployer
                    .replace_replica(&app.name, row.replica, "autoheal")
                    .await
            } else {
                deployer.restart(&app.name, false, "autoheal").await
            };
            match started {
                Ok((_, deploy)) => {
                    let _ = deployer.store.event(
                        &deploy.id,
                        &format!("autoheal: container {} failed {count} consecutive health checks; last: {probe}", short(container)),
                    );
                }
                Err(e) => {
                    tracing::warn!(app = %app.name, "autoheal could not replace the container: {e}")
                }
            }
            // One operation per App at a time: the others wait for the next round.
            break;
        }
    }
    failures.retain(|c, _| checked.contains(c));
    deployer.retain_out_of_rotation(&serving);
    Ok(())
}

/// Whether a container started at `started_at` is past its grace period.
fn in_service(started_at: Option<&str>, grace: Duration) -> bool {
    let Some(started) = started_at.and_then(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return false;
    };
    let age = time::OffsetDateTime::now_utc() - started;
    age.whole_milliseconds() >= grace.as_millis() as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace() {
        let long_ago = "2020-01-01T00:00:00.123456789Z";
        assert!(in_service(Some(long_ago), Duration::from_secs(60)));
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert!(!in_service(Some(&now), Duration::from_secs(60)));
        assert!(!in_service(None, Duration::ZERO));
    }
}
