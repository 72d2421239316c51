//! One-time login links (`molt dashboard-link`): the API seals an expiry
//! time under the server's secret key; the link logs a browser in once,
//! within five minutes. Used links are remembered until they expire.

use super::DashState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a link works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(300);
const PURPOSE: &str = "dashboard-link";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new link token: the sealed expiry (the seal's random nonce makes every
/// token unique).
pub fn issue(sealer: &crate::seal::Sealer) -> anyhow::Result<(String, u64)> {
    let expires = now_secs() + LINK_LIFETIME.as_secs();
    let sealed = sealer.seal(PURPOSE, &expires.to_be_bytes())?;
    Ok((
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed),
        expires,
    ))
}

/// Tokens already used, with their expiry, so each works once.
#[derive(Default)]
pub struct UsedLinks(Mutex<HashMap<String, u64>>);

impl UsedLinks {
    /// Marks a token used; false if it was already.
    fn first_use(&self, token: &str, expires: u64) -> bool {
        let mut used = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_secs();
        used.retain(|_, e| *e >= now);
        used.insert(token.to_string(), expires).is_none()
    }
}

#[derive(Deserialize)]
pub struct LinkQuery {
    #[serde(default)]
    token: String,
}

/// `GET /login/link?token=…`.
pub async fn follow(
    State(s): State<DashState>,
    headers: HeaderMap,
    Query(q): Query<LinkQuery>,
) -> Response {
    let opened = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(q.token.as_bytes())
        .ok()
        .and_then(|sealed| s.api.engine.sealer.open(PURPOSE, &sealed).ok())
        .and_then(|plain| <[u8; 8]>::try_from(plain.as_slice()).ok())
        .map(u64::from_be_bytes);
    let refuse = |why: &str| {
        let _ = &headers;
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why} Run `molt dashboard-link` for a new one, or log in with the admin token at /login.\n"),
        )
            .into_response()
    };
    let Some(expires) = opened else {
        return refuse("This login link is not valid.");
    };
    if expires < now_secs() {
        return refuse("This login link has expired (links work for 5 minutes).");
    }
    if !s.used_links.first_use(&q.token, expires) {
        return refuse("This login link was already used (each works once).");
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        super::session::session_cookie(&s.sessions.create_session()),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_work_once() {
        let used = UsedLinks::default();
        assert!(used.first_use("a", now_secs() + 10));
        assert!(!used.first_use("a", now_secs() + 10));
        assert!(used.first_use("b", now_secs() + 10));
    }

    #[test]
    fn tokens_are_unique_and_sealed() {
        let sealer = crate::seal::Sealer::from_key(&[3; 32]);
        let (a, _) = issue(&sealer).unwrap();
        let (b, _) = issue(&sealer).unwrap();
        assert_ne!(a, b);
        let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(a)
            .unwrap();
        assert!(sealer.open(PURPOSE, &sealed).is_ok());
        assert!(sealer.open("other", &sealed).is_err());
    }
}
