//! Browser sessions: logging in with the admin token, the session cookie,
//! CSRF tokens, and the one-shot "flash" that carries a notice or a form's
//! errors across the redirect after a POST.
//!
//! Sessions live in memory only: restarting `molt server` logs everyone
//! out, which is acceptable for an admin console and keeps no session
//! secret on disk.

use super::layout::{self, FormState};
use super::DashState;
use crate::seal::same_secret;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SESSION_COOKIE: &str = "molt_session";
/// Holds the CSRF token of the login form, before there is a session.
const LOGIN_COOKIE: &str = "molt_login";
/// A session ends this long after login, used or not.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions are kept; logging in past it drops the oldest,
/// so repeated logins cannot grow memory without bound.
const MAX_SESSIONS: usize = 256;
/// Form bodies larger than this are refused.
const FORM_LIMIT: usize = 64 * 1024;

/// What the next page view shows once: a notice, or a form's errors and
/// the values to put back in it.
#[derive(Clone, Debug, Default)]
pub struct Flash {
    pub notice: Option<String>,
    /// The form (by its id on the page) that failed, with its state.
    pub form: Option<(String, FormState)>,
}

impl Flash {
    pub fn notice(msg: impl Into<String>) -> Self {
        Self {
            notice: Some(msg.into()),
            form: None,
        }
    }

    pub fn form(id: &str, state: FormState) -> Self {
        Self {
            notice: None,
            form: Some((id.to_string(), state)),
        }
    }

    /// The state of form `id` if it is the one that failed.
    pub fn form_state(&self, id: &str) -> FormState {
        match &self.form {
            Some((f, s)) if f == id => s.clone(),
            _ => FormState::default(),
        }
    }
}

struct Session {
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// Every logged-in browser, by session id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create(&self) -> String {
        let id = crate::datadir::random_hex(32);
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                csrf: crate::datadir::random_hex(32),
                expires: now + SESSION_LIFETIME,
                flash: None,
            },
        );
        id
    }

    /// A new logged-in session (a one-time login link).
    pub fn create_session(&self) -> String {
        self.create()
    }

    fn csrf(&self, id: &str) -> Option<String> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.csrf.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.lock().get_mut(id) {
            s.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, id: &str) -> Flash {
        self.lock()
            .get_mut(id)
            .and_then(|s| s.flash.take())
            .unwrap_or_default()
    }
}

/// The value of Molt's cookie `name` as the browser sent it: the
/// `__Host-` prefixed one (set over HTTPS at the console domain) first.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let pairs = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
    };
    let secure = format!("{SECURE_PREFIX}{name}");
    pairs()
        .find(|(k, _)| *k == secure)
        .or_else(|| pairs().find(|(k, _)| *k == name))
        .map(|(_, v)| v.to_string())
}

/// Cookies set over HTTPS at the console domain carry this prefix: the
/// browser then keeps them only for that exact host, sent over HTTPS only.
const SECURE_PREFIX: &str = "__Host-";

/// How Molt's cookies are set for a request: `Secure` and `__Host-`
/// prefixed when it came over HTTPS to the console domain.
#[derive(Clone, Copy)]
pub struct CookieMode {
    secure: bool,
}

impl CookieMode {
    pub fn of(headers: &HeaderMap, s: &DashState) -> Self {
        Self {
            secure: crate::console::over_https(headers, s.api.deployer.console_domain()),
        }
    }

    /// The cookie that carries a session id.
    pub fn session(self, id: &str) -> HeaderValue {
        self.set(SESSION_COOKIE, id, Some(SESSION_LIFETIME.as_secs()))
    }

    fn set(self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let age = max_age
            .map(|a| format!("; Max-Age={a}"))
            .unwrap_or_default();
        let (prefix, secure) = if self.secure {
            (SECURE_PREFIX, "; Secure")
        } else {
            ("", "")
        };
        HeaderValue::from_str(&format!(
            "{prefix}{name}={value}; HttpOnly; SameSite=Strict; Path=/{age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A logged-in browser. As an extractor it sends everyone else to the login
/// page (and back here afterwards).
pub struct Authed {
    pub id: String,
    pub csrf: String,
}

impl FromRequestParts<DashState> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &DashState) -> Result<Self, Response> {
        if let Some(id) = cookie(&parts.headers, SESSION_COOKIE) {
            if let Some(csrf) = s.sessions.csrf(&id) {
                return Ok(Authed { id, csrf });
            }
        }
        let next = if parts.method == Method::GET {
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .filter(|p| !p.ends_with("/live") && p != "/")
        } else {
            None
        };
        let to = match next {
            Some(n) => format!("/login?next={}", urlencode(&n)),
            None => "/login".to_string(),
        };
        Err(Redirect::to(&to).into_response())
    }
}

/// A form POSTed by a logged-in browser, with its CSRF token checked before
/// anything else looks at it. Every dashboard POST takes one, so no action
/// runs without the token.
pub struct CsrfForm<T> {
    pub session: Authed,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<DashState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, s: &DashState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Authed::from_request_parts(&mut parts, s).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.map_err(|_| {
            layout::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form sent more than 64 KiB. Shorten the values and try again.",
            )
        })?;
        if !csrf_ok(&bytes, &session.csrf) {
            return Err(layout::error_page(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The page was opened before your current login, so its form cannot be trusted. Go back, reload the page and try again.",
            ));
        }
        let form = serde_urlencoded::from_bytes::<T>(&bytes).map_err(|e| {
            layout::error_page(
                StatusCode::BAD_REQUEST,
                "The form could not be read",
                &format!("{e}. Reload the page and try again."),
            )
        })?;
        Ok(CsrfForm { session, form })
    }
}

