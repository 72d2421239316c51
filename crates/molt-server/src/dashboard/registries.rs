//! Registry credentials: add (verified with the registry before it is
//! saved, through the same code as the API), list (never the secret),
//! remove.

use super::layout::{self, Field, FormState, Nav, Shell};
use super::session::{Authed, CsrfForm, Flash};
use super::DashState;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use molt_core::api::AddRegistryRequest;
use serde::Deserialize;

pub async fn page(State(s): State<DashState>, auth: Authed) -> Response {
    let rows = match s.api.deployer.store.list_registries() {
        Ok(r) => r,
        Err(e) => return super::apps::internal_page(e),
    };
    let flash = s.sessions.take_flash(&auth.id);
    let st = flash.form_state("add");
    let remove_st = flash.form_state("remove");
    let csrf = auth.csrf.as_str();
    let main = html! {
        div.page-head {
            div {
                h1 { "Registry credentials" }
                p.muted { "One credential per registry host, used for every pull from that host by every App. A changed credential applies from each App's next deploy." }
            }
        }
        section.card.flush aria-labelledby="saved-title" {
            h2 #saved-title { "Saved" }
            (layout::form_error(&remove_st))
            @if rows.is_empty() {
                div.empty { p.muted { "No credentials yet. Public images need none." } }
            } @else {
                table.list {
                    caption.sr-only { "Saved registry credentials; secrets are never shown" }
                    thead { tr {
                        th scope="col" { "Registry" }
                        th scope="col" { "Username" }
                        th scope="col" { "Secret" }
                        th scope="col" { "Updated" }
                        th scope="col" { span.sr-only { "Actions" } }
                    } }
                    tbody {
                        @for r in &rows {
                            tr data-host=(r.host) {
                                td data-label="Registry" { code { (r.host) } }
                                td data-label="Username" { (r.username) }
                                td data-label="Secret" { span.masked aria-label="hidden" { "••••" } }
                                td data-label="Updated" { (layout::ago(&r.updated_at)) }
                                td.row-actions {
                                    form method="post" action="/registries/remove"
                                        data-confirm={ "Remove the credential for " (r.host) "? Apps pulling private images from it will fail their next deploy." } {
                                        (layout::csrf_field(csrf))
                                        input type="hidden" name="host" value=(r.host);
                                        button.btn.small.danger-outline type="submit" aria-label={ "Remove the credential for " (r.host) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card #add aria-labelledby="add-title" {
            h2 #add-title { "Add or update a credential" }
            p.muted { "The registry is asked to accept it before it is saved. The secret is encrypted at rest and never shown again." }
            form.stack method="post" action="/registries" data-busy="Checking with the registry…" {
                (layout::csrf_field(csrf))
                (layout::form_error(&st))
                div.grid3 {
                    (Field::new("add", &st, "host", "Registry host").required().placeholder("ghcr.io")
                        .hint(html! { "As images name it: " code { "ghcr.io" } ", " code { "127.0.0.1:5000" } ", " code { "docker.io" } "." }).render())
                    (Field::new("add", &st, "username", "Username").required().autocomplete("off").render())
                    (Field::new("add", &st, "password", "Password or token").kind("password").required().autocomplete("new-password").render())
                }
                div.actions { button.btn.primary type="submit" { "Verify and save" } }
            }
        }
    };
    Shell {
        title: "Registries",
        nav: Nav::Registries,
        csrf: Some(csrf),
        notice: flash.notice.as_deref(),
        live: None,
    }
    .render(main)
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddForm {
    host: String,
    username: String,
    password: String,
}

/// The add form's field an error code is about.
fn field_of(code: &str) -> &'static str {
    match code {
        "invalid_registry" | "registry_unreachable" | "registry_error" => "host",
        "registry_credential_refused" => "password",
        _ => "username",
    }
}

pub async fn add(State(s): State<DashState>, f: CsrfForm<AddForm>) -> Response {
    let CsrfForm { session, form } = f;
    let host = form.host.trim().to_string();
    let username = form.username.trim().to_string();
    // The password is never put back into the form.
    let mut st = FormState::default()
        .with_value("host", &host)
        .with_value("username", &username);
    if host.is_empty() {
        st = st.with_error("host", "Give the registry host, such as ghcr.io.");
    }
    if username.is_empty() {
        st = st.with_error("username", "Give the username the registry knows.");
    }
    if form.password.is_empty() {
        st = st.with_error("password", "Give the password or access token.");
    }
    if st.is_empty() {
        let req = AddRegistryRequest {
            host,
            username,
            password: form.password,
        };
        match crate::ops::registries::save_registry(&s.api.deployer, &req).await {
            Ok(row) => {
                s.sessions.set_flash(
                    &session.id,
                    Flash::notice(format!(
                        "{} accepted the credential for {}; it is saved.",
                        row.host, row.username
                    )),
                );
                return Redirect::to("/registries").into_response();
            }
            Err(e) => {
                let (code, message) = super::apps::explain(e);
                st = st.with_error(field_of(code), message);
            }
        }
    }
    s.sessions.set_flash(&session.id, Flash::form("add", st));
    Redirect::to("/registries#add").into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RemoveForm {
    host: String,
}

pub async fn remove(State(s): State<DashState>, f: CsrfForm<RemoveForm>) -> Response {
    let CsrfForm { session, form } = f;
    let flash = match crate::ops::registries::normalize_host(&form.host) {
        Err(e) => Flash::form(
            "remove",
            FormState::default().with_general(super::apps::explain(e).1),
        ),
        Ok(host) => match s.api.deployer.store.remove_registry(&host) {
            Ok(true) => Flash::notice(format!("Removed the credential for {host}.")),
            Ok(false) => Flash::notice(format!("There was no credential for {host}.")),
            Err(e) => {
                let id = crate::datadir::random_hex(4);
                tracing::error!(error_id = %id, "dashboard: {e:#}");
                Flash::form(
                    "remove",
                    FormState::default().with_general(crate::ops::internal_message(&id)),
                )
            }
        },
    };
    s.sessions.set_flash(&session.id, flash);
    Redirect::to("/registries").into_response()
}
