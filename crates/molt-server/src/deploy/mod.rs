//! The deployer: one operation per App at a time, each deploy a run of
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
//!
//! Where things are: `intake` turns requests into recorded deploys under a
//! claim (`claims`); `run` drives one to its end through its strategy
//! (`bluegreen`, `rolling`, `recreate`, `in_place`), which share `steps` and
//! `readiness`; `cutover` is the one place where traffic moves; `teardown`
//! removes what a stopped deploy started; `update` changes an App's
//! settings through a `config` deploy, with the rules of `settings`. The outside world is reached only
//! through the traits of `crate::ports`.

mod bluegreen;
mod claims;
mod cutover;
mod external;
mod in_place;
mod intake;
mod narration;
mod plan;
mod readiness;
mod recreate;
mod rolling;
mod rotation;
mod run;
mod secrets;
mod settings;
mod starts;
mod steps;
mod teardown;
#[cfg(test)]
mod tests;
mod update;

pub(crate) use cutover::followed_image;
pub use cutover::route_for;
pub(crate) use narration::indent;
pub use narration::short;
pub use settings::{blamed_setting, Blamed};
pub use update::{ChangeEffect, SettingsPreview};

use crate::capacity::{self, Capacity, Need, Strategy};
use crate::health::{EngineHealth, EngineHealthStatus, Probe};
use crate::ports::{Containers, HealthProbe, Ports, Registries, Routes};
use crate::registry::{Credential, RegistryError};
use crate::runtime::ContainerSpec;
use crate::seal::Sealer;
use crate::store::{now, AppRow, DeployRow, EnvEntry, ReplicaRole, ReplicaRow, Store};
use bluegreen::Ready;
use cutover::{CutoverError, Unrecorded};
use futures_util::future::{join_all, try_join_all};
use molt_core::api::{CreateAppRequest, UpdateAppRequest};
use molt_core::health::HealthCheck;
use molt_core::{AppName, AppStatus, DeployKind, DeployStatus, Failure, FailureKind, ImageRef};
use molt_proxy::admin::{Route, Target};
use narration::*;
use plan::*;
use run::Outcome;
use secrets::env_purpose;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a stopped container gets between SIGTERM and SIGKILL.
const STOP_TIMEOUT_SECS: u64 = 10;

/// Why the deployer refused or failed a request; the API maps each kind to an
/// HTTP status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
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

impl DeployError {
    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
}

/// A step of a deploy failed: the typed failure it ends with. Any other
/// error met on the way (the database, a Docker engine call) is Molt's own.
struct StepError(Failure);

impl<E: std::fmt::Display> From<E> for StepError {
    fn from(e: E) -> Self {
        StepError(Failure::internal(e.to_string()))
    }
}

impl StepError {
    fn internal(message: impl Into<String>) -> Self {
        StepError(Failure::internal(message))
    }

    fn of(kind: FailureKind, message: impl Into<String>) -> Self {
        StepError(Failure::new(kind, message))
    }
}

/// A deploy in progress, with the means to cancel it.
struct Active {
    deploy_id: String,
    cancel: CancellationToken,
}

