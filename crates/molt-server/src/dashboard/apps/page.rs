//! An App's page: its configuration, progress, history, environment and
//! logs, and its live refresh.

use super::*;
use crate::dashboard::live::Live;
use crate::feed::DeployChange;
use axum::http::HeaderMap;

/// Everything an App's page shows.
pub(super) struct AppData {
    pub(super) app: AppRow,
    pub(super) deploys: Vec<DeployRow>,
    pub(super) serving: Option<DeployRow>,
    pub(super) env: Vec<EnvEntry>,
    pub(super) running: Option<String>,
    /// The check in force, in words (see `Deployer::check_in_force`).
    pub(super) check: String,
    /// HTTPS per domain (see `certs::https_views`).
    pub(super) https: Vec<molt_core::api::DomainHttpsView>,
}

pub(super) async fn load_app(s: &DashState, name: &str) -> anyhow::Result<Option<AppData>> {
    let store = &s.api.deployer.store;
    let Some(app) = store.get_app(name)? else {
        return Ok(None);
    };
    let deploys = store.list_deploys(name)?;
    let serving = app
        .current_deploy
        .as_ref()
        .and_then(|id| deploys.iter().find(|d| &d.id == id).cloned());
    let env = store.env(name)?;
    let running = s.api.deployer.in_progress(name).filter(|id| id != "delete");
    let container = s.api.deployer.serving_rows(&app)?.into_iter().next();
    let check = s
        .api
        .deployer
        .check_in_force(&app, container.as_ref().map(|r| r.container_id.as_str()))
        .await;
    let https = crate::certs::https_views(store, &app.hosts())?;
    Ok(Some(AppData {
        app,
        deploys,
        serving,
        env,
        running,
        check,
        https,
    }))
}

/// How many lines of output the Logs card shows.
pub(super) const LOG_LINES: usize = 80;

/// The last lines of output of the App's serving containers (all of them,
/// while nothing serves yet), for the Logs card. Asked of the engine on
/// every refresh, so it follows the containers as they print.
pub(super) async fn recent_logs(s: &DashState, app: &AppRow) -> String {
    let containers = s
        .api
        .deployer
        .runtime
        .list(Some(&app.name))
        .await
        .unwrap_or_default();
    let serving: Vec<_> = containers
        .iter()
        .filter(|c| app.current_deploy.as_deref() == Some(c.deploy.as_str()))
        .collect();
    let chosen = if serving.is_empty() {
        containers.iter().collect()
    } else {
        serving
    };
    let mut out = String::new();
    for c in chosen {
        let text = s.api.deployer.runtime.logs_tail(&c.id, LOG_LINES).await;
        for line in text.lines() {
            out.push_str(&format!("[{}] {line}\n", crate::deploy::short(&c.deploy)));
        }
    }
    out
}

pub(super) fn logs_region(name: &str, logs: &str) -> Markup {
    html! {
        @if logs.trim().is_empty() {
            p.muted { "No output yet." }
        } @else {
            div.logs-scroll tabindex="0" aria-label="Recent output" {
                pre.logs { (logs) }
            }
        }
        p.small.muted { "The last " (LOG_LINES) " lines of each serving container, refreshed live. All of it: " code { "molt logs " (name) " --follow" } }
    }
}

pub(super) fn head_region(d: &AppData) -> Markup {
    html! {
        div.status-line {
            (layout::app_badge(d.app.status))
            @if let Some(serving) = &d.serving {
                span.muted { "serving " }
                code.image { (unpinned(&serving.image)) }
                (layout::digest(serving.digest.as_deref()))
            } @else {
                span.muted { "nothing serving yet" }
            }
        }
    }
}

