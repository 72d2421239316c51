//! The container runtime: the Docker engine through `bollard`. Every
//! container Molt starts carries labels naming its installation, App, deploy
//! and role, so that after any crash the reconciler can tell what it is.

use anyhow::{anyhow, Context, Result};
use bollard::auth::DockerCredentials;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use molt_core::ImageRef;
use std::collections::HashMap;

pub const LABEL_INSTANCE: &str = "molt.instance";
pub const LABEL_APP: &str = "molt.app";
pub const LABEL_DEPLOY: &str = "molt.deploy";
pub const LABEL_ROLE: &str = "molt.role";
/// Which replica of its App a container is (0-based).
pub const LABEL_REPLICA: &str = "molt.replica";

/// What a container of an App is for.
pub const ROLE_WEB: &str = "web";
/// A `molt run` one-off container: never a replica, never routed, removed
/// when its command ends (and by the start-up reconciler if the server
/// died first).
pub const ROLE_RUN: &str = "run";
/// The run record a one-off container belongs to.
pub const LABEL_RUN: &str = "molt.run";

mod attach;
mod build;
mod logs;
mod network;
mod swarm;

pub use attach::{Attached, OneOff, Output};
pub use build::BuildSpec;
pub(crate) use logs::{log_chunks, log_options, log_text};
pub use swarm::{NoSuitableNode, Orchestrator, Swarm, GPU_RESOURCE, NODE_DOWN};

#[derive(Clone)]
pub struct Runtime {
    docker: Docker,
    instance: String,
    network: String,
    upstream: UpstreamMode,
    /// How long a pull may go without any progress from the registry
    /// before it fails, so a stalled registry cannot hold an App forever.
    pull_stall: std::time::Duration,
    /// The memory limit of an App that gives none (`confine::default_memory`).
    default_memory: Option<u64>,
}

/// `molt server --pull-stall-timeout`'s default.
pub const DEFAULT_PULL_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// How the proxy reaches App containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    /// At the container's address on Molt's bridge network: no published
    /// port, no extra hop. Needs the engine on this host.
    Bridge,
    /// At a port the engine publishes on 127.0.0.1, for hosts where the
    /// bridge cannot be reached from the host (an engine in a VM, rootless
    /// Docker).
    Published,
}

impl std::fmt::Display for UpstreamMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamMode::Bridge => "bridge",
            UpstreamMode::Published => "published",
        })
    }
}

/// What Molt asks the engine to run for one deploy.
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub app: String,
    pub deploy: String,
    /// Which replica of the App it is.
    pub replica: u32,
    pub env: Vec<String>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub gpus: u32,
    /// The port the App listens on inside the container (published on
    /// 127.0.0.1 in `UpstreamMode::Published`).
    pub port: u16,
    /// Apps whose networks the container joins besides its own.
    pub links: Vec<String>,
    /// Capabilities added to the default set.
    pub cap_add: Vec<String>,
    /// The most processes it may run.
    pub pids_limit: u32,
    /// A read-only root filesystem with a tmpfs at `/tmp`.
    pub read_only: bool,
    /// Swarm placement constraints (`node.labels.gpu==true`); a single
    /// host has no nodes to choose from and ignores them.
    pub constraints: Vec<String>,
}

/// A container's state as far as deploys care.
#[derive(Debug, Clone)]
pub struct ContainerState {
    pub running: bool,
    pub restarting: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub error: Option<String>,
    /// Its address on Molt's network, once it has one; on a swarm, the
    /// address of the node its task runs on (where its port is published).
    pub ip: Option<String>,
    /// Container port → the port the engine published it at on 127.0.0.1.
    pub published: HashMap<u16, u16>,
    pub restart_count: i64,
    /// When the container last started (RFC 3339), for autoheal's grace.
    pub started_at: Option<String>,
    /// The image's own `HEALTHCHECK` as the engine runs it, when the image
    /// declares one.
    pub health: Option<crate::health::EngineHealth>,
    /// On a swarm: the name of the node its task ran on, when that node is
    /// down (the task is lost with it and will not report again).
    pub lost_node: Option<String>,
}

/// A container event of this installation, from the engine's event stream.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub action: String,
    pub container: String,
    pub app: String,
}

