//! The dashboard in a real browser (Debian's chromium through chromedriver)
//! against a real server, engine and password-protected registry: log in,
//! save a registry credential, create an App from the form, deploy from the
//! Deploy field and watch it succeed without a reload, see a failing image
//! fail while the old version keeps serving, roll back from the history,
//! set a secret and see it masked, delete with confirmation, and follow the
//! two phases of a recreate deploy. Also takes the screenshots in
//! docs/screenshots/ (`MOLT_UPDATE_SCREENSHOTS=1 cargo test -p molt --test
//! dashboard` refreshes them).
//!
//! The HTTP-level checks (login required, CSRF, docs as Markdown) need no
//! browser and run in their own test.

mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Bound for anything a deploy does (pull, start, health check, swap).
const DEPLOY_WAIT: Duration = Duration::from_secs(120);

/// chromedriver on a free port of 127.0.0.1, killed on drop.
struct Chromedriver {
    child: Child,
    port: u16,
    /// The browser's fresh profile directory.
    profile: tempfile::TempDir,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (scripts/test-deps does)"
            );
        }
        let port = free_port();
        // Its own process group, so that dropping it also ends the browsers
        // it started, even when a test panics before closing its session.
        let child = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver failed");
        let profile = tempfile::Builder::new()
            .prefix("molt-chromium-")
            .tempdir()
            .expect("creating a chromium profile dir failed");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_until_sync(Duration::from_secs(20), || http_get(addr, "/status")
                .is_ok_and(|r| r.status == 200)),
            "chromedriver did not answer on port {port} within 20 s"
        );
        Chromedriver {
            child,
            port,
            profile,
        }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ]
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("opening a chromium session through chromedriver failed")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the chromium processes under it.
        let _ = run_bounded(
            Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .arg(format!("-{}", self.child.id())),
            None,
            Duration::from_secs(10),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `docs/screenshots/` when `MOLT_UPDATE_SCREENSHOTS`
/// is set (to refresh the committed ones), else a temp dir, so a test run
/// leaves the work tree as it was.
fn screenshots_dir() -> PathBuf {
    let dir = if std::env::var_os("MOLT_UPDATE_SCREENSHOTS").is_some() {
        workspace_root().join("docs/screenshots")
    } else {
        std::env::temp_dir().join("molt-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("creating the screenshots dir failed");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("taking a screenshot failed");
    std::fs::write(screenshots_dir().join(name), png).expect("saving a screenshot failed");
}

async fn css(c: &Client, selector: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(selector))
        .await
    {
        Ok(el) => el,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string());
            let text = text_of(c, "body").await.unwrap_or_default();
            panic!("no element `{selector}` on {url:?} ({e}); the page says:\n{text}")
        }
    }
}

async fn fill(c: &Client, selector: &str, text: &str) {
    let el = css(c, selector).await;
    el.clear().await.expect("clearing a field failed");
    el.send_keys(text)
        .await
        .expect("typing into a field failed");
}

/// Clicks the element matching `selector`. A live region may be swapped
/// between finding the element and clicking it: then it is found again.
async fn click(c: &Client, selector: &str) {
    for _ in 0..5 {
        match css(c, selector).await.click().await {
            Ok(()) => return,
            Err(e) if e.is_stale_element_reference() => continue,
            Err(e) => panic!("clicking `{selector}` failed: {e}"),
        }
    }
    panic!("clicking `{selector}` failed: the element was replaced five times");
}

/// The text of the element matching `selector`, waiting for it to appear
/// (after a form post the new page may still be loading).
async fn text_wait(c: &Client, selector: &str) -> String {
    css(c, selector)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading the text of `{selector}` failed: {e}"))
}

/// The text of the first element matching `selector`, if there is one.
async fn text_of(c: &Client, selector: &str) -> Option<String> {
    let el = c.find(Locator::Css(selector)).await.ok()?;
    el.text().await.ok()
}

