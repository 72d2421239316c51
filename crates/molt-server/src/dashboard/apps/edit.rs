//! "Edit config": every setting `molt apps update` has, pre-filled; a
//! review step that lists each change (old → new) and says what it will do
//! (new containers, the route only, or a recreate to confirm); then the
//! deploy's page with its live progress. Opened from a failed deploy
//! ("Redeploy with changes"), the form holds what that deploy tried, with
//! the setting its failure points at marked.
//!
//! The rules are the deployer's alone (`preview_update`, `update_app`,
//! `deploy_with_settings`, the same checks as the API's `PATCH`): this
//! module reads the form, turns it into an `UpdateAppRequest` and shows
//! the answers. The review is rendered in answer to its POST (nothing has
//! changed yet, so sending it again is harmless); only the final apply
//! redirects.

use super::*;
use crate::capacity::Strategy;
use crate::deploy::{Blamed, ChangeEffect, SettingsPreview};
use crate::store::AppSettings;
use axum::extract::Query;
use axum::http::HeaderMap;
use molt_core::api::UpdateAppRequest;
use molt_core::DeployKind;

/// The form's id on the page: fields are `settings-port` and so on.
const FORM: &str = "settings";

/// Every field of the form, as the browser sends it.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct SettingsForm {
    port: String,
    health_path: String,
    health_timeout: String,
    health_interval_ms: String,
    start_period: String,
    memory: String,
    cpus: String,
    gpus: String,
    replicas: String,
    strategy: String,
    domains: String,
    drain_timeout: String,
    upstream_timeout: String,
    /// Request bodies up to this size (`10m`); empty: the default.
    max_body: String,
    tunnel_idle_timeout: String,
    /// `on` (checked) or empty: it travels in a hidden field through the
    /// review, where an unchecked box would send nothing.
    https_redirect: String,
    /// HSTS max-age in seconds; empty or 0: none.
    hsts: String,
    /// The image a failed image deploy tried, deployed again with these
    /// settings; empty for a settings change of the serving version.
    image: String,
    /// The failed deploy the form was opened from, if any.
    from: String,
    /// `review`, `apply`, or `edit` (back from the review).
    step: String,
    /// The confirmation a recreate needs.
    yes: Option<String>,
}

impl SettingsForm {
    /// The form filled with `s` (and the image to try again, if any).
    fn of(s: &AppSettings, image: Option<&str>, from: Option<&str>) -> Self {
        let secs = |v: u64| v.to_string();
        Self {
            port: s.port.to_string(),
            health_path: s.health.path.clone().unwrap_or_default(),
            health_timeout: secs(s.health.deploy_timeout_secs),
            health_interval_ms: s.health.interval_ms.to_string(),
            start_period: secs(s.health.start_period_ms / 1000),
            memory: s.memory_bytes.map(size_text).unwrap_or_default(),
            cpus: s.cpus.map(|c| c.to_string()).unwrap_or_default(),
            gpus: s.gpus.to_string(),
            replicas: s.replicas.to_string(),
            strategy: s.strategy.clone(),
            domains: s.domains.join("\n"),
            drain_timeout: secs(s.drain_timeout_secs),
            upstream_timeout: secs(s.upstream_timeout_secs),
            max_body: s.max_body_bytes.map(size_text).unwrap_or_default(),
            tunnel_idle_timeout: s.tunnel_idle_timeout_secs.map(secs).unwrap_or_default(),
            https_redirect: if s.https_redirect {
                "on".into()
            } else {
                String::new()
            },
            hsts: s.hsts_max_age_secs.map(secs).unwrap_or_default(),
            image: image.unwrap_or_default().to_string(),
            from: from.unwrap_or_default().to_string(),
            step: String::new(),
            yes: None,
        }
    }

    /// The values to put back in the form, by field name.
    fn state(&self) -> FormState {
        let mut st = FormState::default();
        for (k, v) in [
            ("port", &self.port),
            ("health_path", &self.health_path),
            ("health_timeout", &self.health_timeout),
            ("health_interval_ms", &self.health_interval_ms),
            ("start_period", &self.start_period),
            ("memory", &self.memory),
            ("cpus", &self.cpus),
            ("gpus", &self.gpus),
            ("replicas", &self.replicas),
            ("strategy", &self.strategy),
            ("domains", &self.domains),
            ("drain_timeout", &self.drain_timeout),
            ("upstream_timeout", &self.upstream_timeout),
            ("max_body", &self.max_body),
            ("tunnel_idle_timeout", &self.tunnel_idle_timeout),
            ("https_redirect", &self.https_redirect),
            ("hsts", &self.hsts),
            ("image", &self.image),
        ] {
            st.values.insert(k.to_string(), v.clone());
        }
        st
    }

