//! The proxy process: claims the data dir, loads the persisted routes,
//! serves users' HTTP (1.1 and h2c), the admin socket and optional
//! metrics, and stops gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin::{ROUTES_FILE, SOCKET_FILE};
use crate::admin_server::{self, Admin, Handoff};
use crate::admin_token::AdminToken;
use crate::body::ProxyBody;
use crate::edge::{self, EdgeConfig, Prefixed};
use crate::forward::{self, Peer};
use crate::handover::{self, Inherited};
use crate::instance::{exe_id, Instance};
use crate::metrics_server;
use crate::routes::Routes;
use crate::tls::{self, Certs};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// How many threads `molt proxy` serves traffic with by default: half the
/// CPUs, at least one. The proxy shares its host with the Apps it serves
/// and with their clients; measured on 2 CPUs (BENCHMARKS.md), one worker
/// spent 52 µs of CPU per request where two spent 80, because two workers
/// competing with the Apps for the same cores mostly hand tasks to each
/// other and wake each other up.
pub fn default_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

/// How long in-flight requests get to finish once the proxy is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After a handover, how long busy keep-alive connections get to receive a
/// `Connection: close` answer before idle ones are closed.
const HANDOVER_LINGER: Duration = Duration::from_secs(1);
/// How often the accept loop looks whether a burst of connections ended
/// (and freed memory can go back to the system).
const QUIET_SAMPLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Holds `proxy.sock`, `routes.json`, `proxy.pid`, `proxy.lock`.
    pub data_dir: PathBuf,
    /// Where users' HTTP arrives.
    pub listen: SocketAddr,
    /// Where users' HTTPS arrives, if anywhere (see `tls`).
    pub https: Option<SocketAddr>,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Take the listening sockets, lock and routes over from the proxy that
    /// runs for this data dir (an upgrade with no refused connection; that
    /// proxy finishes what it has in flight and exits). With none running,
    /// start afresh.
    pub takeover: bool,
    /// Limits and trust for what faces the internet.
    pub edge: EdgeConfig,
    /// Serve the admin protocol over TCP here too, to a server on another
    /// machine that offers this token (`--admin-listen`,
    /// `--admin-token-file`).
    pub admin_listen: Option<(SocketAddr, AdminToken)>,
}

/// A running proxy. Dropping it stops it too (without waiting).
pub struct Proxy {
    http_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    /// Where the admin protocol is served over TCP, if anywhere.
    admin_addr: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    handed_over: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts serving; returns once the listeners and the admin socket are
    /// bound and the persisted (or handed-over) routes are live.
    pub async fn start(config: ProxyConfig) -> anyhow::Result<Proxy> {
        let dir = &config.data_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| anyhow::anyhow!("creating data dir {}: {e}", dir.display()))?;
        // Pin the binary's identity before anything can replace the file.
        let _ = exe_id();
        let socket = dir.join(SOCKET_FILE);
        let inherited = if config.takeover {
            handover::request(&socket).await?
        } else {
            None
        };
        let Some(inherited) = inherited else {
            if config.takeover {
                tracing::info!("no running proxy to take over; starting afresh");
            }
            let instance = Instance::claim(dir)?;
            let routes = Routes::load(dir.join(ROUTES_FILE))?;
            let http = TcpListener::bind(config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("listening on {}: {e}", config.listen))?;
            let metrics = match config.metrics {
                Some(addr) => Some(bind_metrics(addr).await?),
                None => None,
            };
            let https = match config.https {
                Some(addr) => Some(tls::bind(addr).await?),
                None => None,
            };
            let admin = match config.admin_listen {
                Some((addr, token)) => Some((bind_admin(addr).await?, token)),
                None => None,
            };
            let listeners = Listeners {
                http,
                https,
                metrics,
                admin,
            };
            let certs = Arc::new(Certs::default());
            return Self::serve(dir, routes, certs, listeners, instance, None, config.edge).await;
        };

