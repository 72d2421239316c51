//! Apps.

use super::*;

impl Store {
    /// Creates an App and its first deploy together, so that no App exists
    /// without the deploy that brings it up.
    pub fn create_app(&self, app: &AppRow, env: &[EnvEntry], deploy: &DeployRow) -> Result<()> {
        self.blocking(|| {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO apps (name, status, image, port, health, domains, replicas, strategy,
                    memory_bytes, cpus, gpus, drain_timeout_secs, current_deploy, created_at, updated_at,
                    upstream_timeout_secs, links, cap_add, pids_limit, read_only,
                    https_redirect, hsts_max_age_secs, max_body_bytes, tunnel_idle_timeout_secs,
                    constraints)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
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
                    app.https_redirect,
                    app.hsts_max_age_secs.map(|s| s as i64),
                    app.max_body_bytes.map(|b| b as i64),
                    app.tunnel_idle_timeout_secs.map(|s| s as i64),
                    serde_json::to_string(&app.constraints)?,
                ],
            )?;
            for e in env {
                put_env(&tx, &app.name, e)?;
            }
            insert_deploy(&tx, deploy)?;
            tx.commit()?;
            self.feed.announce(&deploy.app, &deploy.id);
            Ok(())
        })
    }

    pub fn get_app(&self, name: &str) -> Result<Option<AppRow>> {
        Ok(self
            .conn()
            .query_row("SELECT * FROM apps WHERE name = ?", [name], app_from_row)
            .optional()?)
    }

    pub fn list_apps(&self) -> Result<Vec<AppRow>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT * FROM apps ORDER BY name")?;
            let rows = stmt.query_map([], app_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn set_app_status(&self, name: &str, status: AppStatus) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "UPDATE apps SET status = ?2, updated_at = ?3 WHERE name = ?1",
                params![name, status.as_str(), now()],
            )?;
            Ok(())
        })
    }

    pub fn set_app_image(&self, name: &str, image: &str) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "UPDATE apps SET image = ?2, updated_at = ?3 WHERE name = ?1",
                params![name, image, now()],
            )?;
            Ok(())
        })
    }

    /// Deletes an App with its whole history.
    pub fn delete_app(&self, name: &str) -> Result<()> {
        self.blocking(|| {
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
            tx.execute("DELETE FROM runs WHERE app = ?", [name])?;
            tx.execute("DELETE FROM builds WHERE app = ?", [name])?;
            tx.execute("DELETE FROM releases WHERE app = ?", [name])?;
            tx.execute("DELETE FROM apps WHERE name = ?", [name])?;
            tx.commit()?;
            Ok(())
        })
    }
}
