//! `molt server`: claims the data dir, opens the database, prepares the
//! Docker network and the proxy, reconciles, then serves the API until told
//! to stop.

use crate::api::{self, ApiState};
use crate::capacity::Capacity;
use crate::datadir;
use crate::deploy::Deployer;
use crate::proxy_link::ProxyLink;
use crate::runtime::Runtime;
use crate::seal::Sealer;
use crate::store::Store;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub proxy: SocketAddr,
    /// Where the proxy serves HTTPS, if anywhere.
    pub https: Option<SocketAddr>,
    /// The dashboard and API are routed through the proxy at this host.
    pub console_domain: Option<String>,
    /// Ordering certificates from an ACME server, if wanted.
    pub acme: Option<crate::certs::acme::AcmeConfig>,
    /// The Docker bridge network App containers join.
    pub network: String,
    /// Memory the host offers Apps; detected from the engine when not given.
    pub memory_bytes: Option<u64>,
    /// GPUs the host offers Apps; detected when not given.
    pub gpus: Option<u32>,
    pub autoheal: crate::converge::autoheal::AutohealConfig,
    /// Where the proxy serves its Prometheus metrics, if anywhere.
    pub proxy_metrics: Option<SocketAddr>,
    /// How the proxy reaches containers; `None`: detected (the bridge when
    /// this host can reach it, else ports published on 127.0.0.1).
    pub upstream: Option<crate::runtime::UpstreamMode>,
    /// Where App replicas run: this host's engine, or its swarm.
    pub orchestrator: crate::runtime::Orchestrator,
    /// The proxies on other nodes the server pushes its routes to
    /// (`--proxy-peer`), and the token they ask for.
    pub proxy_peers: Option<(Vec<String>, molt_proxy::AdminToken)>,
    /// The proxy's worker threads; `None`: its default (half the CPUs).
    pub proxy_threads: Option<std::num::NonZeroUsize>,
    /// `--trusted-proxy` blocks passed on to the proxy it starts.
    pub proxy_trusted: Vec<String>,
    /// `--proxy-protocol`, passed on to the proxy it starts.
    pub proxy_protocol: bool,
    /// Where the server serves its own Prometheus metrics without the token,
    /// if anywhere (on the API's address they need the token).
    pub metrics: Option<SocketAddr>,
    /// How long an API client may take to send a request's headers before
    /// its connection is closed.
    pub api_header_timeout: Duration,
    /// Deploys kept per App (`--keep-deploys`); see `store::prune_history`.
    pub keep_deploys: usize,
    /// How long an image pull may make no progress before its deploy fails.
    pub pull_stall: std::time::Duration,
    /// Where Molt's own registry listens, when the server runs one
    /// (`--registry`): the push target of external builds.
    pub registry: Option<SocketAddr>,
    /// The largest build context `molt build` may send, in bytes.
    pub build_context_limit: u64,
    /// Built releases whose images stay per App (`--keep-releases`).
    pub keep_releases: usize,
}

/// Refuses two listeners on one address before anything starts: the
/// second would fail to bind later, or (HTTPS on the proxy's address) leave
/// the proxy serving plain HTTP with a warning no one reads.
fn check_listeners(config: &ServerConfig) -> Result<(), String> {
    distinct_listeners(&[
        ("--api", Some(config.api)),
        ("--proxy", Some(config.proxy)),
        ("--https", config.https),
        ("--metrics", config.metrics),
        ("--proxy-metrics", config.proxy_metrics),
        ("--registry", config.registry),
    ])
}

/// The first flag whose address an earlier one has (port 0, "any free
/// port", never clashes). An unspecified IP (`0.0.0.0`, `::`) takes its
/// port on every address, so it clashes with any address on that port.
fn distinct_listeners(named: &[(&str, Option<SocketAddr>)]) -> Result<(), String> {
    let clash = |a: SocketAddr, b: SocketAddr| {
        a.port() == b.port()
            && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
    };
    for (i, (flag, addr)) in named.iter().enumerate() {
        let Some(addr) = addr.filter(|a| a.port() != 0) else {
            continue;
        };
        let earlier = named[..i]
            .iter()
            .find_map(|(other, a)| a.filter(|a| clash(*a, addr)).map(|a| (other, a)));
        if let Some((other, at)) = earlier {
            return Err(format!(
                "{flag} {addr} and {other} {at} cannot both listen there: each listener needs a port of its own (for example --https 0.0.0.0:443 beside --proxy 0.0.0.0:80)"
            ));
        }
    }
    Ok(())
}

