//! Request counters and the Prometheus text the optional metrics listener
//! serves. Plain atomics: the data plane pays one increment per response.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

use crate::routes::Routes;

/// Upper bounds (seconds) of the latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Why an upstream request failed.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamError {
    /// The connection was refused or could not be made (502).
    Refused,
    /// The upstream broke off mid-exchange (502).
    Failed,
    /// It did not answer within the route's timeout (504).
    Timeout,
}

/// Responses by status class (1xx..5xx), their latency (until the response
/// head), and upstream errors by kind.
#[derive(Debug, Default)]
pub struct ResponseCounts {
    by_class: [AtomicU64; 5],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    upstream_errors: [AtomicU64; 3],
}

impl ResponseCounts {
    pub fn record(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn latency(&self, took: std::time::Duration) {
        // One bucket per observation (the first bound it fits); the
        // cumulative counts Prometheus wants are summed when rendering, so
        // the data path pays one increment, not one per bucket.
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, class: usize) -> u64 {
        self.by_class[class].load(Ordering::Relaxed)
    }
}

/// Renders every counter in the Prometheus text format.
pub fn render(routes: &Routes) -> String {
    let mut out = String::new();
    render_latency_and_errors(routes, &mut out);
    out.push_str("# HELP molt_proxy_requests_total Responses sent, by App and status class.\n");
    out.push_str("# TYPE molt_proxy_requests_total counter\n");
    let apps = routes.all();
    let mut rows: Vec<(&str, &ResponseCounts)> =
        apps.iter().map(|r| (r.app.as_str(), &r.counts)).collect();
    rows.push(("", &routes.unrouted));
    for (app, counts) in &rows {
        for class in 0..5 {
            let _ = writeln!(
                out,
                "molt_proxy_requests_total{{app=\"{}\",code_class=\"{}xx\"}} {}",
                escape(app),
                class + 1,
                counts.get(class)
            );
        }
    }
    out.push_str("# HELP molt_proxy_in_flight Requests and upgraded connections in flight.\n");
    out.push_str("# TYPE molt_proxy_in_flight gauge\n");
    for route in &apps {
        let _ = writeln!(
            out,
            "molt_proxy_in_flight{{app=\"{}\"}} {}",
            escape(&route.app),
            route.in_flight()
        );
    }
    out.push_str("# HELP molt_proxy_paused Whether the App's route is paused (1) or not (0).\n");
    out.push_str("# TYPE molt_proxy_paused gauge\n");
    for route in &apps {
        let _ = writeln!(
            out,
            "molt_proxy_paused{{app=\"{}\"}} {}",
            escape(&route.app),
            u8::from(route.hold.limits().is_some())
        );
    }
    out.push_str("# HELP molt_proxy_held_requests Requests held now by a paused route.\n");
    out.push_str("# TYPE molt_proxy_held_requests gauge\n");
    for route in &apps {
        let _ = writeln!(
            out,
            "molt_proxy_held_requests{{app=\"{}\"}} {}",
            escape(&route.app),
            route.hold.waiting()
        );
    }
    out.push_str(
        "# HELP molt_proxy_held_requests_total Requests that were held by a paused route.\n",
    );
    out.push_str("# TYPE molt_proxy_held_requests_total counter\n");
    for route in &apps {
        let _ = writeln!(
            out,
            "molt_proxy_held_requests_total{{app=\"{}\"}} {}",
            escape(&route.app),
            route.hold.held_total()
        );
    }
    out
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_latency_and_errors(routes: &Routes, out: &mut String) {
    let apps = routes.all();
    out.push_str(
        "# HELP molt_proxy_request_duration_seconds Time until the response head, by App.\n",
    );
    out.push_str("# TYPE molt_proxy_request_duration_seconds histogram\n");
    for r in apps.iter() {
        let c = &r.counts;
        let app = &r.app;
        let mut cumulative = 0;
        for (bucket, bound) in c.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "molt_proxy_request_duration_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = c.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "molt_proxy_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {count}"
        );
        let sum = c.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "molt_proxy_request_duration_seconds_sum{{app=\"{app}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "molt_proxy_request_duration_seconds_count{{app=\"{app}\"}} {count}"
        );
    }
    out.push_str(
        "# HELP molt_proxy_upstream_errors_total Upstream requests that failed, by App and kind.\n",
    );
    out.push_str("# TYPE molt_proxy_upstream_errors_total counter\n");
    for r in apps.iter() {
        for (kind, n) in ["refused", "failed", "timeout"]
            .iter()
            .zip(&r.counts.upstream_errors)
        {
            let _ = writeln!(
                out,
                "molt_proxy_upstream_errors_total{{app=\"{}\",kind=\"{kind}\"}} {}",
                r.app,
                n.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_clamp() {
        let c = ResponseCounts::default();
        c.record(StatusCode::OK);
        c.record(StatusCode::BAD_GATEWAY);
        c.record(StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(c.get(0), 1);
        assert_eq!(c.get(1), 1);
        assert_eq!(c.get(4), 1);
    }

    #[test]
    fn latency_buckets_render_cumulative() {
        let route = crate::admin::Route {
            app: "web".into(),
            hosts: vec!["web.test".into()],
            targets: vec![],
            upstream_timeout_ms: 0,
            drain_timeout_ms: 0,
            tunnel_idle_timeout_ms: None,
            max_body_bytes: None,
        };
        let routes = Routes::with(
            std::env::temp_dir().join("unused-routes.json"),
            vec![route],
            &[],
            "test",
        )
        .expect("routes");
        let counts = &routes.app("web").expect("route").counts;
        for ms in [0.5, 3.0, 4.0, 20_000.0] {
            counts.latency(std::time::Duration::from_secs_f64(ms / 1000.0));
        }
        let text = render(&routes);
        let bucket = |le: &str| {
            let key =
                format!("molt_proxy_request_duration_seconds_bucket{{app=\"web\",le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).expect(le);
            line[key.len()..].to_string()
        };
        assert_eq!(bucket("0.001"), "1");
        assert_eq!(bucket("0.0025"), "1");
        assert_eq!(bucket("0.005"), "3");
        assert_eq!(bucket("10"), "3");
        assert_eq!(bucket("+Inf"), "4");
    }
}