/// The control plane's deploy executor. It reaches containers, routes and
/// health only through `ports`, so tests give it fakes.
pub struct Deployer {
    pub store: Arc<Store>,
    /// The Docker engine (or a fake).
    pub runtime: Arc<dyn Containers>,
    /// The proxy (or a fake).
    pub proxy: Arc<dyn Routes>,
    pub sealer: Arc<Sealer>,
    prober: Arc<dyn HealthProbe>,
    registries: Arc<dyn Registries>,
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
    out_of_rotation: Mutex<HashSet<String>>,
    /// Cutovers the proxy took and the database did not record yet, by App
    /// (see `cutover`).
    unrecorded: Mutex<HashMap<String, cutover::Unrecorded>>,
    /// Domains an App's deploy in progress adds, by App, until the App's
    /// row has them (see `claims`).
    pending_domains: Mutex<HashMap<String, Vec<String>>>,
    /// Containers the converger started that have not passed a health check
    /// yet, and whether a waiter runs for each (see `converge`).
    warming: Mutex<std::collections::BTreeMap<String, bool>>,
    /// Molt's own registry, when the server runs one (`--registry`): its
    /// images are pulled with credentials it issues.
    hosted_registry: std::sync::OnceLock<Arc<crate::hosted_registry::HostedRegistry>>,
    /// The host name the dashboard and API are served at through the proxy
    /// (`--console-domain`); no App may claim it.
    console_domain: std::sync::OnceLock<String>,
    /// Container starts in flight, which a canceled deploy's tear-down
    /// waits for (see `starts`).
    starts: starts::Starts,
}

impl Deployer {
    pub fn new(store: Arc<Store>, ports: Ports, sealer: Arc<Sealer>, capacity: Capacity) -> Self {
        Self {
            store,
            runtime: ports.containers,
            proxy: ports.routes,
            prober: ports.health,
            registries: ports.registries,
            sealer,
            capacity,
            metrics: Default::default(),
            active: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
            interruptions: Mutex::new(HashMap::new()),
            out_of_rotation: Mutex::new(HashSet::new()),
            unrecorded: Mutex::new(HashMap::new()),
            pending_domains: Mutex::new(HashMap::new()),
            warming: Mutex::new(Default::default()),
            hosted_registry: Default::default(),
            console_domain: Default::default(),
            starts: Default::default(),
        }
    }

    /// Gives the deployer the console's domain (once, at start-up).
    pub fn set_console_domain(&self, domain: String) {
        let _ = self.console_domain.set(domain);
    }

    /// The console's domain, when the server has one.
    pub fn console_domain(&self) -> Option<&str> {
        self.console_domain.get().map(String::as_str)
    }

    /// Gives the deployer Molt's own registry (once, at start-up).
    pub fn set_hosted_registry(&self, registry: Arc<crate::hosted_registry::HostedRegistry>) {
        let _ = self.hosted_registry.set(registry);
    }

    /// Molt's own registry, when the server runs one.
    pub fn hosted_registry(&self) -> Option<&Arc<crate::hosted_registry::HostedRegistry>> {
        self.hosted_registry.get()
    }

    /// The converger's containers waiting for their first passed check.
    pub(crate) fn warming(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, bool>> {
        self.warming.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn prober(&self) -> &dyn HealthProbe {
        self.prober.as_ref()
    }

    fn find_app(&self, name: &str) -> Result<AppRow, DeployError> {
        self.store.get_app(name)?.ok_or_else(|| {
            DeployError::NotFound(format!("no App named `{name}`: see `molt apps list`"))
        })
    }

    /// The deploy that serves an App now.
    fn serving(&self, app: &AppRow) -> Result<DeployRow, DeployError> {
        let current = match &app.current_deploy {
            Some(id) => self.store.get_deploy(id)?,
            None => None,
        };
        current.ok_or_else(|| DeployError::Conflict {
            message: format!("the App `{}` has no serving version yet: deploy an image first with `molt deploy {} IMAGE`", app.name, app.name),
            deploy_id: None,
        })
    }

    /// Whether some deploy of `app` serves (a first deploy has nothing
    /// before it to keep serving).
    pub(crate) fn serves(&self, app: &str) -> bool {
        matches!(self.store.get_app(app), Ok(Some(a)) if a.current_deploy.is_some())
    }

    /// The containers of the deploy that serves an App now (none before its
    /// first deploy succeeded), by replica.
    pub fn serving_rows(&self, app: &AppRow) -> anyhow::Result<Vec<ReplicaRow>> {
        match &app.current_deploy {
            Some(id) => self.store.replicas(id),
            None => Ok(Vec::new()),
        }
    }
}
