//! The Apps list, an App's page, a deploy's page, and every action on them.
//! Actions answer with a redirect (post/redirect/get), so reloading a page
//! never repeats an action; a failed action comes back as a flash that puts
//! the message next to the field that caused it and keeps what was typed.

use super::layout::{self, Field, FormState, Nav, Shell};
use super::live;
use super::session::{Authed, CsrfForm, Flash};
use super::DashState;
use crate::deploy::EngineError;
use crate::store::{AppRow, DeployRow, EnvEntry};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use molt_core::api::CreateAppRequest;
use molt_core::{AppStatus, DeployStatus};
use serde::Deserialize;
use std::collections::HashMap;

/// Who the deploy history says asked for a deploy started here.
const TRIGGER: &str = "dashboard";
/// The history on an App's page shows this many deploys (the newest).
const HISTORY_LIMIT: usize = 50;

// ---- shared helpers ----

/// Sets a flash and sends the browser to `to`.
fn flash_to(s: &DashState, auth: &Authed, flash: Flash, to: &str) -> Response {
    s.sessions.set_flash(&auth.id, flash);
    Redirect::to(to).into_response()
}

fn internal_page(e: anyhow::Error) -> Response {
    tracing::error!("dashboard: {e:#}");
    layout::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something broke on the server",
        &format!("{e:#}. The server log has the details."),
    )
}

/// An engine refusal as a stable code and a message for people.
fn explain(e: EngineError) -> (&'static str, String) {
    match e {
        EngineError::Invalid { code, message } => (code, message),
        EngineError::NotFound(m) => ("not_found", m),
        EngineError::Conflict { message, .. } => ("conflict", message),
        EngineError::Registry(r) => (r.code(), r.to_string()),
        EngineError::Internal(e) => {
            tracing::error!("dashboard: {e:#}");
            ("internal", format!("the server failed: {e:#}"))
        }
    }
}

/// An image reference without its `@sha256:…` pin (the digest is shown in
/// its own column).
fn unpinned(image: &str) -> &str {
    image.split_once('@').map_or(image, |(r, _)| r)
}

/// What serves: the serving deploy's image, else the App's reference.
fn serving_image<'a>(app: &'a AppRow, serving: Option<&'a DeployRow>) -> &'a str {
    unpinned(serving.map_or(app.image.as_str(), |d| d.image.as_str()))
}

/// `/apps/NAME`, with the name escaped for a URL path.
fn app_url(name: &str) -> String {
    format!("/apps/{}", super::session::urlencode(name))
}

/// The App, or a redirect to the list saying it is gone.
fn require_app(s: &DashState, auth: &Authed, name: &str) -> Result<AppRow, Box<Response>> {
    match s.api.engine.store.get_app(name) {
        Ok(Some(app)) => Ok(app),
        Ok(None) => Err(Box::new(flash_to(
            s,
            auth,
            Flash::notice(format!(
                "There is no App named `{}` (any more).",
                name.chars().take(80).collect::<String>()
            )),
            "/",
        ))),
        Err(e) => Err(Box::new(internal_page(e))),
    }
}

fn is_active(s: &DashState, app: &AppRow) -> bool {
    s.api.engine.in_progress(&app.name).is_some()
        || matches!(
            app.status,
            AppStatus::Creating | AppStatus::Deploying | AppStatus::Deleting
        )
}

/// `on` for a checked checkbox; absent otherwise.
fn checked(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| !v.is_empty())
}

// ---- the Apps list ----

/// One row of the list: the App, its serving deploy and its newest one.
struct Listed {
    app: AppRow,
    serving: Option<DeployRow>,
    last: Option<DeployRow>,
}

fn load_list(s: &DashState) -> anyhow::Result<Vec<Listed>> {
    let store = &s.api.engine.store;
    store
        .list_apps()?
        .into_iter()
        .map(|app| {
            let serving = match &app.current_deploy {
                Some(id) => store.get_deploy(id)?,
                None => None,
            };
            let last = store.latest_deploy(&app.name)?;
            Ok(Listed { app, serving, last })
        })
        .collect()
}