/// How long a stopping server waits for open API connections (a followed
/// log, a deploy's events) before it exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub async fn run(config: ServerConfig) -> Result<()> {
    let dir = &config.data_dir;
    if let Some(acme) = &config.acme {
        acme.check().map_err(anyhow::Error::msg)?;
    }
    check_listeners(&config).map_err(anyhow::Error::msg)?;
    // First of all: a second server on this data dir must touch nothing.
    let _lock = datadir::claim(dir)?;
    crate::tls::init();
    let token =
        datadir::read_or_create_secret(&dir.join(datadir::TOKEN_FILE), || datadir::random_hex(32))?;
    let instance = datadir::read_or_create_secret(&dir.join(datadir::INSTANCE_FILE), || {
        datadir::random_hex(8)
    })?;
    let sealer = Arc::new(Sealer::load(dir)?);
    let store = Arc::new(Store::open(&dir.join(datadir::DATABASE_FILE))?);
    store.set_keep_deploys(config.keep_deploys);

    let runtime = Runtime::connect(&instance, &config.network).await?;
    // Before anything starts: a swarm asked for and not there stops here.
    let on_swarm = on_swarm(&runtime, config.orchestrator).await?;
    runtime.ensure_network().await?;
    let upstream = match config.upstream {
        Some(mode) => mode,
        None => runtime.detect_upstream().await,
    };
    let runtime = runtime
        .with_upstream(upstream)
        .with_pull_stall(config.pull_stall);
    if !on_swarm {
        tracing::info!(%upstream, network = %config.network, "the proxy reaches App containers through this");
    }

    let proxy = Arc::new(
        ProxyLink::new(
            dir,
            config.proxy,
            config.proxy_metrics,
            config.proxy_threads,
        )?
        .with_edge(config.proxy_trusted.clone(), config.proxy_protocol)
        .with_https(config.https),
    );
    proxy.ensure_running().await?;

    let capacity = Capacity {
        memory_bytes: match config.memory_bytes {
            Some(m) => m,
            None => runtime.host_memory().await?,
        },
        gpus: config.gpus.unwrap_or_else(crate::capacity::detect_gpus),
    };
    tracing::info!(memory = %crate::capacity::human_bytes(capacity.memory_bytes), gpus = capacity.gpus, "host capacity for Apps");
    let runtime =
        runtime.with_default_memory(crate::confine::default_memory(capacity.memory_bytes));
    let containers: Arc<dyn crate::ports::Containers> = if on_swarm {
        tracing::info!("App replicas run as services on this engine's swarm; the proxy reaches each task at its published port");
        Arc::new(crate::runtime::Swarm::over(runtime).await?)
    } else {
        Arc::new(runtime)
    };
    let prober = match containers.upstream() {
        crate::runtime::UpstreamMode::Bridge => crate::health::Prober::new(),
        crate::runtime::UpstreamMode::Published => {
            crate::health::Prober::new().with_tcp_settle(crate::health::PUBLISHED_TCP_SETTLE)
        }
    };
    let fleet = match &config.proxy_peers {
        Some((peers, token)) => {
            tracing::info!(?peers, "route changes go to the proxies on other nodes too");
            let fleet = Arc::new(crate::proxy_peers::ProxyFleet::new(
                Arc::clone(&proxy),
                peers,
                token,
            )?);
            fleet.check_now().await;
            Arc::clone(&fleet).spawn_keeper();
            Some(fleet)
        }
        None => None,
    };
    let routes: Arc<dyn crate::ports::Routes> = match &fleet {
        Some(fleet) => Arc::clone(fleet) as Arc<dyn crate::ports::Routes>,
        None => Arc::clone(&proxy) as Arc<dyn crate::ports::Routes>,
    };
    let ports = crate::ports::Ports {
        containers,
        routes,
        health: Arc::new(prober),
        registries: Arc::new(crate::ports::OciRegistries),
    };
    let deployer = Arc::new(Deployer::new(store, ports, sealer, capacity));
    if let Some(domain) = &config.console_domain {
        if let Some(owner) = deployer.domain_owner(domain)? {
            anyhow::bail!("--console-domain {domain}: the App `{owner}` serves that domain; remove it there (`molt apps update {owner} --remove-domain {domain}`) or choose another console domain");
        }
        deployer.set_console_domain(domain.clone());
    }
    if let Some(addr) = config.registry {
        let realm = format!(
            "http://{}/api/v1/registry/token",
            crate::hosted_registry::reachable_host(config.api)
        );
        let hosted =
            crate::hosted_registry::HostedRegistry::start(&dir.join("registry"), addr, &realm)
                .await
                .context("starting Molt's registry (--registry) failed")?;
        deployer.set_hosted_registry(Arc::new(hosted));
    }
    let report = crate::converge::startup::reconcile(&deployer)
        .await
        .context("reconciling state at start failed")?;
    tracing::info!(?report, "reconciled");
    Arc::clone(&proxy).supervise();
    crate::certs::sync::spawn(Arc::clone(&deployer));
    if let Some(acme) = config.acme.clone() {
        tracing::info!(directory = %acme.directory, "ordering certificates for App domains over ACME");
        if config.https.is_none() {
            tracing::warn!("--acme-directory without --https: certificates are ordered (over HTTP-01) but nothing serves HTTPS; add --https ADDR");
        }
        crate::certs::acme::Acme::new(
            acme,
            Arc::clone(&deployer),
            Arc::clone(&proxy),
            fleet.as_ref().map(|f| f.peer_admins()).unwrap_or_default(),
            config.https.is_some(),
        )
        .spawn();
    }
    if let Some(domain) = config.console_domain.clone() {
        if config.https.is_none() {
            tracing::warn!(%domain, "--console-domain without --https: the console is routed over plain HTTP only; add --https ADDR");
        }
        crate::console::spawn(
            Arc::clone(&deployer),
            domain,
            config.api,
            config.build_context_limit,
        );
    }
    crate::converge::watch::spawn(Arc::clone(&deployer));
    crate::converge::autoheal::spawn(Arc::clone(&deployer), config.autoheal);

    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("cannot listen on {} for the API: is another molt server running? choose another with --api", config.api))?;
    tracing::info!(api = %config.api, proxy = %config.proxy, data_dir = %dir.display(), "molt server is ready");
    eprintln!(
        "molt server listening on http://{} (proxy on http://{}, data in {})",
        config.api,
        config.proxy,
        dir.display()
    );
    let stopping = tokio_util::sync::CancellationToken::new();
    let builds = crate::build::Builds::new(
        Arc::clone(&deployer),
        dir,
        config.build_context_limit,
        config.keep_releases,
    )
    .context("preparing builds failed")?;
    let state = ApiState {
        builds,
        deployer,
        token: Arc::new(token),
        stopping: stopping.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics {
        let metrics = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for metrics: choose another address with --metrics")
        })?;
        tracing::info!(metrics = %addr, "serving the server's metrics without a token");
        let router = api::metrics_router(state.clone());
        let timeout = config.api_header_timeout;
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            serve(metrics, router, timeout, async move {
                let _ = stop.changed().await;
            })
            .await
        });
    }
    serve(
        listener,
        api::router(state.clone()).merge(crate::dashboard::router(state)),
        config.api_header_timeout,
        async move {
            shutdown_signal().await;
            // Held requests (event streams, live views) end now, so they
            // do not hold the graceful stop up.
            stopping.cancel();
        },
    )
    .await;
    let _ = stop_tx.send(true);
    tracing::info!("molt server stopped; the proxy keeps serving");
    Ok(())
}