    /// The request the form asks for, or the form with a message next to
    /// each field that cannot be read. Every filled field is sent: the
    /// deployer applies them with its rules and reports what differs.
    fn request(&self, app: &AppRow) -> Result<UpdateAppRequest, FormState> {
        let mut st = self.state();
        let port = number::<u16>(
            &mut st,
            "port",
            &self.port,
            "The port is a whole number from 1 to 65535: the one the App listens on inside its container.",
        );
        if self.port.trim().is_empty() {
            st.errors.insert(
                "port".into(),
                "Give the port the App listens on inside its container, such as 8080.".into(),
            );
        }
        const SECONDS: &str = "A whole number of seconds.";
        let health_timeout = number(&mut st, "health_timeout", &self.health_timeout, SECONDS);
        let health_interval_ms = number(
            &mut st,
            "health_interval_ms",
            &self.health_interval_ms,
            "A whole number of milliseconds, such as 500.",
        );
        let start_period = number(&mut st, "start_period", &self.start_period, SECONDS);
        let cpus = number(
            &mut st,
            "cpus",
            &self.cpus,
            "CPUs is a number such as 0.5 or 2.",
        );
        let gpus = number(
            &mut st,
            "gpus",
            &self.gpus,
            "GPUs is a whole number such as 0 or 1.",
        );
        let replicas = number(
            &mut st,
            "replicas",
            &self.replicas,
            "Replicas is a whole number from 1 to 100.",
        );
        let drain_timeout_secs = number(&mut st, "drain_timeout", &self.drain_timeout, SECONDS);
        let upstream_timeout_secs =
            number(&mut st, "upstream_timeout", &self.upstream_timeout, SECONDS);
        let tunnel_idle_timeout_secs = number(
            &mut st,
            "tunnel_idle_timeout",
            &self.tunnel_idle_timeout,
            SECONDS,
        );
        let hsts_max_age_secs = number(&mut st, "hsts", &self.hsts, SECONDS);
        // Domains as typed, normalized the way the deployer stores them,
        // so that only real additions and removals are sent.
        let own = format!("{}.localhost", app.name);
        let mut wanted = Vec::new();
        for raw in self
            .domains
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|d| !d.is_empty())
        {
            match molt_core::name::parse_domain(raw) {
                Ok(d) if d == own => {}
                Ok(d) => wanted.push(d),
                Err(e) => {
                    st.errors.insert("domains".into(), e);
                }
            }
        }
        if !st.is_empty() {
            return Err(st);
        }
        let health_path = self.health_path.trim();
        Ok(UpdateAppRequest {
            port,
            health_path: (!health_path.is_empty()).then(|| health_path.to_string()),
            no_health_path: health_path.is_empty(),
            health_timeout,
            health_interval_ms,
            start_period,
            memory: opt(&self.memory),
            cpus,
            gpus,
            add_domains: wanted
                .iter()
                .filter(|d| !app.domains.contains(d))
                .cloned()
                .collect(),
            remove_domains: app
                .domains
                .iter()
                .filter(|d| !wanted.contains(d))
                .cloned()
                .collect(),
            drain_timeout_secs,
            upstream_timeout_secs,
            https_redirect: Some(self.https_redirect == "on"),
            // Empty: no HSTS (0 asks for none).
            hsts_max_age_secs: Some(hsts_max_age_secs.unwrap_or(0)),
            max_body: opt(&self.max_body),
            tunnel_idle_timeout_secs,
            // Placement is set from the command line (`--constraint`).
            constraints: Vec::new(),
            no_constraints: false,
            strategy: opt(&self.strategy),
            replicas,
            yes: checked(&self.yes),
        })
    }
}

/// A memory limit as the form shows it: `512m`, `2g`, or bytes.
fn size_text(b: u64) -> String {
    match b {
        b if b % (1 << 30) == 0 => format!("{}g", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}m", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}k", b >> 10),
        b => b.to_string(),
    }
}

