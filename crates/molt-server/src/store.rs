//! The state store: one SQLite file in WAL mode with `synchronous=FULL`, so
//! a record written before a step survives a crash right after it. Every
//! change that spans rows runs in one transaction.

use crate::feed::Feed;
use anyhow::{Context, Result};
use molt_core::health::HealthCheck;
use molt_core::{AppStatus, DeployKind, DeployStatus, Failure};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Deploys kept per App unless `molt server --keep-deploys` says otherwise.
pub const DEFAULT_KEEP_DEPLOYS: usize = 50;

/// Succeeded deploys of a version (not a scale, digest recorded) kept per
/// App however old, so that `molt rollback` always has somewhere to go.
pub const KEEP_ROLLBACK_TARGETS: usize = 5;

/// Schema steps, applied in order; `PRAGMA user_version` counts those done.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    image TEXT NOT NULL,
    port INTEGER NOT NULL,
    health TEXT NOT NULL,
    domains TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    memory_bytes INTEGER,
    cpus REAL,
    gpus INTEGER NOT NULL,
    drain_timeout_secs INTEGER NOT NULL,
    current_deploy TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE deploys (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    kind TEXT NOT NULL,
    image TEXT NOT NULL,
    digest TEXT,
    status TEXT NOT NULL,
    error TEXT,
    triggered_by TEXT NOT NULL,
    previous_deploy TEXT,
    previous_digest TEXT,
    container_id TEXT,
    container_name TEXT,
    target_addr TEXT,
    env_snapshot TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX deploys_by_app ON deploys (app, n);
CREATE TABLE deploy_events (
    deploy_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (deploy_id, seq)
);
CREATE TABLE env (
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    secret INTEGER NOT NULL,
    value TEXT,
    sealed BLOB,
    PRIMARY KEY (app, key)
);
CREATE TABLE registries (
    host TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    secret_sealed BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
    // Replicas: a deploy runs several containers, so they move to a table of
    // their own, one row per replica. A deploy's rows describe its whole set
    // (containers it kept from the version before included), so the serving
    // set is always the rows of the App's current deploy.
    r#"
CREATE TABLE deploy_containers (
    deploy_id TEXT NOT NULL,
    replica INTEGER NOT NULL,
    container_id TEXT NOT NULL,
    container_name TEXT NOT NULL,
    addr TEXT,
    PRIMARY KEY (deploy_id, replica)
);
INSERT INTO deploy_containers (deploy_id, replica, container_id, container_name, addr)
    SELECT id, 0, container_id, COALESCE(container_name, ''), target_addr
    FROM deploys WHERE container_id IS NOT NULL;
ALTER TABLE deploys DROP COLUMN container_id;
ALTER TABLE deploys DROP COLUMN container_name;
ALTER TABLE deploys DROP COLUMN target_addr;
ALTER TABLE deploys ADD COLUMN replicas INTEGER NOT NULL DEFAULT 1;
"#,
    // Per-App upstream timeout: how long the proxy waits for an answer.
    r#"
ALTER TABLE apps ADD COLUMN upstream_timeout_secs INTEGER NOT NULL DEFAULT 60;
"#,
    // Typed failures (JSON of `molt_core::Failure`), and a deploy's
    // progress as data: its strategy, a recreate's phase, and each
    // replica's role, so a restarted server reads where a deploy was.
    r#"
ALTER TABLE deploys ADD COLUMN failure TEXT;
ALTER TABLE deploys ADD COLUMN strategy TEXT;
ALTER TABLE deploys ADD COLUMN phase INTEGER;
ALTER TABLE deploy_containers ADD COLUMN role TEXT;
"#,
    // Dashboard login links already used (by a hash of the token), kept
    // until they expire so a link works once even across restarts.
    r#"
CREATE TABLE used_links (token_hash TEXT PRIMARY KEY, expires INTEGER NOT NULL);
"#,
    // Confinement: the Apps an App may reach (JSON list of names), the
    // capabilities it adds back, its process-count limit (NULL: the
    // default) and whether its root filesystem is read-only.
    r#"
ALTER TABLE apps ADD COLUMN links TEXT NOT NULL DEFAULT '[]';
ALTER TABLE apps ADD COLUMN cap_add TEXT NOT NULL DEFAULT '[]';
ALTER TABLE apps ADD COLUMN pids_limit INTEGER;
ALTER TABLE apps ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;
"#,
    // The settings a `config` deploy brings (JSON `AppSettings`), applied
    // to the App only when its swap is recorded.
    r#"
ALTER TABLE deploys ADD COLUMN settings TEXT;
"#,
];

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

    fn parse(s: &str) -> Option<Self> {
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

pub struct Store {
    conn: Mutex<Connection>,
    /// Announces committed deploy changes to live views.
    feed: Feed,
    /// How many deploys per App `finish_deploy` keeps (see `prune_history`).
    keep_deploys: AtomicUsize,
}

/// Now, as RFC 3339 in UTC with milliseconds.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let store = Self {
            conn: Mutex::new(conn),
            feed: Feed::default(),
            keep_deploys: AtomicUsize::new(DEFAULT_KEEP_DEPLOYS),
        };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn();
        let done: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)
                .with_context(|| format!("database migration {} failed", i + 1))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ---- apps ----

    /// Creates an App and its first deploy together, so that no App exists
    /// without the deploy that brings it up.
    pub fn create_app(&self, app: &AppRow, env: &[EnvEntry], deploy: &DeployRow) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO apps (name, status, image, port, health, domains, replicas, strategy,
                memory_bytes, cpus, gpus, drain_timeout_secs, current_deploy, created_at, updated_at,
                upstream_timeout_secs, links, cap_add, pids_limit, read_only)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?17, ?18, ?19, ?20)",
            params![
                app.name,
                app.status.as_str(),
                app.image,
                app.port,
                serde_json::to_string(&app.health)?,
                serde_json::to_string(&app.domains)?,
                app.replicas,
                app.strategy,
                app.memory_bytes.map(|m| m as i64),
                app.cpus,
                app.gpus,
                app.drain_timeout_secs as i64,
                app.current_deploy,
                app.created_at,
                app.updated_at,
                app.upstream_timeout_secs as i64,
                serde_json::to_string(&app.links)?,
                serde_json::to_string(&app.cap_add)?,
                app.pids_limit,
                app.read_only,
            ],
        )?;
        for e in env {
            put_env(&tx, &app.name, e)?;
        }
        insert_deploy(&tx, deploy)?;
        tx.commit()?;
        self.feed.announce(&deploy.app, &deploy.id);
        Ok(())
    }

    pub fn get_app(&self, name: &str) -> Result<Option<AppRow>> {
        Ok(self
            .conn()
            .query_row("SELECT * FROM apps WHERE name = ?", [name], app_from_row)
            .optional()?)
    }

    pub fn list_apps(&self) -> Result<Vec<AppRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM apps ORDER BY name")?;
        let rows = stmt.query_map([], app_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_app_status(&self, name: &str, status: AppStatus) -> Result<()> {
        self.conn().execute(
            "UPDATE apps SET status = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, status.as_str(), now()],
        )?;
        Ok(())
    }

    pub fn set_app_image(&self, name: &str, image: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE apps SET image = ?2, updated_at = ?3 WHERE name = ?1",
            params![name, image, now()],
        )?;
        Ok(())
    }

    /// Deletes an App with its whole history.
    pub fn delete_app(&self, name: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM deploy_events WHERE deploy_id IN (SELECT id FROM deploys WHERE app = ?)",
            [name],
        )?;
        tx.execute(
            "DELETE FROM deploy_containers WHERE deploy_id IN (SELECT id FROM deploys WHERE app = ?)",
            [name],
        )?;
        tx.execute("DELETE FROM deploys WHERE app = ?", [name])?;
        tx.execute("DELETE FROM env WHERE app = ?", [name])?;
        tx.execute("DELETE FROM apps WHERE name = ?", [name])?;
        tx.commit()?;
        Ok(())
    }

    // ---- deploys ----

    /// Records a new deploy and marks its App as deploying.
    pub fn start_deploy(&self, deploy: &DeployRow) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_deploy(&tx, deploy)?;
        tx.execute(
            "UPDATE apps SET status = 'deploying', updated_at = ?2 WHERE name = ?1",
            params![deploy.app, now()],
        )?;
        tx.commit()?;
        self.feed.announce(&deploy.app, &deploy.id);
        Ok(())
    }

    pub fn get_deploy(&self, id: &str) -> Result<Option<DeployRow>> {
        Ok(self
            .conn()
            .query_row("SELECT * FROM deploys WHERE id = ?", [id], deploy_from_row)
            .optional()?)
    }

    /// An App's deploys, newest first.
    pub fn list_deploys(&self, app: &str) -> Result<Vec<DeployRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM deploys WHERE app = ? ORDER BY n DESC")?;
        let rows = stmt.query_map([app], deploy_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn latest_deploy(&self, app: &str) -> Result<Option<DeployRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM deploys WHERE app = ? ORDER BY n DESC LIMIT 1",
                [app],
                deploy_from_row,
            )
            .optional()?)
    }

    /// Deploys that were running when the server last stopped.
    pub fn unfinished_deploys(&self) -> Result<Vec<DeployRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT * FROM deploys WHERE status NOT IN ('succeeded', 'failed', 'canceled') ORDER BY n",
        )?;
        let rows = stmt.query_map([], deploy_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves a deploy to `status` and adds the event that says why, together.
    /// A step the state machine of `molt_core::deploy` does not allow is
    /// refused and changes nothing.
    pub fn advance(&self, id: &str, status: DeployStatus, message: &str) -> Result<EventRow> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        check_transition(&tx, id, status)?;
        tx.execute(
            "UPDATE deploys SET status = ?2 WHERE id = ?1",
            params![id, status.as_str()],
        )?;
        let event = insert_event(&tx, id, status, message)?;
        tx.commit()?;
        self.announce(&conn, id);
        Ok(event)
    }

    /// Adds an event to a deploy's timeline without changing its status.
    pub fn event(&self, id: &str, message: &str) -> Result<EventRow> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let status: String =
            tx.query_row("SELECT status FROM deploys WHERE id = ?", [id], |r| {
                r.get(0)
            })?;
        let status = status.parse().unwrap_or(DeployStatus::Pending);
        let event = insert_event(&tx, id, status, message)?;
        tx.commit()?;
        self.announce(&conn, id);
        Ok(event)
    }

    /// Runs SQL on the store's own connection: tests install faults with it
    /// (a temporary trigger that makes a write fail, as a full disk would).
    #[cfg(test)]
    pub fn execute_for_test(&self, sql: &str) -> Result<()> {
        self.conn().execute_batch(sql)?;
        Ok(())
    }

    /// Records a recreate's phase.
    pub fn set_deploy_phase(&self, id: &str, phase: u32) -> Result<()> {
        self.conn().execute(
            "UPDATE deploys SET phase = ?2 WHERE id = ?1",
            params![id, phase],
        )?;
        Ok(())
    }

    /// Records what one replica of a deploy is to it (see `ReplicaRole`).
    pub fn set_replica_role(&self, deploy_id: &str, replica: u32, role: ReplicaRole) -> Result<()> {
        self.conn().execute(
            "UPDATE deploy_containers SET role = ?3 WHERE deploy_id = ?1 AND replica = ?2",
            params![deploy_id, replica, role.as_str()],
        )?;
        Ok(())
    }

    /// The recorded role of each replica of a deploy.
    pub fn replica_roles(&self, deploy_id: &str) -> Result<Vec<(u32, Option<ReplicaRole>)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT replica, role FROM deploy_containers WHERE deploy_id = ? ORDER BY replica",
        )?;
        let rows = stmt.query_map([deploy_id], |r| {
            let role: Option<String> = r.get(1)?;
            Ok((r.get(0)?, role.and_then(|r| ReplicaRole::parse(&r))))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the strategy a deploy runs with.
    pub fn set_deploy_strategy(&self, id: &str, strategy: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE deploys SET strategy = ?2 WHERE id = ?1",
            params![id, strategy],
        )?;
        Ok(())
    }

    pub fn set_deploy_digest(&self, id: &str, digest: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE deploys SET digest = ?2 WHERE id = ?1",
            params![id, digest],
        )?;
        Ok(())
    }

    // ---- a deploy's containers ----

    /// Records (or replaces) one replica of a deploy.
    pub fn put_replica(&self, row: &ReplicaRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO deploy_containers (deploy_id, replica, container_id, container_name, addr)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(deploy_id, replica) DO UPDATE SET container_id = excluded.container_id,
                container_name = excluded.container_name, addr = excluded.addr",
            params![
                row.deploy_id,
                row.replica,
                row.container_id,
                row.container_name,
                row.addr
            ],
        )?;
        Ok(())
    }

    pub fn set_replica_addr(&self, deploy_id: &str, replica: u32, addr: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE deploy_containers SET addr = ?3 WHERE deploy_id = ?1 AND replica = ?2",
            params![deploy_id, replica, addr],
        )?;
        Ok(())
    }

    /// A deploy's containers, by replica.
    pub fn replicas(&self, deploy_id: &str) -> Result<Vec<ReplicaRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT deploy_id, replica, container_id, container_name, addr
             FROM deploy_containers WHERE deploy_id = ? ORDER BY replica",
        )?;
        let rows = stmt.query_map([deploy_id], |r| {
            Ok(ReplicaRow {
                deploy_id: r.get(0)?,
                replica: r.get(1)?,
                container_id: r.get(2)?,
                container_name: r.get(3)?,
                addr: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The swap, as recorded: the deploy becomes the App's serving one (its
    /// replica count the App's, and the settings it carries the App's) and
    /// moves to `draining`, in one transaction.
    pub fn record_swap(&self, id: &str, app: &str, image: &str, message: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE apps SET current_deploy = ?2, image = ?3, updated_at = ?4,
                replicas = (SELECT replicas FROM deploys WHERE id = ?2)
             WHERE name = ?1",
            params![app, id, image, now()],
        )?;
        let settings: Option<String> = tx
            .query_row("SELECT settings FROM deploys WHERE id = ?", [id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten();
        if let Some(settings) = settings {
            let s: AppSettings = serde_json::from_str(&settings)
                .with_context(|| format!("the settings recorded with deploy {id}"))?;
            tx.execute(
                "UPDATE apps SET port = ?2, health = ?3, domains = ?4, strategy = ?5,
                    memory_bytes = ?6, cpus = ?7, gpus = ?8, drain_timeout_secs = ?9,
                    upstream_timeout_secs = ?10
                 WHERE name = ?1",
                params![
                    app,
                    s.port,
                    serde_json::to_string(&s.health)?,
                    serde_json::to_string(&s.domains)?,
                    s.strategy,
                    s.memory_bytes.map(|m| m as i64),
                    s.cpus,
                    s.gpus,
                    s.drain_timeout_secs as i64,
                    s.upstream_timeout_secs as i64,
                ],
            )?;
        }
        check_transition(&tx, id, DeployStatus::Draining)?;
        tx.execute(
            "UPDATE deploys SET status = 'draining' WHERE id = ?1",
            params![id],
        )?;
        insert_event(&tx, id, DeployStatus::Draining, message)?;
        tx.commit()?;
        self.feed.announce(app, id);
        Ok(())
    }

    /// Ends a deploy (succeeded, failed or canceled) and settles its App's
    /// status, together.
    pub fn finish_deploy(
        &self,
        id: &str,
        status: DeployStatus,
        failure: Option<&Failure>,
        message: &str,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let at = now();
        check_transition(&tx, id, status)?;
        tx.execute(
            "UPDATE deploys SET status = ?2, error = ?3, finished_at = ?4, failure = ?5 WHERE id = ?1",
            params![
                id,
                status.as_str(),
                failure.map(|f| f.message.as_str()),
                at,
                failure.map(serde_json::to_string).transpose()?
            ],
        )?;
        insert_event(&tx, id, status, message)?;
        let app: String =
            tx.query_row("SELECT app FROM deploys WHERE id = ?", [id], |r| r.get(0))?;
        let serving: Option<String> = tx
            .query_row(
                "SELECT current_deploy FROM apps WHERE name = ?",
                [&app],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let app_status = AppStatus::after_deploy(serving.is_some());
        tx.execute(
            "UPDATE apps SET status = ?2, updated_at = ?3 WHERE name = ?1 AND status != 'deleting'",
            params![app, app_status.as_str(), at],
        )?;
        prune_history(&tx, &app, self.keep_deploys.load(Ordering::Relaxed))?;
        tx.commit()?;
        self.feed.announce(&app, id);
        Ok(())
    }

    pub fn events(&self, id: &str, after_seq: i64) -> Result<Vec<EventRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at, status, message FROM deploy_events
             WHERE deploy_id = ? AND seq > ? ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id, after_seq], |r| {
            Ok(EventRow {
                seq: r.get(0)?,
                at: r.get(1)?,
                status: parse_col(r, 2)?,
                message: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Subscribes to committed deploy changes: see [`crate::feed`].
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::feed::DeployChange> {
        self.feed.subscribe()
    }

    /// Announces a committed change to deploy `id` (its App read back).
    fn announce(&self, conn: &Connection, id: &str) {
        let app: Option<String> = conn
            .query_row("SELECT app FROM deploys WHERE id = ?", [id], |r| r.get(0))
            .optional()
            .unwrap_or_default();
        if let Some(app) = app {
            self.feed.announce(&app, id);
        }
    }

    /// How many deploys per App to keep from now on (at least 1: the one
    /// that just finished).
    pub fn set_keep_deploys(&self, n: usize) {
        self.keep_deploys.store(n.max(1), Ordering::Relaxed);
    }

    /// Prunes an App's history now (`finish_deploy` does it after each
    /// deploy); returns how many deploys went.
    pub fn prune(&self, app: &str) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let pruned = prune_history(&tx, app, self.keep_deploys.load(Ordering::Relaxed))?;
        tx.commit()?;
        Ok(pruned)
    }

    // ---- environment ----

    /// An App's variables, by key.
    pub fn env(&self, app: &str) -> Result<Vec<EnvEntry>> {
        env_of(&self.conn(), app)
    }

    /// Sets and unsets variables in one transaction; returns how many of
    /// `unset` existed.
    pub fn change_env(&self, app: &str, set: &[EnvEntry], unset: &[String]) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for e in set {
            put_env(&tx, app, e)?;
        }
        let mut removed = 0;
        for key in unset {
            removed += tx.execute(
                "DELETE FROM env WHERE app = ?1 AND key = ?2",
                params![app, key],
            )?;
        }
        tx.execute(
            "UPDATE apps SET updated_at = ?2 WHERE name = ?1",
            params![app, now()],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    /// Replaces an App's whole environment (rollback `--with-config`).
    pub fn replace_env(&self, app: &str, entries: &[EnvEntry]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM env WHERE app = ?", [app])?;
        for e in entries {
            put_env(&tx, app, e)?;
        }
        tx.commit()?;
        Ok(())
    }

    // ---- registries ----

    pub fn upsert_registry(&self, host: &str, username: &str, sealed: &[u8]) -> Result<()> {
        let at = now();
        self.conn().execute(
            "INSERT INTO registries (host, username, secret_sealed, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(host) DO UPDATE SET username = excluded.username,
                secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
            params![host, username, sealed, at],
        )?;
        Ok(())
    }

    pub fn get_registry(&self, host: &str) -> Result<Option<RegistryRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT * FROM registries WHERE host = ?",
                [host],
                registry_from_row,
            )
            .optional()?)
    }

    pub fn list_registries(&self) -> Result<Vec<RegistryRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM registries ORDER BY host")?;
        let rows = stmt.query_map([], registry_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- used dashboard links ----

    /// Marks a one-time login link used (by a hash of its token); false when
    /// it was used before. Links past their expiry (unix seconds) are
    /// forgotten here: they are refused for being expired anyway.
    pub fn use_link(&self, token_hash: &str, expires: u64, now: u64) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM used_links WHERE expires < ?",
            [now.min(i64::MAX as u64) as i64],
        )?;
        let added = tx.execute(
            "INSERT OR IGNORE INTO used_links (token_hash, expires) VALUES (?, ?)",
            params![token_hash, expires.min(i64::MAX as u64) as i64],
        )?;
        tx.commit()?;
        Ok(added == 1)
    }

    /// Removes a credential; false when there was none.
    pub fn remove_registry(&self, host: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM registries WHERE host = ?", [host])?
            > 0)
    }
}

/// Refuses a status change the deploy state machine does not allow.
fn check_transition(conn: &Connection, id: &str, to: DeployStatus) -> Result<()> {
    let from: String = conn
        .query_row("SELECT status FROM deploys WHERE id = ?", [id], |r| {
            r.get(0)
        })
        .optional()?
        .with_context(|| format!("no deploy {id}"))?;
    let from: DeployStatus = from
        .parse()
        .map_err(|e: String| anyhow::anyhow!("deploy {id}: {e}"))?;
    from.advance(to)?;
    Ok(())
}

fn insert_deploy(conn: &Connection, d: &DeployRow) -> Result<()> {
    conn.execute(
        "INSERT INTO deploys (id, app, kind, image, digest, status, error, triggered_by,
            previous_deploy, previous_digest, replicas, env_snapshot, created_at, finished_at,
            failure, strategy, settings)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            d.id,
            d.app,
            d.kind.as_str(),
            d.image,
            d.digest,
            d.status.as_str(),
            d.error,
            d.triggered_by,
            d.previous_deploy,
            d.previous_digest,
            d.replicas,
            serde_json::to_string(&d.env)?,
            d.created_at,
            d.finished_at,
            d.failure.as_ref().map(serde_json::to_string).transpose()?,
            d.strategy,
            d.settings.as_ref().map(serde_json::to_string).transpose()?,
        ],
    )?;
    insert_event(
        conn,
        &d.id,
        d.status,
        &format!("{} of {} requested", d.kind, d.image),
    )?;
    Ok(())
}

