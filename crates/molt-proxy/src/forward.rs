//! One user request, end to end: pick the App by host, pick a target, send
//! the request on (bodies streamed), and hand the answer back, or the
//! proxy's own error page. Upgrades (WebSocket) become a byte tunnel that
//! counts as in flight on its target for its whole life.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{client_body_failed, limited, no_body, too_large, ProxyBody, UpstreamBody};
use crate::edge::{self, Activity, Watched};
use crate::errors;
use crate::headers;
pub use crate::headers::Peer;
use crate::hold::Admission;
use crate::host;
use crate::metrics::UpstreamError;
use crate::pool::{self, SendError};
use crate::routes::{RouteState, Routes};
use crate::target::InFlightGuard;

/// Serves one request from `client`.
pub async fn handle(routes: &Routes, client: &Peer, req: Request<Incoming>) -> Response<ProxyBody> {
    // A CONNECT would reach the App as `CONNECT /`, and a 2xx to it would
    // turn the user's connection into a tunnel nobody relays.
    if req.method() == Method::CONNECT {
        routes.unrouted.record(StatusCode::NOT_IMPLEMENTED);
        return errors::connect_refused();
    }
    // Two Host headers: which App was meant is ambiguous, and a proxy and
    // an App that pick differently can be played against each other. One
    // step of the header map's value chain, no allocation.
    let mut hosts = req.headers().get_all(HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        routes.unrouted.record(StatusCode::BAD_REQUEST);
        return errors::bad_request("the request has more than one Host header");
    }
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
        Admission::HandedOver => {
            let max_body = route.request_limits().max_body;
            relay(routes.successor(), app, client, host_value, req, max_body).await
        }
        Admission::TimedOut { max_pause_ms } => errors::held_too_long(app, max_pause_ms),
        Admission::Full { max_queued } => errors::hold_full(app, max_queued),
    };
    route.counts.record(resp.status());
    route.counts.latency(started.elapsed());
    resp
}

