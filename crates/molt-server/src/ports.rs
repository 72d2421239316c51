//! The seams between the control plane and what it drives: containers (the
//! Docker engine), routes (the proxy) and health probes. The deploy executor
//! and the converger reach the outside world only through these traits, so
//! every failure path can be driven in a unit test with the in-memory fakes
//! of `crate::fakes`, while `Runtime`, `ProxyLink` and `Prober` implement
//! them for real.

use crate::health::{Probe, Prober};
use crate::proxy_link::ProxyLink;
use crate::registry::{Credential, RegistryError};
use crate::runtime::{
    Attached, ContainerEvent, ContainerSpec, ContainerState, LabeledContainer, OneOff, Runtime,
    Swarm, UpstreamMode,
};
use anyhow::Result;
use futures_util::stream::BoxStream;
use molt_core::api::SwarmTask;
use molt_core::ImageRef;
use molt_proxy::admin::Route;
use molt_proxy::TlsCert;
use std::time::Duration;

/// Everything the control plane drives, as it is given to it.
pub struct Ports {
    pub containers: std::sync::Arc<dyn Containers>,
    pub routes: std::sync::Arc<dyn Routes>,
    pub health: std::sync::Arc<dyn HealthProbe>,
    pub registries: std::sync::Arc<dyn Registries>,
}

/// Where App containers run: the Docker engine, or a fake in tests.
#[async_trait::async_trait]
pub trait Containers: Send + Sync {
    /// The network App containers join.
    fn network(&self) -> &str;
    /// How the proxy reaches App containers.
    fn upstream(&self) -> UpstreamMode;
    /// Where the proxy reaches a container's `port`, once it has an address.
    fn upstream_addr(&self, state: &ContainerState, port: u16) -> Option<String>;
    /// Pulls an image; the error is the engine's own words.
    async fn pull(&self, image: &ImageRef, credentials: Option<(String, String)>) -> Result<()>;
    /// The registry digest of an image on this host.
    async fn image_digest(&self, image: &ImageRef) -> Result<Option<String>>;
    async fn has_image(&self, reference: &str) -> bool;
    /// Creates and starts a container; returns its id.
    async fn start(&self, spec: &ContainerSpec) -> Result<String>;
    /// A container's state; `None` when it does not exist.
    async fn state(&self, id: &str) -> Result<Option<ContainerState>>;
    /// The TCP ports a container listens on (empty when unknown).
    async fn listening_ports(&self, id: &str) -> Vec<u16>;
    async fn memory_limit(&self, id: &str) -> Option<u64>;
    /// The last lines a container printed.
    async fn logs_tail(&self, id: &str, lines: usize) -> String;
    async fn stop(&self, id: &str, timeout_secs: u64) -> Result<()>;
    /// Starts a stopped container again.
    async fn start_existing(&self, id: &str) -> Result<()>;
    /// Removes a container (stopping it if needed); gone already is fine.
    async fn remove(&self, id: &str) -> Result<()>;
    /// Every container of this installation, or of one App.
    async fn list(&self, app: Option<&str>) -> Result<Vec<LabeledContainer>>;
    /// Releases what a deleted App held besides its containers (its network).
    async fn forget_app(&self, _app: &str) {}
    /// What the orchestrator says about a replica's tasks, newest first
    /// (`molt debug`); none on a single host.
    async fn tasks(&self, _id: &str) -> Vec<SwarmTask> {
        Vec::new()
    }
    /// The tasks of a deploy's replicas that failed and were removed, as
    /// they were last seen (`molt debug`); none on a single host.
    fn ended_tasks(&self, _app: &str, _deploy: &str) -> Vec<SwarmTask> {
        Vec::new()
    }
    /// A container's output, line by line (see `Runtime::log_lines`).
    fn log_lines(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
        since: Option<i64>,
    ) -> BoxStream<'static, String>;
    /// Container events of this installation; ends when the stream breaks.
    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>>;

    // `molt run` and `molt exec` (the fakes of deploy tests run neither).