/// Whether App replicas run on the swarm, by `--orchestrator`: when asked
/// (an error when the engine is no swarm manager), or, with `auto`, when the
/// engine is one.
async fn on_swarm(runtime: &Runtime, orchestrator: crate::runtime::Orchestrator) -> Result<bool> {
    use crate::runtime::{Orchestrator, Swarm};
    match orchestrator {
        Orchestrator::Single => Ok(false),
        Orchestrator::Auto => Ok(Swarm::is_manager(runtime).await),
        Orchestrator::Swarm => {
            Swarm::check_manager(runtime).await?;
            Ok(true)
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then waits (at most
/// `SHUTDOWN_GRACE`) for open connections to finish. Like `axum::serve`, plus
/// a limit on how long a client may take to send a request's headers, so
/// connections that trickle their headers cannot pile up.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    // HTTP/1 only, as the API always spoke: HTTP/2 has no header timeout.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Every connection task holds a sender; when all are gone, recv ends.
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it
                    // was accepted: keep serving the others.
                    tracing::warn!("accepting an API connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let builder = builder.clone();
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let _open = open;
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.changed() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, open_rx.recv())
        .await
        .is_err()
    {
        tracing::info!(
            "API connections still open after {} s; stopping anyway",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::distinct_listeners;

    #[test]
    fn two_listeners_on_one_address_are_refused_naming_both() {
        let at = |s: &str| Some(s.parse().expect("addr"));
        let err = distinct_listeners(&[
            ("--proxy", at("0.0.0.0:8080")),
            ("--https", at("0.0.0.0:8080")),
        ])
        .unwrap_err();
        assert!(
            err.starts_with("--https 0.0.0.0:8080 and --proxy 0.0.0.0:8080 cannot both listen"),
            "{err}"
        );
        assert!(distinct_listeners(&[
            ("--api", at("127.0.0.1:7700")),
            ("--proxy", at("127.0.0.1:8080")),
            ("--https", at("127.0.0.1:8443")),
            ("--metrics", None),
            ("--registry", None),
        ])
        .is_ok());
        // Everything on a port takes it on 127.0.0.1 too.
        let err = distinct_listeners(&[
            ("--proxy", at("0.0.0.0:8080")),
            ("--https", at("127.0.0.1:8080")),
        ])
        .unwrap_err();
        assert!(
            err.contains("--https 127.0.0.1:8080 and --proxy 0.0.0.0:8080"),
            "{err}"
        );
        // Port 0 asks for any free port: never a clash.
        assert!(distinct_listeners(&[
            ("--api", at("127.0.0.1:0")),
            ("--proxy", at("127.0.0.1:0")),
        ])
        .is_ok());
    }
}