pub(super) fn config_region(d: &AppData) -> Markup {
    let a = &d.app;
    html! {
        dl.facts {
            div { dt { "Serving" } dd {
                @match &d.serving {
                    Some(s) => { code.image { (unpinned(&s.image)) } br; (layout::digest(s.digest.as_deref())) },
                    None => span.muted { "nothing yet" },
                }
            } }
            div { dt { "Follows" } dd { code.image title="The reference Redeploy pulls again" { (a.image) } } }
            div { dt { "Domains" } dd { @for h in a.hosts() { code { (h) } " " } } }
            @if !d.https.is_empty() {
                div { dt { "HTTPS" } dd {
                    @for h in &d.https {
                        div.https-domain {
                            code { (h.domain) } " " (h.state)
                            @if let (Some(source), Some(until)) = (&h.source, &h.not_after) {
                                span.muted { " (" (source) ", until " (until) ")" }
                            }
                            @if let Some(problem) = &h.problem {
                                p.small.error role="status" { "Last order failed: " (problem) }
                            }
                        }
                    }
                } }
            }
            div { dt { "Port" } dd { (a.port) } }
            div { dt { "Health check" } dd {
                (d.check)
                span.muted { ", up to " (a.health.deploy_timeout_secs) " s" }
            } }
            div { dt { "Replicas" } dd { (a.replicas) } }
            div { dt { "Strategy" } dd { (a.strategy) } }
            div { dt { "Resources" } dd {
                @match resources(a) {
                    Some(r) => (r),
                    None => span.muted { "default limits" },
                }
            } }
            div { dt { "Drain timeout" } dd { (a.drain_timeout_secs) " s" } }
        }
    }
}

/// Memory, CPU and GPU limits in words, if any are set.
pub(super) fn resources(a: &AppRow) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(m) = a.memory_bytes {
        parts.push(format!("{} MiB memory", m / (1024 * 1024)));
    }
    if let Some(c) = a.cpus {
        parts.push(format!("{c} CPUs"));
    }
    if a.gpus > 0 {
        parts.push(format!("{} GPUs", a.gpus));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The steps of a deploy in order, for the progress bar.
pub(super) const STEPS: [(DeployStatus, &str); 6] = [
    (DeployStatus::Pulling, "Pull"),
    (DeployStatus::Starting, "Start"),
    (DeployStatus::HealthChecking, "Health check"),
    (DeployStatus::Swapping, "Swap"),
    (DeployStatus::Draining, "Drain"),
    (DeployStatus::Succeeded, "Done"),
];

pub(super) fn steps(d: &DeployRow, events: &[crate::store::EventRow]) -> Markup {
    let reached: Vec<DeployStatus> = events.iter().map(|e| e.status).collect();
    let rank = |s: DeployStatus| STEPS.iter().position(|(x, _)| *x == s);
    // The furthest step the deploy got to.
    let furthest = reached
        .iter()
        .chain(std::iter::once(&d.status))
        .filter_map(|s| rank(*s))
        .max();
    html! {
        ol.steps aria-label="Progress" {
            @for (i, (status, label)) in STEPS.iter().enumerate() {
                @let state = match (d.status, furthest) {
                    (DeployStatus::Succeeded, _) => if reached.contains(status) || *status == DeployStatus::Succeeded { "done" } else { "skipped" },
                    (DeployStatus::Failed | DeployStatus::Canceled, Some(f)) if i == f => "failed",
                    (_, Some(f)) if i < f => if reached.contains(status) { "done" } else { "skipped" },
                    (s, Some(f)) if i == f && !s.is_terminal() => "current",
                    _ => "todo",
                };
                li class=(state) aria-current=[(state == "current").then_some("step")] {
                    span.step-mark aria-hidden="true" {}
                    span.step-label { (label) }
                    span.sr-only { " (" (state) ")" }
                }
            }
        }
    }
}

/// The two phases of a recreate deploy (stopping the old deployment, then
/// deploying the new one), from the phase the deploy recorded.
pub(super) fn recreate_phases(status: DeployStatus, phase: Option<u32>) -> Markup {
    let Some(current) = phase else {
        return html! {};
    };
    let state = |n: u32| match status {
        DeployStatus::Succeeded => "done",
        _ if n < current => "done",
        DeployStatus::Failed | DeployStatus::Canceled if n == current => "failed",
        _ if n == current => "current",
        _ => "todo",
    };
    html! {
        ol.phases aria-label="Recreate deploy phases" {
            li class=(state(1)) { span.phase-n { "1" } "Stopping the old deployment" span.sr-only { " (" (state(1)) ")" } }
            li class=(state(2)) { span.phase-n { "2" } "Deploying the new one" span.sr-only { " (" (state(2)) ")" } }
        }
    }
}

pub(super) fn timeline(events: &[crate::store::EventRow]) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "No events yet." }
        } @else {
            ol.timeline {
                @for e in events {
                    li {
                        time datetime=(e.at) title=(e.at) { (layout::clock(&e.at)) }
                        span class={ "tl-status " (e.status.as_str()) } { (e.status.as_str().replace('_', " ")) }
                        span.tl-msg { (e.message) }
                    }
                }
            }
        }
    }
}

