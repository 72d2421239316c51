//! Following a deploy until it ends: poll its timeline, print each new
//! event, and turn the outcome into the exit code (0 succeeded, 1 failed or
//! canceled). On a terminal a spinner shows the current phase.

use super::client::{CliError, Client, FAILED, OK};
use super::output::{event_line, short_digest};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use molt_core::api::{DeployStarted, DeployView};
use molt_core::DeployStatus;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often the timeline is asked for: quick enough to feel live, cheap
/// for the server.
const POLL: Duration = Duration::from_millis(150);
/// How long a lost server is waited for (it may be restarting) before the
/// command gives up; the deploy itself goes on regardless.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// Handles the answer to a request that started a deploy: with `detach`
/// says how to follow it later, else follows it to the end.
pub async fn started(client: &Client, started: DeployStarted, detach: bool) -> Result<u8> {
    let (app, deploy) = (&started.app, &started.deploy);
    if detach {
        outln!(
            "Started deploy {} of {} ({}). Follow it with: molt deploys show {} {} --follow",
            deploy.id,
            app.name,
            deploy.kind,
            app.name,
            deploy.id
        );
        return Ok(OK);
    }
    let last = follow(client, &app.name, deploy).await?;
    let domains = match last.status {
        DeployStatus::Succeeded => domains_now(client, &app.name)
            .await
            .unwrap_or_else(|| app.domains.clone()),
        _ => app.domains.clone(),
    };
    Ok(outcome(&last, &domains))
}

/// The App's domains as they are now: a deploy that changed settings
/// (`apps update --add-domain`, `rollback --with-config`) routes other
/// domains than the App had when it started. None if the App cannot be read.
async fn domains_now(client: &Client, app: &str) -> Option<Vec<String>> {
    let answer = client.get(&["apps", app]).await.ok()?;
    let view: molt_core::api::AppView = answer.decode("an App").ok()?;
    Some(view.domains)
}

/// Polls the deploy until it is terminal and returns its last state.
pub async fn follow(client: &Client, app: &str, deploy: &DeployView) -> Result<DeployView> {
    let progress = Progress::new(app, deploy);
    let mut seq = 0;
    let mut lost_since: Option<Instant> = None;
    loop {
        let mut url = client.url(&["apps", app, "deploys", &deploy.id]);
        url.query_pairs_mut().append_pair("after", &seq.to_string());
        let answer = tokio::select! {
            a = client.json(reqwest::Method::GET, url, None) => a,
            _ = tokio::signal::ctrl_c() => {
                progress.finish();
                eprintln!(
                    "Stopped following; the deploy goes on. Follow it again with: molt deploys show {app} {} --follow",
                    deploy.id
                );
                return Err(CliError::new(130, "interrupted").into());
            }
        };
        match answer {
            Ok(value) => {
                lost_since = None;
                let view: DeployView = value.decode("a deploy")?;
                for event in &view.events {
                    if event.seq > seq {
                        seq = event.seq;
                        progress.event(&event_line(event));
                    }
                }
                progress.phase(view.status);
                if view.status.is_terminal() {
                    progress.finish();
                    return Ok(view);
                }
            }
            // A server that went away may be restarting: wait a while.
            Err(e) if is_transport(&e) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    progress.finish();
                    return Err(e.context(format!(
                        "lost the server while following deploy {} (it may still be running: follow it again with `molt deploys show {app} {} --follow`)",
                        deploy.id, deploy.id
                    )));
                }
                progress.waiting();
            }
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether an error is a lost connection rather than an answer.
fn is_transport(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<CliError>().is_some_and(|c| c.unreachable))
}

/// Prints the one-line outcome and returns the exit code.
pub fn outcome(deploy: &DeployView, domains: &[String]) -> u8 {
    match deploy.status {
        DeployStatus::Succeeded => {
            outln!("{}", success_line(deploy, domains));
            OK
        }
        DeployStatus::Canceled => {
            eprintln!("✗ deploy {} of {} was canceled", deploy.id, deploy.app);
            FAILED
        }
        _ => {
            eprintln!(
                "✗ deploy {} of {} failed: {}",
                deploy.id,
                deploy.app,
                deploy.error.as_deref().unwrap_or("no reason given")
            );
            if let Some(prev) = &deploy.previous_digest {
                eprintln!(
                    "  {} still serves the previous version ({})",
                    deploy.app,
                    short_digest(Some(prev))
                );
            }
            FAILED
        }
    }
}

/// `✓ web is live at web.localhost, example.com: serves sha256:… (deploy …)`.
pub fn success_line(deploy: &DeployView, domains: &[String]) -> String {
    let at = if domains.is_empty() {
        String::new()
    } else {
        format!(" at {}", domains.join(", "))
    };
    let serves = match &deploy.digest {
        Some(d) => format!("{} ({})", deploy.image, short_digest(Some(d))),
        None => deploy.image.clone(),
    };
    format!(
        "✓ {} is live{at}: serves {serves} (deploy {})",
        deploy.app, deploy.id
    )
}

/// A spinner on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    app: String,
}

impl Progress {
    fn new(app: &str, deploy: &DeployView) -> Progress {
        let interactive =
            std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let bar = interactive.then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        let p = Progress {
            bar,
            app: app.to_string(),
        };
        p.phase(deploy.status);
        p
    }

    fn event(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| outln!("{line}")),
            None => outln!("{line}"),
        }
    }

    fn phase(&self, status: DeployStatus) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{}: {}",
                self.app,
                status.as_str().replace('_', " ")
            ));
        }
    }

    fn waiting(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{}: waiting for the server", self.app));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use molt_core::DeployKind;

    fn deploy(status: DeployStatus) -> DeployView {
        DeployView {
            failure: None,
            strategy: None,
            id: "d1".into(),
            app: "web".into(),
            kind: DeployKind::Deploy,
            image: "nginx:1".into(),
            digest: Some("sha256:abcdef0123456789".into()),
            status,
            error: Some("health check timed out".into()),
            triggered_by: "cli".into(),
            previous_digest: None,
            created_at: "2025-01-02T10:11:12Z".into(),
            finished_at: None,
            events: vec![],
            changes: None,
        }
    }

    #[test]
    fn success_names_domains_digest_and_deploy() {
        let line = success_line(
            &deploy(DeployStatus::Succeeded),
            &["web.localhost".into(), "example.com".into()],
        );
        assert_eq!(
            line,
            "✓ web is live at web.localhost, example.com: serves nginx:1 (abcdef012345) (deploy d1)"
        );
    }

    #[test]
    fn failed_and_canceled_deploys_exit_1() {
        assert_eq!(outcome(&deploy(DeployStatus::Failed), &[]), FAILED);
        assert_eq!(outcome(&deploy(DeployStatus::Canceled), &[]), FAILED);
    }
}
