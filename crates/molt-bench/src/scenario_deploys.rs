//! *Deploys under load*: C keep-alive connections against an App while it is
//! deployed N times, through Molt (blue-green, with failing deploys, and
//! recreates on an App with `strategy: recreate`), and the same N deploys of
//! good versions with two baselines: stop-then-start of a container behind a
//! fixed published port, and nginx with an upstream switch and reload.
//!
//! The baselines deploy only good versions: a plain stop-then-start of a
//! crashing version would be down until the next deploy, which says nothing
//! new; nginx with a health check before the switch never switches to a
//! failing one. So their failure counts are a lower bound.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::docker::Container;
use crate::images::GOOD;
use crate::load::{LoadResult, LoadRun, Summary, Target};
use crate::nginx::Nginx;
use crate::util::{free_port, localhost, poll};
use crate::Ctx;

/// What one deploy was meant to do and what it did.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    /// The image variant deployed (v1, crash, ...).
    pub variant: String,
    pub expected_success: bool,
    /// Final status (Molt's: succeeded/failed; baselines: succeeded).
    pub status: String,
    pub took: Duration,
    /// For recreates: whether the timeline shows the two recreate phases.
    pub was_recreate: bool,
    pub error: Option<String>,
    /// Molt's succeeded deploys: its "healthy" event → the first response
    /// from the new version under this load (ms).
    pub swap_ms: Option<f64>,
}

/// One system's run: its deploys and the load's numbers.
pub struct SystemRun {
    pub name: String,
    pub deploys: Vec<DeployOutcome>,
    /// Every request of the run.
    pub all: Summary,
    /// Requests that started while a deploy ran.
    pub during: Summary,
    /// The longest time without an ok response.
    pub longest_gap: Duration,
    pub connects: u64,
    pub idle_closes: u64,
    pub errors: Vec<(String, u64)>,
    pub notes: Vec<String>,
}

impl SystemRun {
    fn from_load(
        name: &str,
        load: &LoadResult,
        windows: &[(u32, u32)],
        deploys: Vec<DeployOutcome>,
    ) -> SystemRun {
        SystemRun {
            name: name.to_string(),
            deploys,
            all: load.summary(),
            during: load.summary_in(windows),
            longest_gap: load.longest_gap(),
            connects: load.connects,
            idle_closes: load.idle_closes,
            errors: load.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            notes: Vec::new(),
        }
    }

    /// Deploys whose result was not the expected one.
    pub fn unexpected(&self) -> usize {
        self.deploys
            .iter()
            .filter(|d| (d.status == "succeeded") != d.expected_success)
            .count()
    }
}

/// Everything the scenario measured; a system that could not run says why.
pub struct DeploysReport {
    pub connections: usize,
    pub deploys: usize,
    pub molt: Result<SystemRun, String>,
    pub molt_recreate: Result<SystemRun, String>,
    pub stop_start: Result<SystemRun, String>,
    pub nginx: Result<SystemRun, String>,
}

/// The plan of Molt's blue-green App: `n` deploys, `failing` of them spread
/// evenly and alternating crash/unhealthy, the rest cycling v1→v2→v3 so each
/// good deploy changes the version.
fn plan(n: usize, failing: usize) -> Vec<(&'static str, bool)> {
    let mut out = Vec::with_capacity(n);
    let mut good = 1; // v1 serves first
    let mut failed = 0;
    for i in 0..n {
        let is_failing = failing > 0 && (i + 1) * failing / n > i * failing / n;
        if is_failing {
            let variant = if failed % 2 == 0 {
                "crash"
            } else {
                "unhealthy"
            };
            failed += 1;
            out.push((variant, false));
        } else {
            out.push((GOOD[good % GOOD.len()], true));
            good += 1;
        }
    }
    out
}

/// Adds a note to a system's run when the Docker engine was restarted
/// during it (its numbers then include that outage).
fn engine_note(run: &mut Result<SystemRun, String>, before: Option<u32>) {
    if crate::docker::engine_pid() != before {
        if let Ok(r) = run {
            r.notes.push("the Docker engine was restarted (by something else on the machine) during this run; its numbers include that".into());
        }
    }
}

