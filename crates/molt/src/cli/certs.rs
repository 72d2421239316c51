//! `molt certs ...`: HTTPS certificates by domain. Files are read here and
//! sent to the server, which checks them, seals the key and puts them in
//! force in the proxy.

use super::client::{usage, Client, OK};
use super::output::{short_time, table};
use anyhow::Result;
use clap::{Args, Subcommand};
use molt_core::api::{AddCertRequest, CertView};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Use your own certificate for a domain (a wildcard like
    /// `*.example.com` covers one label).
    Add(AddArgs),
    /// List the certificates: domain, issuer, expiry, source. Warns about
    /// any that expires within 14 days.
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget a domain's certificate (HTTPS for it stops).
    Remove {
        /// The domain, as listed.
        domain: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The domain, e.g. `app.example.com` or `*.example.com`.
    pub domain: String,
    /// PEM file: the certificate first, then its intermediates.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// PEM file with the private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

pub async fn run(client: &Client, command: CertsCommand) -> Result<u8> {
    match command {
        CertsCommand::Add(args) => add(client, args).await,
        CertsCommand::List { json } => list(client, json).await,
        CertsCommand::Remove { domain } => {
            client.delete(&["certs", &domain]).await?;
            outln!("Removed the certificate for {domain}.");
            Ok(OK)
        }
    }
}

fn read(path: &PathBuf, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })
}

async fn add(client: &Client, args: AddArgs) -> Result<u8> {
    let body = serde_json::to_value(AddCertRequest {
        domain: args.domain,
        cert_pem: read(&args.cert, "certificate")?,
        key_pem: read(&args.key, "key")?,
    })?;
    let answer = client.post(&["certs"], &body).await?;
    let saved: CertView = answer.decode("a certificate")?;
    outln!(
        "HTTPS for {} uses your certificate (issued by {}, valid until {}).",
        saved.domain,
        saved.issuer,
        short_time(&saved.not_after)
    );
    warn_if_soon(&saved);
    Ok(OK)
}

fn warn_if_soon(cert: &CertView) {
    if cert.expires_soon {
        eprintln!(
            "warning: the certificate for {} expires in {} days ({})",
            cert.domain,
            cert.days_left.max(0),
            short_time(&cert.not_after)
        );
    }
}

async fn list(client: &Client, json: bool) -> Result<u8> {
    let value = client.get(&["certs"]).await?;
    if json {
        value.print()?;
        return Ok(OK);
    }
    let certs: Vec<CertView> = value.decode("a list of certificates")?;
    if certs.is_empty() {
        outln!("No certificates. Add one with: molt certs add DOMAIN --cert FILE --key FILE");
        return Ok(OK);
    }
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|c| {
            let expires = if c.expires_soon {
                format!(
                    "{} (in {} days!)",
                    short_time(&c.not_after),
                    c.days_left.max(0)
                )
            } else {
                short_time(&c.not_after)
            };
            vec![
                c.domain.clone(),
                c.issuer.clone(),
                expires,
                c.source.clone(),
            ]
        })
        .collect();
    out!(
        "{}",
        table(&["DOMAIN", "ISSUER", "EXPIRES", "SOURCE"], &rows)
    );
    for cert in &certs {
        warn_if_soon(cert);
    }
    Ok(OK)
}
