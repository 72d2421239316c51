//! Deploys: their statuses (checked against the state machine), events,
//! containers, the swap's record and the bounded history.

use super::*;

impl Store {
    /// Records a new deploy and marks its App as deploying.
    pub fn start_deploy(&self, deploy: &DeployRow) -> Result<()> {
        self.blocking(|| {
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
        })
    }

    pub fn get_deploy(&self, id: &str) -> Result<Option<DeployRow>> {
        Ok(self
            .conn()
            .query_row("SELECT * FROM deploys WHERE id = ?", [id], deploy_from_row)
            .optional()?)
    }

    /// An App's deploys, newest first.
    pub fn list_deploys(&self, app: &str) -> Result<Vec<DeployRow>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT * FROM deploys WHERE app = ? ORDER BY n DESC")?;
            let rows = stmt.query_map([app], deploy_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
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
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT * FROM deploys WHERE status NOT IN ('succeeded', 'failed', 'canceled') ORDER BY n",
            )?;
            let rows = stmt.query_map([], deploy_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Moves a deploy to `status` and adds the event that says why, together.
    /// A step the state machine of `molt_core::deploy` does not allow is
    /// refused and changes nothing.
    pub fn advance(&self, id: &str, status: DeployStatus, message: &str) -> Result<EventRow> {
        self.blocking(|| {
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
        })
    }

    /// Adds an event to a deploy's timeline without changing its status.
    pub fn event(&self, id: &str, message: &str) -> Result<EventRow> {
        self.blocking(|| {
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
        })
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
        self.blocking(|| {
            self.conn().execute(
                "UPDATE deploys SET phase = ?2 WHERE id = ?1",
                params![id, phase],
            )?;
            Ok(())
        })
    }

    /// Records what one replica of a deploy is to it (see `ReplicaRole`).
    pub fn set_replica_role(&self, deploy_id: &str, replica: u32, role: ReplicaRole) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "UPDATE deploy_containers SET role = ?3 WHERE deploy_id = ?1 AND replica = ?2",
                params![deploy_id, replica, role.as_str()],
            )?;
            Ok(())
        })
    }

    /// Marks every container a deploy started as in the route: its whole
    /// set took the traffic (the cutover), recorded before the swap is.
    pub fn mark_routed(&self, deploy_id: &str) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "UPDATE deploy_containers SET role = 'routed' WHERE deploy_id = ?1 AND role = 'new'",
                [deploy_id],
            )?;
            Ok(())
        })
    }

    /// The recorded role of each replica of a deploy.
    pub fn replica_roles(&self, deploy_id: &str) -> Result<Vec<(u32, Option<ReplicaRole>)>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT replica, role FROM deploy_containers WHERE deploy_id = ? ORDER BY replica",
            )?;
            let rows = stmt.query_map([deploy_id], |r| {
                let role: Option<String> = r.get(1)?;
                Ok((r.get(0)?, role.and_then(|r| ReplicaRole::parse(&r))))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Records the strategy a deploy runs with.
    pub fn set_deploy_strategy(&self, id: &str, strategy: &str) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "UPDATE deploys SET strategy = ?2 WHERE id = ?1",
                params![id, strategy],
            )?;
            Ok(())
        })
    }

    pub fn set_deploy_digest(&self, id: &str, digest: &str) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "UPDATE deploys SET digest = ?2 WHERE id = ?1",
                params![id, digest],
            )?;
            Ok(())
        })
    }

    // ---- a deploy's containers ----

    /// Records (or replaces) one replica of a deploy.
    pub fn put_replica(&self, row: &ReplicaRow) -> Result<()> {
        self.blocking(|| {
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
        })
    }

    pub fn set_replica_addr(&self, deploy_id: &str, replica: u32, addr: &str) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "UPDATE deploy_containers SET addr = ?3 WHERE deploy_id = ?1 AND replica = ?2",
                params![deploy_id, replica, addr],
            )?;
            Ok(())
        })
    }

    /// A deploy's containers, by replica.
    pub fn replicas(&self, deploy_id: &str) -> Result<Vec<ReplicaRow>> {
        self.blocking(|| {
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
        })
    }

    /// The swap, as recorded: the deploy becomes the App's serving one (its
    /// replica count the App's, and the settings it carries the App's) and
    /// moves to `draining`, in one transaction.
    pub fn record_swap(&self, id: &str, app: &str, image: &str, message: &str) -> Result<()> {
        self.blocking(|| {
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
                        upstream_timeout_secs = ?10, https_redirect = ?11,
                        hsts_max_age_secs = ?12, max_body_bytes = ?13,
                        tunnel_idle_timeout_secs = ?14, constraints = ?15
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
                        s.https_redirect,
                        s.hsts_max_age_secs.map(|s| s as i64),
                        s.max_body_bytes.map(|b| b as i64),
                        s.tunnel_idle_timeout_secs.map(|s| s as i64),
                        serde_json::to_string(&s.constraints)?,
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
        })
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
        self.blocking(|| {
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
        })
    }

    /// Subscribes to committed deploy changes: see [`crate::feed`].
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::feed::DeployChange> {
        self.feed.subscribe()
    }

    /// Announces a committed change to deploy `id` (its App read back).
    pub(super) fn announce(&self, conn: &Connection, id: &str) {
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
        self.blocking(|| {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let pruned = prune_history(&tx, app, self.keep_deploys.load(Ordering::Relaxed))?;
            tx.commit()?;
            Ok(pruned)
        })
    }
}

/// Refuses a status change the deploy state machine does not allow.
pub(super) fn check_transition(conn: &Connection, id: &str, to: DeployStatus) -> Result<()> {
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

pub(super) fn insert_deploy(conn: &Connection, d: &DeployRow) -> Result<()> {
    conn.execute(
        "INSERT INTO deploys (id, app, kind, image, digest, status, error, triggered_by,
            previous_deploy, previous_digest, replicas, env_snapshot, created_at, finished_at,
            failure, strategy, settings, config, release)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
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
            d.config.as_ref().map(serde_json::to_string).transpose()?,
            d.release,
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
pub(super) fn prune_history(conn: &Connection, app: &str, keep: usize) -> Result<usize> {
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

pub(super) fn insert_event(
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
