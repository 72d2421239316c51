//! `molt redeploy`, `restart`, `rollback`, `cancel` and `env`: operations
//! on an existing App. Each calls its natural endpoint; an older server that
//! lacks the route answers 404, which is reported as a refused request.

use super::client::{Answer, Client, OK};
use super::follow;
use super::output::table;
use anyhow::Result;
use clap::{Args, Subcommand};
use molt_core::api::{DeployStarted, EnvChanged};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct RedeployArgs {
    /// Pull the App's image reference again and deploy what it now points at.
    pub name: String,
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    pub name: String,
    /// Stop the old containers before starting new ones (brief downtime).
    #[arg(long)]
    pub hard: bool,
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    pub name: String,
    /// The deploy to go back to (default: the one before the current).
    pub deploy_id: Option<String>,
    /// Restore that deploy's settings too, not only its image.
    #[arg(long)]
    pub with_config: bool,
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Set variables (takes effect on the next deploy unless --apply).
    Set {
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Store the values sealed and never show them.
        #[arg(long)]
        secret: bool,
        /// Deploy the change now.
        #[arg(long)]
        apply: bool,
    },
    /// Remove variables.
    Unset {
        name: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[arg(long)]
        apply: bool,
    },
    /// List the variables (secret values hidden).
    List {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn redeploy(client: &Client, a: RedeployArgs) -> Result<u8> {
    let answer = client
        .post(&["apps", &a.name, "redeploy"], &json!({}))
        .await?;
    started(client, answer, a.detach).await
}

pub async fn restart(client: &Client, a: RestartArgs) -> Result<u8> {
    let answer = client
        .post(&["apps", &a.name, "restart"], &json!({ "hard": a.hard }))
        .await?;
    started(client, answer, a.detach).await
}

pub async fn rollback(client: &Client, a: RollbackArgs) -> Result<u8> {
    let body = json!({ "deploy_id": a.deploy_id, "with_config": a.with_config });
    let answer = client.post(&["apps", &a.name, "rollback"], &body).await?;
    started(client, answer, a.detach).await
}

pub async fn cancel(client: &Client, name: &str) -> Result<u8> {
    client.post(&["apps", name, "cancel"], &json!({})).await?;
    outln!("Asked to cancel the deploy in progress of {name}.");
    Ok(OK)
}

pub async fn env(client: &Client, command: EnvCommand) -> Result<u8> {
    match command {
        EnvCommand::Set {
            name,
            pairs,
            secret,
            apply,
        } => {
            let mut set = Vec::new();
            for p in &pairs {
                let (key, value) =
                    molt_core::env::parse_assignment(p).map_err(super::client::usage)?;
                set.push(json!({ "key": key, "value": value, "secret": secret }));
            }
            let body = json!({ "set": set, "apply": apply });
            let answer = client.patch(&["apps", &name, "env"], &body).await?;
            env_changed(client, &name, answer, apply).await
        }
        EnvCommand::Unset { name, keys, apply } => {
            let body = json!({ "unset": keys, "apply": apply });
            let answer = client.patch(&["apps", &name, "env"], &body).await?;
            env_changed(client, &name, answer, apply).await
        }
        EnvCommand::List { name, json } => {
            let value = client.get(&["apps", &name, "env"]).await?;
            if json {
                value.print()?;
            } else {
                out!("{}", env_table(&value.value()?));
            }
            Ok(OK)
        }
    }
}

async fn env_changed(client: &Client, name: &str, answer: Answer, apply: bool) -> Result<u8> {
    let changed: EnvChanged = answer.decode("an environment change")?;
    if let (true, Some(deploy)) = (apply, changed.deploy) {
        let app = client.get(&["apps", name]).await?.decode("an App")?;
        return follow::started(client, DeployStarted { app, deploy }, false).await;
    }
    outln!(
        "Updated the environment of {name}; it takes effect on the next deploy (or pass --apply)."
    );
    Ok(OK)
}

/// KEY VALUE from a list of `{key, value, secret}` objects; other shapes
/// are printed as JSON.
fn env_table(value: &Value) -> String {
    let Some(items) = value.as_array() else {
        return serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    };
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let secret = v.get("secret").and_then(Value::as_bool).unwrap_or(false);
            vec![
                s("key"),
                if secret {
                    "(secret)".into()
                } else {
                    s("value")
                },
            ]
        })
        .collect();
    table(&["KEY", "VALUE"], &rows)
}

/// Follows a deploy the server started, as `deploy` does.
async fn started(client: &Client, answer: Answer, detach: bool) -> Result<u8> {
    let started: DeployStarted = answer.decode("a started deploy")?;
    follow::started(client, started, detach).await
}
