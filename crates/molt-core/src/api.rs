//! The JSON bodies of Molt's HTTP API (`/api/v1`), shared by the server that
//! produces them and the command line that reads them. Field names are part
//! of the command-line contract (`--json` prints these objects).

use crate::deploy::{AppStatus, DeployKind, DeployStatus};
use crate::health::HealthCheck;
use serde::{Deserialize, Serialize};

/// An App as the API and `molt apps show --json` present it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppView {
    pub name: String,
    pub status: AppStatus,
    /// The reference the App follows (what `redeploy` pulls again).
    pub image: String,
    /// The digest of the image that serves now, once one does.
    pub digest: Option<String>,
    /// The reference the serving deploy ran. It differs from `image` after
    /// a rollback, which runs the earlier image pinned by digest while the
    /// App keeps following `image`.
    #[serde(default)]
    pub serving_image: Option<String>,
    pub port: u16,
    pub health_path: Option<String>,
    pub health: HealthCheck,
    /// Every host routed to the App; `NAME.localhost` first.
    pub domains: Vec<String>,
    pub replicas: u32,
    pub strategy: String,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub gpus: u32,
    pub drain_timeout_secs: u64,
    /// How long the proxy waits for the App's answer before a 504.
    pub upstream_timeout_secs: u64,
    /// Plain HTTP to the App's domains is redirected to HTTPS once a
    /// certificate for the domain is in force.
    #[serde(default = "on")]
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on the App's answers over
    /// HTTPS; absent: no such header.
    #[serde(default)]
    pub hsts_max_age_secs: Option<u64>,
    /// The largest request body the proxy passes on to the App (413 past
    /// it).
    #[serde(default)]
    pub max_body_bytes: u64,
    /// An upgraded connection (WebSocket) with no byte either way for this
    /// long is closed.
    #[serde(default)]
    pub tunnel_idle_timeout_secs: u64,
    /// Swarm placement constraints (`--constraint`); a single host ignores
    /// them.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// The Apps this App can reach, by name (`--link`); no other App can be
    /// reached from its containers.
    #[serde(default)]
    pub links: Vec<String>,
    /// Capabilities added to Docker's default set, which lacks `NET_RAW`.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// The most processes (threads included) a container may run.
    #[serde(default)]
    pub pids_limit: u32,
    /// Whether the root filesystem is read-only (with a writable `/tmp`).
    #[serde(default)]
    pub read_only: bool,
    /// The deploy that put the serving version in place.
    pub current_deploy: Option<String>,
    /// The newest deploy, whatever its outcome.
    pub last_deploy: Option<DeployView>,
    pub created_at: String,
    pub updated_at: String,
    /// The serving containers, one per replica.
    #[serde(default)]
    pub containers: Vec<ContainerView>,
    /// The check in force, in words: the health path (`GET /healthz
    /// answers 2xx`), else the image's own `HEALTHCHECK`, else a TCP
    /// connect. Given by `GET /api/v1/apps/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    /// HTTPS per domain that has or wants a certificate (`*.localhost`
    /// domains without one are left out).
    #[serde(default)]
    pub https: Vec<DomainHttpsView>,
}

/// How HTTPS stands for one of an App's domains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainHttpsView {
    pub domain: String,
    /// `valid` (a certificate is in force), `ordering` (ACME at work),
    /// `failed` (the last ACME order failed; see `problem`), or `none`.
    pub state: String,
    /// The certificate's domain (a wildcard covers several) and source
    /// (`custom` or `acme`), when one is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The ACME server's problem detail of the last failed order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// When the next order is placed after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

/// One serving container of an App.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ContainerView {
    /// The replica it is, from 0 (its `molt.replica` label).
    pub replica: u32,
    /// The engine's container id.
    pub id: String,
    pub name: String,
    /// Where the proxy reaches it (`ip:port`), once known.
    pub address: Option<String>,
    /// False while autoheal keeps it out of the proxy's rotation because
    /// its health check fails.
    pub in_rotation: bool,
}

/// `POST /api/v1/apps/{name}/scale`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// How many containers should serve the App (1 to 100).
    pub replicas: u32,
}

