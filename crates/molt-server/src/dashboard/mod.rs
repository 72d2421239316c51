//! The dashboard served by `molt server` at `/`: server-rendered HTML (maud,
//! so every value is escaped and the templates are checked at compile time),
//! one small script for live updates and confirmations, and the how-to docs
//! at `/docs/`. It calls the engine directly, exactly as the JSON API does,
//! so both see the same rules and the same errors.
//!
//! Security model: the admin token is exchanged once for a random session id
//! in an `HttpOnly; SameSite=Strict` cookie; every POST carries the session's
//! CSRF token in a hidden field; the Content-Security-Policy allows only our
//! own script and style (no inline code), so injected markup cannot run.

mod apps;
mod docs;
mod layout;
pub mod link;
mod live;
mod registries;
mod session;

use crate::ops::Shared as ApiState;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// What every dashboard handler gets: the API's state (engine, token) and the
/// browser sessions.
#[derive(Clone)]
pub struct DashState {
    pub api: ApiState,
    pub sessions: Arc<session::Sessions>,
}

/// The dashboard's routes, merged beside the API's by the server
/// (generic over the outer router's state, which it does not use).
pub fn router<S: Clone + Send + Sync + 'static>(api: ApiState) -> Router<S> {
    let state = DashState {
        api,
        sessions: Arc::new(session::Sessions::default()),
    };
    Router::new()
        .route("/", get(apps::list_page))
        .route("/live", get(apps::list_live))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/login/link", get(link::follow))
        .route("/apps", post(apps::create))
        .route("/apps/{name}", get(apps::app_page))
        .route("/apps/{name}/live", get(apps::app_live))
        .route("/apps/{name}/deploy", post(apps::deploy))
        .route("/apps/{name}/redeploy", post(apps::redeploy))
        .route("/apps/{name}/restart", post(apps::restart))
        .route("/apps/{name}/cancel", post(apps::cancel))
        .route("/apps/{name}/rollback", post(apps::rollback))
        .route("/apps/{name}/env", post(apps::change_env))
        .route("/apps/{name}/scale", post(apps::scale))
        .route(
            "/apps/{name}/settings",
            get(apps::edit_page).post(apps::edit_submit),
        )
        .route("/apps/{name}/template", post(apps::template))
        .route("/apps/{name}/delete", post(apps::delete))
        .route("/apps/{name}/releases/promote", post(apps::promote))
        .route("/apps/{name}/builds/{id}", get(apps::build_page))
        .route("/apps/{name}/builds/{id}/live", get(apps::build_live))
        .route("/apps/{name}/deploys/{id}", get(apps::deploy_page))
        .route("/apps/{name}/deploys/{id}/live", get(apps::deploy_live))
        .route("/registries", get(registries::page).post(registries::add))
        .route("/registries/remove", post(registries::remove))
        .route("/docs", get(docs::index))
        .route("/docs/", get(docs::index))
        .route("/docs/{page}", get(docs::page))
        .route("/assets/style.css", get(style))
        .route("/assets/app.js", get(script))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// The stylesheet; the URL carries a hash of it, so it can be cached forever.
async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// `?v=` for asset URLs: changes whenever an asset does, so a cached old
/// copy is never used with a new page.
fn asset_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| format!("{:x}", layout::fingerprint(&format!("{STYLE}{SCRIPT}"))))
}

/// Headers on every dashboard answer: only our own script and style may run,
/// the pages may not be framed (clickjacking), and nothing is sniffed.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages show live state and CSRF tokens: never from a cache.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
