//! In-memory fakes of the ports, for unit tests of the deploy executor and
//! the converger: containers that start, crash or stay unhealthy as a test
//! says, a proxy that can refuse a route, registries that can say "not
//! found". Every call can be held at a chosen step (`FakeWorld::hold_at`),
//! so a test can cancel a deploy at each of its await points in turn.

use crate::health::{EngineHealth, EngineHealthStatus, Probe};
use crate::ports::{Containers, HealthProbe, Ports, Registries, Routes};
use crate::registry::{Credential, RegistryError};
use crate::runtime::{
    ContainerEvent, ContainerSpec, ContainerState, LabeledContainer, UpstreamMode,
};
use anyhow::{anyhow, Result};
use futures_util::stream::BoxStream;
use molt_core::ImageRef;
use molt_proxy::admin::Route;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// One fake container.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    pub app: String,
    pub deploy: String,
    pub replica: u32,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub ip: String,
    /// The (swarm) node it ran on, when that node is down: it is lost.
    pub lost_node: Option<String>,
}

/// What the fakes do and what happened to them.
#[derive(Default)]
pub struct World {
    pub containers: BTreeMap<String, FakeContainer>,
    next: u32,
    /// Images whose pull fails; the registry says they do not exist.
    pub missing_images: HashSet<String>,
    /// (image, replica) whose container exits with this code at start.
    pub crashing: HashMap<(String, u32), i64>,
    /// What a crashed container printed; `boom` when not set.
    pub crash_output: Option<String>,
    /// Images whose containers answer their health check with 500.
    pub unhealthy_images: HashSet<String>,
    /// Images that declare a `HEALTHCHECK`, with the engine's verdict on
    /// their containers.
    pub image_checks: HashMap<String, EngineHealthStatus>,
    /// The port every container listens on, whatever its App's port (like
    /// an image that ignores `PORT`); `None`: the App's port.
    pub listen_port: Option<u16>,
    /// The proxy reaches containers at published ports (a swarm), not on
    /// the bridge network.
    pub published: bool,
    /// Routes as the proxy holds them.
    pub routes: HashMap<String, Route>,
    pub paused: HashSet<String>,
    /// `set_route` calls refused from this many calls on (counted from 1).
    pub refuse_routes_from: Option<usize>,
    pub route_calls: usize,
    /// Every route the proxy took, in order.
    pub route_history: Vec<Route>,
    /// Every port call, in order.
    pub calls: Vec<String>,
    pub(crate) hold: Option<Hold>,
}

pub(crate) struct Hold {
    at: usize,
    reached: Arc<Notify>,
    release: Arc<Notify>,
}

/// The fakes, sharing one `World`.
#[derive(Clone, Default)]
pub struct FakeWorld(pub Arc<Mutex<World>>);

impl FakeWorld {
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ports(&self) -> Ports {
        Ports {
            containers: Arc::new(self.clone()),
            routes: Arc::new(self.clone()),
            health: Arc::new(self.clone()),
            registries: Arc::new(self.clone()),
        }
    }

    /// Holds the `n`-th port call (counted from 1 over all ports) until
    /// `release` is notified; `reached` is notified when it is held.
    pub fn hold_at(&self, n: usize) -> (Arc<Notify>, Arc<Notify>) {
        let reached = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        self.world().hold = Some(Hold {
            at: n,
            reached: reached.clone(),
            release: release.clone(),
        });
        (reached, release)
    }

    /// Records a call and waits if it is the held one.
    async fn step(&self, call: String) {
        let held = {
            let mut w = self.world();
            w.calls.push(call);
            let n = w.calls.len();
            match &w.hold {
                Some(h) if h.at == n => Some((h.reached.clone(), h.release.clone())),
                _ => None,
            }
        };
        if let Some((reached, release)) = held {
            let released = release.notified();
            reached.notify_one();
            released.await;
        }
    }

