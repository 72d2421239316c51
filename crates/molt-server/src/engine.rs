//! The deploy engine: one operation per App at a time, each deploy a run of
//! the state machine in `molt_core::deploy`, every step recorded before it is
//! taken. A failure before the swap removes the new container and leaves the
//! old one serving; after the swap the deploy only moves forward.

use crate::health::{Probe, Prober};
use crate::proxy_link::ProxyLink;
use crate::registry::{self, Credential, RegistryError};
use crate::runtime::{ContainerSpec, Runtime};
use crate::seal::Sealer;
use crate::store::{now, AppRow, DeployRow, Store};
use molt_core::api::CreateAppRequest;
use molt_core::health::HealthCheck;
use molt_core::{AppName, AppStatus, DeployKind, DeployStatus, ImageRef};
use molt_proxy::admin::{Route, Target};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a stopped container gets between SIGTERM and SIGKILL.
const STOP_TIMEOUT_SECS: u64 = 10;
/// How long a request through the proxy may take before a 504.
const UPSTREAM_TIMEOUT_MS: u64 = 60_000;

/// Why the engine refused or failed a request; the API maps each kind to an
/// HTTP status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict {
        message: String,
        deploy_id: Option<String>,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl EngineError {
    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
}

/// A deploy failed: the message users see.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

pub struct Engine {
    pub store: Arc<Store>,
    pub runtime: Runtime,
    pub proxy: Arc<ProxyLink>,
    pub sealer: Arc<Sealer>,
    prober: Prober,
    /// The deploy in progress per App: the one-operation-at-a-time rule.
    active: Mutex<HashMap<String, String>>,
}

