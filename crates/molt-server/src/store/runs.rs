//! `molt run` records. A run is not a deploy: it changes nothing that
//! serves, so it stays out of the deploy state machine, the per-App claim,
//! rollback targets and the deploy history's bound. Runs have their own
//! table and their own bound (`KEEP_RUNS` per App), and keep who ran what,
//! the exit code and how long it took, never the output.

use super::{now, Store};
use anyhow::Result;
use molt_core::attach::RunView;
use rusqlite::{params, Row};

/// Runs kept per App; older ones are pruned when a new one starts.
pub const KEEP_RUNS: usize = 100;

fn run_from_row(r: &Row) -> rusqlite::Result<RunView> {
    let command: String = r.get("command")?;
    Ok(RunView {
        id: r.get("id")?,
        app: r.get("app")?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        release: r.get("release")?,
        image: r.get("image")?,
        triggered_by: r.get("triggered_by")?,
        exit_code: r.get("exit_code")?,
        error: r.get("error")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        duration_ms: r
            .get::<_, Option<i64>>("duration_ms")?
            .map(|d| d.max(0) as u64),
    })
}

impl Store {
    /// Records a run as it starts, and prunes the App's oldest finished
    /// runs beyond `KEEP_RUNS`.
    pub fn start_run(&self, run: &RunView) -> Result<()> {
        self.blocking(|| {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO runs (id, app, command, release, image, triggered_by, started_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                params![
                    run.id,
                    run.app,
                    serde_json::to_string(&run.command)?,
                    run.release,
                    run.image,
                    run.triggered_by,
                    run.started_at
                ],
            )?;
            tx.execute(
                "DELETE FROM runs WHERE app = ?1 AND finished_at IS NOT NULL AND id NOT IN
                   (SELECT id FROM runs WHERE app = ?1 ORDER BY started_at DESC LIMIT ?2)",
                params![run.app, KEEP_RUNS as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Records how a run ended.
    pub fn finish_run(
        &self,
        id: &str,
        exit_code: Option<i64>,
        error: Option<&str>,
        duration_ms: u64,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET exit_code = ?, error = ?, finished_at = ?, duration_ms = ?
             WHERE id = ? AND finished_at IS NULL",
            params![exit_code, error, now(), duration_ms as i64, id],
        )?;
        Ok(())
    }

    /// An App's runs, newest first.
    pub fn list_runs(&self, app: &str) -> Result<Vec<RunView>> {
        self.blocking(|| {
            let conn = self.conn();
            let mut stmt =
                conn.prepare("SELECT * FROM runs WHERE app = ? ORDER BY started_at DESC, id DESC")?;
            let rows = stmt.query_map([app], run_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Ends every run a stopped server left open: its container is gone
    /// with the server's connection to it, and so is its exit code.
    pub fn end_open_runs(&self, why: &str) -> Result<usize> {
        self.blocking(|| {
            Ok(self.conn().execute(
                "UPDATE runs SET error = ?, finished_at = ? WHERE finished_at IS NULL",
                params![why, now()],
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, at: &str) -> RunView {
        RunView {
            id: id.into(),
            app: "web".into(),
            command: vec!["migrate".into(), "--all".into()],
            release: Some("d1".into()),
            image: "r/web@sha256:1".into(),
            triggered_by: "cli".into(),
            exit_code: None,
            error: None,
            started_at: at.into(),
            finished_at: None,
            duration_ms: None,
        }
    }

    #[test]
    fn runs_are_recorded_ended_and_bounded() {
        let (_dir, store) = super::super::tests::web();
        store
            .start_run(&run("r0", "2024-01-01T00:00:00.000Z"))
            .unwrap();
        store.finish_run("r0", Some(3), None, 1200).unwrap();
        let runs = store.list_runs("web").unwrap();
        assert_eq!(runs[0].exit_code, Some(3));
        assert_eq!(runs[0].duration_ms, Some(1200));
        assert_eq!(runs[0].command, vec!["migrate", "--all"]);

        // One left open by a stopped server is ended, without an exit code.
        store
            .start_run(&run("r1", "2024-01-01T00:00:01.000Z"))
            .unwrap();
        assert_eq!(store.end_open_runs("the server restarted").unwrap(), 1);
        let r1 = &store.list_runs("web").unwrap()[0];
        assert_eq!((r1.id.as_str(), r1.exit_code), ("r1", None));
        assert_eq!(r1.error.as_deref(), Some("the server restarted"));

        for i in 0..KEEP_RUNS + 5 {
            let id = format!("x{i:04}");
            store
                .start_run(&run(
                    &id,
                    &format!("2024-01-02T00:{:02}:{:02}.000Z", i / 60, i % 60),
                ))
                .unwrap();
            store.finish_run(&id, Some(0), None, 1).unwrap();
        }
        assert_eq!(store.list_runs("web").unwrap().len(), KEEP_RUNS);
    }
}
