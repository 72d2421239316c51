//! Registry credentials (sealed) and used one-time dashboard links.

use super::*;

impl Store {
    pub fn upsert_registry(&self, host: &str, username: &str, sealed: &[u8]) -> Result<()> {
        self.blocking(|| {
            let at = now();
            self.conn().execute(
                "INSERT INTO registries (host, username, secret_sealed, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(host) DO UPDATE SET username = excluded.username,
                    secret_sealed = excluded.secret_sealed, updated_at = excluded.updated_at",
                params![host, username, sealed, at],
            )?;
            Ok(())
        })
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
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT * FROM registries ORDER BY host")?;
            let rows = stmt.query_map([], registry_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Removes a credential; false when there was none.
    pub fn remove_registry(&self, host: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM registries WHERE host = ?", [host])?
            > 0)
    }

    /// Marks a one-time login link used (by a hash of its token); false when
    /// it was used before. Links past their expiry (unix seconds) are
    /// forgotten here: they are refused for being expired anyway.
    pub fn use_link(&self, token_hash: &str, expires: u64, now: u64) -> Result<bool> {
        self.blocking(|| {
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
        })
    }
}
