//! `molt-bench`: Molt's benchmark (issue 3, section 6). Not a test: it runs
//! for minutes, needs Docker, a registry binary and (optionally) nginx, and
//! measures rather than asserts.
//!
//! It builds the test images, starts a private registry and a real
//! `molt server` (which starts `molt proxy`), then runs the scenarios side by
//! side with their baselines and prints Markdown (and writes it into
//! `BENCHMARKS.md` with `--out`). All traffic goes to 127.0.0.1 or to
//! containers the benchmark started; everything it started is removed at the
//! end, on error and on Ctrl-C.

mod docker;
mod http;
mod images;
mod load;
mod nginx;
mod registry;
mod report;
mod scenario_deploys;
mod scenario_overhead;
mod scenario_swap;
mod server;
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use crate::load::LoadConfig;
use crate::registry::Registry;
use crate::server::MoltServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    Deploys,
    Overhead,
    Swap,
}

/// Molt's benchmark: deploys under load, proxy overhead, swap latency.
#[derive(Debug, Clone, Parser)]
#[command(name = "molt-bench", version)]
pub struct Opts {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Keep-alive connections of the load generator (deploys and overhead).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Deploys per system in "deploys under load" (a fifth of Molt's fail on
    /// purpose, a tenth are recreates).
    #[arg(long, default_value_t = 50)]
    pub deploys: usize,
    /// Seconds per measured run in "proxy overhead" (after a 1 s warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Rounds of "proxy overhead"; each runs every path once, in turn.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Connection counts for the throughput sweep of "proxy overhead" (3 s
    /// each, comma-separated); "none" to skip.
    #[arg(long, default_value = "8,32,128", value_parser = parse_sweep)]
    pub sweep: Sweep,
    /// Deploys measured in "swap latency".
    #[arg(long, default_value_t = 20)]
    pub swaps: usize,
    /// The `molt` binary to benchmark.
    #[arg(long, env = "MOLT_BENCH_MOLT")]
    molt: Option<PathBuf>,
    /// Write the results into this Markdown file (between markers; the rest
    /// of the file is kept).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Seconds a request may take before it counts as failed (timeout).
    #[arg(long, default_value_t = 15)]
    request_timeout: u64,
    /// Health timeout (s) of the Apps whose deploys fail on purpose: bounds
    /// how long an unhealthy deploy takes.
    #[arg(long, default_value_t = 8)]
    pub health_timeout: u64,
}

/// The connection counts of `--sweep`.
#[derive(Debug, Clone, Default)]
pub struct Sweep(pub Vec<usize>);

fn parse_sweep(s: &str) -> Result<Sweep, String> {
    if s.trim().is_empty() || s.trim() == "none" {
        return Ok(Sweep(Vec::new()));
    }
    s.split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .map_err(|_| format!("{c:?} is not a connection count"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Sweep)
}

/// What every scenario uses.
pub struct Ctx {
    pub run_id: String,
    pub opts: Opts,
    pub load_rt: tokio::runtime::Handle,
    pub registry: Registry,
    pub server: MoltServer,
    pub nginx: Option<PathBuf>,
}

impl Ctx {
    /// The registry reference of an image variant.
    pub fn image(&self, variant: &str) -> String {
        self.registry.reference(variant)
    }

    pub fn load_config(&self, connections: usize, max_duration: Duration) -> LoadConfig {
        LoadConfig {
            connections,
            // Bounded by time in practice; this caps memory (12 B a sample).
            max_requests: 200_000_000,
            max_duration,
            request_timeout: Duration::from_secs(self.opts.request_timeout),
            reconnect_backoff: Duration::from_millis(10),
        }
    }
}

fn main() {
    let opts = Opts::parse();
    if let Err(e) = validate(&opts) {
        eprintln!("molt-bench: {e:#}");
        std::process::exit(2);
    }
    let load_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .thread_name("load")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("molt-bench: cannot start the load generator's runtime: {e}");
            std::process::exit(1);
        }
    };
    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    // Short and unique enough: labels, the network name and temp dirs carry it.
    let run_id = format!("{:x}{:04x}", std::process::id(), unix_secs() & 0xffff);
    let handle = load_rt.handle().clone();
    let code = main_rt.block_on(async {
        tokio::select! {
            r = run(opts, handle, run_id.clone()) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("molt-bench: {e:#}");
                    1
                }
            },
            sig = interrupted() => {
                eprintln!("molt-bench: {sig}: stopping and cleaning up");
                130
            }
        }
    });
    // Whatever was left (a scenario cut short): containers by label.
    docker::remove_run(&run_id);
    load_rt.shutdown_background();
    main_rt.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(code);
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn validate(o: &Opts) -> Result<()> {
    if o.connections == 0 || o.connections > 10_000 {
        bail!("--connections must be 1..=10000");
    }
    if o.deploys > 1000 || o.swaps > 1000 {
        bail!("--deploys and --swaps must be at most 1000");
    }
    if o.duration == 0 || o.duration > 600 {
        bail!("--duration must be 1..=600 seconds");
    }
    if o.rounds == 0 || o.rounds > 20 {
        bail!("--rounds must be 1..=20");
    }
    if o.sweep.0.iter().any(|&c| c == 0 || c > 10_000) {
        bail!("--sweep values must be 1..=10000");
    }
    if o.client_threads == 0 || o.client_threads > 64 {
        bail!("--client-threads must be 1..=64");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM; names the signal.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupted";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = term.recv() => "terminated",
    }
}

