//! The Apps list and the create form.

use super::*;
use crate::dashboard::live::Live;
use axum::http::HeaderMap;

/// One row of the list: the App, its serving deploy and its newest one.
pub(super) struct Listed {
    pub(super) app: AppRow,
    pub(super) serving: Option<DeployRow>,
    pub(super) last: Option<DeployRow>,
}

pub(super) fn load_list(s: &DashState) -> anyhow::Result<Vec<Listed>> {
    let store = &s.api.deployer.store;
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

pub(super) fn apps_table(apps: &[Listed]) -> Markup {
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

pub async fn list_live(State(s): State<DashState>, _auth: Authed, headers: HeaderMap) -> Response {
    let s = &s;
    let render = move || async move {
        match load_list(s) {
            Ok(apps) => Live::Regions {
                active: apps.iter().any(|l| is_active(s, &l.app)),
                regions: vec![("apps", apps_table(&apps))],
            },
            Err(e) => Live::Answer(internal_page(e)),
        }
    };
    let store = &s.api.deployer.store;
    live::held(store, &s.api.stopping, &headers, |_| true, render).await
}

pub(super) fn create_form(csrf: &str, st: &FormState) -> Markup {
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
    pub(super) name: String,
    pub(super) image: String,
    pub(super) port: String,
    pub(super) health_path: String,
    pub(super) health_timeout: String,
    pub(super) domains: String,
    pub(super) env: String,
    pub(super) memory: String,
    pub(super) cpus: String,
    pub(super) gpus: String,
    pub(super) replicas: String,
    pub(super) strategy: String,
}

/// The create form field that a deployer error code is about.
pub(super) fn create_field(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_name" | "conflict" | "name_domain_taken" => "name",
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
pub(super) fn number<T: std::str::FromStr>(
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

pub(super) fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

pub async fn create(
    State(s): State<DashState>,
    headers: axum::http::HeaderMap,
    f: CsrfForm<CreateForm>,
) -> Response {
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
    let created = match crate::ops::refuse_own_host(&req.domains, &headers) {
        Ok(()) => s.api.deployer.create_app(req, TRIGGER).await,
        Err(e) => Err(e),
    };
    match created {
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn create_errors_go_next_to_their_field() {
        assert_eq!(create_field("invalid_name"), Some("name"));
        assert_eq!(create_field("registry_credential_needed"), Some("image"));
        assert_eq!(create_field("image_not_found"), Some("image"));
        assert_eq!(create_field("domain_taken"), Some("domains"));
        assert_eq!(create_field("internal"), None);
    }
}