/// The form field a deployer refusal is about; `None`: the form's own.
fn field_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_port" => "port",
        "invalid_health_path" => "health_path",
        "invalid_health_timeout" => "health_timeout",
        "invalid_health_interval" => "health_interval_ms",
        "invalid_start_period" => "start_period",
        "invalid_memory" => "memory",
        "invalid_cpus" => "cpus",
        "invalid_replicas" => "replicas",
        "invalid_strategy" => "strategy",
        "invalid_max_body" => "max_body",
        "invalid_tunnel_idle_timeout" => "tunnel_idle_timeout",
        "invalid_hsts" => "hsts",
        "invalid_domain" | "domain_taken" | "unknown_domain" => "domains",
        "invalid_image" | "image_not_found" | "image_platform_missing" => "image",
        c if c.starts_with("registry_") => "image",
        "recreate_needs_yes" => "yes",
        _ => return None,
    })
}

/// The field that shows what a failure points at.
fn field_of_blame(b: Blamed) -> &'static str {
    match b {
        Blamed::Port => "port",
        Blamed::HealthPath => "health_path",
        Blamed::Wait => "start_period",
        Blamed::Memory => "memory",
    }
}

/// The failed deploy a form was opened from.
struct Origin {
    deploy: DeployRow,
    /// What it tried: its settings, or the App's for an image deploy that
    /// changed none.
    tried: AppSettings,
    /// The image it tried, for a deploy that brought one (tried again).
    image: Option<String>,
    blamed: Option<Blamed>,
}

impl Origin {
    /// `id`, if it is a failed deploy of `app` that can be tried again with
    /// other settings: a settings change, or a deploy of an image.
    fn find(s: &DashState, app: &AppRow, id: &str) -> anyhow::Result<Option<Origin>> {
        let Some(deploy) = s
            .api
            .deployer
            .store
            .get_deploy(id)?
            .filter(|d| d.app == app.name && d.status == DeployStatus::Failed)
        else {
            return Ok(None);
        };
        let image = match deploy.kind {
            DeployKind::Config => None,
            DeployKind::Create | DeployKind::Deploy | DeployKind::Redeploy => {
                Some(deploy.image.clone())
            }
            _ => return Ok(None),
        };
        let now = AppSettings::of(app);
        let tried = deploy.settings.clone().unwrap_or_else(|| now.clone());
        let blamed = deploy
            .failure
            .as_ref()
            .and_then(|f| crate::deploy::blamed_setting(&now, &tried, f));
        Ok(Some(Origin {
            deploy,
            tried,
            image,
            blamed,
        }))
    }