/// The default `molt` binary: `$CARGO_TARGET_DIR/release/molt`, else
/// `target/release/molt` of the workspace.
fn default_molt(root: &std::path::Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let p = PathBuf::from(dir).join("release/molt");
        if p.is_file() {
            return p;
        }
    }
    root.join("target/release/molt")
}

async fn run(opts: Opts, load_rt: tokio::runtime::Handle, run_id: String) -> Result<()> {
    let started = Instant::now();
    let root = util::workspace_root()?;
    let molt = opts.molt.clone().unwrap_or_else(|| default_molt(&root));
    let nginx = nginx::Nginx::find();
    if util::which("docker-registry").is_none() {
        bail!("docker-registry is not installed (Debian package docker-registry); scripts/bench installs it");
    }
    let mut machine = report::Machine::probe(nginx.as_deref(), &molt).await;
    eprintln!(
        "molt-bench run {run_id}: load average {}",
        machine.load_start
    );

    eprintln!("== building the test images");
    images::build(&root).await?;
    let registry = Registry::start().await?;
    images::push_all(&registry).await?;
    // Declared before `ctx`, so dropped after it (the server's containers
    // use these images).
    let _untag = Untag(registry.repository());
    eprintln!("== starting {} server", molt.display());
    let server = MoltServer::start(&molt, &run_id).await?;
    let ctx = Ctx {
        run_id: run_id.clone(),
        opts: opts.clone(),
        load_rt,
        registry,
        server,
        nginx,
    };

    let want = |s: Scenario| opts.scenario == Scenario::All || opts.scenario == s;
    let deploys = if want(Scenario::Deploys) {
        Some(scenario_deploys::run(&ctx).await)
    } else {
        None
    };
    let overhead = if want(Scenario::Overhead) {
        eprintln!("== proxy overhead");
        Some(
            scenario_overhead::run(&ctx)
                .await
                .map_err(|e| format!("{e:#}")),
        )
    } else {
        None
    };
    let swap = if want(Scenario::Swap) {
        eprintln!("== swap latency");
        Some(scenario_swap::run(&ctx).await.map_err(|e| format!("{e:#}")))
    } else {
        None
    };
    // Molt's side of anything that went wrong: the data dir goes away with
    // the server, so its log is copied out when a Molt path failed requests
    // or a scenario could not run.
    let molt_failed = deploys.as_ref().is_some_and(|d| {
        d.molt.is_err()
            || [&d.molt, &d.molt_recreate]
                .iter()
                .any(|r| r.as_ref().is_ok_and(|r| r.all.failed() > 0))
    }) || overhead.as_ref().is_some_and(|r| {
        r.as_ref().map_or(true, |r| {
            r.path("molt").is_some_and(|p| p.summary.failed() > 0)
        })
    }) || swap.as_ref().is_some_and(|r| r.is_err());
    if molt_failed {
        let path = std::env::temp_dir().join(format!("molt-bench-{run_id}-server.log"));
        match std::fs::write(&path, ctx.server.log()) {
            Ok(()) => eprintln!(
                "Molt failed requests or a scenario did not run: the molt server log is in {}",
                path.display()
            ),
            Err(e) => eprintln!("cannot save the molt server log to {}: {e}", path.display()),
        }
    }
    machine.refused = ctx.server.refused_deploys();
    eprintln!("== cleaning up");
    drop(ctx);
    drop(_untag);

    machine.load_end = report::load_average();
    machine.took = started.elapsed();
    let report = report::Report {
        machine: &machine,
        deploys: deploys.as_ref(),
        overhead: overhead.as_ref(),
        swap: swap.as_ref(),
    };
    let md = report.markdown();
    println!("{md}");
    if let Some(out) = &opts.out {
        report::write_into(out, &md).context("writing the results")?;
        eprintln!("results written to {}", out.display());
    }
    Ok(())
}

/// Removes, on drop, the local tags and digests of the registry's images
/// that Molt pulled, so the engine keeps only the `molt-bench/testapp:*`
/// images. Synchronous: it also runs when the benchmark is interrupted.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        let filter = format!("reference={}", self.0);
        let Ok(out) = std::process::Command::new("docker")
            .args([
                "image",
                "ls",
                "--digests",
                "--filter",
                &filter,
                "--format",
                "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}",
            ])
            .output()
        else {
            return;
        };
        for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if !name.ends_with(":<none>") && !name.ends_with("@<none>") {
                util::run_sync_quiet("docker", &["rmi", name], Duration::from_secs(30));
            }
        }
    }
}