pub(super) fn progress_region(s: &DashState, csrf: &str, d: &AppData) -> Markup {
    // The running deploy (its row may lag its claim by a moment), else the
    // newest.
    let shown = d
        .running
        .as_ref()
        .and_then(|id| d.deploys.iter().find(|x| &x.id == id))
        .or(d.deploys.first());
    let Some(dep) = shown else {
        return html! { p.muted { "No deploys yet." } };
    };
    let events = s.api.deployer.store.events(&dep.id, 0).unwrap_or_default();
    // Read after the events, so the status shown is never behind them.
    let fresh = s.api.deployer.store.get_deploy(&dep.id).ok().flatten();
    let dep = fresh.as_ref().unwrap_or(dep);
    let url = format!("{}/deploys/{}", app_url(&d.app.name), dep.id);
    html! {
        div.deploy-head {
            div {
                span.kind { (dep.kind.as_str()) } " "
                a href=(url) { code { (crate::deploy::short(&dep.id)) } } " "
                (layout::deploy_badge(dep.status))
                span.muted.small { " · " (layout::duration(&dep.created_at, dep.finished_at.as_deref())) " · by " (dep.triggered_by) }
            }
            @if !dep.status.is_terminal() {
                form method="post" action={ (app_url(&d.app.name)) "/cancel" } data-confirm="Cancel this deploy? The new container is removed and the current version keeps serving." {
                    (layout::csrf_field(csrf))
                    button.btn.small.danger-outline type="submit" { "Cancel deploy" }
                }
            }
        }
        div.small { code.image { (dep.image) } }
        (recreate_phases(dep.status, dep.phase))
        (steps(dep, &events))
        @if let Some(err) = &dep.error {
            div class={ "callout " (if dep.status == DeployStatus::Failed { "bad" } else { "muted" }) } role="note" {
                strong { (if dep.status == DeployStatus::Failed { "Failed: " } else { "Note: " }) }
                span.error-text { (err) }
                @if let Some(f) = &dep.failure {
                    " " span.muted.small { "(" code { (f.kind.as_str()) } ")" }
                }
                @if dep.status == DeployStatus::Failed && d.serving.is_some() {
                    p.small { "The previous version kept serving. " a href="/docs/debugging-failed-deploys" { "Debugging a failed deploy" } }
                }
                (super::edit::redeploy_with_changes(&d.app.name, dep))
            }
        }
        (timeline(&events))
    }
}

