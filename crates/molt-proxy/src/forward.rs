//! One user request, end to end: pick the App by host, pick a target, send
//! the request on (bodies streamed), and hand the answer back, or the
//! proxy's own error page. Upgrades (WebSocket) become a byte tunnel that
//! counts as in flight on its target for its whole life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{no_body, ProxyBody, UpstreamBody};
use crate::errors;
use crate::headers;
use crate::hold::Admission;
use crate::host;
use crate::metrics::UpstreamError;
use crate::routes::{RouteState, Routes};
use crate::target::{InFlightGuard, UpstreamClient};

/// Serves one request from `client`.
pub async fn handle(
    routes: &Routes,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    // HTTP/2 carries the host in `:authority`, which hyper puts in the URI.
    let host_value = req.headers().get(HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let Some(host_value) = host_value else {
        routes.unrouted.record(StatusCode::BAD_REQUEST);
        return errors::missing_host();
    };
    let Some(host) = host_value.to_str().ok().and_then(host::normalize) else {
        routes.unrouted.record(StatusCode::BAD_REQUEST);
        return errors::bad_request("the Host header is not a host name");
    };
    let Some(route) = routes.lookup(&host) else {
        routes.unrouted.record(StatusCode::NOT_FOUND);
        return errors::unknown_host(&host);
    };
    let app = route.app.as_str();
    let started = std::time::Instant::now();
    // A paused route holds the request here, before any target is chosen,
    // so it goes to whatever targets are current when it is released.
    let resp = match route.hold.admit().await {
        Admission::Go => forward(&route, client, host_value, req).await,
        Admission::HandedOver => relay(routes.successor(), app, client, host_value, req).await,
        Admission::TimedOut { max_pause_ms } => errors::held_too_long(app, max_pause_ms),
        Admission::Full { max_queued } => errors::hold_full(app, max_queued),
    };
    route.counts.record(resp.status());
    route.counts.latency(started.elapsed());
    resp
}

async fn forward(
    route: &RouteState,
    client: SocketAddr,
    host: HeaderValue,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let app = route.app.as_str();
    let Some(mut guard) = route.acquire() else {
        return errors::no_target(app);
    };

    let upgrade = req.version() <= Version::HTTP_11 && headers::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // Upstreams speak HTTP/1.1 whatever the user's connection is.
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    if !parts.headers.contains_key(HOST) {
        parts.headers.insert(HOST, host.clone());
    }
    headers::set_forwarded(&mut parts.headers, client.ip(), &host);
    let request_id = headers::ensure_request_id(&mut parts.headers);
    // A request without a body gets one more try on another replica if its
    // target refuses the connection (a container that just died, before
    // the server takes it out of the route): it never reached an App.
    let mut spare = (!upgrade && body.is_end_stream() && route.target_count() > 1).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });
    let mut body = if spare.is_some() {
        no_body()
    } else {
        UpstreamBody::Left(body)
    };

    let limit = route.settings().upstream_timeout_ms;
    let mut resp = loop {
        let target = Arc::clone(guard.target());
        let Some(upstream) = target.client() else {
            return errors::cut(app);
        };
        parts.uri = match upstream_uri(&target.authority, &parts.uri) {
            Some(uri) => uri,
            None => return errors::bad_request("the request target cannot be forwarded"),
        };
        let send = upstream.request(Request::from_parts(parts, body));
        let answer = tokio::select! {
            answer = within(limit, send) => answer,
            () = target.closed() => return errors::cut(app),
        };
        match answer {
            Some(Ok(resp)) => break resp,
            Some(Err(e)) => {
                tracing::warn!(%app, addr = %target.target.addr, request_id = ?request_id,
                    error = %error_chain(&e), "upstream request failed");
                if !e.is_connect() {
                    route.counts.upstream_error(UpstreamError::Failed);
                    return errors::upstream_failed(app);
                }
                route.counts.upstream_error(UpstreamError::Refused);
                let Some((method, uri, headers)) = spare.take() else {
                    return errors::refused(app);
                };
                let Some(next) = route.acquire_other(&target) else {
                    return errors::refused(app);
                };
                tracing::info!(%app, from = %target.target.addr, to = %next.target().target.addr,
                    request_id = ?request_id, "sending the request to another replica");
                guard = next;
                (parts, body) = bodiless(method, uri, headers);
            }
            None => {
                route.counts.upstream_error(UpstreamError::Timeout);
                return errors::timeout(app, limit);
            }
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return errors::upstream_failed(app);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, guard));
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, ProxyBody::empty());
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, ProxyBody::upstream(body, guard))
}