pub async fn run(ctx: &Ctx) -> DeploysReport {
    let n = ctx.opts.deploys;
    let recreates = n / 10;
    let failing = n / 5;
    let mut report = DeploysReport {
        connections: ctx.opts.connections,
        deploys: n,
        molt: Err("not run".into()),
        molt_recreate: Err("not run".into()),
        stop_start: Err("not run".into()),
        nginx: Err("not run".into()),
    };

    eprintln!(
        "== deploys under load: Molt, blue-green ({} deploys, {failing} failing)",
        n - recreates
    );
    let engine = crate::docker::engine_pid();
    report.molt = molt_bluegreen(ctx, n - recreates, failing)
        .await
        .map_err(|e| format!("{e:#}"));
    engine_note(&mut report.molt, engine);
    if recreates > 0 {
        eprintln!("== deploys under load: Molt, recreate ({recreates} deploys)");
        let engine = crate::docker::engine_pid();
        report.molt_recreate = molt_recreate(ctx, recreates)
            .await
            .map_err(|e| format!("{e:#}"));
        engine_note(&mut report.molt_recreate, engine);
    } else {
        report.molt_recreate = Err("no recreates with fewer than 10 deploys".into());
    }
    eprintln!("== deploys under load: stop-then-start ({n} deploys)");
    let engine = crate::docker::engine_pid();
    report.stop_start = stop_then_start(ctx, n).await.map_err(|e| format!("{e:#}"));
    engine_note(&mut report.stop_start, engine);
    report.nginx = match &ctx.nginx {
        Some(bin) => {
            eprintln!("== deploys under load: nginx reload ({n} deploys)");
            let engine = crate::docker::engine_pid();
            let mut r = nginx_reload(ctx, bin, n)
                .await
                .map_err(|e| format!("{e:#}"));
            engine_note(&mut r, engine);
            r
        }
        None => Err("nginx is not installed".into()),
    };
    report
}

fn app_body(ctx: &Ctx, name: &str, strategy: Option<&str>) -> serde_json::Value {
    let mut body = serde_json::json!({
        "name": name,
        "image": ctx.image("v1"),
        "port": 8080,
        "health_path": "/healthz",
        "health_timeout": ctx.opts.health_timeout,
    });
    if let Some(s) = strategy {
        body["strategy"] = s.into();
    }
    body
}

