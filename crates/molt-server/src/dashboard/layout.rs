//! The page shell, form fields and the small display helpers every page
//! shares (status badges, times, digests). Status is always written out in
//! words; colour only repeats it.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use molt_core::{AppStatus, DeployStatus};
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// A form body whose fields (besides the CSRF token) do not matter.
#[derive(Deserialize)]
pub struct Ignore {}

/// A form's values and errors, kept across the redirect after a failed POST
/// so the page shows the message next to the field that caused it.
#[derive(Clone, Debug, Default)]
pub struct FormState {
    pub values: HashMap<String, String>,
    pub errors: HashMap<String, String>,
    /// An error that belongs to the form as a whole.
    pub general: Option<String>,
}

impl FormState {
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn error(&self, name: &str) -> Option<&str> {
        self.errors.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.general.is_none()
    }

    pub fn with_value(mut self, name: &str, value: &str) -> Self {
        self.values.insert(name.to_string(), value.to_string());
        self
    }

    pub fn with_error(mut self, name: &str, msg: impl Into<String>) -> Self {
        self.errors.insert(name.to_string(), msg.into());
        self
    }

    pub fn with_general(mut self, msg: impl Into<String>) -> Self {
        self.general = Some(msg.into());
        self
    }
}

/// Which top-level section a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Apps,
    Registries,
    Docs,
}

/// The frame of every logged-in page (and of the docs).
pub struct Shell<'a> {
    pub title: &'a str,
    pub nav: Nav,
    /// The session's CSRF token; `None` when nobody is logged in (docs).
    pub csrf: Option<&'a str>,
    pub notice: Option<&'a str>,
    /// Where the page's script fetches live updates from.
    pub live: Option<String>,
}

impl Shell<'_> {
    pub fn render(self, main: Markup) -> Html<String> {
        let nav_link = |nav: Nav, href: &str, label: &str| {
            html! {
                a href=(href) aria-current=[(self.nav == nav).then_some("page")] { (label) }
            }
        };
        let body = html! {
            a.skip href="#main" { "Skip to content" }
            header.top {
                div.top-inner {
                    a.brand href="/" { span.logo aria-hidden="true" {} span.brand-name { "Molt" } }
                    nav aria-label="Main" {
                        (nav_link(Nav::Apps, "/", "Apps"))
                        (nav_link(Nav::Registries, "/registries", "Registries"))
                        (nav_link(Nav::Docs, "/docs/", "Docs"))
                    }
                    @if let Some(csrf) = self.csrf {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.btn.ghost.small type="submit" { "Log out" }
                        }
                    }
                }
            }
            main.wrap #main data-live=[self.live.as_deref()] {
                @if let Some(n) = self.notice {
                    div.notice role="status" { (n) }
                }
                (main)
            }
            footer.foot {
                div.wrap { "Molt · " a href="/docs/" { "How-to docs" } " · " a href="/api/v1/openapi.json" { "API (OpenAPI)" } }
            }
        };
        document(self.title, body)
    }
}

/// A page with no navigation (login, errors).
pub fn bare_page(title: &str, body: Markup) -> Html<String> {
    document(title, body)
}

fn document(title: &str, body: Markup) -> Html<String> {
    let v = super::asset_version();
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="color-scheme" content="light dark";
                    title { (title) " · Molt" }
                    link rel="stylesheet" href={ "/assets/style.css?v=" (v) };
                    script src={ "/assets/app.js?v=" (v) } defer {}
                }
                body { (body) }
            }
        }
        .into_string(),
    )
}

/// A whole page that says what went wrong and how to go on.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        main.login #main {
            div.card.login-card {
                h1 { (title) }
                p { (message) }
                p { a.btn href="/" { "Back to the Apps" } }
            }
        }
    };
    (status, bare_page(title, body)).into_response()
}

/// A labelled form field with its hint and its error; ids are prefixed with
/// the form's id, so several forms on a page can share field names.
pub struct Field<'a> {
    form: &'a str,
    name: &'a str,
    label: &'a str,
    label_html: Option<Markup>,
    kind: &'a str,
    value: String,
    error: Option<String>,
    hint: Option<Markup>,
    placeholder: Option<&'a str>,
    required: bool,
    autocomplete: Option<&'a str>,
}

impl<'a> Field<'a> {
    /// A text field of form `form`, filled from `state` (the values sent
    /// last time, if that POST failed).
    pub fn new(form: &'a str, state: &FormState, name: &'a str, label: &'a str) -> Self {
        Self {
            form,
            name,
            label,
            label_html: None,
            kind: "text",
            value: state.value(name).unwrap_or_default().to_string(),
            error: state.error(name).map(str::to_string),
            hint: None,
            placeholder: None,
            required: false,
            autocomplete: None,
        }
    }

    /// A label with markup in it (instead of the plain one).
    pub fn label_html(mut self, label: Markup) -> Self {
        self.label_html = Some(label);
        self
    }

    pub fn kind(mut self, kind: &'a str) -> Self {
        self.kind = kind;
        self
    }