/// A container found by its labels.
#[derive(Debug, Clone)]
pub struct LabeledContainer {
    pub id: String,
    pub name: String,
    pub app: String,
    pub deploy: String,
    /// Its `molt.replica` label, if it has one.
    pub replica: Option<u32>,
    pub running: bool,
}

impl Runtime {
    /// Connects to the engine (honouring `DOCKER_HOST`) and agrees on an API
    /// version, so engines as old as API 1.41 work.
    pub async fn connect(instance: &str, network: &str) -> Result<Self> {
        let docker = Docker::connect_with_defaults()
            .context("cannot reach the Docker engine: is it installed and is DOCKER_HOST right?")?
            .negotiate_version()
            .await
            .context(
                "the Docker engine does not answer: start it (e.g. `systemctl start docker` or `dockerd`) \
                 and check that this user may use its socket",
            )?;
        Ok(Self {
            docker,
            instance: instance.to_string(),
            network: network.to_string(),
            upstream: UpstreamMode::Bridge,
            pull_stall: DEFAULT_PULL_STALL,
            default_memory: None,
        })
    }

    pub fn network(&self) -> &str {
        &self.network
    }

    /// This runtime, starting containers for `mode`.
    pub fn with_upstream(mut self, mode: UpstreamMode) -> Self {
        self.upstream = mode;
        self
    }

    /// This runtime, failing pulls that make no progress for `stall`.
    pub fn with_pull_stall(mut self, stall: std::time::Duration) -> Self {
        self.pull_stall = stall;
        self
    }

    /// This runtime, limiting Apps without `--memory` to `bytes`.
    pub fn with_default_memory(mut self, bytes: Option<u64>) -> Self {
        self.default_memory = bytes;
        self
    }

    pub fn upstream(&self) -> UpstreamMode {
        self.upstream
    }

    /// Whether this host can reach Molt's bridge network: its gateway is
    /// one of this host's own addresses (an address can be bound only
    /// where it is local). Otherwise the engine's network lives elsewhere
    /// (a VM, rootless Docker's namespace) and containers must publish
    /// their port, which such engines forward to this host's loopback.
    pub async fn detect_upstream(&self) -> UpstreamMode {
        let gateways: Vec<std::net::IpAddr> =
            match self.docker.inspect_network(&self.network, None).await {
                Ok(net) => net
                    .ipam
                    .and_then(|i| i.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.gateway?.parse().ok())
                    .collect(),
                Err(_) => Vec::new(),
            };
        if gateways.is_empty() {
            tracing::warn!(network = %self.network, "the network reports no gateway; assuming its bridge is reachable");
            return UpstreamMode::Bridge;
        }
        if gateways
            .iter()
            .any(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok())
        {
            UpstreamMode::Bridge
        } else {
            UpstreamMode::Published
        }
    }

    /// Where the proxy reaches an App listening on `port` in a container in
    /// `state`, once the engine says.
    pub fn upstream_addr(&self, state: &ContainerState, port: u16) -> Option<String> {
        match self.upstream {
            UpstreamMode::Bridge => state.ip.as_ref().map(|ip| format!("{ip}:{port}")),
            UpstreamMode::Published => state
                .published
                .get(&port)
                .map(|host_port| format!("127.0.0.1:{host_port}")),
        }
    }

    /// The memory the engine's host has.
    pub async fn host_memory(&self) -> Result<u64> {
        let info = self.docker.info().await.map_err(|e| {
            anyhow!(
                "cannot read the engine's host memory: {}",
                engine_message(&e)
            )
        })?;
        Ok(info.mem_total.unwrap_or(0).max(0) as u64)
    }

