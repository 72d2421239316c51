//! The dashboard over plain HTTP: a session logged in with the admin token,
//! and its pages, for tests that check what the dashboard shows without a
//! browser.

use super::{proxy_client, MoltServer};
use std::time::Duration;

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A dashboard session's cookie (`molt_session=…`), logged in with the
/// admin token through the login form.
pub async fn dashboard_session(server: &MoltServer) -> String {
    let base = server.api_url();
    let http = proxy_client(Duration::from_secs(30));
    let r = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let csrf = cookie.split_once('=').unwrap().1.to_string();
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("token", server.token()), ("csrf", &csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("molt_session="))
        .expect("a session cookie");
    session.split(';').next().unwrap().to_string()
}

/// The dashboard page at `path`, which must answer 200.
pub async fn dashboard_get(server: &MoltServer, session: &str, path: &str) -> String {
    let r = proxy_client(Duration::from_secs(30))
        .get(format!("{}{path}", server.api_url()))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().await.unwrap()
}