fn csrf_ok(body: &Bytes, expected: &str) -> bool {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf"))
        .is_some_and(|(_, v)| same_secret(v.as_bytes(), expected.as_bytes()))
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// Where to go after logging in: only a path on this server, so the login
/// page cannot be used to send people elsewhere. Only characters that mean
/// the same to every browser are allowed: browsers drop tabs and newlines
/// from URLs, so `/\t/evil.example` would become `//evil.example`, another
/// site.
fn safe_next(next: Option<&str>) -> String {
    let safe_char = |c: char| c.is_ascii_alphanumeric() || "-._~/?=&%+".contains(c);
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.len() <= 2048
                && n.chars().all(safe_char) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(s): State<DashState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        if s.sessions.csrf(&id).is_some() {
            return Redirect::to(&safe_next(q.next.as_deref())).into_response();
        }
    }
    render_login(
        &headers,
        CookieMode::of(&headers, &s),
        q.next.as_deref(),
        None,
        StatusCode::OK,
    )
}

fn render_login(
    headers: &HeaderMap,
    cookies: CookieMode,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = cookie(headers, LOGIN_COOKIE)
        .filter(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| crate::datadir::random_hex(32));
    let next = safe_next(next);
    let mut state = FormState::default();
    if let Some(e) = error {
        state = state.with_error("token", e);
    }
    let body = html! {
        main.login #main {
            div.card.login-card {
                div.login-brand { span.logo aria-hidden="true" {} " Molt" }
                h1 { "Log in" }
                p.muted { "Paste the admin token of this server. It is in the data dir's "
                    code { "admin-token" } " file." }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    (layout::Field::new("login", &state, "token", "Admin token")
                        .kind("password").autocomplete("current-password").required().render())
                    button.btn.primary type="submit" { "Log in" }
                }
                p.muted.small { "No token at hand? On the server run " code { "cat $DATA_DIR/admin-token" } "." }
                p.small { a href="/docs/" { "Read the docs" } }
            }
        }
    };
    let page = layout::bare_page("Log in", body);
    let mut resp = (status, page).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookies.set(LOGIN_COOKIE, &csrf, None));
    resp
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login(State(s): State<DashState>, headers: HeaderMap, body: Bytes) -> Response {
    let cookies = CookieMode::of(&headers, &s);
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return render_login(
            &headers,
            cookies,
            None,
            Some("The form could not be read; try again."),
            StatusCode::BAD_REQUEST,
        );
    };
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same_secret(form.csrf.as_bytes(), expected.as_bytes()) {
        return render_login(
            &headers,
            cookies,
            form.next.as_deref(),
            Some("Your browser did not send back the login cookie. Allow cookies for this site and try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let given = form.token.trim();
    if given.is_empty() || !same_secret(given.as_bytes(), s.api.token.as_bytes()) {
        // Slows down guessing; the token has 256 bits, so this is politeness.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let msg = if given.is_empty() {
            "Enter the admin token."
        } else {
            "That is not this server's admin token. Copy it again from the data dir's admin-token file."
        };
        return render_login(
            &headers,
            cookies,
            form.next.as_deref(),
            Some(msg),
            StatusCode::UNAUTHORIZED,
        );
    }
    let id = s.sessions.create();
    let mut resp = Redirect::to(&safe_next(form.next.as_deref())).into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, cookies.session(&id));
    h.append(header::SET_COOKIE, cookies.set(LOGIN_COOKIE, "", Some(0)));
    resp
}

pub async fn logout(
    State(s): State<DashState>,
    headers: HeaderMap,
    f: CsrfForm<layout::Ignore>,
) -> Response {
    s.sessions.remove(&f.session.id);
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        CookieMode::of(&headers, &s).set(SESSION_COOKIE, "", Some(0)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next(Some("/apps/web")), "/apps/web");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    /// Browsers strip tabs and newlines from a `Location`, which turned
    /// `/<TAB>/evil.example` into `//evil.example`: only safe characters pass.
    #[test]
    fn next_refuses_characters_browsers_rewrite() {
        for bad in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/ /evil.example",
            "/\u{3000}/evil.example",
            "/apps/web\"><script>",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(
            safe_next(Some("/apps/web/deploys/abc?tab=events")),
            "/apps/web/deploys/abc?tab=events"
        );
        assert_eq!(safe_next(Some("/apps/my-app%20x")), "/apps/my-app%20x");
    }

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; molt_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn csrf_field_is_checked() {
        assert!(csrf_ok(&Bytes::from_static(b"a=1&csrf=tok"), "tok"));
        assert!(!csrf_ok(&Bytes::from_static(b"a=1&csrf=bad"), "tok"));
        assert!(!csrf_ok(&Bytes::from_static(b"a=1"), "tok"));
    }

    #[test]
    fn sessions_expire_and_flash_once() {
        let s = Sessions::default();
        let id = s.create();
        assert!(s.csrf(&id).is_some());
        s.set_flash(&id, Flash::notice("hi"));
        assert_eq!(s.take_flash(&id).notice.as_deref(), Some("hi"));
        assert!(s.take_flash(&id).notice.is_none());
        s.remove(&id);
        assert!(s.csrf(&id).is_none());
        for _ in 0..(MAX_SESSIONS + 10) {
            s.create();
        }
        assert!(s.lock().len() <= MAX_SESSIONS);
    }
}
