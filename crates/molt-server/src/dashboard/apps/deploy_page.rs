//! A deploy's page and its live refresh.

use super::*;
use crate::dashboard::live::Live;
use crate::feed::DeployChange;
use axum::http::HeaderMap;

pub(super) fn deploy_region(s: &DashState, csrf: &str, app: &AppRow, dep: &DeployRow) -> Markup {
    let events = s.api.deployer.store.events(&dep.id, 0).unwrap_or_default();
    // Read after the events, so the status shown is never behind them.
    let fresh = s.api.deployer.store.get_deploy(&dep.id).ok().flatten();
    let dep = fresh.as_ref().unwrap_or(dep);
    let base = app_url(&app.name);
    let serving = app.current_deploy.as_deref() == Some(dep.id.as_str());
    html! {
        div.status-line {
            (layout::deploy_badge(dep.status))
            @if serving { span.tag { "serving" } }
        }
        dl.facts {
            div { dt { "Kind" } dd { (dep.kind.as_str()) } }
            div { dt { "Image" } dd { code.image { (dep.image) } } }
            div { dt { "Digest" } dd { @match &dep.digest { Some(d) => code.digest { (d) }, None => span.muted { "—" } } } }
            div { dt { "Previous digest" } dd { @match &dep.previous_digest { Some(d) => code.digest { (d) }, None => span.muted { "—" } } } }
            div { dt { "Started" } dd { (layout::ago(&dep.created_at)) span.muted.small { " (" (dep.created_at) ")" } } }
            div { dt { "Duration" } dd { (layout::duration(&dep.created_at, dep.finished_at.as_deref())) } }
            div { dt { "Started by" } dd { (dep.triggered_by) } }
        }
        (release_changes(s, dep))
        (recreate_phases(dep.status, dep.phase))
        (steps(dep, &events))
        @if let Some(err) = &dep.error {
            div class={ "callout " (if dep.status == DeployStatus::Failed { "bad" } else { "muted" }) } {
                strong { (if dep.status == DeployStatus::Failed { "Failed: " } else { "Note: " }) }
                span.error-text { (err) }
                @if let Some(f) = &dep.failure {
                    " " span.muted.small { "(" code { (f.kind.as_str()) } ")" }
                }
                (super::edit::redeploy_with_changes(&app.name, dep))
            }
        }
        h2 { "Timeline" }
        (timeline(&events))
        @if !dep.status.is_terminal() {
            form method="post" action={ (base) "/cancel" } data-confirm="Cancel this deploy? The new container is removed and the current version keeps serving." {
                (layout::csrf_field(csrf))
                button.btn.danger-outline type="submit" { "Cancel deploy" }
            }
        }
        @if dep.status == DeployStatus::Succeeded && !serving && dep.digest.is_some() {
            form.stack.rollback method="post" action={ (base) "/rollback" } {
                (layout::csrf_field(csrf))
                input type="hidden" name="deploy_id" value=(dep.id);
                div.check {
                    input #rollback-config type="checkbox" name="with_config" value="on";
                    label for="rollback-config" { "Also restore this deploy's settings and environment" }
                }
                button.btn.primary type="submit" { "Roll back to this deploy" }
            }
        }
    }
}

/// What the deploy's release changed against the deploy before it (the
/// phrases `molt deploys show` prints); secrets by version only.
fn release_changes(s: &DashState, dep: &DeployRow) -> Markup {
    let Ok(Some(changes)) = crate::ops::views::release_changes(&s.api.deployer.store, dep) else {
        return html! {};
    };
    let lines = changes.lines();
    html! {
        section.release-changes {
            h2 { "Changes against deploy " code { (crate::deploy::short(&changes.against)) } }
            @if lines.is_empty() {
                p.muted { "None: the same release." }
            } @else {
                ul.changes { @for line in &lines { li { (line) } } }
            }
        }
    }
}

pub(super) fn find_deploy(
    s: &DashState,
    name: &str,
    id: &str,
) -> anyhow::Result<Option<(AppRow, DeployRow)>> {
    let store = &s.api.deployer.store;
    let Some(app) = store.get_app(name)? else {
        return Ok(None);
    };
    Ok(store
        .get_deploy(id)?
        .filter(|d| d.app == app.name)
        .map(|d| (app, d)))
}

pub async fn deploy_page(
    State(s): State<DashState>,
    Path((name, id)): Path<(String, String)>,
    auth: Authed,
) -> Response {
    let (app, dep) = match find_deploy(&s, &name, &id) {
        Ok(Some(x)) => x,
        Ok(None) => {
            return layout::error_page(
                StatusCode::NOT_FOUND,
                "No such deploy",
                "This App has no deploy with that id; it may have been deleted.",
            )
        }
        Err(e) => return internal_page(e),
    };
    let flash = s.sessions.take_flash(&auth.id);
    let base = app_url(&app.name);
    let title = format!("Deploy {} of {}", crate::deploy::short(&dep.id), app.name);
    let main = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/" { "Apps" } " / " a href=(base) { (app.name) } " / "
            span aria-current="page" { "deploy " (crate::deploy::short(&dep.id)) }
        }
        div.page-head { h1 { "Deploy " code { (crate::deploy::short(&dep.id)) } } }
        section.card {
            (live::region("deploy", deploy_region(&s, &auth.csrf, &app, &dep)))
        }
    };
    Shell {
        title: &title,
        nav: Nav::Apps,
        csrf: Some(&auth.csrf),
        notice: flash.notice.as_deref(),
        live: Some(format!("{base}/deploys/{}/live", dep.id)),
    }
    .render(main)
    .into_response()
}

pub async fn deploy_live(
    State(s): State<DashState>,
    Path((name, id)): Path<(String, String)>,
    auth: Authed,
    headers: HeaderMap,
) -> Response {
    let (s, name, id, csrf) = (&s, &name, &id, &auth.csrf);
    let render = move || async move {
        match find_deploy(s, name, id) {
            Ok(Some((app, dep))) => Live::Regions {
                active: !dep.status.is_terminal(),
                regions: vec![("deploy", deploy_region(s, csrf, &app, &dep))],
            },
            Ok(None) => Live::Answer(live::gone("/")),
            Err(e) => Live::Answer(internal_page(e)),
        }
    };
    let store = &s.api.deployer.store;
    let wanted = |c: &DeployChange| &c.deploy_id == id;
    live::held(store, &s.api.stopping, &headers, wanted, render).await
}
