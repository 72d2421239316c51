//! Checks the test harness itself against the real engine and registry: the
//! test images build and behave as their variant says, a password-protected
//! registry accepts pushes and refuses wrong passwords, and the HTTP,
//! WebSocket and SSE clients work. If these fail, every Molt integration test
//! would fail for reasons that have nothing to do with Molt.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn testapp_answers_http_keepalive_websocket_and_sse() {
    let c = Container::run(&TestImages::image("v1"), &[("GREETING", "hello")], 8080);
    assert_eq!(c.wait_listening("/", T), 200);
    let addr = c.addr();

    let root = http_get(addr, "/").expect("GET /");
    assert_eq!((root.status, root.text().as_str()), (200, "testapp v1\n"));
    assert_eq!(root.header("x-testapp-version"), Some("v1"));
    assert_eq!(
        http_get(addr, "/version").expect("GET /version").text(),
        "v1"
    );
    let health = http_get(addr, "/healthz").expect("GET /healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "health v1"));
    assert_eq!(
        http_get(addr, "/env/GREETING").expect("GET /env").text(),
        "hello"
    );
    assert_eq!(http_get(addr, "/env/NOPE").expect("GET /env").status, 404);
    let headers = http_request(
        addr,
        "GET",
        "app.test",
        "/headers",
        &[("X-Probe", "1")],
        &[],
        T,
    )
    .expect("GET /headers");
    assert!(
        headers.text().contains("Host: app.test\n") && headers.text().contains("X-Probe: 1\n"),
        "{}",
        headers.text()
    );

    // Two requests, one with a body, on one connection: keep-alive works.
    let mut conn = TcpStream::connect(addr).expect("connect to the container");
    conn.set_read_timeout(Some(T)).expect("set_read_timeout");
    conn.write_all(b"POST /version HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write two requests");
    let mut both = String::new();
    BufReader::new(&conn)
        .read_to_string(&mut both)
        .expect("read both responses");
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
    assert!(both.ends_with("testapp v1\n"), "{both}");

    // /health/set changes /healthz at run time.
    assert_eq!(
        http_get(addr, "/health/set?status=503")
            .expect("GET /health/set")
            .status,
        200
    );
    assert_eq!(
        http_get(addr, "/healthz").expect("GET /healthz").status,
        503
    );

    let mut ws = WsClient::connect(addr, "app.test", "/ws", T).expect("WebSocket handshake");
    assert_eq!(ws.echo("hello over ws").expect("ws echo"), "hello over ws");
    ws.send(2, &[0, 1, 2, 255]).expect("ws send binary");
    assert_eq!(
        ws.recv().expect("ws recv binary"),
        WsMessage {
            opcode: 2,
            payload: vec![0, 1, 2, 255]
        }
    );
    let big = "x".repeat(70_000);
    assert_eq!(
        ws.echo(&big).expect("ws echo of a 64-bit length frame"),
        big
    );
    ws.send(9, b"p").expect("ws ping");
    assert_eq!(
        ws.recv().expect("ws pong"),
        WsMessage {
            opcode: 10,
            payload: b"p".to_vec()
        }
    );
    let close = ws.close(1000).expect("ws close");
    assert_eq!(
        close,
        WsMessage {
            opcode: 8,
            payload: vec![0x03, 0xe8]
        }
    );

    let started = Instant::now();
    let events = sse_events(addr, "app.test", "/sse?n=3&ms=100", T).expect("SSE");
    assert_eq!(events, ["v1 event 1", "v1 event 2", "v1 event 3"]);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "events were not spaced"
    );
    let chunked = sse_events(addr, "app.test", "/sse?n=2&ms=10&chunked=1", T).expect("chunked SSE");
    assert_eq!(chunked, ["v1 event 1", "v1 event 2"]);
}

