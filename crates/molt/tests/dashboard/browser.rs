//! Chromium under chromedriver for the dashboard's browser tests, and the
//! helpers they share to act on a page (find, fill, click, send a form) and
//! to wait on it (a deploy's row, a page that was not reloaded), each with
//! a bound and a failure that shows what the page said.

use crate::support::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Bound for anything a deploy does (pull, start, health check, swap).
pub const DEPLOY_WAIT: Duration = Duration::from_secs(120);

/// chromedriver on a free port of 127.0.0.1, killed on drop.
pub struct Chromedriver {
    child: Child,
    port: u16,
    /// The browser's fresh profile directory.
    profile: tempfile::TempDir,
}

impl Chromedriver {
    pub fn start() -> Chromedriver {
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

    pub async fn browser(&self) -> Client {
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

pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("taking a screenshot failed");
    std::fs::write(screenshots_dir().join(name), png).expect("saving a screenshot failed");
}

pub async fn css(c: &Client, selector: &str) -> fantoccini::elements::Element {
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

pub async fn fill(c: &Client, selector: &str, text: &str) {
    let el = css(c, selector).await;
    el.clear().await.expect("clearing a field failed");
    el.send_keys(text)
        .await
        .expect("typing into a field failed");
}

/// Clicks the element matching `selector`. A live region may be swapped
/// between finding the element and clicking it: then it is found again.
pub async fn click(c: &Client, selector: &str) {
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
pub async fn text_wait(c: &Client, selector: &str) -> String {
    css(c, selector)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading the text of `{selector}` failed: {e}"))
}

/// The text of the first element matching `selector`, if there is one.
pub async fn text_of(c: &Client, selector: &str) -> Option<String> {
    let el = c.find(Locator::Css(selector)).await.ok()?;
    el.text().await.ok()
}

/// Waits until the newest deploy in the history has `status`; returns the
/// row's text.
pub async fn wait_newest(c: &Client, status: &str) -> String {
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
pub async fn submit(c: &Client, selector: &str) {
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
pub async fn mark_page(c: &Client) {
    c.execute("window.__moltMark = 'still here'; return true;", vec![])
        .await
        .expect("running a script in the page failed");
}

pub async fn page_was_not_reloaded(c: &Client) -> bool {
    c.execute("return window.__moltMark === 'still here';", vec![])
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}
