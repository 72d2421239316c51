//! An App's environment variables.

use super::*;

impl Store {
    /// An App's variables, by key.
    pub fn env(&self, app: &str) -> Result<Vec<EnvEntry>> {
        self.blocking(|| env_of(&self.conn(), app))
    }

    /// Sets and unsets variables in one transaction; returns how many of
    /// `unset` existed.
    pub fn change_env(&self, app: &str, set: &[EnvEntry], unset: &[String]) -> Result<usize> {
        self.blocking(|| {
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
        })
    }

    /// Replaces an App's whole environment (rollback `--with-config`).
    pub fn replace_env(&self, app: &str, entries: &[EnvEntry]) -> Result<()> {
        self.blocking(|| {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM env WHERE app = ?", [app])?;
            for e in entries {
                put_env(&tx, app, e)?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

pub(super) fn put_env(conn: &Connection, app: &str, e: &EnvEntry) -> Result<()> {
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

pub(super) fn env_of(conn: &Connection, app: &str) -> Result<Vec<EnvEntry>> {
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