fn apps_table(apps: &[Listed]) -> Markup {
    html! {
        @if apps.is_empty() {
            div.empty {
                p { strong { "No Apps yet." } }
                p.muted { "Create one with the form below, or with "
                    code { "molt apps create NAME --image REF --port PORT" } "." }
            }
        } @else {
            table.list {
                caption.sr-only { "Every App with its status and last deploy" }
                thead { tr {
                    th scope="col" { "App" }
                    th scope="col" { "Status" }
                    th scope="col" { "Image" }
                    th scope="col" { "Digest" }
                    th scope="col" { "Replicas" }
                    th scope="col" { "Last deploy" }
                } }
                tbody {
                    @for l in apps {
                        tr data-app=(l.app.name) {
                            td data-label="App" {
                                a.app-name href=(app_url(&l.app.name)) { (l.app.name) }
                                div.small.muted { (l.app.hosts().join(", ")) }
                            }
                            td data-label="Status" { (layout::app_badge(l.app.status)) }
                            td data-label="Image" { code.image { (serving_image(&l.app, l.serving.as_ref())) } }
                            td data-label="Digest" { (layout::digest(l.serving.as_ref().and_then(|d| d.digest.as_deref()))) }
                            td data-label="Replicas" { (l.app.replicas) }
                            td data-label="Last deploy" {
                                @match &l.last {
                                    Some(d) => {
                                        span.kind { (d.kind.as_str()) } " "
                                        (layout::deploy_badge(d.status)) " "
                                        span.small.muted { (layout::ago(&d.created_at)) }
                                    },
                                    None => span.muted { "—" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn list_page(State(s): State<DashState>, auth: Authed) -> Response {
    let apps = match load_list(&s) {
        Ok(a) => a,
        Err(e) => return internal_page(e),
    };
    let flash = s.sessions.take_flash(&auth.id);
    let create = flash.form_state("create");
    let main = html! {
        div.page-head {
            div {
                h1 { "Apps" }
                p.muted { "Each App runs a container image. New versions start beside the old one and take the traffic only once healthy." }
            }
            a.btn.primary href="#create" { "Create App" }
        }
        section.card.flush aria-label="Apps" {
            (live::region("apps", apps_table(&apps)))
        }
        section.card #create aria-labelledby="create-title" {
            h2 #create-title { "Create an App" }
            p.muted { "Before anything is created, Molt checks the image reference, that the registry answers and accepts the credential, and that the image exists for linux/amd64." }
            (create_form(&auth.csrf, &create))
        }
    };
    Shell {
        title: "Apps",
        nav: Nav::Apps,
        csrf: Some(&auth.csrf),
        notice: flash.notice.as_deref(),
        live: Some("/live".to_string()),
    }
    .render(main)
    .into_response()
}

pub async fn list_live(State(s): State<DashState>, _auth: Authed) -> Response {
    match load_list(&s) {
        Ok(apps) => {
            let active = apps.iter().any(|l| is_active(&s, &l.app));
            live::answer(active, vec![("apps", apps_table(&apps))])
        }
        Err(e) => internal_page(e),
    }
}

fn create_form(csrf: &str, st: &FormState) -> Markup {
    let f = |name, label| Field::new("create", st, name, label);
    let strategy = st.value("strategy").unwrap_or("auto");
    html! {
        form.stack method="post" action="/apps" data-busy="Checking the image…" {
            (layout::csrf_field(csrf))
            (layout::form_error(st))
            div.grid2 {
                (f("name", "Name").required().placeholder("web")
                    .hint(html! { "Lowercase letters, digits and hyphens; starts with a letter. Served at " code { "NAME.localhost" } "." }).render())
                (f("image", "Image").required().placeholder("ghcr.io/acme/web:1.4.2")
                    .hint(html! { "A reference in any registry; private ones need a " a href="/registries" { "credential" } "." }).render())
                (f("port", "Container port").kind("number").required().placeholder("8080")
                    .hint(html! { "The port the App listens on inside its container." }).render())
                (f("health_path", "Health path").placeholder("/healthz")
                    .hint(html! { "Must answer 2xx to GET. Empty: a TCP connect is the check." }).render())
                (f("health_timeout", "Health timeout (seconds)").kind("number").placeholder("60")
                    .hint(html! { "How long a deploy waits for the new container to become healthy." }).render())
                (f("domains", "Extra domains").placeholder("www.example.com example.com")
                    .hint(html! { "Separated by spaces or commas; " code { "NAME.localhost" } " is always routed." }).render())
            }
            (f("env", "Environment").kind("textarea").placeholder("LOG_LEVEL=info")
                .hint(html! { "Plain variables, " code { "KEY=value" } " one a line. Add secrets on the App's page once it exists." }).render())
            details.advanced open[["replicas", "strategy", "memory", "cpus", "gpus"].iter().any(|k| st.error(k).is_some())] {
                summary { "Resources, replicas and strategy" }
                div.grid3 {
                    (f("memory", "Memory limit").placeholder("512m").render())
                    (f("cpus", "CPUs").placeholder("0.5").render())
                    (f("gpus", "GPUs").kind("number").placeholder("0").render())
                    (f("replicas", "Replicas").kind("number").placeholder("1")
                        .hint(html! { "Containers serving the App at once; see " a href="/docs/replicas" { "Replicas" } "." }).render())
                    div.field.has-error[st.error("strategy").is_some()] {
                        label for="create-strategy" { "Deploy strategy" }
                        select #create-strategy name="strategy" aria-describedby=[st.error("strategy").map(|_| "create-strategy-error")] {
                            @for opt in ["auto", "bluegreen", "recreate", "rolling"] {
                                option value=(opt) selected[opt == strategy] { (opt) }
                            }
                        }
                        @if let Some(e) = st.error("strategy") { p.field-error #create-strategy-error { (e) } }
                    }
                }
            }
            div.actions {
                button.btn.primary type="submit" { "Create App" }
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateForm {
    name: String,
    image: String,
    port: String,
    health_path: String,
    health_timeout: String,
    domains: String,
    env: String,
    memory: String,
    cpus: String,
    gpus: String,
    replicas: String,
    strategy: String,
}

/// The create form field that an engine error code is about.
fn create_field(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_name" | "conflict" => "name",
        "invalid_image" | "image_not_found" | "image_platform_missing" => "image",
        c if c.starts_with("registry_") => "image",
        "invalid_port" => "port",
        "invalid_health_path" => "health_path",
        "invalid_health_timeout" => "health_timeout",
        "invalid_domain" | "domain_taken" => "domains",
        "invalid_env" => "env",
        "invalid_memory" => "memory",
        "invalid_cpus" => "cpus",
        "invalid_replicas" => "replicas",
        "invalid_strategy" => "strategy",
        _ => return None,
    })
}

/// A number typed in a form field, or the message to show next to it.
fn number<T: std::str::FromStr>(
    st: &mut FormState,
    field: &str,
    raw: &str,
    what: &str,
) -> Option<T> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match raw.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            st.errors.insert(field.to_string(), what.to_string());
            None
        }
    }
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

pub async fn create(State(s): State<DashState>, f: CsrfForm<CreateForm>) -> Response {
    let CsrfForm { session, form } = f;
    let mut st = FormState::default();
    for (k, v) in [
        ("name", &form.name),
        ("image", &form.image),
        ("port", &form.port),
        ("health_path", &form.health_path),
        ("health_timeout", &form.health_timeout),
        ("domains", &form.domains),
        ("env", &form.env),
        ("memory", &form.memory),
        ("cpus", &form.cpus),
        ("gpus", &form.gpus),
        ("replicas", &form.replicas),
        ("strategy", &form.strategy),
    ] {
        st.values.insert(k.to_string(), v.clone());
    }
    let name = form.name.trim().to_string();
    if name.is_empty() {
        st.errors
            .insert("name".into(), "Give the App a name, such as `web`.".into());
    }
    if form.image.trim().is_empty() {
        st.errors.insert(
            "image".into(),
            "Give the image to run, such as `ghcr.io/acme/web:1.4.2`.".into(),
        );
    }
    let port: Option<u16> = number(
        &mut st,
        "port",
        &form.port,
        "The port must be a whole number from 1 to 65535.",
    );
    if form.port.trim().is_empty() {
        st.errors.insert(
            "port".into(),
            "Give the port the App listens on inside its container, such as 8080.".into(),
        );
    } else if port == Some(0) {
        st.errors.insert(
            "port".into(),
            "The port must be a whole number from 1 to 65535.".into(),
        );
    }
    let health_timeout = number(
        &mut st,
        "health_timeout",
        &form.health_timeout,
        "The health timeout is a whole number of seconds, from 1 to 3600.",
    );
    let cpus = number(
        &mut st,
        "cpus",
        &form.cpus,
        "CPUs is a number such as 0.5 or 2.",
    );
    let gpus = number(
        &mut st,
        "gpus",
        &form.gpus,
        "GPUs is a whole number such as 0 or 1.",
    );
    let replicas = number(
        &mut st,
        "replicas",
        &form.replicas,
        "Replicas is a whole number from 1 to 100.",
    );
    if !st.is_empty() {
        return flash_to(&s, &session, Flash::form("create", st), "/#create");
    }
    let req = CreateAppRequest {
        name: name.clone(),
        image: form.image.trim().to_string(),
        port: port.unwrap_or(0),
        health_path: opt(&form.health_path),
        health_timeout,
        domains: form
            .domains
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect(),
        env: form
            .env
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        memory: opt(&form.memory),
        cpus,
        gpus,
        replicas,
        strategy: opt(&form.strategy).filter(|s| s != "auto"),
        ..Default::default()
    };
    match s.api.engine.create_app(req, TRIGGER).await {
        Ok((app, deploy)) => flash_to(
            &s,
            &session,
            Flash::notice(format!(
                "Creating {}: the first deploy ({}) has started.",
                app.name,
                crate::deploy::short(&deploy.id)
            )),
            &app_url(&app.name),
        ),
        Err(e) => {
            let (code, msg) = explain(e);
            let st = match create_field(code) {
                Some(field) => st.with_error(field, msg),
                None => st.with_general(msg),
            };
            flash_to(&s, &session, Flash::form("create", st), "/#create")
        }
    }
}

// ---- an App's page ----

/// Everything an App's page shows.
struct AppData {
    app: AppRow,
    deploys: Vec<DeployRow>,
    serving: Option<DeployRow>,
    env: Vec<EnvEntry>,
    running: Option<String>,
}

fn load_app(s: &DashState, name: &str) -> anyhow::Result<Option<AppData>> {
    let store = &s.api.engine.store;
    let Some(app) = store.get_app(name)? else {
        return Ok(None);
    };
    let deploys = store.list_deploys(name)?;
    let serving = app
        .current_deploy
        .as_ref()
        .and_then(|id| deploys.iter().find(|d| &d.id == id).cloned());
    let env = store.env(name)?;
    let running = s.api.engine.in_progress(name).filter(|id| id != "delete");
    Ok(Some(AppData {
        app,
        deploys,
        serving,
        env,
        running,
    }))
}

/// How many lines of output the Logs card shows.
const LOG_LINES: usize = 80;

/// The last lines of output of the App's serving containers (all of them,
/// while nothing serves yet), for the Logs card. Asked of the engine on
/// every refresh, so it follows the containers as they print.
async fn recent_logs(s: &DashState, app: &AppRow) -> String {
    let containers = s
        .api
        .engine
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
        let text = s.api.engine.runtime.logs_tail(&c.id, LOG_LINES).await;
        for line in text.lines() {
            out.push_str(&format!("[{}] {line}\n", crate::deploy::short(&c.deploy)));
        }
    }
    out
}

fn logs_region(name: &str, logs: &str) -> Markup {
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

fn head_region(d: &AppData) -> Markup {
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

fn config_region(d: &AppData) -> Markup {
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
            div { dt { "Port" } dd { (a.port) } }
            div { dt { "Health check" } dd {
                @match &a.health.path {
                    Some(p) => { "GET " code { (p) } },
                    None => "TCP connect",
                }
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
fn resources(a: &AppRow) -> Option<String> {
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
const STEPS: [(DeployStatus, &str); 6] = [
    (DeployStatus::Pulling, "Pull"),
    (DeployStatus::Starting, "Start"),
    (DeployStatus::HealthChecking, "Health check"),
    (DeployStatus::Swapping, "Swap"),
    (DeployStatus::Draining, "Drain"),
    (DeployStatus::Succeeded, "Done"),
];

fn steps(d: &DeployRow, events: &[crate::store::EventRow]) -> Markup {
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
/// deploying the new one), when the timeline says the deploy is one.
fn recreate_phases(status: DeployStatus, events: &[crate::store::EventRow]) -> Markup {
    let current = events
        .iter()
        .filter_map(|e| e.message.strip_prefix("phase "))
        .filter_map(|rest| rest.chars().next().and_then(|c| c.to_digit(10)))
        .max();
    let Some(current) = current else {
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

fn timeline(events: &[crate::store::EventRow]) -> Markup {
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

fn progress_region(s: &DashState, csrf: &str, d: &AppData) -> Markup {
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
    let events = s.api.engine.store.events(&dep.id, 0).unwrap_or_default();
    // Read after the events, so the status shown is never behind them.
    let fresh = s.api.engine.store.get_deploy(&dep.id).ok().flatten();
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
        (recreate_phases(dep.status, &events))
        (steps(dep, &events))
        @if let Some(err) = &dep.error {
            div class={ "callout " (if dep.status == DeployStatus::Failed { "bad" } else { "muted" }) } role="note" {
                strong { (if dep.status == DeployStatus::Failed { "Failed: " } else { "Note: " }) }
                span.error-text { (err) }
                @if dep.status == DeployStatus::Failed && d.serving.is_some() {
                    p.small { "The previous version kept serving. " a href="/docs/debugging-failed-deploys" { "Debugging a failed deploy" } }
                }
            }
        }
        (timeline(&events))
    }
}

fn history_region(csrf: &str, d: &AppData) -> Markup {
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

fn env_form(csrf: &str, d: &AppData, st: &FormState) -> Markup {
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
    let d = match load_app(&s, &name) {
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
) -> Response {
    match load_app(&s, &name) {
        Ok(Some(d)) => {
            let logs = recent_logs(&s, &d.app).await;
            live::answer(
                is_active(&s, &d.app),
                vec![
                    ("head", head_region(&d)),
                    ("progress", progress_region(&s, &auth.csrf, &d)),
                    ("history", history_region(&auth.csrf, &d)),
                    ("config", config_region(&d)),
                    ("logs", logs_region(&d.app.name, &logs)),
                ],
            )
        }
        Ok(None) => live::gone("/"),
        Err(e) => internal_page(e),
    }
}

// ---- a deploy's page ----

fn deploy_region(s: &DashState, csrf: &str, app: &AppRow, dep: &DeployRow) -> Markup {
    let events = s.api.engine.store.events(&dep.id, 0).unwrap_or_default();
    // Read after the events, so the status shown is never behind them.
    let fresh = s.api.engine.store.get_deploy(&dep.id).ok().flatten();
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
        (recreate_phases(dep.status, &events))
        (steps(dep, &events))
        @if let Some(err) = &dep.error {
            div class={ "callout " (if dep.status == DeployStatus::Failed { "bad" } else { "muted" }) } {
                strong { (if dep.status == DeployStatus::Failed { "Failed: " } else { "Note: " }) }
                span.error-text { (err) }
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
                    label for="rollback-config" { "Also restore this deploy's environment" }
                }
                button.btn.primary type="submit" { "Roll back to this deploy" }
            }
        }
    }
}

fn find_deploy(s: &DashState, name: &str, id: &str) -> anyhow::Result<Option<(AppRow, DeployRow)>> {
    let store = &s.api.engine.store;
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
) -> Response {
    match find_deploy(&s, &name, &id) {
        Ok(Some((app, dep))) => live::answer(
            !dep.status.is_terminal(),
            vec![("deploy", deploy_region(&s, &auth.csrf, &app, &dep))],
        ),
        Ok(None) => live::gone("/"),
        Err(e) => internal_page(e),
    }
}

// ---- actions ----

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeployForm {
    image: String,
}

pub async fn deploy(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<DeployForm>,
) -> Response {
    let CsrfForm { session, form } = f;
    let app = match require_app(&s, &session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    let image = form.image.trim();
    let st = FormState::default().with_value("image", image);
    if image.is_empty() {
        let st = st.with_error(
            "image",
            "Enter the image to deploy, such as ghcr.io/acme/web:1.5.0.",
        );
        return flash_to(
            &s,
            &session,
            Flash::form("deploy", st),
            &format!("{back}#deploy"),
        );
    }
    let r = s.api.engine.deploy(&app.name, image, TRIGGER).await;
    started_from_field(&s, &session, &app.name, ("deploy", "image"), st, r, |dep| {
        format!(
            "Deploying {}: deploy {} has started.",
            dep.image,
            crate::deploy::short(&dep.id)
        )
    })
}

/// The answer to a form whose one field (`form`, `field`) started a deploy:
/// the notice `notice` writes, or the engine's refusal next to the field
/// (above the form when another deploy is running), with what was typed.
fn started_from_field(
    s: &DashState,
    session: &Authed,
    app: &str,
    (form, field): (&str, &str),
    st: FormState,
    r: Result<(AppRow, DeployRow), EngineError>,
    notice: impl FnOnce(&DeployRow) -> String,
) -> Response {
    let back = app_url(app);
    match r {
        Ok((_, dep)) => flash_to(s, session, Flash::notice(notice(&dep)), &back),
        Err(e) => {
            let (code, msg) = explain(e);
            let st = if code == "conflict" {
                st.with_general(msg)
            } else {
                st.with_error(field, msg)
            };
            flash_to(s, session, Flash::form(form, st), &format!("{back}#{form}"))
        }
    }
}

/// The answer to an action that started a deploy (or could not).
fn started(
    s: &DashState,
    session: &Authed,
    app: &str,
    form: &str,
    what: &str,
    r: Result<(AppRow, DeployRow), EngineError>,
) -> Response {
    let back = app_url(app);
    match r {
        Ok((_, dep)) => flash_to(
            s,
            session,
            Flash::notice(format!(
                "{what}: deploy {} has started.",
                crate::deploy::short(&dep.id)
            )),
            &back,
        ),
        Err(e) => {
            let (_, msg) = explain(e);
            flash_to(
                s,
                session,
                Flash::form(form, FormState::default().with_general(msg)),
                &format!("{back}#{form}"),
            )
        }
    }
}

pub async fn redeploy(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<layout::Ignore>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let r = s.api.engine.redeploy(&app.name, TRIGGER).await;
    started(
        &s,
        &f.session,
        &app.name,
        "deploy",
        "Redeploying the current image",
        r,
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RestartForm {
    hard: Option<String>,
}

pub async fn restart(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<RestartForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let hard = checked(&f.form.hard);
    let r = s.api.engine.restart(&app.name, hard, TRIGGER).await;
    let what = if hard {
        "Restarting in place"
    } else {
        "Restarting"
    };
    started(&s, &f.session, &app.name, "deploy", what, r)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ScaleForm {
    replicas: String,
}

/// Scale: as `molt apps scale`, through a deploy of kind `scale`.
pub async fn scale(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<ScaleForm>,
) -> Response {
    let CsrfForm { session, form } = f;
    let app = match require_app(&s, &session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let raw = form.replicas.trim();
    let mut st = FormState::default().with_value("replicas", raw);
    const HOW_MANY: &str = "Enter how many replicas should serve: a whole number from 1 to 100.";
    let Some(replicas) = number::<u32>(&mut st, "replicas", raw, HOW_MANY) else {
        return flash_to(
            &s,
            &session,
            Flash::form("scale", st.with_error("replicas", HOW_MANY)),
            &format!("{}#scale", app_url(&app.name)),
        );
    };
    let r = s.api.engine.scale(&app.name, replicas, TRIGGER).await;
    started_from_field(
        &s,
        &session,
        &app.name,
        ("scale", "replicas"),
        st,
        r,
        |dep| {
            format!(
                "Scaling {} to {replicas} replica(s): deploy {} has started.",
                app.name,
                crate::deploy::short(&dep.id)
            )
        },
    )
}

pub async fn cancel(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<layout::Ignore>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    match s.api.engine.cancel(&app.name) {
        Ok(id) => flash_to(
            &s,
            &f.session,
            Flash::notice(format!(
                "Canceling deploy {}: the new container is being removed; the current version keeps serving.",
                crate::deploy::short(&id)
            )),
            &back,
        ),
        Err(e) => {
            let (_, msg) = explain(e);
            flash_to(
                &s,
                &f.session,
                Flash::form("progress", FormState::default().with_general(msg)),
                &format!("{back}#progress"),
            )
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RollbackForm {
    deploy_id: String,
    with_config: Option<String>,
}

pub async fn rollback(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<RollbackForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let target = opt(&f.form.deploy_id);
    let r = s
        .api
        .engine
        .rollback(
            &app.name,
            target.as_deref(),
            checked(&f.form.with_config),
            TRIGGER,
        )
        .await;
    let what = match &target {
        Some(id) => format!("Rolling back to deploy {}", crate::deploy::short(id)),
        None => "Rolling back".to_string(),
    };
    started(&s, &f.session, &app.name, "history", &what, r)
}

/// Reads the environment form: which variables to set and which to unset,
/// or the per-field errors. Secret rows left empty keep their value; plain
/// rows are sent only when their value changed.
fn read_env_form(
    pairs: &[(String, String)],
    stored: &[EnvEntry],
) -> (Vec<(String, String, bool)>, Vec<String>, FormState) {
    let map: HashMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut set = Vec::new();
    let mut unset = Vec::new();
    let mut st = FormState::default();
    // Rows are numbered from 0 without gaps; the bound only stops a forged
    // form from making us loop long.
    for i in 0..10_000 {
        let Some(key) = map.get(format!("k{i}").as_str()) else {
            break;
        };
        // A variable removed elsewhere since the page was loaded: skip it.
        let Some(entry) = stored.iter().find(|e| e.key == *key) else {
            continue;
        };
        let value = map.get(format!("v{i}").as_str()).copied().unwrap_or("");
        if map.contains_key(format!("r{i}").as_str()) {
            unset.push(entry.key.clone());
        } else if entry.secret {
            if !value.is_empty() {
                set.push((entry.key.clone(), value.to_string(), true));
            }
        } else {
            st.values
                .insert(format!("v:{}", entry.key), value.to_string());
            if entry.value.as_deref() != Some(value) {
                set.push((entry.key.clone(), value.to_string(), false));
            }
        }
    }
    let nk = map.get("nk").map(|k| k.trim()).unwrap_or("");
    let nv = map.get("nv").copied().unwrap_or("");
    let secret = map.contains_key("ns");
    st.values.insert("nk".into(), nk.to_string());
    if secret {
        st.values.insert("ns".into(), "on".into());
    } else {
        st.values.insert("nv".into(), nv.to_string());
    }
    if nk.is_empty() {
        if !nv.is_empty() {
            st.errors.insert(
                "nk".into(),
                "Give the variable a name, such as LOG_LEVEL.".into(),
            );
        }
    } else if let Err(e) = molt_core::env::validate_key(nk) {
        st.errors.insert("nk".into(), e);
    } else if let Err(e) = molt_core::env::validate_value(nk, nv) {
        st.errors.insert("nv".into(), e);
    } else {
        set.push((nk.to_string(), nv.to_string(), secret));
    }
    (set, unset, st)
}

pub async fn change_env(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<Vec<(String, String)>>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    let stored = match s.api.engine.store.env(&app.name) {
        Ok(e) => e,
        Err(e) => return internal_page(e),
    };
    let apply = f.form.iter().any(|(k, v)| k == "apply" && !v.is_empty());
    let (set, unset, st) = read_env_form(&f.form, &stored);
    if !st.is_empty() {
        return flash_to(
            &s,
            &f.session,
            Flash::form("env", st),
            &format!("{back}#env"),
        );
    }
    if set.is_empty() && unset.is_empty() && !apply {
        return flash_to(
            &s,
            &f.session,
            Flash::notice("Nothing changed in the environment."),
            &format!("{back}#env"),
        );
    }
    let (n_set, n_unset) = (set.len(), unset.len());
    match s
        .api
        .engine
        .change_env(&app.name, set, unset, apply, TRIGGER)
        .await
    {
        Ok(dep) => {
            let mut msg = format!("Environment saved ({n_set} set, {n_unset} removed).");
            match dep {
                Some(d) => msg.push_str(&format!(
                    " Applying now: config deploy {} has started.",
                    crate::deploy::short(&d.id)
                )),
                None => msg.push_str(" It applies on the next deploy."),
            }
            flash_to(&s, &f.session, Flash::notice(msg), &format!("{back}#env"))
        }
        Err(e) => {
            let (_, msg) = explain(e);
            flash_to(
                &s,
                &f.session,
                Flash::form("env", st.with_general(msg)),
                &format!("{back}#env"),
            )
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TemplateForm {
    new_name: String,
    with_secrets: Option<String>,
}

pub async fn template(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<TemplateForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    let new_name = f.form.new_name.trim().to_string();
    let st = FormState::default().with_value("new_name", &new_name);
    if new_name.is_empty() {
        let st = st.with_error("new_name", "Give the new App a name.");
        return flash_to(
            &s,
            &f.session,
            Flash::form("template", st),
            &format!("{back}#template"),
        );
    }
    let req = CreateAppRequest {
        name: new_name,
        from: Some(app.name.clone()),
        with_secrets: checked(&f.form.with_secrets),
        ..Default::default()
    };
    match s.api.engine.create_app(req, TRIGGER).await {
        Ok((new, _)) => flash_to(
            &s,
            &f.session,
            Flash::notice(format!(
                "Created {} from {}: its first deploy has started.",
                new.name, app.name
            )),
            &app_url(&new.name),
        ),
        Err(e) => {
            let (code, msg) = explain(e);
            let st = if matches!(code, "invalid_name" | "conflict") {
                st.with_error("new_name", msg)
            } else {
                st.with_general(msg)
            };
            flash_to(
                &s,
                &f.session,
                Flash::form("template", st),
                &format!("{back}#template"),
            )
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DeleteForm {
    confirm: String,
}

pub async fn delete(
    State(s): State<DashState>,
    Path(name): Path<String>,
    f: CsrfForm<DeleteForm>,
) -> Response {
    let app = match require_app(&s, &f.session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let back = app_url(&app.name);
    if f.form.confirm.trim() != app.name {
        let st = FormState::default().with_error(
            "confirm",
            format!("Type the App's name, {}, exactly to confirm.", app.name),
        );
        return flash_to(
            &s,
            &f.session,
            Flash::form("delete", st),
            &format!("{back}#delete"),
        );
    }
    match s.api.engine.delete_app(&app.name).await {
        Ok(()) => flash_to(
            &s,
            &f.session,
            Flash::notice(format!(
                "Deleted {} with its containers, route, environment and history.",
                app.name
            )),
            "/",
        ),
        Err(e) => {
            let (_, msg) = explain(e);
            let st = FormState::default().with_general(msg);
            flash_to(
                &s,
                &f.session,
                Flash::form("delete", st),
                &format!("{back}#delete"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(k: &str, v: &str) -> EnvEntry {
        EnvEntry {
            key: k.into(),
            secret: false,
            value: Some(v.into()),
            sealed: None,
        }
    }

    fn secret(k: &str) -> EnvEntry {
        EnvEntry {
            key: k.into(),
            secret: true,
            value: None,
            sealed: Some(vec![1, 2, 3]),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_form_sends_only_changes() {
        let stored = vec![plain("A", "1"), secret("B"), plain("C", "3")];
        let (set, unset, st) = read_env_form(
            &pairs(&[
                ("k0", "A"),
                ("v0", "1"),
                ("k1", "B"),
                ("v1", ""),
                ("k2", "C"),
                ("v2", "x"),
                ("r2", "on"),
                ("nk", "D"),
                ("nv", "4"),
                ("ns", "on"),
            ]),
            &stored,
        );
        assert!(st.is_empty(), "{st:?}");
        assert_eq!(set, vec![("D".to_string(), "4".to_string(), true)]);
        assert_eq!(unset, vec!["C".to_string()]);
        // A secret new value is not kept for the form.
        assert!(st.value("nv").is_none());
    }

    #[test]
    fn env_form_replaces_secrets_and_edits_plain_values() {
        let stored = vec![plain("A", "1"), secret("B")];
        let (set, unset, _) = read_env_form(
            &pairs(&[("k0", "A"), ("v0", "2"), ("k1", "B"), ("v1", "new")]),
            &stored,
        );
        assert_eq!(
            set,
            vec![
                ("A".to_string(), "2".to_string(), false),
                ("B".to_string(), "new".to_string(), true)
            ]
        );
        assert!(unset.is_empty());
    }

    #[test]
    fn env_form_errors_name_the_field() {
        let (_, _, st) = read_env_form(&pairs(&[("nk", ""), ("nv", "x")]), &[]);
        assert!(st.error("nk").is_some());
        let (_, _, st) = read_env_form(&pairs(&[("nk", "1BAD"), ("nv", "x")]), &[]);
        assert!(st.error("nk").is_some());
    }

    fn event(seq: i64, message: &str) -> crate::store::EventRow {
        crate::store::EventRow {
            seq,
            at: "2026-01-01T00:00:00Z".into(),
            status: DeployStatus::Starting,
            message: message.into(),
        }
    }

    #[test]
    fn recreate_phases_follow_the_timeline() {
        let events = vec![
            event(1, "pulling x"),
            event(2, "phase 1 of 2: stopping the old deployment"),
        ];
        let m = recreate_phases(DeployStatus::Swapping, &events).into_string();
        assert!(m.contains(r#"<li class="current">"#), "{m}");
        assert!(m.contains(r#"<li class="todo">"#), "{m}");
        let events = vec![event(1, "phase 1 of 2: x"), event(2, "phase 2 of 2: y")];
        let m = recreate_phases(DeployStatus::Failed, &events).into_string();
        assert!(
            m.contains(r#"<li class="done">"#) && m.contains(r#"<li class="failed">"#),
            "{m}"
        );
        assert!(
            recreate_phases(DeployStatus::Failed, &[event(1, "pulling")])
                .into_string()
                .is_empty()
        );
    }

    #[test]
    fn create_errors_go_next_to_their_field() {
        assert_eq!(create_field("invalid_name"), Some("name"));
        assert_eq!(create_field("registry_credential_needed"), Some("image"));
        assert_eq!(create_field("image_not_found"), Some("image"));
        assert_eq!(create_field("domain_taken"), Some("domains"));
        assert_eq!(create_field("internal"), None);
    }
}