    /// Pulls an image. The error is the registry's own reason, as the engine
    /// reports it, or, when the engine reports no progress for the stall
    /// timeout, "the registry stopped sending" with the layer it was on
    /// (dropping the stream closes the engine connection, which cancels
    /// the engine's pull).
    pub async fn pull(
        &self,
        image: &ImageRef,
        credentials: Option<(String, String)>,
    ) -> Result<()> {
        let (from_image, tag) = match (&image.digest, &image.tag) {
            (Some(digest), _) => (format!("{}@{}", image.name(), digest), None),
            (None, Some(tag)) => (image.name(), Some(tag.clone())),
            (None, None) => (image.name(), Some("latest".to_string())),
        };
        let options = CreateImageOptions {
            from_image: Some(from_image),
            tag,
            ..Default::default()
        };
        let creds = credentials.map(|(username, password)| DockerCredentials {
            username: Some(username),
            password: Some(password),
            serveraddress: Some(image.registry.clone()),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, creds);
        let mut layer: Option<String> = None;
        loop {
            let item = match tokio::time::timeout(self.pull_stall, stream.next()).await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => {
                    return Err(anyhow!(
                        "the registry stopped sending: no progress for {} s while pulling {}{}; check that the registry {} is up and serving, then deploy again (a slow registry can be given longer with `molt server --pull-stall-timeout SECS`)",
                        self.pull_stall.as_secs(),
                        image,
                        match &layer {
                            Some(l) => format!(" (on layer {l})"),
                            None => " (before any layer started)".to_string(),
                        },
                        image.registry
                    ))
                }
            };
            match item {
                Ok(info) => {
                    if let Some(id) = progress_layer(info.status.as_deref(), info.id.as_deref()) {
                        layer = Some(id.to_string());
                    }
                    if let Some(detail) = info.error_detail {
                        return Err(anyhow!(detail
                            .message
                            .unwrap_or_else(|| "unknown error".into())));
                    }
                }
                Err(e) => return Err(anyhow!(engine_message(&e))),
            }
        }
        Ok(())
    }

    /// The digest the registry gave the image, as recorded by the engine.
    pub async fn image_digest(&self, image: &ImageRef) -> Result<Option<String>> {
        let reference = image.to_string();
        let inspect = self.docker.inspect_image(&reference).await.map_err(|e| {
            anyhow!(
                "the image {reference} is not on this host: {}",
                engine_message(&e)
            )
        })?;
        let name = image.name();
        let short_name = image
            .name()
            .strip_prefix("docker.io/")
            .map(|n| n.trim_start_matches("library/").to_string());
        Ok(inspect
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find_map(|rd| {
                let (repo, digest) = rd.split_once('@')?;
                (repo == name || Some(repo) == short_name.as_deref() || repo == image.repository)
                    .then(|| digest.to_string())
            }))
    }

    /// Whether the image (by reference or `repo@digest`) is on this host.
    pub async fn has_image(&self, reference: &str) -> bool {
        self.docker.inspect_image(reference).await.is_ok()
    }

    /// Creates and starts a container on its App's network (reachable there
    /// by the App's name), joined to the networks of the Apps it links to;
    /// returns its id. Confined: `no-new-privileges`, no `NET_RAW` unless
    /// added, a process limit, a memory limit (the host-derived default
    /// when the App gives none), optionally a read-only root.
    pub async fn start(&self, spec: &ContainerSpec) -> Result<String> {
        if !spec.constraints.is_empty() {
            tracing::warn!(app = %spec.app, constraints = ?spec.constraints, "placement constraints apply on a swarm only (--orchestrator swarm); this single host ignores them");
        }
        let id = self.create(spec, None).await?;
        self.docker.start_container(&id, None).await.map_err(|e| {
            anyhow!(
                "the engine could not start the container: {}",
                engine_message(&e)
            )
        })?;
        Ok(id)
    }