pub(super) fn history_region(csrf: &str, d: &AppData) -> Markup {
    let serving_id = d.app.current_deploy.as_deref();
    let base = app_url(&d.app.name);
    html! {
        @if d.deploys.is_empty() {
            p.muted { "No deploys yet." }
        } @else {
            table.list.history {
                caption.sr-only { "Deploy history, newest first" }
                thead { tr {
                    th scope="col" { "Deploy" }
                    th scope="col" { "Kind" }
                    th scope="col" { "Image" }
                    th scope="col" { "Digest" }
                    th scope="col" { "Status" }
                    th scope="col" { "Started" }
                    th scope="col" { "Duration" }
                    th scope="col" { span.sr-only { "Actions" } }
                } }
                tbody {
                    @for dep in d.deploys.iter().take(HISTORY_LIMIT) {
                        @let serving = Some(dep.id.as_str()) == serving_id;
                        tr data-deploy=(dep.id) data-status=(dep.status.as_str()) .serving[serving] {
                            td data-label="Deploy" {
                                a href={ (base) "/deploys/" (dep.id) } title="Timeline" { code { (crate::deploy::short(&dep.id)) } }
                                @if serving { " " span.tag { "serving" } }
                            }
                            td data-label="Kind" { (dep.kind.as_str()) }
                            td data-label="Image" { code.image { (dep.image) } }
                            td data-label="Digest" { (layout::digest(dep.digest.as_deref())) }
                            td data-label="Status" {
                                (layout::deploy_badge(dep.status))
                                @if let Some(e) = &dep.error {
                                    div.small.error-text.clamp title=(e) { (e) }
                                }
                            }
                            td data-label="Started" { (layout::ago(&dep.created_at)) div.small.muted { "by " (dep.triggered_by) } }
                            td data-label="Duration" { (layout::duration(&dep.created_at, dep.finished_at.as_deref())) }
                            td.row-actions {
                                @if dep.status == DeployStatus::Succeeded && !serving && dep.digest.is_some() {
                                    form method="post" action={ (base) "/rollback" } {
                                        (layout::csrf_field(csrf))
                                        input type="hidden" name="deploy_id" value=(dep.id);
                                        button.btn.small type="submit" aria-label={ "Roll back to deploy " (crate::deploy::short(&dep.id)) } { "Roll back" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if d.deploys.len() > HISTORY_LIMIT {
                p.small.muted { "Showing the newest " (HISTORY_LIMIT) " of " (d.deploys.len()) " deploys; " code { "molt deploys " (d.app.name) } " lists them all." }
            }
        }
    }
}

pub(super) fn env_form(csrf: &str, d: &AppData, st: &FormState) -> Markup {
    let action = format!("{}/env", app_url(&d.app.name));
    html! {
        form.stack method="post" action=(action) {
            (layout::csrf_field(csrf))
            (layout::form_error(st))
            @if d.env.is_empty() {
                p.muted { "No variables yet. " code { "PORT" } " is always set to the App's port." }
            } @else {
                table.list.env {
                    caption.sr-only { "Environment variables" }
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Value" }
                        th scope="col" { "Remove" }
                    } }
                    tbody {
                        @for (i, e) in d.env.iter().enumerate() {
                            @let vid = format!("env-v{i}");
                            @let rid = format!("env-r{i}");
                            tr data-key=(e.key) {
                                td data-label="Name" {
                                    input type="hidden" name={ "k" (i) } value=(e.key);
                                    label for=(vid) { code { (e.key) } }
                                    @if e.secret { " " span.tag.secret { "secret" } }
                                }
                                td data-label="Value" {
                                    @if e.secret {
                                        span.masked aria-label="secret value hidden" { "••••" }
                                        input id=(vid) name={ "v" (i) } type="password" value="" autocomplete="new-password"
                                            placeholder="Type to replace" aria-describedby="env-secret-hint";
                                    } @else {
                                        input id=(vid) name={ "v" (i) } type="text" spellcheck="false" autocapitalize="off"
                                            value=(st.value(&format!("v:{}", e.key)).or(e.value.as_deref()).unwrap_or_default());
                                    }
                                }
                                td data-label="Remove" {
                                    input id=(rid) type="checkbox" name={ "r" (i) } value="on";
                                    label.sr-only for=(rid) { "Remove " (e.key) }
                                }
                            }
                        }
                    }
                }
                p.hint #env-secret-hint { "Secret values are encrypted at rest and never shown again; leave the field empty to keep one." }
            }
            fieldset.new-var {
                legend { "Add a variable" }
                div.grid3 {
                    (Field::new("env", st, "nk", "Name").placeholder("DATABASE_URL").render())
                    (Field::new("env", st, "nv", "Value").kind(if st.value("ns").is_some() { "password" } else { "text" }).autocomplete("off").render())
                    div.field.check-field {
                        input #env-ns type="checkbox" name="ns" value="on" checked[st.value("ns").is_some()];
                        label for="env-ns" { "Secret" }
                    }
                }
            }
            div.actions {
                div.check {
                    input #env-apply type="checkbox" name="apply" value="on";
                    label for="env-apply" { "Apply now" span.muted { " — redeploy the serving version with these values (otherwise they apply on the next deploy)" } }
                }
                button.btn.primary type="submit" { "Save environment" }
            }
        }
    }
}

pub async fn app_page(
    State(s): State<DashState>,
    Path(name): Path<String>,
    auth: Authed,
) -> Response {
    let d = match load_app(&s, &name).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return layout::error_page(
                StatusCode::NOT_FOUND,
                "No such App",
                &format!(
                    "There is no App named `{}`. It may have been deleted.",
                    name.chars().take(80).collect::<String>()
                ),
            )
        }
        Err(e) => return internal_page(e),
    };
    let logs = recent_logs(&s, &d.app).await;
    let flash = s.sessions.take_flash(&auth.id);
    let csrf = auth.csrf.as_str();
    let base = app_url(&d.app.name);
    let deploy_st = flash.form_state("deploy");
    let env_st = flash.form_state("env");
    let template_st = flash.form_state("template");
    let scale_st = flash.form_state("scale");
    let replicas_now = d.app.replicas.to_string();
    let delete_st = flash.form_state("delete");
    let history_st = flash.form_state("history");
    let progress_st = flash.form_state("progress");
    let main = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/" { "Apps" } " / " span aria-current="page" { (d.app.name) } }
        div.page-head {
            div {
                h1 { (d.app.name) }
                (live::region("head", head_region(&d)))
            }
        }
        div.layout {
            div.col-main {
                section.card #deploy aria-labelledby="deploy-title" {
                    h2 #deploy-title { "Deploy" }
                    (layout::form_error(&deploy_st))
                    form.deploy-form method="post" action={ (base) "/deploy" } data-busy="Starting…" {
                        (layout::csrf_field(csrf))
                        (Field::new("deploy", &deploy_st, "image", "New image").required()
                            .placeholder(&d.app.image)
                            .hint(html! { "The new container starts beside the old one and takes the traffic once healthy." })
                            .render())
                        button.btn.primary type="submit" { "Deploy" }
                    }
                    (super::releases::build_instructions(&d.app.name))
                    div.secondary-actions {
                        form method="post" action={ (base) "/redeploy" } {
                            (layout::csrf_field(csrf))
                            button.btn type="submit" title="Pull the same reference again (a new build pushed to the same tag) and swap to it" { "Redeploy current image" }
                        }
                        form.restart method="post" action={ (base) "/restart" } {
                            (layout::csrf_field(csrf))
                            button.btn type="submit" title="Start a fresh container of the serving version; no pull" { "Restart" }
                            div.check.small {
                                input #restart-hard type="checkbox" name="hard" value="on";
                                label for="restart-hard" { "in place (brief downtime)" }
                            }
                        }
                    }
                }
                section.card #progress aria-labelledby="progress-title" {
                    h2 #progress-title { "Latest deploy" }
                    (layout::form_error(&progress_st))
                    div aria-live="polite" {
                        (live::region("progress", progress_region(&s, csrf, &d)))
                    }
                }
            }
            aside.col-side {
                section.card aria-labelledby="config-title" {
                    h2 #config-title { "Configuration" }
                    (live::region("config", config_region(&d)))
                    a.btn #edit-config href={ (base) "/settings" } { "Edit config" }
                }
                section.card #scale aria-labelledby="scale-title" {
                    h2 #scale-title { "Replicas" }
                    form.stack method="post" action={ (base) "/scale" } data-busy="Scaling…" {
                        (layout::csrf_field(csrf))
                        (layout::form_error(&scale_st))
                        (Field::new("scale", &scale_st, "replicas", "Number of replicas").kind("number").required()
                            .placeholder(&replicas_now)
                            .hint(html! { "Now " (d.app.replicas) ". New ones start and pass their health check before they serve; removed ones drain first." })
                            .render())
                        button.btn type="submit" { "Scale" }
                    }
                }
            }
        }
        section.card.flush #history aria-labelledby="history-title" {
            h2 #history-title { "History" }
            (layout::form_error(&history_st))
            (live::region("history", history_region(csrf, &d)))
        }
        section.card #releases aria-labelledby="releases-title" {
            h2 #releases-title { "Releases" }
            (live::region("releases", super::releases::releases_region(&s, csrf, &d.app)))
        }
        section.card #logs aria-labelledby="logs-title" {
            h2 #logs-title { "Logs" }
            (live::region("logs", logs_region(&d.app.name, &logs)))
        }
        div.layout {
            div.col-main {
                section.card #env aria-labelledby="env-title" {
                    h2 #env-title { "Environment" }
                    (env_form(csrf, &d, &env_st))
                }
            }
            aside.col-side {
                section.card #template aria-labelledby="template-title" {
                    h2 #template-title { "Template" }
                    p.muted.small { "Create a new, independent App with this App's configuration and serving image. Domains are not copied." }
                    form.stack method="post" action={ (base) "/template" } data-busy="Creating…" {
                        (layout::csrf_field(csrf))
                        (layout::form_error(&template_st))
                        (Field::new("template", &template_st, "new_name", "New App's name").required().placeholder(&format!("{}-copy", d.app.name)).render())
                        div.check {
                            input #template-secrets type="checkbox" name="with_secrets" value="on";
                            label for="template-secrets" { "Copy secret variables too" }
                        }
                        button.btn type="submit" { "Create copy" }
                    }
                }
                section.card.danger-zone #delete aria-labelledby="delete-title" {
                    h2 #delete-title { "Delete" }
                    p.small { "Stops and removes the containers, the route, the environment and secrets, and the history. This cannot be undone." }
                    form.stack method="post" action={ (base) "/delete" } data-confirm-name=(d.app.name) data-busy="Deleting…" {
                        (layout::csrf_field(csrf))
                        (layout::form_error(&delete_st))
                        (Field::new("delete", &delete_st, "confirm", "")
                            .label_html(html! { "Type " strong { (d.app.name) } " to confirm" })
                            .autocomplete("off")
                            .render())
                        button.btn.danger type="submit" { "Delete " (d.app.name) }
                    }
                }
            }
        }
    };
    Shell {
        title: &d.app.name,
        nav: Nav::Apps,
        csrf: Some(csrf),
        notice: flash.notice.as_deref(),
        live: Some(format!("{base}/live")),
    }
    .render(main)
    .into_response()
}