    /// Creates, attaches to and starts a one-off container (`size`: the
    /// client's terminal, columns × rows, with a TTY).
    async fn run_attached(
        &self,
        _spec: &ContainerSpec,
        _one_off: &OneOff,
        _size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        Err(anyhow::anyhow!(
            "this runtime cannot run one-off containers"
        ))
    }
    /// Waits until a container exited; its exit code.
    async fn wait_exit(&self, _id: &str) -> Result<i64> {
        Err(anyhow::anyhow!("this runtime cannot wait for containers"))
    }
    /// Runs a command in a running container; the exec's id and streams.
    async fn exec_attached(
        &self,
        _container: &str,
        _cmd: &[String],
        _tty: bool,
        _stdin: bool,
        _size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        Err(anyhow::anyhow!(
            "this runtime cannot run commands in containers"
        ))
    }
    /// An exec's exit code, once it ended.
    async fn exec_exit(&self, _exec_id: &str) -> Result<Option<i64>> {
        Ok(None)
    }
    /// This installation's one-off containers, by id.
    async fn list_runs(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Removes a one-off container (`run_attached`'s). Not `remove`: where
    /// replicas are services (a swarm), that removes a service, and a
    /// one-off is a plain container on this host.
    async fn remove_run(&self, id: &str) -> Result<()> {
        self.remove(id).await
    }

    /// Builds an image from a context (`molt build`), each output line to
    /// `log`; the image's id.
    async fn build_image(
        &self,
        _spec: crate::runtime::BuildSpec,
        _log: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<String> {
        Err(anyhow::anyhow!("this runtime cannot build images"))
    }

    /// Removes an image from this host (retention of built releases).
    async fn remove_image(&self, _reference: &str) -> Result<()> {
        Err(anyhow::anyhow!("this runtime cannot remove images"))
    }
}

/// Where traffic is routed: Molt's proxy, or a fake in tests.
#[async_trait::async_trait]
pub trait Routes: Send + Sync {
    /// Replaces an App's route in one store; returns once the proxy applied
    /// it (and persisted it).
    async fn set_route(&self, route: Route) -> Result<()>;
    async fn remove_route(&self, app: &str) -> Result<()>;
    /// Holds an App's new requests until `resume`.
    async fn pause(&self, app: &str, max_pause: Duration, max_queued: usize) -> Result<()>;
    async fn resume(&self, app: &str) -> Result<()>;
    async fn routes(&self) -> Result<Vec<Route>>;
    /// Waits for a target out of the route to drain; (drained, connections cut).
    async fn wait_drained(&self, app: &str, addr: &str, timeout: Duration) -> Result<(bool, u64)>;
    /// Puts a domain's HTTPS certificate in force. A proxy without HTTPS
    /// (the fakes) takes and ignores it.
    async fn put_cert(&self, _cert: TlsCert) -> Result<()> {
        Ok(())
    }
    async fn remove_cert(&self, _domain: &str) -> Result<()> {
        Ok(())
    }
    /// The domains that have a certificate in the proxy now.
    async fn cert_domains(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// The proxies on other nodes and whether each is in date (none
    /// without `--proxy-peer`).
    fn peers(&self) -> Vec<crate::proxy_peers::PeerStatus> {
        Vec::new()
    }
}

/// Registries read without the engine: a reference checked and resolved to
/// its digest, or a typed reason why not.
#[async_trait::async_trait]
pub trait Registries: Send + Sync {
    async fn preflight(
        &self,
        image: &ImageRef,
        credential: Option<&Credential>,
    ) -> Result<String, RegistryError>;
}

/// The real registries, over the OCI distribution API.
pub struct OciRegistries;

#[async_trait::async_trait]
impl Registries for OciRegistries {
    async fn preflight(
        &self,
        image: &ImageRef,
        credential: Option<&Credential>,
    ) -> Result<String, RegistryError> {
        crate::registry::preflight(image, credential).await
    }
}

/// How a container's health is checked.
#[async_trait::async_trait]
pub trait HealthProbe: Send + Sync {
    async fn check(&self, addr: &str, path: Option<&str>, timeout: Duration) -> Probe;
}

#[async_trait::async_trait]
impl Containers for Runtime {
    fn network(&self) -> &str {
        Runtime::network(self)
    }
    fn upstream(&self) -> UpstreamMode {
        Runtime::upstream(self)
    }
    fn upstream_addr(&self, state: &ContainerState, port: u16) -> Option<String> {
        Runtime::upstream_addr(self, state, port)
    }
    async fn pull(&self, image: &ImageRef, credentials: Option<(String, String)>) -> Result<()> {
        Runtime::pull(self, image, credentials).await
    }
    async fn image_digest(&self, image: &ImageRef) -> Result<Option<String>> {
        Runtime::image_digest(self, image).await
    }
    async fn has_image(&self, reference: &str) -> bool {
        Runtime::has_image(self, reference).await
    }
    async fn start(&self, spec: &ContainerSpec) -> Result<String> {
        Runtime::start(self, spec).await
    }
    async fn state(&self, id: &str) -> Result<Option<ContainerState>> {
        Runtime::state(self, id).await
    }
    async fn listening_ports(&self, id: &str) -> Vec<u16> {
        Runtime::listening_ports(self, id).await
    }
    async fn memory_limit(&self, id: &str) -> Option<u64> {
        Runtime::memory_limit(self, id).await
    }
    async fn logs_tail(&self, id: &str, lines: usize) -> String {
        Runtime::logs_tail(self, id, lines).await
    }
    async fn stop(&self, id: &str, timeout_secs: u64) -> Result<()> {
        Runtime::stop(self, id, timeout_secs).await
    }
    async fn start_existing(&self, id: &str) -> Result<()> {
        Runtime::start_existing(self, id).await
    }
    async fn remove(&self, id: &str) -> Result<()> {
        Runtime::remove(self, id).await
    }
    async fn list(&self, app: Option<&str>) -> Result<Vec<LabeledContainer>> {
        Runtime::list(self, app).await
    }
    async fn forget_app(&self, app: &str) {
        Runtime::forget_app(self, app).await
    }
    async fn build_image(
        &self,
        spec: crate::runtime::BuildSpec,
        log: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<String> {
        Runtime::build_image(self, spec, log).await
    }
    async fn remove_image(&self, reference: &str) -> Result<()> {
        Runtime::remove_image(self, reference).await
    }
    fn log_lines(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
        since: Option<i64>,
    ) -> BoxStream<'static, String> {
        Box::pin(Runtime::log_lines(self, id, follow, tail, since))
    }
    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>> {
        Box::pin(Runtime::events(self))
    }
    async fn run_attached(
        &self,
        spec: &ContainerSpec,
        one_off: &OneOff,
        size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        Runtime::run_attached(self, spec, one_off, size).await
    }
    async fn wait_exit(&self, id: &str) -> Result<i64> {
        Runtime::wait_exit(self, id).await
    }
    async fn exec_attached(
        &self,
        container: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        Runtime::exec_attached(self, container, cmd, tty, stdin, size).await
    }
    async fn exec_exit(&self, exec_id: &str) -> Result<Option<i64>> {
        Runtime::exec_exit(self, exec_id).await
    }
    async fn list_runs(&self) -> Result<Vec<String>> {
        Runtime::list_runs(self).await
    }
}

/// Replicas as Swarm services; images, builds and one-off commands on the
/// manager's own engine.
#[async_trait::async_trait]
impl Containers for Swarm {
    fn network(&self) -> &str {
        self.host().network()
    }
    fn upstream(&self) -> UpstreamMode {
        UpstreamMode::Published
    }
    fn upstream_addr(&self, state: &ContainerState, port: u16) -> Option<String> {
        Swarm::upstream_addr(state, port)
    }
    async fn pull(&self, image: &ImageRef, credentials: Option<(String, String)>) -> Result<()> {
        Swarm::pull(self, image, credentials).await
    }
    async fn image_digest(&self, image: &ImageRef) -> Result<Option<String>> {
        self.host().image_digest(image).await
    }
    async fn has_image(&self, reference: &str) -> bool {
        self.host().has_image(reference).await
    }
    async fn start(&self, spec: &ContainerSpec) -> Result<String> {
        Swarm::start(self, spec).await
    }
    async fn state(&self, id: &str) -> Result<Option<ContainerState>> {
        Swarm::state(self, id).await
    }
    async fn listening_ports(&self, id: &str) -> Vec<u16> {
        Swarm::listening_ports(self, id).await
    }
    async fn memory_limit(&self, id: &str) -> Option<u64> {
        Swarm::memory_limit(self, id).await
    }
    async fn logs_tail(&self, id: &str, lines: usize) -> String {
        Swarm::logs_tail(self, id, lines).await
    }
    async fn stop(&self, id: &str, timeout_secs: u64) -> Result<()> {
        Swarm::stop(self, id, timeout_secs).await
    }
    async fn start_existing(&self, id: &str) -> Result<()> {
        Swarm::start_existing(self, id).await
    }
    async fn remove(&self, id: &str) -> Result<()> {
        Swarm::remove(self, id).await
    }
    async fn list(&self, app: Option<&str>) -> Result<Vec<LabeledContainer>> {
        Swarm::list(self, app).await
    }
    async fn forget_app(&self, app: &str) {
        Swarm::forget_app(self, app).await
    }
    async fn tasks(&self, id: &str) -> Vec<SwarmTask> {
        Swarm::task_reports(self, id).await
    }
    fn ended_tasks(&self, app: &str, deploy: &str) -> Vec<SwarmTask> {
        Swarm::ended_tasks(self, app, deploy)
    }
    fn log_lines(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
        since: Option<i64>,
    ) -> BoxStream<'static, String> {
        Box::pin(Swarm::log_lines(self, id, follow, tail, since))
    }
    fn events(&self) -> BoxStream<'static, Result<ContainerEvent>> {
        Box::pin(Swarm::events(self))
    }
    async fn build_image(
        &self,
        spec: crate::runtime::BuildSpec,
        log: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<String> {
        self.host().build_image(spec, log).await
    }
    async fn remove_image(&self, reference: &str) -> Result<()> {
        self.host().remove_image(reference).await
    }
    async fn run_attached(
        &self,
        spec: &ContainerSpec,
        one_off: &OneOff,
        size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        self.host().run_attached(spec, one_off, size).await
    }
    async fn wait_exit(&self, id: &str) -> Result<i64> {
        self.host().wait_exit(id).await
    }
    async fn exec_attached(
        &self,
        container: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
        size: Option<(u16, u16)>,
    ) -> Result<(String, Attached)> {
        // A replica is a service: the command runs in its task's container.
        let container = self
            .local_container(container)
            .await
            .unwrap_or_else(|| container.to_string());
        self.host()
            .exec_attached(&container, cmd, tty, stdin, size)
            .await
    }
    async fn exec_exit(&self, exec_id: &str) -> Result<Option<i64>> {
        self.host().exec_exit(exec_id).await
    }
    async fn list_runs(&self) -> Result<Vec<String>> {
        self.host().list_runs().await
    }
    async fn remove_run(&self, id: &str) -> Result<()> {
        self.host().remove(id).await
    }
}

#[async_trait::async_trait]
impl Routes for ProxyLink {
    async fn set_route(&self, route: Route) -> Result<()> {
        ProxyLink::set_route(self, route).await
    }
    async fn remove_route(&self, app: &str) -> Result<()> {
        ProxyLink::remove_route(self, app).await
    }
    async fn pause(&self, app: &str, max_pause: Duration, max_queued: usize) -> Result<()> {
        ProxyLink::pause(self, app, max_pause, max_queued).await
    }
    async fn resume(&self, app: &str) -> Result<()> {
        ProxyLink::resume(self, app).await
    }
    async fn routes(&self) -> Result<Vec<Route>> {
        ProxyLink::routes(self).await
    }
    async fn wait_drained(&self, app: &str, addr: &str, timeout: Duration) -> Result<(bool, u64)> {
        ProxyLink::wait_drained(self, app, addr, timeout).await
    }
    async fn put_cert(&self, cert: TlsCert) -> Result<()> {
        Ok(self.admin().put_cert(cert).await?)
    }
    async fn remove_cert(&self, domain: &str) -> Result<()> {
        Ok(self.admin().remove_cert(domain).await?)
    }
    async fn cert_domains(&self) -> Result<Vec<String>> {
        Ok(self.admin().list_certs().await?)
    }
}

#[async_trait::async_trait]
impl HealthProbe for Prober {
    async fn check(&self, addr: &str, path: Option<&str>, timeout: Duration) -> Probe {
        Prober::check(self, addr, path, timeout).await
    }
}