/// Runs `deploys` one after the other against `app` under load, recording a
/// window per deploy.
async fn molt_deploys(
    ctx: &Ctx,
    app: &str,
    plan: &[(&'static str, bool)],
) -> Result<(LoadResult, Vec<(u32, u32)>, Vec<DeployOutcome>)> {
    let target = Target {
        addr: ctx.server.proxy_addr(),
        host: format!("{app}.localhost"),
        path: "/".into(),
    };
    let load = LoadRun::start(
        &ctx.load_rt,
        target,
        ctx.load_config(ctx.opts.connections, Duration::from_secs(3600)),
    );
    // Warm-up: connections open, pools fill.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut windows = Vec::new();
    let mut outcomes = Vec::new();
    let mut timelines = Vec::new();
    for (i, (variant, expected)) in plan.iter().enumerate() {
        if load.is_exhausted() {
            bail!("the load run hit its bound after {i} deploys");
        }
        let from = load.now_us();
        let t = Instant::now();
        let d = ctx.server.start_deploy(app, &ctx.image(variant)).await?;
        let d = ctx
            .server
            .wait_deploy(app, &d.id, Duration::from_secs(180))
            .await?;
        windows.push((from, load.now_us()));
        eprintln!(
            "   deploy {:>2}/{} {variant:<9} → {:<9} in {:>6} ms{}",
            i + 1,
            plan.len(),
            d.status,
            t.elapsed().as_millis(),
            d.error
                .as_deref()
                .map(|e| format!(" ({})", e.lines().next().unwrap_or("")))
                .unwrap_or_default()
        );
        outcomes.push(DeployOutcome {
            variant: variant.to_string(),
            expected_success: *expected,
            was_recreate: d.was_recreate(),
            status: d.status.clone(),
            took: t.elapsed(),
            error: d.error.clone(),
            swap_ms: None,
        });
        timelines.push((*variant, t, d));
        // A short pause so consecutive windows do not touch.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = load.stop().await;
    for (outcome, (variant, posted, d)) in outcomes.iter_mut().zip(&timelines) {
        if d.status == "succeeded" {
            outcome.swap_ms = crate::scenario_swap::swap_ms(d, &load, variant, *posted);
        }
    }
    Ok((load, windows, outcomes))
}

async fn molt_bluegreen(ctx: &Ctx, n: usize, failing: usize) -> Result<SystemRun> {
    let app = "bench-deploys";
    ctx.server
        .create_app_ready(app_body(ctx, app, None))
        .await?;
    let plan = plan(n, failing);
    let (load, windows, outcomes) = molt_deploys(ctx, app, &plan).await?;
    Ok(SystemRun::from_load(
        "Molt (blue-green)",
        &load,
        &windows,
        outcomes,
    ))
}

async fn molt_recreate(ctx: &Ctx, n: usize) -> Result<SystemRun> {
    let app = "bench-recreate";
    ctx.server
        .create_app_ready(app_body(ctx, app, Some("recreate")))
        .await
        .context("creating an App with strategy recreate")?;
    let plan: Vec<_> = (0..n).map(|i| (GOOD[(i + 1) % GOOD.len()], true)).collect();
    let (load, windows, outcomes) = molt_deploys(ctx, app, &plan).await?;
    let mut run = SystemRun::from_load("Molt (recreate)", &load, &windows, outcomes);
    let real = run.deploys.iter().filter(|d| d.was_recreate).count();
    if real < run.deploys.len() {
        run.notes.push(format!(
            "only {real} of {} deploys of the `strategy: recreate` App show recreate phases in their timeline; the others ran blue-green",
            run.deploys.len()
        ));
    }
    Ok(run)
}

/// Waits until `GET /` on `addr` answers 2xx with `X-Testapp-Version:
/// version`, polling every 5 ms for up to 30 s.
async fn wait_serving(addr: SocketAddr, version: &str) -> Result<()> {
    let ok = poll(
        Duration::from_secs(30),
        Duration::from_millis(5),
        || async {
            let r = crate::http::get(addr, "bench", "/", Duration::from_secs(1))
                .await
                .ok()?;
            let v = r
                .headers
                .get("x-testapp-version")?
                .to_str()
                .ok()?
                .to_string();
            ((200..300).contains(&r.status) && v == version).then_some(())
        },
    )
    .await;
    ok.with_context(|| format!("{version} did not answer on {addr} within 30 s"))
}

/// `docker stop` of the running container, then `docker run -p
/// 127.0.0.1:PORT:8080` of the next version on the same port; the deploy ends
/// when the new version answers.
async fn stop_then_start(ctx: &Ctx, n: usize) -> Result<SystemRun> {
    let port = free_port()?;
    let addr = localhost(port);
    let mut current =
        Container::run(&ctx.run_id, &crate::images::local("v1"), Some(port), None).await?;
    wait_serving(addr, "v1").await?;
    let target = Target {
        addr,
        host: "bench".into(),
        path: "/".into(),
    };
    let load = LoadRun::start(
        &ctx.load_rt,
        target,
        ctx.load_config(ctx.opts.connections, Duration::from_secs(3600)),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut windows = Vec::new();
    let mut outcomes = Vec::new();
    for i in 0..n {
        let version = GOOD[(i + 1) % GOOD.len()];
        let from = load.now_us();
        let t = Instant::now();
        current.stop().await?;
        current = Container::run(
            &ctx.run_id,
            &crate::images::local(version),
            Some(port),
            None,
        )
        .await?;
        wait_serving(addr, version).await?;
        windows.push((from, load.now_us()));
        eprintln!(
            "   deploy {:>2}/{n} {version} in {:>6} ms",
            i + 1,
            t.elapsed().as_millis()
        );
        outcomes.push(DeployOutcome {
            variant: version.into(),
            expected_success: true,
            status: "succeeded".into(),
            took: t.elapsed(),
            was_recreate: false,
            error: None,
            swap_ms: None,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = load.stop().await;
    drop(current);
    Ok(SystemRun::from_load(
        "stop-then-start",
        &load,
        &windows,
        outcomes,
    ))
}

/// nginx (1 worker) → a container's published port. A deploy starts the next
/// version on a new port, waits until it answers (the health check), points
/// the upstream at it, `nginx -s reload`, waits until the old workers have
/// exited, then stops the old container.
async fn nginx_reload(ctx: &Ctx, bin: &std::path::Path, n: usize) -> Result<SystemRun> {
    let mut current =
        Container::run(&ctx.run_id, &crate::images::local("v1"), Some(0), None).await?;
    let up = localhost(current.port.context("no published port")?);
    wait_serving(up, "v1").await?;
    let mut nginx = Nginx::start(bin, up, 1).await?;
    wait_serving(nginx.addr(), "v1").await?;
    let target = Target {
        addr: nginx.addr(),
        host: "bench".into(),
        path: "/".into(),
    };
    let load = LoadRun::start(
        &ctx.load_rt,
        target,
        ctx.load_config(ctx.opts.connections, Duration::from_secs(3600)),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut windows = Vec::new();
    let mut outcomes = Vec::new();
    for i in 0..n {
        let version = GOOD[(i + 1) % GOOD.len()];
        let from = load.now_us();
        let t = Instant::now();
        let next =
            Container::run(&ctx.run_id, &crate::images::local(version), Some(0), None).await?;
        let next_addr = localhost(next.port.context("no published port")?);
        wait_serving(next_addr, version).await?;
        nginx
            .switch_upstream(next_addr)
            .await
            .with_context(|| format!("nginx log:\n{}", nginx.log()))?;
        std::mem::replace(&mut current, next).stop().await?;
        windows.push((from, load.now_us()));
        eprintln!(
            "   deploy {:>2}/{n} {version} in {:>6} ms",
            i + 1,
            t.elapsed().as_millis()
        );
        outcomes.push(DeployOutcome {
            variant: version.into(),
            expected_success: true,
            status: "succeeded".into(),
            took: t.elapsed(),
            was_recreate: false,
            error: None,
            swap_ms: None,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load = load.stop().await;
    drop(nginx);
    drop(current);
    Ok(SystemRun::from_load(
        "nginx reload (1 worker)",
        &load,
        &windows,
        outcomes,
    ))
}