/// Deletes an App's old deploys with their events and replica rows, so
/// history stays bounded. Kept: the newest `keep`; the serving deploy; every
/// unfinished one (the engine or the reconciler still works on it); and the
/// newest [`KEEP_ROLLBACK_TARGETS`] succeeded version deploys with a digest,
/// the ones `molt rollback` can run again.
fn prune_history(conn: &Connection, app: &str, keep: usize) -> Result<usize> {
    let serving: Option<String> = conn
        .query_row(
            "SELECT current_deploy FROM apps WHERE name = ?",
            [app],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let mut stmt = conn.prepare(
        "SELECT id, kind, status, digest IS NOT NULL FROM deploys WHERE app = ? ORDER BY n DESC",
    )?;
    let rows = stmt.query_map([app], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
        ))
    })?;
    let mut targets = 0;
    let mut doomed = Vec::new();
    for (i, row) in rows.enumerate() {
        let (id, kind, status, has_digest) = row?;
        let status: DeployStatus = status.parse().unwrap_or(DeployStatus::Pending);
        let kind: DeployKind = kind.parse().unwrap_or(DeployKind::Deploy);
        let target = status == DeployStatus::Succeeded && kind.is_version() && has_digest;
        let kept_target = target && targets < KEEP_ROLLBACK_TARGETS;
        targets += usize::from(target);
        if i < keep || kept_target || !status.is_terminal() || Some(&id) == serving.as_ref() {
            continue;
        }
        doomed.push(id);
    }
    for id in &doomed {
        conn.execute("DELETE FROM deploy_events WHERE deploy_id = ?", [id])?;
        conn.execute("DELETE FROM deploy_containers WHERE deploy_id = ?", [id])?;
        conn.execute("DELETE FROM deploys WHERE id = ?", [id])?;
    }
    Ok(doomed.len())
}

