//! The proxy end to end, in-process, against small upstreams on loopback.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use molt_proxy::admin::{Response, MAX_LINE, PID_FILE, SOCKET_FILE};
use molt_proxy::{AdminError, Proxy, ProxyConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn routes_by_host_ignoring_port_and_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (proxy, admin) = start_proxy(dir.path()).await;
    admin
        .set_route(route("a", &["a.test"], vec![a.target()]))
        .await
        .expect("set a");
    admin
        .set_route(route("b", &["B.Test"], vec![b.target()]))
        .await
        .expect("set b");
    let c = client();
    let at = proxy.http_addr();
    assert_eq!(
        get(&c, at, "A.TEST:8080", "/").await.expect("a"),
        (StatusCode::OK, "A".into())
    );
    assert_eq!(
        get(&c, at, "b.test", "/").await.expect("b"),
        (StatusCode::OK, "B".into())
    );

    let listed = admin.list_routes().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].hosts, vec!["b.test".to_string()]);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sets_forwarding_headers_and_strips_hop_by_hop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    // The test client stands for a trusted proxy in front, so its
    // `X-Forwarded-For` is extended rather than replaced (see edge.rs for
    // an untrusted client).
    let proxy = Proxy::start(ProxyConfig {
        edge: molt_proxy::EdgeConfig {
            trusted_proxies: vec!["127.0.0.0/8".parse().expect("cidr")],
            ..molt_proxy::EdgeConfig::default()
        },
        ..config(dir.path())
    })
    .await
    .expect("proxy starts");
    let admin = molt_proxy::AdminClient::connect(dir.path())
        .await
        .expect("admin connects");
    admin
        .set_route(route("a", &["a.test"], vec![a.target()]))
        .await
        .expect("set");
    let req = http::Request::get(format!("http://{}/headers", proxy.http_addr()))
        .header("host", "a.test:9000")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("x-forwarded-for", "10.1.1.1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("req");
    let resp = client().request(req).await.expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let seen = String::from_utf8_lossy(&body);
    assert!(
        seen.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: a.test:9000\n"), "{seen}");
    assert!(seen.contains("host: a.test:9000\n"), "{seen}");
    assert!(!seen.contains("x-secret"), "{seen}");
    let id = seen
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("request id");
    assert_eq!(id.len(), 32);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn error_pages_404_502_503_504() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = Upstream::start("S").await;
    let (proxy, admin) = start_proxy(dir.path()).await;
    let refused = closed_port().await;
    admin
        .set_route(route("empty", &["empty.test"], vec![]))
        .await
        .expect("set empty");
    admin
        .set_route(route(
            "down",
            &["down.test"],
            vec![molt_proxy::admin::Target {
                addr: refused.to_string(),
                id: "gone".into(),
            }],
        ))
        .await
        .expect("set down");
    let mut timed = route("slow", &["slow.test"], vec![slow.target()]);
    timed.upstream_timeout_ms = 200;
    admin.set_route(timed).await.expect("set slow");

    let c = client();
    let at = proxy.http_addr();
    let (status, body) = get(&c, at, "nobody.test", "/").await.expect("404");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no App is routed at `nobody.test`"), "{body}");
    let (status, body) = get(&c, at, "empty.test", "/").await.expect("503");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("`empty`"), "{body}");
    let (status, body) = get(&c, at, "down.test", "/").await.expect("502");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("the App `down` did not accept the connection"),
        "{body}"
    );
    let (status, body) = get(&c, at, "slow.test", "/slow?ms=3000")
        .await
        .expect("504");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.contains("within 200 ms"), "{body}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn routes_persist_across_restart_and_one_proxy_per_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start_proxy(dir.path()).await;
    let sock = dir.path().join(SOCKET_FILE);
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let info = admin.ping().await.expect("ping");
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));

    let second = Proxy::start(config(dir.path())).await;
    let err = second.err().expect("second proxy refused").to_string();
    assert!(err.contains("a proxy already runs"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );

    admin
        .set_route(route("a", &["a.test"], vec![a.target()]))
        .await
        .expect("set");
    admin
        .set_route(route("gone", &["gone.test"], vec![]))
        .await
        .expect("set");
    admin.remove_route("gone").await.expect("remove");
    proxy.shutdown().await.expect("shutdown");
    assert!(!sock.exists(), "socket removed at shutdown");

    // A stale socket file from a crashed proxy does not block the next one.
    std::fs::write(&sock, b"").expect("stale socket");
    let (proxy, admin) = start_proxy(dir.path()).await;
    let c = client();
    assert_eq!(
        get(&c, proxy.http_addr(), "a.test", "/")
            .await
            .expect("get"),
        (StatusCode::OK, "A".into())
    );
    let listed = admin.list_routes().await.expect("list");
    assert_eq!(listed, vec![route("a", &["a.test"], vec![a.target()])]);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn admin_reports_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, admin) = start_proxy(dir.path()).await;
    admin
        .set_route(route("a", &["shared.test"], vec![]))
        .await
        .expect("set");
    let err = admin
        .set_route(route("b", &["shared.test"], vec![]))
        .await
        .expect_err("host conflict");
    assert!(
        matches!(&err, AdminError::Refused(m) if m.contains("already routed to App `a`")),
        "{err}"
    );
    let bad_target = molt_proxy::admin::Target {
        addr: "nope".into(),
        id: "x".into(),
    };
    let err = admin
        .set_route(route("c", &["c.test"], vec![bad_target]))
        .await
        .expect_err("bad addr");
    assert!(err.to_string().contains("nope"), "{err}");

    // Raw protocol: garbage gets an ok:false line, the connection stays usable.
    let stream = tokio::net::UnixStream::connect(dir.path().join(SOCKET_FILE))
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write
        .write_all(b"{\"op\":\"fly\"}\n{\"op\":\"ping\"}\n")
        .await
        .expect("write");
    let first: Response = serde_json::from_str(
        &bounded("line", lines.next_line())
            .await
            .expect("io")
            .expect("line"),
    )
    .expect("json");
    assert!(!first.ok);
    assert!(first.error.unwrap_or_default().contains("invalid request"));
    let second: Response = serde_json::from_str(
        &bounded("line", lines.next_line())
            .await
            .expect("io")
            .expect("line"),
    )
    .expect("json");
    assert!(second.ok && second.pid.is_some());
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_proxy_refuses_an_over_long_admin_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, admin) = start_proxy(dir.path()).await;
    let stream = tokio::net::UnixStream::connect(dir.path().join(SOCKET_FILE))
        .await
        .expect("connect");
    let (read, mut write) = stream.into_split();
    // No newline: the proxy must stop reading at its bound, not wait for one.
    let long = vec![b'x'; MAX_LINE + 1];
    let writing = tokio::spawn(async move {
        let _ = write.write_all(&long).await;
        write
    });
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    bounded("the refusal", reader.read_line(&mut answer))
        .await
        .expect("io");
    let refusal: Response = serde_json::from_str(&answer).expect("json");
    assert!(!refusal.ok);
    assert!(
        refusal
            .error
            .unwrap_or_default()
            .contains(&MAX_LINE.to_string()),
        "{answer}"
    );
    answer.clear();
    let closed = bounded("the close", reader.read_line(&mut answer))
        .await
        .expect("io");
    assert_eq!(closed, 0, "the connection is closed: {answer}");
    writing.abort();
    admin.ping().await.expect("the proxy still answers");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_under_load_fails_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (proxy, admin) = start_proxy(dir.path()).await;
    admin
        .set_route(route("web", &["web.test"], vec![a.target()]))
        .await
        .expect("set");
    let at = proxy.http_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let deadline = Instant::now() + PATIENCE;
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                match get(&c, at, "web.test", "/").await {
                    Ok((StatusCode::OK, body)) if body == "A" || body == "B" => {
                        ok.fetch_add(1, Ordering::SeqCst)
                    }
                    other => {
                        eprintln!("failed request: {other:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    for i in 0..50 {
        let next = if i % 2 == 0 { &b } else { &a };
        admin
            .set_route(route("web", &["web.test"], vec![next.target()]))
            .await
            .expect("swap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        bounded("worker", w).await.expect("worker");
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) > 50, "load was generated");
    assert!(a.hits.load(Ordering::SeqCst) > 0 && b.hits.load(Ordering::SeqCst) > 0);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn slow_request_finishes_on_old_target_and_drain_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (proxy, admin) = start_proxy(dir.path()).await;
    admin
        .set_route(route("web", &["web.test"], vec![a.target()]))
        .await
        .expect("set");
    let at = proxy.http_addr();
    let slow = tokio::spawn(async move { get(&client(), at, "web.test", "/slow?ms=1500").await });
    bounded("slow request to reach A", a.started.notified()).await;

    admin
        .set_route(route("web", &["web.test"], vec![b.target()]))
        .await
        .expect("swap");
    let c = client();
    for _ in 0..5 {
        assert_eq!(
            get(&c, at, "web.test", "/").await.expect("get"),
            (StatusCode::OK, "B".into())
        );
    }
    assert!(
        !a.responded.load(Ordering::SeqCst),
        "slow request still running"
    );

    let outcome = bounded(
        "wait_drained",
        admin.wait_drained("web", &a.addr.to_string(), Duration::from_secs(10)),
    )
    .await
    .expect("wait_drained");
    assert!(outcome.drained);
    assert_eq!(outcome.closed, 0);
    assert!(
        a.responded.load(Ordering::SeqCst),
        "drained only after A answered"
    );
    let (status, body) = bounded("slow response", slow)
        .await
        .expect("join")
        .expect("slow");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "A"));

    // An address that is not retired counts as drained.
    let again = admin
        .wait_drained("web", &a.addr.to_string(), Duration::from_secs(1))
        .await
        .expect("again");
    assert!(again.drained);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn wait_drained_timeout_cuts_what_remains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (proxy, admin) = start_proxy(dir.path()).await;
    admin
        .set_route(route("web", &["web.test"], vec![a.target()]))
        .await
        .expect("set");
    let at = proxy.http_addr();
    let slow = tokio::spawn(async move { get(&client(), at, "web.test", "/slow?ms=8000").await });
    bounded("slow request to reach A", a.started.notified()).await;
    admin
        .set_route(route("web", &["web.test"], vec![b.target()]))
        .await
        .expect("swap");
    let outcome = admin
        .wait_drained("web", &a.addr.to_string(), Duration::from_millis(300))
        .await
        .expect("wait_drained");
    assert!(!outcome.drained);
    assert_eq!(outcome.closed, 1);
    let (status, _) = bounded("cut response", slow)
        .await
        .expect("join")
        .expect("slow");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn upgraded_connection_outlives_swap_until_drain_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (proxy, admin) = start_proxy(dir.path()).await;
    let mut r = route("web", &["web.test"], vec![a.target()]);
    r.drain_timeout_ms = 800;
    admin.set_route(r.clone()).await.expect("set");
    let at = proxy.http_addr();
    let mut ws = upgrade(at, "web.test").await;
    echo(&mut ws, b"before swap").await;

    r.targets = vec![b.target()];
    let swapped = Instant::now();
    admin.set_route(r).await.expect("swap");
    echo(&mut ws, b"after swap").await;
    assert_eq!(
        get(&client(), at, "web.test", "/").await.expect("get").1,
        "B"
    );

    let mut buf = [0u8; 16];
    let n = bounded("upgraded connection to close", ws.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "closed, not more data");
    assert!(
        swapped.elapsed() >= Duration::from_millis(700),
        "closed at the drain timeout, not at the swap ({:?})",
        swapped.elapsed()
    );
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn wait_drained_waits_for_upgraded_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (proxy, admin) = start_proxy(dir.path()).await;
    admin
        .set_route(route("web", &["web.test"], vec![a.target()]))
        .await
        .expect("set");
    let mut ws = upgrade(proxy.http_addr(), "web.test").await;
    echo(&mut ws, b"hi").await;
    admin
        .set_route(route("web", &["web.test"], vec![b.target()]))
        .await
        .expect("swap");
    let addr = a.addr.to_string();
    let waiting = {
        let admin = admin.clone();
        tokio::spawn(async move {
            admin
                .wait_drained("web", &addr, Duration::from_secs(10))
                .await
        })
    };
    echo(&mut ws, b"still here").await;
    assert!(!waiting.is_finished());
    ws.shutdown().await.expect("close ws");
    drop(ws);
    let outcome = bounded("drain", waiting)
        .await
        .expect("join")
        .expect("wait");
    assert!(outcome.drained);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn serves_http2_prior_knowledge_and_streams_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start_proxy(dir.path()).await;
    admin
        .set_route(route("a", &["a.test"], vec![a.target()]))
        .await
        .expect("set");
    let stream = tokio::net::TcpStream::connect(proxy.http_addr())
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let payload = "x".repeat(200_000);
    let req = http::Request::post("http://a.test:8080/echo")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            payload.clone(),
        )))
        .expect("req");
    let resp = bounded("h2 response", sender.send_request(req))
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body.len(), payload.len());
    proxy.shutdown().await.expect("shutdown");
}

