//! Builds from source and the releases they make (see `crate::build`).

use super::*;

/// A build as stored.
#[derive(Debug, Clone)]
pub struct BuildRow {
    pub id: String,
    pub app: String,
    /// `building`, `succeeded` or `failed`.
    pub status: String,
    /// What was built: `directory` or `git REF`.
    pub source: String,
    pub dockerfile: String,
    /// The tag it gets on this host (`molt.local/APP:BUILD`).
    pub image: String,
    /// The image's id, once built.
    pub digest: Option<String>,
    /// The release it made.
    pub release: Option<String>,
    pub error: Option<String>,
    /// The step that failed, with its output.
    pub failed_step: Option<String>,
    /// The builder's output, kept when the build ends.
    pub log: Vec<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// A release made by a build: its image, and the App's settings and
/// environment (secrets sealed) when it was built.
#[derive(Debug, Clone)]
pub struct ReleaseRow {
    pub id: String,
    pub app: String,
    pub build: Option<String>,
    pub image: String,
    pub digest: String,
    pub settings: AppSettings,
    pub env: Vec<EnvEntry>,
    pub created_at: String,
}

impl Store {
    pub fn insert_build(&self, b: &BuildRow) -> Result<()> {
        self.blocking(|| {
            self.conn().execute(
                "INSERT INTO builds (id, app, status, source, dockerfile, image, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    b.id,
                    b.app,
                    b.status,
                    b.source,
                    b.dockerfile,
                    b.image,
                    b.created_at
                ],
            )?;
            Ok(())
        })
    }

    /// Records a release made elsewhere (an external build pushed to a
    /// registry): no build of Molt's made it.
    pub fn insert_release(&self, r: &ReleaseRow) -> Result<()> {
        self.blocking(|| insert_release(&self.conn(), r))
    }

    /// Ends a build: with its release (recorded in the same transaction)
    /// when it succeeded, with its error and failing step when not.
    pub fn finish_build(&self, b: &BuildRow, release: Option<&ReleaseRow>) -> Result<()> {
        self.blocking(|| {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            if let Some(r) = release {
                insert_release(&tx, r)?;
            }
            tx.execute(
                "UPDATE builds SET status = ?2, digest = ?3, release = ?4, error = ?5,
                    failed_step = ?6, log = ?7, finished_at = ?8 WHERE id = ?1",
                params![
                    b.id,
                    b.status,
                    b.digest,
                    b.release,
                    b.error,
                    b.failed_step,
                    serde_json::to_string(&b.log)?,
                    b.finished_at
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn get_build(&self, id: &str) -> Result<Option<BuildRow>> {
        self.blocking(|| {
            Ok(self
                .conn()
                .query_row("SELECT * FROM builds WHERE id = ?", [id], build_from_row)
                .optional()?)
        })
    }

    /// An App's newest builds, newest first.
    pub fn list_builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRow>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT * FROM builds WHERE app = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            )?;
            let rows = stmt.query_map(params![app, limit as i64], build_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Builds that were running when the server last stopped.
    pub fn unfinished_builds(&self) -> Result<Vec<BuildRow>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT * FROM builds WHERE status = 'building'")?;
            let rows = stmt.query_map([], build_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    pub fn get_release(&self, id: &str) -> Result<Option<ReleaseRow>> {
        self.blocking(|| {
            Ok(self
                .conn()
                .query_row(
                    "SELECT * FROM releases WHERE id = ?",
                    [id],
                    release_from_row,
                )
                .optional()?)
        })
    }

    /// Forgets a release whose image retention removed (its build stays).
    pub fn delete_release(&self, id: &str) -> Result<()> {
        self.blocking(|| {
            self.conn()
                .execute("DELETE FROM releases WHERE id = ?", [id])?;
            Ok(())
        })
    }

    /// An App's releases, newest first.
    pub fn list_releases(&self, app: &str) -> Result<Vec<ReleaseRow>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT * FROM releases WHERE app = ? ORDER BY n DESC")?;
            let rows = stmt.query_map([app], release_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

fn build_from_row(r: &Row) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        id: r.get("id")?,
        app: r.get("app")?,
        status: r.get("status")?,
        source: r.get("source")?,
        dockerfile: r.get("dockerfile")?,
        image: r.get("image")?,
        digest: r.get("digest")?,
        release: r.get("release")?,
        error: r.get("error")?,
        failed_step: r.get("failed_step")?,
        log: json_col(r, "log")?,
        created_at: r.get("created_at")?,
        finished_at: r.get("finished_at")?,
    })
}

fn release_from_row(r: &Row) -> rusqlite::Result<ReleaseRow> {
    Ok(ReleaseRow {
        id: r.get("id")?,
        app: r.get("app")?,
        build: r.get("build")?,
        image: r.get("image")?,
        digest: r.get("digest")?,
        settings: json_col(r, "settings")?,
        env: json_col(r, "env")?,
        created_at: r.get("created_at")?,
    })
}

fn insert_release(conn: &rusqlite::Connection, r: &ReleaseRow) -> Result<()> {
    conn.execute(
        "INSERT INTO releases (id, app, build, image, digest, settings, env, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.id,
            r.app,
            r.build,
            r.image,
            r.digest,
            serde_json::to_string(&r.settings)?,
            serde_json::to_string(&r.env)?,
            r.created_at
        ],
    )?;
    Ok(())
}
