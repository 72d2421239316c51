//! App replicas as Docker Swarm services (`molt server --orchestrator
//! swarm`). Each replica of each deploy is one service of one task, so the
//! old and the new version coexist during a deploy exactly as containers do
//! on one host, and the deployer's swap, drain, rolling and converge code
//! stay as they are: the id Molt records is the service's.
//!
//! Swarm places the task; Molt's proxy reaches it itself, at a port the
//! task publishes in host mode on its node, never through the routing mesh
//! (whose virtual IPs keep stopping tasks in rotation, and which needs IPVS).
//! Services restart nothing (restart condition `none`): a task that ends is
//! seen by the converger, which starts the service again, as on one host.

use super::*;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, GenericResourcesInner,
    GenericResourcesInnerDiscreteResourceSpec, Limit, LocalNodeState, Mount, MountTmpfsOptions,
    MountType, NetworkAttachmentConfig, NodeState, ResourceObject, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecPrivileges, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListServicesOptions, ListTasksOptions, UpdateServiceOptions};
use molt_core::api::SwarmTask;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod spec;
use spec::service_spec;

/// The generic resource a node advertises for its GPUs
/// (`dockerd --node-generic-resource NVIDIA-GPU=…`), reserved per GPU.
pub const GPU_RESOURCE: &str = "NVIDIA-GPU";
/// How long a task may stay unplaceable ("no suitable node") before its
/// deploy fails: long enough for a node that is just joining, short enough
/// that a constraint no node meets is told at once.
const UNPLACEABLE_GRACE: Duration = Duration::from_secs(5);
/// How many failed tasks of an App's latest failed deploy are kept.
const KEPT_TASKS: usize = 20;
/// What Swarm's constraint enforcer says of a task it rejected.
const ENFORCER_REJECTED: &str = "assigned node no longer meets constraints";
/// How often a task the enforcer rejected is asked for again.
const ENFORCER_RETRIES: u32 = 3;
/// The event action that says a swarm node went down.
pub const NODE_DOWN: &str = "node_down";
/// How long a stopping task gets before Swarm kills it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `molt server --orchestrator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orchestrator {
    /// Containers on this host (the default).
    Single,
    /// Services on the swarm this engine manages.
    Swarm,
    /// Swarm when the engine is an active swarm manager, else single.
    Auto,
}

/// Why a replica could not be placed: no node meets its constraints or has
/// the resources it reserves.
#[derive(Debug)]
pub struct NoSuitableNode(pub String);

impl std::fmt::Display for NoSuitableNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoSuitableNode {}

/// The swarm runtime: services for replicas; images, builds and `molt run`
/// one-off containers stay on the manager's own engine (`host`).
pub struct Swarm {
    host: Runtime,
    /// This engine's node id, whose tasks the proxy reaches on loopback.
    node_id: String,
    /// The credential each registry was last pulled with, sent with the
    /// services that run its images so every node can pull them.
    auth: Mutex<HashMap<String, (String, String)>>,
    /// Per App, the tasks of its latest deploy whose replicas failed, kept
    /// when their services are removed so `molt debug` can still tell what
    /// Swarm said (in memory: a restarted server forgets them).
    ended: Mutex<HashMap<String, (String, Vec<SwarmTask>)>>,
}

impl Swarm {
    /// The swarm runtime over `host`, when its engine is an active swarm
    /// manager; otherwise why not, and what to do.
    pub async fn over(host: Runtime) -> Result<Self> {
        let node_id = Self::check_manager(&host).await?;
        Ok(Self {
            host,
            node_id,
            auth: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
        })
    }

