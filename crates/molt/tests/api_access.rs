//! The API refuses every request without the admin token, and bad input gets
//! a 4xx JSON error, never a 5xx.

mod support;

use support::*;

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/apps"),
    ("POST", "/api/v1/apps"),
    ("GET", "/api/v1/apps/web"),
    ("DELETE", "/api/v1/apps/web"),
    ("GET", "/api/v1/apps/web/deploys"),
    ("POST", "/api/v1/apps/web/deploys"),
    ("GET", "/api/v1/apps/web/deploys/abc"),
    ("GET", "/api/v1/apps/web/deploys/abc/events"),
    ("POST", "/api/v1/apps/web/redeploy"),
    ("POST", "/api/v1/apps/web/restart"),
    ("POST", "/api/v1/apps/web/rollback"),
    ("POST", "/api/v1/apps/web/cancel"),
    ("GET", "/api/v1/apps/web/env"),
    ("PATCH", "/api/v1/apps/web/env"),
    ("GET", "/api/v1/registries"),
    ("POST", "/api/v1/registries"),
    ("DELETE", "/api/v1/registries/example.com"),
    ("GET", "/api/v1/nothing-here"),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_route_needs_the_token_and_bad_input_is_a_4xx() {
    let server = MoltServer::start(None);
    let client = proxy_client(std::time::Duration::from_secs(30));
    for (method, path) in ROUTES {
        for token in [None, Some("wrong-token")] {
            let mut req = client.request(
                method.parse().unwrap(),
                format!("{}{path}", server.api_url()),
            );
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }

    let bad_bodies: &[(&str, &str, &str)] = &[
        ("POST", "/api/v1/apps", "{not json"),
        (
            "POST",
            "/api/v1/apps",
            r#"{"name":"web","image":"x","port":80,"surprise":1}"#,
        ),
        (
            "POST",
            "/api/v1/apps",
            r#"{"name":"../etc","image":"x","port":80}"#,
        ),
        (
            "POST",
            "/api/v1/apps",
            r#"{"name":"web","image":"UPPER/x","port":80}"#,
        ),
        (
            "POST",
            "/api/v1/apps",
            r#"{"name":"web","image":"x","port":99999}"#,
        ),
        (
            "POST",
            "/api/v1/apps",
            r#"{"name":"web","image":"x","port":80,"env":["1BAD=x"]}"#,
        ),
        (
            "POST",
            "/api/v1/registries",
            r#"{"host":"bad host","username":"u","password":"p"}"#,
        ),
        ("GET", "/api/v1/apps/..%2F..%2Fetc", ""),
        ("POST", "/api/v1/apps/nope/deploys", r#"{"image":"x"}"#),
        ("POST", "/api/v1/apps/nope/rollback", "[1,2]"),
    ];
    for (method, path, body) in bad_bodies {
        let resp = client
            .request(
                method.parse().unwrap(),
                format!("{}{path}", server.api_url()),
            )
            .bearer_auth(server.token())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert!(status.is_client_error(), "{method} {path} {body}: {status}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }

    let huge = format!(
        r#"{{"name":"web","image":"{}","port":80}}"#,
        "a".repeat(2 * 1024 * 1024)
    );
    let resp = client
        .post(format!("{}/api/v1/apps", server.api_url()))
        .bearer_auth(server.token())
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // The token file and the admin socket are private.
    use std::os::unix::fs::PermissionsExt;
    for file in ["admin-token", "secret.key", "proxy.sock"] {
        let mode = std::fs::metadata(server.data_dir().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }

    // A one-time dashboard login link: it logs a browser in once.
    let out = molt(&server, &["dashboard-link"]);
    assert_eq!(out.status, 0, "{out}");
    let url = out.stdout.trim().to_string();
    assert!(url.contains("/login/link?token="), "{out}");
    let path = url
        .split_once("/login/")
        .map(|(_, p)| format!("/login/{p}"))
        .unwrap();
    let browser = proxy_client(std::time::Duration::from_secs(10));
    let first = browser
        .get(format!("{}{path}", server.api_url()))
        .send()
        .await
        .unwrap();
    assert!(first.status().is_redirection(), "{}", first.status());
    let cookie = first
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.contains("molt_session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let again = browser
        .get(format!("{}{path}", server.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 401, "a link works once");
    let forged = browser
        .get(format!("{}/login/link?token=AAAA", server.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}