impl Engine {
    pub fn new(store: Arc<Store>, runtime: Runtime, proxy: Arc<ProxyLink>, sealer: Arc<Sealer>) -> Self {
        Self {
            store,
            runtime,
            proxy,
            sealer,
            prober: Prober::new(),
            active: Mutex::new(HashMap::new()),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The credential saved for a registry host, opened.
    pub fn credential(&self, host: &str) -> anyhow::Result<Option<Credential>> {
        let Some(row) = self.store.get_registry(host)? else {
            return Ok(None);
        };
        let password = self.sealer.open(&format!("registry:{host}"), &row.secret_sealed)?;
        Ok(Some(Credential {
            username: row.username,
            password: String::from_utf8_lossy(&password).into_owned(),
        }))
    }

    /// Reserves the App for one operation, or names the one in progress.
    fn claim(&self, app: &str, deploy_id: &str) -> Result<(), EngineError> {
        let mut active = self.active();
        if let Some(running) = active.get(app) {
            return Err(EngineError::Conflict {
                message: format!(
                    "the App `{app}` is busy with deploy {running}; wait for it to finish or cancel it with `molt cancel {app}`"
                ),
                deploy_id: Some(running.clone()),
            });
        }
        active.insert(app.to_string(), deploy_id.to_string());
        Ok(())
    }

    fn release(&self, app: &str) {
        self.active().remove(app);
    }

    /// Validates a create request, runs the registry preflight, records the
    /// App with its first deploy and starts that deploy. Nothing is stored
    /// when a check fails.
    pub async fn create_app(
        self: &Arc<Self>,
        req: CreateAppRequest,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let name = AppName::parse(&req.name).map_err(|e| EngineError::invalid("invalid_name", e.to_string()))?;
        let image = ImageRef::parse(&req.image).map_err(|e| EngineError::invalid("invalid_image", e.to_string()))?;
        if req.port == 0 {
            return Err(EngineError::invalid("invalid_port", "the port must be between 1 and 65535: the port the App listens on inside its container"));
        }
        let mut health = HealthCheck::default();
        if let Some(path) = &req.health_path {
            molt_core::health::validate_path(path).map_err(|e| EngineError::invalid("invalid_health_path", e))?;
            health.path = Some(path.clone());
        }
        if let Some(t) = req.health_timeout {
            if t == 0 || t > 3600 {
                return Err(EngineError::invalid("invalid_health_timeout", "--health-timeout must be between 1 and 3600 seconds"));
            }
            health.deploy_timeout_secs = t;
        }
        if let Some(ms) = req.health_interval_ms {
            health.interval_ms = ms.clamp(10, 60_000);
        }
        let mut domains = Vec::new();
        for d in &req.domains {
            let d = molt_core::name::parse_domain(d).map_err(|e| EngineError::invalid("invalid_domain", e))?;
            if d == name.default_domain() || domains.contains(&d) {
                continue;
            }
            if let Some(owner) = self.domain_owner(&d)? {
                return Err(EngineError::invalid("domain_taken", format!("the domain {d} is already routed to the App `{owner}`")));
            }
            domains.push(d);
        }
        let mut env = Vec::new();
        for raw in &req.env {
            let (k, v) = molt_core::env::parse_assignment(raw).map_err(|e| EngineError::invalid("invalid_env", e))?;
            env.push((k, v));
        }
        let memory_bytes = match &req.memory {
            Some(m) => Some(molt_core::size::parse_size(m).map_err(|e| EngineError::invalid("invalid_memory", e))?),
            None => None,
        };
        if let Some(c) = req.cpus {
            if !(c > 0.0 && c <= 1024.0) {
                return Err(EngineError::invalid("invalid_cpus", "--cpus must be a positive number such as 0.5 or 2"));
            }
        }
        let replicas = req.replicas.unwrap_or(1);
        if !(1..=100).contains(&replicas) {
            return Err(EngineError::invalid("invalid_replicas", "--replicas must be between 1 and 100"));
        }
        let strategy = req.strategy.clone().unwrap_or_else(|| "auto".into());
        if !["auto", "bluegreen", "recreate", "rolling"].contains(&strategy.as_str()) {
            return Err(EngineError::invalid("invalid_strategy", format!("unknown strategy `{strategy}`: use auto, bluegreen, recreate or rolling")));
        }
        if self.store.get_app(name.as_str())?.is_some() {
            return Err(EngineError::Conflict {
                message: format!("an App named `{name}` already exists: pick another name, or deploy to it with `molt deploy {name} IMAGE`"),
                deploy_id: None,
            });
        }

        let cred = self.credential(&image.registry)?;
        registry::preflight(&image, cred.as_ref()).await?;

        let at = now();
        let app = AppRow {
            name: name.to_string(),
            status: AppStatus::Creating,
            image: image.to_string(),
            port: req.port,
            health,
            domains,
            replicas,
            strategy,
            memory_bytes,
            cpus: req.cpus,
            gpus: req.gpus.unwrap_or(0),
            drain_timeout_secs: req.drain_timeout_secs.unwrap_or(30).min(3600),
            current_deploy: None,
            created_at: at.clone(),
            updated_at: at.clone(),
        };
        let deploy = new_deploy(&app.name, DeployKind::Create, &image.to_string(), triggered_by, None, None);
        self.claim(&app.name, &deploy.id)?;
        if let Err(e) = self.store.create_app(&app, &env, &deploy) {
            self.release(&app.name);
            return Err(e.into());
        }
        self.spawn(deploy.clone());
        Ok((app, deploy))
    }

    fn domain_owner(&self, domain: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .store
            .list_apps()?
            .into_iter()
            .find(|a| a.hosts().iter().any(|h| h == domain))
            .map(|a| a.name))
    }

    /// Starts a deploy of `image` to an existing App.
    pub async fn deploy(
        self: &Arc<Self>,
        app_name: &str,
        image: &str,
        kind: DeployKind,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self
            .store
            .get_app(app_name)?
            .ok_or_else(|| EngineError::NotFound(format!("no App named `{app_name}`: see `molt apps list`")))?;
        let image = ImageRef::parse(image).map_err(|e| EngineError::invalid("invalid_image", e.to_string()))?;
        let previous = match &app.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        let deploy = new_deploy(
            &app.name,
            kind,
            &image.to_string(),
            triggered_by,
            previous.as_ref().map(|p| p.id.clone()),
            previous.and_then(|p| p.digest),
        );
        self.claim(&app.name, &deploy.id)?;
        if let Err(e) = self.store.start_deploy(&deploy) {
            self.release(&app.name);
            return Err(e.into());
        }
        self.spawn(deploy.clone());
        let app = self.store.get_app(app_name)?.unwrap_or(app);
        Ok((app, deploy))
    }

    /// Deletes an App: its route, its containers, its environment and
    /// history, then the App itself.
    pub async fn delete_app(&self, name: &str) -> Result<(), EngineError> {
        if self.store.get_app(name)?.is_none() {
            return Err(EngineError::NotFound(format!("no App named `{name}`: see `molt apps list`")));
        }
        self.claim(name, "delete")?;
        let result = async {
            self.store.set_app_status(name, AppStatus::Deleting)?;
            self.proxy.remove_route(name).await?;
            for c in self.runtime.list(Some(name)).await? {
                self.runtime.stop(&c.id, STOP_TIMEOUT_SECS).await?;
                self.runtime.remove(&c.id).await?;
            }
            self.store.delete_app(name)?;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        self.release(name);
        result.map_err(EngineError::Internal)
    }

    fn spawn(self: &Arc<Self>, deploy: DeployRow) {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let app = deploy.app.clone();
            engine.run(deploy).await;
            engine.release(&app);
        });
    }