    /// This engine's node id when it is an active swarm manager; otherwise
    /// why it cannot run Apps on a swarm, and what to do.
    pub async fn check_manager(host: &Runtime) -> Result<String> {
        let info = host.docker.info().await.map_err(|e| {
            anyhow!(
                "cannot ask the engine about its swarm: {}",
                engine_message(&e)
            )
        })?;
        let swarm = info.swarm.unwrap_or_default();
        let active = swarm.local_node_state == Some(LocalNodeState::ACTIVE);
        if !active || swarm.control_available != Some(true) {
            anyhow::bail!(
                "--orchestrator swarm needs an engine that is a swarm manager, and this one is not (its swarm state: {}); run `docker swarm init` (or join it to a swarm as a manager), or use --orchestrator docker",
                swarm
                    .local_node_state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into())
            );
        }
        Ok(swarm.node_id.unwrap_or_default())
    }

    /// Whether the engine of `host` is an active swarm manager (for
    /// `--orchestrator auto`).
    pub async fn is_manager(host: &Runtime) -> bool {
        let Ok(info) = host.docker.info().await else {
            return false;
        };
        let swarm = info.swarm.unwrap_or_default();
        swarm.local_node_state == Some(LocalNodeState::ACTIVE)
            && swarm.control_available == Some(true)
    }

    pub fn host(&self) -> &Runtime {
        &self.host
    }

    /// The overlay network of one App on the swarm: its tasks join it (and
    /// those of the Apps it links to), reachable there by the App's name.
    fn app_network(&self, app: &str) -> String {
        format!("{}-swarm-{app}-{}", self.host.network, self.host.instance)
    }

    /// Creates an App's attachable overlay network unless it exists.
    async fn ensure_app_network(&self, app: &str) -> Result<String> {
        let name = self.app_network(app);
        if !self
            .host
            .networks_named(&name)
            .await
            .unwrap_or_default()
            .is_empty()
        {
            return Ok(name);
        }
        let created = self
            .host
            .docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                driver: Some("overlay".into()),
                attachable: Some(true),
                labels: Some(HashMap::from([
                    ("molt.network".into(), "true".into()),
                    (LABEL_INSTANCE.into(), self.host.instance.clone()),
                    (LABEL_APP.into(), app.to_string()),
                ])),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => Ok(name),
            // Created at the same moment by another deploy of the App.
            Err(_) if !self.host.networks_named(&name).await.unwrap_or_default().is_empty() => {
                Ok(name)
            }
            Err(e) => Err(anyhow!(
                "cannot create the overlay network `{name}` of the App `{app}`: {}; check `docker network ls` and that this engine is a swarm manager",
                engine_message(&e)
            )),
        }
    }

    /// The overlay networks a replica joins: its App's, where it answers to
    /// the App's name, and those of the Apps it links to.
    async fn app_networks(&self, spec: &ContainerSpec) -> Result<Vec<NetworkAttachmentConfig>> {
        let mut networks = vec![NetworkAttachmentConfig {
            target: Some(self.ensure_app_network(&spec.app).await?),
            aliases: Some(vec![spec.app.clone()]),
            ..Default::default()
        }];
        for link in &spec.links {
            networks.push(NetworkAttachmentConfig {
                target: Some(self.ensure_app_network(link).await?),
                ..Default::default()
            });
        }
        Ok(networks)
    }

    /// The credential for the registry of `image`, as the engine takes it.
    fn credentials_for(&self, image: &str) -> Option<DockerCredentials> {
        let registry = ImageRef::parse(image).ok()?.registry;
        let auth = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        let (username, password) = auth.get(&registry)?.clone();
        Some(DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(registry),
            ..Default::default()
        })
    }

    /// Creates the service of one replica and waits until its task runs
    /// (or ended: the deployer reads why); returns the service's id.
    pub async fn start(&self, spec: &ContainerSpec) -> Result<String> {
        let networks = if spec.gpus > 0 {
            // A task that joins an overlay network makes Swarm update its
            // node (a network attachment), and Docker 20.10's constraint
            // enforcer then rejects every task on that node holding a
            // generic resource, so a GPU replica would never run. It gets
            // no overlay network: the proxy reaches it at its published
            // port all the same.
            tracing::info!(app = %spec.app, "a replica with GPUs runs without the App's overlay network (`--link` does not reach it on a swarm)");
            Vec::new()
        } else {
            self.app_networks(spec).await?
        };
        let created = self
            .host
            .docker
            .create_service(
                service_spec(
                    &self.host.instance,
                    self.host.default_memory,
                    spec,
                    networks,
                ),
                self.credentials_for(&spec.image),
            )
            .await
            .map_err(|e| {
                anyhow!(
                    "the swarm refused to create the service: {}",
                    engine_message(&e)
                )
            })?;
        let id = created
            .id
            .ok_or_else(|| anyhow!("the swarm created the service but gave no id"))?;
        if let Err(e) = self.wait_placed(&id).await {
            let _ = self.remove(&id).await;
            return Err(e);
        }
        Ok(id)
    }

    /// [`wait_started`](Self::wait_started), asking for a new task when
    /// Swarm's constraint enforcer rejected one that its node meets: Docker
    /// 20.10's enforcer rejects every task holding a generic resource (a
    /// GPU) on a node whenever that node is updated (a label, a status).
    async fn wait_placed(&self, id: &str) -> Result<()> {
        let mut tries = ENFORCER_RETRIES;
        loop {
            match self.wait_started(id).await {
                Err(e) if tries > 0 && format!("{e:#}").contains(ENFORCER_REJECTED) => {
                    tries -= 1;
                    tracing::info!(service = %id, "Swarm's constraint enforcer rejected the task; asking for a new one");
                    self.scale(id, 1, true).await?;
                }
                other => return other,
            }
        }
    }

    /// Waits until the newest task of a service runs or ended with a
    /// container (whose exit the deployer reports). A task no node can take,
    /// or one a node rejected, fails here with the swarm's reason.
    async fn wait_started(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + self.host.pull_stall;
        let mut unplaceable_since: Option<Instant> = None;
        loop {
            let task = self.newest_task(id).await?;
            let status = task
                .as_ref()
                .and_then(|t| t.status.clone())
                .unwrap_or_default();
            let err = status.err.clone().filter(|e| !e.is_empty());
            let has_container = status
                .container_status
                .as_ref()
                .and_then(|c| c.container_id.as_ref())
                .is_some_and(|c| !c.is_empty());
            match status.state {
                Some(TaskState::RUNNING) => return Ok(()),
                Some(TaskState::FAILED | TaskState::COMPLETE | TaskState::SHUTDOWN)
                    if has_container =>
                {
                    return Ok(())
                }
                Some(
                    TaskState::FAILED
                    | TaskState::REJECTED
                    | TaskState::COMPLETE
                    | TaskState::SHUTDOWN
                    | TaskState::ORPHANED
                    | TaskState::REMOVE,
                ) => {
                    return Err(anyhow!(
                        "the swarm could not start the replica's task: {}; see `docker service ps --no-trunc {id}`",
                        err.or(status.message).unwrap_or_else(|| "no reason given".into())
                    ))
                }
                _ => {}
            }
            if let Some(reason) = err.filter(|e| e.contains("no suitable node")) {
                let since = *unplaceable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNPLACEABLE_GRACE {
                    return Err(anyhow::Error::new(NoSuitableNode(format!(
                        "the swarm found no node for the replica: {reason}; check the App's --constraint (`molt apps show`) against `docker node ls` and the nodes' labels, and its --memory/--cpus/--gpus against what the nodes have free"
                    ))));
                }
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "the replica's task did not start within {} s (it is {}: {}); see `docker service ps --no-trunc {id}`",
                    self.host.pull_stall.as_secs(),
                    status.state.map(|s| s.to_string()).unwrap_or_else(|| "not created".into()),
                    status.message.unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tasks of a service, newest first.
    async fn tasks(&self, id: &str) -> Result<Vec<Task>> {
        let options = ListTasksOptions {
            filters: Some(HashMap::from([(
                "service".to_string(),
                vec![id.to_string()],
            )])),
        };
        let mut tasks = self
            .host
            .docker
            .list_tasks(Some(options))
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot list the tasks of service {id}: {}",
                    engine_message(&e)
                )
            })?;
        // The filter matches prefixes and names too.
        tasks.retain(|t| t.service_id.as_deref() == Some(id));
        tasks.sort_by_key(|t| std::cmp::Reverse(t.version.as_ref().and_then(|v| v.index)));
        Ok(tasks)
    }

    /// The task that stands for the service now: the one meant to run, else
    /// the newest.
    async fn newest_task(&self, id: &str) -> Result<Option<Task>> {
        let tasks = self.tasks(id).await?;
        let wanted = tasks
            .iter()
            .position(|t| t.desired_state == Some(TaskState::RUNNING))
            .unwrap_or(0);
        Ok(tasks.into_iter().nth(wanted))
    }

    /// Whether a service exists.
    async fn exists(&self, id: &str) -> Result<bool> {
        match self.host.docker.inspect_service(id, None).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(anyhow!(
                "cannot inspect service {id}: {}",
                engine_message(&e)
            )),
        }
    }

    /// The container of a service's current task, when it runs on this node
    /// (where the engine can inspect it).
    pub async fn local_container(&self, id: &str) -> Option<String> {
        let task = self.newest_task(id).await.ok()??;
        if task.node_id.as_deref() != Some(self.node_id.as_str()) {
            return None;
        }
        task.status?
            .container_status?
            .container_id
            .filter(|c| !c.is_empty())
    }

    /// What the manager knows of a node: its name, where the proxy reaches
    /// its published ports, and whether it is down. `None` when the node is
    /// gone from the swarm (removed with `docker node rm`).
    async fn node(&self, id: &str) -> Option<NodeView> {
        let node = self.host.docker.inspect_node(id).await.ok()?;
        let status = node.status.unwrap_or_default();
        let manager_addr = node.manager_status.and_then(|m| m.addr);
        let name = node
            .description
            .and_then(|d| d.hostname)
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| id.to_string());
        Some(NodeView {
            name,
            addr: node_addr(
                status.addr.as_deref(),
                manager_addr.as_deref(),
                id == self.node_id,
            ),
            down: matches!(
                status.state,
                Some(NodeState::DOWN | NodeState::DISCONNECTED)
            ),
        })
    }

    /// A service's state as deploys read a container's: its current task's
    /// state, exit code and error, the node address and published port the
    /// proxy reaches it at, and (on this node) the container's own health.
    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>> {
        if !self.exists(id).await? {
            return Ok(None);
        }
        let Some(task) = self.newest_task(id).await? else {
            return Ok(Some(not_running(None, None)));
        };
        let node = match task.node_id.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => self.node(n).await,
            None => None,
        };
        // A down node reports nothing more: its task is lost with it, even
        // though the manager still lists it as it was last seen.
        if let Some(node) = node.as_ref().filter(|n| n.down) {
            let mut state = not_running(None, Some(format!("node {} is down", node.name)));
            state.lost_node = Some(node.name.clone());
            return Ok(Some(state));
        }
        let status = task.status.clone().unwrap_or_default();
        let container = status.container_status.clone().unwrap_or_default();
        let running = status.state == Some(TaskState::RUNNING);
        let err = status.err.clone().filter(|e| !e.is_empty());
        let local = task.node_id.as_deref() == Some(self.node_id.as_str());
        let (mut state, container_running) =
            match container.container_id.as_deref().filter(|c| !c.is_empty()) {
                Some(c) if local => match self.host.state(c).await {
                    Ok(Some(own)) => {
                        let up = own.running;
                        (own, up)
                    }
                    // Gone: it runs no more.
                    Ok(None) => (not_running(container.exit_code, err.clone()), false),
                    // The engine did not answer: the task's word stands.
                    Err(_) => (not_running(container.exit_code, err.clone()), true),
                },
                _ => (not_running(container.exit_code, err.clone()), true),
            };
        // On this node the container's own state counts too: its `die`
        // event (which converges the App) comes before the agent reports
        // the task as ended, and a converge that read the task alone would
        // see it running and leave it dead.
        let task_running = running;
        let running = task_running && container_running;
        state.running = running;
        state.restarting = false;
        // A task that ended says how; one the agent still calls running
        // while its container ended has only the container's word (its
        // status's exit code is a placeholder 0 until the task ends).
        if !running && !task_running {
            state.exit_code = container.exit_code.or(state.exit_code);
            state.error = err.or(state.error);
        }
        // On this node the container's own IPv4 binding counts. Elsewhere the
        // task's port status lists each binding of the port, IPv4 first (the
        // engine publishes IPv4 and IPv6 apart, at ports that may differ).
        if !local {
            state.published =
                ipv4_ports(status.port_status.and_then(|p| p.ports).unwrap_or_default());
        }
        state.ip = node.filter(|_| running).and_then(|n| n.addr);
        Ok(Some(state))
    }

    /// Where the proxy reaches a replica: its node, at the published port
    /// (an IPv6 node address in brackets).
    pub fn upstream_addr(state: &ContainerState, port: u16) -> Option<String> {
        let host = state.ip.as_ref()?;
        let published = *state.published.get(&port)?;
        Some(match host.parse::<std::net::IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, published).to_string(),
            Err(_) => format!("{host}:{published}"),
        })
    }

    /// Scales a service to `replicas` (0 or 1), forcing a new task when it
    /// is asked to run again.
    async fn scale(&self, id: &str, replicas: i64, force: bool) -> Result<()> {
        let service = self
            .host
            .docker
            .inspect_service(id, None)
            .await
            .map_err(|e| anyhow!("cannot inspect service {id}: {}", engine_message(&e)))?;
        let version = service.version.and_then(|v| v.index).unwrap_or(0);
        let mut spec = service.spec.unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(replicas),
            }),
            ..Default::default()
        });
        if force {
            if let Some(template) = spec.task_template.as_mut() {
                template.force_update = Some(template.force_update.unwrap_or(0) + 1);
            }
        }
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let options = UpdateServiceOptions {
            version: version as i32,
            ..Default::default()
        };
        self.host
            .docker
            .update_service(id, spec, options, self.credentials_for(&image))
            .await
            .map_err(|e| anyhow!("cannot update service {id}: {}", engine_message(&e)))?;
        Ok(())
    }

    /// Scales a service to none and waits (bounded) until its task stopped.
    pub async fn stop(&self, id: &str, timeout_secs: u64) -> Result<()> {
        if !self.exists(id).await? {
            return Ok(());
        }
        self.scale(id, 0, false).await?;
        let deadline = Instant::now() + Duration::from_secs(timeout_secs) + STOP_GRACE;
        while Instant::now() < deadline {
            let mut running = false;
            for task in self.tasks(id).await? {
                if task.status.as_ref().and_then(|s| s.state) != Some(TaskState::RUNNING) {
                    continue;
                }
                // A task on a down node never reports its stop: it is lost.
                let node = task.node_id.as_deref().unwrap_or_default();
                if !self.node(node).await.is_some_and(|n| n.down) {
                    running = true;
                    break;
                }
            }
            if !running {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow!(
            "the task of service {id} did not stop within {} s",
            timeout_secs + STOP_GRACE.as_secs()
        ))
    }

    /// Runs a stopped or ended replica again: a new task of its service.
    pub async fn start_existing(&self, id: &str) -> Result<()> {
        self.scale(id, 1, true).await?;
        self.wait_placed(id).await
    }

    /// Removes a service (its task stops); gone already is fine. Tasks
    /// that failed are remembered first, for `molt debug`.
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.remember_failed_tasks(id).await;
        match self.host.docker.delete_service(id).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(anyhow!(
                "cannot remove service {id}: {}",
                engine_message(&e)
            )),
        }
    }

    /// What Swarm says about a service's tasks, newest first.
    pub async fn task_reports(&self, id: &str) -> Vec<SwarmTask> {
        let tasks = self.tasks(id).await.unwrap_or_default();
        let mut reports = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let node = match task.node_id.as_deref().filter(|n| !n.is_empty()) {
                Some(id) => Some(self.node(id).await.unwrap_or_else(|| NodeView {
                    name: id.to_string(),
                    addr: None,
                    down: false,
                })),
                None => None,
            };
            let mut report = task_report(task, node.as_ref().map(|n| n.name.clone()));
            if let Some(node) = node.filter(|n| n.down) {
                report.error.get_or_insert(format!(
                    "node {} is down (its task is lost; see `docker node ls`)",
                    node.name
                ));
            }
            reports.push(report);
        }
        reports
    }

    /// Keeps the tasks of a service about to be removed when one of them
    /// failed or was rejected, under its App and deploy (the latest deploy
    /// of each App only, at most `KEPT_TASKS` tasks).
    async fn remember_failed_tasks(&self, id: &str) {
        let reports = self.task_reports(id).await;
        if !reports.iter().any(|t| t.error.is_some()) {
            return;
        }
        let Some(app) = self.service_app(id).await else {
            return;
        };
        let deploy = reports[0].deploy.clone();
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let entry = ended
            .entry(app)
            .or_insert_with(|| (deploy.clone(), Vec::new()));
        if entry.0 != deploy {
            *entry = (deploy, Vec::new());
        }
        entry.1.extend(reports);
        entry.1.truncate(KEPT_TASKS);
    }

    /// The App a service runs a replica of.
    async fn service_app(&self, id: &str) -> Option<String> {
        let service = self.host.docker.inspect_service(id, None).await.ok()?;
        service.spec?.labels?.get(LABEL_APP).cloned()
    }

    /// The remembered failed tasks of an App's deploy.
    pub fn ended_tasks(&self, app: &str, deploy: &str) -> Vec<SwarmTask> {
        let ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        match ended.get(app) {
            Some((d, tasks)) if d == deploy => tasks.clone(),
            _ => Vec::new(),
        }
    }

    /// Every replica service of this installation, or of one App.
    pub async fn list(&self, app: Option<&str>) -> Result<Vec<LabeledContainer>> {
        let mut label_filters = vec![format!("{LABEL_INSTANCE}={}", self.host.instance)];
        if let Some(app) = app {
            label_filters.push(format!("{LABEL_APP}={app}"));
        }
        let options = ListServicesOptions {
            filters: Some(HashMap::from([("label".to_string(), label_filters)])),
            ..Default::default()
        };
        let services = self
            .host
            .docker
            .list_services(Some(options))
            .await
            .map_err(|e| anyhow!("cannot list services: {}", engine_message(&e)))?;
        let mut found = Vec::new();
        for service in services {
            let Some(id) = service.id else { continue };
            let spec = service.spec.unwrap_or_default();
            let labels = spec.labels.unwrap_or_default();
            let Some(app) = labels.get(LABEL_APP).cloned() else {
                continue;
            };
            let running = self
                .tasks(&id)
                .await?
                .iter()
                .any(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING));
            found.push(LabeledContainer {
                id,
                name: spec.name.unwrap_or_default(),
                app,
                deploy: labels.get(LABEL_DEPLOY).cloned().unwrap_or_default(),
                replica: labels.get(LABEL_REPLICA).and_then(|r| r.parse().ok()),
                running,
            });
        }
        Ok(found)
    }

    /// Removes a deleted App's overlay network (kept while in use).
    pub async fn forget_app(&self, app: &str) {
        let name = self.app_network(app);
        if let Err(e) = self.host.docker.remove_network(&name).await {
            if !is_not_found(&e) {
                tracing::info!(network = %name, "kept the network of a deleted App: {}", engine_message(&e));
            }
        }
        self.host.forget_app(app).await;
    }

    /// Pulls on the manager (what a single-node swarm runs) and remembers
    /// the credential, which is sent with the services so other nodes can
    /// pull too.
    pub async fn pull(
        &self,
        image: &ImageRef,
        credentials: Option<(String, String)>,
    ) -> Result<()> {
        if let Some(pair) = &credentials {
            self.auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(image.registry.clone(), pair.clone());
        }
        self.host.pull(image, credentials).await
    }

    /// The last lines a service's tasks printed (`docker service logs`).
    pub async fn logs_tail(&self, id: &str, lines: usize) -> String {
        let options = super::log_options(false, Some(lines as u64), None);
        super::log_text(self.host.docker.service_logs(id, Some(options))).await
    }

    /// A service's output as it comes (see `Runtime::log_lines`).
    pub fn log_lines(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
        since: Option<i64>,
    ) -> impl futures_util::Stream<Item = String> + Send + 'static {
        let options = super::log_options(follow, tail, since);
        super::log_chunks(self.host.docker.service_logs(id, Some(options)))
    }

    /// The events of this node's task containers, told as their services',
    /// and a [`NODE_DOWN`] event (the node's id as `container`) when the
    /// manager marks a node down, after which every App converges: the lost
    /// tasks leave the routes at once.
    pub fn events(
        &self,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent>> + Send + 'static {
        // Either stream ending ends both, so the watcher reconnects and
        // converges every App rather than miss one kind of event.
        let ended = || {
            futures_util::stream::once(async { Err(anyhow!("the engine's event stream ended")) })
        };
        futures_util::stream::select(
            self.task_events().chain(ended()),
            self.node_events().chain(ended()),
        )
    }

    /// The manager's node events that mark a node down (it stopped
    /// answering its heartbeats).
    fn node_events(&self) -> impl futures_util::Stream<Item = Result<ContainerEvent>> + Send {
        let filters = HashMap::from([("type".to_string(), vec!["node".to_string()])]);
        self.host
            .event_stream(filters, "node event stream", |message| {
                let actor = message.actor.unwrap_or_default();
                let state = actor.attributes.unwrap_or_default().remove("state.new")?;
                if !matches!(state.as_str(), "down" | "disconnected") {
                    return None;
                }
                Some(ContainerEvent {
                    action: NODE_DOWN.into(),
                    container: actor.id.unwrap_or_default(),
                    app: String::new(),
                })
            })
    }

    /// The events of this node's task containers, told as their services'.
    fn task_events(&self) -> impl futures_util::Stream<Item = Result<ContainerEvent>> + Send {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.host.instance)],
            ),
        ]);
        self.host.event_stream(filters, "event stream", |message| {
            let attributes = message.actor.and_then(|a| a.attributes).unwrap_or_default();
            // One-off containers run on the host, outside any service.
            let service = attributes.get("com.docker.swarm.service.id")?.clone();
            Some(ContainerEvent {
                action: message.action.unwrap_or_default(),
                container: service,
                app: attributes.get(LABEL_APP).cloned().unwrap_or_default(),
            })
        })
    }

    /// The TCP ports a replica listens on, when its task runs on this node.
    pub async fn listening_ports(&self, id: &str) -> Vec<u16> {
        match self.local_container(id).await {
            Some(c) => self.host.listening_ports(&c).await,
            None => Vec::new(),
        }
    }

    /// The memory limit of a replica's service.
    pub async fn memory_limit(&self, id: &str) -> Option<u64> {
        let service = self.host.docker.inspect_service(id, None).await.ok()?;
        service
            .spec?
            .task_template?
            .resources?
            .limits?
            .memory_bytes
            .filter(|m| *m > 0)
            .map(|m| m as u64)
    }
}