    /// Creates (without starting) an App's container: a replica, or with
    /// `one_off` a `molt run` container, confined the same way but with its
    /// own role label, the command given, no restart, no published port
    /// and no alias (linked Apps must not reach it by the App's name).
    async fn create(
        &self,
        spec: &ContainerSpec,
        one_off: Option<&attach::OneOff>,
    ) -> Result<String> {
        let network = self.ensure_app_network(&spec.app).await?;
        let mut linked = Vec::new();
        for link in &spec.links {
            linked.push(self.ensure_app_network(link).await?);
        }
        let memory = spec.memory_bytes.or(self.default_memory).map(|m| m as i64);
        let mut labels = HashMap::from([
            (LABEL_INSTANCE.to_string(), self.instance.clone()),
            (LABEL_APP.to_string(), spec.app.clone()),
            (LABEL_DEPLOY.to_string(), spec.deploy.clone()),
            (LABEL_ROLE.to_string(), ROLE_WEB.to_string()),
            (LABEL_REPLICA.to_string(), spec.replica.to_string()),
        ]);
        if let Some(o) = one_off {
            labels.insert(LABEL_ROLE.to_string(), ROLE_RUN.to_string());
            labels.remove(LABEL_REPLICA);
            labels.insert(LABEL_RUN.to_string(), o.run_id.clone());
        }
        let publish = self.upstream == UpstreamMode::Published && one_off.is_none();
        let device_requests = (spec.gpus > 0).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(spec.gpus as i64),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        });
        let host_config = HostConfig {
            restart_policy: Some(RestartPolicy {
                name: Some(if one_off.is_some() {
                    RestartPolicyNameEnum::NO
                } else {
                    RestartPolicyNameEnum::UNLESS_STOPPED
                }),
                maximum_retry_count: None,
            }),
            network_mode: Some(network.clone()),
            security_opt: Some(vec!["no-new-privileges".into()]),
            // Raw sockets let an App forge packets to its neighbours.
            cap_drop: (!spec.cap_add.iter().any(|c| c == "NET_RAW"))
                .then(|| vec!["NET_RAW".to_string()]),
            cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
            pids_limit: Some(spec.pids_limit as i64),
            readonly_rootfs: Some(spec.read_only),
            tmpfs: spec.read_only.then(|| {
                HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev,size=64m".to_string())])
            }),
            memory,
            // No swap beyond the limit, so exceeding it is an OOM kill that
            // Molt can report, not a slow crawl.
            memory_swap: memory,
            nano_cpus: spec.cpus.map(|c| (c * 1e9) as i64),
            device_requests,
            // A port the engine picks, on loopback only.
            port_bindings: publish.then(|| {
                HashMap::from([(
                    format!("{}/tcp", spec.port),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(String::new()),
                    }]),
                )])
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            exposed_ports: publish.then(|| vec![format!("{}/tcp", spec.port)]),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings {
                        // Linked Apps reach it by the App's name.
                        aliases: one_off.is_none().then(|| vec![spec.app.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            cmd: one_off.map(|o| o.cmd.clone()),
            tty: one_off.map(|o| o.tty),
            open_stdin: one_off.map(|o| o.stdin),
            stdin_once: one_off.map(|o| o.stdin),
            attach_stdin: one_off.map(|o| o.stdin),
            attach_stdout: one_off.map(|_| true),
            attach_stderr: one_off.map(|_| true),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| {
                anyhow!(
                    "the engine refused to create the container: {}",
                    engine_message(&e)
                )
            })?;
        // Engines before API 1.44 take one network at create; the linked
        // ones are joined before the container starts.
        for net in &linked {
            let joined = self
                .docker
                .connect_network(
                    net,
                    NetworkConnectRequest {
                        container: created.id.clone(),
                        endpoint_config: None,
                    },
                )
                .await;
            if let Err(e) = joined {
                let _ = self.remove(&created.id).await;
                return Err(anyhow!(
                    "the engine could not join the container to the linked network `{net}`: {}",
                    engine_message(&e)
                ));
            }
        }
        Ok(created.id)
    }

    pub async fn state(&self, id: &str) -> Result<Option<ContainerState>> {
        let inspect = match self.docker.inspect_container(id, None).await {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(anyhow!(
                    "cannot inspect container {id}: {}",
                    engine_message(&e)
                ))
            }
        };
        let state = inspect.state.unwrap_or_default();
        let settings = inspect.network_settings.unwrap_or_default();
        let config = inspect.config.unwrap_or_default();
        let health = engine_health(config.healthcheck.as_ref(), state.health.as_ref());
        // Its address on its App's network; a container started before
        // Apps had networks of their own is on the shared one.
        let app_network = config
            .labels
            .and_then(|l| l.get(LABEL_APP).cloned())
            .map(|app| self.app_network(&app));
        let ip = settings.networks.and_then(|mut nets| {
            let ip = |ep: EndpointSettings| ep.ip_address.filter(|ip| !ip.is_empty());
            app_network
                .and_then(|n| nets.remove(&n))
                .and_then(ip)
                .or_else(|| nets.remove(&self.network).and_then(ip))
        });
        let published = published_ports(settings.ports.unwrap_or_default());
        Ok(Some(ContainerState {
            running: state.running.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            ip,
            published,
            restart_count: inspect.restart_count.unwrap_or(0),
            started_at: state.started_at.filter(|s| !s.starts_with("0001-")),
            health,
            lost_node: None,
        }))
    }

    /// The TCP ports a running container listens on, read from its network
    /// namespace through the host's `/proc` (works for images without a
    /// shell). Empty when that cannot be read.
    pub async fn listening_ports(&self, id: &str) -> Vec<u16> {
        let Ok(inspect) = self.docker.inspect_container(id, None).await else {
            return Vec::new();
        };
        let Some(pid) = inspect.state.and_then(|s| s.pid).filter(|p| *p > 0) else {
            return Vec::new();
        };
        let mut ports = Vec::new();
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
                ports.extend(parse_listening(&text));
            }
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The memory limit a container runs with, if any.
    pub async fn memory_limit(&self, id: &str) -> Option<u64> {
        let inspect = self.docker.inspect_container(id, None).await.ok()?;
        inspect
            .host_config
            .and_then(|h| h.memory)
            .filter(|m| *m > 0)
            .map(|m| m as u64)
    }

    /// Sends SIGTERM and, after `timeout_secs`, SIGKILL.
    pub async fn stop(&self, id: &str, timeout_secs: u64) -> Result<()> {
        let options = StopContainerOptions {
            t: Some(timeout_secs as i32),
            ..Default::default()
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || is_not_modified(&e) => Ok(()),
            Err(e) => Err(anyhow!(
                "cannot stop container {id}: {}",
                engine_message(&e)
            )),
        }
    }

    pub async fn start_existing(&self, id: &str) -> Result<()> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_modified(&e) => Ok(()),
            Err(e) => Err(anyhow!(
                "cannot start container {id}: {}",
                engine_message(&e)
            )),
        }
    }

    /// Removes a container, stopping it first if needed; a missing one is
    /// already gone.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Removal already in progress (a concurrent cleanup).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(anyhow!(
                "cannot remove container {id}: {}",
                engine_message(&e)
            )),
        }
    }

    /// The engine's container events for this installation's containers
    /// (start, die, oom, ...). The stream ends when the connection breaks;
    /// the caller reconnects and resyncs.
    pub fn events(
        &self,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent>> + Send + 'static {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{LABEL_INSTANCE}={}", self.instance)],
            ),
        ]);
        self.event_stream(filters, "event stream", |message| {
            let actor = message.actor.unwrap_or_default();
            let attributes = actor.attributes.unwrap_or_default();
            // A one-off container's start and exit are not the App's.
            if attributes.get(LABEL_ROLE).map(String::as_str) == Some(ROLE_RUN) {
                return None;
            }
            Some(ContainerEvent {
                action: message.action.unwrap_or_default(),
                container: actor.id.unwrap_or_default(),
                app: attributes.get(LABEL_APP).cloned().unwrap_or_default(),
            })
        })
    }

    /// The engine's events that `filters` select, each read into a
    /// `ContainerEvent` by `read` (or skipped); a break of the stream is an
    /// error that names it (`stream`).
    pub(crate) fn event_stream(
        &self,
        filters: HashMap<String, Vec<String>>,
        stream: &'static str,
        read: impl Fn(bollard::models::EventMessage) -> Option<ContainerEvent> + Send + 'static,
    ) -> impl futures_util::Stream<Item = Result<ContainerEvent>> + Send + 'static {
        let options = bollard::query_parameters::EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        self.docker.events(Some(options)).filter_map(move |item| {
            let event = match item {
                Ok(message) => read(message).map(Ok),
                Err(e) => Some(Err(anyhow!(
                    "the engine's {stream} broke: {}",
                    engine_message(&e)
                ))),
            };
            futures_util::future::ready(event)
        })
    }

    /// Every container of this installation, or of one App.
    pub async fn list(&self, app: Option<&str>) -> Result<Vec<LabeledContainer>> {
        let mut label_filters = vec![format!("{LABEL_INSTANCE}={}", self.instance)];
        if let Some(app) = app {
            label_filters.push(format!("{LABEL_APP}={app}"));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), label_filters)])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| anyhow!("cannot list containers: {}", engine_message(&e)))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                // One-off containers are no App's replicas (`list_runs`).
                if labels.get(LABEL_ROLE).map(String::as_str) == Some(ROLE_RUN) {
                    return None;
                }
                Some(LabeledContainer {
                    id: c.id?,
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    app: labels.get(LABEL_APP)?.clone(),
                    deploy: labels.get(LABEL_DEPLOY).cloned().unwrap_or_default(),
                    replica: labels.get(LABEL_REPLICA).and_then(|r| r.parse().ok()),
                    running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
                })
            })
            .collect())
    }
}

