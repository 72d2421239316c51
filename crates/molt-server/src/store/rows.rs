//! The rows the store reads and writes, and how they are read.

use super::*;

/// An App as stored.
#[derive(Debug, Clone)]
pub struct AppRow {
    pub name: String,
    pub status: AppStatus,
    pub image: String,
    pub port: u16,
    pub health: HealthCheck,
    /// Domains added by the user; `NAME.localhost` is implied.
    pub domains: Vec<String>,
    pub replicas: u32,
    pub strategy: String,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub gpus: u32,
    pub drain_timeout_secs: u64,
    /// How long the proxy waits for the App's answer before a 504.
    pub upstream_timeout_secs: u64,
    /// Plain HTTP is redirected to HTTPS once a certificate is in force.
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on answers over HTTPS.
    pub hsts_max_age_secs: Option<u64>,
    /// The largest request body passed on (413 past it); `None`: the
    /// proxy's default, 100 MiB.
    pub max_body_bytes: Option<u64>,
    /// An upgraded connection silent this long is closed; `None`: the
    /// proxy's default, 5 minutes.
    pub tunnel_idle_timeout_secs: Option<u64>,
    /// Swarm placement constraints (`--constraint`), e.g.
    /// `node.labels.gpu==true`.
    pub constraints: Vec<String>,
    /// Apps whose network this App's containers join (`--link`): the only
    /// other Apps they can reach.
    pub links: Vec<String>,
    /// Capabilities added to Docker's default set (`--cap-add`).
    pub cap_add: Vec<String>,
    /// The process-count limit; `None`: `confine::DEFAULT_PIDS_LIMIT`.
    pub pids_limit: Option<u32>,
    /// A read-only root filesystem, with a tmpfs at `/tmp`.
    pub read_only: bool,
    pub current_deploy: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl AppRow {
    /// An App with only a name and the defaults of a new one (capacity
    /// checks before it exists, tests).
    pub fn named(name: &str) -> Self {
        Self {
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
            https_redirect: true,
            hsts_max_age_secs: None,
            max_body_bytes: None,
            tunnel_idle_timeout_secs: None,
            constraints: Vec::new(),
            links: Vec::new(),
            cap_add: Vec::new(),
            pids_limit: None,
            read_only: false,
            current_deploy: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// Every host the proxy routes to this App.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = vec![format!("{}.localhost", self.name)];
        hosts.extend(self.domains.iter().cloned());
        hosts
    }
}

/// The settings of an App that `molt apps update` can change. A `config`
/// deploy carries the new ones and they become the App's in the same
/// transaction as its swap, so a deploy that fails changes nothing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AppSettings {
    pub port: u16,
    pub health: HealthCheck,
    pub domains: Vec<String>,
    pub replicas: u32,
    pub strategy: String,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub gpus: u32,
    pub drain_timeout_secs: u64,
    pub upstream_timeout_secs: u64,
    /// Absent from settings recorded before it existed: on.
    #[serde(default = "redirect_by_default")]
    pub https_redirect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts_max_age_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_idle_timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
}

fn redirect_by_default() -> bool {
    true
}

impl AppSettings {
    pub fn of(app: &AppRow) -> Self {
        Self {
            port: app.port,
            health: app.health.clone(),
            domains: app.domains.clone(),
            replicas: app.replicas,
            strategy: app.strategy.clone(),
            memory_bytes: app.memory_bytes,
            cpus: app.cpus,
            gpus: app.gpus,
            drain_timeout_secs: app.drain_timeout_secs,
            upstream_timeout_secs: app.upstream_timeout_secs,
            https_redirect: app.https_redirect,
            hsts_max_age_secs: app.hsts_max_age_secs,
            max_body_bytes: app.max_body_bytes,
            tunnel_idle_timeout_secs: app.tunnel_idle_timeout_secs,
            constraints: app.constraints.clone(),
        }
    }

    /// `app` with these settings.
    pub fn apply_to(&self, app: &AppRow) -> AppRow {
        AppRow {
            port: self.port,
            health: self.health.clone(),
            domains: self.domains.clone(),
            replicas: self.replicas,
            strategy: self.strategy.clone(),
            memory_bytes: self.memory_bytes,
            cpus: self.cpus,
            gpus: self.gpus,
            drain_timeout_secs: self.drain_timeout_secs,
            upstream_timeout_secs: self.upstream_timeout_secs,
            https_redirect: self.https_redirect,
            hsts_max_age_secs: self.hsts_max_age_secs,
            max_body_bytes: self.max_body_bytes,
            tunnel_idle_timeout_secs: self.tunnel_idle_timeout_secs,
            constraints: self.constraints.clone(),
            ..app.clone()
        }
    }
}

/// A deploy as stored.
#[derive(Debug, Clone)]
pub struct DeployRow {
    pub id: String,
    pub app: String,
    pub kind: DeployKind,
    pub image: String,
    pub digest: Option<String>,
    pub status: DeployStatus,
    pub error: Option<String>,
    pub triggered_by: String,
    pub previous_deploy: Option<String>,
    pub previous_digest: Option<String>,
    /// How many containers the deploy runs when it is done: the App's
    /// replicas, or the new count of a scale.
    pub replicas: u32,
    /// The environment this deploy runs with (secrets stay sealed).
    pub env: Vec<EnvEntry>,
    /// Why it failed, when it did (`error` is its message).
    pub failure: Option<Failure>,
    /// How it replaces the serving set (`bluegreen`, `rolling`,
    /// `recreate`, `in_place`), once chosen.
    pub strategy: Option<String>,
    /// A recreate's phase: 1 while the old set stops, 2 while the new one
    /// starts.
    pub phase: Option<u32>,
    /// The App's new settings, for a `config` deploy that changes them
    /// (`molt apps update`); the App takes them when the swap is recorded.
    pub settings: Option<AppSettings>,
    /// The App's whole settings as this deploy runs them: with `image`,
    /// `digest` and `env`, the release it runs (see `crate::release`).
    /// `None` for deploys recorded before releases were.
    pub config: Option<AppSettings>,
    /// The built release it promotes (`molt releases promote`), if any.
    pub release: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// One container of a deploy: which replica it is and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub deploy_id: String,
    /// 0-based; also the container's `molt.replica` label.
    pub replica: u32,
    pub container_id: String,
    pub container_name: String,
    /// `ip:port` on Molt's network, once known; it can change when the
    /// engine restarts the container.
    pub addr: Option<String>,
}

/// What a replica is to the deploy whose row it is: a serving container
/// kept from the version before, a container the deploy started, or one
/// of those that already took its place in the route (a rolling deploy
/// moves them one by one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaRole {
    Kept,
    New,
    Routed,
}