    /// The sentence next to the field the failure points at.
    fn blame_note(&self) -> Option<(&'static str, String)> {
        let b = self.blamed?;
        let short = crate::deploy::short(&self.deploy.id);
        let listening = self
            .deploy
            .failure
            .as_ref()
            .map(|f| f.listening_ports.clone())
            .unwrap_or_default();
        let msg = match b {
            Blamed::Port => match listening.as_slice() {
                [p] => format!("Deploy {short} failed here: the container listens on port {p}, not {}.", self.tried.port),
                [] => format!("Deploy {short} failed here: nothing answered on port {}.", self.tried.port),
                ps => format!(
                    "Deploy {short} failed here: the container listens on ports {}, not {}.",
                    ps.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
                    self.tried.port
                ),
            },
            Blamed::HealthPath => format!("Deploy {short} failed here: its health check did not pass at this path."),
            Blamed::Wait => format!("Deploy {short} failed here: the container was not healthy in time; give it a longer start period or health timeout."),
            Blamed::Memory => format!("Deploy {short} failed here: the container ran out of memory or crashed with this limit."),
        };
        Some((field_of_blame(b), msg))
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EditQuery {
    from: String,
}

/// `GET /apps/NAME/settings[?from=DEPLOY]`: the form, filled with the
/// App's settings or with what a failed deploy tried.
pub async fn edit_page(
    State(s): State<DashState>,
    Path(name): Path<String>,
    Query(q): Query<EditQuery>,
    auth: Authed,
) -> Response {
    let app = match require_app(&s, &auth, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let origin = match opt(&q.from) {
        Some(id) => match Origin::find(&s, &app, &id) {
            Ok(o) => o,
            Err(e) => return internal_page(e),
        },
        None => None,
    };
    let form = match &origin {
        Some(o) => SettingsForm::of(&o.tried, o.image.as_deref(), Some(&o.deploy.id)),
        None => SettingsForm::of(&AppSettings::of(&app), None, None),
    };
    let mut st = form.state();
    if let Some((field, note)) = origin.as_ref().and_then(Origin::blame_note) {
        st.errors.insert(field.to_string(), note);
    }
    let flash = s.sessions.take_flash(&auth.id);
    form_page(
        &auth,
        &app,
        &form,
        origin.as_ref(),
        &st,
        flash.notice.as_deref(),
    )
    .into_response()
}

/// `POST /apps/NAME/settings`: the review, back to the form, or apply.
pub async fn edit_submit(
    State(s): State<DashState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    f: CsrfForm<SettingsForm>,
) -> Response {
    let CsrfForm { session, form } = f;
    let app = match require_app(&s, &session, &name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let origin = match opt(&form.from) {
        Some(id) => match Origin::find(&s, &app, &id) {
            Ok(o) => o,
            Err(e) => return internal_page(e),
        },
        None => None,
    };
    let back_to_form = |st: &FormState| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            form_page(&session, &app, &form, origin.as_ref(), st, None),
        )
            .into_response()
    };
    if form.step == "edit" {
        return form_page(&session, &app, &form, origin.as_ref(), &form.state(), None)
            .into_response();
    }
    let req = match form.request(&app) {
        Ok(r) => r,
        Err(st) => return back_to_form(&st),
    };
    let image = opt(&form.image);
    let refusal = |e: DeployError| {
        let (code, msg) = explain(e);
        let st = form.state();
        match field_of(code) {
            Some(field) => st.with_error(field, msg),
            None => st.with_general(msg),
        }
    };
    if let Err(e) = crate::ops::refuse_own_host(&req.add_domains, &headers) {
        return back_to_form(&refusal(e));
    }
    let preview = s
        .api
        .deployer
        .preview_update(&app.name, &req, image.is_some());
    let preview = match preview {
        Ok(p) => p,
        Err(e) => return back_to_form(&refusal(e)),
    };
    if form.step != "apply" {
        return review_page(&session, &app, &form, &preview, None).into_response();
    }
    let deployer = &s.api.deployer;
    let started = match &image {
        Some(image) => {
            deployer
                .deploy_with_settings(&app.name, image, req, TRIGGER)
                .await
        }
        None => deployer.update_app(&app.name, req, TRIGGER).await,
    };
    match started {
        Ok((_, dep)) => flash_to(
            &s,
            &session,
            Flash::notice(format!(
                "Changing the settings of {}: deploy {} has started. The App takes them only if it succeeds.",
                app.name,
                crate::deploy::short(&dep.id)
            )),
            &format!("{}/deploys/{}", app_url(&app.name), dep.id),
        ),
        Err(e) => {
            let (code, msg) = explain(e);
            // Refusals the review could not foresee (the confirmation, a
            // deploy started meanwhile) stay on the review.
            if matches!(code, "recreate_needs_yes" | "conflict") {
                let st = FormState::default();
                let st = if code == "conflict" {
                    st.with_general(msg)
                } else {
                    st.with_error("yes", msg)
                };
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    review_page(&session, &app, &form, &preview, Some(&st)),
                )
                    .into_response();
            }
            let st = form.state();
            let st = match field_of(code) {
                Some(field) => st.with_error(field, msg),
                None => st.with_general(msg),
            };
            back_to_form(&st)
        }
    }
}

fn crumbs(app: &AppRow, here: &str) -> Markup {
    html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/" { "Apps" } " / " a href=(app_url(&app.name)) { (app.name) } " / "
            span aria-current="page" { (here) }
        }
    }
}

