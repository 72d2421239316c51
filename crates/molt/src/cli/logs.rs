//! `molt logs` and `molt debug`: what the App's containers print, and what
//! the server knows about an App when something is off.

use super::client::{Client, OK};
use anyhow::Result;
use clap::Args;
use molt_core::api::{DebugReport, SwarmTask};
use reqwest::Method;
use std::io::Write;

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    pub follow: bool,
    /// Start with the last N lines of each container.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Only lines newer than this, e.g. `10m`, `2h`, `30s`.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    pub name: String,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

/// Streams the server's answer to stdout as it arrives.
pub async fn logs(client: &Client, a: LogsArgs) -> Result<u8> {
    let mut url = client.url(&["apps", &a.name, "logs"]);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("follow", if a.follow { "true" } else { "false" });
        if let Some(n) = a.tail {
            q.append_pair("tail", &n.to_string());
        }
        if let Some(since) = &a.since {
            q.append_pair("since", since);
        }
    }
    // Following has no end, so no timeout: a day is "forever" here.
    let timeout = a.follow.then(|| std::time::Duration::from_secs(86_400));
    let mut resp = client.send(Method::GET, url, None, timeout).await?;
    let mut out = std::io::stdout();
    let mut printed = false;
    while let Some(chunk) = resp.chunk().await.map_err(|e| client.transport(e))? {
        printed |= !chunk.is_empty();
        if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
            break; // stdout closed, e.g. piped into `head`
        }
    }
    if !printed && !a.follow {
        // Nothing printed may mean nothing runs: say where output went.
        let app: molt_core::api::AppView =
            client.get(&["apps", &a.name]).await?.decode("an App")?;
        if app.containers.is_empty() {
            eprintln!("{}", no_containers_note(&a.name));
        }
    }
    Ok(OK)
}

/// Why `molt logs` printed nothing for an App with no container: a failed
/// deploy's containers are removed, and its last output kept with it.
fn no_containers_note(app: &str) -> String {
    format!("{app} has no running container, so there are no logs to show; a failed deploy's last output is in `molt debug {app}` and `molt deploys show {app} ID`")
}

/// A one-time dashboard login URL.
pub async fn dashboard_link(client: &Client) -> Result<u8> {
    let answer = client
        .post(&["dashboard-link"], &serde_json::json!({}))
        .await?;
    let value = answer.value()?;
    let url = value
        .get("url")
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    outln!("{url}");
    eprintln!("Open it in a browser within 5 minutes; it logs in once.");
    Ok(OK)
}

/// What is wrong with an App, each finding with its evidence and a hint.
pub async fn debug(client: &Client, a: DebugArgs) -> Result<u8> {
    let answer = client.get(&["apps", &a.name, "debug"]).await?;
    if a.json {
        answer.print()?;
        return Ok(OK);
    }
    let report: DebugReport = answer.decode("a debug report")?;
    outln!("{}", render(&report));
    Ok(OK)
}

fn render(r: &DebugReport) -> String {
    let mut out = format!("App {} is {}", r.app, r.status);
    match &r.serving_digest {
        Some(d) => out.push_str(&format!(", serving {}", &d[..d.len().min(19)])),
        None => out.push_str(", serving nothing yet"),
    }
    out.push('\n');
    if let Some(d) = &r.failed_deploy {
        out.push_str(&format!(
            "latest failed deploy: {} ({} of {})\n",
            d.id, d.kind, d.image
        ));
    }
    if r.findings.is_empty() {
        out.push_str("\nNothing looks wrong.\n");
    }
    for f in &r.findings {
        out.push_str(&format!("\n✗ {}\n", f.summary));
        if let Some(detail) = &f.detail {
            for line in detail.lines() {
                out.push_str(&format!("    {}\n", line.trim_start()));
            }
        }
        out.push_str(&format!("  hint: {}\n", f.hint));
    }
    if !r.swarm_tasks.is_empty() {
        out.push_str("\nswarm tasks (newest first):\n");
        for t in &r.swarm_tasks {
            out.push_str(&format!("{}\n", task_line(t)));
        }
    }
    out.trim_end().to_string()
}

/// One Swarm task: whose it is, where, its state and Swarm's words.
fn task_line(t: &SwarmTask) -> String {
    let replica = t
        .replica
        .map(|r| format!("replica {r} of "))
        .unwrap_or_default();
    let node = t.node.as_deref().unwrap_or("no node yet");
    let mut line = format!(
        "  {replica}deploy {} on {node}: {} (desired {})",
        t.deploy, t.state, t.desired_state
    );
    match (&t.error, t.message.is_empty()) {
        (Some(e), _) => line.push_str(&format!(": {e}")),
        (None, false) => line.push_str(&format!(": {}", t.message)),
        (None, true) => {}
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_core::api::Finding;

    #[test]
    fn renders_findings_with_hints() {
        let r = DebugReport {
            app: "web".into(),
            status: molt_core::AppStatus::Running,
            serving_digest: Some("sha256:0123456789abcdef0123".into()),
            failed_deploy: None,
            findings: vec![Finding {
                kind: "crash".into(),
                summary: "the container exited with code 3".into(),
                detail: Some("  boom".into()),
                hint: "read its output".into(),
            }],
            swarm_tasks: Vec::new(),
        };
        let text = render(&r);
        assert!(text.contains("serving sha256:0123456789ab"), "{text}");
        assert!(
            text.contains("✗ the container exited with code 3"),
            "{text}"
        );
        assert!(text.contains("    boom"), "{text}");
        assert!(text.contains("hint: read its output"), "{text}");
        assert!(!text.contains("swarm tasks"), "{text}");
    }

    #[test]
    fn renders_swarm_tasks_with_swarms_error() {
        let r = DebugReport {
            app: "web".into(),
            status: molt_core::AppStatus::Running,
            serving_digest: None,
            failed_deploy: None,
            findings: Vec::new(),
            swarm_tasks: vec![SwarmTask {
                deploy: "d2".into(),
                replica: Some(0),
                node: None,
                desired_state: "running".into(),
                state: "pending".into(),
                error: Some(
                    "no suitable node (scheduling constraints not satisfied on 1 node)".into(),
                ),
                message: "pending task scheduling".into(),
            }],
        };
        let text = render(&r);
        assert!(text.contains("Nothing looks wrong."), "{text}");
        assert!(
            text.contains("replica 0 of deploy d2 on no node yet: pending (desired running): no suitable node (scheduling constraints"),
            "{text}"
        );
    }
}