impl ReplicaRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::New => "new",
            Self::Routed => "routed",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "kept" => Some(Self::Kept),
            "new" => Some(Self::New),
            "routed" => Some(Self::Routed),
            _ => None,
        }
    }
}

/// One environment variable of an App. A secret has no `value`, only its
/// `sealed` bytes (base64 in JSON snapshots).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnvEntry {
    pub key: String,
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "sealed_b64")]
    pub sealed: Option<Vec<u8>>,
}

mod sealed_b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        raw.map(|r| {
            base64::engine::general_purpose::STANDARD
                .decode(r)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub at: String,
    pub status: DeployStatus,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct RegistryRow {
    pub host: String,
    pub username: String,
    pub secret_sealed: Vec<u8>,
    pub created_at: String,
    pub updated_at: String,
}

pub(super) fn app_from_row(r: &Row) -> rusqlite::Result<AppRow> {
    let status: String = r.get("status")?;
    Ok(AppRow {
        name: r.get("name")?,
        status: status.parse().unwrap_or(AppStatus::Failed),
        image: r.get("image")?,
        port: r.get("port")?,
        health: json_col(r, "health")?,
        domains: json_col(r, "domains")?,
        replicas: r.get("replicas")?,
        strategy: r.get("strategy")?,
        memory_bytes: r.get::<_, Option<i64>>("memory_bytes")?.map(|m| m as u64),
        cpus: r.get("cpus")?,
        gpus: r.get("gpus")?,
        drain_timeout_secs: r.get::<_, i64>("drain_timeout_secs")? as u64,
        upstream_timeout_secs: r.get::<_, i64>("upstream_timeout_secs")? as u64,
        https_redirect: r.get("https_redirect")?,
        hsts_max_age_secs: r
            .get::<_, Option<i64>>("hsts_max_age_secs")?
            .map(|s| s as u64),
        max_body_bytes: r.get::<_, Option<i64>>("max_body_bytes")?.map(|b| b as u64),
        tunnel_idle_timeout_secs: r
            .get::<_, Option<i64>>("tunnel_idle_timeout_secs")?
            .map(|s| s as u64),
        constraints: json_col(r, "constraints")?,
        links: json_col(r, "links")?,
        cap_add: json_col(r, "cap_add")?,
        pids_limit: r.get("pids_limit")?,
        read_only: r.get("read_only")?,
        current_deploy: r.get("current_deploy")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

pub(super) fn deploy_from_row(r: &Row) -> rusqlite::Result<DeployRow> {
    let kind: String = r.get("kind")?;
    let status: String = r.get("status")?;
    Ok(DeployRow {
        id: r.get("id")?,
        app: r.get("app")?,
        kind: kind.parse().unwrap_or(DeployKind::Deploy),
        image: r.get("image")?,
        digest: r.get("digest")?,
        status: status.parse().unwrap_or(DeployStatus::Failed),
        error: r.get("error")?,
        triggered_by: r.get("triggered_by")?,
        previous_deploy: r.get("previous_deploy")?,
        previous_digest: r.get("previous_digest")?,
        replicas: r.get("replicas")?,
        env: json_col(r, "env_snapshot")?,
        created_at: r.get("created_at")?,
        finished_at: r.get("finished_at")?,
        failure: r
            .get::<_, Option<String>>("failure")?
            .and_then(|f| serde_json::from_str(&f).ok()),
        strategy: r.get("strategy")?,
        phase: r.get("phase")?,
        settings: r
            .get::<_, Option<String>>("settings")?
            .and_then(|s| serde_json::from_str(&s).ok()),
        config: r
            .get::<_, Option<String>>("config")?
            .and_then(|s| serde_json::from_str(&s).ok()),
        release: r.get("release")?,
    })
}

pub(super) fn registry_from_row(r: &Row) -> rusqlite::Result<RegistryRow> {
    Ok(RegistryRow {
        host: r.get("host")?,
        username: r.get("username")?,
        secret_sealed: r.get("secret_sealed")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}