/// The form with every setting, filled from `st`.
fn form_page(
    auth: &Authed,
    app: &AppRow,
    form: &SettingsForm,
    origin: Option<&Origin>,
    st: &FormState,
    notice: Option<&str>,
) -> axum::response::Html<String> {
    let f = |name: &'static str, label: &'static str| Field::new(FORM, st, name, label);
    let own = format!("{}.localhost", app.name);
    let strategy = st.value("strategy").unwrap_or("auto");
    let main = html! {
        (crumbs(app, "Edit config"))
        div.page-head { h1 { "Edit config of " (app.name) } }
        @if let Some(o) = origin {
            div.callout.bad role="note" #settings-origin {
                strong { "Redeploy with changes: " }
                "this form holds what deploy "
                a href={ (app_url(&app.name)) "/deploys/" (o.deploy.id) } { code { (crate::deploy::short(&o.deploy.id)) } }
                " tried. "
                @if let Some(err) = &o.deploy.error { span.error-text { (err) } }
                p.small { "Change what it got wrong and review again; the App keeps its current version and settings until a deploy succeeds." }
            }
        }
        section.card {
            form.stack #settings method="post" action={ (app_url(&app.name)) "/settings" } data-busy="Reviewing…" {
                (layout::csrf_field(&auth.csrf))
                input type="hidden" name="from" value=(form.from);
                (layout::form_error(st))
                @if !form.image.is_empty() {
                    (f("image", "Image").required()
                        .hint(html! { "The image the failed deploy tried; it is deployed again with these settings." })
                        .render())
                }
                div.grid2 {
                    (f("port", "Port").kind("number").required()
                        .hint(html! { "The port the App listens on inside its container (also in " code { "PORT" } ")." })
                        .render())
                    (f("health_path", "Health check path").placeholder("/healthz")
                        .hint(html! { "An HTTP path that answers 2xx when the App is ready. Empty: a TCP connect to the port." })
                        .render())
                }
                div.grid3 {
                    (f("health_timeout", "Health timeout (s)").kind("number")
                        .hint(html! { "How long a deploy waits for the new container to be healthy." }).render())
                    (f("start_period", "Start period (s)").kind("number")
                        .hint(html! { "Failed checks after a start do not count for this long." }).render())
                    (f("health_interval_ms", "Check interval (ms)").kind("number").render())
                }
                (f("domains", "Domains").kind("textarea").placeholder("www.example.com")
                    .hint(html! { "One a line. " code { (own) } " is always routed as well." })
                    .render())
                div.grid3 {
                    (f("replicas", "Replicas").kind("number").render())
                    div.field.has-error[st.error("strategy").is_some()] {
                        label for="settings-strategy" { "Deploy strategy" }
                        select #settings-strategy name="strategy" aria-describedby=[st.error("strategy").map(|_| "settings-strategy-error")] {
                            @for opt in ["auto", "bluegreen", "recreate", "rolling"] {
                                option value=(opt) selected[opt == strategy] { (opt) }
                            }
                        }
                        @if let Some(e) = st.error("strategy") { p.field-error #settings-strategy-error { (e) } }
                    }
                    (f("drain_timeout", "Drain timeout (s)").kind("number")
                        .hint(html! { "How long an old container finishes its requests." }).render())
                }
                div.grid3 {
                    (f("memory", "Memory limit").placeholder("512m")
                        .hint(html! { "Such as 512m or 2g; empty keeps the current one." }).render())
                    (f("cpus", "CPUs").placeholder("0.5").hint(html! { "Empty keeps the current one." }).render())
                    (f("gpus", "GPUs").kind("number").render())
                }
                div.grid3 {
                    (f("upstream_timeout", "Upstream timeout (s)").kind("number")
                        .hint(html! { "How long the proxy waits for the App's answer." }).render())
                    (f("max_body", "Largest request body").placeholder("100m")
                        .hint(html! { "Larger ones get a 413. Empty keeps the current one." }).render())
                    (f("tunnel_idle_timeout", "WebSocket idle timeout (s)").kind("number").placeholder("300")
                        .hint(html! { "A silent WebSocket is closed after this long." }).render())
                }
                div.grid2 {
                    div.field.check-field {
                        div.check {
                            input #settings-https_redirect type="checkbox" name="https_redirect" value="on" checked[form.https_redirect == "on"];
                            label for="settings-https_redirect" { "Redirect plain HTTP to HTTPS" }
                        }
                        p.hint { "Once the domain has a certificate in force." }
                    }
                    (f("hsts", "HSTS max-age (s)").kind("number").placeholder("0")
                        .hint(html! { "Sent over HTTPS; 0 or empty: none. " a href="/docs/https-and-certificates" { "HTTPS" } }).render())
                }
                div.actions {
                    button.btn.primary type="submit" name="step" value="review" { "Review changes" }
                    " "
                    a.btn.ghost href=(app_url(&app.name)) { "Cancel" }
                }
                p.small.muted { "Nothing changes until you apply on the next page. " a href="/docs/change-app-settings" { "Changing an App's settings" } }
            }
        }
    };
    Shell {
        title: &format!("Edit config of {}", app.name),
        nav: Nav::Apps,
        csrf: Some(&auth.csrf),
        notice,
        live: None,
    }
    .render(main)
}

