//! `molt registries ...`: credentials for private registries. The password
//! only ever comes from stdin, so it stays out of shell history and `ps`.

use super::client::{usage, Client, OK};
use super::output::{short_time, table};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use molt_core::api::{AddRegistryRequest, RegistryView};
use std::io::{IsTerminal, Read};

#[derive(Debug, Subcommand)]
pub enum RegistriesCommand {
    /// Save a credential; the server checks it against the registry first.
    Add(AddArgs),
    /// List the saved credentials (never their secrets).
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget the credential of a registry.
    Remove {
        /// The registry host, e.g. `ghcr.io` or `localhost:5000`.
        host: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The registry host, e.g. `ghcr.io` or `localhost:5000`.
    pub host: String,
    #[arg(long, value_name = "USER")]
    pub username: String,
    /// Read the password (or token) from stdin.
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

pub async fn run(client: &Client, command: RegistriesCommand) -> Result<u8> {
    match command {
        RegistriesCommand::Add(args) => add(client, args).await,
        RegistriesCommand::List { json } => list(client, json).await,
        RegistriesCommand::Remove { host } => {
            client.delete(&["registries", &host]).await?;
            outln!("Removed the credential for {host}.");
            Ok(OK)
        }
    }
}

async fn add(client: &Client, args: AddArgs) -> Result<u8> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err(usage(format!(
            "--password-stdin reads the password from a pipe, e.g. `printenv REGISTRY_TOKEN | molt registries add {} --username {} --password-stdin`",
            args.host, args.username
        )));
    }
    let mut raw = String::new();
    stdin
        .lock()
        .read_to_string(&mut raw)
        .context("cannot read the password from stdin")?;
    let password = trim_secret(&raw);
    if password.is_empty() {
        return Err(usage("the password read from stdin is empty"));
    }
    let body = serde_json::to_value(AddRegistryRequest {
        host: args.host,
        username: args.username,
        password: password.to_string(),
    })?;
    let answer = client.post(&["registries"], &body).await?;
    let saved: RegistryView = answer.decode("a registry")?;
    outln!(
        "Saved the credential of {} for {} (the registry accepted it).",
        saved.username,
        saved.host
    );
    Ok(OK)
}

/// Drops the line break `echo` adds, and nothing else: a password may well
/// start or end with spaces.
pub fn trim_secret(raw: &str) -> &str {
    let s = raw.strip_suffix('\n').unwrap_or(raw);
    s.strip_suffix('\r').unwrap_or(s)
}

async fn list(client: &Client, json: bool) -> Result<u8> {
    let value = client.get(&["registries"]).await?;
    if json {
        value.print()?;
        return Ok(OK);
    }
    let regs: Vec<RegistryView> = value.decode("a list of registries")?;
    if regs.is_empty() {
        outln!("No registry credentials. Add one with: molt registries add HOST --username USER --password-stdin");
        return Ok(OK);
    }
    let rows: Vec<Vec<String>> = regs
        .iter()
        .map(|r| {
            vec![
                r.host.clone(),
                r.username.clone(),
                short_time(&r.updated_at),
            ]
        })
        .collect();
    out!("{}", table(&["HOST", "USERNAME", "UPDATED"], &rows));
    Ok(OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_lose_only_the_trailing_newline() {
        assert_eq!(trim_secret("s3cret\n"), "s3cret");
        assert_eq!(trim_secret("s3cret\r\n"), "s3cret");
        assert_eq!(trim_secret(" s3cret "), " s3cret ");
        assert_eq!(trim_secret("s3cret"), "s3cret");
    }
}
