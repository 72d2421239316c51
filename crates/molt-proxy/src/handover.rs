//! The taking side of a handover: a new proxy (`molt proxy --takeover`)
//! asks the running one of the same data dir for its listening sockets, its
//! lock and its routes, serves with them, then confirms. The listening
//! socket itself moves, not a copy of its address: its queue of not yet
//! accepted connections stays, so no connection is refused at any moment.
//! The giving side is in `admin_server`.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::admin::{read_line, Paused, Request, Response, Route};
use crate::fdpass;

/// The running proxy first waits for changes in progress (a route being
/// saved), so allow it some time.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// What the running proxy handed over.
pub struct Inherited {
    pub http: TcpListener,
    pub https: Option<TcpListener>,
    /// The HTTPS certificates (they live in memory only).
    pub certs: Vec<crate::tls::TlsCert>,
    pub metrics: Option<TcpListener>,
    /// The TCP admin listener (`--admin-listen`), if the running one had it.
    pub admin: Option<TcpListener>,
    pub lock: File,
    pub routes: Vec<Route>,
    pub paused: Vec<Paused>,
    pub from_pid: Option<u32>,
    pub from_version: Option<String>,
    /// The handover's connection, to `confirm` on.
    pub conn: UnixStream,
}

/// Asks the proxy at `socket` to hand over. `Ok(None)`: nothing runs there
/// (no socket, or a dead one's), so there is nothing to take over.
pub async fn request(socket: &Path) -> anyhow::Result<Option<Inherited>> {
    let mut conn = match UnixStream::connect(socket).await {
        Ok(conn) => conn,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => anyhow::bail!(
            "cannot reach the running proxy at {}: {e}",
            socket.display()
        ),
    };
    let mut line = serde_json::to_vec(&Request::Handover)?;
    line.push(b'\n');
    conn.write_all(&line).await?;
    let (answer, fds) = tokio::time::timeout(ASK_TIMEOUT, fdpass::recv_line_with_fds(&conn))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the running proxy did not hand over within {} s",
                ASK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("receiving the handover: {e}"))?;
    let resp: Response = serde_json::from_slice(&answer)
        .map_err(|e| anyhow::anyhow!("unexpected handover answer: {e}"))?;
    if !resp.ok {
        let why = resp.error.unwrap_or_else(|| "no reason given".into());
        if why.contains("unknown variant") {
            anyhow::bail!(
                "the running proxy predates in-place upgrades and cannot hand over ({why}); \
                 stop it, then start this one"
            );
        }
        anyhow::bail!("the running proxy refused to hand over: {why}");
    }
    let names = resp.fds.unwrap_or_default();
    if names.len() != fds.len() {
        anyhow::bail!(
            "the handover announced {} descriptors and passed {}",
            names.len(),
            fds.len()
        );
    }
    let (mut http, mut lock, mut metrics, mut https, mut admin) = (None, None, None, None, None);
    for (name, fd) in names.iter().zip(fds) {
        match name.as_str() {
            "http" => http = Some(TcpListener::from(fd)),
            "lock" => lock = Some(File::from(fd)),
            "metrics" => metrics = Some(TcpListener::from(fd)),
            "https" => https = Some(TcpListener::from(fd)),
            "admin" => admin = Some(TcpListener::from(fd)),
            // Something a later version passes: not ours to keep.
            _ => drop(fd),
        }
    }
    let (Some(http), Some(lock)) = (http, lock) else {
        anyhow::bail!("the handover lacks the listening socket or the lock");
    };
    Ok(Some(Inherited {
        http,
        https,
        certs: resp.certs.unwrap_or_default(),
        metrics,
        admin,
        lock,
        routes: resp.routes.unwrap_or_default(),
        paused: resp.paused.unwrap_or_default(),
        from_pid: resp.pid,
        from_version: resp.version,
        conn,
    }))
}

/// Tells the previous proxy that we serve and own the admin socket: it
/// stops accepting and winds down. Until then it could take everything
/// back, so this comes last.
pub async fn confirm(conn: UnixStream) -> anyhow::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut line = serde_json::to_vec(&Request::HandoverDone)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        CONFIRM_TIMEOUT,
        read_line(&mut BufReader::new(read), &mut answer),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the previous proxy did not acknowledge the handover"))??;
    let resp: Response = serde_json::from_slice(&answer)
        .map_err(|e| anyhow::anyhow!("unexpected acknowledgement: {e}"))?;
    if !resp.ok {
        anyhow::bail!(
            "the previous proxy refused the confirmation: {}",
            resp.error.unwrap_or_default()
        );
    }
    Ok(())
}
