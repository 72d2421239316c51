//! Header rewriting between the user's connection and the upstream one:
//! hop-by-hop headers describe a single connection and must not cross the
//! proxy; `X-Forwarded-*` and `X-Request-Id` tell the App who asked.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::edge::{canonical, EdgeConfig};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that only ever describe one hop.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `Connection` lists `token` (case-insensitive).
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// An HTTP/1.1 upgrade request the proxy relays as a tunnel (WebSocket and
/// the like). An upgrade to HTTP itself (`h2c`, `HTTP/2.0`) is not one: past
/// the `101` the App would read requests straight off the tunnel, with no
/// routing by host, no forwarding headers set and no cookies of Molt's
/// removed. Such a request goes on as a plain one, its `Upgrade` stripped.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let mut protocols = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
        .peekable();
    protocols.peek().is_some()
        && protocols.all(|p| !is_http(p))
        && connection_has(headers, "upgrade")
}

/// Whether an `Upgrade` protocol names HTTP (`h2c`, `h2`, `HTTP/2.0`).
fn is_http(protocol: &[u8]) -> bool {
    protocol.eq_ignore_ascii_case(b"h2c")
        || protocol.eq_ignore_ascii_case(b"h2")
        || protocol.len() >= 4 && protocol[..4].eq_ignore_ascii_case(b"http")
}

/// Removes hop-by-hop headers. With `keep_upgrade`, the `Upgrade` header and
/// `Connection: upgrade` survive so the upgrade handshake can cross.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let upgrade = headers.get(header::UPGRADE).cloned();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if keep_upgrade {
        if let Some(upgrade) = upgrade {
            headers.insert(header::UPGRADE, upgrade);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
}

