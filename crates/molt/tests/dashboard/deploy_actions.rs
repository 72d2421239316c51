//! The deploy actions in a real browser: log in, save a registry
//! credential, create an App from the form, deploy from the Deploy field
//! and watch it succeed without a reload, see a failing image fail while
//! the old version keeps serving, roll back from the history, set a secret
//! and see it masked, delete with confirmation, follow the two phases of a
//! recreate deploy, and open the docs.

use crate::browser::*;
use crate::support::*;
use fantoccini::Locator;
use std::time::Duration;

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