    /// Runs a deploy to its end and records the outcome.
    async fn run(&self, deploy: DeployRow) {
        let mut new_container: Option<String> = None;
        let outcome = self.execute(&deploy, &mut new_container).await;
        let result = match outcome {
            Ok(summary) => self
                .store
                .finish_deploy(&deploy.id, DeployStatus::Succeeded, None, &summary),
            Err(Failure(error)) => {
                tracing::warn!(app = %deploy.app, deploy = %deploy.id, "deploy failed: {error}");
                if let Some(id) = &new_container {
                    if let Err(e) = self.runtime.remove(id).await {
                        tracing::error!("cannot remove the failed deploy's container {id}: {e:#}");
                    } else {
                        let _ = self.store.event(&deploy.id, "removed the new container; the previous version kept serving");
                    }
                }
                self.store.finish_deploy(
                    &deploy.id,
                    DeployStatus::Failed,
                    Some(&error),
                    &format!("deploy failed: {error}"),
                )
            }
        };
        if let Err(e) = result {
            tracing::error!(deploy = %deploy.id, "cannot record the end of the deploy: {e:#}");
        }
    }

    async fn execute(&self, deploy: &DeployRow, new_container: &mut Option<String>) -> Result<String, Failure> {
        let app = self
            .store
            .get_app(&deploy.app)?
            .ok_or_else(|| Failure(format!("the App `{}` was deleted", deploy.app)))?;
        let image = ImageRef::parse(&deploy.image)?;
        let old = match &app.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };

        // Pull.
        self.store.advance(&deploy.id, DeployStatus::Pulling, &format!("pulling {image}"))?;
        let cred = self
            .credential(&image.registry)?
            .map(|c| (c.username, c.password));
        self.runtime
            .pull(&image, cred)
            .await
            .map_err(|e| Failure(format!("pulling {image} failed: {e}")))?;
        let digest = self.runtime.image_digest(&image).await?;
        let run_ref = match &digest {
            Some(d) => {
                self.store.set_deploy_digest(&deploy.id, d)?;
                let change = match &deploy.previous_digest {
                    Some(prev) if prev == d => " (same digest as the serving version)",
                    Some(_) => " (a new digest)",
                    None => "",
                };
                self.store.event(&deploy.id, &format!("pulled {image}: {d}{change}"))?;
                image.with_digest(d).to_string()
            }
            None => {
                self.store.event(&deploy.id, &format!("pulled {image} (the engine reports no registry digest)"))?;
                image.to_string()
            }
        };