pub async fn app_live(
    State(s): State<DashState>,
    Path(name): Path<String>,
    auth: Authed,
    headers: HeaderMap,
) -> Response {
    let (s, name, csrf) = (&s, &name, &auth.csrf);
    let render = move || async move {
        match load_app(s, name).await {
            Ok(Some(d)) => {
                let logs = recent_logs(s, &d.app).await;
                Live::Regions {
                    active: is_active(s, &d.app),
                    regions: vec![
                        ("head", head_region(&d)),
                        ("progress", progress_region(s, csrf, &d)),
                        ("history", history_region(csrf, &d)),
                        ("config", config_region(&d)),
                        ("logs", logs_region(&d.app.name, &logs)),
                    ],
                }
            }
            Ok(None) => Live::Answer(live::gone("/")),
            Err(e) => Live::Answer(internal_page(e)),
        }
    };
    let store = &s.api.deployer.store;
    let wanted = |c: &DeployChange| &c.app == name;
    live::held(store, &s.api.stopping, &headers, wanted, render).await
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn recreate_phases_follow_the_recorded_phase() {
        let m = recreate_phases(DeployStatus::Swapping, Some(1)).into_string();
        assert!(m.contains(r#"<li class="current">"#), "{m}");
        assert!(m.contains(r#"<li class="todo">"#), "{m}");
        let m = recreate_phases(DeployStatus::Failed, Some(2)).into_string();
        assert!(
            m.contains(r#"<li class="done">"#) && m.contains(r#"<li class="failed">"#),
            "{m}"
        );
        assert!(recreate_phases(DeployStatus::Failed, None)
            .into_string()
            .is_empty());
    }
}
