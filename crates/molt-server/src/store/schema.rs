//! The schema: migrations applied in order, counted by `PRAGMA user_version`.

/// Schema steps, applied in order; `PRAGMA user_version` counts those done.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // `molt run`: one-off commands, kept apart from deploys (see `runs`).
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    command TEXT NOT NULL,
    release TEXT,
    image TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    exit_code INTEGER,
    error TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER
);
CREATE INDEX runs_by_app ON runs (app, started_at);
"#,
    // The settings a `config` deploy brings (JSON `AppSettings`), applied
    // to the App only when its swap is recorded.
    r#"
ALTER TABLE deploys ADD COLUMN settings TEXT;
"#,
    // ---- Releases ----
    // The whole settings a deploy runs with (JSON `AppSettings`), so each
    // deploy records a release: its digest, these settings and its
    // environment snapshot.
    r#"
ALTER TABLE deploys ADD COLUMN config TEXT;
"#,
    // Builds from source (`molt build`) and the releases they make: an
    // image on this host with the App's settings and environment as they
    // were; a deploy that promotes one names it.
    r#"
CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    dockerfile TEXT NOT NULL,
    image TEXT NOT NULL,
    digest TEXT,
    release TEXT,
    error TEXT,
    failed_step TEXT,
    log TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX builds_by_app ON builds (app, created_at);
CREATE TABLE releases (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    app TEXT NOT NULL,
    build TEXT,
    image TEXT NOT NULL,
    digest TEXT NOT NULL,
    settings TEXT NOT NULL,
    env TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX releases_by_app ON releases (app, n);
ALTER TABLE deploys ADD COLUMN release TEXT;
"#,
    // ---- HTTPS (certificates) ----
    // Certificates by domain: the PEM chain, the private key sealed, where
    // it came from (`custom` or `acme`) and its validity, for listing and
    // renewal without parsing every chain.
    r#"
CREATE TABLE certs (
    domain TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    key_sealed BLOB NOT NULL,
    issuer TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
    // ACME: the account per directory (its credentials sealed), and per
    // domain how ordering its certificate goes: the state, the ACME
    // server's problem detail of the last failure, and when to try again.
    r#"
CREATE TABLE acme_accounts (
    directory TEXT PRIMARY KEY,
    credentials_sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE acme_orders (
    domain TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    state TEXT NOT NULL,
    problem TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
"#,
    // ---- end of HTTPS ----
    // Per App: whether plain HTTP is redirected to HTTPS once a
    // certificate is in force, and the HSTS max-age (NULL: no header).
    r#"
ALTER TABLE apps ADD COLUMN https_redirect INTEGER NOT NULL DEFAULT 1;
ALTER TABLE apps ADD COLUMN hsts_max_age_secs INTEGER;
"#,
    // Per App: the largest request body the proxy passes on, and how long
    // an upgraded connection (WebSocket) may stay silent (NULL: defaults).
    r#"
ALTER TABLE apps ADD COLUMN max_body_bytes INTEGER;
ALTER TABLE apps ADD COLUMN tunnel_idle_timeout_secs INTEGER;
"#,
    // Per App: Swarm placement constraints (JSON list of expressions).
    r#"
ALTER TABLE apps ADD COLUMN constraints TEXT NOT NULL DEFAULT '[]';
"#,
];
