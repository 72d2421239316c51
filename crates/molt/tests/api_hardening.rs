//! The API and the dashboard against the tricks of issue 12, on a real
//! server: headers that never finish, metrics without the token, `since`
//! values that overflow, domains that are addresses or the API's own name,
//! and a used login link replayed after a restart.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_api_refuses_the_tricks_of_a_hostile_client() {
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut server = MoltServer::start_with(
        None,
        &["--metrics", &metrics_addr, "--api-header-timeout", "1s"],
        &[],
    );
    let client = proxy_client(Duration::from_secs(30));
    let api = server.api_url();

    // Headers that trickle in and never end: the connection is closed
    // after the header timeout (1 s), not held open.
    let mut slow = TcpStream::connect(server.api_addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    assert!(
        read.is_ok() && started.elapsed() < Duration::from_secs(10),
        "the half-sent request was held open for {:?} ({read:?})",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // Metrics: the token on the API's address, none on their own address.
    let resp = client.get(format!("{api}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(format!("{api}/metrics"))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("# TYPE molt_"));
    let resp = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("# TYPE molt_"));
    let resp = client
        .get(format!("http://{metrics_addr}/api/v1/apps"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "only the metrics are on that address");

    // A `since` that overflows is a 400 that says so.
    for since in ["18446744073709551615s", "999999999999999999d"] {
        let resp = client
            .get(format!("{api}/api/v1/apps/web/logs?since={since}"))
            .bearer_auth(server.token())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "since={since}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_since", "{body}");
    }

    // Domains that are addresses, this machine, or the API's own name are
    // refused before anything is recorded or pulled.
    for (domain, host) in [
        ("127.0.0.1", None),
        ("2130706433", None),
        ("localhost", None),
        ("molt-api.test", Some("molt-api.test:7700")),
    ] {
        let mut req = client
            .post(format!("{api}/api/v1/apps"))
            .bearer_auth(server.token())
            .json(&json!({"name": "web", "image": "127.0.0.1:1/none:1", "port": 80, "domains": [domain]}));
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{domain}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_domain", "{body}");
    }
    let apps: serde_json::Value = client
        .get(format!("{api}/api/v1/apps"))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(apps, json!([]));

    // A one-time login link works once, and stays used after a restart.
    let link: serde_json::Value = client
        .post(format!("{api}/api/v1/dashboard-link"))
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = link["url"]
        .as_str()
        .unwrap()
        .split_once("/login/link")
        .map(|(_, rest)| format!("/login/link{rest}"))
        .unwrap();
    let first = http_get(server.api_addr(), &path).unwrap();
    assert_eq!(first.status, 303, "{}", first.text());
    server.restart();
    let again = http_get(server.api_addr(), &path).unwrap();
    assert_eq!(again.status, 401, "{}", again.text());
    assert!(again.text().contains("already used"), "{}", again.text());
}