/// What a change will do, in words.
fn effect_text(p: &SettingsPreview, image: bool) -> Markup {
    let app_strategy = p.new.strategy.as_str();
    html! {
        @match p.effect {
            ChangeEffect::RouteOnly => {
                strong { "Applies at once" }
                ": only the route"
                @if p.new.replicas != p.old.replicas { " and the number of replicas" }
                " change; the serving containers keep running (a " code { "config" } " deploy that starts no new containers"
                @if p.new.replicas > p.old.replicas { " beyond the new replicas" }
                ")."
            }
            ChangeEffect::NewContainers(Strategy::Recreate) => {
                strong { "Starts new containers" }
                ": a " code { (if image { "deploy" } else { "config" }) } " deploy, " strong { "recreate" }
                " (the App's strategy is " code { (app_strategy) } "): the old containers stop before the new ones start; requests wait meanwhile."
            }
            ChangeEffect::NewContainers(s) => {
                strong { "Starts new containers" }
                ": a " code { (if image { "deploy" } else { "config" }) } " deploy, "
                strong { (if s == Strategy::Rolling { "rolling" } else { "blue-green" }) }
                @if s == Strategy::Rolling {
                    ": one replica at a time is replaced, each new one health-checked before it serves."
                } @else {
                    ": the new containers start beside the old ones and take the traffic once healthy."
                }
                " If it fails, nothing changes."
            }
            ChangeEffect::RecreateNeedsYes => {
                strong { "Needs your confirmation: a recreate" }
                ". The new settings do not fit on this host beside the serving version, so the old containers stop before the new ones start, and requests wait (held, not failed) meanwhile."
            }
        }
    }
}

/// The review: each change, what it will do, and the buttons to apply or
/// go back (every value travels in hidden fields).
fn review_page(
    auth: &Authed,
    app: &AppRow,
    form: &SettingsForm,
    p: &SettingsPreview,
    st: Option<&FormState>,
) -> axum::response::Html<String> {
    let st = st.cloned().unwrap_or_default();
    let needs_yes = p.effect == ChangeEffect::RecreateNeedsYes;
    let yes_error = st.error("yes");
    let hidden = form.state();
    let main = html! {
        (crumbs(app, "Review changes"))
        div.page-head { h1 { "Review changes to " (app.name) } }
        section.card #review {
            (layout::form_error(&st))
            @if !form.image.is_empty() {
                p { "Deploys " code.image { (form.image) } @if p.changes.is_empty() { " with the current settings." } @else { " with:" } }
            }
            @if !p.changes.is_empty() {
                ul.changes aria-label="Changes" {
                    @for c in &p.changes { li { (c) } }
                }
            }
            div class={ "callout " (if needs_yes { "bad" } else { "muted" }) } #review-effect role="note" data-effect=(match p.effect {
                ChangeEffect::RouteOnly => "route",
                ChangeEffect::NewContainers(_) => "containers",
                ChangeEffect::RecreateNeedsYes => "recreate",
            }) {
                (effect_text(p, !form.image.is_empty()))
            }
            form.stack method="post" action={ (app_url(&app.name)) "/settings" } data-busy="Applying…" {
                (layout::csrf_field(&auth.csrf))
                @for (k, v) in sorted(&hidden) {
                    input type="hidden" name=(k) value=(v);
                }
                input type="hidden" name="from" value=(form.from);
                @if needs_yes {
                    div.check-field.has-error[yes_error.is_some()] {
                        div.check {
                            input #review-yes type="checkbox" name="yes" value="on" required aria-describedby=[yes_error.map(|_| "review-yes-error")];
                            label for="review-yes" { "Stop the serving version first (a recreate)" }
                        }
                        @if let Some(e) = yes_error { p.field-error #review-yes-error { (e) } }
                    }
                }
                div.actions {
                    button.btn.primary type="submit" name="step" value="apply" { "Apply changes" }
                    " "
                    button.btn type="submit" name="step" value="edit" formnovalidate { "Back to edit" }
                }
            }
        }
    };
    Shell {
        title: &format!("Review changes to {}", app.name),
        nav: Nav::Apps,
        csrf: Some(&auth.csrf),
        notice: None,
        live: None,
    }
    .render(main)
}