async fn forward(
    route: &RouteState,
    client: &Peer,
    host: HeaderValue,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let app = route.app.as_str();
    let settings = route.request_limits();
    // A body announced too large is refused before anything is sent on.
    if body_len(req.headers()).is_some_and(|len| len > settings.max_body) {
        return errors::too_large(app, settings.max_body);
    }
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
    headers::set_forwarded(&mut parts.headers, client, &host);
    if !settings.console {
        headers::strip_molt_cookies(&mut parts.headers);
    }
    let request_id = headers::ensure_request_id(&mut parts.headers);
    // The connection is made before the request is handed over, so a
    // target that refuses it (a container that just died, before the
    // server takes it out of the route) gives the request back. One without
    // a body then gets one more try on another replica: it never reached an
    // App. One with a body gets the 502: the body is the user's to resend.
    let retry = !upgrade && body.is_end_stream();
    let body = if body.is_end_stream() {
        no_body()
    } else {
        limited(body, settings.max_body)
    };
    // Origin form: the connection already goes to the target.
    parts.uri = match origin_form(&parts.uri) {
        Some(uri) => uri,
        None => return errors::bad_request("the request target cannot be forwarded"),
    };
    let mut req = Request::from_parts(parts, body);
    // A copy for one more try, when the exchange fails without an answer.
    let mut replay = if retry { safe_copy(&req) } else { None };

    let limit = settings.upstream_timeout;
    // Whether the request already waited once for the route to settle
    // after every target refused it.
    let mut settled = false;
    let (mut resp, conn) = loop {
        // A target closed meanwhile (drain timeout, shutdown) closes its
        // connections, which fails what is pending on them: told apart
        // below. No per-request wait on the close: that registered every
        // request with a waiter list shared by every worker.
        let answer = within(limit, pool::send(guard.target(), req)).await;
        let target = guard.target();
        if target.is_closed() && !matches!(answer, Some(Ok(_))) {
            return errors::cut(app);
        }
        match answer {
            Some(Ok(answer)) => break answer,
            Some(Err(SendError::Failed(e))) if too_large(&e) => {
                tracing::info!(%app, request_id = ?request_id, limit = settings.max_body,
                    "request body over the App's limit; answered 413");
                return errors::too_large(app, settings.max_body);
            }
            Some(Err(SendError::Failed(e))) if client_body_failed(&e) => {
                tracing::info!(%app, request_id = ?request_id, error = %error_chain(&e),
                    "the user's request body could not be read; answered 400");
                return errors::bad_body();
            }
            Some(Err(SendError::Failed(e))) => {
                tracing::warn!(%app, addr = %target.target.addr, request_id = ?request_id,
                    error = %error_chain(&e), "upstream request failed");
                route.counts.upstream_error(UpstreamError::Failed);
                // Behind a published port the engine's port proxy accepts
                // the connection to a container that just died and drops
                // it: no answer at all. A safe request without a body gets
                // one more try on another replica (RFC 9110 lets a proxy
                // retry it); anything else gets the 502.
                let next = replay
                    .take()
                    .and_then(|copy| Some((copy, route.acquire_other(target)?)));
                let Some((copy, next)) = next else {
                    return errors::upstream_failed(app);
                };
                tracing::info!(%app, from = %target.target.addr, to = %next.target().target.addr,
                    request_id = ?request_id, "sending the request to another replica");
                guard = next;
                req = copy;
            }
            Some(Err(SendError::Connect(e, unsent))) => {
                // Kept past the guard's drop below (a rare path).
                let target = Arc::clone(target);
                tracing::warn!(%app, addr = %target.target.addr, request_id = ?request_id,
                    error = %e, "upstream connection failed");
                route.counts.upstream_error(UpstreamError::Refused);
                if !retry {
                    return errors::refused(app);
                }
                let next = match route.acquire_other(&target) {
                    Some(next) => next,
                    None if !settled => {
                        settled = true;
                        // Not counted on the dead target while it waits.
                        drop(guard);
                        match settle_after_refusal(route, &target).await {
                            Some(next) => next,
                            None => return errors::refused(app),
                        }
                    }
                    None => return errors::refused(app),
                };
                tracing::info!(%app, from = %target.target.addr, to = %next.target().target.addr,
                    request_id = ?request_id, "sending the request to another replica");
                guard = next;
                req = *unsent;
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
        tokio::spawn(tunnel(
            client_upgrade,
            upstream_upgrade,
            guard,
            settings.tunnel_idle,
        ));
        // The upgraded connection is the tunnel's now; it is not pooled.
        drop(conn);
        let (mut parts, _) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, true);
        return Response::from_parts(parts, ProxyBody::empty());
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if let Some(max_age) = settings.hsts_max_age_secs.filter(|_| client.over_tls()) {
        headers::set_hsts(&mut parts.headers, max_age);
    }
    Response::from_parts(parts, ProxyBody::upstream(body, guard, conn))
}

/// How long a request that every target refused waits for the route to be
/// paused (see `settle_after_refusal`).
const REFUSED_GRACE: Duration = Duration::from_secs(1);

/// Every target refused the connection: most likely the App's only
/// container just died, and the server is about to pause the route while it
/// starts it again (or replaces it). The request never reached the App, so
/// instead of failing it waits up to `REFUSED_GRACE` for that pause, then
/// through it, and goes to whatever serves afterwards. `None`: nothing
/// changed in time, and the 502 stands.
async fn settle_after_refusal(
    route: &RouteState,
    refused: &Arc<crate::target::TargetState>,
) -> Option<InFlightGuard> {
    if !route.hold.wait_for_pause(REFUSED_GRACE).await {
        // No pause; a new set of targets may have come meanwhile.
        return route.acquire_other(refused);
    }
    match route.hold.admit().await {
        Admission::Go => route.acquire(),
        _ => None,
    }
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
    client: &Peer,
    host: HeaderValue,
    req: Request<Incoming>,
    max_body: u64,
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
    headers::set_forwarded(&mut parts.headers, client, &host);
    headers::strip_molt_cookies(&mut parts.headers);
    let relay_client: hyper_util::client::legacy::Client<_, UpstreamBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = Request::from_parts(parts, limited(body, max_body));
    match relay_client.request(req).await {
        Ok(resp) => {
            tracing::info!(%app, %successor, "held request passed on to the new proxy");
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, false);
            Response::from_parts(parts, ProxyBody::relayed(body))
        }
        Err(e) if too_large(&e) => errors::too_large(app, max_body),
        Err(e)
            if std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref())
                .is_some_and(client_body_failed) =>
        {
            errors::bad_body()
        }
        Err(e) => {
            tracing::warn!(%app, %successor, error = %error_chain(&e),
                "passing a held request on to the new proxy failed");
            errors::successor_failed(app)
        }
    }
}

