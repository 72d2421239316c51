//! `GET /login/link`: a one-time login link (see `ops::login_links`) logs
//! the browser in with a new session.

use super::DashState;
use crate::ops::login_links::{redeem, Refused};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

/// `GET /login/link?token=…`.
pub async fn follow(
    State(s): State<DashState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<LinkQuery>,
) -> Response {
    let refuse = |why: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why} Run `molt dashboard-link` for a new one, or log in with the admin token at /login.\n"),
        )
            .into_response()
    };
    match redeem(&s.api.deployer, &q.token) {
        Err(Refused::Invalid) => refuse("This login link is not valid."),
        Err(Refused::Expired) => refuse("This login link has expired (links work for 5 minutes)."),
        Err(Refused::Used) => refuse("This login link was already used (each works once)."),
        Ok(()) => {
            let mut resp = Redirect::to("/").into_response();
            resp.headers_mut().append(
                header::SET_COOKIE,
                super::session::CookieMode::of(&headers, &s).session(&s.sessions.create_session()),
            );
            resp
        }
    }
}