/// The layer a pull progress message is about: the engine names layers by
/// their short digest in `id` (other messages use `id` for the tag).
fn progress_layer<'a>(status: Option<&str>, id: Option<&'a str>) -> Option<&'a str> {
    let status = status?;
    let layer_status = [
        "Pulling fs layer",
        "Waiting",
        "Downloading",
        "Verifying Checksum",
        "Download complete",
        "Extracting",
        "Retrying",
    ];
    layer_status
        .iter()
        .any(|s| status.starts_with(s))
        .then_some(id?)
        .filter(|id| !id.is_empty())
}

/// The engine's port map (`"8080/tcp"` → bindings) as container port →
/// the port published on 127.0.0.1 (or on every address).
fn published_ports(map: bollard::models::PortMap) -> HashMap<u16, u16> {
    map.into_iter()
        .filter_map(|(key, bindings)| {
            let port = key.strip_suffix("/tcp")?.parse().ok()?;
            let host_port = bindings?
                .into_iter()
                .filter(|b| {
                    matches!(
                        b.host_ip.as_deref(),
                        Some("127.0.0.1" | "0.0.0.0" | "") | None
                    )
                })
                .find_map(|b| b.host_port?.parse().ok())?;
            Some((port, host_port))
        })
        .collect()
}

/// Ports in state LISTEN (0A) in a `/proc/net/tcp` table, but for Docker's
/// embedded DNS resolver (127.0.0.11, on every user-defined network), which
/// is never the App.
fn parse_listening(table: &str) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            (state == "0A" && !local.starts_with("0B00007F:")).then_some(())?;
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// The engine's own words for an error, without bollard's wrapping.
pub fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// The image's `HEALTHCHECK` in a container, from its config (what runs)
/// and its state (the engine's verdict and the last check's output).
fn engine_health(
    config: Option<&bollard::models::HealthConfig>,
    state: Option<&bollard::models::Health>,
) -> Option<crate::health::EngineHealth> {
    use crate::health::{check_output, describe_healthcheck, EngineHealth, EngineHealthStatus};
    use bollard::models::HealthStatusEnum;
    let config = config?;
    let command =
        describe_healthcheck(config.test.as_deref().unwrap_or_default(), config.interval)?;
    let state = state?;
    let status = match state.status? {
        HealthStatusEnum::HEALTHY => EngineHealthStatus::Healthy,
        HealthStatusEnum::UNHEALTHY => EngineHealthStatus::Unhealthy,
        HealthStatusEnum::STARTING => EngineHealthStatus::Starting,
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => return None,
    };
    let last_output = state
        .log
        .as_ref()
        .and_then(|log| log.last())
        .and_then(|r| r.output.as_deref())
        .and_then(check_output);
    Some(EngineHealth {
        status,
        command,
        last_output,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn published_ports_from_the_engines_port_map() {
        use bollard::models::PortBinding;
        let bind = |ip: &str, port: &str| PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        };
        let map = std::collections::HashMap::from([
            (
                "8080/tcp".to_string(),
                Some(vec![bind("::1", "1"), bind("127.0.0.1", "49153")]),
            ),
            ("53/udp".to_string(), Some(vec![bind("127.0.0.1", "49154")])),
            ("9000/tcp".to_string(), None),
        ]);
        let ports = super::published_ports(map);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports.get(&8080), Some(&49153));
    }

    #[test]
    fn pull_progress_names_the_layer() {
        use super::progress_layer;
        assert_eq!(
            progress_layer(Some("Downloading"), Some("0123456789ab")),
            Some("0123456789ab")
        );
        assert_eq!(
            progress_layer(Some("Pulling fs layer"), Some("0123456789ab")),
            Some("0123456789ab")
        );
        assert_eq!(
            progress_layer(Some("Pulling from stall/app"), Some("v1")),
            None
        );
        assert_eq!(progress_layer(None, Some("x")), None);
    }

    #[test]
    fn listening_ports_from_proc() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   2: 0B00007F:AEF7 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(super::parse_listening(table), vec![9000]);
    }
}
