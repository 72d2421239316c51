//! The deploy engine: one operation per App at a time, each deploy a run of
//! the state machine in `molt_core::deploy`, every step recorded before it is
//! taken. A failure before the swap removes the new containers and leaves the
//! old set serving; after the swap the deploy only moves forward.
//!
//! An App runs `replicas` containers. A deploy's containers are rows of the
//! store (`ReplicaRow`), and its rows describe its whole set, containers it
//! kept from the version before included (a scale, one replica replaced by
//! autoheal, a hard restart): the serving set is always the rows of the
//! App's current deploy. Blue-green starts the whole new set and swaps it in
//! at once; rolling replaces one replica at a time and, on failure, brings
//! the replaced old containers back (they are stopped, not removed, until
//! the deploy ends); recreate stops the old set first.

use crate::capacity::{self, Capacity, Need, Strategy};
use crate::health::{Probe, Prober};
use crate::proxy_link::ProxyLink;
use crate::registry::{self, Credential, RegistryError};
use crate::runtime::{ContainerSpec, Runtime};
use crate::seal::Sealer;
use crate::store::{now, AppRow, DeployRow, EnvEntry, ReplicaRow, Store};
use futures_util::future::{join_all, try_join_all};
use molt_core::api::CreateAppRequest;
use molt_core::health::HealthCheck;
use molt_core::{AppName, AppStatus, DeployKind, DeployStatus, ImageRef};
use molt_proxy::admin::{Request, Route, Target};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a stopped container gets between SIGTERM and SIGKILL.
const STOP_TIMEOUT_SECS: u64 = 10;

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
    /// How the serving set is replaced; `begin` chooses it from the App's
    /// strategy and the host's room unless it is given.
    strategy: Option<Strategy>,
    /// How many containers the deploy runs when done; 0 until `begin`
    /// fills in the App's replicas (a scale gives its new count).
    replicas: u32,
    /// Only these replicas get new containers and the other serving ones
    /// are kept (autoheal replacing one, a scale: none); `None` replaces all.
    only: Option<Vec<u32>>,
}

impl Plan {
    fn new(digest: Option<String>) -> Self {
        Self {
            digest,
            hard: false,
            restore_env: false,
            strategy: None,
            replicas: 0,
            only: None,
        }
    }
}

/// How a deploy changes the serving set.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// Serving containers that stay as they are.
    keep: Vec<ReplicaRow>,
    /// Replicas that get a new container.
    start: Vec<u32>,
    /// Serving containers that go once their replacement (if any) serves.
    retire: Vec<ReplicaRow>,
}

