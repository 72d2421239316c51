//! Facing the internet: slow clients, the connection limit, hostile
//! headers, Molt's cookies, body limits, idle tunnels, huge timeouts, the
//! PROXY protocol. All traffic stays on 127.0.0.1, bounded in count and time.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use molt_proxy::{AdminClient, EdgeConfig, Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "web.test";

async fn start(dir: &std::path::Path, edge: EdgeConfig) -> (Proxy, AdminClient) {
    let proxy = Proxy::start(ProxyConfig {
        edge,
        ..config(dir)
    })
    .await
    .expect("proxy starts");
    let admin = AdminClient::connect(dir).await.expect("admin connects");
    (proxy, admin)
}

/// `start`, with the route `web` (at `HOST`) to `target`.
async fn start_routed(
    dir: &std::path::Path,
    edge: EdgeConfig,
    target: molt_proxy::admin::Target,
) -> (Proxy, AdminClient) {
    let (proxy, admin) = start(dir, edge).await;
    admin
        .set_route(route("web", &[HOST], vec![target]))
        .await
        .expect("set");
    (proxy, admin)
}

/// Sends `raw` on a fresh connection and reads the answer until the proxy
/// closes it (or 5 s).
async fn exchange(proxy: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the proxy closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An error page (e.g. 408) before the close is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_starve_others_and_are_closed_after_the_timeout() {
    const SLOW: usize = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start(
        dir.path(),
        EdgeConfig {
            first_bytes_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(1),
            h2_idle_timeout: Duration::from_secs(1),
            ..EdgeConfig::default()
        },
    )
    .await;
    admin
        .set_route(route("web", &[HOST], vec![a.target()]))
        .await
        .expect("set");
    let at = proxy.http_addr();
    // A third send nothing, a third half a request head, a third a prefix
    // of the HTTP/2 preface. Connected in batches: the listen backlog is
    // finite, and this is about what the proxy does once they are in.
    let mut slow = Vec::with_capacity(SLOW);
    for batch in 0..SLOW / 100 {
        let mut opening = Vec::new();
        for i in 0..100 {
            let kind = (batch * 100 + i) % 3;
            opening.push(tokio::spawn(async move {
                let mut s = TcpStream::connect(at).await.expect("connect");
                match kind {
                    1 => s
                        .write_all(b"GET / HTTP/1.1\r\nHost: web.te")
                        .await
                        .expect("write"),
                    2 => s.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write"),
                    _ => {}
                }
                s
            }));
        }
        for o in opening {
            slow.push(o.await.expect("connect task"));
        }
    }
    let started = Instant::now();
    let (status, body) = bounded("a normal request", get(&client(), at, HOST, "/"))
        .await
        .expect("get");
    let took = started.elapsed();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "A"));
    assert!(
        took < Duration::from_millis(500),
        "a normal request took {took:?} beside {SLOW} slow connections"
    );
    // Every slow connection is closed after its (1 s) deadline.
    let waited = Instant::now();
    let mut open = 0;
    for s in &mut slow {
        if !closed_within(s, Duration::from_secs(4).saturating_sub(waited.elapsed())).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} slow connections still open after 4 s");
    eprintln!(
        "normal request beside {SLOW} slow connections: {took:?}; all closed within {:?}",
        waited.elapsed()
    );
    drop(slow);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_full_proxy_answers_503_and_serves_again_once_connections_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start(
        dir.path(),
        EdgeConfig {
            max_connections: 3,
            ..EdgeConfig::default()
        },
    )
    .await;
    admin
        .set_route(route("web", &[HOST], vec![a.target()]))
        .await
        .expect("set");
    let at = proxy.http_addr();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(at).await.expect("connect"));
    }
    // The proxy counts a connection once it accepted it: ask until the
    // three idle ones are counted (bounded).
    let mut answer = String::new();
    for _ in 0..100 {
        answer = exchange(at, b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n").await;
        if answer.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the limit: {answer}"
    );
    assert!(answer.contains("too many connections"), "{answer}");
    drop(idle);
    let mut served = false;
    for _ in 0..50 {
        if let Ok((StatusCode::OK, _)) = get(&client(), at, HOST, "/").await {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "serves again once the idle connections are gone");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn hostile_heads_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, _admin) = start_routed(dir.path(), EdgeConfig::default(), a.target()).await;
    let at = proxy.http_addr();
    let two_hosts = exchange(
        at,
        b"GET / HTTP/1.1\r\nHost: web.test\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: web.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let oversized = exchange(at, big.as_bytes()).await;
    assert!(oversized.starts_with("HTTP/1.1 431"), "{oversized}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn forwarding_headers_are_replaced_and_molt_cookies_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, _admin) = start_routed(dir.path(), EdgeConfig::default(), a.target()).await;
    let seen = exchange(
        proxy.http_addr(),
        b"GET /headers HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\
X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n\
Forwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
X_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nX_Forwarded-Host: evil.test\r\n\
X_Forwarded_Proto: https\r\nX_Other: kept\r\n\
Cookie: theme=dark; molt_session=secret; lang=en\r\n\r\n",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(!seen.contains("6.6.6.6"), "{seen}");
    assert!(!seen.contains("evil.test"), "{seen}");
    assert!(!seen.contains("forwarded: "), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(seen.contains("x-real-ip: 127.0.0.1\n"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: web.test\n"), "{seen}");
    assert!(seen.contains("cookie: theme=dark; lang=en\n"), "{seen}");
    assert!(seen.contains("x_other: kept\n"), "{seen}");
    assert!(!seen.contains("https"), "{seen}");
    assert!(!seen.contains("secret"), "{seen}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_upgrade_to_h2c_is_no_tunnel_past_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The test App switches to any protocol asked for, as one serving h2c
    // by upgrade would.
    let a = Upstream::start("A").await;
    let (proxy, _admin) = start_routed(dir.path(), EdgeConfig::default(), a.target()).await;
    // Were the upgrade relayed, the second request would go down the tunnel
    // as raw bytes: spoofed headers and Molt's cookie straight to the App.
    let seen = exchange(
        proxy.http_addr(),
        b"GET /headers HTTP/1.1\r\nHost: web.test\r\n\
Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n\
GET /headers HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\
X-Forwarded-For: 6.6.6.6\r\nCookie: molt_session=secret\r\n\r\n",
    )
    .await;
    assert!(!seen.contains(" 101 "), "{seen}");
    assert_eq!(seen.matches("HTTP/1.1 200").count(), 2, "{seen}");
    assert!(!seen.contains("h2c"), "{seen}");
    assert!(
        !seen.to_ascii_lowercase().contains("http2-settings"),
        "{seen}"
    );
    assert!(!seen.contains("6.6.6.6"), "{seen}");
    assert!(!seen.contains("secret"), "{seen}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_broken_request_body_is_the_users_400_not_the_apps_502() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, _admin) = start_routed(dir.path(), EdgeConfig::default(), a.target()).await;
    for chunks in [
        &b"ffffffffffffffffff\r\n"[..],
        b"3\nabc\n0\n\n",
        b"zz\r\nabc\r\n",
    ] {
        let mut raw =
            b"POST /echo HTTP/1.1\r\nHost: web.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(chunks);
        let answer = exchange(proxy.http_addr(), &raw).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("request body is malformed"), "{answer}");
        assert!(!answer.contains("App"), "{answer}");
    }
    // A body cut short by the user closing its side.
    let mut stream = TcpStream::connect(proxy.http_addr())
        .await
        .expect("connect");
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: web.test\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(!answer.contains("502"), "{answer}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn connect_is_refused_not_sent_to_the_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, _admin) = start_routed(dir.path(), EdgeConfig::default(), a.target()).await;
    let answer = exchange(
        proxy.http_addr(),
        b"CONNECT web.test:80 HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
    assert!(answer.contains("CONNECT is not served"), "{answer}");
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    proxy.shutdown().await.expect("shutdown");
}

/// An App whose every answer is a large body, written as fast as the proxy
/// takes it; counts the bytes the proxy has taken. Its sockets' send buffers
/// are small, so the count is what the proxy read, not what the kernel held.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(4096).expect("sndbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1024).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&taken);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                const BODY: usize = 8 << 20;
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = [b'x'; 16 * 1024];
                for _ in 0..BODY / chunk.len() {
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len(), Ordering::SeqCst);
                }
            });
        }
    });
    (addr, taken, task)
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("frame length")
        .to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_reads_nothing_pins_little_memory() {
    const STREAMS: u32 = 256;
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, taken, task) = counting_upstream().await;
    let (proxy, admin) = start(dir.path(), EdgeConfig::default()).await;
    let target = molt_proxy::admin::Target {
        addr: upstream.to_string(),
        id: "big".into(),
    };
    admin
        .set_route(route("web", &[HOST], vec![target]))
        .await
        .expect("set");
    // A client that opens every flow-control window wide, asks for a large
    // body on many streams and never reads: what the proxy takes from the
    // App for it waits in the proxy's memory.
    let mut client = TcpStream::connect(proxy.http_addr())
        .await
        .expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut settings = Vec::new();
    settings.extend_from_slice(&4u16.to_be_bytes());
    settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    out.extend(h2_frame(4, 0, 0, &settings));
    out.extend(h2_frame(8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    // GET http://web.test/big (HPACK: static entries and literals).
    let block = b"\x82\x86\x04\x04/big\x01\x08web.test";
    for i in 0..STREAMS {
        out.extend(h2_frame(1, 0x5, 1 + 2 * i, block));
    }
    client.write_all(&out).await.expect("write");
    // Wait until the proxy stops taking more.
    let mut last = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = taken.load(Ordering::SeqCst);
        if now > 0 && now == last {
            break;
        }
        last = now;
    }
    let taken = taken.load(Ordering::SeqCst);
    eprintln!("taken for a client reading nothing: {taken} bytes over {STREAMS} streams");
    // The count includes the kernel's buffers of the App connections (here
    // about 250 KB a stream); hyper's default send buffer added 400 KB a
    // stream in the proxy's memory (160 MB in all, against 66 MB).
    assert!(
        taken < 110 << 20,
        "{taken} bytes held for a client reading nothing"
    );
    drop(client);
    task.abort();
    proxy.shutdown().await.expect("shutdown");
}

/// A PROXY protocol v2 header for a TCP/IPv4 client.
fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

#[tokio::test]
async fn the_client_address_comes_from_a_trusted_proxy_protocol_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start(
        dir.path(),
        EdgeConfig {
            trusted_proxies: vec!["127.0.0.1/32".parse().expect("cidr")],
            proxy_protocol: true,
            ..EdgeConfig::default()
        },
    )
    .await;
    admin
        .set_route(route("web", &[HOST], vec![a.target()]))
        .await
        .expect("set");
    let mut raw = proxy_v2([203, 0, 113, 7], 40000);
    raw.extend_from_slice(
        b"GET /headers HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
    );
    let seen = exchange(proxy.http_addr(), &raw).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    // The client (not trusted) said 6.6.6.6: replaced by its real address.
    assert!(seen.contains("x-forwarded-for: 203.0.113.7\n"), "{seen}");
    assert!(seen.contains("x-real-ip: 203.0.113.7\n"), "{seen}");
    // Without the header the connection is not served.
    let bare = exchange(
        proxy.http_addr(),
        b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!bare.contains("200 OK"), "{bare}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_proxy_protocol_header_from_an_untrusted_peer_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start(
        dir.path(),
        EdgeConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().expect("cidr")],
            proxy_protocol: true,
            ..EdgeConfig::default()
        },
    )
    .await;
    admin
        .set_route(route("web", &[HOST], vec![a.target()]))
        .await
        .expect("set");
    let mut raw = proxy_v2([203, 0, 113, 7], 40000);
    raw.extend_from_slice(b"GET /headers HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n");
    let seen = exchange(proxy.http_addr(), &raw).await;
    assert!(seen.is_empty(), "{seen}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bodies_over_the_apps_limit_get_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start(dir.path(), EdgeConfig::default()).await;
    let mut r = route("web", &[HOST], vec![a.target()]);
    r.max_body_bytes = Some(1_000);
    admin.set_route(r).await.expect("set");
    let at = proxy.http_addr();
    let small = exchange(
        at,
        b"POST /echo HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(small.starts_with("HTTP/1.1 200"), "{small}");
    assert!(small.ends_with("hello"), "{small}");
    // Announced too large: refused before anything reaches the App.
    let hits = a.hits.load(std::sync::atomic::Ordering::SeqCst);
    let announced = exchange(
        at,
        b"POST /echo HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert!(announced.starts_with("HTTP/1.1 413"), "{announced}");
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), hits);
    // Streamed (chunked) past the limit: cut while streaming.
    let mut chunked =
        b"POST /echo HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(b"3e8\r\n");
        chunked.extend_from_slice(&[b'x'; 1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = exchange(at, &chunked).await;
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn idle_tunnels_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start(dir.path(), EdgeConfig::default()).await;
    let mut r = route("web", &[HOST], vec![a.target()]);
    r.tunnel_idle_timeout_ms = Some(1_000);
    admin.set_route(r).await.expect("set");
    let mut ws = upgrade(proxy.http_addr(), HOST).await;
    // Activity keeps it open past the timeout...
    for _ in 0..4 {
        echo(&mut ws, b"ping").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    echo(&mut ws, b"ping").await;
    // ...silence closes it.
    let started = Instant::now();
    assert!(closed_within(&mut ws, Duration::from_secs(3)).await);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn huge_route_timeouts_are_clamped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (proxy, admin) = start(dir.path(), EdgeConfig::default()).await;
    let mut r = route("web", &[HOST], vec![a.target()]);
    r.upstream_timeout_ms = u64::MAX;
    r.drain_timeout_ms = u64::MAX;
    r.tunnel_idle_timeout_ms = Some(u64::MAX);
    admin.set_route(r.clone()).await.expect("set");
    let (status, _) = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("get");
    assert_eq!(status, StatusCode::OK);
    // Retiring A computes its drain deadline: it must not overflow.
    r.targets = vec![b.target()];
    admin.set_route(r.clone()).await.expect("set");
    let (status, body) = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("get");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "B"));
    let outcome = admin
        .wait_drained("web", &a.target().addr, Duration::from_secs(5))
        .await
        .expect("wait drained");
    assert!(outcome.drained);
    // Listed back as given.
    assert_eq!(admin.list_routes().await.expect("list")[0], r);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn error_pages_name_no_internals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = closed_port().await;
    let (proxy, admin) = start(dir.path(), EdgeConfig::default()).await;
    admin
        .set_route(route(
            "web",
            &[HOST],
            vec![molt_proxy::admin::Target {
                addr: gone.to_string(),
                id: "c0ffee".into(),
            }],
        ))
        .await
        .expect("set");
    let (status, body) = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("get");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.contains(&gone.port().to_string()), "{body}");
    assert!(!body.contains("c0ffee"), "{body}");
    assert!(!body.to_lowercase().contains("error:"), "{body}");
    proxy.shutdown().await.expect("shutdown");
}
