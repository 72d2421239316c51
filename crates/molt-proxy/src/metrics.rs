//! Request counters and the Prometheus text the optional metrics listener
//! serves. Plain atomics: the data plane pays one increment per response.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

use crate::routes::Routes;

/// Responses by status class (1xx..5xx).
#[derive(Debug, Default)]
pub struct ResponseCounts {
    by_class: [AtomicU64; 5],
}

impl ResponseCounts {
    pub fn record(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, class: usize) -> u64 {
        self.by_class[class].load(Ordering::Relaxed)
    }
}

/// Renders every counter in the Prometheus text format.
pub fn render(routes: &Routes) -> String {
    let mut out = String::new();
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
}