/// Splits the serving set for a deploy to `replicas` containers where only
/// the replicas in `only` (all when `None`) are replaced: replicas beyond the
/// count retire, missing ones are started.
fn layout(serving: &[ReplicaRow], replicas: u32, only: Option<&[u32]>) -> Layout {
    let (retire, keep): (Vec<ReplicaRow>, Vec<ReplicaRow>) = serving
        .iter()
        .cloned()
        .partition(|row| row.replica >= replicas || only.is_none_or(|o| o.contains(&row.replica)));
    let start = (0..replicas)
        .filter(|i| !keep.iter().any(|k| k.replica == *i))
        .collect();
    Layout {
        keep,
        start,
        retire,
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
    /// Why a deploy was stopped, when it was not the user's cancel.
    interruptions: Mutex<HashMap<String, String>>,
    /// The deploy in progress per App: the one-operation-at-a-time rule.
    active: Mutex<HashMap<String, Active>>,
    /// Woken whenever an App is released, for claims that wait.
    released: tokio::sync::Notify,
    /// Serving containers autoheal took out of the proxy's rotation while
    /// their health check fails (in memory: after a restart every serving
    /// container is in rotation until checked again).
    benched: Mutex<HashSet<String>>,
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        runtime: Runtime,
        proxy: Arc<ProxyLink>,
        sealer: Arc<Sealer>,
        capacity: Capacity,
    ) -> Self {
        let prober = match runtime.upstream() {
            crate::runtime::UpstreamMode::Bridge => Prober::new(),
            crate::runtime::UpstreamMode::Published => {
                Prober::new().with_tcp_settle(crate::health::PUBLISHED_TCP_SETTLE)
            }
        };
        Self {
            store,
            runtime,
            proxy,
            sealer,
            prober,
            capacity,
            metrics: Default::default(),
            active: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
            interruptions: Mutex::new(HashMap::new()),
            benched: Mutex::new(HashSet::new()),
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

    /// [`claim`](Self::claim), but waits (up to 3 s) while the App is only
    /// being resynced or settled after a container event: that takes
    /// milliseconds, and a deploy asked for meanwhile should not be refused.
    async fn claim_patiently(
        &self,
        app: &str,
        deploy_id: &str,
    ) -> Result<CancellationToken, EngineError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            // Listening before trying, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.claim(app, deploy_id) {
                Err(EngineError::Conflict {
                    deploy_id: Some(holder),
                    ..
                }) if holder == "resync" => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return self.claim(app, deploy_id);
                    }
                }
                other => return other,
            }
        }
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

    /// Stops the deploy in progress as a failure with `reason` (the engine
    /// restarted under it): it is torn down like a cancel — the new
    /// containers go, the old set keeps or gets back the traffic — but
    /// recorded as failed with the reason.
    pub fn interrupt(&self, app: &str, reason: &str) {
        let active = self.active();
        if let Some(a) = active
            .get(app)
            .filter(|a| a.deploy_id != "delete" && a.deploy_id != "resync")
        {
            self.interruptions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(a.deploy_id.clone(), reason.to_string());
            a.cancel.cancel();
        }
    }

    pub(crate) fn release(&self, app: &str) {
        self.active().remove(app);
        self.released.notify_waiters();
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
            replicas,
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
            upstream_timeout_secs: req
                .upstream_timeout_secs
                .or(base.as_ref().map(|b| b.upstream_timeout_secs))
                .unwrap_or(60)
                .clamp(1, 3600),
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
        deploy.replicas = replicas;
        let cancel = self.claim(&app.name, &deploy.id)?;
        if let Err(e) = self.store.create_app(&app, &env, &deploy) {
            self.release(&app.name);
            return Err(e.into());
        }
        let plan = Plan {
            strategy: Some(Strategy::BlueGreen),
            replicas,
            ..Plan::new(image.digest.clone())
        };
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

    /// The containers of the deploy that serves an App now (none before its
    /// first deploy succeeded), by replica.
    pub fn serving_rows(&self, app: &AppRow) -> anyhow::Result<Vec<ReplicaRow>> {
        match &app.current_deploy {
            Some(id) => self.store.replicas(id),
            None => Ok(Vec::new()),
        }
    }

    fn benched(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.benched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a container out of the proxy's rotation (applied by the next
    /// route change, see `targets`); false if it was out already.
    pub fn bench(&self, container: &str) -> bool {
        self.benched().insert(container.to_string())
    }

    /// Puts a benched container back into rotation; false if it was in.
    pub fn unbench(&self, container: &str) -> bool {
        self.benched().remove(container)
    }

    pub fn is_benched(&self, container: &str) -> bool {
        self.benched().contains(container)
    }

    /// Forgets benched containers that no longer serve.
    pub fn retain_benched(&self, serving: &HashSet<String>) {
        self.benched().retain(|c| serving.contains(c));
    }

    /// The proxy targets for a set of containers, by replica: those with an
    /// address, without the benched ones, unless that would leave none (a
    /// replica that fails its checks still beats a 503 for everyone).
    pub fn targets<'a>(&self, rows: impl IntoIterator<Item = &'a ReplicaRow>) -> Vec<Target> {
        let mut rows: Vec<&ReplicaRow> = rows.into_iter().filter(|r| r.addr.is_some()).collect();
        rows.sort_by_key(|r| r.replica);
        let target = |r: &&ReplicaRow| Target {
            addr: r.addr.clone().unwrap_or_default(),
            id: r.container_id.clone(),
        };
        let benched = self.benched();
        let in_rotation: Vec<Target> = rows
            .iter()
            .filter(|r| !benched.contains(&r.container_id))
            .map(target)
            .collect();
        if in_rotation.is_empty() {
            rows.iter().map(target).collect()
        } else {
            in_rotation
        }
    }

    /// Probes a container that was just started (by the reconciler) until
    /// it is healthy or the App's deploy timeout passes; returns whether it
    /// became healthy.
    pub async fn wait_serving(&self, app: &AppRow, addr: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(app.health.deploy_timeout_secs);
        let check_timeout = Duration::from_millis(app.health.check_timeout_ms);
        loop {
            let probe = self
                .prober
                .check(addr, app.health.path.as_deref(), check_timeout)
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

    /// Changes how many containers serve an App, with no downtime: new
    /// containers of the serving digest (with the serving deploy's
    /// environment, so every replica runs the same) are health-checked and
    /// added to the route; replicas beyond the count leave the route first,
    /// drain, then stop and go. Recorded as a `scale` deploy.
    pub async fn scale(
        self: &Arc<Self>,
        app: &str,
        replicas: u32,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self.find_app(app)?;
        if !(1..=100).contains(&replicas) {
            return Err(EngineError::invalid(
                "invalid_replicas",
                "replicas must be between 1 and 100",
            ));
        }
        let serving = self.serving(&app)?;
        if replicas == app.replicas {
            return Err(EngineError::invalid(
                "replicas_unchanged",
                format!("the App `{}` already runs {replicas} replica(s)", app.name),
            ));
        }
        if replicas > app.replicas {
            capacity::fits(&app, replicas, self.in_use()?, self.capacity)
                .map_err(|e| EngineError::invalid("insufficient_resources", e))?;
        }
        let from = app.replicas;
        let plan = Plan {
            strategy: Some(Strategy::BlueGreen),
            replicas,
            only: Some(Vec::new()),
            ..Plan::new(serving.digest.clone())
        };
        let (app, deploy) = self
            .begin(
                app,
                DeployKind::Scale,
                serving.image.clone(),
                plan,
                serving.env.clone(),
                triggered_by,
            )
            .await?;
        let _ = self.store.event(
            &deploy.id,
            &format!("scaling from {from} to {replicas} replica(s)"),
        );
        Ok((app, deploy))
    }

    /// Replaces one replica of an App beside the others (autoheal): a fresh
    /// container of the serving digest and environment is health-checked and
    /// takes the sick one's place, which then drains and goes. When the host
    /// has no room for one container more, the whole App restarts through
    /// its strategy instead.
    pub async fn replace_replica(
        self: &Arc<Self>,
        app: &str,
        replica: u32,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        let app = self.find_app(app)?;
        let serving = self.serving(&app)?;
        if capacity::fits(&app, app.replicas + 1, self.in_use()?, self.capacity).is_err() {
            return self.restart(&app.name, false, triggered_by).await;
        }
        let plan = Plan {
            strategy: Some(Strategy::BlueGreen),
            only: Some(vec![replica]),
            ..Plan::new(serving.digest.clone())
        };
        let (app, deploy) = self
            .begin(
                app,
                DeployKind::Restart,
                serving.image.clone(),
                plan,
                serving.env.clone(),
                triggered_by,
            )
            .await?;
        let _ = self
            .store
            .event(&deploy.id, &format!("replacing replica {replica}"));
        Ok((app, deploy))
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
        .await
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
            .await
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
        .await
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
        .await
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
                        && d.kind.is_version()
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
        let (app, mut deploy) = self
            .begin(
                app,
                DeployKind::Rollback,
                pinned.to_string(),
                plan,
                env,
                triggered_by,
            )
            .await?;
        let _ = self.store.event(
            &deploy.id,
            &format!("rolling back to deploy {} ({})", target.id, target.image),
        );
        deploy.image = pinned.to_string();
        Ok((app, deploy))
    }

    async fn begin(
        self: &Arc<Self>,
        app: AppRow,
        kind: DeployKind,
        image: String,
        mut plan: Plan,
        env: Vec<EnvEntry>,
        triggered_by: &str,
    ) -> Result<(AppRow, DeployRow), EngineError> {
        if plan.strategy.is_none() {
            plan.strategy = Some(
                capacity::choose(
                    &app,
                    app.current_deploy.is_some(),
                    self.in_use()?,
                    self.capacity,
                )
                .map_err(|e| EngineError::invalid("insufficient_resources", e))?,
            );
        }
        if plan.replicas == 0 {
            plan.replicas = app.replicas.max(1);
        }
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
        deploy.replicas = plan.replicas;
        let cancel = self.claim_patiently(&app.name, &deploy.id).await?;
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
        });
    }

    /// Runs a deploy to its end and records the outcome. Cancellation is
    /// honoured until the swap (a rolling deploy: until its last replica
    /// moved, and it brings the old ones back); after it the deploy only
    /// moves forward.
    async fn run(&self, deploy: DeployRow, plan: Plan, cancel: CancellationToken) {
        let started = Instant::now();
        let mut new_containers: Vec<String> = Vec::new();
        let outcome = match plan.strategy {
            Some(Strategy::Recreate) if !plan.hard => {
                self.recreate(&deploy, &plan, &cancel, &mut new_containers)
                    .await
            }
            Some(Strategy::Rolling) if !plan.hard => {
                self.rolling(&deploy, &plan, &cancel, &mut new_containers)
                    .await
            }
            _ => {
                let prepared = tokio::select! {
                    r = self.prepare(&deploy, &plan, &mut new_containers) => r.map(Some),
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
            }
        };
        let interrupted = self
            .interruptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&deploy.id);
        let outcome = match (outcome, interrupted) {
            (Outcome::Canceled, Some(reason)) => Outcome::Failed(format!(
                "{reason}; the new container(s) were removed and the previous version serves"
            )),
            (outcome, _) => outcome,
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
        // Before the end is recorded (and the App released), so that a client
        // that sees the end can deploy again at once: tear down what a
        // stopped deploy started, point the route at whatever serves now and
        // remove leftovers.
        if !matches!(outcome, Outcome::Succeeded(_)) {
            self.tear_down(&deploy, &new_containers).await;
        }
        crate::watch::settle_claimed(self, &deploy.app).await;
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
            Outcome::Canceled => self.store.finish_deploy(
                &deploy.id,
                DeployStatus::Canceled,
                Some("canceled before traffic moved; the previous version kept serving"),
                "deploy canceled",
            ),
            Outcome::Failed(error) => {
                tracing::warn!(app = %deploy.app, deploy = %deploy.id, "deploy failed: {error}");
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

    /// The App, the serving deploy and its containers, and the image on the
    /// host: what a recreate or a rolling deploy needs
    /// before it touches the serving set.
    async fn setup(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
    ) -> Result<(AppRow, DeployRow, Vec<ReplicaRow>, Fetched), Failure> {
        let app = self
            .store
            .get_app(&deploy.app)?
            .ok_or_else(|| Failure(format!("the App `{}` was deleted", deploy.app)))?;
        let image = ImageRef::parse(&deploy.image)?;
        let old = self.serving(&app).map_err(|e| Failure(e.to_string()))?;
        let rows = self.store.replicas(&old.id)?;
        let fetched = self.fetch(deploy, plan, &image).await?;
        Ok((app, old, rows, fetched))
    }

    /// A recreate, for a host that cannot hold the old and the new version
    /// at once: pull first; phase 1 holds the App's requests, drains and stops
    /// the old containers (kept); phase 2 starts the new ones and, once they
    /// are healthy, points the route at them and releases the held requests.
    /// If a new one fails or the deploy is canceled, the old ones are started
    /// again and the requests flow to them.
    async fn recreate(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        cancel: &CancellationToken,
        new_containers: &mut Vec<String>,
    ) -> Outcome {
        let (app, old, old_rows, (run_ref, digest)) = tokio::select! {
            r = self.setup(deploy, plan) => match r {
                Ok(v) => v,
                Err(Failure(e)) => return Outcome::Failed(e),
            },
            _ = cancel.cancelled() => return Outcome::Canceled,
        };
        if old_rows.is_empty() {
            return Outcome::Failed("the serving deploy has no container to replace".into());
        }
        let one = old_rows.len() == 1;

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
            let drains = old_rows
                .iter()
                .filter_map(|r| r.addr.as_deref())
                .map(|addr| {
                    self.proxy.wait_drained(
                        &app.name,
                        addr,
                        Duration::from_secs(app.drain_timeout_secs),
                    )
                });
            let mut closed = 0;
            for drained in join_all(drains).await {
                closed += drained?.1;
            }
            let noun = if one { "container" } else { "containers" };
            self.store.event(
                &deploy.id,
                &if closed == 0 {
                    format!("the old {noun} drained")
                } else {
                    format!(
                        "drain timeout reached: closed {closed} connection(s) on the old {noun}"
                    )
                },
            )?;
            for row in &old_rows {
                self.runtime
                    .stop(&row.container_id, STOP_TIMEOUT_SECS)
                    .await?;
            }
            self.store.event(
                &deploy.id,
                &format!(
                    "stopped the old {noun} {} (kept until the new {} healthy)",
                    list_short(&old_rows),
                    if one { "one is" } else { "ones are" }
                ),
            )?;
            Ok::<(), anyhow::Error>(())
        };
        if let Err(e) = phase1.await {
            let message = format!("stopping the old deployment failed: {e:#}");
            self.restore_old(deploy, &app, &old.id, &old_rows).await;
            return Outcome::Failed(message);
        }

        // Phase 2: deploy the new one.
        let phase2 = async {
            let names: Vec<String> = (0..plan.replicas)
                .map(|i| container_name(&app.name, &deploy.id, i))
                .collect();
            self.store.advance(
                &deploy.id,
                DeployStatus::Starting,
                &format!(
                    "phase 2 of 2: deploying the new one: starting {} {}",
                    if names.len() == 1 {
                        "container"
                    } else {
                        "containers"
                    },
                    names.join(", ")
                ),
            )?;
            let mut fresh = Vec::new();
            for i in 0..plan.replicas {
                fresh.push(
                    self.start_replica(deploy, &app, &run_ref, i, new_containers)
                        .await?,
                );
            }
            self.check_all(deploy, &app, &mut fresh).await?;
            Ok::<_, Failure>(fresh)
        };
        let started = tokio::select! {
            r = phase2 => r.map(Some),
            _ = cancel.cancelled() => Ok(None),
        };
        let fresh = match started {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.tear_down(deploy, new_containers).await;
                new_containers.clear();
                self.restore_old(deploy, &app, &old.id, &old_rows).await;
                return Outcome::Canceled;
            }
            Err(Failure(e)) => {
                self.tear_down(deploy, new_containers).await;
                new_containers.clear();
                self.restore_old(deploy, &app, &old.id, &old_rows).await;
                return Outcome::Failed(e);
            }
        };

        // Swap and release the held requests to the new version.
        let swapped = async {
            self.store.advance(
                &deploy.id,
                DeployStatus::Swapping,
                &format!(
                    "pointing the route at the new {} and releasing held requests",
                    if fresh.len() == 1 {
                        "container"
                    } else {
                        "containers"
                    }
                ),
            )?;
            self.proxy
                .set_route(route_for(&app, self.targets(&fresh)))
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
            self.tear_down(deploy, new_containers).await;
            new_containers.clear();
            self.restore_old(deploy, &app, &old.id, &old_rows).await;
            return Outcome::Failed(message);
        }
        new_containers.clear();
        if let Err(e) = self.store.record_swap(
            &deploy.id,
            &app.name,
            &followed_image(deploy, &app),
            &format!("traffic switched to {}", describe_containers(&fresh)),
        ) {
            tracing::error!("cannot record the swap of {}: {e:#}", deploy.id);
        }
        for row in &old_rows {
            let removed = self.runtime.remove(&row.container_id).await;
            let _ = self.store.event(&deploy.id, &match removed {
                Ok(()) => format!("removed the old container {}", short(&row.container_id)),
                Err(e) => format!("could not remove the old container {} ({e:#}); it will be removed at the next reconcile", short(&row.container_id)),
            });
        }
        Outcome::Succeeded(format!(
            "deploy succeeded (recreate): {} serves {}{}",
            digest.as_deref().map(short_digest).unwrap_or(&deploy.image),
            app.name,
            on_replicas(plan.replicas)
        ))
    }

    /// After a failed recreate: starts the old containers again, points the
    /// route back at them and releases the held requests.
    async fn restore_old(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        serving_id: &str,
        old_rows: &[ReplicaRow],
    ) {
        let mut back = Vec::new();
        let mut errors = Vec::new();
        for row in old_rows {
            match self.bring_back(deploy, app, row).await {
                Ok(addr) => {
                    let _ = self.store.set_replica_addr(serving_id, row.replica, &addr);
                    back.push(ReplicaRow {
                        addr: Some(addr),
                        ..row.clone()
                    });
                }
                Err(Failure(e)) => errors.push(format!(
                    "could not bring the old container {} back: {e}",
                    short(&row.container_id)
                )),
            }
        }
        let routed = if back.is_empty() {
            Ok(())
        } else {
            self.proxy
                .set_route(route_for(app, self.targets(&back)))
                .await
        };
        let resumed = self
            .proxy
            .call(
                &Request::Resume {
                    app: app.name.clone(),
                },
                Duration::from_secs(10),
            )
            .await;
        if let Err(e) = routed.and(resumed.map(|_| ())) {
            errors.push(format!(
                "could not point the route back at the old containers: {e:#}"
            ));
        }
        if !back.is_empty() {
            let _ = self.store.event(
                &deploy.id,
                &format!(
                    "started the old {} {} again; {} the held requests",
                    if back.len() == 1 {
                        "container"
                    } else {
                        "containers"
                    },
                    list_short(&back),
                    if back.len() == 1 {
                        "it serves"
                    } else {
                        "they serve"
                    }
                ),
            );
        }
        for e in errors {
            let _ = self.store.event(&deploy.id, &e);
        }
    }

    /// Starts a stopped serving container again and waits until it is
    /// healthy (at least 30 s: it served before); returns its address.
    async fn bring_back(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        row: &ReplicaRow,
    ) -> Result<String, Failure> {
        self.runtime.start_existing(&row.container_id).await?;
        let addr = self.wait_for_address(&row.container_id, app.port).await?;
        let health = HealthCheck {
            deploy_timeout_secs: app.health.deploy_timeout_secs.max(30),
            ..app.health.clone()
        };
        self.wait_healthy(deploy, &health, &row.container_id, &addr, "")
            .await?;
        Ok(addr)
    }

    /// A rolling deploy: for each replica, a new container starts beside the
    /// serving set, is health-checked, and takes the old one's place in the
    /// route in one swap; the old one drains and is stopped (kept until the
    /// deploy ends). The route never holds fewer than the App's replicas.
    /// On failure or cancel the replaced old containers start again and take
    /// their places back, one at a time, and the new ones go.
    async fn rolling(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        cancel: &CancellationToken,
        new_containers: &mut Vec<String>,
    ) -> Outcome {
        let (app, old, old_rows, (run_ref, digest)) = tokio::select! {
            r = self.setup(deploy, plan) => match r {
                Ok(v) => v,
                Err(Failure(e)) => return Outcome::Failed(e),
            },
            _ = cancel.cancelled() => return Outcome::Canceled,
        };
        let plan_layout = layout(&old_rows, plan.replicas, plan.only.as_deref());
        for row in &plan_layout.keep {
            if let Err(e) = self.store.put_replica(&ReplicaRow {
                deploy_id: deploy.id.clone(),
                ..row.clone()
            }) {
                return Outcome::Failed(e.to_string());
            }
        }
        // What the route holds, by replica.
        let mut set: BTreeMap<u32, ReplicaRow> =
            old_rows.iter().map(|r| (r.replica, r.clone())).collect();
        // Replicas moved so far: the old container (stopped, kept for a
        // roll-back) and its replacement.
        let mut moved: Vec<(Option<ReplicaRow>, ReplicaRow)> = Vec::new();
        let total = plan_layout.start.len();
        for (step, &index) in plan_layout.start.iter().enumerate() {
            let who = format!("replica {index}: ");
            let start = async {
                let name = container_name(&app.name, &deploy.id, index);
                let message = format!("{who}starting container {name}");
                if step == 0 {
                    self.store.advance(
                        &deploy.id,
                        DeployStatus::Starting,
                        &format!("rolling {total} replicas one at a time; {message}"),
                    )?;
                } else {
                    self.store.event(&deploy.id, &message)?;
                }
                let row = self
                    .start_replica(deploy, &app, &run_ref, index, new_containers)
                    .await?;
                if step == 0 {
                    self.store.advance(
                        &deploy.id,
                        DeployStatus::HealthChecking,
                        &health_message(&app),
                    )?;
                }
                let addr = self.check_replica(deploy, &app, &row, &who).await?;
                Ok::<_, Failure>(ReplicaRow {
                    addr: Some(addr),
                    ..row
                })
            };
            let started = if cancel.is_cancelled() {
                Ok(None)
            } else {
                tokio::select! {
                    r = start => r.map(Some),
                    _ = cancel.cancelled() => Ok(None),
                }
            };
            let fresh = match started {
                Ok(Some(row)) => row,
                Ok(None) => {
                    self.roll_back(deploy, &app, &old.id, &mut set, moved, "canceled")
                        .await;
                    return Outcome::Canceled;
                }
                Err(Failure(e)) => {
                    let why = format!("replica {index} failed");
                    self.roll_back(deploy, &app, &old.id, &mut set, moved, &why)
                        .await;
                    return Outcome::Failed(e);
                }
            };
            if step == 0 {
                let _ = self.store.advance(
                    &deploy.id,
                    DeployStatus::Swapping,
                    "moving traffic one replica at a time",
                );
            }
            let previous = set.insert(index, fresh.clone());
            if let Err(e) = self
                .proxy
                .set_route(route_for(&app, self.targets(set.values())))
                .await
            {
                match &previous {
                    Some(p) => set.insert(index, p.clone()),
                    None => set.remove(&index),
                };
                let error = format!("the proxy did not take the new route: {e:#}");
                self.roll_back(deploy, &app, &old.id, &mut set, moved, &error)
                    .await;
                return Outcome::Failed(error);
            }
            let _ = self.store.event(
                &deploy.id,
                &format!(
                    "{who}traffic moved to the new container {}",
                    short(&fresh.container_id)
                ),
            );
            if let Some(old_row) = &previous {
                self.drain(&app, old_row, &deploy.id, "old").await;
                let stopped = self
                    .runtime
                    .stop(&old_row.container_id, STOP_TIMEOUT_SECS)
                    .await;
                let _ = self.store.event(
                    &deploy.id,
                    &match stopped {
                        Ok(()) => format!(
                            "{who}stopped the old container {} (kept until the deploy ends)",
                            short(&old_row.container_id)
                        ),
                        Err(e) => format!(
                            "{who}could not stop the old container {}: {e:#}",
                            short(&old_row.container_id)
                        ),
                    },
                );
            }
            moved.push((previous, fresh));
        }
        // Replicas beyond the count, if it shrank: out of the route too.
        let extra: Vec<ReplicaRow> = plan_layout
            .retire
            .iter()
            .filter(|r| r.replica >= plan.replicas)
            .cloned()
            .collect();
        if !extra.is_empty() {
            for r in &extra {
                set.remove(&r.replica);
            }
            if let Err(e) = self
                .proxy
                .set_route(route_for(&app, self.targets(set.values())))
                .await
            {
                let error = format!("the proxy did not take the new route: {e:#}");
                self.roll_back(deploy, &app, &old.id, &mut set, moved, &error)
                    .await;
                return Outcome::Failed(error);
            }
        }
        new_containers.clear();
        let fresh: Vec<ReplicaRow> = moved.iter().map(|(_, f)| f.clone()).collect();
        if let Err(e) = self.store.record_swap(
            &deploy.id,
            &app.name,
            &followed_image(deploy, &app),
            &format!("traffic switched to {}", describe_containers(&fresh)),
        ) {
            tracing::error!("cannot record the swap of {}: {e:#}", deploy.id);
        }
        // From here on the new version serves: nothing below fails the deploy.
        for old_row in moved.iter().filter_map(|(o, _)| o.as_ref()) {
            let removed = self.runtime.remove(&old_row.container_id).await;
            let _ = self.store.event(&deploy.id, &match removed {
                Ok(()) => format!("removed the old container {}", short(&old_row.container_id)),
                Err(e) => format!("could not remove the old container {} ({e:#}); it will be removed at the next reconcile", short(&old_row.container_id)),
            });
        }
        self.retire(&app, &extra, &deploy.id).await;
        Outcome::Succeeded(format!(
            "deploy succeeded (rolling): {} serves {}{}",
            digest.as_deref().map(short_digest).unwrap_or(&deploy.image),
            app.name,
            on_replicas(plan.replicas)
        ))
    }

    /// Undoes the replicas a rolling deploy moved, newest first: the old
    /// container starts again, takes its place back in the route, and the
    /// new one drains and goes. An old container that cannot come back
    /// leaves the new one serving in its place (recorded as serving), so the
    /// App keeps its replicas.
    async fn roll_back(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        serving_id: &str,
        set: &mut BTreeMap<u32, ReplicaRow>,
        moved: Vec<(Option<ReplicaRow>, ReplicaRow)>,
        why: &str,
    ) {
        if moved.is_empty() {
            return;
        }
        let _ = self.store.event(
            &deploy.id,
            &format!(
                "{why}; rolling back: the {} replaced replica(s) return to the previous version",
                moved.len()
            ),
        );
        for (old, fresh) in moved.into_iter().rev() {
            let who = format!("replica {}: ", fresh.replica);
            let restored = match &old {
                Some(old) => match self.bring_back(deploy, app, old).await {
                    Ok(addr) => {
                        let _ = self.store.set_replica_addr(serving_id, old.replica, &addr);
                        Some(ReplicaRow {
                            addr: Some(addr),
                            ..old.clone()
                        })
                    }
                    Err(Failure(e)) => {
                        let _ = self.store.event(&deploy.id, &format!(
                            "{who}could not bring the old container {} back ({e}); the new container {} keeps serving in its place",
                            short(&old.container_id),
                            short(&fresh.container_id)
                        ));
                        let _ = self.store.put_replica(&ReplicaRow {
                            deploy_id: serving_id.to_string(),
                            ..fresh.clone()
                        });
                        continue;
                    }
                },
                None => None,
            };
            match &restored {
                Some(r) => set.insert(fresh.replica, r.clone()),
                None => set.remove(&fresh.replica),
            };
            if let Err(e) = self
                .proxy
                .set_route(route_for(app, self.targets(set.values())))
                .await
            {
                let _ = self.store.event(
                    &deploy.id,
                    &format!("{who}the proxy did not take the restored route: {e:#}"),
                );
            }
            if let Some(r) = &restored {
                let _ = self.store.event(
                    &deploy.id,
                    &format!(
                        "{who}the old container {} serves again",
                        short(&r.container_id)
                    ),
                );
            }
            self.drain(app, &fresh, &deploy.id, "new").await;
            let removed = self.runtime.remove(&fresh.container_id).await;
            let _ = self.store.event(
                &deploy.id,
                &match removed {
                    Ok(()) => format!(
                        "{who}removed the new container {}",
                        short(&fresh.container_id)
                    ),
                    Err(e) => format!(
                        "{who}could not remove the new container {}: {e:#}",
                        short(&fresh.container_id)
                    ),
                },
            );
        }
    }

    /// Removes whatever a deploy that did not swap started, including a
    /// container created just before a cancel; never a serving container.
    async fn tear_down(&self, deploy: &DeployRow, known: &[String]) {
        let mut ids: Vec<String> = known.to_vec();
        if let Ok(found) = self.runtime.list(Some(&deploy.app)).await {
            ids.extend(
                found
                    .into_iter()
                    .filter(|c| c.deploy == deploy.id)
                    .map(|c| c.id),
            );
        }
        let serving: HashSet<String> = self
            .store
            .get_app(&deploy.app)
            .ok()
            .flatten()
            .and_then(|app| self.serving_rows(&app).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.container_id)
            .collect();
        ids.retain(|id| !serving.contains(id));
        ids.sort();
        ids.dedup();
        for id in ids {
            // A rolling deploy's roll-back removed some already.
            if matches!(self.runtime.state(&id).await, Ok(None)) {
                continue;
            }
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

    /// Everything before a blue-green swap: pull, start the new containers
    /// beside the serving set, health-check them all. A scale or a replica
    /// replacement starts only some and keeps the others.
    async fn prepare(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        new_containers: &mut Vec<String>,
    ) -> Result<Ready, Failure> {
        let app = self
            .store
            .get_app(&deploy.app)?
            .ok_or_else(|| Failure(format!("the App `{}` was deleted", deploy.app)))?;
        let image = ImageRef::parse(&deploy.image)?;
        if plan.hard {
            return self.restart_in_place(deploy, &app).await;
        }
        let serving = self.serving_rows(&app)?;
        let plan_layout = layout(&serving, plan.replicas, plan.only.as_deref());
        // Containers that stay belong to this deploy's set from the start,
        // so its rows always describe the whole set it will serve with.
        for row in &plan_layout.keep {
            self.store.put_replica(&ReplicaRow {
                deploy_id: deploy.id.clone(),
                ..row.clone()
            })?;
        }
        let mut fresh = Vec::new();
        let digest = if plan_layout.start.is_empty() {
            if let Some(d) = &plan.digest {
                self.store.set_deploy_digest(&deploy.id, d)?;
            }
            plan.digest.clone()
        } else {
            let (run_ref, digest) = self.fetch(deploy, plan, &image).await?;
            let names: Vec<String> = plan_layout
                .start
                .iter()
                .map(|i| container_name(&app.name, &deploy.id, *i))
                .collect();
            self.store.advance(
                &deploy.id,
                DeployStatus::Starting,
                &format!(
                    "starting {}{}",
                    if names.len() == 1 {
                        "container "
                    } else {
                        "containers "
                    },
                    names.join(", ")
                ),
            )?;
            for &i in &plan_layout.start {
                fresh.push(
                    self.start_replica(deploy, &app, &run_ref, i, new_containers)
                        .await?,
                );
            }
            self.check_all(deploy, &app, &mut fresh).await?;
            digest
        };
        Ok(Ready {
            app,
            digest,
            keep: plan_layout.keep,
            fresh,
            retire: plan_layout.retire,
        })
    }

    /// Starts the container of one replica of a deploy and records it.
    async fn start_replica(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        run_ref: &str,
        replica: u32,
        new_containers: &mut Vec<String>,
    ) -> Result<ReplicaRow, Failure> {
        let name = container_name(&app.name, &deploy.id, replica);
        let spec = ContainerSpec {
            name: name.clone(),
            image: run_ref.to_string(),
            app: app.name.clone(),
            deploy: deploy.id.clone(),
            replica,
            env: self.container_env(app, &deploy.env)?,
            memory_bytes: app.memory_bytes,
            cpus: app.cpus,
            gpus: app.gpus,
            port: app.port,
        };
        let id = self.runtime.start(&spec).await?;
        new_containers.push(id.clone());
        let row = ReplicaRow {
            deploy_id: deploy.id.clone(),
            replica,
            container_id: id.clone(),
            container_name: name,
            addr: None,
        };
        self.store.put_replica(&row)?;
        let who = if deploy.replicas > 1 {
            format!(" (replica {replica})")
        } else {
            String::new()
        };
        self.store.event(
            &deploy.id,
            &format!("container {} started{who}", short(&id)),
        )?;
        Ok(row)
    }

    /// Health-checks new containers together; fails with the first failure.
    async fn check_all(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        rows: &mut [ReplicaRow],
    ) -> Result<(), Failure> {
        self.store.advance(
            &deploy.id,
            DeployStatus::HealthChecking,
            &health_message(app),
        )?;
        let many = rows.len() > 1;
        let checks = rows.iter().map(|row| {
            let who = if many {
                format!("replica {}: ", row.replica)
            } else {
                String::new()
            };
            async move { self.check_replica(deploy, app, row, &who).await }
        });
        let addrs = try_join_all(checks).await?;
        for (row, addr) in rows.iter_mut().zip(addrs) {
            row.addr = Some(addr);
        }
        Ok(())
    }

    /// Gets the image onto the host and says what exactly will run:
    /// `repo@digest` whenever the digest is known.
    async fn fetch(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        image: &ImageRef,
    ) -> Result<Fetched, Failure> {
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

    /// Waits for a new container's address (recorded on its row) and health.
    async fn check_replica(
        &self,
        deploy: &DeployRow,
        app: &AppRow,
        row: &ReplicaRow,
        who: &str,
    ) -> Result<String, Failure> {
        let addr = self.wait_for_address(&row.container_id, app.port).await?;
        self.store
            .set_replica_addr(&deploy.id, row.replica, &addr)?;
        let healthy = self
            .wait_healthy(deploy, &app.health, &row.container_id, &addr, who)
            .await?;
        self.store.event(&deploy.id, &format!("{who}{healthy}"))?;
        Ok(addr)
    }

    /// `restart --hard`: each serving container is stopped and started again
    /// in place, one after the other. With one replica requests fail while
    /// it is down; with several, each leaves the route (and drains) before
    /// it stops and comes back once healthy, so the others serve meanwhile.
    async fn restart_in_place(&self, deploy: &DeployRow, app: &AppRow) -> Result<Ready, Failure> {
        let serving = self.serving(app).map_err(|e| Failure(e.to_string()))?;
        let rows = self.store.replicas(&serving.id)?;
        if rows.is_empty() {
            return Err(Failure(
                "the serving deploy has no container to restart".into(),
            ));
        }
        self.store.advance(
            &deploy.id,
            DeployStatus::Starting,
            &format!(
                "hard restart: stopping and starting {} {} in place",
                if rows.len() == 1 {
                    "container"
                } else {
                    "containers"
                },
                list_short(&rows)
            ),
        )?;
        let many = rows.len() > 1;
        let mut set: BTreeMap<u32, ReplicaRow> =
            rows.iter().map(|r| (r.replica, r.clone())).collect();
        let mut done = Vec::new();
        for (step, row) in rows.iter().enumerate() {
            let who = if many {
                format!("replica {}: ", row.replica)
            } else {
                String::new()
            };
            if many {
                let others: Vec<&ReplicaRow> =
                    set.values().filter(|r| r.replica != row.replica).collect();
                self.proxy
                    .set_route(route_for(app, self.targets(others)))
                    .await
                    .map_err(|e| Failure(format!("the proxy did not take the new route: {e:#}")))?;
                self.drain(app, row, &deploy.id, "old").await;
            }
            self.runtime
                .stop(&row.container_id, STOP_TIMEOUT_SECS)
                .await?;
            self.runtime.start_existing(&row.container_id).await?;
            self.store.put_replica(&ReplicaRow {
                deploy_id: deploy.id.clone(),
                addr: None,
                ..row.clone()
            })?;
            if step == 0 {
                self.store.advance(
                    &deploy.id,
                    DeployStatus::HealthChecking,
                    &health_message(app),
                )?;
            }
            let addr = self
                .check_replica(
                    deploy,
                    app,
                    &ReplicaRow {
                        deploy_id: deploy.id.clone(),
                        ..row.clone()
                    },
                    &who,
                )
                .await?;
            let back = ReplicaRow {
                deploy_id: deploy.id.clone(),
                addr: Some(addr),
                ..row.clone()
            };
            set.insert(row.replica, back.clone());
            if many {
                self.proxy
                    .set_route(route_for(app, self.targets(set.values())))
                    .await
                    .map_err(|e| Failure(format!("the proxy did not take the new route: {e:#}")))?;
            }
            done.push(back);
        }
        Ok(Ready {
            app: app.clone(),
            digest: serving.digest,
            keep: Vec::new(),
            fresh: done,
            retire: Vec::new(),
        })
    }

    /// The swap and what follows it: the route gets the new set (the kept
    /// containers and the fresh ones) in one store, the database records it,
    /// and the retired containers drain and go.
    async fn commit(
        &self,
        deploy: &DeployRow,
        plan: &Plan,
        ready: Ready,
    ) -> Result<String, Failure> {
        let Ready {
            app,
            digest,
            keep,
            fresh,
            retire,
        } = ready;
        let set: Vec<&ReplicaRow> = keep.iter().chain(fresh.iter()).collect();
        let (swapping, swapped) = if fresh.is_empty() {
            (
                format!("taking {} out of the route", describe_replicas(&retire)),
                format!("{} left the route", describe_replicas(&retire)),
            )
        } else if !keep.is_empty() && !retire.is_empty() {
            (
                format!(
                    "swapping {} for a new container beside the others",
                    describe_replicas(&retire)
                ),
                format!(
                    "{} switched to {}",
                    describe_replicas(&fresh),
                    describe_containers(&fresh)
                ),
            )
        } else if !keep.is_empty() {
            (
                format!("adding {} to the route", describe_replicas(&fresh)),
                format!(
                    "{} serve{} beside the others",
                    describe_containers(&fresh),
                    if fresh.len() == 1 { "s" } else { "" }
                ),
            )
        } else if fresh.len() == 1 {
            (
                "switching traffic to the new container".to_string(),
                format!("traffic switched to {}", describe_containers(&fresh)),
            )
        } else {
            (
                format!("switching traffic to the {} new containers", fresh.len()),
                format!("traffic switched to {}", describe_containers(&fresh)),
            )
        };
        self.store
            .advance(&deploy.id, DeployStatus::Swapping, &swapping)?;
        self.proxy
            .set_route(route_for(&app, self.targets(set)))
            .await
            .map_err(|e| Failure(format!("the proxy did not take the new route: {e:#}")))?;
        self.store.record_swap(
            &deploy.id,
            &app.name,
            &followed_image(deploy, &app),
            &swapped,
        )?;
        // From here on the new set serves: nothing below fails the deploy.
        if !plan.hard {
            self.retire(&app, &retire, &deploy.id).await;
        }
        let digest = digest.as_deref().map(short_digest).unwrap_or(&deploy.image);
        Ok(if deploy.kind == DeployKind::Scale {
            format!(
                "scaled {} to {} replica(s) of {digest}",
                app.name, deploy.replicas
            )
        } else {
            format!(
                "deploy succeeded: {digest} serves {}{}",
                app.name,
                on_replicas(deploy.replicas)
            )
        })
    }

    /// Waits until the proxy reports a container out of the route drained
    /// (or cuts what is left at the drain timeout), recording how it went;
    /// `which` says whether it is an `old` one or a `new` one (a roll-back).
    async fn drain(&self, app: &AppRow, row: &ReplicaRow, deploy_id: &str, which: &str) {
        let Some(addr) = &row.addr else {
            return;
        };
        let id = short(&row.container_id);
        let timeout = Duration::from_secs(app.drain_timeout_secs);
        let _ = self.store.event(
            deploy_id,
            &format!(
                "draining the {which} container {id} (up to {} s)",
                app.drain_timeout_secs
            ),
        );
        let message = match self.proxy.wait_drained(&app.name, addr, timeout).await {
            Ok((true, _)) => format!("the {which} container {id} drained"),
            Ok((false, closed)) => format!("drain timeout reached: closed {closed} connection(s) still open on the {which} container {id}"),
            Err(e) => format!("could not wait for the {which} container {id} to drain: {e:#}"),
        };
        let _ = self.store.event(deploy_id, &message);
    }

    /// Drains containers that left the route (together), then stops and
    /// removes them.
    async fn retire(&self, app: &AppRow, old: &[ReplicaRow], deploy_id: &str) {
        join_all(old.iter().map(|row| self.drain(app, row, deploy_id, "old"))).await;
        let removals = old.iter().map(|row| async move {
            let id = &row.container_id;
            let removed = async {
                self.runtime.stop(id, STOP_TIMEOUT_SECS).await?;
                self.runtime.remove(id).await
            }
            .await;
            let message = match removed {
                Ok(()) => format!("stopped and removed the old container {}", short(id)),
                Err(e) => format!("could not remove the old container {} ({e:#}); it will be removed at the next reconcile", short(id)),
            };
            let _ = self.store.event(deploy_id, &message);
        });
        join_all(removals).await;
    }

    async fn wait_for_address(&self, id: &str, port: u16) -> Result<String, Failure> {
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
        who: &str,
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
                    .event(&deploy.id, &format!("{who}health check: {probe}"))?;
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

/// What `prepare` hands to `commit`: the new set, healthy.
struct Ready {
    app: AppRow,
    digest: Option<String>,
    /// Serving containers that stay in the set.
    keep: Vec<ReplicaRow>,
    /// New (or, for a hard restart, restarted) containers, with addresses.
    fresh: Vec<ReplicaRow>,
    /// Serving containers that leave once the new set serves.
    retire: Vec<ReplicaRow>,
}

/// What `fetch` says will run: the reference to start (`repo@digest` when
/// known) and the digest.
type Fetched = (String, Option<String>);

/// `molt-APP-DEPLOY` for the first replica, `molt-APP-DEPLOY-N` for the others.
fn container_name(app: &str, deploy: &str, replica: u32) -> String {
    if replica == 0 {
        format!("molt-{app}-{deploy}")
    } else {
        format!("molt-{app}-{deploy}-{replica}")
    }
}

/// What a deploy makes the App follow: a rollback, restart, config change or
/// scale keeps following the App's reference; other kinds make the deployed
/// reference the App's.
pub(crate) fn followed_image(deploy: &DeployRow, app: &AppRow) -> String {
    match deploy.kind {
        DeployKind::Rollback | DeployKind::Restart | DeployKind::Config | DeployKind::Scale => {
            app.image.clone()
        }
        _ => deploy.image.clone(),
    }
}

fn health_message(app: &AppRow) -> String {
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
fn list_short(rows: &[ReplicaRow]) -> String {
    rows.iter()
        .map(|r| short(&r.container_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container abc` or `containers abc, def`.
fn describe_containers(rows: &[ReplicaRow]) -> String {
    let noun = if rows.len() == 1 {
        "container"
    } else {
        "containers"
    };
    format!("{noun} {}", list_short(rows))
}

/// `replica 2` or `replicas 1, 2`.
fn describe_replicas(rows: &[ReplicaRow]) -> String {
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
fn on_replicas(n: u32) -> String {
    if n > 1 {
        format!(" on {n} replicas")
    } else {
        String::new()
    }
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
        upstream_timeout_secs: 60,
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
        upstream_timeout_ms: app.upstream_timeout_secs * 1000,
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
        replicas: 1,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(replica: u32) -> ReplicaRow {
        ReplicaRow {
            deploy_id: "old".into(),
            replica,
            container_id: format!("c{replica}"),
            container_name: format!("molt-web-old-{replica}"),
            addr: Some(format!("10.0.0.{replica}:80")),
        }
    }

    #[test]
    fn a_deploy_replaces_every_replica() {
        let serving = vec![row(0), row(1), row(2)];
        let l = layout(&serving, 3, None);
        assert!(l.keep.is_empty());
        assert_eq!(l.start, vec![0, 1, 2]);
        assert_eq!(l.retire, serving);
        // The first deploy has nothing to retire.
        let l = layout(&[], 2, None);
        assert_eq!((l.start, l.retire.len()), (vec![0, 1], 0));
    }

    #[test]
    fn a_scale_keeps_the_serving_replicas() {
        let serving = vec![row(0), row(1)];
        let up = layout(&serving, 4, Some(&[]));
        assert_eq!(up.keep, serving);
        assert_eq!(up.start, vec![2, 3]);
        assert!(up.retire.is_empty());
        let down = layout(&serving, 1, Some(&[]));
        assert_eq!(down.keep, vec![row(0)]);
        assert!(down.start.is_empty());
        assert_eq!(down.retire, vec![row(1)]);
    }

    #[test]
    fn one_replica_is_replaced_beside_the_others() {
        let serving = vec![row(0), row(1), row(2)];
        let l = layout(&serving, 3, Some(&[1]));
        assert_eq!(l.keep, vec![row(0), row(2)]);
        assert_eq!(l.start, vec![1]);
        assert_eq!(l.retire, vec![row(1)]);
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(container_name("web", "d1", 0), "molt-web-d1");
        assert_eq!(container_name("web", "d1", 2), "molt-web-d1-2");
        assert_eq!(describe_replicas(&[row(1), row(2)]), "replicas 1, 2");
        assert_eq!(describe_containers(&[row(1)]), "container c1");
        assert_eq!(on_replicas(1), "");
        assert_eq!(on_replicas(3), " on 3 replicas");
    }
}
