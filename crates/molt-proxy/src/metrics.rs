//! Request counters and the Prometheus text the optional metrics listener
//! serves. Plain atomics: the data plane pays one increment per response.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

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
///
/// Sharded: each worker thread counts in a shard of its own (a cache line
/// apart), so that the counters every request bumps are not one cache line
/// that all workers fight over; rendering sums the shards. The shards are
/// made on a route's first response, so routes that see no traffic cost a
/// pointer.
#[derive(Debug, Default)]
pub struct ResponseCounts {
    shards: OnceLock<Box<[Shard]>>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    by_class: [AtomicU64; 5],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    upstream_errors: [AtomicU64; 3],
}

/// How many shards a counter set has: the proxy's worker threads, at most
/// `MAX_SHARDS` (set once at start; 1 until then).
static SHARDS: AtomicUsize = AtomicUsize::new(1);
const MAX_SHARDS: usize = 16;

/// Sets the number of shards counter sets made from now on will have.
pub fn set_shards(workers: usize) {
    SHARDS.store(workers.clamp(1, MAX_SHARDS), Ordering::Relaxed);
}

/// This thread's shard number (taken in turn as threads first count).
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.try_with(|s| *s).unwrap_or(0)
}

impl ResponseCounts {
    fn shard(&self) -> &Shard {
        let shards = self.shards.get_or_init(|| {
            (0..SHARDS.load(Ordering::Relaxed))
                .map(|_| Shard::default())
                .collect()
        });
        &shards[thread_shard() % shards.len()]
    }

    /// One counter summed over the shards.
    fn sum(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.get().map_or(0, |shards| {
            shards
                .iter()
                .map(|s| counter(s).load(Ordering::Relaxed))
                .sum()
        })
    }

    pub fn record(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.shard().by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn latency(&self, took: std::time::Duration) {
        // One bucket per observation (the first bound it fits); the
        // cumulative counts Prometheus wants are summed when rendering, so
        // the data path pays one increment, not one per bucket.
        let shard = self.shard();
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            shard.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        shard
            .latency_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
        shard.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.shard().upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, class: usize) -> u64 {
        self.sum(|s| &s.by_class[class])
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
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += c.sum(|s| &s.latency_buckets[i]);
            let _ = writeln!(
                out,
                "molt_proxy_request_duration_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = c.sum(|s| &s.latency_count);
        let _ = writeln!(
            out,
            "molt_proxy_request_duration_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {count}"
        );
        let sum = c.sum(|s| &s.latency_sum_micros) as f64 / 1e6;
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
        for (i, kind) in ["refused", "failed", "timeout"].iter().enumerate() {
            let _ = writeln!(
                out,
                "molt_proxy_upstream_errors_total{{app=\"{}\",kind=\"{kind}\"}} {}",
                r.app,
                r.counts.sum(|s| &s.upstream_errors[i])
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
            https_redirect: None,
            hsts_max_age_secs: None,
            console: false,
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