/// A request without a body, rebuilt from what was kept of it.
fn bodiless(
    method: http::Method,
    uri: Uri,
    headers: http::HeaderMap,
) -> (http::request::Parts, UpstreamBody) {
    let mut req = Request::new(no_body());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req.into_parts()
}

/// A request that was held when this proxy handed its sockets over: the
/// successor inherited the pause and the routes, and this process will not
/// hear the resume, so it passes the request on to the successor's listener
/// (the same socket, now accepted by the new process) unchanged. The
/// successor appends this hop (a loopback address) to `X-Forwarded-For`.
/// Upgrades are not relayed: the client gets a 503 and reconnects.
async fn relay(
    successor: Option<SocketAddr>,
    app: &str,
    client: SocketAddr,
    host: HeaderValue,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let upgrade = req.version() <= Version::HTTP_11 && headers::is_upgrade(req.headers());
    let Some(successor) = successor.filter(|_| !upgrade) else {
        return errors::handed_over(app);
    };
    let (mut parts, body) = req.into_parts();
    let authority = match Authority::try_from(successor.to_string()) {
        Ok(a) => a,
        Err(_) => return errors::successor_failed(app),
    };
    parts.uri = match upstream_uri(&authority, &parts.uri) {
        Some(uri) => uri,
        None => return errors::bad_request("the request target cannot be forwarded"),
    };
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if !parts.headers.contains_key(HOST) {
        parts.headers.insert(HOST, host.clone());
    }
    headers::set_forwarded(&mut parts.headers, client.ip(), &host);
    let relay_client: UpstreamClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = Request::from_parts(parts, UpstreamBody::Left(body));
    match relay_client.request(req).await {
        Ok(resp) => {
            tracing::info!(%app, %successor, "held request passed on to the new proxy");
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, ProxyBody::relayed(body))
        }
        Err(e) => {
            tracing::warn!(%app, %successor, error = %error_chain(&e),
                "passing a held request on to the new proxy failed");
            errors::successor_failed(app)
        }
    }
}

/// `fut` bounded by `ms` milliseconds (0: unbounded); `None` on timeout.
async fn within<F: std::future::Future>(ms: u64, fut: F) -> Option<F::Output> {
    if ms == 0 {
        return Some(fut.await);
    }
    tokio::time::timeout(Duration::from_millis(ms), fut)
        .await
        .ok()
}

/// The request's path and query, aimed at the target.
fn upstream_uri(target: &Authority, original: &Uri) -> Option<Uri> {
    let path = original
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(target.clone())
        .path_and_query(path)
        .build()
        .ok()
}

/// Copies bytes both ways between the upgraded user and upstream
/// connections until either side closes or the target is closed (drain
/// timeout, shutdown). Holds the in-flight guard all along.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, guard: InFlightGuard) {
    let target = Arc::clone(guard.target());
    let copy = async {
        let (client, upstream) = tokio::try_join!(client, upstream)
            .map_err(|e| std::io::Error::other(format!("upgrade failed: {e}")))?;
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    tokio::select! {
        result = copy => match result {
            Ok((up, down)) => tracing::debug!(addr = %target.target.addr, up, down, "upgraded connection ended"),
            Err(e) => tracing::debug!(addr = %target.target.addr, error = %e, "upgraded connection failed"),
        },
        () = target.closed() => {
            tracing::info!(addr = %target.target.addr, "upgraded connection closed: target closed");
        }
    }
    drop(guard);
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_path_and_query() {
        let target: Authority = "10.0.0.2:8080".parse().expect("authority");
        let uri: Uri = "/a/b?c=d".parse().expect("uri");
        let out = upstream_uri(&target, &uri).expect("uri");
        assert_eq!(out.to_string(), "http://10.0.0.2:8080/a/b?c=d");
        let abs: Uri = "http://web.test/x".parse().expect("uri");
        let out = upstream_uri(&target, &abs).expect("uri");
        assert_eq!(out.to_string(), "http://10.0.0.2:8080/x");
    }
}