/// One deploy; `events` is filled when a single deploy is asked for.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployView {
    pub id: String,
    pub app: String,
    pub kind: DeployKind,
    pub image: String,
    pub digest: Option<String>,
    pub status: DeployStatus,
    pub error: Option<String>,
    /// Why it failed (or was canceled): a stable `kind` and the `message`
    /// (the same text as `error`), with the facts the kind has.
    #[serde(default)]
    pub failure: Option<crate::Failure>,
    /// How it replaces the serving set: `bluegreen`, `rolling`, `recreate`
    /// or `in_place`, once chosen.
    #[serde(default)]
    pub strategy: Option<String>,
    /// Who asked for it: `cli`, `api`, `dashboard`, `autoheal`, `reconciler`.
    pub triggered_by: String,
    /// The digest that served before this deploy, when there was one.
    pub previous_digest: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<DeployEvent>,
    /// What this deploy's release changed against the deploy that served
    /// when it began (image, settings, environment; secrets by version
    /// only); given when one deploy is asked for and there was one before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<crate::release::ReleaseDiff>,
}

impl DeployView {
    /// Whether the digest differs from the one that served before, once known.
    pub fn digest_changed(&self) -> Option<bool> {
        match (&self.digest, &self.previous_digest) {
            (Some(new), Some(old)) => Some(new != old),
            _ => None,
        }
    }
}

/// A timestamped line of a deploy's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DeployEvent {
    /// Position in the timeline, from 1.
    pub seq: i64,
    pub at: String,
    /// The deploy's status when the event was recorded.
    pub status: DeployStatus,
    pub message: String,
}

/// `POST /api/v1/apps`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    pub name: String,
    /// Required unless `from` names an App to copy.
    #[serde(default)]
    pub image: String,
    /// Required unless `from` names an App to copy.
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub health_path: Option<String>,
    /// Seconds a deploy waits for the container to become healthy.
    #[serde(default)]
    pub health_timeout: Option<u64>,
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// Seconds after a container starts during which failed health checks
    /// do not count (default 0); the deploy timeout runs after it.
    #[serde(default)]
    pub start_period: Option<u64>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// `KEY=VALUE` pairs.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub gpus: Option<u32>,
    #[serde(default)]
    pub replicas: Option<u32>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub drain_timeout_secs: Option<u64>,
    /// Seconds the proxy waits for the App's answer before a 504 (default 60).
    #[serde(default)]
    pub upstream_timeout_secs: Option<u64>,
    /// Serve plain HTTP even once a certificate is in force (by default it
    /// is redirected to HTTPS).
    #[serde(default)]
    pub no_redirect: bool,
    /// Send `Strict-Transport-Security: max-age=N` over HTTPS.
    #[serde(default)]
    pub hsts_max_age_secs: Option<u64>,
    /// The largest request body passed on, e.g. `10m` (default 100 MiB).
    #[serde(default)]
    pub max_body: Option<String>,
    /// Seconds a WebSocket may stay silent before it is closed (default
    /// 300).
    #[serde(default)]
    pub tunnel_idle_timeout_secs: Option<u64>,
    /// Copy the configuration of this App (a template); fields given here
    /// override the copied ones. Domains are not copied.
    #[serde(default)]
    pub from: Option<String>,
    /// With `from`: copy secret variables too.
    #[serde(default)]
    pub with_secrets: bool,
    /// Apps this App may reach (by name); their containers' network is
    /// joined. Every other App is unreachable.
    #[serde(default)]
    pub links: Vec<String>,
    /// Capabilities to add to Docker's default set (which Molt gives
    /// without `NET_RAW`), e.g. `NET_RAW`.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// The most processes a container may run (default 1024).
    #[serde(default)]
    pub pids_limit: Option<u32>,
    /// A read-only root filesystem, with a writable tmpfs at `/tmp`.
    #[serde(default)]
    pub read_only: bool,
    /// Swarm placement constraints, e.g. `node.labels.gpu==true`.
    #[serde(default)]
    pub constraints: Vec<String>,
}

