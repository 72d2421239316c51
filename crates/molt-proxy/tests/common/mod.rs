//! Test fixtures: small hyper upstreams on 127.0.0.1:0, a proxy started
//! in-process on a temp data dir, and a client to talk through it.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use molt_proxy::admin::{Route, Target};
use molt_proxy::{AdminClient, Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Every wait in the tests is bounded by this.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than `PATIENCE`.
pub async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A tiny App: `/` answers its name, `/headers` echoes request headers,
/// `/slow?ms=N` waits N ms (signalling `started`, then setting
/// `responded`), and an `Upgrade` request becomes a byte echo.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub started: Arc<Notify>,
    pub responded: Arc<AtomicBool>,
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let started = Arc::new(Notify::new());
        let responded = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicUsize::new(0));
        let state = (name, started.clone(), responded.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(app(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            name,
            addr,
            started,
            responded,
            hits,
            task,
        }
    }

    pub fn target(&self) -> Target {
        Target {
            addr: self.addr.to_string(),
            id: self.name.to_string(),
        }
    }
}

type AppState = (&'static str, Arc<Notify>, Arc<AtomicBool>, Arc<AtomicUsize>);

async fn app(state: AppState, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (name, started, responded, hits) = state;
    hits.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key(header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("echo"));
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return resp;
    }
    match req.uri().path() {
        "/headers" => {
            let mut text = String::new();
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(Full::new(Bytes::from(text)))
        }
        "/slow" => {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1500);
            started.notify_one();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            responded.store(true, Ordering::SeqCst);
            Response::new(Full::new(Bytes::from(name)))
        }
        "/echo" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Response::new(Full::new(body))
        }
        _ => Response::new(Full::new(Bytes::from(name))),
    }
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

pub fn config(dir: &std::path::Path) -> ProxyConfig {
    ProxyConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        https: None,
        metrics: None,
        takeover: false,
        edge: molt_proxy::EdgeConfig::default(),
        admin_listen: None,
    }
}

pub async fn start_proxy(dir: &std::path::Path) -> (Proxy, AdminClient) {
    let proxy = Proxy::start(config(dir)).await.expect("proxy starts");
    let admin = AdminClient::connect(dir).await.expect("admin connects");
    (proxy, admin)
}

pub fn route(app: &str, hosts: &[&str], targets: Vec<Target>) -> Route {
    Route {
        app: app.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        targets,
        upstream_timeout_ms: 5_000,
        drain_timeout_ms: 30_000,
        tunnel_idle_timeout_ms: None,
        max_body_bytes: None,
        https_redirect: None,
        hsts_max_age_secs: None,
        console: false,
    }
}

pub type TestClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// GETs `path` through the proxy with `Host: host`; returns status and body.
pub async fn get(
    client: &TestClient,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let req = Request::get(format!("http://{proxy}{path}"))
        .header(header::HOST, host)
        .body(Empty::new())?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Opens a raw connection and performs an `Upgrade: echo` handshake.
pub async fn upgrade(proxy: SocketAddr, host: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let handshake =
        format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    stream.write_all(handshake.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 8192, "response head too long");
        let n = bounded("upgrade response", stream.read(&mut byte))
            .await
            .expect("read");
        assert!(
            n == 1,
            "connection closed during handshake: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
    stream
}

/// Writes `msg` and reads the same bytes back.
pub async fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    bounded("echo", stream.read_exact(&mut back))
        .await
        .expect("read echo");
    assert_eq!(back, msg);
}
