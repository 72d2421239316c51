//! Live regions: parts of a page the script refreshes without a reload. The
//! page renders each region once inline; its `/live` endpoint renders the
//! same regions again as JSON, each with a fingerprint, and the script swaps
//! only the regions whose fingerprint changed. Polling (every 500 ms while a
//! deploy runs, every 1.5 s otherwise) rather than a stream keeps this
//! robust: it survives server restarts and proxies, and it also picks up
//! deploys started from the CLI, which a per-deploy stream would not.

use super::layout::fingerprint;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde_json::{json, Map, Value};

/// A region of the page, as rendered inline.
pub fn region(name: &str, inner: Markup) -> Markup {
    let inner = inner.into_string();
    html! {
        div data-region=(name) data-hash=(format!("{:x}", fingerprint(&inner))) {
            (maud::PreEscaped(inner))
        }
    }
}

/// The `/live` answer: whether something is in progress (the script polls
/// faster then) and every region of the page.
pub fn answer(active: bool, regions: Vec<(&str, Markup)>) -> Response {
    let mut map = Map::new();
    for (name, inner) in regions {
        let inner = inner.into_string();
        map.insert(
            name.to_string(),
            json!({ "hash": format!("{:x}", fingerprint(&inner)), "html": inner }),
        );
    }
    Json(json!({ "active": active, "regions": Value::Object(map) })).into_response()
}

/// The thing the page shows is gone (an App deleted elsewhere): the script
/// goes to `to`.
pub fn gone(to: &str) -> Response {
    Json(json!({ "gone": to })).into_response()
}