/// A form's values in a stable order.
fn sorted(st: &FormState) -> Vec<(&str, &str)> {
    let mut v: Vec<_> = st
        .values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    v.sort();
    v
}

/// Whether `dep` can be tried again from the form: a failed settings
/// change or image deploy.
fn can_redeploy_with_changes(dep: &DeployRow) -> bool {
    dep.status == DeployStatus::Failed
        && matches!(
            dep.kind,
            DeployKind::Config | DeployKind::Create | DeployKind::Deploy | DeployKind::Redeploy
        )
}

/// The "Redeploy with changes" button of a failed deploy (nothing for
/// others): the form, filled with what it tried.
pub(super) fn redeploy_with_changes(app: &str, dep: &DeployRow) -> Markup {
    html! {
        @if can_redeploy_with_changes(dep) {
            p { a.btn.primary.redeploy-changes href={ (app_url(app)) "/settings?from=" (dep.id) } { "Redeploy with changes" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppRow {
        AppRow {
            port: 8080,
            domains: vec!["www.example.com".into()],
            ..AppRow::named("web")
        }
    }

    #[test]
    fn the_form_round_trips_the_settings_and_sends_only_domain_changes() {
        let app = app();
        let form = SettingsForm::of(&AppSettings::of(&app), None, None);
        let req = form.request(&app).unwrap();
        assert_eq!(req.port, Some(8080));
        assert!(req.add_domains.is_empty() && req.remove_domains.is_empty());
        let mut form = form;
        form.domains = "WWW.example.com, api.example.com web.localhost".into();
        form.health_path = " ".into();
        let req = form.request(&app).unwrap();
        assert_eq!(req.add_domains, vec!["api.example.com"]);
        assert!(req.remove_domains.is_empty());
        assert!(req.no_health_path && req.health_path.is_none());
        form.domains = String::new();
        assert_eq!(
            form.request(&app).unwrap().remove_domains,
            vec!["www.example.com"]
        );
    }

    #[test]
    fn unreadable_fields_keep_the_input_and_say_why() {
        let app = app();
        let mut form = SettingsForm::of(&AppSettings::of(&app), None, None);
        form.port = "80a".into();
        form.replicas = "many".into();
        let st = form.request(&app).unwrap_err();
        assert!(st.error("port").is_some() && st.error("replicas").is_some());
        assert_eq!(st.value("port"), Some("80a"));
        form.port = String::new();
        form.replicas = "2".into();
        assert!(form.request(&app).unwrap_err().error("port").is_some());
    }

    #[test]
    fn refusals_go_next_to_their_field() {
        assert_eq!(field_of("invalid_port"), Some("port"));
        assert_eq!(field_of("domain_taken"), Some("domains"));
        assert_eq!(field_of("recreate_needs_yes"), Some("yes"));
        assert_eq!(field_of("nothing_to_change"), None);
    }

    #[test]
    fn a_recreate_is_confirmed_with_a_box_and_every_value_travels() {
        let app = app();
        let old = AppSettings::of(&app);
        let mut new = old.clone();
        new.memory_bytes = Some(24 << 30);
        let p = SettingsPreview {
            old,
            new: new.clone(),
            changes: vec!["memory default → 24 GiB".into()],
            effect: ChangeEffect::RecreateNeedsYes,
        };
        let auth = Authed {
            id: "s".into(),
            csrf: "tok".into(),
        };
        let form = SettingsForm::of(&new, None, None);
        let page = review_page(&auth, &app, &form, &p, None).0;
        assert!(page.contains(r#"data-effect="recreate""#), "{page}");
        assert!(
            page.contains(r#"name="yes""#) && page.contains("required"),
            "{page}"
        );
        assert!(page.contains(r#"name="memory" value="24g""#), "{page}");
        assert!(page.contains(r#"name="csrf" value="tok""#), "{page}");
        let st = FormState::default().with_error("yes", "confirm it");
        let page = review_page(&auth, &app, &form, &p, Some(&st)).0;
        assert!(
            page.contains("review-yes-error") && page.contains("confirm it"),
            "{page}"
        );
    }

    #[test]
    fn memory_is_shown_as_it_is_typed() {
        assert_eq!(size_text(512 << 20), "512m");
        assert_eq!(size_text(2 << 30), "2g");
        assert_eq!(size_text(1000), "1000");
    }
}