/// Waits until the newest deploy in the history has `status`; returns the
/// row's text.
async fn wait_newest(c: &Client, status: &str) -> String {
    let sel = "[data-region=history] tbody tr:first-child";
    let found = wait_for(DEPLOY_WAIT, || async {
        let el = c.find(Locator::Css(sel)).await.ok()?;
        let s = el.attr("data-status").await.ok()??;
        if s == status {
            el.text().await.ok()
        } else {
            None
        }
    })
    .await;
    match found {
        Some(t) => t,
        None => panic!(
            "the newest deploy did not reach `{status}` within {DEPLOY_WAIT:?}; the row: {:?}",
            text_of(c, sel).await
        ),
    }
}

/// Clicks a button that sends a form and waits until the page it leads to
/// has loaded: a click returns before the navigation it starts, so without
/// this the next step could act on the page being left.
async fn submit(c: &Client, selector: &str) {
    c.execute("window.__moltLeaving = true; return true;", vec![])
        .await
        .expect("running a script in the page failed");
    click(c, selector).await;
    let arrived = wait_until(Duration::from_secs(10), || async {
        c.execute(
            "return window.__moltLeaving !== true && document.readyState === 'complete';",
            vec![],
        )
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
    })
    .await;
    assert!(
        arrived,
        "sending the form of `{selector}` led to no new page"
    );
}

/// A value set in the page's JavaScript; gone if the page was reloaded.
async fn mark_page(c: &Client) {
    c.execute("window.__moltMark = 'still here'; return true;", vec![])
        .await
        .expect("running a script in the page failed");
}

