//! The dashboard over plain HTTP, no browser: pages need a login and every
//! form post a CSRF token, a bad form comes back with its error, logging
//! out ends the session, and the docs are served as HTML and Markdown.

use crate::support::*;
use std::time::Duration;

/// Form posts, logins and docs over plain HTTP: no browser needed.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_needs_a_login_and_a_csrf_token_and_serves_the_docs() {
    let server = MoltServer::start(None);
    let base = server.api_url();
    // Plain HTTP, no redirects followed.
    let http = proxy_client(Duration::from_secs(30));

    // Pages need a session; docs do not.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = http.get(format!("{base}/apps/web")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/login?next=%2Fapps%2Fweb");
    let r = http
        .post(format!("{base}/apps/web/deploy"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("image", "x")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // Logging in needs the login form's cookie and the right token.
    let r = http.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    let login_cookie = login_cookie.split(';').next().unwrap().to_string();
    let csrf = login_cookie.split_once('=').unwrap().1.to_string();
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("token", "wrong"), ("csrf", csrf.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("token", server.token()),
            ("csrf", csrf.as_str()),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a login without the form's cookie");
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("token", server.token()),
            ("csrf", csrf.as_str()),
        ]))
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
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(session.contains("Path=/"));
    let session = session.split(';').next().unwrap().to_string();

    // With the session, pages render; they carry a strict CSP.
    let r = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let page = r.text().await.unwrap();
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field in the page")
        .to_string();

    // A POST without the CSRF token, or with a wrong one, does nothing.
    for form in [vec![("name", "x")], vec![("name", "x"), ("csrf", "nope")]] {
        let r = http
            .post(format!("{base}/apps"))
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&form))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    // With it, a bad form comes back with the error next to its field.
    let r = http
        .post(format!("{base}/apps"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("csrf", token.as_str()),
            ("name", "<b>Bad Name</b>"),
            ("image", "nginx:1"),
            ("port", "80"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"create-name-error\""),
        "no error next to the name"
    );
    assert!(
        page.contains("&lt;b&gt;Bad Name&lt;/b&gt;"),
        "the value is kept, escaped"
    );
    assert!(!page.contains("<b>Bad Name</b>"));

    // Logging out ends the session.
    let r = http
        .post(format!("{base}/logout"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("csrf", token.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);

    // Docs: HTML with a "View as Markdown" link, and the Markdown itself,
    // headed by its source URL and date.
    let html = http
        .get(format!("{base}/docs/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for page in [
        "deploy-a-new-version",
        "roll-back",
        "redeploy-vs-restart",
        "environment-and-secrets",
        "private-registries",
        "https-and-certificates",
        "gpu-and-recreate-deploys",
        "replicas",
        "debugging-failed-deploys",
        "running-in-production",
    ] {
        assert!(
            html.contains(&format!("href=\"/docs/{page}\"")),
            "{page} listed"
        );
        let r = http
            .get(format!("{base}/docs/{page}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{page}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(&format!("href=\"/docs/{page}.md\"")),
            "{page}"
        );
        assert!(body.contains("View as Markdown"), "{page}");
        let r = http
            .get(format!("{base}/docs/{page}.md"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{page}.md");
        assert_eq!(r.headers()["content-type"], "text/markdown; charset=utf-8");
        let md = r.text().await.unwrap();
        let mut lines = md.lines();
        assert_eq!(
            lines.next(),
            Some(format!("Source: {base}/docs/{page}").as_str()),
            "{page}.md"
        );
        assert!(
            lines.next().unwrap_or("").starts_with("Updated: 20"),
            "{page}.md"
        );
        assert!(md.contains("\n# "), "{page}.md has its title");
    }
    let r = http
        .get(format!("{base}/docs/no-such-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