/// A replica that refuses connections (its container just died, and the
/// server has not taken it out of the route yet) costs a request without a
/// body nothing: it goes to another replica. A request with a body is never
/// sent twice; it gets the 502 that says what happened.
#[tokio::test]
async fn a_refused_bodiless_request_goes_to_another_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = Upstream::start("L").await;
    let dead = closed_port().await;
    let (proxy, admin) = start_proxy(dir.path()).await;
    let gone = molt_proxy::admin::Target {
        addr: dead.to_string(),
        id: "gone".into(),
    };
    admin
        .set_route(route("web", &["web.test"], vec![gone, live.target()]))
        .await
        .expect("set");
    let c = client();
    for _ in 0..20 {
        let (status, body) = get(&c, proxy.http_addr(), "web.test", "/")
            .await
            .expect("get");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "L"));
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 20);

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut conn = tokio::net::TcpStream::connect(proxy.http_addr())
            .await
            .expect("connect");
        conn.write_all(
            b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await
        .expect("send");
        let mut answer = String::new();
        bounded("the POST's answer", conn.read_to_string(&mut answer))
            .await
            .expect("read");
        statuses.push(answer.lines().next().unwrap_or_default().to_string());
    }
    // Ties go round robin, so two of the four met the dead replica.
    let refused = statuses.iter().filter(|s| s.contains(" 502 ")).count();
    let served = statuses.iter().filter(|s| s.contains(" 200 ")).count();
    assert_eq!((refused, served), (2, 2), "{statuses:?}");
    assert_eq!(live.hits.load(Ordering::SeqCst), 22);
    proxy.shutdown().await.expect("shutdown");
}