        // Start beside the old one.
        let name = format!("molt-{}-{}", app.name, deploy.id);
        self.store.advance(&deploy.id, DeployStatus::Starting, &format!("starting container {name}"))?;
        let mut env = vec![format!("PORT={}", app.port)];
        env.extend(
            self.store
                .plain_env(&app.name)?
                .into_iter()
                .filter(|(k, _)| k != "PORT")
                .map(|(k, v)| format!("{k}={v}")),
        );
        let spec = ContainerSpec {
            name: name.clone(),
            image: run_ref,
            app: app.name.clone(),
            deploy: deploy.id.clone(),
            env,
            memory_bytes: app.memory_bytes,
            cpus: app.cpus,
            gpus: app.gpus,
        };
        let id = self.runtime.start(&spec).await?;
        *new_container = Some(id.clone());
        self.store.set_deploy_container(&deploy.id, &id, &name)?;
        self.store.event(&deploy.id, &format!("container {} started", short(&id)))?;

        // Health.
        let addr = self.wait_for_address(&id, app.port).await?;
        self.store.set_deploy_target(&deploy.id, &addr)?;
        let what = match &app.health.path {
            Some(p) => format!("GET {p} on port {}", app.port),
            None => format!("TCP connect to port {}", app.port),
        };
        self.store.advance(
            &deploy.id,
            DeployStatus::HealthChecking,
            &format!(
                "checking health: {what} every {} ms, for up to {} s",
                app.health.interval_ms, app.health.deploy_timeout_secs
            ),
        )?;
        let healthy = self.wait_healthy(deploy, &app.health, &id, &addr).await?;
        self.store.event(&deploy.id, &healthy)?;

        // Swap.
        self.store.advance(&deploy.id, DeployStatus::Swapping, "switching traffic to the new container")?;
        self.proxy
            .set_route(route_for(&app, vec![Target { addr: addr.clone(), id: id.clone() }]))
            .await
            .map_err(|e| Failure(format!("the proxy did not take the new route: {e:#}")))?;
        self.store.record_swap(&deploy.id, &app.name, &image.to_string(), &format!("traffic switched to container {}", short(&id)))?;
        // From here on the new version serves: nothing below fails the deploy.
        *new_container = None;

