//! `molt server`: claims the data dir, opens the database, prepares the
//! Docker network and the proxy, reconciles, then serves the API until told
//! to stop.

use crate::api::{self, ApiState};
use crate::capacity::Capacity;
use crate::datadir;
use crate::deploy::Engine;
use crate::proxy_link::ProxyLink;
use crate::runtime::Runtime;
use crate::seal::Sealer;
use crate::store::Store;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub proxy: SocketAddr,
    /// The Docker bridge network App containers join.
    pub network: String,
    /// Memory the host offers Apps; detected from the engine when not given.
    pub memory_bytes: Option<u64>,
    /// GPUs the host offers Apps; detected when not given.
    pub gpus: Option<u32>,
    pub autoheal: crate::autoheal::AutohealConfig,
    /// Where the proxy serves its Prometheus metrics, if anywhere.
    pub proxy_metrics: Option<SocketAddr>,
    /// How the proxy reaches containers; `None`: detected (the bridge when
    /// this host can reach it, else ports published on 127.0.0.1).
    pub upstream: Option<crate::runtime::UpstreamMode>,
    /// The proxy's worker threads; `None`: its default (half the CPUs).
    pub proxy_threads: Option<std::num::NonZeroUsize>,
    /// How long an image pull may make no progress before its deploy fails.
    pub pull_stall: std::time::Duration,
}

pub async fn run(config: ServerConfig) -> Result<()> {
    let dir = &config.data_dir;
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

    let runtime = Runtime::connect(&instance, &config.network).await?;
    runtime.ensure_network().await?;
    let upstream = match config.upstream {
        Some(mode) => mode,
        None => runtime.detect_upstream().await,
    };
    let runtime = runtime
        .with_upstream(upstream)
        .with_pull_stall(config.pull_stall);
    tracing::info!(%upstream, network = %config.network, "the proxy reaches App containers through this");

    let proxy = Arc::new(ProxyLink::new(
        dir,
        config.proxy,
        config.proxy_metrics,
        config.proxy_threads,
    )?);
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
    let prober = match runtime.upstream() {
        crate::runtime::UpstreamMode::Bridge => crate::health::Prober::new(),
        crate::runtime::UpstreamMode::Published => {
            crate::health::Prober::new().with_tcp_settle(crate::health::PUBLISHED_TCP_SETTLE)
        }
    };
    let ports = crate::ports::Ports {
        containers: Arc::new(runtime),
        routes: Arc::clone(&proxy) as Arc<dyn crate::ports::Routes>,
        health: Arc::new(prober),
        registries: Arc::new(crate::ports::OciRegistries),
    };
    let engine = Arc::new(Engine::new(store, ports, sealer, capacity));
    let report = crate::reconcile::reconcile(&engine)
        .await
        .context("reconciling state at start failed")?;
    tracing::info!(?report, "reconciled");
    proxy.supervise();
    crate::watch::spawn(Arc::clone(&engine));
    crate::autoheal::spawn(Arc::clone(&engine), config.autoheal);

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
    let app = api::router(ApiState {
        engine,
        token: Arc::new(token),
    });
    // Graceful, but bounded: open streams (`logs --follow`, event streams)
    // get SHUTDOWN_GRACE to end, so a follower cannot keep the server up.
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(true);
    });
    let grace = async {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serve => served.context("the API server failed")?,
        _ = grace => tracing::warn!(
            "open API streams did not end within {} s of the stop signal; closing them",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    tracing::info!("molt server stopped; the proxy keeps serving");
    Ok(())
}

/// How long a stopping server waits for open API streams.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

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
