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

pub fn missing_host() -> Response<ProxyBody> {
    page(
        StatusCode::BAD_REQUEST,
        "the request names no host, so no App can be chosen.".into(),
    )
}

pub fn bad_request(what: &str) -> Response<ProxyBody> {
    page(StatusCode::BAD_REQUEST, format!("{what}."))
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