    pub fn calls(&self) -> usize {
        self.world().calls.len()
    }

    /// The containers of an App, running or not.
    pub fn of_app(&self, app: &str) -> Vec<FakeContainer> {
        self.world()
            .containers
            .values()
            .filter(|c| c.app == app)
            .cloned()
            .collect()
    }

    fn state_of(w: &World, c: &FakeContainer) -> ContainerState {
        let health = w.image_checks.get(&c.image).map(|status| EngineHealth {
            status: *status,
            command: "`/app check` every 1 s".into(),
            last_output: (*status == EngineHealthStatus::Unhealthy)
                .then(|| "check failed: not ready".into()),
        });
        ContainerState {
            running: c.running && c.lost_node.is_none(),
            restarting: false,
            exit_code: c.exit_code,
            oom_killed: false,
            error: None,
            ip: c.running.then(|| c.ip.clone()),
            published: HashMap::new(),
            restart_count: 0,
            started_at: None,
            health,
            lost_node: c.lost_node.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Containers for FakeWorld {
    fn network(&self) -> &str {
        "molt-fake"
    }
    fn upstream(&self) -> UpstreamMode {
        if self.world().published {
            UpstreamMode::Published
        } else {
            UpstreamMode::Bridge
        }
    }
    fn upstream_addr(&self, state: &ContainerState, port: u16) -> Option<String> {
        state.ip.as_ref().map(|ip| format!("{ip}:{port}"))
    }
    async fn pull(&self, image: &ImageRef, _: Option<(String, String)>) -> Result<()> {
        self.step(format!("pull {image}")).await;
        let name = image.to_string();
        let w = self.world();
        if w.missing_images
            .iter()
            .any(|m| name.starts_with(m.as_str()))
        {
            return Err(anyhow!("manifest unknown"));
        }
        Ok(())
    }
    async fn image_digest(&self, _: &ImageRef) -> Result<Option<String>> {
        Ok(Some(format!("sha256:{}", "a".repeat(64))))
    }
    async fn has_image(&self, _: &str) -> bool {
        true
    }
    async fn start(&self, spec: &ContainerSpec) -> Result<String> {
        self.step(format!("start {}", spec.name)).await;
        let mut w = self.world();
        w.next += 1;
        let n = w.next;
        let image = spec.image.split('@').next().unwrap_or_default().to_string();
        let crash = w.crashing.get(&(image.clone(), spec.replica)).copied();
        let c = FakeContainer {
            id: format!("c{n:04}{}", "0".repeat(58)),
            name: spec.name.clone(),
            image,
            app: spec.app.clone(),
            deploy: spec.deploy.clone(),
            replica: spec.replica,
            running: crash.is_none(),
            exit_code: crash,
            ip: format!("10.0.0.{n}"),
            lost_node: None,
        };
        w.containers.insert(c.id.clone(), c.clone());
        Ok(c.id)
    }
    async fn state(&self, id: &str) -> Result<Option<ContainerState>> {
        let w = self.world();
        Ok(w.containers.get(id).map(|c| Self::state_of(&w, c)))
    }
    async fn listening_ports(&self, _: &str) -> Vec<u16> {
        self.world().listen_port.into_iter().collect()
    }
    async fn memory_limit(&self, _: &str) -> Option<u64> {
        None
    }
    async fn logs_tail(&self, id: &str, _: usize) -> String {
        let w = self.world();
        match w.containers.get(id) {
            Some(c) if c.exit_code.is_some() => {
                w.crash_output.clone().unwrap_or_else(|| "boom".into())
            }
            _ => String::new(),
        }
    }
    async fn stop(&self, id: &str, _: u64) -> Result<()> {
        self.step(format!("stop {id}")).await;
        if let Some(c) = self.world().containers.get_mut(id) {
            c.running = false;
        }
        Ok(())
    }
    async fn start_existing(&self, id: &str) -> Result<()> {
        self.step(format!("start_existing {id}")).await;
        let mut w = self.world();
        let c = w
            .containers
            .get_mut(id)
            .ok_or_else(|| anyhow!("no such container: {id}"))?;
        c.running = true;
        c.exit_code = None;
        Ok(())
    }
    async fn remove(&self, id: &str) -> Result<()> {
        self.step(format!("remove {id}")).await;
        self.world().containers.remove(id);
        Ok(())
    }
    async fn list(&self, app: Option<&str>) -> Result<Vec<LabeledContainer>> {
        Ok(self
            .world()
            .containers
            .values()
            .filter(|c| app.is_none_or(|a| a == c.app))
            .map(|c| LabeledContainer {
                id: c.id.clone(),
                name: c.name.clone(),
                app: c.app.clone(),
                deploy: c.deploy.clone(),
                replica: Some(c.replica),
                running: c.running,
            })
            .collect())
    }
    fn log_lines(
        &self,
        _: &str,
        _: bool,
        _: Option<u64>,
        _: Option<i64>,
    ) -> BoxStream<'static, String> {
        Box::pin(futures_util::stream::empty())
    }
    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>> {
        Box::pin(futures_util::stream::pending())
    }
}

#[async_trait::async_trait]
impl Routes for FakeWorld {
    async fn set_route(&self, route: Route) -> Result<()> {
        self.step(format!("set_route {}", route.app)).await;
        let mut w = self.world();
        w.route_calls += 1;
        if w.refuse_routes_from.is_some_and(|n| w.route_calls >= n) {
            return Err(anyhow!("the proxy refused: injected"));
        }
        w.route_history.push(route.clone());
        w.routes.insert(route.app.clone(), route);
        Ok(())
    }
    async fn remove_route(&self, app: &str) -> Result<()> {
        self.world().routes.remove(app);
        Ok(())
    }
    async fn pause(&self, app: &str, _: Duration, _: usize) -> Result<()> {
        self.step(format!("pause {app}")).await;
        self.world().paused.insert(app.to_string());
        Ok(())
    }
    async fn resume(&self, app: &str) -> Result<()> {
        self.step(format!("resume {app}")).await;
        self.world().paused.remove(app);
        Ok(())
    }
    async fn routes(&self) -> Result<Vec<Route>> {
        Ok(self.world().routes.values().cloned().collect())
    }
    async fn wait_drained(&self, app: &str, _: &str, _: Duration) -> Result<(bool, u64)> {
        self.step(format!("wait_drained {app}")).await;
        Ok((true, 0))
    }
}

#[async_trait::async_trait]
impl HealthProbe for FakeWorld {
    async fn check(&self, addr: &str, _: Option<&str>, _: Duration) -> Probe {
        self.step(format!("check {addr}")).await;
        let w = self.world();
        let (ip, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
        let listening = w.listen_port.is_none_or(|p| p.to_string() == port);
        match w.containers.values().find(|c| c.ip == ip && c.running) {
            Some(_) if !listening => Probe::Refused(format!("connect to {addr} refused")),
            None => Probe::Refused(format!("connect to {addr} refused")),
            Some(c) if w.unhealthy_images.contains(&c.image) => {
                Probe::Answered("GET /healthz answered 500".into())
            }
            Some(_) => Probe::Healthy("GET /healthz answered 200".into()),
        }
    }
}

#[async_trait::async_trait]
impl Registries for FakeWorld {
    async fn preflight(
        &self,
        image: &ImageRef,
        _: Option<&Credential>,
    ) -> Result<String, RegistryError> {
        let name = image.to_string();
        if self
            .world()
            .missing_images
            .iter()
            .any(|m| name.starts_with(m.as_str()))
        {
            return Err(RegistryError::NotFound {
                reference: name,
                reason: "manifest unknown".into(),
            });
        }
        Ok(format!("sha256:{}", "a".repeat(64)))
    }
}
