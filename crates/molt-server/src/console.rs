//! Molt's console through its own proxy (`molt server --console-domain
//! HOST`): the dashboard and API get a route like an App's, to the API
//! listener, so they are reached over HTTPS with a certificate Molt orders
//! or is given for HOST. The route is kept in the proxy for the life of the
//! server, as the certificates are.

use crate::deploy::Deployer;
use molt_proxy::admin::{Route, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The console's route in the proxy. Not a valid App name, so no App can
/// collide with it.
pub const ROUTE: &str = "_console";

/// How often the proxy's console route is compared with the wanted one.
/// The proxy keeps its routes on disk across restarts, so this only heals
/// a lost routes file; it lists every route, so not often.
const EVERY: Duration = Duration::from_secs(30);
/// The wait before trying again while the proxy does not answer yet.
const RETRY: Duration = Duration::from_secs(1);

/// The route that serves `domain` from the API listening on `api`; bodies
/// up to `max_body` (a `molt build` context may be that large).
pub fn route(domain: &str, api: SocketAddr, max_body: u64) -> Route {
    Route {
        app: ROUTE.to_string(),
        hosts: vec![domain.to_string()],
        targets: vec![Target {
            addr: crate::hosted_registry::reachable_host(api),
            id: "molt-server".to_string(),
        }],
        upstream_timeout_ms: 0,
        drain_timeout_ms: 5_000,
        // A followed deploy or log is quiet for long stretches.
        tunnel_idle_timeout_ms: None,
        max_body_bytes: Some(max_body),
        https_redirect: None,
        hsts_max_age_secs: None,
        console: true,
    }
}

/// Whether a request came to the console over HTTPS through the proxy: its
/// host is the console's domain and the proxy says the scheme was https.
/// Then Molt's cookies are `Secure` and `__Host-` prefixed.
pub fn over_https(headers: &axum::http::HeaderMap, console_domain: Option<&str>) -> bool {
    let Some(domain) = console_domain else {
        return false;
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes() == b"https");
    https && host.is_some_and(|h| h.eq_ignore_ascii_case(domain))
}

/// Keeps the console's route in the proxy: set now, and again whenever the
/// proxy lacks it (a proxy that lost its routes file).
pub fn spawn(deployer: Arc<Deployer>, domain: String, api: SocketAddr, max_body: u64) {
    let wanted = route(&domain, api, max_body);
    tokio::spawn(async move {
        loop {
            let held = deployer
                .proxy
                .routes()
                .await
                .map(|routes| routes.contains(&wanted));
            let in_place = match held {
                Ok(true) => true,
                Ok(false) => match deployer.proxy.set_route(wanted.clone()).await {
                    Ok(()) => {
                        tracing::info!(%domain, "the dashboard and API are routed at the console domain");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(%domain, "the proxy refused the console's route: {e:#}");
                        false
                    }
                },
                Err(e) => {
                    tracing::debug!("cannot read the proxy's routes yet: {e:#}");
                    false
                }
            };
            tokio::time::sleep(if in_place { EVERY } else { RETRY }).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(host: &str, proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_str(host).unwrap());
        if let Some(p) = proto {
            h.insert("x-forwarded-proto", HeaderValue::from_str(p).unwrap());
        }
        h
    }

    #[test]
    fn secure_cookies_only_over_https_at_the_console_domain() {
        let console = Some("molt.example.com");
        assert!(over_https(
            &headers("molt.example.com", Some("https")),
            console
        ));
        assert!(over_https(
            &headers("MOLT.example.com:8443", Some("https")),
            console
        ));
        assert!(!over_https(
            &headers("molt.example.com", Some("http")),
            console
        ));
        assert!(!over_https(
            &headers("127.0.0.1:7000", Some("https")),
            console
        ));
        assert!(!over_https(&headers("molt.example.com", None), console));
        assert!(!over_https(
            &headers("molt.example.com", Some("https")),
            None
        ));
    }

    #[test]
    fn the_route_goes_to_the_api_on_a_reachable_address() {
        let r = route("molt.example.com", "0.0.0.0:7000".parse().unwrap(), 1 << 30);
        assert_eq!(r.max_body_bytes, Some(1 << 30));
        assert_eq!(r.targets[0].addr, "127.0.0.1:7000");
        assert!(r.console);
        assert!(molt_core::name::AppName::parse(ROUTE).is_err());
    }
}