/// `fut` bounded by `ms` milliseconds (0: unbounded); `None` on timeout.
/// One future or the other, not an `async fn` awaiting either: that kept
/// room for both in the state of every request (measured: the request's
/// future went from 4.5 to 3.6 KB; each user connection keeps one).
fn within<F: std::future::Future>(
    ms: u64,
    fut: F,
) -> impl std::future::Future<Output = Option<F::Output>> {
    use futures_util::future::{Either, FutureExt};
    if ms == 0 {
        Either::Left(fut.map(Some))
    } else {
        Either::Right(tokio::time::timeout(Duration::from_millis(ms), fut).map(Result::ok))
    }
}

/// The request's path and query alone (what an HTTP/1.1 request line to
/// the target carries).
fn origin_form(original: &Uri) -> Option<Uri> {
    let path = original
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from_parts({
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path);
        parts
    })
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

/// The request body's announced length, if any.
fn body_len(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Copies bytes both ways between the upgraded user and upstream
/// connections until either side closes, nothing crosses for `idle`, or the
/// target is closed (drain timeout, shutdown). Holds the in-flight guard
/// all along.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, guard: InFlightGuard, idle: Duration) {
    let target = Arc::clone(guard.target());
    let activity = Arc::new(Activity::default());
    let copy = async {
        let (client, upstream) = tokio::try_join!(client, upstream)
            .map_err(|e| std::io::Error::other(format!("upgrade failed: {e}")))?;
        let mut client = Watched::new(TokioIo::new(client), Arc::clone(&activity));
        let mut upstream = Watched::new(TokioIo::new(upstream), Arc::clone(&activity));
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    tokio::select! {
        () = edge::idle_for(&activity, idle) => {
            tracing::debug!(addr = %target.target.addr, ?idle, "upgraded connection idle; closed");
        }
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

/// A copy of a request without a body whose method is safe (GET, HEAD,
/// OPTIONS), to send again when the first try got no answer; none for any
/// other request.
fn safe_copy(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    if !req.method().is_safe() || req.method() == http::Method::TRACE {
        return None;
    }
    let mut copy = Request::new(no_body());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_requests_are_copied_for_another_try() {
        let req = |method: &str| {
            Request::builder()
                .method(method)
                .uri("/a?b=c")
                .header("x-request-id", "r1")
                .body(no_body())
                .expect("request")
        };
        let copy = safe_copy(&req("GET")).expect("a GET is copied");
        assert_eq!(copy.method(), http::Method::GET);
        assert_eq!(copy.uri(), "/a?b=c");
        assert_eq!(copy.headers()["x-request-id"], "r1");
        assert!(safe_copy(&req("HEAD")).is_some());
        assert!(safe_copy(&req("OPTIONS")).is_some());
        for method in ["POST", "PUT", "DELETE", "PATCH", "TRACE"] {
            assert!(safe_copy(&req(method)).is_none(), "{method}");
        }
    }

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