/// `PATCH /api/v1/apps/{name}`: the settings to change; what is left out
/// stays as it is. A change of port, health check, resources or replicas
/// runs as a `config` deploy through the health-checked swap; a change of
/// domains, timeouts or strategy only is a `config` deploy that starts no
/// container and moves the route at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppRequest {
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub health_path: Option<String>,
    /// Check with a TCP connect instead of an HTTP path.
    #[serde(default)]
    pub no_health_path: bool,
    /// Seconds a deploy waits for the container to become healthy.
    #[serde(default)]
    pub health_timeout: Option<u64>,
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// Seconds after start during which failed health checks do not count.
    #[serde(default)]
    pub start_period: Option<u64>,
    /// e.g. `512m`, `2g`.
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub gpus: Option<u32>,
    #[serde(default)]
    pub add_domains: Vec<String>,
    #[serde(default)]
    pub remove_domains: Vec<String>,
    #[serde(default)]
    pub drain_timeout_secs: Option<u64>,
    #[serde(default)]
    pub upstream_timeout_secs: Option<u64>,
    /// `false`: plain HTTP is served even once a certificate is in force;
    /// `true`: it is redirected to HTTPS (the default).
    #[serde(default)]
    pub https_redirect: Option<bool>,
    /// HSTS max-age in seconds; 0 sends no HSTS header.
    #[serde(default)]
    pub hsts_max_age_secs: Option<u64>,
    /// The largest request body passed on, e.g. `10m`.
    #[serde(default)]
    pub max_body: Option<String>,
    /// Seconds a WebSocket may stay silent before it is closed.
    #[serde(default)]
    pub tunnel_idle_timeout_secs: Option<u64>,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Replaces the Swarm placement constraints.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Removes every placement constraint.
    #[serde(default)]
    pub no_constraints: bool,
    /// Go ahead when the new settings do not fit beside the serving version
    /// and the change must stop it first (a recreate, requests held);
    /// without it such a change is refused with `recreate_needs_yes`.
    #[serde(default)]
    pub yes: bool,
}

impl UpdateAppRequest {
    /// Whether the request names any setting at all.
    pub fn is_empty(&self) -> bool {
        self.port.is_none()
            && self.health_path.is_none()
            && !self.no_health_path
            && self.health_timeout.is_none()
            && self.health_interval_ms.is_none()
            && self.start_period.is_none()
            && self.memory.is_none()
            && self.cpus.is_none()
            && self.gpus.is_none()
            && self.add_domains.is_empty()
            && self.remove_domains.is_empty()
            && self.drain_timeout_secs.is_none()
            && self.upstream_timeout_secs.is_none()
            && self.https_redirect.is_none()
            && self.hsts_max_age_secs.is_none()
            && self.max_body.is_none()
            && self.tunnel_idle_timeout_secs.is_none()
            && self.strategy.is_none()
            && self.replicas.is_none()
            && self.constraints.is_empty()
            && !self.no_constraints
    }
}

/// The answer to a request that started a deploy.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployStarted {
    pub app: AppView,
    pub deploy: DeployView,
}

/// `POST /api/v1/apps/{name}/deploys`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub image: String,
}

/// `POST /api/v1/registries`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRegistryRequest {
    pub host: String,
    pub username: String,
    pub password: String,
}

/// Registers a release built elsewhere (`POST /api/v1/apps/{name}/releases`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterReleaseRequest {
    /// The pushed image, best by digest: `HOST/REPO@sha256:...`.
    pub image: String,
}

/// Asks for a push target (`POST /api/v1/apps/{name}/push-target`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushTargetRequest {
    /// How long the credential works, in seconds (default 900, at most a
    /// day).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// Where an external build pushes an App's image: Molt's own registry, with
/// a credential for that App's repository alone, shown once, that expires.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushTarget {
    /// `HOST:PORT` of the registry (for `docker login`).
    pub registry: String,
    /// `HOST:PORT/APP`: tag the image with it.
    pub repository: String,
    pub username: String,
    pub password: String,
    pub expires_in_secs: u64,
}

/// A registry credential as shown: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryView {
    pub host: String,
    pub username: String,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /api/v1/certs`: a person's own certificate for a domain.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddCertRequest {
    /// `app.example.com`, or a wildcard `*.example.com` (one label).
    pub domain: String,
    /// PEM: the certificate first, then its intermediates.
    pub cert_pem: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for AddCertRequest {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddCertRequest")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// A certificate as shown: never its key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CertView {
    pub domain: String,
    /// `custom` (added with `molt certs add`) or `acme` (ordered by Molt).
    pub source: String,
    /// The issuer's common name.
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// Whole days until it expires (negative once expired).
    pub days_left: i64,
    /// Fewer than 14 days left.
    pub expires_soon: bool,
    pub updated_at: String,
}

/// Every error the API returns: a stable code for scripts and a message
/// for people.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
    /// The deploy in progress, when the error is a conflict with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_id: Option<String>,
}

/// `POST /api/v1/apps/{name}/restart`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartRequest {
    /// Stop and start the serving container in place (brief downtime)
    /// instead of swapping to a fresh one.
    #[serde(default)]
    pub hard: bool,
}

/// `POST /api/v1/apps/{name}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The succeeded deploy to return to; default: the one before the
    /// serving one.
    #[serde(default)]
    pub deploy_id: Option<String>,
    /// Also restore that deploy's settings and environment.
    #[serde(default)]
    pub with_config: bool,
}

