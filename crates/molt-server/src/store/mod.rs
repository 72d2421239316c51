//! The state store: one SQLite file in WAL mode with `synchronous=FULL`, so
//! a record written before a step survives a crash right after it. Every
//! change that spans rows runs in one transaction.

mod apps;
mod builds;
mod certs;
mod deploys;
mod env;
mod registries;
mod rows;
mod runs;
mod schema;
#[cfg(test)]
pub(crate) mod tests;

pub use builds::{BuildRow, ReleaseRow};
pub use certs::{AcmeOrderRow, CertRow};
use deploys::*;
use env::*;
pub use rows::*;
use rows::{app_from_row, deploy_from_row, registry_from_row};
pub use runs::KEEP_RUNS;
use schema::MIGRATIONS;

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

/// Makes the database file, and its WAL companions once they exist,
/// readable by their owner only. The data dir is the owner's alone already;
/// this keeps the file private wherever it is copied with its mode (a
/// backup), as the admin token and the sealing key are. A filesystem that
/// refuses (some network mounts) gets a warning, not a server that will
/// not start.
fn owner_only(db: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                file = %file.display(),
                error = %e,
                "cannot make the database readable by its owner only; the data dir's own mode (0700) still keeps others out"
            ),
        }
    }
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
        // After the first write, which made the WAL files (SQLite gives
        // them the database's mode).
        owner_only(path);
        Ok(store)
    }

    /// Runs a database call off the async workers' shoulders: on a
    /// multi-thread runtime the worker first hands its other tasks to the
    /// rest (`block_in_place`), so a write's fsync or a wait for the lock
    /// never stalls the requests queued behind it. Elsewhere (a
    /// current-thread runtime, a plain thread) it simply runs.
    fn blocking<T>(&self, call: impl FnOnce() -> T) -> T {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(call)
            }
            _ => call(),
        }
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
}

pub(super) fn parse_col<T: std::str::FromStr<Err = String>>(
    r: &Row,
    idx: usize,
) -> rusqlite::Result<T> {
    let s: String = r.get(idx)?;
    s.parse().map_err(|e: String| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(r: &Row, name: &str) -> rusqlite::Result<T> {
    let s: String = r.get(name)?;
    serde_json::from_str(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}
