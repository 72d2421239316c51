//! `molt server` and `molt proxy`: the two long-running processes. One
//! binary holds both so that the server can start the proxy as
//! `molt proxy` from its own executable.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// `molt server --upstream`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UpstreamArg {
    Auto,
    Bridge,
    Published,
}

/// `molt server --orchestrator` (`auto|docker|swarm`, the command-line
/// contract's names; `single` is kept as another name for `docker`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrchestratorArg {
    Auto,
    #[value(alias = "single")]
    Docker,
    Swarm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// How log lines look on stderr; RUST_LOG picks what is logged (default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where the HTTP API listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7700")]
    pub api: SocketAddr,
    /// Where the proxy serves the Apps' HTTP traffic.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub proxy: SocketAddr,
    /// Where the proxy serves the Apps' HTTPS traffic, if anywhere: each
    /// App domain with a certificate (`molt certs`) is served there.
    #[arg(long, value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// Serve the dashboard and API through the proxy at this host name too,
    /// over HTTPS (its certificate ordered over ACME or added with `molt
    /// certs add`); the browser's session cookie is then `Secure`.
    #[arg(long, value_name = "HOST", value_parser = parse_console_domain)]
    pub console_domain: Option<String>,
    #[command(flatten)]
    pub acme: AcmeArgs,
    /// The Docker network Molt creates and puts App containers on.
    #[arg(long, value_name = "NAME", default_value = "molt")]
    pub network: String,
    /// How the proxy reaches App containers: at their address on the
    /// network (`bridge`), or at a port published on 127.0.0.1
    /// (`published`, for an engine in a VM or rootless Docker). `auto`
    /// uses the bridge when this host can reach it.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub upstream: UpstreamArg,
    /// Where App replicas run: containers on this host's Docker engine
    /// (`docker`), or services on the swarm this engine manages (`swarm`:
    /// Swarm places them, Molt's proxy reaches each task at its host-mode
    /// published port). `auto` picks swarm when the engine is an active
    /// swarm manager, else docker.
    #[arg(long, value_enum, value_name = "KIND", default_value = "docker")]
    pub orchestrator: OrchestratorArg,
    /// Memory the host offers Apps (e.g. `16g`); detected from the engine
    /// when not given. Apps' `--memory` is reserved against it.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// GPUs the host offers Apps; detected from the NVIDIA driver when not
    /// given. Apps' `--gpus` is reserved against it.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Where the proxy serves Prometheus metrics (`GET /metrics`): requests by
    /// App and status class, latency, in-flight, held requests.
    #[arg(long, value_name = "ADDR")]
    pub proxy_metrics: Option<SocketAddr>,
    /// Where the server serves its own Prometheus metrics (`GET /metrics`)
    /// without a token; on the API's address they need the admin token.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// How long an API client may take to send a request's headers before
    /// the connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub api_header_timeout: std::time::Duration,
    /// Worker threads of the proxy it starts. Default: half the CPUs, at
    /// least 1 (the proxy shares the host with the Apps).
    #[arg(long, value_name = "N")]
    pub proxy_threads: Option<std::num::NonZeroUsize>,
    /// A `molt proxy` on another node (`HOST:PORT`, its `--admin-listen`;
    /// repeatable): the server pushes every route change to it as to its
    /// own proxy, and a swap drains old replicas only once every peer that
    /// answers has moved off them.
    #[arg(
        long = "proxy-peer",
        value_name = "ADDR",
        requires = "proxy_peer_token_file",
        value_parser = parse_peer
    )]
    pub proxy_peers: Vec<String>,
    /// The file holding the token the peers ask for (their
    /// `--admin-token-file`).
    #[arg(long, value_name = "FILE")]
    pub proxy_peer_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub proxy_edge: EdgeArgs,
    /// Deploys kept per App: when a deploy ends, older finished ones go with
    /// their timelines. The serving deploy and the newest 5 succeeded
    /// deploys of a version (the rollback targets) are always kept.
    #[arg(long, value_name = "N", default_value = "50")]
    pub keep_deploys: std::num::NonZeroUsize,
    /// Fail a deploy whose image pull gets nothing from the registry for
    /// this many seconds ("the registry stopped sending"), instead of
    /// holding the App until someone cancels.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub pull_stall_timeout: u64,
    /// Run Molt's own registry on this address (Debian's docker-registry),
    /// the push target of external builds: `molt build --external` pushes
    /// there with a credential the server issues, and deploys pull from it.
    #[arg(long, value_name = "ADDR")]
    pub registry: Option<std::net::SocketAddr>,
    /// The largest source context `molt build` may send (e.g. 512M, 2G);
    /// a larger one is refused with 413 and this limit.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub build_context_limit: u64,
    /// Built releases whose images stay on this host per App: older ones
    /// are removed after each build (logged), except the serving release
    /// and those a deploy in the history ran (the rollback targets).
    #[arg(long, value_name = "N", default_value = "10")]
    pub keep_releases: std::num::NonZeroUsize,
    /// Autoheal: how long after a container starts before it is judged.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub autoheal_grace: std::time::Duration,
    /// Autoheal: time between health checks of serving containers.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub autoheal_interval: std::time::Duration,
    /// Autoheal: consecutive failed checks that get a container replaced.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub autoheal_threshold: u32,
    #[command(flatten)]
    pub log: LogArgs,
}

fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    molt_server::api::logs::parse_duration(raw).map(std::time::Duration::from_secs)
}

/// `--proxy-peer`: `HOST:PORT` (an IPv6 address in brackets).
fn parse_peer(raw: &str) -> Result<String, String> {
    match raw.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(raw.to_string())
        }
        _ => Err(format!(
            "`{raw}` is not HOST:PORT; give the address and port the peer's `molt proxy --admin-listen` serves on, e.g. 10.0.0.6:7701"
        )),
    }
}

fn parse_size(raw: &str) -> Result<u64, String> {
    molt_core::size::parse_size(raw)
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Where the proxy serves the Apps' HTTP traffic.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the proxy serves the Apps' HTTPS traffic (certificates by
    /// SNI, pushed by `molt server`), if anywhere.
    #[arg(long, value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Take the listening sockets over from the proxy running for this data
    /// dir, which then finishes its in-flight requests and exits: upgrades
    /// the proxy with no refused connection. Starts afresh if none runs.
    #[arg(long)]
    pub takeover: bool,
    /// Threads serving traffic. Default: half the CPUs, at least 1 (the
    /// proxy shares the host with the Apps it serves).
    #[arg(long, value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,
    /// Connections served at once; past it new ones get a 503 and are
    /// closed (the proxy never runs out of file descriptors instead).
    #[arg(long, value_name = "N", default_value_t = molt_proxy::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Also serve the admin protocol over TCP here, so a `molt server` on
    /// another machine (`--proxy-peer`) pushes this proxy's routes. Plain
    /// TCP: listen on a private network only (see docs/scale-out.md).
    #[arg(long, value_name = "ADDR", requires = "admin_token_file")]
    pub admin_listen: Option<SocketAddr>,
    /// The file holding the token a server must offer on `--admin-listen`
    /// (the same as its `--proxy-peer-token-file`; at least 32 characters).
    #[arg(long, value_name = "FILE", requires = "admin_listen")]
    pub admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Certificates from an ACME server (Let's Encrypt) for App domains.
#[derive(Debug, Clone, Args)]
pub struct AcmeArgs {
    /// Order certificates for App domains from this ACME directory:
    /// `https://acme-v02.api.letsencrypt.org/directory` (Let's Encrypt),
    /// or its staging directory
    /// `https://acme-staging-v02.api.letsencrypt.org/directory` to try
    /// things out. `*.localhost` domains are left alone.
    #[arg(long, value_name = "URL")]
    pub acme_directory: Option<String>,
    /// The contact address of the ACME account.
    #[arg(long, value_name = "ADDR", requires = "acme_directory")]
    pub acme_email: Option<String>,
    /// A CA certificate (PEM) to trust for the ACME directory's own HTTPS,
    /// for a private ACME server.
    #[arg(long, value_name = "FILE", requires = "acme_directory")]
    pub acme_ca: Option<PathBuf>,
    /// The wait after a failed order; it doubles with each failure in a
    /// row, up to 6 hours.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub acme_retry: std::time::Duration,
    /// The share of a certificate's lifetime after which it is renewed
    /// (default two thirds). For tests: 0 renews at every look.
    #[arg(long, value_name = "FRACTION", hide = true, default_value_t = molt_server::certs::acme::DEFAULT_RENEW_AT)]
    pub acme_renew_at: f64,
}

/// Who the proxy believes; on `molt proxy`, and passed on by `molt server`.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// A load balancer or proxy in front (address or block, e.g.
    /// 10.0.0.0/8; repeatable): its `X-Forwarded-*`, `Forwarded` and
    /// `X-Real-IP` are believed. From anyone else they are replaced.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<molt_proxy::Cidr>,
    /// Every connection starts with a PROXY protocol v2 header (from a
    /// load balancer in front, which must be a --trusted-proxy); the
    /// client's address comes from it.
    #[arg(long)]
    pub proxy_protocol: bool,
}

/// `--console-domain`: a DNS name as an App domain must be.
fn parse_console_domain(raw: &str) -> Result<String, String> {
    molt_core::name::parse_domain(raw)
}

/// Logs to stderr, filtered by RUST_LOG (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colors only for people: not in log files, not with NO_COLOR.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `data_dir` is the global `--data-dir`.
pub async fn server(args: ServerArgs, data_dir: Option<PathBuf>) -> Result<()> {
    init_tracing(args.log.log_format);
    molt_server::server::run(molt_server::server::ServerConfig {
        data_dir: molt_server::datadir::resolve(data_dir),
        api: args.api,
        proxy: args.proxy,
        https: args.https,
        console_domain: args.console_domain,
        acme: args
            .acme
            .acme_directory
            .map(|directory| molt_server::certs::acme::AcmeConfig {
                directory,
                email: args.acme.acme_email,
                ca_file: args.acme.acme_ca,
                backoff: args.acme.acme_retry.max(std::time::Duration::from_secs(1)),
                renew_at: args.acme.acme_renew_at,
            }),
        network: args.network,
        memory_bytes: args.memory,
        gpus: args.gpus,
        proxy_metrics: args.proxy_metrics,
        proxy_threads: args.proxy_threads,
        proxy_peers: match args.proxy_peer_token_file {
            Some(file) if !args.proxy_peers.is_empty() => {
                Some((args.proxy_peers, molt_proxy::AdminToken::from_file(&file)?))
            }
            _ => None,
        },
        proxy_trusted: args
            .proxy_edge
            .trusted_proxies
            .iter()
            .map(|c| c.to_string())
            .collect(),
        proxy_protocol: args.proxy_edge.proxy_protocol,
        metrics: args.metrics,
        api_header_timeout: args
            .api_header_timeout
            .max(std::time::Duration::from_secs(1)),
        keep_deploys: args.keep_deploys.get(),
        pull_stall: std::time::Duration::from_secs(args.pull_stall_timeout),
        registry: args.registry,
        build_context_limit: args.build_context_limit,
        keep_releases: args.keep_releases.get(),
        orchestrator: match args.orchestrator {
            OrchestratorArg::Docker => molt_server::runtime::Orchestrator::Single,
            OrchestratorArg::Swarm => molt_server::runtime::Orchestrator::Swarm,
            OrchestratorArg::Auto => molt_server::runtime::Orchestrator::Auto,
        },
        upstream: match args.upstream {
            UpstreamArg::Auto => None,
            UpstreamArg::Bridge => Some(molt_server::runtime::UpstreamMode::Bridge),
            UpstreamArg::Published => Some(molt_server::runtime::UpstreamMode::Published),
        },
        autoheal: molt_server::autoheal::AutohealConfig {
            grace: args.autoheal_grace,
            interval: args
                .autoheal_interval
                .max(std::time::Duration::from_secs(1)),
            threshold: args.autoheal_threshold.max(1),
        },
    })
    .await
}

pub async fn proxy(args: ProxyArgs, data_dir: Option<PathBuf>) -> Result<()> {
    init_tracing(args.log.log_format);
    let admin_listen = match (args.admin_listen, args.admin_token_file) {
        (Some(addr), Some(file)) => Some((addr, molt_proxy::AdminToken::from_file(&file)?)),
        _ => None,
    };
    molt_proxy::run(molt_proxy::ProxyConfig {
        admin_listen,
        data_dir: molt_server::datadir::resolve(data_dir),
        listen: args.listen,
        https: args.https,
        metrics: args.metrics,
        takeover: args.takeover,
        edge: molt_proxy::EdgeConfig {
            max_connections: args.max_connections.max(1),
            trusted_proxies: args.edge.trusted_proxies,
            proxy_protocol: args.edge.proxy_protocol,
            ..molt_proxy::EdgeConfig::default()
        },
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        server: ServerArgs,
    }

    fn orchestrator(args: &[&str]) -> Result<OrchestratorArg, clap::Error> {
        let all = std::iter::once("molt").chain(args.iter().copied());
        T::try_parse_from(all).map(|t| t.server.orchestrator)
    }

    /// The command-line contract names `auto|docker|swarm`; `single`, the
    /// name it had first, still works.
    #[test]
    fn orchestrator_takes_the_contracts_names() {
        assert!(matches!(orchestrator(&[]), Ok(OrchestratorArg::Docker)));
        for (value, want) in [
            ("docker", "Docker"),
            ("single", "Docker"),
            ("swarm", "Swarm"),
            ("auto", "Auto"),
        ] {
            let got = orchestrator(&["--orchestrator", value]).expect(value);
            assert_eq!(format!("{got:?}"), want, "{value}");
        }
        assert!(orchestrator(&["--orchestrator", "kubernetes"]).is_err());
    }
}