/// An environment variable as shown: secrets have no value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EnvVarView {
    pub key: String,
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One variable to set.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSet {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

/// `PATCH /api/v1/apps/{name}/env`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvChangeRequest {
    #[serde(default)]
    pub set: Vec<EnvSet>,
    #[serde(default)]
    pub unset: Vec<String>,
    /// Redeploy the serving digest with the new environment at once.
    #[serde(default)]
    pub apply: bool,
}

/// The answer to an environment change.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvChanged {
    pub env: Vec<EnvVarView>,
    /// The `config` deploy started by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployView>,
}

/// `GET /api/v1/apps/{name}/debug`: what is wrong with an App, each finding
/// with a hint.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DebugReport {
    pub app: String,
    pub status: AppStatus,
    /// The digest serving now, if any.
    pub serving_digest: Option<String>,
    /// The latest failed deploy, when it is newer than the serving one.
    pub failed_deploy: Option<DeployView>,
    /// Empty when nothing looks wrong.
    pub findings: Vec<Finding>,
    /// On a swarm, what Swarm says about the tasks of the App's serving
    /// services and of the latest failed deploy's; absent on a single host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swarm_tasks: Vec<SwarmTask>,
}

/// One Swarm task of a replica's service, as Swarm reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SwarmTask {
    /// The deploy whose replica the task runs.
    pub deploy: String,
    pub replica: Option<u32>,
    /// The node's hostname (else its id); `None` while no node took it.
    pub node: Option<String>,
    /// What Swarm wants of the task (`running`, `shutdown`).
    pub desired_state: String,
    /// Where the task is (`pending`, `running`, `failed`, `rejected`, ...).
    pub state: String,
    /// Swarm's error, e.g. "no suitable node (scheduling constraints not
    /// satisfied on 1 node)" or an image pull that failed on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Swarm's status message ("pending task scheduling", "started").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One diagnosis.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Finding {
    /// A stable kind: `image_not_found`, `registry_unauthorized`,
    /// `registry_unreachable`, `crash`, `crash_loop`, `oom_killed`,
    /// `health_check_failing`, `image_healthcheck_failing`, `port_mismatch`,
    /// `deploy_timeout`, `other`.
    pub kind: String,
    pub summary: String,
    /// Evidence: exit code and last output, health result, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub hint: String,
}

/// How to build (`POST /api/v1/apps/{name}/builds`, as JSON in the
/// `X-Molt-Build` header; the body is the context as a tar stream).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildOptions {
    /// The Dockerfile's path inside the context (default `Dockerfile`).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// `KEY=VALUE` each.
    #[serde(default)]
    pub build_args: Vec<String>,
    /// The Git ref the context was made from, when it was (for the record).
    #[serde(default)]
    pub git_ref: Option<String>,
}

/// A build from source and, once it succeeded, the release it made.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BuildView {
    pub id: String,
    pub app: String,
    /// `building`, `succeeded` or `failed`.
    pub status: String,
    /// `directory`, or `git REF`.
    pub source: String,
    pub dockerfile: String,
    /// The tag of the image on the server's host.
    pub image: String,
    /// The image's id, once built.
    pub digest: Option<String>,
    /// The release it made, once it succeeded.
    pub release: Option<String>,
    pub error: Option<String>,
    /// The step that failed and its output.
    pub failed_step: Option<String>,
    /// The builder's output from line `after` on (`?after=N`).
    #[serde(default)]
    pub log: Vec<String>,
    /// How many lines of output there are so far: ask `?after=` this next.
    pub log_lines: usize,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// A release of an App: what `molt releases promote` runs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseView {
    pub id: String,
    pub app: String,
    /// The build that made it.
    pub build: Option<String>,
    pub image: String,
    pub digest: String,
    pub created_at: String,
    /// Whether the App serves it now.
    pub serving: bool,
}

/// Serde's default for settings that are on unless said otherwise.
fn on() -> bool {
    true
}
