//! `molt runs NAME`: the App's one-off commands (`molt run`), newest first,
//! with who ran what, its exit code and how long it took; never the output.

use super::client::{Client, OK};
use super::output::{or_none, short_time, table};
use anyhow::Result;
use clap::Args;
use molt_core::attach::RunView;

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The App whose runs to list.
    pub name: String,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn list(client: &Client, args: RunsArgs) -> Result<u8> {
    let value = client.get(&["apps", &args.name, "runs"]).await?;
    if args.json {
        value.print()?;
        return Ok(OK);
    }
    let runs: Vec<RunView> = value.decode("a list of runs")?;
    out!("{}", runs_table(&runs));
    Ok(OK)
}

/// ID COMMAND RELEASE EXIT DURATION STARTED BY.
pub fn runs_table(runs: &[RunView]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.command.join(" "),
                or_none(r.release.as_deref()),
                match (r.exit_code, &r.error) {
                    (Some(code), _) => code.to_string(),
                    (None, Some(_)) => "ended".into(),
                    (None, None) => "running".into(),
                },
                r.duration_ms
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default(),
                short_time(&r.started_at),
                r.triggered_by.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "COMMAND", "RELEASE", "EXIT", "DURATION", "STARTED", "BY",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_as_its_command_and_exit() {
        let run = RunView {
            id: "r1".into(),
            app: "web".into(),
            command: vec!["migrate".into(), "--up".into()],
            release: Some("d1".into()),
            image: "r/web@sha256:x".into(),
            triggered_by: "cli".into(),
            exit_code: Some(0),
            error: None,
            started_at: "2026-12-01T10:00:00.000Z".into(),
            finished_at: Some("2026-12-01T10:00:02.500Z".into()),
            duration_ms: Some(2500),
        };
        let t = runs_table(&[run]);
        assert!(t.contains("migrate --up"), "{t}");
        assert!(t.contains("2.5 s"), "{t}");
        assert!(t.contains("2026-12-01 10:00:00"), "{t}");
    }
}
