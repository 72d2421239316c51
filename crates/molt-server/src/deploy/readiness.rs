//! Waiting for a new container: its address, its health, or the crash that
//! ends the wait.

use super::*;
use crate::runtime::UpstreamMode;

impl Deployer {
    /// Probes a container that was just started (by the reconciler) until
    /// it is healthy or its start period and then the App's deploy timeout
    /// pass; returns whether it became healthy.
    pub async fn wait_serving(&self, app: &AppRow, id: &str, addr: &str) -> bool {
        let deadline = Instant::now() + patience(&app.health);
        let check_timeout = Duration::from_millis(app.health.check_timeout_ms);
        loop {
            let probe = self
                .check_container(app.health.path.as_deref(), id, addr, check_timeout)
                .await;
            if probe.is_healthy() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(app.health.interval_ms)).await;
        }
    }

    /// One check of a container by the check in force: the App's health
    /// path always wins; without one, the image's own `HEALTHCHECK` as the
    /// engine reports it; without either, a TCP connect to the port.
    pub async fn check_container(
        &self,
        path: Option<&str>,
        id: &str,
        addr: &str,
        timeout: Duration,
    ) -> Probe {
        if path.is_none() {
            if let Some(image) = self.image_check(id).await {
                let verdict = image.probe();
                if !verdict.is_healthy() {
                    return verdict;
                }
                // The image's check runs inside the container: it says
                // nothing of whether the proxy reaches the App's port.
                let reach = self.prober.check(addr, None, timeout).await;
                return if reach.is_healthy() { verdict } else { reach };
            }
        }
        self.prober.check(addr, path, timeout).await
    }

    /// The image's own `HEALTHCHECK` in a container, when it has one.
    async fn image_check(&self, id: &str) -> Option<EngineHealth> {
        self.runtime.state(id).await.ok().flatten()?.health
    }

    /// Which check decides whether an App's containers are healthy, in
    /// words, for `molt apps show`: read from a serving container (whose
    /// config carries its image's `HEALTHCHECK`), if one runs.
    pub async fn check_in_force(&self, app: &AppRow, container: Option<&str>) -> String {
        if let Some(path) = &app.health.path {
            return format!("GET {path} answers 2xx");
        }
        let image = match container {
            Some(id) => self.image_check(id).await,
            None => None,
        };
        match image {
            Some(h) => format!(
                "the image's HEALTHCHECK: {} (currently {})",
                h.command,
                h.status.as_str()
            ),
            None => format!("TCP connect to port {}", app.port),
        }
    }

    pub(super) async fn wait_for_address(&self, id: &str, port: u16) -> Result<String, StepError> {
        for _ in 0..100 {
            let state = self.runtime.state(id).await?;
            if let Some(addr) = state
                .as_ref()
                .and_then(|s| self.runtime.upstream_addr(s, port))
            {
                return Ok(addr);
            }
            match state {
                Some(s) if !s.running && !s.restarting => break,
                None => {
                    return Err(StepError::internal(
                        "the new container disappeared right after it started",
                    ))
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self
            .crash_failure(id)
            .await
            .map(StepError)
            .unwrap_or_else(|| {
                StepError::internal(format!(
                    "the new container got no address on the network `{}`",
                    self.runtime.network()
                ))
            }))
    }

    /// Checks until the container is healthy, exits, or the start period
    /// and then the deploy timeout pass: failed checks in the start period
    /// do not count against the deploy timeout, so a slow boot is not
    /// failed early (an exit still fails at once). Records the first
    /// result and every change of result.
    pub(super) async fn wait_healthy(
        &self,
        deploy: &DeployRow,
        health: &HealthCheck,
        id: &str,
        addr: &str,
        who: &str,
    ) -> Result<String, StepError> {
        let started = Instant::now();
        let start_period = Duration::from_millis(health.start_period_ms);
        let deadline = started + patience(health);
        let check_timeout = Duration::from_millis(health.check_timeout_ms);
        let interval = Duration::from_millis(health.interval_ms);
        let mut last: Option<Probe> = None;
        let mut passes = 0;
        loop {
            if let Some(failure) = self.crash_failure(id).await {
                return Err(StepError(failure));
            }
            // Every check gets its whole timeout, the last one too: cut to
            // what is left of the deploy's patience, a last check would
            // report "no answer within 10 ms" instead of what the App does.
            // The wait can so run one check timeout past the deadline.
            let probe = self
                .check_container(health.path.as_deref(), id, addr, check_timeout)
                .await;
            if last.as_ref() != Some(&probe) && !probe.is_healthy() {
                // The answer's excerpt is the App's output: mask its secrets.
                let shown = self.mask_secrets(&deploy.app, &deploy.env, &probe.to_string());
                self.store
                    .event(&deploy.id, &format!("{who}health check: {shown}"))?;
            }
            if probe.is_healthy() {
                passes += 1;
                if passes >= health.healthy_threshold.max(1) {
                    return Ok(format!(
                        "healthy after {} ms: {probe}",
                        started.elapsed().as_millis()
                    ));
                }
            } else {
                passes = 0;
            }
            // The image's check already counted its retries: its verdict
            // is final once the App's start period is over.
            if health.path.is_none() && started.elapsed() >= start_period {
                if let Some(image) = self.image_check(id).await {
                    if image.status == EngineHealthStatus::Unhealthy {
                        return Err(StepError(image_unhealthy(&image)));
                    }
                }
            }
            last = Some(probe);
            if Instant::now() >= deadline {
                if let Some(failure) = self.crash_failure(id).await {
                    return Err(StepError(failure));
                }
                return Err(StepError(
                    self.unhealthy(id, addr, health, last.as_ref()).await,
                ));
            }
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// The failure of a container that never passed its check, by what the
    /// last check saw: nothing listening (with the ports it does listen on,
    /// when they can be read), a wrong answer, or no answer in time.
    pub(super) async fn unhealthy(
        &self,
        id: &str,
        addr: &str,
        health: &HealthCheck,
        last: Option<&Probe>,
    ) -> Failure {
        let shown = last
            .map(|p| p.to_string())
            .unwrap_or_else(|| "no check completed".into());
        let start_period = health.start_period_ms / 1000;
        let mut message = if start_period > 0 {
            format!(
                "the new container did not become healthy within its start period of {start_period} s and the {} s after it; last check: {shown}",
                health.deploy_timeout_secs
            )
        } else {
            format!(
                "the new container did not become healthy within {} s; last check: {shown}",
                health.deploy_timeout_secs
            )
        };
        let mut kind = match last {
            Some(Probe::Refused(_)) => FailureKind::PortMismatch,
            Some(Probe::Answered(_)) => FailureKind::HealthCheckFailing,
            _ => FailureKind::DeployTimeout,
        };
        // Through a published port the engine's port proxy accepts the
        // connection and then drops it, so nothing listening looks like a
        // reset, not a refusal: the ports the container listens on decide.
        let published = self.runtime.upstream() == UpstreamMode::Published
            && kind == FailureKind::DeployTimeout;
        let mut ports = Vec::new();
        if kind == FailureKind::PortMismatch || published {
            let port = self.container_port(id, addr).await;
            ports = self.runtime.listening_ports(id).await;
            if !ports.is_empty() && !ports.iter().any(|p| p.to_string() == port) {
                kind = FailureKind::PortMismatch;
                let list = ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let noun = if ports.len() == 1 { "port" } else { "ports" };
                message.push_str(&format!("; the container listens on {noun} {list}, not on port {port}: set the App's port to the one it listens on"));
            }
            if kind != FailureKind::PortMismatch {
                ports.clear();
            }
        }
        Failure::new(kind, message)
            .with_last_check(shown)
            .with_listening_ports(ports)
    }

    /// The port inside the container that the proxy's `addr` leads to: the
    /// address's own port, or, for a published port, the container port
    /// it is published for.
    async fn container_port(&self, id: &str, addr: &str) -> String {
        let port = addr.rsplit(':').next().unwrap_or_default().to_string();
        let Ok(host_port) = port.parse::<u16>() else {
            return port;
        };
        match self.runtime.state(id).await {
            Ok(Some(state)) => state
                .published
                .iter()
                .find(|(_, published)| **published == host_port)
                .map(|(inside, _)| inside.to_string())
                .unwrap_or(port),
            _ => port,
        }
    }

    /// A failure describing a container that exited (or is being restarted
    /// by the engine after exiting), with its exit code and last output.
    pub(super) async fn crash_failure(&self, id: &str) -> Option<Failure> {
        let mut state = self.runtime.state(id).await.ok()??;
        if state.running && !state.restarting && state.restart_count == 0 {
            return None;
        }
        // The engine restarted it already (unless-stopped): the exit code of
        // the crash is only visible while it is down again, so look closely
        // for a moment.
        let deadline = Instant::now() + Duration::from_secs(3);
        while state.running && !state.restarting && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            state = self.runtime.state(id).await.ok()??;
        }
        let memory = self.runtime.memory_limit(id).await;
        let logs = self.runtime.logs_tail(id, 20).await;
        let oom = state.oom_killed || (state.exit_code == Some(137) && memory.is_some());
        let mut message = match state.exit_code {
            _ if state.oom_killed => format!(
                "the new container was killed for using more memory than its limit{} (exit code 137); raise --memory",
                memory.map(|m| format!(" of {}", crate::capacity::human_bytes(m))).unwrap_or_default()
            ),
            Some(137) if memory.is_some() => format!(
                "the new container was killed (exit code 137, SIGKILL), most likely for using more memory than its limit of {}; raise --memory",
                crate::capacity::human_bytes(memory.unwrap_or_default())
            ),
            Some(code) if !state.running || state.restarting => {
                format!("the new container exited with code {code} before becoming healthy")
            }
            _ => format!(
                "the new container crashed before becoming healthy and was restarted {} time(s) by the engine",
                state.restart_count
            ),
        };
        if let Some(err) = state.error {
            message.push_str(&format!(" ({err})"));
        }
        if logs.is_empty() {
            message.push_str("; it printed nothing");
        } else {
            message.push_str("; last output:\n");
            message.push_str(&indent(&logs));
        }
        let kind = if oom {
            FailureKind::OomKilled
        } else {
            FailureKind::Crash
        };
        Some(
            Failure::new(kind, message)
                .with_exit_code(state.exit_code)
                .with_memory_limit(memory)
                .with_output(logs),
        )
    }
}

/// How long a new container gets to become healthy: its start period, then
/// the deploy timeout.
pub(super) fn patience(health: &HealthCheck) -> Duration {
    Duration::from_millis(health.start_period_ms) + Duration::from_secs(health.deploy_timeout_secs)
}

/// The failure of a container whose image's own `HEALTHCHECK` reported it
/// unhealthy, with what the check printed last.
fn image_unhealthy(image: &EngineHealth) -> Failure {
    let mut message = format!(
        "the image's own HEALTHCHECK ({}) reported the new container unhealthy",
        image.command
    );
    let mut failure = Failure::new(FailureKind::ImageHealthcheckFailing, String::new())
        .with_last_check(image.probe().to_string());
    match &image.last_output {
        Some(out) => {
            message.push_str("; its last output:\n");
            message.push_str(&indent(out));
            failure = failure.with_output(out.clone());
        }
        None => message.push_str("; it printed nothing"),
    }
    failure.message = message;
    failure
}
