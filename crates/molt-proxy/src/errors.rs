//! The proxy's own answers when it cannot hand a request to an App: short
//! plain-text pages that say what happened, and to which App.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

fn page(status: StatusCode, message: String) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let text = format!("{} {reason}: {message}\n", status.as_u16());
    let mut resp = Response::new(ProxyBody::fixed(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `CONNECT`: Apps are origin servers, and the proxy is no forward proxy
/// into their network.
pub fn connect_refused() -> Response<ProxyBody> {
    page(
        StatusCode::NOT_IMPLEMENTED,
        "CONNECT is not served here; send the request itself to the App's host.".into(),
    )
}

pub fn missing_host() -> Response<ProxyBody> {
    page(
        StatusCode::BAD_REQUEST,
        "the request names no host, so no App can be chosen.".into(),
    )
}

pub fn bad_request(what: &str) -> Response<ProxyBody> {
    page(StatusCode::BAD_REQUEST, format!("{what}."))
}

/// The request body broke off: a malformed chunk, or the user's
/// connection closed before the body ended.
pub fn bad_body() -> Response<ProxyBody> {
    bad_request("the request body is malformed or was cut short; send it again, whole")
}

pub fn unknown_host(host: &str) -> Response<ProxyBody> {
    page(
        StatusCode::NOT_FOUND,
        format!("no App is routed at `{host}`."),
    )
}

pub fn no_target(app: &str) -> Response<ProxyBody> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the App `{app}` has no running target right now."),
    )
}

pub fn refused(app: &str) -> Response<ProxyBody> {
    page(
        StatusCode::BAD_GATEWAY,
        format!("the App `{app}` did not accept the connection."),
    )
}

pub fn upstream_failed(app: &str) -> Response<ProxyBody> {
    page(
        StatusCode::BAD_GATEWAY,
        format!("the App `{app}` closed the connection without a valid answer."),
    )
}

pub fn cut(app: &str) -> Response<ProxyBody> {
    page(
        StatusCode::BAD_GATEWAY,
        format!("the App `{app}` was replaced and this request outlived its drain timeout."),
    )
}

pub fn timeout(app: &str, ms: u64) -> Response<ProxyBody> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        format!("the App `{app}` did not answer within {ms} ms."),
    )
}

pub fn too_large(app: &str, max: u64) -> Response<ProxyBody> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the App `{app}` accepts ({max} bytes)."),
    )
}

/// A held request whose wait ran out: the redeploy took longer than the
/// pause allows.
pub fn held_too_long(app: &str, max_pause_ms: u64) -> Response<ProxyBody> {
    retry_soon(page(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the App `{app}` is being redeployed and did not come back within {}.",
            seconds(max_pause_ms)
        ),
    ))
}

/// Too many requests are held already; this one is not queued.
pub fn hold_full(app: &str, max_queued: usize) -> Response<ProxyBody> {
    retry_soon(page(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the App `{app}` is being redeployed and {max_queued} requests are already waiting for it; try again shortly."
        ),
    ))
}

/// The successor proxy could not be reached for a request held across a
/// handover.
pub fn successor_failed(app: &str) -> Response<ProxyBody> {
    page(
        StatusCode::BAD_GATEWAY,
        format!("the App `{app}` was paused while the proxy was upgraded, and the new proxy did not answer."),
    )
}

/// A held upgrade (WebSocket) request when this proxy handed over: it is
/// not relayed, the client retries against the new proxy.
pub fn handed_over(app: &str) -> Response<ProxyBody> {
    retry_soon(page(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the App `{app}` is being redeployed while the proxy is upgraded; try again."),
    ))
}

/// `Retry-After: 1`: the condition is expected to pass quickly.
fn retry_soon(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// `1500` → `1.5 s`, `30000` → `30 s`.
fn seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        let tenths = ms.div_ceil(100);
        format!("{}.{} s", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds(30_000), "30 s");
        assert_eq!(seconds(1_500), "1.5 s");
        assert_eq!(seconds(300), "0.3 s");
        assert_eq!(seconds(1), "0.1 s");
    }
}