fn put_env(conn: &Connection, app: &str, e: &EnvEntry) -> Result<()> {
    conn.execute(
        "INSERT INTO env (app, key, secret, value, sealed) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(app, key) DO UPDATE SET secret = excluded.secret,
            value = excluded.value, sealed = excluded.sealed",
        params![
            app,
            e.key,
            e.secret,
            if e.secret { None } else { e.value.clone() },
            e.sealed
        ],
    )?;
    Ok(())
}

fn env_of(conn: &Connection, app: &str) -> Result<Vec<EnvEntry>> {
    let mut stmt =
        conn.prepare("SELECT key, secret, value, sealed FROM env WHERE app = ? ORDER BY key")?;
    let rows = stmt.query_map([app], |r| {
        Ok(EnvEntry {
            key: r.get(0)?,
            secret: r.get(1)?,
            value: r.get(2)?,
            sealed: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert_event(
    conn: &Connection,
    id: &str,
    status: DeployStatus,
    message: &str,
) -> Result<EventRow> {
    let seq: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM deploy_events WHERE deploy_id = ?",
        [id],
        |r| r.get(0),
    )?;
    let at = now();
    conn.execute(
        "INSERT INTO deploy_events (deploy_id, seq, at, status, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, seq, at, status.as_str(), message],
    )?;
    Ok(EventRow {
        seq,
        at,
        status,
        message: message.to_string(),
    })
}

fn parse_col<T: std::str::FromStr<Err = String>>(r: &Row, idx: usize) -> rusqlite::Result<T> {
    let s: String = r.get(idx)?;
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

fn json_col<T: serde::de::DeserializeOwned>(r: &Row, name: &str) -> rusqlite::Result<T> {
    let s: String = r.get(name)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn app_from_row(r: &Row) -> rusqlite::Result<AppRow> {
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
        links: json_col(r, "links")?,
        cap_add: json_col(r, "cap_add")?,
        pids_limit: r.get("pids_limit")?,
        read_only: r.get("read_only")?,
        current_deploy: r.get("current_deploy")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

fn deploy_from_row(r: &Row) -> rusqlite::Result<DeployRow> {
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
    })
}

fn registry_from_row(r: &Row) -> rusqlite::Result<RegistryRow> {
    Ok(RegistryRow {
        host: r.get("host")?,
        username: r.get("username")?,
        secret_sealed: r.get("secret_sealed")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn deploy(id: &str, replicas: u32) -> DeployRow {
        DeployRow {
            id: id.into(),
            app: "web".into(),
            kind: DeployKind::Deploy,
            image: "r/web:1".into(),
            digest: None,
            status: DeployStatus::Pending,
            error: None,
            failure: None,
            strategy: None,
            phase: None,
            settings: None,
            triggered_by: "test".into(),
            previous_deploy: None,
            previous_digest: None,
            replicas,
            env: Vec::new(),
            created_at: now(),
            finished_at: None,
        }
    }

    /// A store in a temp dir (kept while the guard lives) holding the App
    /// `web` and its first deploy `d1`.
    pub(crate) fn web() -> (tempfile::TempDir, std::sync::Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("molt.db")).unwrap();
        store.create_app(&app(), &[], &deploy("d1", 1)).unwrap();
        (dir, std::sync::Arc::new(store))
    }

    fn app() -> AppRow {
        AppRow {
            name: "web".into(),
            status: AppStatus::Creating,
            image: "r/web:1".into(),
            port: 80,
            health: HealthCheck::default(),
            domains: Vec::new(),
            replicas: 1,
            strategy: "auto".into(),
            memory_bytes: None,
            cpus: None,
            gpus: 0,
            drain_timeout_secs: 30,
            upstream_timeout_secs: 60,
            links: Vec::new(),
            cap_add: Vec::new(),
            pids_limit: None,
            read_only: false,
            current_deploy: None,
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn a_deploys_containers_and_the_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("molt.db")).unwrap();
        store.create_app(&app(), &[], &deploy("d1", 3)).unwrap();
        for i in [2, 0, 1] {
            store
                .put_replica(&ReplicaRow {
                    deploy_id: "d1".into(),
                    replica: i,
                    container_id: format!("c{i}"),
                    container_name: format!("n{i}"),
                    addr: None,
                })
                .unwrap();
        }
        store.set_replica_addr("d1", 1, "10.0.0.1:80").unwrap();
        let rows = store.replicas("d1").unwrap();
        assert_eq!(
            rows.iter().map(|r| r.replica).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(rows[1].addr.as_deref(), Some("10.0.0.1:80"));
        // The swap makes the deploy's replica count the App's.
        store
            .record_swap("d1", "web", "r/web:1", "swapped")
            .unwrap();
        let app = store.get_app("web").unwrap().unwrap();
        assert_eq!(
            (app.replicas, app.current_deploy.as_deref()),
            (3, Some("d1"))
        );
        assert_eq!(store.get_deploy("d1").unwrap().unwrap().replicas, 3);
        store.delete_app("web").unwrap();
        assert!(store.replicas("d1").unwrap().is_empty());
    }

    /// Runs deploy `id` of `kind` to `status`, as the engine would.
    fn run(store: &Store, id: &str, kind: DeployKind, status: DeployStatus, digest: bool) {
        let d = DeployRow {
            kind,
            digest: digest.then(|| format!("sha256:{id}")),
            ..deploy(id, 1)
        };
        store.start_deploy(&d).unwrap();
        store.event(id, "pulled").unwrap();
        store
            .put_replica(&ReplicaRow {
                deploy_id: id.into(),
                replica: 0,
                container_id: format!("c-{id}"),
                container_name: format!("n-{id}"),
                addr: None,
            })
            .unwrap();
        if status == DeployStatus::Succeeded {
            store.record_swap(id, "web", "r/web:1", "swapped").unwrap();
        }
        if status.is_terminal() {
            store.finish_deploy(id, status, None, "done").unwrap();
        }
    }

    fn ids(store: &Store) -> Vec<String> {
        let mut ids: Vec<_> = store
            .list_deploys("web")
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        ids.reverse();
        ids
    }

    #[test]
    fn history_keeps_the_newest_deploys_and_the_rollback_targets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("molt.db")).unwrap();
        store.set_keep_deploys(3);
        let (ok, failed) = (DeployStatus::Succeeded, DeployStatus::Failed);
        store.create_app(&app(), &[], &deploy("c0", 1)).unwrap();
        store.finish_deploy("c0", failed, None, "failed").unwrap();
        // Seven rollback targets, then a scale (not one), a succeeded deploy
        // without a digest (not one), and a deploy still running.
        for i in 1..=7 {
            run(&store, &format!("v{i}"), DeployKind::Deploy, ok, true);
        }
        run(&store, "s1", DeployKind::Scale, ok, true);
        run(&store, "nodigest", DeployKind::Deploy, ok, false);
        run(
            &store,
            "running",
            DeployKind::Deploy,
            DeployStatus::Pulling,
            true,
        );
        // Failures after it push everything else out of the newest three.
        for i in 1..=3 {
            run(&store, &format!("f{i}"), DeployKind::Deploy, failed, true);
        }
        assert_eq!(
            ids(&store),
            ["v3", "v4", "v5", "v6", "v7", "nodigest", "running", "f1", "f2", "f3"],
            "the five newest targets, the serving one, the running one, the newest three"
        );
        // What went, went with its timeline and its containers.
        for gone in ["c0", "v1", "v2", "s1"] {
            assert!(store.events(gone, 0).unwrap().is_empty(), "{gone}");
            assert!(store.replicas(gone).unwrap().is_empty(), "{gone}");
        }
        assert_eq!(store.events("v3", 0).unwrap().len(), 4);
        assert_eq!(store.replicas("v3").unwrap().len(), 1);
        // The serving deploy stays however old it gets.
        let serving = store.get_app("web").unwrap().unwrap().current_deploy;
        assert_eq!(serving.as_deref(), Some("nodigest"));
        store
            .finish_deploy("running", failed, None, "gave up")
            .unwrap();
        for i in 4..=9 {
            run(&store, &format!("f{i}"), DeployKind::Deploy, failed, true);
        }
        assert_eq!(
            ids(&store),
            ["v3", "v4", "v5", "v6", "v7", "nodigest", "f7", "f8", "f9"]
        );
        // Within the limit nothing goes.
        store.set_keep_deploys(DEFAULT_KEEP_DEPLOYS);
        assert_eq!(store.prune("web").unwrap(), 0);
    }

    #[tokio::test]
    async fn a_subscriber_is_woken_by_each_committed_change() {
        use crate::feed::{Feed, Woken};
        use std::sync::Arc;
        use std::time::Duration;
        let (_dir, store) = web();
        let mut rx = store.subscribe();
        // Nothing announced yet: a short wait ends on its tick.
        let short = Duration::from_millis(20);
        assert_eq!(Feed::wait(&mut rx, short, |_| true).await, Woken::Tick);
        let writer = Arc::clone(&store);
        let steps = tokio::task::spawn_blocking(move || {
            writer
                .advance("d1", DeployStatus::Pulling, "pulling")
                .unwrap();
            writer.event("d1", "pulled").unwrap();
            writer
                .record_swap("d1", "web", "r/web:1", "swapped")
                .unwrap();
            writer
                .finish_deploy("d1", DeployStatus::Succeeded, None, "done")
                .unwrap();
            writer.start_deploy(&deploy("d2", 1)).unwrap();
        });
        // A fallback far longer than the test: only an announcement wakes it.
        let long = Duration::from_secs(600);
        for want in ["d1", "d1", "d1", "d1", "d2"] {
            let woken = tokio::time::timeout(
                Duration::from_secs(10),
                Feed::wait(&mut rx, long, |c| c.app == "web" && c.deploy_id == want),
            )
            .await
            .expect("woken by the change, not by a tick");
            assert_eq!(woken, Woken::Changed);
        }
        steps.await.unwrap();
    }

    #[test]
    fn confinement_is_stored_with_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("molt.db")).unwrap();
        let app = AppRow {
            links: vec!["db".into()],
            cap_add: vec!["NET_RAW".into()],
            pids_limit: Some(64),
            read_only: true,
            ..app()
        };
        store.create_app(&app, &[], &deploy("d1", 1)).unwrap();
        let got = store.get_app("web").unwrap().unwrap();
        assert_eq!(got.links, vec!["db".to_string()]);
        assert_eq!(got.cap_add, vec!["NET_RAW".to_string()]);
        assert_eq!((got.pids_limit, got.read_only), (Some(64), true));
    }

    #[test]
    fn the_replicas_migration_keeps_existing_containers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("molt.db");
        {
            // A database at schema 1, with one deploy and its container.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO deploys (id, app, kind, image, status, triggered_by, container_id,
                    container_name, target_addr, created_at)
                 VALUES ('d1', 'web', 'deploy', 'r/web:1', 'succeeded', 'cli', 'abc', 'molt-web-d1',
                    '10.0.0.2:80', '2024-01-01T00:00:00Z')",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let rows = store.replicas("d1").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].container_id, "abc");
        assert_eq!(rows[0].addr.as_deref(), Some("10.0.0.2:80"));
        assert_eq!(store.get_deploy("d1").unwrap().unwrap().replicas, 1);
    }
}
