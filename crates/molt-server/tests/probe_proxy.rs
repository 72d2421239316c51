//! Health probes ignore `HTTP_PROXY`: a proxy named in the server's
//! environment never sees a probe. Its own test binary, since it sets the
//! process's environment.

use molt_server::health::Prober;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every connection with `status` and counts them.
async fn answer(status: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn probes_ignore_http_proxy() {
    let (proxy, through_proxy) = answer("502 Bad Gateway").await;
    let (app, at_app) = answer("200 OK").await;
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(var, format!("http://{proxy}"));
    }
    for var in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(var);
    }
    let p = Prober::new()
        .check(&app, Some("/healthz"), Duration::from_secs(5))
        .await;
    assert!(p.is_healthy(), "{p}");
    assert_eq!(at_app.load(Ordering::SeqCst), 1);
    assert_eq!(
        through_proxy.load(Ordering::SeqCst),
        0,
        "the probe went through HTTP_PROXY"
    );
}