    pub fn hint(mut self, hint: Markup) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn placeholder(mut self, p: &'a str) -> Self {
        self.placeholder = Some(p);
        self
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn autocomplete(mut self, a: &'a str) -> Self {
        self.autocomplete = Some(a);
        self
    }

    pub fn render(self) -> Markup {
        let id = format!("{}-{}", self.form, self.name);
        let hint_id = format!("{id}-hint");
        let err_id = format!("{id}-error");
        let mut described = Vec::new();
        if self.error.is_some() {
            described.push(err_id.clone());
        }
        if self.hint.is_some() {
            described.push(hint_id.clone());
        }
        let described = (!described.is_empty()).then(|| described.join(" "));
        let invalid = self.error.is_some().then_some("true");
        // Secrets are never sent back to the browser.
        let value = if self.kind == "password" {
            String::new()
        } else {
            self.value
        };
        html! {
            div.field.has-error[invalid.is_some()] {
                label for=(id) {
                    @match &self.label_html {
                        Some(l) => (l),
                        None => (self.label),
                    }
                }
                @if self.kind == "textarea" {
                    textarea id=(id) name=(self.name) rows="3" placeholder=[self.placeholder]
                        required[self.required] aria-invalid=[invalid] aria-describedby=[described.as_deref()]
                        spellcheck="false" { (value) }
                } @else {
                    input id=(id) name=(self.name) type=(self.kind) value=(value)
                        placeholder=[self.placeholder] required[self.required]
                        autocomplete=[self.autocomplete] aria-invalid=[invalid]
                        aria-describedby=[described.as_deref()] spellcheck="false"
                        autocapitalize="off";
                }
                @if let Some(e) = &self.error {
                    p.field-error id=(err_id) { (e) }
                }
                @if let Some(h) = self.hint {
                    p.hint id=(hint_id) { (h) }
                }
            }
        }
    }
}

/// A form's own error (not tied to one field).
pub fn form_error(state: &FormState) -> Markup {
    html! {
        @if let Some(e) = &state.general {
            p.form-error role="alert" { (e) }
        }
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf); }
}

fn tone_of_app(s: AppStatus) -> &'static str {
    match s {
        AppStatus::Running => "ok",
        AppStatus::Creating | AppStatus::Deploying | AppStatus::Recovering => "busy",
        AppStatus::Failed => "bad",
        AppStatus::Deleting => "muted",
    }
}

fn tone_of_deploy(s: DeployStatus) -> &'static str {
    match s {
        DeployStatus::Succeeded => "ok",
        DeployStatus::Failed => "bad",
        DeployStatus::Canceled => "muted",
        _ => "busy",
    }
}

/// A status written out, with a colour that repeats it.
pub fn app_badge(s: AppStatus) -> Markup {
    badge(tone_of_app(s), s.as_str())
}

pub fn deploy_badge(s: DeployStatus) -> Markup {
    badge(tone_of_deploy(s), s.as_str())
}

fn badge(tone: &str, status: &str) -> Markup {
    html! {
        span class={ "badge " (tone) } data-status=(status) {
            span.dot aria-hidden="true" {}
            (status.replace('_', " "))
        }
    }
}

/// `sha256:` and the first 12 hex digits: enough to tell digests apart.
pub fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    format!("sha256:{}", hex.chars().take(12).collect::<String>())
}

pub fn digest(d: Option<&str>) -> Markup {
    html! {
        @match d {
            Some(d) => code.digest title=(d) { (short_digest(d)) },
            None => span.muted { "—" },
        }
    }
}

fn parse_time(ts: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()
}

/// "12 s ago", "5 min ago", "3 h ago", "4 days ago".
pub fn ago_text(ts: &str) -> String {
    let Some(t) = parse_time(ts) else {
        return ts.to_string();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        0..=4 => "just now".to_string(),
        5..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => match secs / 86_400 {
            1 => "1 day ago".to_string(),
            d => format!("{d} days ago"),
        },
    }
}

/// A time as "5 min ago", with the exact UTC time on hover.
pub fn ago(ts: &str) -> Markup {
    html! { time datetime=(ts) title=(ts) { (ago_text(ts)) } }
}

/// How long a deploy took (or has taken so far, while it runs).
pub fn duration(created: &str, finished: Option<&str>) -> String {
    let Some(start) = parse_time(created) else {
        return String::new();
    };
    let end = finished
        .and_then(parse_time)
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let ms = (end - start).whole_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{} min {:02} s", s / 60, s % 60)
    }
}

/// The clock time of an event: `14:03:07.123` (UTC).
pub fn clock(ts: &str) -> String {
    match parse_time(ts) {
        Some(t) => format!(
            "{:02}:{:02}:{:02}.{:03}",
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        None => ts.to_string(),
    }
}

/// A stable hash of a rendered region: the live script replaces a region
/// only when this changes, so focus and scroll stay put otherwise.
pub fn fingerprint(s: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_shortened() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(
            duration("2026-01-01T00:00:00Z", Some("2026-01-01T00:00:02.5Z")),
            "2.5 s"
        );
        assert_eq!(
            duration("2026-01-01T00:00:00Z", Some("2026-01-01T00:01:05Z")),
            "1 min 05 s"
        );
        assert_eq!(duration("garbage", None), "");
    }

    #[test]
    fn fields_escape_and_describe_errors() {
        let st = FormState::default()
            .with_value("image", "<script>")
            .with_error("image", "bad & wrong");
        let m = Field::new("create", &st, "image", "Image")
            .render()
            .into_string();
        assert!(m.contains("&lt;script&gt;"), "{m}");
        assert!(m.contains("bad &amp; wrong"), "{m}");
        assert!(
            m.contains(r#"aria-describedby="create-image-error""#),
            "{m}"
        );
        assert!(m.contains(r#"aria-invalid="true""#), "{m}");
    }

    #[test]
    fn password_fields_never_carry_a_value() {
        let st = FormState::default().with_value("password", "hunter2");
        let m = Field::new("reg", &st, "password", "Password")
            .kind("password")
            .render()
            .into_string();
        assert!(!m.contains("hunter2"), "{m}");
    }
}
