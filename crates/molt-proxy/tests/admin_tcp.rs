//! The admin protocol over TCP and TLS (`molt proxy --admin-listen`), for
//! a server on another node: only a holder of the token gets an answer,
//! plain text gets nothing, a handover is refused there, and a takeover
//! keeps the TCP admin address serving.

mod common;

use common::*;
use http::StatusCode;
use molt_proxy::admin::Request;
use molt_proxy::{AdminClient, AdminError, AdminToken, Proxy, ProxyConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "web.test";

fn token(fill: char) -> AdminToken {
    AdminToken::new(&fill.to_string().repeat(40)).expect("token")
}

async fn start_with_admin(dir: &std::path::Path) -> Proxy {
    Proxy::start(ProxyConfig {
        admin_listen: Some(("127.0.0.1:0".parse().expect("addr"), token('a'))),
        ..config(dir)
    })
    .await
    .expect("proxy starts")
}

/// Sends `lines` on a fresh TCP connection and reads what comes back
/// until the proxy closes it.
async fn raw(addr: std::net::SocketAddr, lines: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(lines.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = bounded("the proxy to close", stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn only_a_holder_of_the_token_gets_an_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = start_with_admin(dir.path()).await;
    let addr = proxy.admin_addr().expect("admin listens").to_string();
    let app = Upstream::start("A").await;

    let right = AdminClient::tcp(&addr, token('a')).expect("client");
    right.ping().await.expect("the right token is answered");
    right
        .set_route(route("web", &[HOST], vec![app.target()]))
        .await
        .expect("set over TCP");
    let answer = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("get");
    assert_eq!(answer, (StatusCode::OK, "A".to_string()));

    // Another token derives another TLS key: the client finds the proxy is
    // not the one it wants, and nothing is sent.
    let wrong = AdminClient::tcp(&addr, token('b')).expect("client");
    let err = wrong.remove_route("web").await.expect_err("a wrong token");
    assert!(err.to_string().contains("admin token"), "{err}");
    assert_eq!(right.list_routes().await.expect("list").len(), 1);

    // Plain text gets no answer at all.
    let answer = raw(proxy.admin_addr().unwrap(), "{\"op\":\"list_routes\"}\n").await;
    assert!(
        !answer.contains("ok") && !answer.contains(HOST),
        "{answer:?}"
    );

    // A handover passes descriptors: only on the local socket.
    let err = right
        .call(&Request::Handover, Duration::from_secs(5))
        .await
        .expect_err("no handover over TCP");
    assert!(
        matches!(&err, AdminError::Refused(m) if m.contains("local admin socket")),
        "{err}"
    );
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_takeover_keeps_the_tcp_admin_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = start_with_admin(dir.path()).await;
    let addr = old.admin_addr().expect("admin listens");
    let app = Upstream::start("A").await;
    let admin = AdminClient::tcp(&addr.to_string(), token('a')).expect("client");
    admin
        .set_route(route("web", &[HOST], vec![app.target()]))
        .await
        .expect("set");

    let new = bounded(
        "takeover",
        Proxy::start(ProxyConfig {
            listen: old.http_addr(),
            takeover: true,
            admin_listen: Some((addr, token('a'))),
            ..config(dir.path())
        }),
    )
    .await
    .expect("takeover");
    assert_eq!(new.admin_addr(), Some(addr));
    bounded("the old proxy to hand over", old.handed_over()).await;
    let ping = admin.ping().await.expect("the TCP address answers");
    assert_eq!(ping.pid, std::process::id());
    assert_eq!(admin.list_routes().await.expect("list").len(), 1);
    bounded("the old proxy to finish", old.finished())
        .await
        .expect("finished");
    admin.ping().await.expect("still answered by the new proxy");
    new.shutdown().await.expect("shutdown");
}