async fn page_was_not_reloaded(c: &Client) -> bool {
    c.execute("return window.__moltMark === 'still here';", vec![])
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_drives_every_deploy_action_in_a_real_browser() {
    let registry = Registry::start(true);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let v2 = push(&registry, "testapp", "v2", "v2");
    let crash = push(&registry, "testapp", "crash", "crash");
    let server = MoltServer::start(None);
    let base = server.api_url();
    let driver = Chromedriver::start();
    let c = driver.browser().await;

    // Logging in: a page that needs a session sends us to the login form.
    c.goto(&format!("{base}/registries")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().starts_with("/login"));
    fill(&c, "#login-token", "not-the-token").await;
    click(&c, "button[type=submit]").await;
    let err = text_wait(&c, "#login-token-error").await;
    assert!(err.contains("not this server's admin token"), "{err}");
    fill(&c, "#login-token", server.token()).await;
    submit(&c, "button[type=submit]").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/registries");

    // A registry credential: a refused one is explained next to the
    // password; an accepted one is listed without its secret.
    fill(&c, "#add-host", &registry.host()).await;
    fill(&c, "#add-username", registry.username()).await;
    fill(&c, "#add-password", "not-the-password").await;
    click(&c, "#add button[type=submit]").await;
    let err = text_wait(&c, "#add-password-error").await;
    assert!(err.contains("refused"), "{err}");
    fill(&c, "#add-password", registry.password()).await;
    click(&c, "#add button[type=submit]").await;
    css(&c, &format!("tr[data-host=\"{}\"]", registry.host())).await;
    assert!(!c.source().await.unwrap().contains(registry.password()));

    // Creating an App from the form: a bad name is refused next to the
    // name field, with what was typed kept.
    c.goto(&format!("{base}/")).await.unwrap();
    fill(&c, "#create-name", "Web_1").await;
    fill(&c, "#create-image", &v1).await;
    fill(&c, "#create-port", "8080").await;
    fill(&c, "#create-health_path", "/healthz").await;
    click(&c, "#create button[type=submit]").await;
    let err = text_wait(&c, "#create-name-error").await;
    assert!(!err.is_empty(), "no error next to the name field");
    assert_eq!(
        css(&c, "#create-image")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(v1.as_str())
    );
    fill(&c, "#create-name", "web").await;
    submit(&c, "#create button[type=submit]").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/apps/web");
    mark_page(&c).await;
    let row = wait_newest(&c, "succeeded").await;
    assert!(row.contains("create"), "{row}");
    assert!(page_was_not_reloaded(&c).await, "the page reloaded");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );

    // Deploying a new image from the Deploy field: the entry goes to
    // succeeded without a reload.
    fill(&c, "#deploy-image", &v2).await;
    submit(&c, "#deploy button.primary").await;
    mark_page(&c).await;
    // The screenshot for the docs: mid-deploy, once past the pull if we
    // catch it there.
    c.set_window_size(1280, 1180).await.unwrap();
    wait_until(Duration::from_secs(10), || async {
        let s = c
            .find(Locator::Css("[data-region=progress] .badge"))
            .await
            .ok()
            .map(|el| async move { el.attr("data-status").await.ok().flatten() });
        match s {
            Some(f) => matches!(
                f.await.as_deref(),
                Some("starting" | "health_checking" | "swapping" | "draining" | "succeeded")
            ),
            None => false,
        }
    })
    .await;
    screenshot(&c, "app-deploying.png").await;
    c.set_window_size(1280, 900).await.unwrap();
    let row = wait_newest(&c, "succeeded").await;
    assert!(row.contains("deploy") && row.contains(":v2"), "{row}");
    assert!(page_was_not_reloaded(&c).await, "the page reloaded");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    // The Logs card follows the serving container's output.
    let logs = wait_for(Duration::from_secs(15), || async {
        let t = text_of(&c, "[data-region=logs] pre.logs").await?;
        t.contains("v2").then_some(t)
    })
    .await;
    assert!(logs.is_some(), "the Logs card shows no output of v2");
    c.execute(
        "document.getElementById('history').scrollIntoView(); return true;",
        vec![],
    )
    .await
    .unwrap();
    let png = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("molt-app-lower.png"), png);
    let status = text_of(&c, "[data-region=head] .badge")
        .await
        .unwrap_or_default();
    assert_eq!(status, "running");

    // A deploy started from the CLI shows up too.
    mark_page(&c).await;
    let out = molt(&server, &["redeploy", "web", "--detach"]);
    assert!(out.success(), "{out}");
    let found = wait_for(Duration::from_secs(20), || async {
        let t = text_of(&c, "[data-region=history] tbody tr:first-child").await?;
        t.contains("redeploy").then_some(())
    })
    .await;
    assert!(found.is_some(), "the CLI's redeploy did not appear");
    wait_newest(&c, "succeeded").await;
    assert!(page_was_not_reloaded(&c).await, "the page reloaded");

    // A failing image fails with its error; the old version serves the
    // whole time.
    fill(&c, "#deploy-image", &crash).await;
    submit(&c, "#deploy button.primary").await;
    mark_page(&c).await;
    let failed = wait_for(DEPLOY_WAIT, || async {
        assert_eq!(
            served(server.proxy_addr(), "web.localhost").await,
            "testapp v2"
        );
        let el = c
            .find(Locator::Css("[data-region=history] tbody tr:first-child"))
            .await
            .ok()?;
        let s = el.attr("data-status").await.ok()??;
        (s == "failed").then_some(())
    })
    .await;
    assert!(failed.is_some(), "the crashing deploy did not fail");
    let err = text_of(&c, "[data-region=history] tbody tr:first-child .error-text")
        .await
        .unwrap_or_default();
    assert!(
        err.contains("exit"),
        "the error says what went wrong: {err}"
    );
    let progress = text_of(&c, "[data-region=progress]")
        .await
        .unwrap_or_default();
    assert!(progress.contains("Failed"), "{progress}");
    assert!(page_was_not_reloaded(&c).await, "the page reloaded");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v2"
    );
    assert_eq!(
        text_of(&c, "[data-region=head] .badge")
            .await
            .unwrap_or_default(),
        "running"
    );

    // Rolling back from the history to the first deploy (v1).
    submit(
        &c,
        "[data-region=history] tr[data-status=succeeded]:not(.serving):last-child button",
    )
    .await;
    let row = wait_newest(&c, "succeeded").await;
    assert!(row.contains("rollback"), "{row}");
    assert_eq!(
        served(server.proxy_addr(), "web.localhost").await,
        "testapp v1"
    );

    // Scaling: a bad count is explained next to the field; a good one runs
    // a `scale` deploy that ends with two containers serving.
    fill(&c, "#scale-replicas", "0").await;
    click(&c, "#scale button[type=submit]").await;
    let err = text_wait(&c, "#scale-replicas-error").await;
    assert!(err.contains("between 1 and 100"), "{err}");
    fill(&c, "#scale-replicas", "2").await;
    submit(&c, "#scale button[type=submit]").await;
    let notice = text_wait(&c, ".notice").await;
    assert!(notice.contains("Scaling web to 2 replica(s)"), "{notice}");
    let row = wait_newest(&c, "succeeded").await;
    assert!(row.contains("scale"), "{row}");
    assert_eq!(server.containers(Some("web")).len(), 2);

    // A secret: set from the form, shown masked, its value never in the page.
    fill(&c, "#env-nk", "API_KEY").await;
    click(&c, "#env-ns").await;
    fill(&c, "#env-nv", "s3cr3t-value-42").await;
    click(&c, "#env button.primary").await;
    let row = css(&c, "tr[data-key=API_KEY]").await.text().await.unwrap();
    assert!(
        row.contains("••••") && row.to_lowercase().contains("secret"),
        "{row}"
    );
    assert!(!c.source().await.unwrap().contains("s3cr3t-value-42"));
    let out = molt(&server, &["env", "list", "web", "--json"]);
    assert!(!out.stdout.contains("s3cr3t-value-42"), "{out}");

    // A recreate deploy shows its two phases, live, and both end done.
    create_app(
        &server,
        "batch",
        &v1,
        &["--health-path", "/healthz", "--strategy", "recreate"],
    );
    c.goto(&format!("{base}/apps/batch")).await.unwrap();
    fill(&c, "#deploy-image", &v2).await;
    submit(&c, "#deploy button.primary").await;
    mark_page(&c).await;
    css(&c, "[data-region=progress] ol.phases").await;
    let row = wait_newest(&c, "succeeded").await;
    assert!(row.contains(":v2"), "{row}");
    let phases = text_of(&c, "[data-region=progress] ol.phases")
        .await
        .unwrap_or_default();
    assert!(
        phases.contains("Stopping the old deployment") && phases.contains("Deploying the new one"),
        "{phases}"
    );
    assert_eq!(
        c.find_all(Locator::Css("[data-region=progress] ol.phases li.done"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(page_was_not_reloaded(&c).await, "the page reloaded");
    assert_eq!(
        served(server.proxy_addr(), "batch.localhost").await,
        "testapp v2"
    );

    // The Apps list, for the docs; and a phone-width look at the App
    // (kept out of the repository).
    c.goto(&format!("{base}/")).await.unwrap();
    css(&c, "tr[data-app=web]").await;
    css(&c, "tr[data-app=batch]").await;
    screenshot(&c, "apps.png").await;
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/apps/web")).await.unwrap();
    let png = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("molt-dashboard-phone.png"), png);
    // Nothing sticks out sideways at phone width.
    let wide = c
        .execute(
            "const w = document.documentElement.clientWidth; \
             return [...document.querySelectorAll('body *')] \
               .filter(e => e.getBoundingClientRect().right > w + 1) \
               .slice(0, 5).map(e => e.tagName + '.' + e.className + ': ' + e.textContent.slice(0, 60));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        wide,
        serde_json::json!([]),
        "elements wider than a phone screen"
    );
    c.set_window_size(1280, 900).await.unwrap();

    // Delete: the button stays disabled until the name is typed; then the
    // App is gone and its route with it.
    c.goto(&format!("{base}/apps/web")).await.unwrap();
    let button = css(&c, "#delete button[type=submit]").await;
    assert!(
        !button.is_enabled().await.unwrap(),
        "delete enabled before confirming"
    );
    fill(&c, "#delete-confirm", "web").await;
    assert!(button.is_enabled().await.unwrap());
    button.click().await.unwrap();
    let notice = css(&c, ".notice").await.text().await.unwrap();
    assert!(notice.contains("Deleted web"), "{notice}");
    assert_eq!(c.current_url().await.unwrap().path(), "/");
    assert!(c.find(Locator::Css("tr[data-app=web]")).await.is_err());
    assert!(
        wait_until(Duration::from_secs(10), || async {
            served(server.proxy_addr(), "web.localhost")
                .await
                .starts_with("HTTP 404")
        })
        .await
    );

    // The docs need no session; each page links its Markdown.
    click(&c, "form.logout button").await;
    // Wait for the logout to land on the login page, or its navigation can
    // overtake the next one.
    css(&c, "main.login form[action=\"/login\"]").await;
    c.goto(&format!("{base}/docs/gpu-and-recreate-deploys"))
        .await
        .unwrap();
    let link = css(&c, "a[type=\"text/markdown\"]").await;
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/docs/gpu-and-recreate-deploys.md")
    );
    let png = c.screenshot().await.unwrap();
    let _ = std::fs::write(std::env::temp_dir().join("molt-docs-page.png"), png);

    c.close().await.unwrap();
}

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

