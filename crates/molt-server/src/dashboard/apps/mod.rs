//! The Apps list, an App's page, a deploy's page, the Edit config form, and
//! every action on them. Edit config's review and its refusals are pages
//! in answer to the POST (they change nothing); every other
//! action answers with a redirect (post/redirect/get), so reloading a page
//! never repeats an action; a failed action comes back as a flash that puts
//! the message next to the field that caused it and keeps what was typed.

use super::layout::{self, Field, FormState, Nav, Shell};
use super::live;
use super::session::{Authed, CsrfForm, Flash};
use super::DashState;
use crate::deploy::DeployError;
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

/// The page for an internal error: the cause goes to the server's log, not
/// to the browser (it names files, addresses and engine answers).
pub(super) fn internal_page(e: anyhow::Error) -> Response {
    let id = crate::datadir::random_hex(4);
    tracing::error!(error_id = %id, "dashboard: {e:#}");
    layout::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something broke on the server",
        &crate::ops::internal_message(&id),
    )
}

/// A deployer refusal as a stable code and a message for people.
pub(super) fn explain(e: DeployError) -> (&'static str, String) {
    match e {
        DeployError::Invalid { code, message } => (code, message),
        DeployError::NotFound(m) => ("not_found", m),
        DeployError::Conflict { message, .. } => ("conflict", message),
        DeployError::Registry(r) => (r.code(), r.to_string()),
        DeployError::Internal(e) => {
            let id = crate::datadir::random_hex(4);
            tracing::error!(error_id = %id, "dashboard: {e:#}");
            ("internal", crate::ops::internal_message(&id))
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
    match s.api.deployer.store.get_app(name) {
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
    s.api.deployer.in_progress(&app.name).is_some()
        || matches!(
            app.status,
            AppStatus::Creating
                | AppStatus::Deploying
                | AppStatus::Recovering
                | AppStatus::Deleting
        )
}

/// `on` for a checked checkbox; absent otherwise.
fn checked(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| !v.is_empty())
}

mod actions;
mod deploy_page;
mod edit;
mod list;
mod page;
mod releases;

pub use actions::*;
pub use deploy_page::*;
pub use edit::{edit_page, edit_submit};
pub use list::*;
pub use page::*;
pub use releases::{build_live, build_page, promote};
