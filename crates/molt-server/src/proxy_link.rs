//! The server's link to `molt proxy`: finds the proxy of this data dir over
//! its admin socket, starts one as its own process when none answers, and
//! keeps it running.

use anyhow::{anyhow, bail, Context, Result};
use molt_proxy::admin::{Request, Response, Route, SOCKET_FILE};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub struct ProxyLink {
    data_dir: PathBuf,
    listen: SocketAddr,
    exe: PathBuf,
}

impl ProxyLink {
    pub fn new(data_dir: &Path, listen: SocketAddr) -> Result<Self> {
        let exe =
            std::env::current_exe().context("cannot find the molt binary to start the proxy")?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            listen,
            exe,
        })
    }

    /// Sends one request and reads its answer; a proxy that refuses is an
    /// error carrying the proxy's message.
    pub async fn call(&self, request: &Request, timeout: Duration) -> Result<Response> {
        let socket = self.data_dir.join(SOCKET_FILE);
        let exchange = async {
            let stream = UnixStream::connect(&socket).await?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_string(request)?;
            line.push('\n');
            write.write_all(line.as_bytes()).await?;
            let mut answer = String::new();
            BufReader::new(read).read_line(&mut answer).await?;
            if answer.is_empty() {
                bail!("the proxy closed the admin connection without answering");
            }
            Ok::<Response, anyhow::Error>(serde_json::from_str(&answer)?)
        };
        let response = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| anyhow!("the proxy did not answer within {} ms", timeout.as_millis()))??;
        if !response.ok {
            bail!(
                "the proxy refused: {}",
                response.error.unwrap_or_else(|| "no reason given".into())
            );
        }
        Ok(response)
    }

    pub async fn ping(&self) -> Result<Response> {
        self.call(&Request::Ping, Duration::from_secs(2)).await
    }

    /// Makes sure a proxy serves this data dir, starting one if needed.
    pub async fn ensure_running(&self) -> Result<()> {
        if self.ping().await.is_ok() {
            return Ok(());
        }
        self.spawn()?;
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

    /// Starts `molt proxy` in its own process group, so that it outlives
    /// this server (the whole point of a separate data plane).
    fn spawn(&self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("proxy.log"))
            .context("cannot open the proxy's log file")?;
        let mut child = std::process::Command::new(&self.exe)
            .arg("proxy")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.listen.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start `molt proxy`")?;
        tracing::info!(pid = child.id(), listen = %self.listen, "started molt proxy");
        // Reap it when it exits so it never lingers as a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
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

    pub async fn set_route(&self, route: Route) -> Result<()> {
        self.call(&Request::SetRoute { route }, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    pub async fn remove_route(&self, app: &str) -> Result<()> {
        self.call(
            &Request::RemoveRoute {
                app: app.to_string(),
            },
            Duration::from_secs(10),
        )
        .await
        .map(|_| ())
    }

    pub async fn routes(&self) -> Result<Vec<Route>> {
        Ok(self
            .call(&Request::ListRoutes, Duration::from_secs(5))
            .await?
            .routes
            .unwrap_or_default())
    }

    /// Waits for a retired target to drain; returns whether it drained
    /// before the timeout and how many connections were cut if not.
    pub async fn wait_drained(
        &self,
        app: &str,
        addr: &str,
        timeout: Duration,
    ) -> Result<(bool, u64)> {
        let response = self
            .call(
                &Request::WaitDrained {
                    app: app.to_string(),
                    addr: addr.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                },
                timeout + Duration::from_secs(5),
            )
            .await?;
        Ok((
            response.drained.unwrap_or(true),
            response.closed.unwrap_or(0),
        ))
    }
}
