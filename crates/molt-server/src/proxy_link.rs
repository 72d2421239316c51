//! The server's link to `molt proxy`: finds the proxy of this data dir over
//! its admin socket, starts one as its own process when none answers, and
//! keeps it running. It speaks the admin protocol through `AdminClient`.

use anyhow::{anyhow, bail, Context, Result};
use molt_proxy::admin::{Request, Response, Route, SOCKET_FILE};
use molt_proxy::AdminClient;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How long a route change may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ProxyLink {
    data_dir: PathBuf,
    listen: SocketAddr,
    /// Where the proxy serves its Prometheus metrics, if anywhere.
    metrics: Option<SocketAddr>,
    /// The proxy's worker threads; `None` leaves its default.
    threads: Option<NonZeroUsize>,
    /// `--trusted-proxy` blocks for the proxy.
    trusted: Vec<String>,
    /// `--proxy-protocol` for the proxy.
    proxy_protocol: bool,
    /// `--https` for the proxy.
    https: Option<SocketAddr>,
    exe: PathBuf,
    admin: AdminClient,
}

impl ProxyLink {
    pub fn new(
        data_dir: &Path,
        listen: SocketAddr,
        metrics: Option<SocketAddr>,
        threads: Option<NonZeroUsize>,
    ) -> Result<Self> {
        let exe =
            std::env::current_exe().context("cannot find the molt binary to start the proxy")?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            listen,
            metrics,
            threads,
            trusted: Vec::new(),
            proxy_protocol: false,
            https: None,
            exe,
            admin: AdminClient::at(data_dir.join(SOCKET_FILE)).with_timeout(CALL_TIMEOUT),
        })
    }

    /// Who the proxy it starts believes (`--trusted-proxy`,
    /// `--proxy-protocol`).
    pub fn with_edge(mut self, trusted: Vec<String>, proxy_protocol: bool) -> Self {
        self.trusted = trusted;
        self.proxy_protocol = proxy_protocol;
        self
    }

    /// Where the proxy it starts serves HTTPS (`--https`), if anywhere.
    pub fn with_https(mut self, https: Option<SocketAddr>) -> Self {
        self.https = https;
        self
    }

    /// Sends one request and reads its answer; a proxy that refuses is an
    /// error carrying the proxy's message.
    pub async fn call(&self, request: &Request, timeout: Duration) -> Result<Response> {
        Ok(self.admin.call(request, timeout).await?)
    }

    pub async fn ping(&self) -> Result<Response> {
        self.call(&Request::Ping, Duration::from_secs(2)).await
    }

    /// Makes sure a proxy serves this data dir, starting one if needed. A
    /// running proxy started from another build than this server's (the
    /// binary was upgraded) is upgraded in place: a new one takes its
    /// listening socket over, so no connection is refused.
    pub async fn ensure_running(&self) -> Result<()> {
        if let Ok(running) = self.ping().await {
            self.upgrade_if_stale(&running).await;
            return Ok(());
        }
        self.spawn(false)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            match self.ping().await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(anyhow!(
            "the proxy did not start within 15 s ({}); see {}",
            last.map(|e| e.to_string()).unwrap_or_default(),
            self.data_dir.join("proxy.log").display()
        ))
    }

    /// Upgrades the running proxy when its binary is not ours. Never fails:
    /// an old proxy that keeps serving beats none.
    async fn upgrade_if_stale(&self, running: &Response) {
        let ours = molt_proxy::exe_id();
        let pid = running.pid.unwrap_or_default();
        let version = running.version.as_deref().unwrap_or("unknown");
        let https_wanted = self.https.map(|a| a.port());
        match running.exe_id.as_deref() {
            // The same build, but not serving HTTPS where this server wants
            // it (it was started by a server without `--https`): a takeover
            // with the new flags, which keeps the HTTP socket.
            Some(theirs) if theirs == ours && running.https_port != https_wanted => {
                tracing::info!(
                    pid,
                    running = ?running.https_port,
                    wanted = ?https_wanted,
                    "the running proxy's HTTPS listener is not the one wanted; restarting it in place"
                );
                match self.take_over(pid).await {
                    Ok(new_pid) => tracing::info!(old_pid = pid, new_pid, "proxy restarted in place"),
                    Err(e) => tracing::warn!(
                        "could not restart the proxy in place; the running one keeps serving without the HTTPS wanted: {e:#}"
                    ),
                }
            }
            Some(theirs) if theirs == ours => {}
            Some(_) => {
                tracing::info!(
                    pid,
                    version,
                    "the running proxy is another build than this server; upgrading it in place"
                );
                match self.take_over(pid).await {
                    Ok(new_pid) => {
                        tracing::info!(old_pid = pid, new_pid, "proxy upgraded in place")
                    }
                    Err(e) => tracing::warn!(
                        "could not upgrade the proxy in place; the running one keeps serving: {e:#}"
                    ),
                }
            }
            None => tracing::warn!(
                pid,
                version,
                "the running proxy predates in-place upgrades, so it keeps serving; \
                 stop it (kill {pid}) to have this server start its own"
            ),
        }
    }

    /// Starts `molt proxy --takeover` and waits until the proxy that
    /// answers is the new one; returns its pid.
    async fn take_over(&self, old_pid: u32) -> Result<u32> {
        let mut exited = self.spawn(true)?;
        let ours = molt_proxy::exe_id();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(answer) = self.ping().await {
                if let Some(pid) = answer.pid.filter(|pid| *pid != old_pid) {
                    if answer.exe_id.as_deref() == Some(ours.as_str()) {
                        return Ok(pid);
                    }
                }
            }
            if let Ok(status) = exited.try_recv() {
                bail!(
                    "the new proxy exited ({status}) before taking over; see {}",
                    self.data_dir.join("proxy.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "the new proxy did not take over within 30 s; see {}",
            self.data_dir.join("proxy.log").display()
        )
    }

    /// Starts `molt proxy` in its own process group, so that it outlives
    /// this server (the whole point of a separate data plane). With
    /// `takeover`, it takes the running proxy's sockets over. The receiver
    /// learns how the process exited.
    fn spawn(&self, takeover: bool) -> Result<tokio::sync::oneshot::Receiver<String>> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("proxy.log"))
            .context("cannot open the proxy's log file")?;
        let mut command = std::process::Command::new(&self.exe);
        command
            .arg("proxy")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.listen.to_string());
        if let Some(metrics) = self.metrics {
            command.arg("--metrics").arg(metrics.to_string());
        }
        if let Some(https) = self.https {
            command.arg("--https").arg(https.to_string());
        }
        if let Some(threads) = self.threads {
            command.arg("--threads").arg(threads.to_string());
        }
        for block in &self.trusted {
            command.arg("--trusted-proxy").arg(block);
        }
        if self.proxy_protocol {
            command.arg("--proxy-protocol");
        }
        if takeover {
            command.arg("--takeover");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start `molt proxy`")?;
        tracing::info!(pid = child.id(), listen = %self.listen, takeover, "started molt proxy");
        // Reap it when it exits so it never lingers as a zombie.
        let (exited, exit) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let status = match child.wait() {
                Ok(status) => status.to_string(),
                Err(e) => format!("unknown status: {e}"),
            };
            let _ = exited.send(status);
        });
        Ok(exit)
    }

    /// Restarts the proxy within a second of it dying.
    pub fn supervise(self: std::sync::Arc<Self>) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if self.ping().await.is_err() {
                    tracing::warn!("the proxy does not answer; starting it again");
                    if let Err(e) = self.ensure_running().await {
                        tracing::error!("cannot restart the proxy: {e:#}");
                    }
                }
            }
        });
    }

    /// The admin client, for calls without a wrapper here.
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    pub async fn set_route(&self, route: Route) -> Result<()> {
        Ok(self.admin.set_route(route).await?)
    }

    pub async fn remove_route(&self, app: &str) -> Result<()> {
        Ok(self.admin.remove_route(app).await?)
    }

    /// Holds `app`'s new requests (they wait, unsent) until `resume`, each
    /// for at most `max_pause`, at most `max_queued` at once; past either
    /// they get a 503. Used by a recreate while no container serves.
    pub async fn pause(&self, app: &str, max_pause: Duration, max_queued: usize) -> Result<()> {
        Ok(self.admin.pause(app, max_pause, max_queued).await?)
    }

    /// Releases `app`'s held requests to its current targets.
    pub async fn resume(&self, app: &str) -> Result<()> {
        Ok(self.admin.resume(app).await?)
    }

    pub async fn routes(&self) -> Result<Vec<Route>> {
        Ok(self.admin.list_routes().await?)
    }

    /// Waits for a retired target to drain; returns whether it drained
    /// before the timeout and how many connections were cut if not.
    pub async fn wait_drained(
        &self,
        app: &str,
        addr: &str,
        timeout: Duration,
    ) -> Result<(bool, u64)> {
        let outcome = self.admin.wait_drained(app, addr, timeout).await?;
        Ok((outcome.drained, outcome.closed))
    }
}