/// A replica behind a published port whose container just died: the
/// engine's port proxy accepts each connection and drops it unanswered. A
/// GET without a body goes to another replica; a POST is never sent twice
/// and gets the 502.
#[tokio::test]
async fn an_unanswered_safe_request_goes_to_another_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = Upstream::start("L").await;
    let dropper = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dropped_at = dropper.local_addr().expect("addr");
    let drops = Arc::new(AtomicUsize::new(0));
    let dropping = {
        let drops = Arc::clone(&drops);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = dropper.accept().await {
                let mut head = [0u8; 1024];
                let _ = conn.read(&mut head).await;
                drops.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let (proxy, admin) = start_proxy(dir.path()).await;
    let dying = molt_proxy::admin::Target {
        addr: dropped_at.to_string(),
        id: "dying".into(),
    };
    admin
        .set_route(route("web", &["web.test"], vec![dying, live.target()]))
        .await
        .expect("set");
    let c = client();
    for _ in 0..10 {
        let (status, body) = get(&c, proxy.http_addr(), "web.test", "/")
            .await
            .expect("get");
        assert_eq!((status, body.as_str()), (StatusCode::OK, "L"));
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 10);
    assert!(drops.load(Ordering::SeqCst) > 0, "the dying one was tried");

    let mut statuses = Vec::new();
    for _ in 0..4 {
        let mut conn = tokio::net::TcpStream::connect(proxy.http_addr())
            .await
            .expect("connect");
        conn.write_all(
            b"POST / HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await
        .expect("send");
        let mut answer = String::new();
        bounded("the POST's answer", conn.read_to_string(&mut answer))
            .await
            .expect("read");
        statuses.push(answer.lines().next().unwrap_or_default().to_string());
    }
    let failed = statuses.iter().filter(|s| s.contains(" 502 ")).count();
    let served = statuses.iter().filter(|s| s.contains(" 200 ")).count();
    assert_eq!(failed + served, 4, "{statuses:?}");
    assert!(failed > 0, "a POST is not sent again: {statuses:?}");
    dropping.abort();
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn balances_across_targets_and_serves_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let proxy = Proxy::start(ProxyConfig {
        metrics: Some("127.0.0.1:0".parse().expect("addr")),
        ..config(dir.path())
    })
    .await
    .expect("start");
    let admin = molt_proxy::AdminClient::connect(dir.path())
        .await
        .expect("admin");
    admin
        .set_route(route("web", &["web.test"], vec![a.target(), b.target()]))
        .await
        .expect("set");
    let c = client();
    for _ in 0..10 {
        get(&c, proxy.http_addr(), "web.test", "/")
            .await
            .expect("get");
    }
    assert_eq!(a.hits.load(Ordering::SeqCst), 5, "round robin on ties");
    assert_eq!(b.hits.load(Ordering::SeqCst), 5);
    get(&c, proxy.http_addr(), "nobody.test", "/")
        .await
        .expect("404");

    let metrics_at = proxy.metrics_addr().expect("metrics addr");
    let (status, text) = get(&c, metrics_at, "metrics", "/metrics")
        .await
        .expect("metrics");
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("molt_proxy_requests_total{app=\"web\",code_class=\"2xx\"} 10"),
        "{text}"
    );
    assert!(
        text.contains("molt_proxy_requests_total{app=\"\",code_class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("molt_proxy_in_flight{app=\"web\"} 0"),
        "{text}"
    );
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn run_until_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    // Pick a free port up front: `run_until` does not report its address.
    let listen = closed_port().await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = ProxyConfig {
        listen,
        ..config(dir.path())
    };
    let running = tokio::spawn(molt_proxy::run_until(cfg, async {
        let _ = stop_rx.await;
    }));
    let mut admin = None;
    for _ in 0..200 {
        if let Ok(client) = molt_proxy::AdminClient::connect(dir.path()).await {
            admin = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let admin = admin.expect("proxy came up");
    admin
        .set_route(route("a", &["a.test"], vec![a.target()]))
        .await
        .expect("set");
    assert!(dir.path().join(PID_FILE).exists());

    let slow = tokio::spawn(async move { get(&client(), listen, "a.test", "/slow?ms=500").await });
    bounded("slow request to reach A", a.started.notified()).await;
    stop_tx.send(()).expect("stop");
    let (status, body) = bounded("slow response", slow)
        .await
        .expect("join")
        .expect("slow");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "A"));
    bounded("proxy to stop", running)
        .await
        .expect("join")
        .expect("clean stop");
    assert!(!dir.path().join(PID_FILE).exists());
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "no longer listening"
    );
}
