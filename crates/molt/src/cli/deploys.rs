//! `molt deploy` (start one) and `molt deploys` (the history, one deploy's
//! timeline).

use super::client::{Client, OK};
use super::follow;
use super::output::{
    self, event_line, first_line, key_values, or_none, short_digest, short_time, table,
};
use anyhow::Result;
use clap::{Args, Subcommand};
use molt_core::api::{DeployRequest, DeployStarted, DeployView};

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The App to deploy to.
    pub name: String,
    /// The image to deploy, e.g. `nginx:1.27` (not with --build).
    #[arg(required_unless_present = "build", conflicts_with = "build")]
    pub image: Option<String>,
    /// Build the source in DIR (default: the current directory) on the
    /// server and promote the release, in one step.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = ".")]
    pub build: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub source: super::build::SourceArgs,
    /// Return once the deploy has started instead of following it.
    #[arg(long)]
    pub detach: bool,
}

/// `molt deploys NAME` lists; `molt deploys show NAME ID` shows one.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_precedence_over_arg = true
)]
pub struct DeploysArgs {
    #[command(subcommand)]
    pub command: Option<DeploysCommand>,
    /// The App whose deploys to list, newest first.
    pub name: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeploysCommand {
    /// Show one deploy with its timeline.
    Show {
        name: String,
        deploy_id: String,
        /// Print the API's JSON.
        #[arg(long, conflicts_with = "follow")]
        json: bool,
        /// Stream the timeline until the deploy ends, then exit as `molt
        /// deploy` does: 0 succeeded, 1 failed or canceled (a `--detach`ed
        /// deploy, followed later).
        #[arg(long)]
        follow: bool,
    },
}

pub async fn deploy(client: &Client, args: DeployArgs) -> Result<u8> {
    let image = match (args.image, &args.build) {
        (_, Some(dir)) => {
            return super::build::deploy_built(client, &args.name, dir, &args.source, args.detach)
                .await
        }
        (Some(image), None) => image,
        (None, None) => {
            return Err(super::client::usage(
                "give an IMAGE to deploy, or --build [DIR] to build the source",
            ))
        }
    };
    if args.source.file.is_some()
        || !args.source.build_args.is_empty()
        || args.source.git_ref.is_some()
    {
        return Err(super::client::usage(
            "--file, --build-arg and --git-ref go with --build",
        ));
    }
    let body = serde_json::to_value(DeployRequest { image })?;
    let answer = client.post(&["apps", &args.name, "deploys"], &body).await?;
    let started: DeployStarted = answer.decode("a started deploy")?;
    follow::started(client, started, args.detach).await
}

pub async fn run(client: &Client, args: DeploysArgs) -> Result<u8> {
    match (args.command, args.name) {
        (
            Some(DeploysCommand::Show {
                name,
                deploy_id,
                follow: true,
                ..
            }),
            _,
        ) => follow_one(client, &name, &deploy_id).await,
        (
            Some(DeploysCommand::Show {
                name,
                deploy_id,
                json,
                ..
            }),
            _,
        ) => show(client, &name, &deploy_id, json).await,
        (None, Some(name)) => list(client, &name, args.json).await,
        (None, None) => Err(super::client::usage(
            "name the App: molt deploys NAME, or molt deploys show NAME DEPLOY_ID",
        )),
    }
}

async fn list(client: &Client, name: &str, json: bool) -> Result<u8> {
    let value = client.get(&["apps", name, "deploys"]).await?;
    if json {
        value.print()?;
        return Ok(OK);
    }
    let deploys: Vec<DeployView> = value.decode("a list of deploys")?;
    out!("{}", deploys_table(&deploys));
    Ok(OK)
}

/// ID KIND STATUS IMAGE DIGEST CREATED ERROR, newest first as the API
/// returns them.
pub fn deploys_table(deploys: &[DeployView]) -> String {
    let rows: Vec<Vec<String>> = deploys
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.kind.to_string(),
                d.status.to_string(),
                d.image.clone(),
                short_digest(d.digest.as_deref()),
                short_time(&d.created_at),
                first_line(d.error.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "KIND", "STATUS", "IMAGE", "DIGEST", "CREATED", "ERROR",
        ],
        &rows,
    )
}

async fn show(client: &Client, name: &str, id: &str, json: bool) -> Result<u8> {
    let value = client.get(&["apps", name, "deploys", id]).await?;
    if json {
        value.print()?;
        return Ok(OK);
    }
    let deploy: DeployView = value.decode("a deploy")?;
    out!("{}", deploy_details(&deploy));
    Ok(OK)
}

