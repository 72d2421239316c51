//! `molt logs` and `molt debug`: what the App's containers print, and what
//! the server knows about an App when something is off.

use super::client::{Client, OK};
use anyhow::Result;
use clap::Args;
use reqwest::Method;
use std::io::Write;

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    pub follow: bool,
    /// Start with the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
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
    }
    // Following has no end, so no timeout: a day is "forever" here.
    let timeout = a.follow.then(|| std::time::Duration::from_secs(86_400));
    let mut resp = client.send(Method::GET, url, None, timeout).await?;
    let mut out = std::io::stdout();
    while let Some(chunk) = resp.chunk().await.map_err(|e| client.transport(e))? {
        if out.write_all(&chunk).and_then(|_| out.flush()).is_err() {
            break; // stdout closed, e.g. piped into `head`
        }
    }
    Ok(OK)
}

pub async fn debug(client: &Client, name: &str) -> Result<u8> {
    let value = client.get(&["apps", name, "debug"]).await?;
    value.print()?;
    Ok(OK)
}