/// What the manager knows of one node (see [`Swarm::node`]).
struct NodeView {
    name: String,
    addr: Option<String>,
    down: bool,
}

/// Where the proxy reaches a node's published ports: the address the node
/// joined the swarm with; loopback for the server's own node when the
/// swarm lists none for it. A manager that became leader after the swarm
/// was made may list `0.0.0.0` or `127.0.0.1` (the address it reached
/// itself at); another node's proxy, or a peer, cannot use that, so its
/// manager address (`ADDR:2377`) counts instead.
fn node_addr(listed: Option<&str>, manager: Option<&str>, own: bool) -> Option<String> {
    let usable = |addr: &str| {
        addr.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_unspecified() && (own || !ip.is_loopback()))
    };
    if let Some(addr) = listed.filter(|a| usable(a)) {
        return Some(addr.to_string());
    }
    if own {
        return Some("127.0.0.1".to_string());
    }
    manager
        .and_then(|m| m.parse::<std::net::SocketAddr>().ok())
        .map(|m| m.ip().to_string())
        .filter(|a| usable(a))
}

/// Container port → published port, from a task's port status. The engine
/// lists a port's IPv4 binding before its IPv6 one, and the two can differ;
/// the proxy dials the node's IPv4 address, so the first one counts.
fn ipv4_ports(ports: Vec<EndpointPortConfig>) -> HashMap<u16, u16> {
    let mut published = HashMap::new();
    for port in ports {
        if let (Some(target), Some(host)) = (port.target_port, port.published_port) {
            published.entry(target as u16).or_insert(host as u16);
        }
    }
    published
}

/// A task as `molt debug` shows it; `node` is its node's name.
fn task_report(task: &Task, node: Option<String>) -> SwarmTask {
    let labels = task
        .spec
        .as_ref()
        .and_then(|s| s.container_spec.as_ref())
        .and_then(|c| c.labels.as_ref());
    let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
    let status = task.status.clone().unwrap_or_default();
    SwarmTask {
        deploy: label(LABEL_DEPLOY).unwrap_or_default(),
        replica: label(LABEL_REPLICA).and_then(|r| r.parse().ok()),
        node,
        desired_state: task
            .desired_state
            .map(|s| s.to_string())
            .unwrap_or_default(),
        state: status.state.map(|s| s.to_string()).unwrap_or_default(),
        error: status.err.filter(|e| !e.is_empty()),
        message: status.message.unwrap_or_default(),
    }
}

/// The state of a replica whose task has no container here.
fn not_running(exit_code: Option<i64>, error: Option<String>) -> ContainerState {
    ContainerState {
        running: false,
        restarting: false,
        exit_code,
        oom_killed: false,
        error,
        ip: None,
        published: HashMap::new(),
        restart_count: 0,
        started_at: None,
        health: None,
        lost_node: None,
    }
}

#[cfg(test)]
mod tests;
