//! The deploy engine: one operation per App at a time, each deploy a run of
//! the state machine in `molt_core::deploy`, every step recorded before it is
//! taken. A failure before the swap removes the new container and leaves the
//! old one serving; after the swap the deploy only moves forward.

use crate::capacity::{self, Capacity, Need, Strategy};
use crate::health::{Probe, Prober};
use crate::proxy_link::ProxyLink;
use crate::registry::{self, Credential, RegistryError};
use crate::runtime::{ContainerSpec, Runtime};
use crate::seal::Sealer;
use crate::store::{now, AppRow, DeployRow, EnvEntry, Store};
use molt_core::api::CreateAppRequest;
use molt_core::health::HealthCheck;
use molt_core::{AppName, AppStatus, DeployKind, DeployStatus, ImageRef};
use molt_proxy::admin::{Request, Route, Target};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// A deploy in progress, with the means to cancel it.
struct Active {
    deploy_id: String,
    cancel: CancellationToken,
}

/// What a deploy will run, decided when it is requested.
#[derive(Clone)]
struct Plan {
    /// Run exactly this digest (restart, rollback, config), or pull the
    /// deploy's image by tag and pin what the registry gives.
    digest: Option<String>,
    /// Restart in place instead of swapping.
    hard: bool,
    /// On success, make the deploy's environment the App's (rollback
    /// `--with-config`).
    restore_env: bool,
    /// Stop the old version before starting the new one (the host cannot
    /// hold both), holding requests meanwhile.
    recreate: bool,
}

impl Plan {
    fn new(digest: Option<String>) -> Self {
        Self {
            digest,
            hard: false,
            restore_env: false,
            recreate: false,
        }
    }
}

/// How a deploy ended, before it is recorded.
enum Outcome {
    Succeeded(String),
    Canceled,
    Failed(String),
}