        // Taking over. Any error before `confirm` drops the handover's
        // connection, and the running proxy goes on as if asked nothing.
        let Inherited {
            http,
            https,
            metrics,
            admin,
            lock,
            certs,
            routes,
            paused,
            from_pid,
            from_version,
            conn,
        } = inherited;
        let routes = Routes::with(
            dir.join(ROUTES_FILE),
            routes,
            &paused,
            "the handed-over routes",
        )?;
        let http = tokio_listener(http)?;
        let http_addr = http.local_addr()?;
        if config.listen.port() != 0 && config.listen != http_addr {
            anyhow::bail!(
                "the running proxy listens on {http_addr}, not {}: a takeover keeps the address",
                config.listen
            );
        }
        let metrics = match (config.metrics, metrics) {
            (Some(want), Some(got)) => {
                let got = tokio_listener(got)?;
                if want.port() == 0 || got.local_addr()? == want {
                    Some(got)
                } else {
                    Some(bind_metrics(want).await?)
                }
            }
            (Some(want), None) => Some(bind_metrics(want).await?),
            (None, _) => None,
        };
        let https = tls::inherit(config.https, https).await?;
        let certs = Arc::new(Certs::inherit(certs));
        let admin = match (config.admin_listen, admin) {
            (Some((want, token)), Some(got)) => {
                let got = tokio_listener(got)?;
                if want.port() == 0 || got.local_addr()? == want {
                    Some((got, token))
                } else {
                    Some((bind_admin(want).await?, token))
                }
            }
            (Some((want, token)), None) => Some((bind_admin(want).await?, token)),
            (None, _) => None,
        };
        let instance = Instance::adopt(dir, lock)?;
        let listeners = Listeners {
            http,
            https,
            metrics,
            admin,
        };
        let proxy = Self::serve(
            dir,
            routes,
            certs,
            listeners,
            instance,
            Some(conn),
            config.edge,
        )
        .await?;
        tracing::info!(from_pid = ?from_pid, from_version = ?from_version, "took over from the running proxy");
        Ok(proxy)
    }

    /// Serves with what `start` gathered; `handover` is the connection to
    /// confirm a takeover on, once everything here is live.
    async fn serve(
        dir: &std::path::Path,
        routes: Routes,
        certs: Arc<Certs>,
        listeners: Listeners,
        instance: Instance,
        handover: Option<tokio::net::UnixStream>,
        mut edge: EdgeConfig,
    ) -> anyhow::Result<Proxy> {
        let Listeners {
            http,
            https,
            metrics,
            admin: admin_tcp,
        } = listeners;
        edge.max_connections = edge::connections_that_fit(edge.max_connections);
        let routes = Arc::new(routes);
        let http_addr = http.local_addr()?;
        let https_addr = https.as_ref().map(|l| l.local_addr()).transpose()?;
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;
        // Duplicates of our descriptors, kept for handing over to a
        // successor in turn.
        let handoff = Handoff {
            http: http.as_fd().try_clone_to_owned()?,
            lock: instance.lock().as_fd().try_clone_to_owned()?,
            metrics: metrics
                .as_ref()
                .map(|l| l.as_fd().try_clone_to_owned())
                .transpose()?,
            https: https
                .as_ref()
                .map(|l| l.as_fd().try_clone_to_owned())
                .transpose()?,
            admin: admin_tcp
                .as_ref()
                .map(|(l, _)| l.as_fd().try_clone_to_owned())
                .transpose()?,
            http_addr,
        };
        let socket = dir.join(SOCKET_FILE);
        let (admin_listener, own_socket) = admin_server::bind(&socket)?;
        let (admin, rebound) = Admin::new(
            Arc::clone(&routes),
            Arc::clone(&certs),
            socket,
            own_socket,
            handoff,
        );
        let handed_over = admin.handed_over();

        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        crate::metrics::set_shards(threads);
        let https = https
            .map(|l| Ok::<_, anyhow::Error>((l, tls::acceptor(Arc::clone(&certs))?)))
            .transpose()?;
        if let Some(addr) = https_addr {
            certs.serve_https_on(addr.port());
        }
        tracing::info!(listen = %http_addr, https = ?https_addr, metrics = ?metrics_addr, routes = routes.list().len(),
            threads, max_connections = edge.max_connections, trusted_proxies = edge.trusted_proxies.len(),
            proxy_protocol = edge.proxy_protocol, data_dir = %dir.display(), "proxy started");
        let (stop, stopped) = oneshot::channel();
        let serving = Serving {
            http,
            https,
            certs: Arc::clone(&certs),
            routes: Arc::clone(&routes),
            admin: Arc::clone(&admin),
            instance,
            closing: Arc::new(AtomicBool::new(false)),
            edge: Arc::new(edge),
        };
        let admin_addr = admin_tcp
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()?;
        if let Some(addr) = admin_addr {
            tracing::info!(admin = %addr, "serving the admin protocol over TCP to holders of the admin token");
        }
        let admin_tcp_task = match admin_tcp {
            Some((listener, token)) => {
                let tls = crate::admin_tls::acceptor(&token)?;
                Some(tokio::spawn(admin_server::serve_tcp(
                    listener,
                    Arc::clone(&admin),
                    token,
                    tls,
                )))
            }
            None => None,
        };
        let admin_task = tokio::spawn(admin_server::serve(admin_listener, admin, rebound));
        let metrics_task = metrics.map(|l| tokio::spawn(metrics_server::serve(l, routes)));
        if let Some(t) = &metrics_task {
            // After a handover the successor answers scrapes; ours would
            // report a proxy that is winding down.
            let abort = t.abort_handle();
            let mut handed_over = handed_over.clone();
            tokio::spawn(async move {
                // An error means the proxy is gone: nothing to do.
                if handed_over.wait_for(|v| *v).await.is_ok() {
                    abort.abort();
                }
            });
        }
        let watch_handover = handed_over.clone();
        let task = tokio::spawn(async move {
            serving.run(stopped, watch_handover).await;
            admin_task.abort();
            if let Some(t) = admin_tcp_task {
                t.abort();
            }
            if let Some(t) = metrics_task {
                t.abort();
            }
        });
        if let Some(conn) = handover {
            if let Err(e) = handover::confirm(conn).await {
                tracing::warn!(error = %e, "the previous proxy did not acknowledge the takeover");
            }
        }
        Ok(Proxy {
            http_addr,
            https_addr,
            metrics_addr,
            admin_addr,
            stop,
            handed_over,
            task,
        })
    }

    /// The bound users' address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound HTTPS address, if the proxy serves HTTPS.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The bound TCP admin address (`--admin-listen`), if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Resolves once a successor has taken over (this proxy then accepts
    /// nothing new and winds down on its own; see `finished`).
    pub async fn handed_over(&self) {
        wait_true(self.handed_over.clone()).await;
    }

    /// Waits for a proxy that handed over to finish what it had in flight
    /// (bounded by its routes' drain timeout).
    pub async fn finished(self) -> anyhow::Result<()> {
        let Proxy { stop, task, .. } = self;
        let result = task.await;
        drop(stop);
        result.map_err(|e| anyhow::anyhow!("proxy task failed: {e}"))
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

/// Runs until SIGTERM or SIGINT, or until a successor took over and this
/// process finished what it had in flight.
pub async fn run(config: ProxyConfig) -> anyhow::Result<()> {
    run_until(config, stop_signal()).await
}

/// Runs until `shutdown` resolves, or until handed over and drained (a
/// `shutdown` during that drain cuts it short).
pub async fn run_until(
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let proxy = Proxy::start(config).await?;
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {
            tracing::info!("proxy stopping");
            return proxy.shutdown().await;
        }
        () = proxy.handed_over() => {}
    }
    let Proxy { stop, task, .. } = proxy;
    tokio::pin!(task);
    let result = tokio::select! {
        result = &mut task => result,
        () = &mut shutdown => {
            tracing::info!("told to stop while finishing after a handover");
            let _ = stop.send(());
            task.await
        }
    };
    result.map_err(|e| anyhow::anyhow!("proxy task failed: {e}"))
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

/// The proxy's listening sockets.
struct Listeners {
    http: TcpListener,
    https: Option<TcpListener>,
    metrics: Option<TcpListener>,
    /// The TCP admin listener and the token it asks for.
    admin: Option<(TcpListener, AdminToken)>,
}

/// What the serving task owns.
struct Serving {
    http: TcpListener,
    /// The HTTPS listener and its TLS settings, if any.
    https: Option<(TcpListener, TlsAcceptor)>,
    /// Certificates and ACME challenge answers.
    certs: Arc<Certs>,
    routes: Arc<Routes>,
    admin: Arc<Admin>,
    instance: Instance,
    /// Set after a handover: HTTP/1 responses say `Connection: close`, so
    /// busy keep-alive clients move to the successor between requests
    /// instead of racing a close.
    closing: Arc<AtomicBool>,
    edge: Arc<EdgeConfig>,
}

/// Bytes of an answer an HTTP/2 stream holds before it stops taking more
/// from the App: enough to keep a stream busy, little enough that 256
/// streams of a client that reads nothing pin a few MB, not 100.
const H2_SEND_BUFFER: usize = 16 * 1024;

/// Why the accept loop ended.
enum Stop {
    Shutdown,
    HandedOver,
}

impl Serving {
    async fn run(self, mut stopped: oneshot::Receiver<()>, handed_over: watch::Receiver<bool>) {
        let edge = &self.edge;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(edge.header_read_timeout)
            // Past this a request head gets a 431 from hyper.
            .max_buf_size(edge.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(edge.h2_keep_alive)
            .keep_alive_timeout(edge.h2_keep_alive)
            .max_concurrent_streams(edge.h2_max_streams)
            // What a stream may hold for a client that is not reading
            // (hyper's default is 400 KB): times the open streams, that
            // is what one connection can pin.
            .max_send_buf_size(H2_SEND_BUFFER)
            .max_header_list_size(u32::try_from(edge.max_header_bytes).unwrap_or(u32::MAX));
        let builder = Arc::new(builder);
        // Every connection holds a receiver of `open`: their count is the
        // number of connections (the limit reads it, one atomic load per
        // accept), and `closed` resolves once all are gone. Cancelling
        // `finish` asks them all to finish gracefully.
        let open = watch::Sender::new(());
        let finish = CancellationToken::new();
        let handover = wait_true(handed_over);
        tokio::pin!(handover);
        // Freed heap goes back to the system when a burst of connections
        // has ended (see `memory`).
        let mut quiet = crate::memory::QuietWatch::default();
        let mut quiet_tick = tokio::time::interval(QUIET_SAMPLE);
        quiet_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            let (stream, peer, tls) = tokio::select! {
                // A dropped `Proxy` stops it too.
                _ = &mut stopped => break Stop::Shutdown,
                () = &mut handover => break Stop::HandedOver,
                _ = quiet_tick.tick() => {
                    if quiet.sample(open.receiver_count()) {
                        tokio::task::spawn_blocking(crate::memory::give_back);
                    }
                    continue;
                }
                accepted = self.http.accept() => match accepted {
                    Ok((stream, peer)) => (stream, peer, None),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                accepted = tls::accept(self.https.as_ref()) => match accepted {
                    Ok((stream, peer, acceptor)) => (stream, peer, Some(acceptor)),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            if open.receiver_count() >= edge.max_connections {
                match tls {
                    None => edge::refuse(stream, edge.max_connections),
                    // No plain 503 on a TLS port: just closed.
                    Some(_) => drop(stream),
                }
                continue;
            }
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(
                stream,
                peer,
                tls,
                Arc::clone(&self.certs),
                Arc::clone(&builder),
                Arc::clone(&self.routes),
                Arc::clone(&self.closing),
                Arc::clone(&self.edge),
                Tracked {
                    _open: open.subscribe(),
                    finish: finish.child_token(),
                },
            ));
        };
        // Ours only: after a handover the successor's keep the socket
        // listening (and the data dir locked).
        drop(self.http);
        drop(self.https);
        self.admin.drop_handoff();
        match why {
            Stop::Shutdown => {
                self.admin.release_socket();
                finish.cancel();
                if tokio::time::timeout(SHUTDOWN_GRACE, open.closed())
                    .await
                    .is_err()
                {
                    tracing::warn!("connections still open after the grace period; closing them");
                }
            }
            Stop::HandedOver => {
                self.closing.store(true, Ordering::Relaxed);
                let grace = handover_grace(&self.routes);
                let routes = Arc::clone(&self.routes);
                let drain = async move {
                    // Busy keep-alive connections get a moment to end on a
                    // response that says so; then idle ones are closed
                    // (HTTP/2 gets a GOAWAY) and in-flight ones finish.
                    let linger = tokio::time::Instant::now() + HANDOVER_LINGER;
                    while open.receiver_count() > 0 && tokio::time::Instant::now() < linger {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    finish.cancel();
                    open.closed().await;
                    // Upgraded connections (WebSockets) outlive their HTTP
                    // connection; they get the same grace.
                    while routes.all().iter().any(|r| r.in_flight() > 0) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    finished = tokio::time::timeout(grace, drain) => if finished.is_err() {
                        tracing::warn!(?grace, "still busy after the handover grace; closing what remains");
                    },
                    _ = &mut stopped => {
                        tracing::warn!("told to stop while finishing after a handover; closing what remains");
                    }
                }
            }
        }
        self.routes.close_all();
        drop(self.instance);
        tracing::info!("proxy stopped");
    }
}

/// Serves one user connection: its PROXY header and first bytes under the
/// first-bytes deadline, then HTTP/1 or HTTP/2 until it ends, an HTTP/2 one
/// idles past its timeout, or the proxy asks it to finish (`tracked`).
#[allow(clippy::too_many_arguments)]
async fn connection(
    mut stream: tokio::net::TcpStream,
    mut peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    certs: Arc<Certs>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    routes: Arc<Routes>,
    closing: Arc<AtomicBool>,
    edge: Arc<EdgeConfig>,
    tracked: Tracked,
) {
    let first_bytes = async {
        if edge.proxy_protocol {
            if !edge.trusts(peer.ip()) {
                tracing::warn!(%peer, "PROXY header expected from a peer not in --trusted-proxy; closing");
                return Ok::<_, std::io::Error>(None);
            }
            if let Some(client) = edge::read_proxy_v2(&mut stream).await? {
                peer = client;
            }
        }
        match &tls {
            None => Ok(edge::sniff(&mut stream)
                .await?
                .map(|p| Accepted::Plain(stream, p))),
            // HTTPS: the handshake instead of the sniff; ALPN tells h2.
            Some(acceptor) => Ok(tls::handshake(acceptor, stream, peer)
                .await
                .map(|(s, h2)| Accepted::Tls(Box::new(s), h2))),
        }
    };
    let accepted = match tokio::time::timeout(edge.first_bytes_timeout, first_bytes).await {
        Ok(Ok(Some(accepted))) => accepted,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %peer, "connection failed before its first request");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "connection sent too little within the first-bytes deadline; closed");
            return;
        }
    };
    let (io, h2, https) = match accepted {
        Accepted::Plain(stream, prefix) => {
            let h2 = prefix.is_h2();
            (Either::Left(Prefixed::new(stream, prefix)), h2, false)
        }
        Accepted::Tls(stream, h2) => (Either::Right(stream), h2, true),
    };
    // Worked out once per connection, not per request.
    let user = Arc::new(UserConn {
        routes,
        certs,
        closing,
        client: Peer::new(peer, &edge).with_tls(https),
        https,
    });
    // Requests started on this connection (HTTP/2's idle clock reads it):
    // a relaxed add on a counter only this connection touches.
    let started = Arc::new(edge::Activity::default());
    let svc = {
        let started = Arc::clone(&started);
        service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let user = Arc::clone(&user);
            started.bump();
            async move { Ok::<_, Infallible>(user.serve(req).await) }
        })
    };
    let io = TokioIo::new(io);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let idle = async {
        if h2 {
            edge::idle_for(&started, edge.h2_idle_timeout).await;
        } else {
            // HTTP/1's header read timeout covers its idle time.
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(idle);
    let mut finishing = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = tracked.finish.cancelled(), if !finishing => {
                finishing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut idle, if !finishing => {
                tracing::debug!(%peer, "HTTP/2 connection idle; closing");
                finishing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
    drop(tracked);
}

/// What ties a user connection to the accept loop: its receiver counts it
/// as open until it ends, and its token, a child of the loop's, asks it to
/// finish gracefully. A token of its own rather than a channel shared by
/// every connection: a task polls each branch of its `select!` every time
/// it wakes, and a waiting receiver of a shared channel takes that
/// channel's lock on each such poll, from every worker, on every request.
struct Tracked {
    _open: watch::Receiver<()>,
    finish: CancellationToken,
}

/// What every request on one user connection needs, reached through one
/// reference count that only this connection's requests touch: cloning the
/// proxy-wide `routes`, `certs` and `closing` for each request wrote three
/// cache lines that every worker shares.
struct UserConn {
    routes: Arc<Routes>,
    certs: Arc<Certs>,
    /// See `Serving::closing`.
    closing: Arc<AtomicBool>,
    client: Peer,
    https: bool,
}

impl UserConn {
    async fn serve(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<ProxyBody> {
        if let Some(answer) = tls::answer_http01(&self.certs, &req, self.https)
            .or_else(|| tls::redirect_to_https(&self.certs, &self.routes, &req, self.https))
        {
            return answer;
        }
        let http1 = req.version() <= http::Version::HTTP_11;
        let mut resp = forward::handle(&self.routes, &self.client, req).await;
        if http1
            && self.closing.load(Ordering::Relaxed)
            && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

/// A user connection once its first bytes arrived: plain HTTP (with the
/// bytes sniffed), or HTTPS after its handshake (h2 by ALPN).
enum Accepted {
    Plain(tokio::net::TcpStream, edge::Prefix),
    Tls(
        Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
        bool,
    ),
}

/// How long a proxy that handed over keeps serving what it has: its
/// longest drain timeout (what a deploy would give a retired target),
/// 30 s without routes, within [5 s, 10 min].
fn handover_grace(routes: &Routes) -> Duration {
    let longest = routes
        .all()
        .iter()
        .map(|r| r.settings().drain_timeout_ms)
        .max()
        .unwrap_or(30_000);
    Duration::from_millis(longest.clamp(5_000, 600_000))
}

/// Resolves once `rx` reads true; never if its sender goes away first.
async fn wait_true(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics listener on {addr}: {e}"))
}

async fn bind_admin(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("admin listener on {addr} (--admin-listen): {e}"))
}

/// A listener passed over as a descriptor, ready for tokio (it is
/// non-blocking already; setting it again costs nothing and is certain).
fn tokio_listener(listener: std::net::TcpListener) -> anyhow::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

#[cfg(test)]
mod tests {
    use super::default_threads;

    #[test]
    fn default_threads_is_half_the_cpus_at_least_one() {
        assert_eq!(default_threads(1), 1);
        assert_eq!(default_threads(2), 1);
        assert_eq!(default_threads(3), 1);
        assert_eq!(default_threads(8), 4);
    }
}