/// The value of the form field matching `selector`.
async fn value_of(c: &Client, selector: &str) -> String {
    css(c, selector)
        .await
        .prop("value")
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Waits until the deploy page's badge says `status`.
async fn wait_deploy_page(c: &Client, status: &str) {
    let reached = wait_until(DEPLOY_WAIT, || async {
        let Ok(el) = c.find(Locator::Css("[data-region=deploy] .badge")).await else {
            return false;
        };
        el.attr("data-status").await.ok().flatten().as_deref() == Some(status)
    })
    .await;
    assert!(
        reached,
        "the deploy did not reach `{status}` within {DEPLOY_WAIT:?}; the page says:\n{}",
        text_of(c, "main").await.unwrap_or_default()
    );
}

/// "Edit config" in a real browser: the form holds the App's settings, a
/// field it cannot read is explained next to it with the input kept, the
/// review lists each change and what it will do, and applying leads to the
/// deploy's live progress and the new settings. A port the image does not
/// listen on fails and changes nothing; "Redeploy with changes" opens the
/// form with what that deploy tried and the port marked, and fixing the
/// port deploys the rest. A new image on another port is tried again the
/// same way, image and port together.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_edits_an_apps_settings_and_redeploys_a_failed_change() {
    let registry = Registry::start(false);
    let v1 = push(&registry, "testapp", "v1", "v1");
    let server = MoltServer::start(None);
    let base = server.api_url();
    let proxy = server.proxy_addr();
    create_app(&server, "web", &v1, &["--health-path", "/healthz"]);
    // Listens on 8080 whatever its port setting says.
    create_app(
        &server,
        "fixed",
        &v1,
        &["--health-path", "/healthz", "--env", "LISTEN_PORT=8080"],
    );
    let driver = Chromedriver::start();
    let c = driver.browser().await;

    // The App's page links to the form; the login comes back to it.
    c.goto(&format!("{base}/apps/web/settings")).await.unwrap();
    fill(&c, "#login-token", server.token()).await;
    submit(&c, "button[type=submit]").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/apps/web/settings");
    assert_eq!(value_of(&c, "#settings-port").await, "8080");
    assert_eq!(value_of(&c, "#settings-health_path").await, "/healthz");
    assert_eq!(value_of(&c, "#settings-replicas").await, "1");
    c.goto(&format!("{base}/apps/web")).await.unwrap();
    submit(&c, "#edit-config").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/apps/web/settings");

    // A port that is no port: explained next to the field, input kept.
    fill(&c, "#settings-port", "70000").await;
    fill(&c, "#settings-health_path", "/version").await;
    submit(&c, "button[value=review]").await;
    let err = text_wait(&c, "#settings-port-error").await;
    assert!(err.contains("1 to 65535"), "{err}");
    assert_eq!(value_of(&c, "#settings-port").await, "70000");
    assert_eq!(value_of(&c, "#settings-health_path").await, "/version");

    // The review: each change old → new, and new containers through the
    // swap; going back keeps what was typed.
    fill(&c, "#settings-port", "9090").await;
    submit(&c, "button[value=review]").await;
    let changes = text_wait(&c, "#review .changes").await;
    assert!(changes.contains("port 8080 → 9090"), "{changes}");
    assert!(
        changes.contains("health path /healthz → /version"),
        "{changes}"
    );
    let effect = css(&c, "#review-effect").await;
    assert_eq!(
        effect.attr("data-effect").await.unwrap().as_deref(),
        Some("containers")
    );
    let effect = effect.text().await.unwrap();
    assert!(
        effect.contains("config") && effect.contains("blue-green"),
        "{effect}"
    );
    screenshot(&c, "edit-config-review.png").await;
    submit(&c, "button[value=edit]").await;
    assert_eq!(value_of(&c, "#settings-port").await, "9090");
    submit(&c, "button[value=review]").await;
    // Nothing moved yet.
    assert_eq!(
        ok(molt(&server, &["apps", "show", "web", "--json"])).json()["port"],
        8080
    );

    // Applying: the deploy's page follows it live to success, and the App
    // serves with the new settings.
    submit(&c, "button[value=apply]").await;
    let path = c.current_url().await.unwrap().path().to_string();
    assert!(path.starts_with("/apps/web/deploys/"), "{path}");
    wait_deploy_page(&c, "succeeded").await;
    assert_eq!(served(proxy, "web.localhost").await, "testapp v1");
    c.goto(&format!("{base}/apps/web")).await.unwrap();
    let config = text_wait(&c, "[data-region=config]").await;
    assert!(
        config.contains("9090") && config.contains("/version"),
        "{config}"
    );
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(show["port"], 9090, "{show}");

    // A route-only change says so.
    c.goto(&format!("{base}/apps/web/settings")).await.unwrap();
    assert!(
        css(&c, "#settings-https_redirect")
            .await
            .prop("checked")
            .await
            .unwrap()
            .is_some_and(|v| v == "true"),
        "the redirect box starts checked"
    );
    fill(&c, "#settings-drain_timeout", "3").await;
    click(&c, "#settings-https_redirect").await;
    fill(&c, "#settings-hsts", "600").await;
    fill(&c, "#settings-max_body", "2m").await;
    submit(&c, "button[value=review]").await;
    assert_eq!(
        css(&c, "#review-effect")
            .await
            .attr("data-effect")
            .await
            .unwrap()
            .as_deref(),
        Some("route")
    );
    let changes = text_wait(&c, "#review .changes").await;
    for change in [
        "HTTPS redirect on → off",
        "HSTS off → 600 s",
        "max body default (100 MiB) → 2 MiB",
    ] {
        assert!(changes.contains(change), "{changes}");
    }
    // The unchecked box travels through the review.
    submit(&c, "button[value=apply]").await;
    let path = c.current_url().await.unwrap().path().to_string();
    assert!(path.starts_with("/apps/web/deploys/"), "{path}");
    wait_deploy_page(&c, "succeeded").await;
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(show["https_redirect"], false, "{show}");
    assert_eq!(show["hsts_max_age_secs"], 600, "{show}");
    assert_eq!(show["max_body_bytes"], 2 << 20, "{show}");
    assert_eq!(show["drain_timeout_secs"], 3, "{show}");

    // A port the image does not listen on fails; the old container serves
    // on and the App keeps its settings.
    c.goto(&format!("{base}/apps/fixed/settings"))
        .await
        .unwrap();
    fill(&c, "#settings-port", "9191").await;
    fill(&c, "#settings-health_path", "/version").await;
    fill(&c, "#settings-health_timeout", "3").await;
    submit(&c, "button[value=review]").await;
    submit(&c, "button[value=apply]").await;
    wait_deploy_page(&c, "failed").await;
    let err = text_wait(&c, "[data-region=deploy] .callout").await;
    assert!(err.contains("new port 9191"), "{err}");
    assert_eq!(served(proxy, "fixed.localhost").await, "testapp v1");
    let show = ok(molt(&server, &["apps", "show", "fixed", "--json"])).json();
    assert_eq!(show["port"], 8080, "{show}");

    // Redeploy with changes: the form holds what the deploy tried, with
    // the port marked and the port the container listens on named.
    submit(&c, "a.redeploy-changes").await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/apps/fixed/settings"
    );
    css(&c, "#settings-origin").await;
    assert_eq!(value_of(&c, "#settings-port").await, "9191");
    assert_eq!(value_of(&c, "#settings-health_path").await, "/version");
    assert_eq!(value_of(&c, "#settings-health_timeout").await, "3");
    let blame = text_wait(&c, "#settings-port-error").await;
    // (The engine's helpers may hold a port of their own in the container.)
    assert!(
        blame.contains("listens on port 8080") || blame.contains("listens on ports 8080"),
        "{blame}"
    );
    screenshot(&c, "redeploy-with-changes.png").await;
    fill(&c, "#settings-port", "8080").await;
    submit(&c, "button[value=review]").await;
    let changes = text_wait(&c, "#review .changes").await;
    assert!(
        changes.contains("health path /healthz → /version") && !changes.contains("port"),
        "{changes}"
    );
    submit(&c, "button[value=apply]").await;
    wait_deploy_page(&c, "succeeded").await;
    let show = ok(molt(&server, &["apps", "show", "fixed", "--json"])).json();
    assert_eq!(show["port"], 8080, "{show}");
    assert_eq!(show["health"]["path"], "/version", "{show}");
    assert_eq!(show["health"]["deploy_timeout_secs"], 3, "{show}");
    assert_eq!(served(proxy, "fixed.localhost").await, "testapp v1");

    // A new image that listens on another port fails; Redeploy with
    // changes holds that image, marks the port, and deploys the image
    // with the port it listens on.
    let other = push(&registry, "testapp", "otherport", "otherport");
    // (A short health timeout: the wrong port fails when it runs out.)
    ok(molt(
        &server,
        &["apps", "update", "web", "--health-timeout", "3"],
    ));
    let out = molt(&server, &["deploy", "web", &other]);
    assert_ne!(out.status, 0, "{out}");
    let failed = newest_deploy(&server, "web");
    assert_eq!(failed["status"], "failed", "{failed}");
    let id = failed["id"].as_str().unwrap();
    c.goto(&format!("{base}/apps/web/deploys/{id}"))
        .await
        .unwrap();
    submit(&c, "a.redeploy-changes").await;
    assert_eq!(value_of(&c, "#settings-image").await, other);
    assert_eq!(value_of(&c, "#settings-port").await, "9090");
    let blame = text_wait(&c, "#settings-port-error").await;
    assert!(blame.contains("9000"), "{blame}");
    fill(&c, "#settings-port", "9000").await;
    submit(&c, "button[value=review]").await;
    let review = text_wait(&c, "#review").await;
    assert!(
        review.contains(&format!("Deploys {other}")) && review.contains("port 9090 → 9000"),
        "{review}"
    );
    submit(&c, "button[value=apply]").await;
    wait_deploy_page(&c, "succeeded").await;
    assert_eq!(served(proxy, "web.localhost").await, "testapp otherport");
    let show = ok(molt(&server, &["apps", "show", "web", "--json"])).json();
    assert_eq!(show["port"], 9000, "{show}");

    c.close().await.unwrap();
}
