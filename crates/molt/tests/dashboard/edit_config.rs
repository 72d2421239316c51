//! "Edit config" in a real browser: the settings form, its review, the
//! deploy it starts, and "Redeploy with changes" after a failed change.

use crate::browser::*;
use crate::support::*;
use fantoccini::{Client, Locator};

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