#[test]
fn every_variant_behaves_as_named() {
    let started = Instant::now();
    let crash = Container::run(&TestImages::image("crash"), &[], 8080);
    let unhealthy = Container::run(&TestImages::image("unhealthy"), &[], 8080);
    let otherport = Container::run(&TestImages::image("otherport"), &[], 9000);
    let slowstart = Container::run(&TestImages::image("slowstart"), &[], 8080);
    let v3 = Container::run(&TestImages::image("v3"), &[], 8080);

    assert_eq!(
        crash.wait_exit(T),
        Some(3),
        "crash should exit with code 3; logs:\n{}",
        crash.logs()
    );
    assert!(
        crash
            .logs()
            .contains("testapp crash: simulated crash, exiting with code 3"),
        "{}",
        crash.logs()
    );
    assert_eq!(unhealthy.wait_listening("/healthz", T), 500);
    assert_eq!(otherport.wait_listening("/", T), 200);
    assert_eq!(
        http_get(otherport.addr(), "/").expect("GET /").text(),
        "testapp otherport\n"
    );
    assert_eq!(slowstart.wait_listening("/", T), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "slowstart answered before its delay"
    );
    assert!(
        slowstart
            .logs()
            .contains("testapp slowstart listening on 8080"),
        "{}",
        slowstart.logs()
    );
    assert_eq!(v3.wait_listening("/", T), 200);
    assert_eq!(
        http_get(v3.addr(), "/").expect("GET /").text(),
        "testapp v3\n"
    );

    // /exit ends the process with the asked code.
    let resp = http_get(v3.addr(), "/exit?code=7").expect("GET /exit");
    assert_eq!(resp.status, 200);
    assert_eq!(v3.wait_exit(T), Some(7));
}

#[test]
fn registry_with_auth_accepts_push_and_refuses_wrong_password() {
    let registry = Registry::start(true);
    let addr = registry.addr();
    let v2 = |auth: Option<String>| {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        http_request(addr, "GET", &registry.host(), "/v2/", &headers, &[], T)
            .expect("GET /v2/")
            .status
    };
    assert_eq!(v2(None), 401);
    assert_eq!(v2(Some(basic_auth(registry.username(), "wrong"))), 401);
    assert_eq!(v2(Some(registry.authorization())), 200);

    // The engine is refused too (its own client config dir, not ~/.docker).
    let config = tempfile::tempdir().expect("temp dir");
    let login = support::try_docker(
        Some(config.path()),
        &[
            "login",
            "--username",
            registry.username(),
            "--password-stdin",
            &registry.host(),
        ],
        Some(b"wrong"),
    );
    assert!(
        !login.status.success(),
        "docker login with a wrong password succeeded"
    );

    let reference = push(&registry, "smoke/app", "v2", "1.0");
    assert_eq!(reference, format!("{}/smoke/app:1.0", registry.host()));
    assert!(
        manifest_digest(&registry, "smoke/app", "1.0").is_some_and(|d| d.starts_with("sha256:"))
    );

    // Pull it back and run it: the pushed image is the working app.
    // The engine may resolve the tag with HEAD only when it knows the digest.
    let manifest_requests = || {
        registry.count_requests("GET", "/v2/smoke/app/manifests/")
            + registry.count_requests("HEAD", "/v2/smoke/app/manifests/")
    };
    let before = manifest_requests();
    let _untag = LocalTag(reference.clone());
    registry.docker(&["pull", &reference]);
    assert!(
        manifest_requests() > before,
        "the registry log shows no manifest request for the pull:\n{}",
        registry.log()
    );
    let c = Container::run(&reference, &[], 8080);
    c.wait_listening("/", T);
    assert_eq!(
        http_get(c.addr(), "/").expect("GET /").text(),
        "testapp v2\n"
    );
}

#[test]
fn index_without_amd64_is_refused_by_the_engine() {
    let registry = Registry::start(false);
    let reference = push_index_without_amd64(&registry, "smoke/arm", "only-arm64");
    let resp = http_request(
        registry.addr(),
        "GET",
        &registry.host(),
        "/v2/smoke/arm/manifests/only-arm64",
        &[("Accept", "application/vnd.oci.image.index.v1+json")],
        &[],
        T,
    )
    .expect("GET index");
    assert_eq!(
        resp.header("content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let index: serde_json::Value = serde_json::from_slice(&resp.body).expect("index JSON");
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "arm64");

    let pull = support::try_docker(
        Some(&registry.docker_config_dir()),
        &["pull", &reference],
        None,
    );
    assert!(
        !pull.status.success(),
        "pulling an arm64-only index for amd64 succeeded"
    );
}

#[tokio::test]
async fn get_sends_the_given_host_header() {
    let c = Container::run(&TestImages::image("v1"), &[], 8080);
    let addr = c.addr();
    assert!(
        wait_until(T, || async {
            get(addr, "probe.test", "/")
                .await
                .is_ok_and(|(s, _)| s == 200)
        })
        .await,
        "the container did not answer within {T:?}; logs:\n{}",
        c.logs()
    );
    let (status, body) = get(addr, "app.example.test", "/headers")
        .await
        .expect("GET /headers");
    assert_eq!(status, 200);
    assert!(
        body.lines()
            .any(|l| l == "host: app.example.test" || l == "Host: app.example.test"),
        "{body}"
    );
    assert_eq!(
        get(addr, "x", "/healthz").await.expect("GET /healthz"),
        (200, "health v1".to_string())
    );
}