pub struct Engine {
    pub store: Arc<Store>,
    pub runtime: Runtime,
    pub proxy: Arc<ProxyLink>,
    pub sealer: Arc<Sealer>,
    prober: Prober,
    /// What the host offers Apps.
    capacity: Capacity,
    pub metrics: crate::metrics::Metrics,
    /// The deploy in progress per App: the one-operation-at-a-time rule.
    active: Mutex<HashMap<String, Active>>,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        runtime: Runtime,
        proxy: Arc<ProxyLink>,
        sealer: Arc<Sealer>,
        capacity: Capacity,
    ) -> Self {
        Self {
            store,
            runtime,
            proxy,
            sealer,
            prober: Prober::new(),
            capacity,
            metrics: Default::default(),
            active: Mutex::new(HashMap::new()),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn prober(&self) -> &Prober {
        &self.prober
    }

    /// The credential saved for a registry host, opened.
    pub fn credential(&self, host: &str) -> anyhow::Result<Option<Credential>> {
        let Some(row) = self.store.get_registry(host)? else {
            return Ok(None);
        };
        let password = self
            .sealer
            .open(&format!("registry:{host}"), &row.secret_sealed)?;
        Ok(Some(Credential {
            username: row.username,
            password: String::from_utf8_lossy(&password).into_owned(),
        }))
    }

    /// Reserves the App for one operation, or names the one in progress.
    pub(crate) fn claim(
        &self,
        app: &str,
        deploy_id: &str,
    ) -> Result<CancellationToken, EngineError> {
        let mut active = self.active();
        if let Some(running) = active.get(app) {
            let message = if running.deploy_id == "delete" {
                format!("the App `{app}` is being deleted")
            } else if running.deploy_id == "resync" {
                format!("the App `{app}` is being resynced after a container restart; try again in a moment")
            } else {
                format!(
                    "the App `{app}` is busy with deploy {}; wait for it to finish or cancel it with `molt cancel {app}`",
                    running.deploy_id
                )
            };
            return Err(EngineError::Conflict {
                message,
                deploy_id: Some(running.deploy_id.clone()),
            });
        }
        let cancel = CancellationToken::new();
        active.insert(
            app.to_string(),
            Active {
                deploy_id: deploy_id.to_string(),
                cancel: cancel.clone(),
            },
        );
        Ok(cancel)
    }

    /// The deploy in progress for an App, if any.
    pub fn in_progress(&self, app: &str) -> Option<String> {
        self.active().get(app).map(|a| a.deploy_id.clone())
    }

    /// Cancels the deploy in progress: the new container is torn down and no
    /// traffic moves. Returns its id.
    pub fn cancel(&self, app: &str) -> Result<String, EngineError> {
        if self.store.get_app(app)?.is_none() {
            return Err(EngineError::NotFound(format!(
                "no App named `{app}`: see `molt apps list`"
            )));
        }
        match self.active().get(app) {
            Some(a) if a.deploy_id != "delete" && a.deploy_id != "resync" => {
                a.cancel.cancel();
                Ok(a.deploy_id.clone())
            }
            _ => Err(EngineError::Conflict {
                message: format!("the App `{app}` has no deploy in progress to cancel"),
                deploy_id: None,
            }),
        }
    }

    pub(crate) fn release(&self, app: &str) {
        self.active().remove(app);
    }

    /// Validates a create request, runs the registry preflight, records the
    /// App with its first deploy and starts that deploy. Nothing is stored
    /// when a check fails. With `from`, the new App copies that App's
    /// configuration (a template) and runs its serving digest.
    pub async fn create_app(
        self: &Arc<Self>,
        req: CreateAppRequest,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let name = AppName::parse(&req.name)
            .map_err(|e| EngineError::invalid("invalid_name", e.to_string()))?;
        let template = match &req.from {
            Some(from) => Some(self.template(from, req.with_secrets, name.as_str())?),
            None => None,
        };
        let (base, mut env, template_image) = match template {
            Some((app, env, image)) => (Some(app), env, Some(image)),
            None => (None, Vec::new(), None),
        };
        let image_raw = if !req.image.is_empty() {
            req.image.clone()
        } else if let Some(image) = template_image {
            image
        } else {
            return Err(EngineError::invalid(
                "invalid_image",
                "an image is required: give --image REF (or --from APP to copy an App)",
            ));
        };
        let image = ImageRef::parse(&image_raw)
            .map_err(|e| EngineError::invalid("invalid_image", e.to_string()))?;
        let port = match (req.port, &base) {
            (0, Some(b)) => b.port,
            (0, None) => {
                return Err(EngineError::invalid("invalid_port", "a port is required: give --port PORT, the port the App listens on inside its container"))
            }
            (p, _) => p,
        };
        let mut health = base.as_ref().map(|b| b.health.clone()).unwrap_or_default();
        if let Some(path) = &req.health_path {
            molt_core::health::validate_path(path)
                .map_err(|e| EngineError::invalid("invalid_health_path", e))?;
            health.path = Some(path.clone());
        }
        if let Some(t) = req.health_timeout {
            if t == 0 || t > 3600 {
                return Err(EngineError::invalid(
                    "invalid_health_timeout",
                    "--health-timeout must be between 1 and 3600 seconds",
                ));
            }
            health.deploy_timeout_secs = t;
        }
        if let Some(ms) = req.health_interval_ms {
            health.interval_ms = ms.clamp(10, 60_000);
        }
        let mut domains = Vec::new();
        for d in &req.domains {
            let d = molt_core::name::parse_domain(d)
                .map_err(|e| EngineError::invalid("invalid_domain", e))?;
            if d == name.default_domain() || domains.contains(&d) {
                continue;
            }
            if let Some(owner) = self.domain_owner(&d)? {
                return Err(EngineError::invalid(
                    "domain_taken",
                    format!("the domain {d} is already routed to the App `{owner}`"),
                ));
            }
            domains.push(d);
        }
        for raw in &req.env {
            let (key, value) = molt_core::env::parse_assignment(raw)
                .map_err(|e| EngineError::invalid("invalid_env", e))?;
            env.retain(|e| e.key != key);
            env.push(EnvEntry {
                key,
                secret: false,
                value: Some(value),
                sealed: None,
            });
        }
        let memory_bytes = match &req.memory {
            Some(m) => Some(
                molt_core::size::parse_size(m)
                    .map_err(|e| EngineError::invalid("invalid_memory", e))?,
            ),
            None => base.as_ref().and_then(|b| b.memory_bytes),
        };
        if let Some(c) = req.cpus {
            if !(c > 0.0 && c <= 1024.0) {
                return Err(EngineError::invalid(
                    "invalid_cpus",
                    "--cpus must be a positive number such as 0.5 or 2",
                ));
            }
        }
        let replicas = req
            .replicas
            .or(base.as_ref().map(|b| b.replicas))
            .unwrap_or(1);
        if !(1..=100).contains(&replicas) {
            return Err(EngineError::invalid(
                "invalid_replicas",
                "--replicas must be between 1 and 100",
            ));
        }
        let strategy = req
            .strategy
            .clone()
            .or(base.as_ref().map(|b| b.strategy.clone()))
            .unwrap_or_else(|| "auto".into());
        if !["auto", "bluegreen", "recreate", "rolling"].contains(&strategy.as_str()) {
            return Err(EngineError::invalid(
                "invalid_strategy",
                format!("unknown strategy `{strategy}`: use auto, bluegreen, recreate or rolling"),
            ));
        }
        if self.store.get_app(name.as_str())?.is_some() {
            return Err(EngineError::Conflict {
                message: format!("an App named `{name}` already exists: pick another name, or deploy to it with `molt deploy {name} IMAGE`"),
                deploy_id: None,
            });
        }

        let needed = AppRow {
            memory_bytes,
            gpus: req.gpus.or(base.as_ref().map(|b| b.gpus)).unwrap_or(0),
            ..placeholder_app(name.as_str())
        };
        capacity::choose(&needed, false, self.in_use()?, self.capacity)
            .map_err(|e| EngineError::invalid("insufficient_resources", e))?;

        let cred = self.credential(&image.registry)?;
        registry::preflight(&image, cred.as_ref()).await?;

        let at = now();
        let app = AppRow {
            name: name.to_string(),
            status: AppStatus::Creating,
            image: image.to_string(),
            port,
            health,
            domains,
            replicas,
            strategy,
            memory_bytes,
            cpus: req.cpus.or(base.as_ref().and_then(|b| b.cpus)),
            gpus: req.gpus.or(base.as_ref().map(|b| b.gpus)).unwrap_or(0),
            drain_timeout_secs: req
                .drain_timeout_secs
                .or(base.as_ref().map(|b| b.drain_timeout_secs))
                .unwrap_or(30)
                .min(3600),
            current_deploy: None,
            created_at: at.clone(),
            updated_at: at.clone(),
        };
        let mut deploy = new_deploy(
            &app.name,
            DeployKind::Create,
            &image.to_string(),
            triggered_by,
            None,
            None,
        );
        deploy.env = env.clone();
        let cancel = self.claim(&app.name, &deploy.id)?;
        if let Err(e) = self.store.create_app(&app, &env, &deploy) {
            self.release(&app.name);
            return Err(e.into());
        }
        let plan = Plan::new(image.digest.clone());
        self.spawn(deploy.clone(), plan, cancel);
        Ok((app, deploy))
    }

    /// The configuration to copy from `from`: the App, its environment
    /// (secrets re-sealed for the new App, or left out), and its serving
    /// image pinned by digest.
    fn template(
        &self,
        from: &str,
        with_secrets: bool,
        new_name: &str,
    ) -> Result<(AppRow, Vec<EnvEntry>, String), EngineError> {
        let source = self.store.get_app(from)?.ok_or_else(|| {
            EngineError::NotFound(format!(
                "no App named `{from}` to copy: see `molt apps list`"
            ))
        })?;
        let mut env = Vec::new();
        for e in self.store.env(from)? {
            if !e.secret {
                env.push(e);
            } else if with_secrets {
                let sealed = e.sealed.as_deref().unwrap_or_default();
                let plain = self.sealer.open(&env_purpose(from, &e.key), sealed)?;
                let sealed = self.sealer.seal(&env_purpose(new_name, &e.key), &plain)?;
                env.push(EnvEntry {
                    sealed: Some(sealed),
                    ..e
                });
            }
        }
        let current = match &source.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        let image = match current.and_then(|d| d.digest.map(|digest| (d.image, digest))) {
            Some((image, digest)) => ImageRef::parse(&image)
                .map(|r| r.with_digest(&digest).to_string())
                .unwrap_or(source.image.clone()),
            None => source.image.clone(),
        };
        Ok((source, env, image))
    }

    /// What every serving container of this installation reserves.
    fn in_use(&self) -> anyhow::Result<Need> {
        let mut total = Need::default();
        for app in self.store.list_apps()? {
            if app.current_deploy.is_some() {
                let n = Need::of(&app);
                total.memory_bytes += n.memory_bytes * app.replicas as u64;
                total.gpus += n.gpus * app.replicas;
            }
        }
        Ok(total)
    }

    fn domain_owner(&self, domain: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .store
            .list_apps()?
            .into_iter()
            .find(|a| a.hosts().iter().any(|h| h == domain))
            .map(|a| a.name))
    }

    fn find_app(&self, name: &str) -> Result<AppRow, EngineError> {
        self.store.get_app(name)?.ok_or_else(|| {
            EngineError::NotFound(format!("no App named `{name}`: see `molt apps list`"))
        })
    }

    /// The deploy that serves an App now.
    fn serving(&self, app: &AppRow) -> Result<DeployRow, EngineError> {
        let current = match &app.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        current.ok_or_else(|| EngineError::Conflict {
            message: format!("the App `{}` has no serving version yet: deploy an image first with `molt deploy {} IMAGE`", app.name, app.name),
            deploy_id: None,
        })
    }

    /// Starts a deploy of `image` to an existing App.
    pub async fn deploy(
        self: &Arc<Self>,
        app: &str,
        image: &str,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self.find_app(app)?;
        let image = ImageRef::parse(image)
            .map_err(|e| EngineError::invalid("invalid_image", e.to_string()))?;
        let env = self.store.env(&app.name)?;
        let plan = Plan::new(image.digest.clone());
        self.begin(
            app,
            DeployKind::Deploy,
            image.to_string(),
            plan,
            env,
            triggered_by,
        )
    }

    /// Pulls the App's reference again (a new build pushed to the same tag)
    /// and swaps to it.
    pub async fn redeploy(
        self: &Arc<Self>,
        app: &str,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self.find_app(app)?;
        let env = self.store.env(&app.name)?;
        let image = app.image.clone();
        let plan = Plan::new(None);
        self.begin(app, DeployKind::Redeploy, image, plan, env, triggered_by)
    }

    /// Starts a fresh container of the serving digest, from the image on
    /// this host (no pull); `hard` restarts the serving container in place.
    pub async fn restart(
        self: &Arc<Self>,
        app: &str,
        hard: bool,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self.find_app(app)?;
        let serving = self.serving(&app)?;
        let env = self.store.env(&app.name)?;
        let plan = Plan {
            hard,
            ..Plan::new(serving.digest.clone())
        };
        self.begin(
            app,
            DeployKind::Restart,
            serving.image.clone(),
            plan,
            env,
            triggered_by,
        )
    }

    /// Swaps to the serving digest with the App's current environment.
    pub async fn apply_config(
        self: &Arc<Self>,
        app: &str,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self.find_app(app)?;
        let serving = self.serving(&app)?;
        let env = self.store.env(&app.name)?;
        let plan = Plan::new(serving.digest.clone());
        self.begin(
            app,
            DeployKind::Config,
            serving.image.clone(),
            plan,
            env,
            triggered_by,
        )
    }

    /// Returns to the digest of an earlier succeeded deploy (by default the
    /// one before the serving one), with its environment if `with_config`.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        target: Option<&str>,
        with_config: bool,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self.find_app(app)?;
        let history = self.store.list_deploys(&app.name)?;
        let target = match target {
            Some(id) => {
                let d = history.iter().find(|d| d.id == id).ok_or_else(|| {
                    EngineError::NotFound(format!(
                        "the App `{}` has no deploy `{id}`: see `molt deploys {}`",
                        app.name, app.name
                    ))
                })?;
                if d.status != DeployStatus::Succeeded {
                    return Err(EngineError::invalid(
                        "rollback_target_not_succeeded",
                        format!(
                            "deploy {id} {}; only a succeeded deploy can be rolled back to",
                            match d.status {
                                DeployStatus::Failed => "failed".to_string(),
                                DeployStatus::Canceled => "was canceled".to_string(),
                                s => format!("is still {s}"),
                            }
                        ),
                    ));
                }
                d.clone()
            }
            None => history
                .iter()
                .filter(|d| {
                    d.status == DeployStatus::Succeeded
                        && Some(&d.id) != app.current_deploy.as_ref()
                })
                .find(|d| d.digest.is_some())
                .cloned()
                .ok_or_else(|| {
                    EngineError::invalid(
                        "no_rollback_target",
                        format!(
                            "the App `{}` has no earlier succeeded deploy to roll back to",
                            app.name
                        ),
                    )
                })?,
        };
        let digest = target.digest.clone().ok_or_else(|| {
            EngineError::invalid(
                "rollback_target_without_digest",
                format!(
                    "deploy {} recorded no digest, so its exact image cannot be run again",
                    target.id
                ),
            )
        })?;
        let pinned = ImageRef::parse(&target.image)
            .map_err(|e| EngineError::invalid("invalid_image", e.to_string()))?
            .with_digest(&digest);
        let env = if with_config {
            target.env.clone()
        } else {
            self.store.env(&app.name)?
        };
        let plan = Plan {
            restore_env: with_config,
            ..Plan::new(Some(digest))
        };
        let (app, mut deploy) = self.begin(
            app,
            DeployKind::Rollback,
            pinned.to_string(),
            plan,
            env,
            triggered_by,
        )?;
        let _ = self.store.event(
            &deploy.id,
            &format!("rolling back to deploy {} ({})", target.id, target.image),
        );
        deploy.image = pinned.to_string();
        Ok((app, deploy))
    }

    fn begin(
        self: &Arc<Self>,
        app: AppRow,
        kind: DeployKind,
        image: String,
        mut plan: Plan,
        env: Vec<EnvEntry>,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let strategy = capacity::choose(
            &app,
            app.current_deploy.is_some(),
            self.in_use()?,
            self.capacity,
        )
        .map_err(|e| EngineError::invalid("insufficient_resources", e))?;
        plan.recreate = strategy == Strategy::Recreate && !plan.hard;
        let previous = match &app.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        let mut deploy = new_deploy(
            &app.name,
            kind,
            &image,
            triggered_by,
            previous.as_ref().map(|p| p.id.clone()),
            previous.and_then(|p| p.digest),
        );
        deploy.env = env;
        let cancel = self.claim(&app.name, &deploy.id)?;
        if let Err(e) = self.store.start_deploy(&deploy) {
            self.release(&app.name);
            return Err(e.into());
        }
        self.spawn(deploy.clone(), plan, cancel);
        let app = self.store.get_app(&app.name)?.unwrap_or(app);
        Ok((app, deploy))
    }

    /// Sets and unsets variables; applied on the next deploy, or at once
    /// with `apply` (a `config` deploy of the serving digest).
    pub async fn change_env(
        self: &Arc<Self>,
        app: &str,
        set: Vec<(String, String, bool)>,
        unset: Vec<String>,
        apply: bool,
        triggered_by: &str,
    ) -> Result<Option<DeployRow>, EngineError> {
        let app = self.find_app(app)?;
        let mut entries = Vec::new();
        for (key, value, secret) in set {
            molt_core::env::validate_key(&key)
                .map_err(|e| EngineError::invalid("invalid_env", e))?;
            molt_core::env::validate_value(&key, &value)
                .map_err(|e| EngineError::invalid("invalid_env", e))?;
            if key == "PORT" {
                return Err(EngineError::invalid(
                    "invalid_env",
                    "PORT is set by Molt to the App's port; change the port instead",
                ));
            }
            entries.push(if secret {
                EnvEntry {
                    sealed: Some(
                        self.sealer
                            .seal(&env_purpose(&app.name, &key), value.as_bytes())?,
                    ),
                    key,
                    secret: true,
                    value: None,
                }
            } else {
                EnvEntry {
                    key,
                    secret: false,
                    value: Some(value),
                    sealed: None,
                }
            });
        }
        for key in &unset {
            molt_core::env::validate_key(key)
                .map_err(|e| EngineError::invalid("invalid_env", e))?;
        }
        if apply {
            // Refuse before changing anything when a deploy is running.
            if let Some(running) = self.in_progress(&app.name) {
                return Err(EngineError::Conflict {
                    message: format!("the App `{}` is busy with deploy {running}; wait for it to finish or cancel it with `molt cancel {}`", app.name, app.name),
                    deploy_id: Some(running),
                });
            }
            self.serving(&app)?;
        }
        self.store.change_env(&app.name, &entries, &unset)?;
        if apply {
            let (_, deploy) = self.apply_config(&app.name, triggered_by).await?;
            return Ok(Some(deploy));
        }
        Ok(None)
    }

    /// The environment a container gets: `PORT`, then the App's variables
    /// with secrets opened.
    fn container_env(&self, app: &AppRow, env: &[EnvEntry]) -> anyhow::Result<Vec<String>> {
        let mut out = vec![format!("PORT={}", app.port)];
        for e in env.iter().filter(|e| e.key != "PORT") {
            let value = if e.secret {
                let plain = self.sealer.open(
                    &env_purpose(&app.name, &e.key),
                    e.sealed.as_deref().unwrap_or_default(),
                )?;
                String::from_utf8_lossy(&plain).into_owned()
            } else {
                e.value.clone().unwrap_or_default()
            };
            out.push(format!("{}={value}", e.key));
        }
        Ok(out)
    }

    /// Deletes an App: cancels any deploy in progress, then removes its
    /// route, its containers, its environment and history, and the App.
    pub async fn delete_app(&self, name: &str) -> Result<(), EngineError> {
        self.find_app(name)?;
        if let Some(active) = self.active().get(name) {
            active.cancel.cancel();
        }
        // Wait (bounded) for a canceled deploy to tear down its container.
        let deadline = Instant::now() + Duration::from_secs(60);
        let _cancel = loop {
            match self.claim(name, "delete") {
                Ok(token) => break token,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
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

    fn spawn(self: &Arc<Self>, deploy: DeployRow, plan: Plan, cancel: CancellationToken) {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let app = deploy.app.clone();
            engine.run(deploy, plan, cancel).await;
            engine.release(&app);
            crate::watch::settle_app(&engine, &app).await;
        });
    }

    /// Runs a deploy to its end and records the outcome. Cancellation is
    /// honoured until the swap; after it the deploy only moves forward.
    async fn run(&self, deploy: DeployRow, plan: Plan, cancel: CancellationToken) {
        let started = Instant::now();
        let mut new_container: Option<String> = None;
        let outcome = if plan.recreate {
            self.recreate(&deploy, &plan, &cancel, &mut new_container)
                .await
        } else {
            let prepared = tokio::select! {
                r = self.prepare(&deploy, &plan, &mut new_container) => r.map(Some),
                _ = cancel.cancelled() => Ok(None),
            };
            match prepared {
                Ok(Some(ready)) => match self.commit(&deploy, &plan, ready).await {
                    Ok(summary) => Outcome::Succeeded(summary),
                    Err(Failure(e)) => Outcome::Failed(e),
                },
                Ok(None) => Outcome::Canceled,
                Err(Failure(e)) => Outcome::Failed(e),
            }
        };
        let label = match &outcome {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Canceled => "canceled",
            Outcome::Failed(_) => "failed",
        };
        self.metrics
            .deploy_finished(&deploy.app, deploy.kind.as_str(), label, started.elapsed());
        if deploy.triggered_by == "autoheal" && label == "succeeded" {
            self.metrics.autoheal_replaced(&deploy.app);
        }
        let result = match outcome {
            Outcome::Succeeded(summary) => {
                if plan.restore_env {
                    if let Err(e) = self.store.replace_env(&deploy.app, &deploy.env) {
                        tracing::error!(
                            "cannot restore the environment of the rollback target: {e:#}"
                        );
                    } else {
                        let _ = self.store.event(
                            &deploy.id,
                            "restored the environment of the rollback target",
                        );
                    }
                }
                self.store
                    .finish_deploy(&deploy.id, DeployStatus::Succeeded, None, &summary)
            }
            Outcome::Canceled => {
                self.tear_down(&deploy, new_container.as_deref()).await;
                self.store.finish_deploy(
                    &deploy.id,
                    DeployStatus::Canceled,
                    Some("canceled before traffic moved; the previous version kept serving"),
                    "deploy canceled",
                )
            }
            Outcome::Failed(error) => {
                tracing::warn!(app = %deploy.app, deploy = %deploy.id, "deploy failed: {error}");
                self.tear_down(&deploy, new_container.as_deref()).await;
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

    /// A recreate, for a host that cannot hold the old and the new version
    /// at once: pull first; phase 1 holds the App's requests, drains and stops
    /// the old container (kept); phase 2 starts the new one and, once it is
    /// healthy, points the route at it and releases the held requests. If the
    /// new one fails or the deploy is canceled, the old one is started again
    /// and the requests flow to it.
    async fn recreate(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        cancel: &CancellationToken,
        new_container: &mut Option<String>,
    ) -> Outcome {
        let setup = async {
            let app = self
                .store
                .get_app(&deploy.app)?
                .ok_or_else(|| Failure(format!("the App `{}` was deleted", deploy.app)))?;
            let image = ImageRef::parse(&deploy.image)?;
            let old = self.serving(&app).map_err(|e| Failure(e.to_string()))?;
            let fetched = self.fetch(deploy, plan, &image).await?;
            Ok::<_, Failure>((app, image, old, fetched))
        };
        let (app, image, old, (run_ref, digest)) = tokio::select! {
            r = setup => match r {
                Ok(v) => v,
                Err(Failure(e)) => return Outcome::Failed(e),
            },
            _ = cancel.cancelled() => return Outcome::Canceled,
        };
        let (Some(old_id), Some(old_addr)) = (old.container_id.clone(), old.target_addr.clone())
        else {
            return Outcome::Failed("the serving deploy has no container to replace".into());
        };

        // Phase 1: stop the old deployment while requests wait.
        let held_for =
            Duration::from_secs(app.health.deploy_timeout_secs + app.drain_timeout_secs + 60);
        let phase1 = async {
            self.store.event(&deploy.id, "phase 1 of 2: stopping the old deployment (the host cannot hold both versions; new requests are held)")?;
            self.proxy
                .call(
                    &Request::Pause {
                        app: app.name.clone(),
                        max_pause_ms: held_for.as_millis() as u64,
                        max_queued: 10_000,
                    },
                    Duration::from_secs(10),
                )
                .await?;
            self.proxy.set_route(route_for(&app, Vec::new())).await?;
            let (drained, closed) = self
                .proxy
                .wait_drained(
                    &app.name,
                    &old_addr,
                    Duration::from_secs(app.drain_timeout_secs),
                )
                .await?;
            self.store.event(
                &deploy.id,
                &if drained {
                    "the old container drained".to_string()
                } else {
                    format!(
                        "drain timeout reached: closed {closed} connection(s) on the old container"
                    )
                },
            )?;
            self.runtime.stop(&old_id, STOP_TIMEOUT_SECS).await?;
            self.store.event(
                &deploy.id,
                &format!(
                    "stopped the old container {} (kept until the new one is healthy)",
                    short(&old_id)
                ),
            )?;
            Ok::<(), anyhow::Error>(())
        };
        if let Err(e) = phase1.await {
            let message = format!("stopping the old deployment failed: {e:#}");
            self.restore_old(deploy, &app, &old_id).await;
            return Outcome::Failed(message);
        }

        // Phase 2: deploy the new one.
        let phase2 = async {
            let name = format!("molt-{}-{}", app.name, deploy.id);
            self.store.advance(
                &deploy.id,
                DeployStatus::Starting,
                &format!("phase 2 of 2: deploying the new one: starting container {name}"),
            )?;
            let spec = ContainerSpec {
                name: name.clone(),
                image: run_ref,
                app: app.name.clone(),
                deploy: deploy.id.clone(),
                env: self.container_env(&app, &deploy.env)?,
                memory_bytes: app.memory_bytes,
                cpus: app.cpus,
                gpus: app.gpus,
            };
            let id = self.runtime.start(&spec).await?;
            *new_container = Some(id.clone());
            self.store.set_deploy_container(&deploy.id, &id, &name)?;
            self.store
                .event(&deploy.id, &format!("container {} started", short(&id)))?;
            let addr = self.check_new(deploy, &app, &id).await?;
            Ok::<_, Failure>((id, addr))
        };
        let started = tokio::select! {
            r = phase2 => r.map(Some),
            _ = cancel.cancelled() => Ok(None),
        };
        let (id, addr) = match started {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.tear_down(deploy, new_container.as_deref()).await;
                *new_container = None;
                self.restore_old(deploy, &app, &old_id).await;
                return Outcome::Canceled;
            }
            Err(Failure(e)) => {
                self.tear_down(deploy, new_container.as_deref()).await;
                *new_container = None;
                self.restore_old(deploy, &app, &old_id).await;
                return Outcome::Failed(e);
            }
        };

        // Swap and release the held requests to the new version.
        let swapped = async {
            self.store.advance(
                &deploy.id,
                DeployStatus::Swapping,
                "pointing the route at the new container and releasing held requests",
            )?;
            self.proxy
                .set_route(route_for(
                    &app,
                    vec![Target {
                        addr: addr.clone(),
                        id: id.clone(),
                    }],
                ))
                .await?;
            self.proxy
                .call(
                    &Request::Resume {
                        app: app.name.clone(),
                    },
                    Duration::from_secs(10),
                )
                .await?;
            Ok::<(), anyhow::Error>(())
        };
        if let Err(e) = swapped.await {
            let message = format!("the proxy did not take the new route: {e:#}");
            self.tear_down(deploy, Some(&id)).await;
            *new_container = None;
            self.restore_old(deploy, &app, &old_id).await;
            return Outcome::Failed(message);
        }
        *new_container = None;
        let followed = match deploy.kind {
            DeployKind::Rollback | DeployKind::Restart | DeployKind::Config => app.image.clone(),
            _ => image.to_string(),
        };
        if let Err(e) = self.store.record_swap(
            &deploy.id,
            &app.name,
            &followed,
            &format!("traffic switched to container {}", short(&id)),
        ) {
            tracing::error!("cannot record the swap of {}: {e:#}", deploy.id);
        }
        let removed = self.runtime.remove(&old_id).await;
        let _ = self.store.event(&deploy.id, &match removed {
            Ok(()) => format!("removed the old container {}", short(&old_id)),
            Err(e) => format!("could not remove the old container {} ({e:#}); it will be removed at the next reconcile", short(&old_id)),
        });
        Outcome::Succeeded(format!(
            "deploy succeeded (recreate): {} serves {}",
            digest.as_deref().map(short_digest).unwrap_or(&deploy.image),
            app.name
        ))
    }

    /// After a failed recreate: starts the old container again, points the
    /// route back at it and releases the held requests.
    async fn restore_old(&self, deploy: &DeployRow, app: &AppRow, old_id: &str) {
        let restored = async {
            self.runtime.start_existing(old_id).await?;
            let addr = self
                .wait_for_address(old_id, app.port)
                .await
                .map_err(|Failure(e)| anyhow::anyhow!(e))?;
            let health = HealthCheck {
                deploy_timeout_secs: app.health.deploy_timeout_secs.max(30),
                ..app.health.clone()
            };
            self.wait_healthy(deploy, &health, old_id, &addr)
                .await
                .map_err(|Failure(e)| anyhow::anyhow!(e))?;
            self.proxy
                .set_route(route_for(
                    app,
                    vec![Target {
                        addr: addr.clone(),
                        id: old_id.to_string(),
                    }],
                ))
                .await?;
            if let Some(current) = &app.current_deploy {
                self.store.set_deploy_target(current, &addr)?;
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        let resumed = self
            .proxy
            .call(
                &Request::Resume {
                    app: app.name.clone(),
                },
                Duration::from_secs(10),
            )
            .await;
        let message = match (restored, resumed) {
            (Ok(()), Ok(_)) => format!(
                "started the old container {} again; it serves the held requests",
                short(old_id)
            ),
            (Err(e), _) | (_, Err(e)) => format!(
                "could not bring the old container {} back: {e:#}",
                short(old_id)
            ),
        };
        let _ = self.store.event(&deploy.id, &message);
    }

    /// Removes whatever a deploy that did not swap started, including a
    /// container created just before a cancel.
    async fn tear_down(&self, deploy: &DeployRow, known: Option<&str>) {
        let mut ids: Vec<String> = known.map(str::to_string).into_iter().collect();
        if let Ok(found) = self.runtime.list(Some(&deploy.app)).await {
            ids.extend(
                found
                    .into_iter()
                    .filter(|c| c.deploy == deploy.id)
                    .map(|c| c.id),
            );
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            // Keep the failed container's last words in the deploy's record
            // before the container goes.
            let output = self.runtime.logs_tail(&id, 30).await;
            if !output.is_empty() {
                let _ = self.store.event(
                    &deploy.id,
                    &format!(
                        "last output of container {}:\n{}",
                        short(&id),
                        indent(&output)
                    ),
                );
            }
            match self.runtime.remove(&id).await {
                Ok(()) => {
                    let _ = self.store.event(
                        &deploy.id,
                        &format!(
                            "removed the new container {}; the previous version kept serving",
                            short(&id)
                        ),
                    );
                }
                Err(e) => tracing::error!(
                    "cannot remove the container {id} of deploy {}: {e:#}",
                    deploy.id
                ),
            }
        }
    }

    /// Everything before the swap: pull, start beside the old one, health.
    async fn prepare(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        new_container: &mut Option<String>,
    ) -> Result<Ready, Failure> {
        let app = self
            .store
            .get_app(&deploy.app)?
            .ok_or_else(|| Failure(format!("the App `{}` was deleted", deploy.app)))?;
        let image = ImageRef::parse(&deploy.image)?;
        if plan.hard {
            return self.restart_in_place(deploy, &app).await;
        }

        let (run_ref, digest) = self.fetch(deploy, plan, &image).await?;

        // Start beside the old one.
        let name = format!("molt-{}-{}", app.name, deploy.id);
        self.store.advance(
            &deploy.id,
            DeployStatus::Starting,
            &format!("starting container {name}"),
        )?;
        let spec = ContainerSpec {
            name: name.clone(),
            image: run_ref,
            app: app.name.clone(),
            deploy: deploy.id.clone(),
            env: self.container_env(&app, &deploy.env)?,
            memory_bytes: app.memory_bytes,
            cpus: app.cpus,
            gpus: app.gpus,
        };
        let id = self.runtime.start(&spec).await?;
        *new_container = Some(id.clone());
        self.store.set_deploy_container(&deploy.id, &id, &name)?;
        self.store
            .event(&deploy.id, &format!("container {} started", short(&id)))?;

        let addr = self.check_new(deploy, &app, &id).await?;
        Ok(Ready {
            app,
            image,
            container: id,
            addr,
            digest,
        })
    }

    /// Gets the image onto the host and says what exactly will run:
    /// `repo@digest` whenever the digest is known.
    async fn fetch(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        image: &ImageRef,
    ) -> Result<(String, Option<String>), Failure> {
        if let Some(digest) = &plan.digest {
            let pinned = image.with_digest(digest);
            self.store.set_deploy_digest(&deploy.id, digest)?;
            if self.runtime.has_image(&pinned.to_string()).await {
                self.store.event(
                    &deploy.id,
                    &format!("using {pinned}, already on this host (no pull)"),
                )?;
                return Ok((pinned.to_string(), Some(digest.clone())));
            }
            if deploy.kind == DeployKind::Restart {
                return Err(Failure(format!(
                    "the image {pinned} is no longer on this host, so it cannot be restarted without a pull: use `molt redeploy {}`",
                    deploy.app
                )));
            }
            self.store.advance(
                &deploy.id,
                DeployStatus::Pulling,
                &format!("pulling {pinned}"),
            )?;
            let cred = self
                .credential(&image.registry)?
                .map(|c| (c.username, c.password));
            self.runtime
                .pull(&pinned, cred)
                .await
                .map_err(|e| Failure(format!("pulling {pinned} failed: {e}")))?;
            self.store.event(&deploy.id, &format!("pulled {pinned}"))?;
            return Ok((pinned.to_string(), Some(digest.clone())));
        }
        self.store.advance(
            &deploy.id,
            DeployStatus::Pulling,
            &format!("pulling {image}"),
        )?;
        let cred = self
            .credential(&image.registry)?
            .map(|c| (c.username, c.password));
        self.runtime
            .pull(image, cred)
            .await
            .map_err(|e| Failure(format!("pulling {image} failed: {e}")))?;
        match self.runtime.image_digest(image).await? {
            Some(d) => {
                self.store.set_deploy_digest(&deploy.id, &d)?;
                let change = match &deploy.previous_digest {
                    Some(prev) if *prev == d => {
                        " (unchanged: the same digest as the serving version)"
                    }
                    Some(_) => " (changed: a new digest)",
                    None => "",
                };
                self.store
                    .event(&deploy.id, &format!("pulled {image}: {d}{change}"))?;
                Ok((image.with_digest(&d).to_string(), Some(d)))
            }
            None => {
                self.store.event(
                    &deploy.id,
                    &format!("pulled {image} (the engine reports no registry digest)"),
                )?;
                Ok((image.to_string(), None))
            }
        }
    }

    /// Waits for the new container's address and health.
    async fn check_new(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        id: &str,
    ) -> Result<String, Failure> {
        let addr = self.wait_for_address(id, app.port).await?;
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
        let healthy = self.wait_healthy(deploy, &app.health, id, &addr).await?;
        self.store.event(&deploy.id, &healthy)?;
        Ok(addr)
    }

    /// `restart --hard`: the serving container is stopped and started again
    /// in place; requests fail while it is down.
    async fn restart_in_place(&self, deploy: &DeployRow, app: &AppRow) -> Result<Ready, Failure> {
        let serving = self.serving(app).map_err(|e| Failure(e.to_string()))?;
        let id = serving
            .container_id
            .clone()
            .ok_or_else(|| Failure("the serving deploy has no container to restart".into()))?;
        self.store.advance(
            &deploy.id,
            DeployStatus::Starting,
            &format!(
                "hard restart: stopping and starting container {} in place",
                short(&id)
            ),
        )?;
        self.runtime.stop(&id, STOP_TIMEOUT_SECS).await?;
        self.runtime.start_existing(&id).await?;
        self.store.set_deploy_container(
            &deploy.id,
            &id,
            serving.container_name.as_deref().unwrap_or_default(),
        )?;
        let addr = self.check_new(deploy, app, &id).await?;
        Ok(Ready {
            app: app.clone(),
            image: ImageRef::parse(&deploy.image)?,
            container: id,
            addr,
            digest: serving.digest,
        })
    }

    /// The swap and what follows it.
    async fn commit(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        ready: Ready,
    ) -> Result<String, Failure> {
        let Ready {
            app,
            image,
            container,
            addr,
            digest,
        } = ready;
        let old = match &app.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        self.store.advance(
            &deploy.id,
            DeployStatus::Swapping,
            "switching traffic to the new container",
        )?;
        self.proxy
            .set_route(route_for(
                &app,
                vec![Target {
                    addr: addr.clone(),
                    id: container.clone(),
                }],
            ))
            .await
            .map_err(|e| Failure(format!("the proxy did not take the new route: {e:#}")))?;
        // A rollback keeps following the App's reference; other kinds make
        // the deployed reference the App's.
        let followed = match deploy.kind {
            DeployKind::Rollback | DeployKind::Restart | DeployKind::Config => app.image.clone(),
            _ => image.to_string(),
        };
        self.store.record_swap(
            &deploy.id,
            &app.name,
            &followed,
            &format!("traffic switched to container {}", short(&container)),
        )?;
        // From here on the new version serves: nothing below fails the deploy.
        if let Some(old) =
            old.filter(|o| !plan.hard && o.container_id.as_deref() != Some(container.as_str()))
        {
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
            let _ = self.store.event(
                deploy_id,
                &format!(
                    "draining the old container {} (up to {} s)",
                    short(old_id),
                    app.drain_timeout_secs
                ),
            );
            match self.proxy.wait_drained(&app.name, addr, timeout).await {
                Ok((true, _)) => {
                    let _ = self.store.event(deploy_id, "the old container drained");
                }
                Ok((false, closed)) => {
                    let _ = self.store.event(deploy_id, &format!("drain timeout reached: closed {closed} connection(s) still open on the old container"));
                }
                Err(e) => {
                    let _ = self
                        .store
                        .event(deploy_id, &format!("could not wait for the drain: {e:#}"));
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
                Some(s) if s.ip.is_some() => {
                    return Ok(format!("{}:{port}", s.ip.unwrap_or_default()))
                }
                Some(s) if !s.running && !s.restarting => break,
                None => {
                    return Err(Failure(
                        "the new container disappeared right after it started".into(),
                    ))
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self.crash_failure(id).await.unwrap_or_else(|| {
            Failure(format!(
                "the new container got no address on the network `{}`",
                self.runtime.network()
            ))
        }))
    }

    /// Checks until the container is healthy, exits, or the deploy timeout
    /// passes. Records the first result and every change of result.
    async fn wait_healthy(
        &self,
        deploy: &DeployRow,
        health: &HealthCheck,
        id: &str,
        addr: &str,
    ) -> Result<String, Failure> {
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
                .check(
                    addr,
                    health.path.as_deref(),
                    check_timeout.min(remaining.max(Duration::from_millis(10))),
                )
                .await;
            if last.as_ref() != Some(&probe) && !probe.is_healthy() {
                self.store
                    .event(&deploy.id, &format!("health check: {probe}"))?;
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
            last = Some(probe);
            if Instant::now() >= deadline {
                if let Some(failure) = self.crash_failure(id).await {
                    return Err(failure);
                }
                let refused = last
                    .as_ref()
                    .is_some_and(|p| p.to_string().contains("refused"));
                let last = last
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "no check completed".into());
                let mut message = format!(
                    "the new container did not become healthy within {} s; last check: {last}",
                    health.deploy_timeout_secs
                );
                if refused {
                    let port = addr.rsplit(':').next().unwrap_or_default();
                    let ports = self.runtime.listening_ports(id).await;
                    if !ports.is_empty() && !ports.iter().any(|p| p.to_string() == port) {
                        let list = ports
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", ");
                        let noun = if ports.len() == 1 { "port" } else { "ports" };
                        message.push_str(&format!("; the container listens on {noun} {list}, not on port {port}: set the App's port to the one it listens on"));
                    }
                }
                return Err(Failure(message));
            }
            tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// A failure describing a container that exited (or is being restarted
    /// by the engine after exiting), with its exit code and last output.
    async fn crash_failure(&self, id: &str) -> Option<Failure> {
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
        Some(Failure(message))
    }
}

/// What `prepare` hands to `commit`: a healthy new container.
struct Ready {
    app: AppRow,
    image: ImageRef,
    container: String,
    addr: String,
    digest: Option<String>,
}

/// An App row with only a name, for capacity checks before it exists.
fn placeholder_app(name: &str) -> AppRow {
    AppRow {
        name: name.to_string(),
        status: AppStatus::Creating,
        image: String::new(),
        port: 0,
        health: HealthCheck::default(),
        domains: Vec::new(),
        replicas: 1,
        strategy: "auto".into(),
        memory_bytes: None,
        cpus: None,
        gpus: 0,
        drain_timeout_secs: 30,
        current_deploy: None,
        created_at: String::new(),
        updated_at: String::new(),
    }
}

/// What a secret variable's sealed value is bound to.
fn env_purpose(app: &str, key: &str) -> String {
    format!("env:{app}:{key}")
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
        env: Vec::new(),
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
