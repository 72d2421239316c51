//! The server's Prometheus metrics (`GET /metrics`): deploys by App, kind and
//! outcome, deploy durations, and autoheal replacements. A handful of series
//! in a mutex: they change a few times per deploy, not per request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the deploy-duration histogram's buckets.
const BUCKETS: [f64; 10] = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Series>,
}

#[derive(Default)]
struct Series {
    /// (app, kind, outcome) → count.
    deploys: BTreeMap<(String, String, String), u64>,
    /// kind → (bucket counts, sum, count).
    durations: BTreeMap<String, ([u64; BUCKETS.len()], f64, u64)>,
    /// app → replacements.
    autoheal: BTreeMap<String, u64>,
    /// outcome → ACME orders that ended so.
    acme_orders: BTreeMap<String, u64>,
}

impl Metrics {
    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn deploy_finished(&self, app: &str, kind: &str, outcome: &str, took: Duration) {
        let mut s = self.series();
        *s.deploys
            .entry((app.to_string(), kind.to_string(), outcome.to_string()))
            .or_default() += 1;
        let (buckets, sum, count) = s.durations.entry(kind.to_string()).or_default();
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                buckets[i] += 1;
            }
        }
        *sum += secs;
        *count += 1;
    }

    /// An ACME order ended (`issued` or `failed`).
    pub fn acme_order(&self, outcome: &str) {
        *self
            .series()
            .acme_orders
            .entry(outcome.to_string())
            .or_default() += 1;
    }

    pub fn autoheal_replaced(&self, app: &str) {
        *self.series().autoheal.entry(app.to_string()).or_default() += 1;
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let s = self.series();
        let mut out = String::new();
        out.push_str("# HELP molt_deploys_total Deploys that ended, by App, kind and outcome.\n");
        out.push_str("# TYPE molt_deploys_total counter\n");
        for ((app, kind, outcome), n) in &s.deploys {
            let _ = writeln!(
                out,
                "molt_deploys_total{{app=\"{}\",kind=\"{kind}\",outcome=\"{outcome}\"}} {n}",
                escape(app)
            );
        }
        out.push_str(
            "# HELP molt_deploy_duration_seconds How long deploys took, from request to end.\n",
        );
        out.push_str("# TYPE molt_deploy_duration_seconds histogram\n");
        for (kind, (buckets, sum, count)) in &s.durations {
            for (bound, n) in BUCKETS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "molt_deploy_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "molt_deploy_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "molt_deploy_duration_seconds_sum{{kind=\"{kind}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "molt_deploy_duration_seconds_count{{kind=\"{kind}\"}} {count}"
            );
        }
        out.push_str("# HELP molt_autoheal_replacements_total Containers replaced because they stayed unhealthy.\n");
        out.push_str("# TYPE molt_autoheal_replacements_total counter\n");
        for (app, n) in &s.autoheal {
            let _ = writeln!(
                out,
                "molt_autoheal_replacements_total{{app=\"{}\"}} {n}",
                escape(app)
            );
        }
        out.push_str(
            "# HELP molt_acme_orders_total ACME certificate orders that ended, by outcome.\n",
        );
        out.push_str("# TYPE molt_acme_orders_total counter\n");
        for (outcome, n) in &s.acme_orders {
            let _ = writeln!(out, "molt_acme_orders_total{{outcome=\"{outcome}\"}} {n}");
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `molt_proxy_peer_in_date{peer}`: 1 while a `--proxy-peer` has every
/// route change, 0 while it is out of date. Nothing without peers.
pub fn peer_metrics(peers: &[crate::proxy_peers::PeerStatus]) -> String {
    let mut out = String::new();
    if peers.is_empty() {
        return out;
    }
    out.push_str("# HELP molt_proxy_peer_in_date Whether a proxy on another node (--proxy-peer) has every route change.\n");
    out.push_str("# TYPE molt_proxy_peer_in_date gauge\n");
    for peer in peers {
        let _ = writeln!(
            out,
            "molt_proxy_peer_in_date{{peer=\"{}\"}} {}",
            escape(&peer.addr),
            u8::from(peer.in_date)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_series() {
        let m = Metrics::default();
        m.deploy_finished("web", "deploy", "succeeded", Duration::from_millis(1500));
        m.deploy_finished("web", "deploy", "failed", Duration::from_secs(40));
        m.autoheal_replaced("web");
        let text = m.render();
        assert!(
            text.contains(
                "molt_deploys_total{app=\"web\",kind=\"deploy\",outcome=\"succeeded\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("molt_deploy_duration_seconds_bucket{kind=\"deploy\",le=\"2\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("molt_deploy_duration_seconds_bucket{kind=\"deploy\",le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("molt_deploy_duration_seconds_count{kind=\"deploy\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("molt_autoheal_replacements_total{app=\"web\"} 1"),
            "{text}"
        );
    }
}
