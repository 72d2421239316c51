//! *Proxy overhead*: the same load generator against the same upstream
//! container three ways: through `molt proxy`, directly, and through nginx
//! with one worker process.
//!
//! The upstream is the container Molt runs for the App, and all three paths
//! reach it at its address on Molt's bridge network (that is how Molt's proxy
//! reaches containers). A published 127.0.0.1 port would put Docker's
//! userland proxy in front of the direct and nginx paths only, which would
//! flatter Molt; the bridge address keeps the upstream hop identical.
//!
//! The machine is shared and small, so besides throughput the proxy's own
//! CPU time per request is reported (utime + stime of the proxy processes
//! from /proc over the run, divided by the requests): it says how much work
//! each proxy does per request, which other load on the machine barely
//! changes.
//!
//! Rounds alternate the order of the three so slow drifts of the machine
//! (other work on it, thermal) spread over all of them; each run starts with
//! a warm-up second that is not counted.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::docker::container_ip;
use crate::load::{LoadResult, LoadRun, Summary, Target};
use crate::nginx::Nginx;
use crate::Ctx;

const WARMUP: Duration = Duration::from_secs(1);

/// One way of reaching the upstream.
pub struct PathResult {
    pub name: String,
    /// All measured rounds together.
    pub summary: Summary,
    /// Throughput of each round, to show the spread.
    pub rounds: Vec<f64>,
    /// Throughput at each connection count of the sweep.
    pub sweep: Vec<(usize, Summary)>,
    /// CPU time of the proxy's processes per request (µs), over the measured
    /// rounds; None for the direct path.
    pub cpu_us_per_request: Option<f64>,
}

pub struct OverheadReport {
    pub connections: usize,
    pub duration: Duration,
    pub upstream: SocketAddr,
    pub paths: Vec<PathResult>,
    pub notes: Vec<String>,
}

impl OverheadReport {
    pub fn path(&self, prefix: &str) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.name.starts_with(prefix))
    }
}

async fn measure(ctx: &Ctx, target: &Target, connections: usize, duration: Duration) -> LoadResult {
    let cfg = ctx.load_config(connections, WARMUP + duration);
    let run = LoadRun::start(&ctx.load_rt, target.clone(), cfg);
    tokio::time::sleep(WARMUP + duration).await;
    run.stop().await
}

/// Processes whose CPU time counts for a path: the process and its children
/// (nginx's workers).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// The fields of /proc/PID/stat after "(comm)": state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    Some(rest.split_whitespace().map(String::from).collect())
}

/// utime + stime of `pids`, in clock ticks (fields 14 and 15 of stat).
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| {
            let f = stat_fields(p)?;
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux in practice).
async fn ticks_per_second() -> f64 {
    crate::util::run_stdout("getconf", &["CLK_TCK"], Duration::from_secs(10))
        .await
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0)
}

pub async fn run(ctx: &Ctx) -> Result<OverheadReport> {
    let app = "bench-overhead";
    let first = ctx
        .server
        .create_app_ready(serde_json::json!({
            "name": app,
            "image": ctx.image("v1"),
            "port": 8080,
            "health_path": "/healthz",
        }))
        .await?;
    let container = ctx.server.container_of(&first.id).await?;
    let upstream = SocketAddr::new(container_ip(&container).await?, 8080);

    let proxy_pid = ctx
        .server
        .proxy_pid()
        .context("the proxy wrote no pid file")?;
    // (name, target, pid whose process tree is the proxy)
    let mut targets = vec![
        (
            "molt proxy".to_string(),
            Target {
                addr: ctx.server.proxy_addr(),
                host: format!("{app}.localhost"),
                path: "/".into(),
            },
            Some(proxy_pid),
        ),
        (
            "direct to the container".to_string(),
            Target {
                addr: upstream,
                host: "bench".into(),
                path: "/".into(),
            },
            None,
        ),
    ];
    let mut notes = Vec::new();
    let nginx = match &ctx.nginx {
        Some(bin) => Some(
            Nginx::start(bin, upstream, 1)
                .await
                .context("starting nginx")?,
        ),
        None => {
            notes.push("nginx is not installed: no nginx column".to_string());
            None
        }
    };
    if let Some(n) = &nginx {
        targets.push((
            "nginx, 1 worker".to_string(),
            Target {
                addr: n.addr(),
                host: "bench".into(),
                path: "/".into(),
            },
            Some(n.pid()),
        ));
    }

    let duration = Duration::from_secs(ctx.opts.duration);
    let c = ctx.opts.connections;
    let tck = ticks_per_second().await;
    let mut results: Vec<Vec<LoadResult>> = targets.iter().map(|_| Vec::new()).collect();
    // (CPU seconds, requests) per path over the measured rounds.
    let mut cpu: Vec<(f64, u64)> = targets.iter().map(|_| (0.0, 0)).collect();
    for round in 0..ctx.opts.rounds {
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            let (name, target, pid) = &targets[i];
            let pids = pid.map(process_tree).unwrap_or_default();
            let before = cpu_ticks(&pids);
            let engine = crate::docker::engine_pid();
            let r = measure(ctx, target, c, duration).await;
            if crate::docker::engine_pid() != engine {
                eprintln!(
                    "   round {} {name}: the Docker engine restarted during it; round left out",
                    round + 1
                );
                notes.push(format!(
                    "round {} of \"{name}\" was left out: the Docker engine was restarted (by something else on the machine) during it",
                    round + 1
                ));
                cpu[i].0 += cpu_ticks(&pids).saturating_sub(before) as f64 / tck;
                cpu[i].1 += r.samples.len() as u64;
                continue;
            }
            cpu[i].0 += cpu_ticks(&pids).saturating_sub(before) as f64 / tck;
            cpu[i].1 += r.samples.len() as u64;
            let s = r.summary_after(WARMUP);
            eprintln!(
                "   round {} {name:<24} {:>8.0} req/s  p50 {:>6} ms  p99 {:>6} ms  failed {}",
                round + 1,
                s.throughput,
                crate::util::ms(s.p50),
                crate::util::ms(s.p99),
                s.failed()
            );
            results[i].push(r);
        }
    }

    let mut paths = Vec::new();
    for (((name, target, pid), runs), (cpu_s, requests)) in targets.iter().zip(results).zip(cpu) {
        let summary = crate::load::combined(&runs, WARMUP);
        let rounds = runs
            .iter()
            .map(|r| r.summary_after(WARMUP).throughput)
            .collect();
        let mut sweep = Vec::new();
        for &conns in &ctx.opts.sweep.0 {
            let r = measure(ctx, target, conns, Duration::from_secs(3)).await;
            let s = r.summary_after(WARMUP);
            eprintln!(
                "   sweep {name:<24} {conns:>4} connections {:>8.0} req/s  p99 {:>6} ms",
                s.throughput,
                crate::util::ms(s.p99)
            );
            sweep.push((conns, s));
        }
        paths.push(PathResult {
            name: name.clone(),
            summary,
            rounds,
            sweep,
            cpu_us_per_request: (pid.is_some() && requests > 0)
                .then(|| cpu_s * 1e6 / requests as f64),
        });
    }
    drop(nginx);
    Ok(OverheadReport {
        connections: c,
        duration,
        upstream,
        paths,
        notes,
    })
}
