//! Pausing a route (requests held, then released to the new target) and
//! handing the proxy's sockets over to a new proxy, in-process.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use molt_proxy::{AdminClient, Proxy, ProxyConfig};

const APP: &str = "web";
const HOST: &str = "web.test";

async fn start_with_metrics(dir: &std::path::Path) -> (Proxy, AdminClient) {
    let proxy = Proxy::start(ProxyConfig {
        metrics: Some("127.0.0.1:0".parse().expect("addr")),
        ..config(dir)
    })
    .await
    .expect("proxy starts");
    let admin = AdminClient::connect(dir).await.expect("admin connects");
    (proxy, admin)
}

/// The held-requests gauge of `APP`, read from the metrics listener.
async fn held(proxy: &Proxy) -> usize {
    let Some(metrics) = proxy.metrics_addr() else {
        panic!("proxy started without metrics");
    };
    let (_, text) = get(&client(), metrics, "metrics", "/metrics")
        .await
        .expect("metrics");
    let prefix = format!("molt_proxy_held_requests{{app=\"{APP}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn wait_held(proxy: &Proxy, n: usize) {
    bounded("requests to be held", async {
        while held(proxy).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn spawn_get(
    at: std::net::SocketAddr,
    path: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, String)> {
    tokio::spawn(async move { get(&client(), at, HOST, path).await.expect("request") })
}

#[tokio::test]
async fn paused_requests_wait_and_go_to_the_new_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = (Upstream::start("old").await, Upstream::start("new").await);
    let (proxy, admin) = start_with_metrics(dir.path()).await;
    admin
        .set_route(route(APP, &[HOST], vec![old.target()]))
        .await
        .expect("set");
    admin
        .pause(APP, Duration::from_secs(20), 10)
        .await
        .expect("pause");
    // A recreate: the old container is gone, the route has no target, and
    // still requests wait rather than fail.
    admin
        .set_route(route(APP, &[HOST], vec![]))
        .await
        .expect("set empty");
    let waiting: Vec<_> = (0..3).map(|_| spawn_get(proxy.http_addr(), "/")).collect();
    wait_held(&proxy, 3).await;
    let paused = admin.paused().await.expect("paused");
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].app, APP);

    // set_route alone does not release them: pausing is explicit.
    admin
        .set_route(route(APP, &[HOST], vec![new.target()]))
        .await
        .expect("set new");
    assert_eq!(held(&proxy).await, 3);
    assert!(waiting.iter().all(|w| !w.is_finished()));

    admin.resume(APP).await.expect("resume");
    for w in waiting {
        let answer = bounded("held request", w).await.expect("join");
        assert_eq!(answer, (StatusCode::OK, "new".to_string()));
    }
    assert_eq!(old.hits.load(Ordering::SeqCst), 0);
    assert!(admin.paused().await.expect("paused").is_empty());
    // Without a pause, no target is still a 503 at once.
    admin
        .set_route(route(APP, &[HOST], vec![]))
        .await
        .expect("set empty");
    let (status, _) = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("get");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn pause_is_bounded_in_time_and_in_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start_with_metrics(dir.path()).await;
    admin
        .set_route(route(APP, &[HOST], vec![a.target()]))
        .await
        .expect("set");
    assert!(matches!(
        admin.pause("nobody", Duration::from_secs(1), 1).await,
        Err(molt_proxy::AdminError::Refused(_))
    ));
    admin
        .pause(APP, Duration::from_millis(700), 1)
        .await
        .expect("pause");
    let started = Instant::now();
    let first = spawn_get(proxy.http_addr(), "/");
    wait_held(&proxy, 1).await;

    // The queue is full: refused at once, not after the pause.
    let (status, body) = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("second");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("is being redeployed and 1 requests are already waiting"),
        "{body}"
    );
    assert!(!first.is_finished());

    let (status, body) = bounded("held request", first).await.expect("join");
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("the App `web` is being redeployed and did not come back within 0.7 s"),
        "{body}"
    );
    assert_eq!(a.hits.load(Ordering::SeqCst), 0);

    admin.resume(APP).await.expect("resume");
    let answer = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("get");
    assert_eq!(answer, (StatusCode::OK, "A".to_string()));
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_held_post_body_arrives_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Upstream::start("A").await;
    let (proxy, admin) = start_with_metrics(dir.path()).await;
    admin
        .set_route(route(APP, &[HOST], vec![]))
        .await
        .expect("set");
    admin
        .pause(APP, Duration::from_secs(20), 4)
        .await
        .expect("pause");
    // Larger than socket buffers, so it cannot sit there whole: it streams
    // once the request is released.
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sent = Bytes::from(body);
    let at = proxy.http_addr();
    let posting = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let poster: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            let req = Request::post(format!("http://{at}/echo"))
                .header(header::HOST, HOST)
                .body(Full::new(sent))
                .expect("request");
            let resp = poster.request(req).await.expect("post");
            let status = resp.status();
            let got = resp.into_body().collect().await.expect("body").to_bytes();
            (status, got)
        })
    };
    wait_held(&proxy, 1).await;
    admin
        .set_route(route(APP, &[HOST], vec![a.target()]))
        .await
        .expect("set");
    admin.resume(APP).await.expect("resume");
    let (status, got) = bounded("echo", posting).await.expect("join");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the echoed body differs");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_proxy_takes_over_without_failing_a_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let (old, admin) = start_with_metrics(dir.path()).await;
    let at = old.http_addr();
    admin
        .set_route(route(APP, &[HOST], vec![a.target()]))
        .await
        .expect("set");
    admin
        .set_route(route("paused", &["paused.test"], vec![]))
        .await
        .expect("set paused");
    admin
        .pause("paused", Duration::from_secs(20), 4)
        .await
        .expect("pause");
    // Held by the old proxy when it hands over.
    let held_request = tokio::spawn(async move {
        get(&client(), at, "paused.test", "/")
            .await
            .expect("held request")
    });

    // Steady keep-alive traffic throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let c = client();
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    match get(&c, at, HOST, "/").await {
                        Ok((StatusCode::OK, _)) => {}
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    bounded("some traffic", async {
        while sent.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let new = bounded(
        "takeover",
        Proxy::start(ProxyConfig {
            listen: at,
            takeover: true,
            ..config(dir.path())
        }),
    )
    .await
    .expect("takeover");
    assert_eq!(new.http_addr(), at);
    bounded("the old proxy to hand over", old.handed_over()).await;
    let before = sent.load(Ordering::SeqCst);
    bounded("traffic after the handover", async {
        while sent.load(Ordering::SeqCst) < before + 200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // The new proxy owns the admin socket, the routes and the pause.
    let admin = AdminClient::connect(dir.path()).await.expect("admin");
    let routes = admin.list_routes().await.expect("list");
    assert_eq!(routes.len(), 2);
    assert_eq!(admin.paused().await.expect("paused")[0].app, "paused");
    // Releasing the pause on the new proxy releases the request the old one
    // held: it was passed on.
    admin
        .set_route(route("paused", &["paused.test"], vec![b.target()]))
        .await
        .expect("set");
    admin.resume("paused").await.expect("resume");
    let answer = bounded("the held request", held_request)
        .await
        .expect("join");
    assert_eq!(answer, (StatusCode::OK, "B".to_string()));

    stop.store(true, Ordering::SeqCst);
    for l in load {
        bounded("load task", l).await.expect("join");
    }
    // Drained: the old one had only short requests.
    bounded("the old proxy to finish", old.finished())
        .await
        .expect("finished");
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("handover under load: {sent} requests, {failed} failed");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    let pid = std::fs::read_to_string(dir.path().join(molt_proxy::admin::PID_FILE))
        .expect("pid file kept by the new proxy");
    assert_eq!(pid.trim(), std::process::id().to_string());
    let answer = get(&client(), at, HOST, "/").await.expect("get");
    assert_eq!(answer, (StatusCode::OK, "A".to_string()));
    new.shutdown().await.expect("shutdown");
}