        if let Some(old) = old {
            self.retire(&app, &old, &deploy.id).await;
        }
        Ok(format!(
            "deploy succeeded: {} serves {}",
            digest.as_deref().map(short_digest).unwrap_or(&deploy.image),
            app.name
        ))
    }

    /// Drains the old version, then stops and removes it.
    async fn retire(&self, app: &AppRow, old: &DeployRow, deploy_id: &str) {
        let Some(old_id) = &old.container_id else {
            return;
        };
        if let Some(addr) = &old.target_addr {
            let timeout = Duration::from_secs(app.drain_timeout_secs);
            let _ = self.store.event(deploy_id, &format!("draining the old container {} (up to {} s)", short(old_id), app.drain_timeout_secs));
            match self.proxy.wait_drained(&app.name, addr, timeout).await {
                Ok((true, _)) => {
                    let _ = self.store.event(deploy_id, "the old container drained");
                }
                Ok((false, closed)) => {
                    let _ = self.store.event(deploy_id, &format!("drain timeout reached: closed {closed} connection(s) still open on the old container"));
                }
                Err(e) => {
                    let _ = self.store.event(deploy_id, &format!("could not wait for the drain: {e:#}"));
                }
            }
        }
        let removed = async {
            self.runtime.stop(old_id, STOP_TIMEOUT_SECS).await?;
            self.runtime.remove(old_id).await
        }
        .await;
        let message = match removed {
            Ok(()) => format!("stopped and removed the old container {}", short(old_id)),
            Err(e) => format!("could not remove the old container {} ({e:#}); it will be removed at the next reconcile", short(old_id)),
        };
        let _ = self.store.event(deploy_id, &message);
    }

    async fn wait_for_address(&self, id: &str, port: u16) -> Result<String, Failure> {
        for _ in 0..100 {
            match self.runtime.state(id).await? {
                Some(s) if s.ip.is_some() => return Ok(format!("{}:{port}", s.ip.unwrap_or_default())),
                Some(s) if !s.running && !s.restarting => break,
                None => return Err(Failure("the new container disappeared right after it started".into())),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self.crash_failure(id).await.unwrap_or_else(|| {
            Failure(format!("the new container got no address on the network `{}`", self.runtime.network()))
        }))
    }

    /// Checks until the container is healthy, exits, or the deploy timeout
    /// passes. Records the first result and every change of result.
    async fn wait_healthy(&self, deploy: &DeployRow, health: &HealthCheck, id: &str, addr: &str) -> Result<String, Failure> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(health.deploy_timeout_secs);
        let check_timeout = Duration::from_millis(health.check_timeout_ms);
        let interval = Duration::from_millis(health.interval_ms);
        let mut last: Option<Probe> = None;
        let mut passes = 0;
        loop {
            if let Some(failure) = self.crash_failure(id).await {
                return Err(failure);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let probe = self
                .prober
                .check(addr, health.path.as_deref(), check_timeout.min(remaining.max(Duration::from_millis(10))))
                .await;
            if last.as_ref() != Some(&probe) && !probe.is_healthy() {
                self.store.event(&deploy.id, &format!("health check: {probe}"))?;
            }
            if probe.is_healthy() {
                passes += 1;
                if passes >= health.healthy_threshold.max(1) {
                    return Ok(format!("healthy after {} ms: {probe}", started.elapsed().as_millis()));
                }
            } else {
                passes = 0;
            }
            last = Some(probe);
            if Instant::now() >= deadline {
                if let Some(failure) = self.crash_failure(id).await {
                    return Err(failure);
                }
                let last = last.map(|p| p.to_string()).unwrap_or_else(|| "no check completed".into());
                return Err(Failure(format!(
                    "the new container did not become healthy within {} s; last check: {last}",
                    health.deploy_timeout_secs
                )));
            }
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// A failure describing a container that exited (or is being restarted
    /// by the engine after exiting), with its exit code and last output.
    async fn crash_failure(&self, id: &str) -> Option<Failure> {
        let state = self.runtime.state(id).await.ok()??;
        if state.running && !state.restarting && state.restart_count == 0 {
            return None;
        }
        let code = state.exit_code.unwrap_or(-1);
        let logs = self.runtime.logs_tail(id, 20).await;
        let mut message = if state.oom_killed {
            format!("the new container was killed for using more memory than its limit (exit code {code}); raise --memory")
        } else {
            format!("the new container exited with code {code} before becoming healthy")
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
        Some(Failure(message))
    }
}

/// The proxy route of an App with the given targets.
pub fn route_for(app: &AppRow, targets: Vec<Target>) -> Route {
    Route {
        app: app.name.clone(),
        hosts: app.hosts(),
        targets,
        upstream_timeout_ms: UPSTREAM_TIMEOUT_MS,
        drain_timeout_ms: app.drain_timeout_secs * 1000,
    }
}

fn new_deploy(
    app: &str,
    kind: DeployKind,
    image: &str,
    triggered_by: &str,
    previous_deploy: Option<String>,
    previous_digest: Option<String>,
) -> DeployRow {
    DeployRow {
        id: crate::datadir::random_hex(5),
        app: app.to_string(),
        kind,
        image: image.to_string(),
        digest: None,
        status: DeployStatus::Pending,
        error: None,
        triggered_by: triggered_by.to_string(),
        previous_deploy,
        previous_digest,
        container_id: None,
        container_name: None,
        target_addr: None,
        created_at: now(),
        finished_at: None,
    }
}

/// The first 12 characters of a container id, as the engine shows them.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn short_digest(d: &str) -> &str {
    &d[..d.len().min(19)]
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