/// Who is on the other end of a user connection, worked out once per
/// connection so requests only clone a ready header value.
pub struct Peer {
    /// The client: the TCP peer, or the address a trusted PROXY header gave.
    pub addr: SocketAddr,
    /// `addr`'s IP as a header value.
    pub ip: HeaderValue,
    /// Whether what the client says in forwarding headers is believed.
    pub trusted: bool,
    pub edge: Arc<EdgeConfig>,
    /// `X-Forwarded-Proto` for this connection: `https` when it came in
    /// over TLS.
    pub proto: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, edge: &Arc<EdgeConfig>) -> Peer {
        let ip = canonical(addr.ip());
        Peer {
            addr,
            ip: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("0.0.0.0")),
            trusted: edge.trusts(ip),
            edge: Arc::clone(edge),
            proto: HeaderValue::from_static("http"),
        }
    }

    /// Whether the connection came in over TLS.
    pub fn over_tls(&self) -> bool {
        self.proto == "https"
    }

    /// The same peer, on a connection that came in over TLS (or not).
    pub fn with_tls(mut self, tls: bool) -> Peer {
        if tls {
            self.proto = HeaderValue::from_static("https");
        }
        self
    }
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP` for a request
/// from `peer` to `host`. From a peer not in the trusted proxies, what the
/// client sent in those and in `Forwarded` is replaced, never passed on: an
/// App must be able to believe them. That path is a few map operations and
/// clones of ready values, no allocation. From a trusted proxy the chain is
/// kept and extended, and the client is the last untrusted hop in it.
/// Look-alikes spelt with `_` are dropped from anyone.
pub fn set_forwarded(headers: &mut HeaderMap, peer: &Peer, host: &HeaderValue) {
    remove_underscored_lookalikes(headers);
    if !peer.trusted {
        headers.remove(header::FORWARDED);
        // `insert` replaces every earlier value of the header.
        headers.insert(X_FORWARDED_FOR, peer.ip.clone());
        headers.insert(X_REAL_IP, peer.ip.clone());
        headers.insert(X_FORWARDED_PROTO, peer.proto.clone());
        headers.insert(X_FORWARDED_HOST, host.clone());
        return;
    }
    let earlier: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = earlier
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .find(|ip| !peer.edge.trusts(*ip))
        .map(canonical);
    let chain = if earlier.is_empty() {
        None
    } else {
        HeaderValue::from_str(&format!("{}, {}", earlier.join(", "), peer.addr.ip())).ok()
    };
    let real_ip = client.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok());
    headers.insert(X_FORWARDED_FOR, chain.unwrap_or_else(|| peer.ip.clone()));
    if !headers.contains_key(&X_REAL_IP) {
        headers.insert(X_REAL_IP, real_ip.unwrap_or_else(|| peer.ip.clone()));
    }
    let proto_ok = headers
        .get(&X_FORWARDED_PROTO)
        .is_some_and(|v| v == "http" || v == "https");
    if !proto_ok {
        headers.insert(X_FORWARDED_PROTO, peer.proto.clone());
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// Removes `X_Forwarded_For`, `X-Real_IP` and the like. Apps behind CGI-style
/// interfaces (PHP, WSGI, Rack) see `-` and `_` in a header name alike, so
/// such a header from the client would stand beside, or in place of, the
/// one the proxy set. A scan of the names for `_`; most requests have none.
fn remove_underscored_lookalikes(headers: &mut HeaderMap) {
    const FORWARDING: [&str; 4] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
    ];
    let lookalike = |name: &HeaderName| {
        let name = name.as_str();
        name.contains('_')
            && FORWARDING.iter().any(|f| {
                f.len() == name.len()
                    && f.bytes()
                        .zip(name.bytes())
                        .all(|(f, n)| f == n || (f == b'-' && n == b'_'))
            })
    };
    if !headers.keys().any(lookalike) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|k| lookalike(k)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

/// `Strict-Transport-Security: max-age=N` on an answer over HTTPS, unless
/// the App sent its own (it knows its subdomains and preload wishes).
pub fn set_hsts(headers: &mut HeaderMap, max_age_secs: u64) {
    if !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
        let value = HeaderValue::from_str(&format!("max-age={max_age_secs}"))
            .unwrap_or(HeaderValue::from_static("max-age=0"));
        headers.insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
}

/// Removes cookies named `molt_*` and `__Host-molt_*` (the dashboard's
/// session and the like) from a request to an App: Molt's cookies are for
/// Molt. Cheap for the
/// common request: a byte scan of its Cookie header, if any; only a header
/// that mentions `molt_` is rebuilt.
pub fn strip_molt_cookies(headers: &mut HeaderMap) {
    let mentions = headers.get_all(header::COOKIE).iter().any(|v| {
        v.as_bytes()
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b"molt_"))
    });
    if !mentions {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let name = pair
                .split(|b| *b == b'=')
                .next()
                .unwrap_or(pair)
                .trim_ascii();
            if is_molt_cookie(name) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_bytes(&kept) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// A cookie of Molt's: `molt_*`, or `__Host-molt_*` (the console's cookies
/// when it is served over HTTPS).
fn is_molt_cookie(name: &[u8]) -> bool {
    let name = name.strip_prefix(b"__Host-").unwrap_or(name);
    name.len() >= 5 && name[..5].eq_ignore_ascii_case(b"molt_")
}

/// Keeps a sane incoming `X-Request-Id`, or sets a fresh one; returns it.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        if !id.is_empty() && id.len() <= 200 {
            return id.clone();
        }
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// 32 random-looking hex digits. Request ids need to be unique, not secret:
/// std's randomly keyed hasher over a counter gives that without a crate.
/// Counter and keys are per thread (each thread's keys are drawn apart), so
/// no counter is shared by every request of every worker; the digits are
/// written on the stack.
fn new_request_id() -> HeaderValue {
    thread_local! {
        static STATE: (std::collections::hash_map::RandomState, std::cell::Cell<u64>) =
            (std::collections::hash_map::RandomState::new(), std::cell::Cell::new(0));
    }
    let (hi, lo) = STATE.with(|(keys, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        let mut hi = keys.build_hasher();
        hi.write_u64(n);
        let mut lo = keys.build_hasher();
        lo.write_u64(!n);
        (hi.finish(), lo.finish())
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (i, d) in digits.iter_mut().enumerate() {
        let word = if i < 16 { hi } else { lo };
        let shift = 60 - 4 * (i % 16);
        *d = HEX[((word >> shift) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&digits).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn strips_connection_named_and_standard_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-app"));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn an_upgrade_to_http_is_no_tunnel() {
        for protocol in ["h2c", "H2C", "HTTP/2.0", "websocket, h2c", "h2"] {
            let h = map(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", protocol),
            ]);
            assert!(!is_upgrade(&h), "{protocol}");
        }
        let two = map(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "h2c"),
        ]);
        assert!(!is_upgrade(&two));
        let empty = map(&[("connection", "upgrade"), ("upgrade", " ")]);
        assert!(!is_upgrade(&empty));
    }

    fn peer(addr: &str, trusted: &[&str]) -> Peer {
        let edge = Arc::new(EdgeConfig {
            trusted_proxies: trusted.iter().map(|c| c.parse().expect("cidr")).collect(),
            ..EdgeConfig::default()
        });
        Peer::new(addr.parse().expect("addr"), &edge)
    }

    #[test]
    fn forwarded_for_appends_from_a_trusted_proxy() {
        let mut h = map(&[("x-forwarded-for", "10.0.0.1")]);
        let host = HeaderValue::from_static("web.test:8080");
        set_forwarded(&mut h, &peer("127.0.0.1:5000", &["127.0.0.0/8"]), &host);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-real-ip"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "web.test:8080");
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=10.0.0.1;proto=https"),
            ("x-real-ip", "10.0.0.1"),
        ]);
        let host = HeaderValue::from_static("web.test");
        set_forwarded(
            &mut h,
            &peer("[::ffff:192.0.2.9]:5000", &["10.0.0.0/8"]),
            &host,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-real-ip"], "192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "web.test");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn molt_cookies_never_reach_an_app() {
        let mut h = map(&[
            ("cookie", "a=1; molt_session=secret; b=2"),
            ("cookie", "MOLT_csrf=x"),
        ]);
        strip_molt_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut only = map(&[("cookie", "molt_session=secret")]);
        strip_molt_cookies(&mut only);
        assert!(!only.contains_key("cookie"));
        let mut kept = map(&[("cookie", "x=molt_session")]);
        strip_molt_cookies(&mut kept);
        assert_eq!(kept["cookie"], "x=molt_session");
        let mut secure = map(&[("cookie", "__Host-molt_session=s; __Host-other=o")]);
        strip_molt_cookies(&mut secure);
        assert_eq!(secure["cookie"], "__Host-other=o");
    }

    #[test]
    fn hsts_set_unless_the_app_has_its_own() {
        let mut h = HeaderMap::new();
        set_hsts(&mut h, 600);
        assert_eq!(h["strict-transport-security"], "max-age=600");
        let mut own = map(&[("strict-transport-security", "max-age=1; preload")]);
        set_hsts(&mut own, 600);
        assert_eq!(own["strict-transport-security"], "max-age=1; preload");
    }

    #[test]
    fn request_id_kept_or_made() {
        let mut h = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let a = ensure_request_id(&mut h);
        let b = ensure_request_id(&mut HeaderMap::new());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(h["x-request-id"], a);
    }
}
