//! The admin protocol over TCP (`molt proxy --admin-listen`), for a server
//! on another node: only a holder of the token gets an answer, a handover
//! is refused there, and a takeover keeps the TCP admin address serving.

mod common;

use common::*;
use http::StatusCode;
use molt_proxy::{AdminClient, AdminError, AdminToken, Proxy, ProxyConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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

/// Sends `lines` on a fresh TCP connection and reads one answer line.
async fn raw(addr: std::net::SocketAddr, lines: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(lines.as_bytes()).await.expect("write");
    let mut answer = String::new();
    bounded(
        "an answer",
        BufReader::new(stream).read_line(&mut answer),
    )
    .await
    .expect("read");
    answer
}

#[tokio::test]
async fn only_a_holder_of_the_token_gets_an_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = start_with_admin(dir.path()).await;
    let addr = proxy.admin_addr().expect("admin listens").to_string();
    let app = Upstream::start("A").await;

    let right = AdminClient::tcp(&addr, token('a'));
    right.ping().await.expect("the right token is answered");
    right
        .set_route(route("web", &[HOST], vec![app.target()]))
        .await
        .expect("set over TCP");
    let answer = get(&client(), proxy.http_addr(), HOST, "/")
        .await
        .expect("get");
    assert_eq!(answer, (StatusCode::OK, "A".to_string()));

    let wrong = AdminClient::tcp(&addr, token('b'));
    let err = wrong.list_routes().await.expect_err("a wrong token");
    assert!(
        matches!(&err, AdminError::Refused(m) if m.contains("token")),
        "{err}"
    );
    let err = wrong.remove_route("web").await.expect_err("a wrong token");
    assert!(matches!(err, AdminError::Refused(_)), "{err}");
    assert_eq!(right.list_routes().await.expect("list").len(), 1);

    // No token line at all: the request itself is taken for one, and
    // refused; nothing of the table leaks.
    let answer = raw(proxy.admin_addr().unwrap(), "{\"op\":\"list_routes\"}\n").await;
    assert!(answer.contains("\"ok\":false"), "{answer}");
    assert!(!answer.contains("web.test"), "{answer}");

    // A handover passes descriptors: only on the local socket.
    let answer = raw(
        proxy.admin_addr().unwrap(),
        &format!("{{\"auth\":\"{}\"}}\n{{\"op\":\"handover\"}}\n", "a".repeat(40)),
    )
    .await;
    assert!(answer.contains("local admin socket"), "{answer}");
    proxy.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_takeover_keeps_the_tcp_admin_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = start_with_admin(dir.path()).await;
    let addr = old.admin_addr().expect("admin listens");
    let app = Upstream::start("A").await;
    let admin = AdminClient::tcp(&addr.to_string(), token('a'));
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