/// `deploys show --follow`: the timeline so far and each new event until
/// the deploy ends, then the outcome and its exit code, as `molt deploy`.
async fn follow_one(client: &Client, name: &str, id: &str) -> Result<u8> {
    let deploy: DeployView = client
        .get(&["apps", name, "deploys", id])
        .await?
        .decode("a deploy")?;
    let last = follow::follow(client, name, &deploy).await?;
    let app: molt_core::api::AppView = client.get(&["apps", name]).await?.decode("an App")?;
    Ok(follow::outcome(&last, &app.domains))
}

/// One deploy as `key: value` lines, then its timeline.
pub fn deploy_details(d: &DeployView) -> String {
    let mut pairs = vec![
        ("id", d.id.clone()),
        ("app", d.app.clone()),
        ("kind", d.kind.to_string()),
        ("status", d.status.to_string()),
        ("image", d.image.clone()),
        ("digest", or_none(d.digest.as_deref())),
        ("previous digest", or_none(d.previous_digest.as_deref())),
        ("triggered by", d.triggered_by.clone()),
        ("created", short_time(&d.created_at)),
        (
            "finished",
            d.finished_at
                .as_deref()
                .map_or_else(|| output::NONE.to_string(), short_time),
        ),
    ];
    if let Some(e) = &d.error {
        pairs.push(("error", e.clone()));
    }
    let mut out = key_values(&pairs);
    if let Some(changes) = &d.changes {
        out.push_str(&format!("\nchanges against deploy {}:\n", changes.against));
        let lines = changes.lines();
        if lines.is_empty() {
            out.push_str("  none: the same release\n");
        }
        for line in lines {
            out.push_str("  ");
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !d.events.is_empty() {
        out.push_str("\ntimeline:\n");
        for e in &d.events {
            out.push_str("  ");
            out.push_str(&event_line(e));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use molt_core::{DeployKind, DeployStatus};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        deploys: DeploysArgs,
    }

    #[test]
    fn deploys_parses_list_and_show() {
        let t = T::try_parse_from(["t", "web", "--json"]).unwrap().deploys;
        assert_eq!((t.name.as_deref(), t.json), (Some("web"), true));
        let t = T::try_parse_from(["t", "show", "web", "d1"])
            .unwrap()
            .deploys;
        assert!(
            matches!(t.command, Some(DeploysCommand::Show { ref name, ref deploy_id, json: false, follow: false }) if name == "web" && deploy_id == "d1")
        );
        let t = T::try_parse_from(["t", "show", "web", "d1", "--follow"])
            .unwrap()
            .deploys;
        assert!(matches!(
            t.command,
            Some(DeploysCommand::Show { follow: true, .. })
        ));
        assert!(T::try_parse_from(["t", "show", "web", "d1", "--follow", "--json"]).is_err());
    }

    #[test]
    fn details_list_the_changes_against_the_deploy_before() {
        use molt_core::release::{ReleaseDiff, SettingChange};
        let mut d = view();
        d.changes = Some(ReleaseDiff {
            against: "d0".into(),
            settings: vec![SettingChange {
                setting: "port".into(),
                from: Some("8080".into()),
                to: Some("9090".into()),
            }],
            ..Default::default()
        });
        let out = deploy_details(&d);
        assert!(
            out.contains("changes against deploy d0:\n  port 8080 → 9090\n"),
            "{out}"
        );
        d.changes = Some(ReleaseDiff {
            against: "d0".into(),
            ..Default::default()
        });
        assert!(deploy_details(&d).contains("  none: the same release\n"));
        d.changes = None;
        assert!(!deploy_details(&d).contains("changes"));
    }

    fn view() -> DeployView {
        DeployView {
            id: "d1".into(),
            failure: None,
            strategy: None,
            app: "web".into(),
            kind: DeployKind::Create,
            image: "nginx:1".into(),
            digest: None,
            status: DeployStatus::Failed,
            error: Some("pull failed\ndetails".into()),
            triggered_by: "cli".into(),
            previous_digest: None,
            created_at: "2025-01-02T10:11:12Z".into(),
            finished_at: None,
            events: vec![],
            changes: None,
        }
    }

    #[test]
    fn table_shows_the_first_line_of_errors() {
        let d = view();
        assert_eq!(
            deploys_table(&[d]),
            "ID  KIND    STATUS  IMAGE    DIGEST  CREATED              ERROR\n\
             d1  create  failed  nginx:1  -       2025-01-02 10:11:12  pull failed\n"
        );
    }
}
