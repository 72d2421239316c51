//! *Swap latency*: how soon the new version serves once it is healthy, and
//! how much a deploy adds to the container's own start-up.
//!
//! A few connections run a tight `GET` loop through the proxy and note the
//! first response carrying each new `X-Testapp-Version`. The deploy's
//! timeline (`GET /api/v1/apps/{name}/deploys/{id}`, events with millisecond
//! timestamps) gives when the new container started, was found healthy and
//! when traffic was switched. Both clocks are this machine's wall clock, so
//! the differences are good to about a millisecond (the events' precision).
//!
//! The container's own start-up is measured before each deploy, under the
//! same load: create + start through the engine API (as Molt does), then
//! `GET /` on its address every millisecond until it answers.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};

use crate::docker::time_container_start;
use crate::images::GOOD;
use crate::load::{LoadResult, LoadRun, Target};
use crate::server::Deploy;
use crate::Ctx;

/// Connections of the tight loop: a request is always about to be sent
/// (each takes well under a millisecond), and one core stays for the rest.
const CONNECTIONS: usize = 2;

/// One deploy's timings, all in ms (None when an event was missing).
#[derive(Debug, Clone, Default)]
pub struct SwapTiming {
    /// POST → "pulled"/"using" event.
    pub pull: Option<f64>,
    /// Pull → "container started" event.
    pub start: Option<f64>,
    /// Container started → "healthy" event.
    pub health_wait: Option<f64>,
    /// "healthy" event → "traffic switched" event.
    pub healthy_to_switched: Option<f64>,
    /// "traffic switched" event → first response from the new version.
    pub switched_to_served: Option<f64>,
    /// "healthy" event → first response from the new version: the swap
    /// latency.
    pub swap: Option<f64>,
    /// POST → first response from the new version.
    pub deploy_to_serving: Option<f64>,
    /// `deploy_to_serving` minus the engine's create + start inside this
    /// deploy (`start`): what the deploy adds to the container's start-up,
    /// measured within one deploy, so the engine's large run-to-run variance
    /// cancels out.
    pub added: Option<f64>,
}

pub struct SwapReport {
    pub swaps: Vec<SwapTiming>,
    /// The container's own start-up, ms: create+start returned, and first 2xx.
    pub own_started: Vec<f64>,
    pub own_serving: Vec<f64>,
    pub health_interval_ms: u64,
    pub notes: Vec<String>,
}

pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

pub fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

impl SwapReport {
    /// The values of one column over all swaps.
    pub fn column(&self, f: impl Fn(&SwapTiming) -> Option<f64>) -> Vec<f64> {
        self.swaps.iter().filter_map(f).collect()
    }
}

fn unix_nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128
}

fn event_ns(d: &Deploy, pred: impl Fn(&str) -> bool) -> Option<i128> {
    d.events
        .iter()
        .find(|e| pred(&e.message))
        .and_then(|e| e.unix_nanos().ok())
}

fn diff_ms(a: Option<i128>, b: Option<i128>) -> Option<f64> {
    Some((b? - a?) as f64 / 1e6)
}

/// A deploy's "healthy" event → the first response of `version` to a
/// request sent after `posted`, in ms.
pub fn swap_ms(d: &Deploy, load: &LoadResult, version: &str, posted: Instant) -> Option<f64> {
    let healthy = event_ns(d, |m| m.starts_with("healthy after"));
    let served = load
        .first_response_of(version, posted)
        .map(|c| load.unix_nanos(c.received));
    diff_ms(healthy, served)
}

pub async fn run(ctx: &Ctx) -> Result<SwapReport> {
    let app = "bench-swap";
    ctx.server
        .create_app_ready(serde_json::json!({
            "name": app,
            "image": ctx.image("v1"),
            "port": 8080,
            "health_path": "/healthz",
        }))
        .await?;
    let mut notes = Vec::new();

    let mut own_started = Vec::new();
    let mut own_serving = Vec::new();

    let target = Target {
        addr: ctx.server.proxy_addr(),
        host: format!("{app}.localhost"),
        path: "/".into(),
    };
    let load = LoadRun::start(
        &ctx.load_rt,
        target,
        ctx.load_config(CONNECTIONS, Duration::from_secs(1800)),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let engine = crate::docker::engine_pid();
    let mut pending = Vec::new();
    for i in 0..ctx.opts.swaps {
        // The container's own start-up, on the network Molt uses, under the
        // same conditions as the deploy right after it.
        let t = time_container_start(
            &ctx.run_id,
            &crate::images::local("v1"),
            ctx.server.network(),
        )
        .await?;
        own_started.push(t.started.as_secs_f64() * 1e3);
        own_serving.push(t.serving.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(200)).await;

        let version = GOOD[(i + 1) % GOOD.len()];
        let posted = Instant::now();
        let posted_wall = SystemTime::now();
        let d = ctx.server.start_deploy(app, &ctx.image(version)).await?;
        let d = ctx
            .server
            .wait_deploy(app, &d.id, Duration::from_secs(120))
            .await?;
        if d.status != "succeeded" {
            bail!(
                "swap deploy {} of {version} ended {}: {:?}",
                i + 1,
                d.status,
                d.error
            );
        }
        // The new version must have served by now; give the loop a moment.
        let seen = crate::util::poll(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async { load.first_response_of(version, posted) },
        )
        .await;
        if seen.is_none() {
            notes.push(format!(
                "swap {}: no response from {version} seen within 5 s of the deploy's end",
                i + 1
            ));
        }
        pending.push((version, posted, posted_wall, d));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = load.stop().await;
    if crate::docker::engine_pid() != engine {
        notes.push(
            "the Docker engine was restarted (by something else on the machine) during the swaps"
                .into(),
        );
    }
    let failed = result.summary().failed();
    if failed > 0 {
        notes.push(format!(
            "{failed} request(s) of the tight loop failed during the swaps"
        ));
    }

    let mut swaps = Vec::new();
    for (version, posted, posted_wall, d) in pending {
        let post = Some(unix_nanos(posted_wall));
        let pulled = event_ns(&d, |m| m.starts_with("pulled") || m.starts_with("using "));
        let started = event_ns(&d, |m| {
            m.starts_with("container ") && m.ends_with(" started")
        });
        let healthy = event_ns(&d, |m| m.starts_with("healthy after"));
        let switched = event_ns(&d, |m| m.starts_with("traffic switched"));
        let served = result
            .first_response_of(version, posted)
            .map(|c| result.unix_nanos(c.received));
        if healthy.is_none() || switched.is_none() {
            notes.push(format!(
                "deploy {}: its timeline lacks a \"healthy after\" or \"traffic switched\" event",
                d.id
            ));
        }
        swaps.push(SwapTiming {
            pull: diff_ms(post, pulled),
            start: diff_ms(pulled, started),
            health_wait: diff_ms(started, healthy),
            healthy_to_switched: diff_ms(healthy, switched),
            switched_to_served: diff_ms(switched, served),
            swap: diff_ms(healthy, served),
            deploy_to_serving: diff_ms(post, served),
            added: diff_ms(post, served)
                .zip(diff_ms(pulled, started))
                .map(|(d, s)| d - s),
        });
    }
    let health_interval_ms = ctx.server.app_json(app).await?["health"]["interval_ms"]
        .as_u64()
        .unwrap_or(0);
    Ok(SwapReport {
        swaps,
        own_started,
        own_serving,
        health_interval_ms,
        notes,
    })
}
