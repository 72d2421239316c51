//! The proxy process: claims the data dir, loads the persisted routes,
//! serves users' HTTP (1.1 and h2c), the admin socket and optional
//! metrics, and stops gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::{ROUTES_FILE, SOCKET_FILE};
use crate::admin_server;
use crate::forward;
use crate::instance::Instance;
use crate::metrics_server;
use crate::routes::Routes;

/// How long in-flight requests get to finish once the proxy is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A client must send its request headers within this (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Holds `proxy.sock`, `routes.json`, `proxy.pid`, `proxy.lock`.
    pub data_dir: PathBuf,
    /// Where users' HTTP arrives.
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// A running proxy. Dropping it stops it too (without waiting).
pub struct Proxy {
    http_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts serving; returns once the listeners and the admin socket are
    /// bound and the persisted routes are live.
    pub async fn start(config: ProxyConfig) -> anyhow::Result<Proxy> {
        let dir = &config.data_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", dir.display()))?;
        let instance = Instance::claim(dir)?;
        let routes = Arc::new(Routes::load(dir.join(ROUTES_FILE))?);

        let http = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listening on {}: {e}", config.listen))?;
        let http_addr = http.local_addr()?;
        let metrics = match config.metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("metrics listener on {addr}: {e}"))?,
            ),
            None => None,
        };
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;

        // We hold the lock, so a socket file left here is a dead proxy's.
        let socket = dir.join(SOCKET_FILE);
        match std::fs::remove_file(&socket) {
            Ok(()) => tracing::info!(path = %socket.display(), "removed stale admin socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("removing stale socket {}: {e}", socket.display()),
        }
        let admin = admin_server::bind(&socket)?;

        tracing::info!(listen = %http_addr, metrics = ?metrics_addr, routes = routes.list().len(),
            data_dir = %dir.display(), "proxy started");
        let (stop, stopped) = oneshot::channel();
        let serving = Serving {
            http,
            routes: Arc::clone(&routes),
            socket,
            instance,
        };
        let admin_task = tokio::spawn(admin_server::serve(admin, Arc::clone(&routes)));
        let metrics_task = metrics.map(|l| tokio::spawn(metrics_server::serve(l, routes)));
        let task = tokio::spawn(async move {
            serving.run(stopped).await;
            admin_task.abort();
            if let Some(t) = metrics_task {
                t.abort();
            }
        });
        Ok(Proxy {
            http_addr,
            metrics_addr,
            stop,
            task,
        })
    }

    /// The bound users' address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, lets in-flight requests finish for a few seconds,
    /// then cuts what remains and releases the data dir.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| anyhow::anyhow!("proxy task failed: {e}"))
    }
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(config: ProxyConfig) -> anyhow::Result<()> {
    run_until(config, stop_signal()).await
}

/// Runs until `shutdown` resolves.
pub async fn run_until(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let proxy = Proxy::start(config).await?;
    shutdown.await;
    tracing::info!("proxy stopping");
    proxy.shutdown().await
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What the serving task owns.
struct Serving {
    http: TcpListener,
    routes: Arc<Routes>,
    socket: PathBuf,
    instance: Instance,
}

impl Serving {
    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                // A dropped `Proxy` stops it too.
                _ = &mut stopped => break,
                accepted = self.http.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let routes = Arc::clone(&self.routes);
            let svc = service_fn(move |req| {
                let routes = Arc::clone(&routes);
                async move { Ok::<_, Infallible>(forward::handle(&routes, peer, req).await) }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
        drop(self.http);
        let _ = std::fs::remove_file(&self.socket);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period; closing them");
        }
        self.routes.close_all();
        drop(self.instance);
        tracing::info!("proxy stopped");
    }
}
