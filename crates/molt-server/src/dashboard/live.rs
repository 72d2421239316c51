//! Live regions: parts of a page the script refreshes without a reload. The
//! page renders each region once inline; its `/live` endpoint renders the
//! same regions again as JSON, each with a fingerprint, and the script swaps
//! only the regions whose fingerprint changed.
//!
//! The script asks again as soon as it has an answer, sending the
//! fingerprints it holds; while they are still current the endpoint holds
//! the request, woken by the store's deploy feed (so progress shows at once)
//! and re-rendering on a slow tick for what the feed does not announce
//! (containers, logs, the time since). Each request is still a plain GET,
//! which survives server restarts and proxies and also picks up deploys
//! started from the CLI.

use super::layout::fingerprint;
use crate::feed::{DeployChange, Feed};
use crate::store::Store;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde_json::{json, Map, Value};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The request header with the regions the page shows now, as
/// `name=hash` pairs sorted by name and joined by commas.
const SHOWN: &str = "x-molt-live";
/// An unchanged answer is sent after this anyway: the script learns the
/// server is there, and the connection does not idle out in a proxy.
const HOLD: Duration = Duration::from_secs(20);
/// While holding, the regions are rendered again at least this often.
const TICK: Duration = Duration::from_millis(1500);

/// What a live endpoint renders: its regions, or a whole answer instead
/// (the thing is gone, an error page).
pub enum Live {
    Regions {
        active: bool,
        regions: Vec<(&'static str, Markup)>,
    },
    Answer(Response),
}

/// Answers a `/live` request: at once when the regions differ from those
/// the page shows, else once a change (one `wanted` by this page, or seen
/// at a tick) makes them differ, [`HOLD`] passes or the server stops.
pub async fn held<R, F>(
    store: &Store,
    stopping: &CancellationToken,
    headers: &HeaderMap,
    wanted: impl Fn(&DeployChange) -> bool,
    mut render: R,
) -> Response
where
    R: FnMut() -> F,
    F: Future<Output = Live>,
{
    let shown = headers.get(SHOWN).and_then(|v| v.to_str().ok());
    // Subscribed before the first render: nothing committed after it is missed.
    let mut feed = store.subscribe();
    let until = Instant::now() + HOLD;
    loop {
        let (active, regions) = match render().await {
            Live::Regions { active, regions } => (active, regions),
            Live::Answer(r) => return r,
        };
        let regions: Vec<_> = regions
            .into_iter()
            .map(|(name, inner)| {
                let inner = inner.into_string();
                (name, format!("{:x}", fingerprint(&inner)), inner)
            })
            .collect();
        let now = Instant::now();
        if shown != Some(&*key(&regions)) || now >= until {
            return answer_hashed(active, regions);
        }
        tokio::select! {
            _ = Feed::wait(&mut feed, TICK.min(until - now), &wanted) => {}
            _ = stopping.cancelled() => return answer_hashed(active, regions),
        }
    }
}

/// The regions as the script describes what it shows (see [`SHOWN`]).
fn key(regions: &[(&str, String, String)]) -> String {
    let mut pairs: Vec<_> = regions
        .iter()
        .map(|(name, hash, _)| format!("{name}={hash}"))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// A region of the page, as rendered inline.
pub fn region(name: &str, inner: Markup) -> Markup {
    let inner = inner.into_string();
    html! {
        div data-region=(name) data-hash=(format!("{:x}", fingerprint(&inner))) {
            (maud::PreEscaped(inner))
        }
    }
}

/// The `/live` answer: whether something is in progress (the page's
/// `data-active`) and every region of the page.
fn answer_hashed(active: bool, regions: Vec<(&str, String, String)>) -> Response {
    let mut map = Map::new();
    for (name, hash, inner) in regions {
        map.insert(name.to_string(), json!({ "hash": hash, "html": inner }));
    }
    Json(json!({ "active": active, "regions": Value::Object(map) })).into_response()
}

/// The thing the page shows is gone (an App deleted elsewhere): the script
/// goes to `to`.
pub fn gone(to: &str) -> Response {
    Json(json!({ "gone": to })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::web;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_held_request_answers_when_the_feed_announces_a_change() {
        let (_dir, store) = web();
        let render = || async {
            let n = store.events("d1", 0).unwrap().len();
            Live::Regions {
                active: true,
                regions: vec![("timeline", html! { (n) })],
            }
        };
        let mut headers = HeaderMap::new();
        let hash = format!("{:x}", fingerprint(&html! { (1) }.into_string()));
        headers.insert(SHOWN, format!("timeline={hash}").parse().unwrap());
        let writer = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(100));
            writer.event("d1", "pulled").unwrap();
        });
        let started = Instant::now();
        let stopping = CancellationToken::new();
        let answer = held(&store, &stopping, &headers, |c| c.app == "web", render).await;
        // Woken by the feed, well before the first tick would have looked.
        assert!(started.elapsed() < TICK, "{:?}", started.elapsed());
        let body = axum::body::to_bytes(answer.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["regions"]["timeline"]["html"], "2");
    }
}
